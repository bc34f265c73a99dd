//! Giving a lease back and marking a room after a failure: what a handler that cannot finish
//! leaves behind is always a room the repair loop will find (see `mark_due`), never a lease held
//! longer than it must be.

use costream_core::{decide, Command, Record};

use super::plan::{self, mark_due, note_failure};
use super::Shell;
use crate::metrics;
use crate::ports::{Clock, MpuFailure, MpuPort, RoomKey, StateStore, StoreError};
use crate::store::{Lease, StoredRoom, DUE_MARGIN_MS};

/// Appended to the token of a lease kept after a call whose outcome is unknown: no holder's
/// token matches it any more, so only its expiry frees the room.
const IN_DOUBT: &str = "/in-doubt";

/// Store failures tolerated by a best-effort lease release before it leaves the lease to expire.
const RELEASE_FAILURES: u32 = 2;

/// Conflicts tolerated by a best-effort lease release.
const RELEASE_CONFLICTS: u32 = 16;

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// After a failed call: counts the failure, and marks the room for the repair loop. A
    /// refused call certainly did nothing, so the record goes back to what it was before the
    /// call's intent (the task still runs as last confirmed: the viewers keep their stream),
    /// the lease is released and the room is due after a backoff (5 s, doubling, capped at
    /// [`crate::store::MAX_BACKOFF_MS`]).
    /// A call with no definite answer may still land: the lease is kept (its token marked
    /// in doubt) for a full period, and the room is due when it runs out.
    pub(super) async fn fail(
        &self,
        key: &RoomKey,
        room: StoredRoom,
        prior: Option<Record>,
        failure: &MpuFailure,
        token: &str,
    ) {
        metrics::count("rooms_marked");
        let begun = room.record.clone();
        let definite = failure.is_definite();
        if definite {
            tracing::warn!(error = %failure, "mpu call refused; room marked for repair");
        } else {
            tracing::warn!(error = %failure, "mpu call outcome unknown; keeping the lease until it expires");
        }
        let lease_ms = self.config.lease_ms;
        self.amend_own(key, Some(room), token, |r, now_ms| {
            note_failure(&mut r.upkeep, failure, now_ms);
            if definite {
                if let Some(prior) = &prior {
                    if r.record == begun {
                        r.record = prior.clone();
                    }
                }
                r.lease = None;
                r.due_ms = Some(now_ms + crate::store::backoff_ms(r.upkeep.attempts));
            } else {
                let until_ms = now_ms + lease_ms;
                r.lease = Some(Lease {
                    owner: r
                        .lease
                        .as_ref()
                        .map_or_else(String::new, |l| format!("{}{IN_DOUBT}", l.owner)),
                    until_ms,
                    token: format!("{token}{IN_DOUBT}"),
                });
                r.due_ms = Some(until_ms + DUE_MARGIN_MS);
            }
            if let Some(until) = r.held_until() {
                r.due_ms = Some(r.due_ms.map_or(until, |d| d.min(until)));
            }
        })
        .await;
    }

    /// Gives the lease back when no call of ours is in flight (a call answered but its record
    /// failed, a target that kept moving, a stray stopped) and marks the room due from what it
    /// still needs. Starts from `known` (the room as this handler last wrote it) or a fresh read.
    pub(super) async fn settle(&self, key: &RoomKey, known: Option<StoredRoom>, token: &str) {
        let decision_config = &self.decision;
        let resign_after_ms = self.config.resign_after_ms;
        self.amend_own(key, known, token, |r, now_ms| {
            r.lease = None;
            let pending = decide(&r.facts, &r.record, decision_config)
                .command
                .is_some();
            if pending {
                metrics::count("rooms_marked");
            }
            mark_due(r, pending, now_ms, resign_after_ms);
        })
        .await;
    }

    /// Applies `amend` to the room (its inbox folded, ending events kept held) and writes it if
    /// the lease is still the one `token` took. Best effort: it gives up after a few conflicts or
    /// failures (the lease then simply expires, and the room's mark, written with the lease,
    /// brings the repair loop) and never fails itself, so the caller's own error is what gets
    /// reported.
    async fn amend_own(
        &self,
        key: &RoomKey,
        mut known: Option<StoredRoom>,
        token: &str,
        amend: impl Fn(&mut StoredRoom, u64),
    ) {
        let (mut conflicts, mut failures) = (0, 0);
        while conflicts < RELEASE_CONFLICTS && failures < RELEASE_FAILURES {
            let current = match known.take() {
                Some(room) => room,
                None => match self.read(key).await {
                    Ok(Some(room)) => room,
                    Ok(None) => return,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "lease release: read failed");
                        continue;
                    }
                },
            };
            if !current.holds_lease(token) {
                return;
            }
            let now_ms = self.clock.now_ms();
            let mut room = current.clone();
            room.fold_keeping_ends(now_ms, &self.rules());
            amend(&mut room, now_ms);
            let wid = self.config.writes.next();
            plan::stamp(&mut room, &current, &wid, now_ms, &self.config);
            if self.config.webhooks {
                plan::queue_hooks(&current, &mut room, now_ms, &self.decision);
            }
            match self.store.save(key, &room, current.version).await {
                Ok(()) => return,
                Err(StoreError::VersionConflict { current, .. }) => {
                    metrics::count("version_conflicts");
                    conflicts += 1;
                    match current {
                        Some(c) if c.wid.as_deref() == Some(wid.as_str()) => return,
                        Some(c) => known = Some(*c),
                        None => {}
                    }
                }
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

    /// The app's cap on task Starts per minute for a Start the commit did not count (one
    /// decided after another call, e.g. a new broadcast's Start after the old task's Stop, or
    /// one committed with a PK's end): refused before it is sent, retryable — the room is
    /// marked and the repair loop tries again after its backoff. `None` when it may go ahead.
    pub(super) async fn start_capped(
        &self,
        key: &RoomKey,
        command: &Command,
    ) -> Option<MpuFailure> {
        let (Command::Start { .. }, Some(cap)) = (command, self.config.max_starts_per_minute)
        else {
            return None;
        };
        let minute = self.clock.now_ms() / 60_000;
        match self.store.take_start(&key.app, minute, cap).await {
            Ok(true) => None,
            Ok(false) => {
                metrics::count("starts_capped");
                tracing::warn!(cap, "task start refused: the app's starts per minute are used up (COSTREAM_MAX_STARTS_PER_MINUTE)");
                Some(plan::start_refused(cap))
            }
            // Throttled or timed out: the counter is hot, which is when the cap matters most —
            // refuse (retryable) rather than let a flood through.
            Err(e @ StoreError::Unavailable { .. }) => {
                metrics::count("starts_capped");
                tracing::warn!(error = %e, "start counter unavailable; start refused for now");
                Some(MpuFailure {
                    reason: "the start counter is unavailable".to_owned(),
                    ..plan::start_refused(cap)
                })
            }
            // Misconfigured (permissions, a missing table): the cap can't work at all; logged
            // loudly, and broadcasts go on.
            Err(e) => {
                tracing::error!(error = %e, "start counter unreadable; starting anyway");
                None
            }
        }
    }
}
