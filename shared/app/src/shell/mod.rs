//! The shell: commit → at most one MPU call at a time per room → record.
//!
//! # The protocol (the correctness argument is in ARCHITECTURE.md)
//! 1. **Commit** ([`commit`]). Start from the process's copy of the room (or, in a cold process,
//!    attempt the room's creation — a room that exists answers with its item); fold what waits
//!    in its inbox, apply the callback's events, decide ([`plan::plan`], pure). Write the new
//!    state conditional on the version and the life of the item it came from; if a command is
//!    needed and the MPU lease is free (or expired), take the lease *in the same write*, with
//!    the command's intent. A conflict answers with the current item: decide again from it.
//!    After two conflicts the room is contended, and the callback's events are committed by an
//!    **append** to the room's inbox (conditional on the life only: appends never conflict with
//!    each other), after which the handler only tries to take the lease if a command waits and
//!    nobody holds it; a room whose lease another handler holds gets the append at once (the
//!    holder folds it when it records). No event is ever given up.
//! 2. **Converge (lease holders only)** ([`converge`]). Execute the command decided from the
//!    version just written. Record the result and decide again from the same state, in one
//!    write conditional on the version ([`plan::plan_record`]): if nothing is left to do the
//!    lease is released in that write, otherwise it is renewed and the next command executed. If
//!    the write conflicts (another handler committed or appended meanwhile), record on top of
//!    the current item and decide again: the holder keeps going until the running task equals
//!    the target of the newest version, so the last event is never left unapplied.
//! 3. Handlers that find the lease taken just commit their event and return: the holder will see
//!    the new version when it records, and converge to it.
//! 4. **Mark.** Every write also sets when the room next needs the repair loop
//!    ([`StoredRoom::due_ms`]): the end of the lease while a command is pending, a backoff after a
//!    refusal, the end of a held event's grace, nothing once converged (but the StreamURL's
//!    re-signing). So whatever a handler could not finish is found by the loop
//!    ([`crate::repair`]) without a scan.
//! 5. **Write ids and lives.** Every write carries a unique id; a conflict whose current item
//!    carries it (the write landed, and the SDK's retry of it failed its condition) is that
//!    write's success. Every conditional write names the item's life too: a copy of a past life
//!    is never written over a new one.
//!
//! Requests on the common path (a warm process): 1 write + 1 MPU call + 1 write (with the call's
//! history entry). A duplicate callback: 1 read, no write, no call.
//!
//! # Files
//! [`plan`] decides what a write does (pure, unit-tested without a store); [`commit`] commits
//! an input; [`converge`] calls and records; [`release`] gives a lease back and marks a room
//! after a failure; [`refresh`] re-signs a StreamURL; [`strays`] stops a task no room wants and
//! applies the sweep's findings; [`notes`] is the room's history; [`pk`] the cross-room PK.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ports::{Clock, MpuPort, RoomKey, StateStore};
use crate::ports::{MpuFailure, StoreError};
use crate::store::{FoldRules, HistoryEntry, StoredRoom};
use costream_core::{DecisionConfig, RoomEvent, Target, Version};

mod commit;
mod converge;
mod notes;
mod pk;
pub(crate) mod plan;
mod refresh;
mod release;
mod strays;

pub use notes::{describe, describe_command};
pub use pk::{PkOutcome, PkRefusal};
pub use strays::{Finding, Stray};

use plan::Input;

/// Write ids: unique per write, `<instance>.<n>` — the instance names the process (random by
/// default; the simulation names its containers), the counter the write.
#[derive(Clone)]
pub struct WriteIds {
    instance: String,
    next: Arc<AtomicU64>,
}

impl WriteIds {
    pub fn new(instance: impl Into<String>) -> Self {
        WriteIds {
            instance: instance.into(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// An instance name no other process has (64 random bits).
    pub fn random() -> Self {
        Self::new(format!("{:016x}", rand::random::<u64>()))
    }

    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.instance)
    }
}

impl std::fmt::Debug for WriteIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteIds({})", self.instance)
    }
}

impl PartialEq for WriteIds {
    fn eq(&self, other: &Self) -> bool {
        self.instance == other.instance
    }
}

impl Eq for WriteIds {}

/// Tunables of the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    /// How long a lease lasts. Must exceed every function's Timeout in template.yaml (each of
    /// which exceeds the MPU client's total deadline), so a holder can never still be calling
    /// after its lease expired; tests/template checks this against the template.
    pub lease_ms: u64,
    /// How long a callback key is remembered for de-duplication. Only callers that pass a key
    /// need it — the CDN's verified signature pairs, usable for the signature's window (300 s
    /// either way); ARTC callbacks pass none (the facts merge idempotently).
    pub dedupe_secs: u64,
    /// At most this many keys are remembered per room (about 30 bytes each in the item).
    pub dedupe_cap: usize,
    /// Versioned writes of a commit that may conflict before its events are committed by an
    /// append instead (the room is contended). A commit whose room another handler's lease
    /// holds appends at once (it could not take the lease anyway, and the holder folds).
    pub conflicts_before_append: u32,
    /// How long a handler keeps trying to write after conflicts (its events are committed long
    /// before: this bounds taking a lease, recording a call, folding).
    pub write_budget_ms: u64,
    /// MPU calls one holder makes before giving up (a target that keeps moving).
    pub max_calls: u32,
    /// Re-sign the running task's StreamURL this long after it was signed (half the URL's
    /// validity); `None` when the ingest domain does not sign URLs.
    pub resign_after_ms: Option<u64>,
    /// Queue webhooks in the room's outbox (a backend URL is configured).
    pub webhooks: bool,
    /// At most this many task Starts per minute for the whole app (`None`: no cap).
    pub max_starts_per_minute: Option<u32>,
    /// A room with no task is removed this long after its last write (DynamoDB's TTL).
    pub room_ttl_ms: u64,
    /// Where write ids come from.
    pub writes: WriteIds,
}

/// Rooms nobody touched for this long are removed by DynamoDB's TTL.
pub const DEFAULT_ROOM_TTL_MS: u64 = 30 * 24 * 3_600_000;

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            lease_ms: 45_000,
            dedupe_secs: 3_600,
            dedupe_cap: 128,
            conflicts_before_append: 2,
            write_budget_ms: 10_000,
            max_calls: 8,
            resign_after_ms: None,
            webhooks: false,
            max_starts_per_minute: None,
            room_ttl_ms: DEFAULT_ROOM_TTL_MS,
            writes: WriteIds::random(),
        }
    }
}

/// What [`Shell::handle`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The callback was seen before and the room needs nothing: no write, no call.
    Duplicate,
    /// Nothing changed and nothing is to be done: no write, no call.
    NoChange,
    /// The event was committed; another handler holds the lease and will converge the task.
    Committed { version: Version },
    /// This handler held the lease and the task now equals the target of `version`.
    Converged {
        version: Version,
        calls: u32,
        target: Target,
    },
    /// This handler lost its lease (it expired and was taken over): the new holder converges.
    LeaseLost { calls: u32 },
    /// Nothing new to commit, and the room's command waits for another handler's lease (the
    /// repair loop leaves the room to it).
    Busy,
}

/// Failures that reach the caller. [`AppError::is_retryable`] tells a Lambda whether to report
/// "Retryable" (the event will be redelivered and the room repaired) or "NonRetryable".
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("MPU call failed for room {room}")]
    Mpu {
        room: String,
        #[source]
        source: MpuFailure,
    },
    #[error("room {room}: gave up after {conflicts} concurrent-write conflicts")]
    Contention { room: String, conflicts: u32 },
    #[error("room {room}: target still moving after {calls} MPU calls")]
    NotConverged { room: String, calls: u32 },
}

impl AppError {
    pub fn is_retryable(&self) -> bool {
        match self {
            AppError::Store(e) => e.is_retryable(),
            // An in-doubt call left the lease held and the room unconverged: only a later
            // delivery can finish the job, so ask for one even if the client wouldn't retry.
            AppError::Mpu { source, .. } => source.is_retryable() || !source.is_definite(),
            AppError::Contention { .. } | AppError::NotConverged { .. } => true,
        }
    }
}

/// The shell, generic over its two ports and the clock.
#[derive(Debug)]
pub struct Shell<S, M, C> {
    pub store: S,
    pub mpu: M,
    pub clock: C,
    pub decision: DecisionConfig,
    pub config: ShellConfig,
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Handles one callback for one room: its `events` (one callback may carry several), and
    /// the callback's de-duplication key. `owner` identifies this invocation (e.g. the Lambda
    /// request id) in the lease.
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app))]
    pub async fn handle(
        &self,
        key: &RoomKey,
        dedupe_key: Option<&str>,
        events: &[RoomEvent],
        owner: &str,
    ) -> Result<Handled, AppError> {
        // Only a digest of the key is ever kept or logged (a CDN signature pair is a secret
        // for its 300 s window).
        let input = Input::Events {
            key: dedupe_key.map(crate::store::key_digest),
            events,
        };
        let (handled, ended_pk) = self.run(key, &input, &describe(events), owner).await?;
        if let Some(peer) = ended_pk {
            // The PK ended with this room's broadcast: the peer room goes back to its own
            // picture now (it was marked due in the same write, in case this fails).
            if let Err(e) = self.run(&peer, &Input::Repair, "pk ended", owner).await {
                tracing::warn!(room = %peer, error = %e, "pk peer left to the repair loop");
            }
        }
        Ok(handled)
    }

    /// Converges a room the repair loop found due, with no new event: decides again from what
    /// is stored and, when a call is needed and the lease is free (or expired), makes it through
    /// the same lease and conditional writes as a callback. A room that needs nothing has its
    /// mark cleared; a converged room whose StreamURL is due for re-signing gets it re-signed.
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app, repair = true))]
    pub async fn repair(&self, key: &RoomKey, owner: &str) -> Result<Handled, AppError> {
        let (handled, ended_pk) = self.run(key, &Input::Repair, "repair", owner).await?;
        if let Some(peer) = ended_pk {
            if let Err(e) = self.run(&peer, &Input::Repair, "pk ended", owner).await {
                tracing::warn!(room = %peer, error = %e, "pk peer left to the repair loop");
            }
        }
        if matches!(handled, Handled::NoChange | Handled::Converged { .. }) {
            if let Some(refreshed) = self.refresh_if_due(key, owner).await? {
                return Ok(refreshed);
            }
        }
        Ok(handled)
    }

    /// Merges the room's held events once their end grace is over, and converges: what the
    /// repair loop would do when the room is due, but from this process's copy of the room (no
    /// read when it is fresh). For the handler that held the event, or `serve`'s background task.
    pub async fn end_grace(&self, key: &RoomKey, owner: &str) -> Result<Handled, AppError> {
        let (handled, ended_pk) = self
            .run(key, &Input::GraceOver, "end grace over", owner)
            .await?;
        if let Some(peer) = ended_pk {
            if let Err(e) = self.run(&peer, &Input::Repair, "pk ended", owner).await {
                tracing::warn!(room = %peer, error = %e, "pk peer left to the repair loop");
            }
        }
        Ok(handled)
    }

    /// When the room next has a held event to merge: the end of an end grace. A caller with
    /// time to spare waits until then and calls [`Shell::end_grace`] rather than leave the merge
    /// to the repair loop's next pass. From the process's copy of the room (no request: a
    /// handler's write just left it there), else a read (a store that keeps no copies).
    pub async fn held_until(&self, key: &RoomKey) -> Option<u64> {
        match self.store.cached(key) {
            Some(room) => room.held_until(),
            None => match self.read(key).await {
                Ok(room) => room.and_then(|r| r.held_until()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the room's held events");
                    None
                }
            },
        }
    }

    /// The room's kept decisions, oldest first.
    pub async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, AppError> {
        Ok(self.store.history(key).await?)
    }

    /// The room as decisions see it — its inbox folded, the held events that are due merged —
    /// read consistently; `None` when there is no item, or only one past its expiry.
    pub async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        let now_ms = self.clock.now_ms();
        Ok(self.live(self.store.load(key).await?, now_ms))
    }

    /// [`Shell::load`], read eventually consistently (status answers).
    pub async fn load_eventually(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        let now_ms = self.clock.now_ms();
        Ok(self.live(self.store.load_eventually(key).await?, now_ms))
    }

    /// A stored item as decisions see it (see [`Shell::load`]).
    pub fn live(&self, room: Option<StoredRoom>, now_ms: u64) -> Option<StoredRoom> {
        room.filter(|r| !r.expired(now_ms))
            .map(|r| r.folded(now_ms, &self.rules()))
    }

    /// How rooms take in events under this shell's configuration.
    pub fn rules(&self) -> FoldRules<'_> {
        FoldRules {
            decision: &self.decision,
            dedupe_secs: self.config.dedupe_secs,
            dedupe_cap: self.config.dedupe_cap,
        }
    }

    /// Commits `input` and converges the room; also names the peer room of a PK that the
    /// commit ended (this room's broadcast ended), for the caller to converge.
    async fn run(
        &self,
        key: &RoomKey,
        input: &Input<'_>,
        trigger: &str,
        owner: &str,
    ) -> Result<(Handled, Option<RoomKey>), AppError> {
        let (commit, ended_pk) = self.commit(key, input, owner).await?;
        let holding = match commit {
            commit::Commit::Done(handled) => return Ok((handled, ended_pk)),
            commit::Commit::Holding(holding) => holding,
        };
        let handled = self.converge(key, *holding, trigger).await?;
        Ok((handled, ended_pk))
    }

    /// Reads the room consistently, as stored (an item past its expiry is absent).
    async fn read(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        let now_ms = self.clock.now_ms();
        Ok(self.store.load(key).await?.filter(|r| !r.expired(now_ms)))
    }
}

#[cfg(test)]
mod tests;
