//! costream's process start-up, shared by the Lambda functions and `costream serve` against the
//! cloud: configuration parsed once, AWS SDK config with timeouts shorter than the function
//! timeouts, secrets from Secrets Manager, clients built once and wired into the app's
//! [`Services`](costream_app::handlers::Services).
//!
//! # Layout
//! - [`init`]: **start here** — `lambda_services` / `services`: config → clients → services.
//! - [`aws`]: `SdkConfig` with timeouts, the DynamoDB client, the Secrets Manager lookup.
//! - `lambda` (feature `lambda`): the Lambda glue — event types in, responses and error
//!   diagnostics out — used by the `functions/*` binaries.
//!
//! # Invariants
//! - No function depends on axum or the simulated Live API: this crate does not, and
//!   `scripts/test-all.sh` checks it with `cargo tree -i`.
//! - Secrets never reach a log line or an error message (`InitError` names variables only).

pub mod aws;
pub mod init;
#[cfg(feature = "lambda")]
pub mod lambda;
