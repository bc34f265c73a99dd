//! costream's shell: everything between a callback and one MPU call, except the I/O adapters.
//!
//! # Layout
//! - [`ports`]: the seams — [`ports::StateStore`], [`ports::MpuPort`] (each with its own error
//!   type), the [`ports::Clock`] — and [`ports::RoomKey`].
//! - [`store`]: the stored room (`facts`, `record`, version, lease, seen keys) and the in-memory
//!   store with DynamoDB's conditional-write semantics (`costream serve`, tests, the simulation).
//! - [`shell`]: **start here.** The protocol: commit (load → apply → decide → conditional write,
//!   taking the per-room lease) → converge (one MPU call at a time, record, re-decide).
//! - [`repair`]: the repair loop's pass — rooms marked due, and the leak sweep against
//!   `ListRtcMPUTaskDetail` — through the same shell.
//! - [`metrics`]: counters written out as CloudWatch embedded metric format.
//! - [`mpu`]: the one [`ports::MpuPort`] adapter: the core's commands as Live API requests with
//!   Alibaba's idempotency rules, over any [`costream_alibaba::LiveApi`] transport.
//! - [`inbound`]: callback payloads → core events (pure parsing; bad input never reaches the shell).
//! - [`handlers`]: the request handlers shared by the Lambda functions and `costream serve`.
//! - [`config`]: every `COSTREAM_*` variable, typed, parsed once.
//! - `testing` (feature): a recording MPU port over the simulator, scenario builders.
//!
//! # Invariants
//! - Only the holder of a room's lease calls the MPU API for it, and only with the command decided
//!   from the newest version it wrote (tests: `shell::tests`, the concurrency model test).
//! - Every store write is conditional on the version read (`store::memory` rejects others, as
//!   DynamoDB does; `costream-dynamo` sends the condition).
//! - Bad input changes nothing and calls nothing (`handlers` validate before the shell runs).

pub mod config;
pub mod handlers;
pub mod inbound;
pub mod metrics;
pub mod mpu;
pub mod ports;
pub mod repair;
pub mod shell;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhooks;
