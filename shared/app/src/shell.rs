//! The shell: load → decide → conditional save → at most one MPU call at a time → record.
//!
//! # The protocol (the correctness argument is in ARCHITECTURE.md)
//! 1. **Commit.** Read the room (consistent read). Apply the callback's events (the core ignores
//!    duplicates and stale events by construction). Decide. Write the new state conditional on
//!    the version read; if a command is needed and the MPU lease is free (or expired), take the
//!    lease *in the same write*. On a version conflict start over (bounded).
//! 2. **Converge (lease holders only).** Execute the command decided from the version just
//!    written. Record the result and decide again from the same state, in one write conditional on
//!    the version: if nothing is left to do the lease is released in that write, otherwise the
//!    lease is renewed and the next command executed. If the write conflicts (another handler
//!    committed an event meanwhile), re-read, record, decide again: the holder keeps going until
//!    the running task equals the target of the newest version, so the last event is never left unapplied.
//! 3. Handlers that find the lease taken just commit their event and return: the holder will see
//!    the new version when it records, and converge to it.
//!
//! Requests on the common path: 1 read + 1 write + 1 MPU call + 1 write. A duplicate callback:
//! 1 read, no write, no call.

use crate::ports::{Clock, MpuDone, MpuPort, RoomKey, StateStore};
use crate::ports::{MpuFailure, StoreError};
use crate::store::{Lease, StoredRoom};
use costream_core::{apply, decide, Command, DecisionConfig, Merge, RoomEvent, Target, Version};

/// Tunables of the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellConfig {
    /// How long a lease lasts. Must exceed every function's Timeout in template.yaml (each of
    /// which exceeds the MPU client's total deadline), so a holder can never still be calling
    /// after its lease expired; tests/template checks this against the template.
    pub lease_ms: u64,
    /// How long a callback key is remembered for de-duplication (≥ Lambda's redelivery window).
    pub dedupe_secs: u64,
    /// At most this many keys are remembered per room.
    pub dedupe_cap: usize,
    /// Version conflicts tolerated per handler before giving up with a retryable error.
    pub max_conflicts: u32,
    /// MPU calls one holder makes before giving up (a target that keeps moving).
    pub max_calls: u32,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            lease_ms: 45_000,
            dedupe_secs: 3_600,
            dedupe_cap: 128,
            max_conflicts: 16,
            max_calls: 8,
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
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app, dedupe_key = dedupe_key))]
    pub async fn handle(
        &self,
        key: &RoomKey,
        dedupe_key: Option<&str>,
        events: &[RoomEvent],
        owner: &str,
    ) -> Result<Handled, AppError> {
        let (room, command) = match self.commit(key, dedupe_key, events, owner).await? {
            Commit::Done(handled) => return Ok(handled),
            Commit::Holding(room, command) => (*room, command),
        };
        self.converge(key, room, command, owner).await
    }

    async fn commit(
        &self,
        key: &RoomKey,
        dedupe_key: Option<&str>,
        events: &[RoomEvent],
        owner: &str,
    ) -> Result<Commit, AppError> {
        for _ in 0..self.config.max_conflicts {
            let mut room = self
                .store
                .load(key)
                .await?
                .unwrap_or_else(|| StoredRoom::new(key.channel.clone()));
            let now_ms = self.clock.now_ms();
            let now_secs = now_ms / 1000;
            let duplicate = dedupe_key.is_some_and(|k| room.seen.contains(k, now_secs));
            let mut changed = false;
            if !duplicate {
                for event in events {
                    match apply(&mut room.facts, &mut room.record, event) {
                        Merge::Changed => changed = true,
                        Merge::BeyondHorizon => tracing::warn!(
                            counter = "events_beyond_horizon",
                            at = event.at().secs(),
                            "event of a forgotten user older than the room's horizon: ignored"
                        ),
                        Merge::Unchanged | Merge::IgnoredViewer => {}
                    }
                }
            }
            let decision = decide(&room.facts, &room.record, &self.decision);
            // Free when absent or expired — never "ours, so free": two deliveries sharing a
            // request id could otherwise overlap their calls, and the shortcut gained nothing
            // (the lease, 45 s, expires before Lambda's first retry at 60 s).
            let lease_free = room.lease.as_ref().is_none_or(|l| l.until_ms <= now_ms);
            // A command only matters to us if we can take the lease; otherwise its holder will
            // see our committed state and act on it.
            let will_call = decision.command.is_some() && lease_free;
            if duplicate && !will_call {
                return Ok(Commit::Done(Handled::Duplicate));
            }
            if !changed && !will_call && !duplicate {
                tracing::debug!(version = %room.version, "no change");
                return Ok(Commit::Done(Handled::NoChange));
            }
            if let (Some(k), false) = (dedupe_key, duplicate) {
                room.seen.insert(
                    k.to_owned(),
                    now_secs,
                    now_secs + self.config.dedupe_secs,
                    self.config.dedupe_cap,
                );
            }
            if let (true, Some(cmd)) = (will_call, &decision.command) {
                // Write-ahead: the call's intent goes with the lease, so a caller that dies
                // mid-call leaves a record the next holder re-asserts from.
                room.record.begin(cmd);
            }
            if will_call {
                room.lease = Some(Lease {
                    owner: owner.to_owned(),
                    until_ms: now_ms + self.config.lease_ms,
                });
            }
            let expected = room.version;
            match self.store.save(key, &room, expected).await {
                Ok(()) => {
                    room.version = expected.next();
                    tracing::info!(
                        version = %room.version,
                        command = decision.command.as_ref().map_or("none", Command::name),
                        mix_mode = ?decision.target.mix_mode(),
                        lease = will_call,
                        "event committed"
                    );
                    return Ok(match decision.command {
                        Some(cmd) if will_call => Commit::Holding(Box::new(room), cmd),
                        _ => Commit::Done(Handled::Committed {
                            version: room.version,
                        }),
                    });
                }
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => {
                    if will_call {
                        // The write may have landed (DynamoDB applied it, the answer was lost):
                        // then we hold a lease nobody will use. Give it back.
                        self.release(key, None, owner).await;
                    }
                    return Err(e.into());
                }
            }
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: self.config.max_conflicts,
        })
    }

    async fn converge(
        &self,
        key: &RoomKey,
        mut room: StoredRoom,
        mut command: Command,
        owner: &str,
    ) -> Result<Handled, AppError> {
        let mut calls = 0;
        loop {
            if calls == self.config.max_calls {
                self.release(key, Some(room), owner).await;
                return Err(AppError::NotConverged {
                    room: key.to_string(),
                    calls,
                });
            }
            calls += 1;
            let done = self.mpu.execute(key, &command, room.version).await;
            let now_running = match done {
                Ok(MpuDone::Done { request_id }) => {
                    tracing::info!(
                        version = %room.version,
                        command = command.name(),
                        task_id = %command.task(),
                        mpu_request_id = request_id.as_deref().unwrap_or(""),
                        "mpu call applied"
                    );
                    command.result()
                }
                Ok(MpuDone::TaskMissing) => {
                    tracing::warn!(task_id = %command.task(), "task gone; starting it again");
                    Target::Off
                }
                Err(source) => {
                    // Leave the record as it was: the next event, or the redelivery of
                    // this one, re-decides and re-issues the idempotent call.
                    if source.is_definite() {
                        // Refused or never sent: nothing can land later, the lease can go.
                        self.release(key, Some(room), owner).await;
                    } else {
                        // Timed out or unreadable: Alibaba may still apply the request. Whoever
                        // calls next must not overlap it, or an older layout could land last.
                        self.keep_lease_in_doubt(key, room, owner).await;
                    }
                    return Err(AppError::Mpu {
                        room: key.to_string(),
                        source,
                    });
                }
            };
            let recorded = match self.record(key, room, &now_running, owner).await {
                Ok(recorded) => recorded,
                Err(e) => {
                    // The call is done (we have its answer) but the record failed, or landed
                    // without our knowing: no call of ours is in flight, so the lease goes back
                    // and the redelivery (or the next event) re-issues the idempotent call now
                    // rather than after the lease expired.
                    self.release(key, None, owner).await;
                    return Err(e);
                }
            };
            match recorded {
                Record::Converged(room) => {
                    return Ok(Handled::Converged {
                        version: room.version,
                        calls,
                        target: room.record.running().clone(),
                    })
                }
                Record::Next(r, next) => {
                    room = *r;
                    command = next;
                }
                Record::LeaseLost => return Ok(Handled::LeaseLost { calls }),
            }
        }
    }

    /// Records what the task now is and decides again from the newest state, releasing the lease
    /// if nothing is left to do, in one conditional write.
    async fn record(
        &self,
        key: &RoomKey,
        mut room: StoredRoom,
        running: &Target,
        owner: &str,
    ) -> Result<Record, AppError> {
        for _ in 0..self.config.max_conflicts {
            room.record.confirm(running.clone());
            let decision = decide(&room.facts, &room.record, &self.decision);
            let now_ms = self.clock.now_ms();
            room.lease = decision.command.as_ref().map(|_| Lease {
                owner: owner.to_owned(),
                until_ms: now_ms + self.config.lease_ms,
            });
            if let Some(next) = &decision.command {
                room.record.begin(next);
            }
            let expected = room.version;
            match self.store.save(key, &room, expected).await {
                Ok(()) => {
                    room.version = expected.next();
                    return Ok(match decision.command {
                        None => Record::Converged(Box::new(room)),
                        Some(next) => Record::Next(Box::new(room), next),
                    });
                }
                Err(StoreError::VersionConflict { .. }) => match self.store.load(key).await? {
                    // Someone committed an event meanwhile: record on top of it and decide
                    // again from the newest state.
                    Some(r) if r.lease.as_ref().is_some_and(|l| l.owner == owner) => room = r,
                    // Our lease expired and was taken over: the new holder owns convergence.
                    _ => return Ok(Record::LeaseLost),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: self.config.max_conflicts,
        })
    }

    /// Gives the lease back after a failure, so the next event can act without waiting for it to
    /// expire. Starts from `known` (the room as this handler last wrote it) or else a fresh read,
    /// and writes only while the lease is still ours. Best effort: it gives up after a few
    /// conflicts or failures (the lease then simply expires) and never fails itself, so the
    /// caller's own error is what gets reported.
    async fn release(&self, key: &RoomKey, known: Option<StoredRoom>, owner: &str) {
        self.replace_own_lease(key, known, owner, None).await;
    }

    /// After a call with no definite answer: keep the lease until it expires, a full lease
    /// period from now, so no call overlaps the one that may still land. It is renamed
    /// `<owner>/in-doubt` so logs and `GET /rooms` tell why the room waits. Best effort: if the
    /// write fails the lease stays ours as it was (and expires the same).
    async fn keep_lease_in_doubt(&self, key: &RoomKey, room: StoredRoom, owner: &str) {
        tracing::warn!("mpu call outcome unknown; keeping the lease until it expires");
        let lease = Lease {
            owner: format!("{owner}{IN_DOUBT}"),
            until_ms: self.clock.now_ms() + self.config.lease_ms,
        };
        self.replace_own_lease(key, Some(room), owner, Some(lease))
            .await;
    }

    /// Sets the lease to `lease` if `owner` still holds it; best effort (see [`Self::release`]).
    async fn replace_own_lease(
        &self,
        key: &RoomKey,
        mut known: Option<StoredRoom>,
        owner: &str,
        lease: Option<Lease>,
    ) {
        let (mut conflicts, mut failures) = (0, 0);
        while conflicts < self.config.max_conflicts && failures < RELEASE_FAILURES {
            let mut room = match known.take() {
                Some(room) => room,
                None => match self.store.load(key).await {
                    Ok(Some(room)) => room,
                    Ok(None) => return,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "lease release: read failed");
                        continue;
                    }
                },
            };
            if room.lease.as_ref().is_none_or(|l| l.owner != owner) {
                return;
            }
            room.lease = lease.clone();
            match self.store.save(key, &room, room.version).await {
                Ok(()) => return,
                Err(StoreError::VersionConflict { .. }) => conflicts += 1,
                // Re-read: the write may have landed all the same.
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "lease release: write failed");
                }
            }
        }
        tracing::warn!(
            conflicts,
            failures,
            "gave up releasing the lease; it will expire"
        );
    }
}

/// Appended to the owner of a lease kept after a call whose outcome is unknown.
const IN_DOUBT: &str = "/in-doubt";

/// Store failures tolerated by a best-effort lease release before it leaves the lease to expire.
const RELEASE_FAILURES: u32 = 2;

enum Commit {
    Done(Handled),
    Holding(Box<StoredRoom>, Command),
}

enum Record {
    Converged(Box<StoredRoom>),
    Next(Box<StoredRoom>, Command),
    LeaseLost,
}

#[cfg(test)]
mod tests;
