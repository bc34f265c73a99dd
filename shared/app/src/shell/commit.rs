//! Commit: an input taken into the room by one conditional write (see the protocol in
//! [`super`]), or — when the room is contended — by an append to its inbox, which never
//! conflicts; then the lease, if a command waits and nobody holds it.

use costream_core::{Command, Record, Shape, TaskId};

use super::plan::{self, Ctx, Input, Plan, Writer};
use super::{AppError, Handled, Shell};
use crate::metrics;
use crate::ports::{Clock, MpuPort, RoomKey, StateStore, StoreError, APPEND_MIN_TTL_MS};
use crate::store::{InboxEntry, StoredRoom, DUE_MARGIN_MS, MAX_INBOX};

/// Conflicts one commit (or one record) tolerates, whatever its time budget (a store that keeps
/// answering "conflict" must not hold a handler for ever).
pub(super) const MAX_WRITE_ATTEMPTS: u32 = 64;

/// The pause before a write that failed with a retryable error is tried again (times the
/// attempts so far, up to 8).
const RETRY_PAUSE_MS: u64 = 50;

/// What a commit left the handler with.
pub(super) enum Commit {
    /// Nothing for this handler to call.
    Done(Handled),
    /// Holding the lease with a command to execute.
    Holding(Box<Holding>),
}

/// A lease holder's state between its calls.
pub(super) struct Holding {
    /// The room as this holder last wrote it (or found it carrying its write).
    pub room: StoredRoom,
    pub step: Step,
    /// The record before the step's intent (restored if the call is refused).
    pub prior: Record,
    /// The step (a Start) was counted against the app's cap by the commit's write.
    pub counted: bool,
    /// The id of the write that took the lease: the holder's proof that it is its own.
    pub token: String,
}

/// What a holder calls next.
pub(super) enum Step {
    Command(Command),
    /// Re-sign the running task's StreamURL (an Update with its complete parameters).
    Refresh {
        task: TaskId,
        shape: Shape,
        outputs: costream_core::Outputs,
    },
}

/// Where the next attempt starts from.
enum Base {
    /// This process's copy: a guess of the stored item (a write conditional on its version
    /// finds out; "nothing to write" is never concluded from it).
    Copy(StoredRoom),
    /// The item as the store last answered (a read, an append, a conflict's current item).
    Fresh(StoredRoom),
    /// No item (or one past its expiry), as the store last answered.
    Absent,
    /// No copy and nothing read: a cold process attempts the room's creation when its events
    /// would change a new room (one request for a new room; a room that exists answers with
    /// its item), else reads.
    Guess,
    /// Read it.
    Read,
}

/// What an append did.
enum Appended {
    Yes,
    /// Its condition failed (the inbox is full, the item's life changed or is ending): the
    /// commit goes on with versioned writes.
    Refused,
    /// Slow or throttled: try again.
    Later,
}

/// What a commit's write did.
enum Saved {
    /// The room as written (the plan's, with the end of a PK when it ended one).
    Written(Box<StoredRoom>),
    /// The app's start cap was full: nothing was written.
    Capped(u32),
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    pub(super) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            decision: &self.decision,
            config: &self.config,
        }
    }

    /// Commits `input` to the room: see the module docs. Also names the peer room of a PK the
    /// write ended.
    pub(super) async fn commit(
        &self,
        key: &RoomKey,
        input: &Input<'_>,
        owner: &str,
    ) -> Result<(Commit, Option<RoomKey>), AppError> {
        let started_ms = self.clock.now_ms();
        let mut base = match (input, self.store.cached(key)) {
            (Input::Events { .. } | Input::GraceOver, Some(copy)) => Base::Copy(copy),
            (Input::Events { .. }, None) => Base::Guess,
            _ => Base::Read,
        };
        // Once an append committed the events, the commit only folds and takes the lease.
        let mut appended = false;
        // An append found the inbox full: fold with versioned writes.
        let mut refused_append = false;
        let mut conflicts = 0u32;
        // The app's start cap refused this commit's Start (counted with an earlier attempt).
        let mut capped = None;
        loop {
            let now_ms = self.clock.now_ms();
            let input = if appended { &Input::Appended } else { input };
            let (room, fresh) = match std::mem::replace(&mut base, Base::Read) {
                Base::Copy(room) => (room, false),
                Base::Fresh(room) => (room, true),
                Base::Absent => (StoredRoom::new(key.channel.clone()), true),
                Base::Guess => (StoredRoom::new(key.channel.clone()), false),
                Base::Read => {
                    base = match self.read(key).await {
                        Ok(Some(room)) => Base::Fresh(room),
                        Ok(None) => Base::Absent,
                        // Slow or throttled: read again, within the handler's budget.
                        Err(e) if e.is_retryable() && !self.over_budget(started_ms) => {
                            conflicts += 1;
                            self.pause(conflicts).await;
                            Base::Read
                        }
                        Err(e) => return Err(e.into()),
                    };
                    continue;
                }
            };
            // A full inbox that was folded since (a versioned write emptied it) takes appends
            // again: a burst's handlers go back to the append, which never conflicts, instead
            // of all contending with versioned writes until their budget is spent.
            if refused_append
                && fresh
                && room.inbox.len() < MAX_INBOX / 2
                && !room.expired(now_ms + APPEND_MIN_TTL_MS)
            {
                refused_append = false;
            }
            // Another handler holds the lease: its record folds what is appended, so a callback
            // that brings anything new is appended at once — judged against the facts as
            // written, the inbox unfolded (folding a burst's inbox for each of its callbacks
            // would cost far more than the append).
            let quick = !appended
                && !refused_append
                && room.version != costream_core::Version::NONE
                && !room.lease_free(now_ms)
                && match input {
                    Input::Events {
                        key: digest,
                        events,
                    } => {
                        let mut probe = StoredRoom {
                            facts: room.facts.clone(),
                            record: room.record.clone(),
                            seen: room.seen.clone(),
                            held: room.held.clone(),
                            ..StoredRoom::new(key.channel.clone())
                        };
                        probe
                            .admit(digest.as_deref(), events, now_ms, now_ms, &self.rules())
                            .changed
                    }
                    _ => false,
                };
            if quick {
                match self.append(key, input, &room, &mut base, now_ms).await? {
                    Appended::Yes => appended = true,
                    Appended::Refused => refused_append = true,
                    Appended::Later => conflicts += 1,
                }
                continue;
            }
            let wid = self.config.writes.next();
            let who = Writer { owner, wid: &wid };
            let plan = plan::plan(&room, input, now_ms, who, capped.as_ref(), self.ctx());
            if !plan.write {
                if !fresh {
                    // Concluded only from a fresh read: a stale copy (or a guess) can never make
                    // a handler skip work.
                    continue;
                }
                tracing::debug!(version = %room.version, "no change");
                return Ok((Commit::Done(plan.outcome), None));
            }
            if appended && plan.command.is_none() {
                // The events are committed and there is nothing for this handler to call: the
                // lease holder's record, the next commit or the repair loop (the append marked
                // the room due) folds them.
                return Ok((
                    Commit::Done(Handled::Committed {
                        version: room.version,
                    }),
                    None,
                ));
            }
            if now_ms.saturating_sub(started_ms) > self.config.write_budget_ms
                || conflicts >= MAX_WRITE_ATTEMPTS
            {
                return self.out_of_budget(key, appended, conflicts, room.version);
            }
            // The events are committed without the version when the room is contended — it
            // conflicted `conflicts_before_append` times — or when another handler holds its
            // lease (it is calling, and its record folds what is appended; there is nothing to
            // take): no conflict with the holder's record, nor with the rest of a burst.
            let appendable = !appended
                && !refused_append
                && matches!(input, Input::Events { .. })
                && room.version != costream_core::Version::NONE
                && plan.ends_pk.is_none()
                && plan.refused.is_none();
            let busy = plan.command.is_none() && !room.lease_free(now_ms);
            let contended = conflicts >= self.config.conflicts_before_append;
            if appendable && (busy || contended) {
                if !matches!(plan.outcome, Handled::Committed { .. }) {
                    // The callback changes nothing; what else waits is for others to fold.
                    if fresh {
                        return Ok((Commit::Done(plan.outcome), None));
                    }
                    continue;
                }
                match self.append(key, input, &room, &mut base, now_ms).await? {
                    Appended::Yes => appended = true,
                    // The inbox is full (or the item's life changed): this commit folds with a
                    // versioned write instead, as everyone's does until the inbox is emptied.
                    Appended::Refused => refused_append = true,
                    Appended::Later => conflicts += 1,
                }
                continue;
            }
            let expected = room.version;
            let outcome = self.write_commit(key, &plan, expected, &wid).await;
            match outcome {
                Ok((Saved::Written(mut written), ended_pk)) => {
                    written.version = expected.next();
                    return self.committed(key, *written, plan, wid, ended_pk);
                }
                Ok((Saved::Capped(cap), _)) => {
                    metrics::count("starts_capped");
                    tracing::warn!(cap, "task start refused: the app's starts per minute are used up (COSTREAM_MAX_STARTS_PER_MINUTE)");
                    // Nothing was written: commit again, with the refusal.
                    capped = Some(plan::start_refused(cap));
                }
                Err(StoreError::VersionConflict { current, .. }) => {
                    metrics::count("version_conflicts");
                    match current {
                        // The write landed (the SDK's retry of it failed its condition).
                        Some(c) if c.carries(&wid) => {
                            metrics::count("writes_landed");
                            let ended_pk = plan.ends_pk.clone().map(|peer| RoomKey {
                                app: key.app.clone(),
                                channel: peer,
                            });
                            return self.committed(key, *c, plan, wid, ended_pk);
                        }
                        Some(c) if !c.expired(now_ms) => base = Base::Fresh(*c),
                        Some(_) => base = Base::Absent,
                        None => base = Base::Read,
                    }
                    conflicts += 1;
                }
                Err(e) => {
                    // The write may have landed all the same: its id tells.
                    match self.read(key).await {
                        Ok(Some(c)) if c.carries(&wid) => {
                            metrics::count("writes_landed");
                            let ended_pk = plan.ends_pk.clone().map(|peer| RoomKey {
                                app: key.app.clone(),
                                channel: peer,
                            });
                            return self.committed(key, c, plan, wid, ended_pk);
                        }
                        // It did not land, and the store is only slow or throttling: try again
                        // from the item as it is, within the handler's budget — a callback is
                        // not given up because the table is busy.
                        Ok(current) if e.is_retryable() => {
                            base = match current {
                                Some(c) => Base::Fresh(c),
                                None => Base::Absent,
                            };
                            conflicts += 1;
                            self.pause(conflicts).await;
                            continue;
                        }
                        Ok(_) => {}
                        // Unknown yet: read again (the write's id will tell) while there is
                        // time; past it, a lease it may have taken expires, and its mark
                        // (written with it) brings the repair loop.
                        Err(read) if read.is_retryable() && !self.over_budget(started_ms) => {
                            conflicts += 1;
                            self.pause(conflicts).await;
                            base = Base::Read;
                            // (The next plan carries a new write id; this one's landing, if it
                            // did, is a write like any other's: the next attempt conflicts
                            // with it and goes on from the item.)
                            continue;
                        }
                        Err(read) => {
                            tracing::warn!(error = %read, "could not tell whether a failed write landed")
                        }
                    }
                    if appended {
                        // The events are committed: what is left is the loop's.
                        tracing::warn!(error = %e, "events committed; the rest is left to the repair loop");
                        return Ok((
                            Commit::Done(Handled::Committed {
                                version: room.version,
                            }),
                            None,
                        ));
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// A contended room: commits the callback's events by an append to its inbox (conditional on
    /// the item's life only, so it never conflicts with another append) of the item `current`
    /// (as a conflict answered, or the process's copy). Whether it did; `base` becomes the item
    /// as written, or as the failed append found it.
    async fn append(
        &self,
        key: &RoomKey,
        input: &Input<'_>,
        current: &StoredRoom,
        base: &mut Base,
        now_ms: u64,
    ) -> Result<Appended, AppError> {
        let Input::Events {
            key: digest,
            events,
        } = input
        else {
            return Ok(Appended::Refused);
        };
        let entry = InboxEntry {
            id: self.config.writes.next(),
            at_ms: now_ms,
            key: digest.clone(),
            events: events.to_vec(),
        };
        match self
            .store
            .append(key, current.life.as_ref(), &entry, now_ms + DUE_MARGIN_MS)
            .await
        {
            Ok(written) => {
                metrics::count("events_appended");
                tracing::info!(version = %written.version, entries = written.inbox.len(), "events committed by an append (the room is contended)");
                *base = Base::Fresh(written);
                Ok(Appended::Yes)
            }
            // Its life changed, it is about to expire or its inbox is full: commit with a
            // versioned write again, from the item as it is.
            Err(StoreError::VersionConflict { current, .. }) => {
                *base = match current {
                    Some(c) if !c.expired(now_ms) => Base::Fresh(*c),
                    Some(_) => Base::Absent,
                    None => Base::Read,
                };
                Ok(Appended::Refused)
            }
            // Slow or throttled: the entry carries its id and the inbox is a set, so sending it
            // again cannot add it twice; the caller's next attempt does.
            Err(e) if e.is_retryable() && !matches!(e, StoreError::VersionConflict { .. }) => {
                tracing::warn!(error = %e, "append failed; trying again");
                self.pause(1).await;
                *base = Base::Read;
                Ok(Appended::Later)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a commit's plan over `expected`: with the peer room when it ends a PK, with the
    /// app's start count when it takes a Start, alone otherwise.
    async fn write_commit(
        &self,
        key: &RoomKey,
        plan: &Plan,
        expected: costream_core::Version,
        wid: &str,
    ) -> Result<(Saved, Option<RoomKey>), StoreError> {
        let mut planned = plan.room.clone();
        if let Some(peer) = &plan.ends_pk {
            let peer = RoomKey {
                app: key.app.clone(),
                channel: peer.clone(),
            };
            return match self.end_pk(key, &mut planned, &peer, wid).await? {
                Some(peer_room) => {
                    self.store
                        .save_pair(
                            (key, &planned, expected),
                            (&peer, &peer_room, peer_room.version),
                        )
                        .await?;
                    Ok((Saved::Written(Box::new(planned)), Some(peer)))
                }
                None => {
                    self.store.save(key, &planned, expected).await?;
                    Ok((Saved::Written(Box::new(planned)), Some(peer)))
                }
            };
        }
        match plan.count_start {
            Some(cap) => {
                let minute = planned.at_ms / 60_000;
                match self
                    .store
                    .save_counting_start(key, &planned, expected, minute, cap)
                    .await?
                {
                    true => Ok((Saved::Written(Box::new(planned)), None)),
                    false => Ok((Saved::Capped(cap), None)),
                }
            }
            None => {
                self.store.save(key, &planned, expected).await?;
                Ok((Saved::Written(Box::new(planned)), None))
            }
        }
    }

    /// Whether a commit begun at `started_ms` has used up its write budget.
    pub(super) fn over_budget(&self, started_ms: u64) -> bool {
        self.clock.now_ms().saturating_sub(started_ms) > self.config.write_budget_ms
    }

    /// The pause before the `attempt`th retry of a write or read that failed retryably.
    pub(super) async fn pause(&self, attempt: u32) {
        let ms = RETRY_PAUSE_MS * u64::from(attempt.clamp(1, 8));
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    /// After a commit's write landed (`room` as written, or as found carrying it).
    fn committed(
        &self,
        key: &RoomKey,
        room: StoredRoom,
        plan: Plan,
        wid: String,
        ended_pk: Option<RoomKey>,
    ) -> Result<(Commit, Option<RoomKey>), AppError> {
        if let Some(source) = plan.refused {
            metrics::count("rooms_marked");
            return Err(AppError::Mpu {
                room: key.to_string(),
                source,
            });
        }
        if let Some(peer) = &ended_pk {
            tracing::info!(room = %key, peer = %peer, "pk ended with this room's broadcast");
        }
        tracing::info!(
            version = %room.version,
            command = plan.command.as_ref().map_or("none", Command::name),
            mix_mode = ?plan.target.mix_mode(),
            lease = plan.command.is_some(),
            due_ms = room.due_ms,
            "event committed"
        );
        let commit = match plan.command {
            Some(command) => Commit::Holding(Box::new(Holding {
                room,
                step: Step::Command(command),
                prior: plan.prior,
                // A Start counted with a PK pair's write is counted before the call instead.
                counted: plan.count_start.is_some() && ended_pk.is_none(),
                token: wid,
            })),
            None => Commit::Done(match plan.outcome {
                Handled::Committed { .. } => Handled::Committed {
                    version: room.version,
                },
                other => other,
            }),
        };
        Ok((commit, ended_pk))
    }

    /// A commit that kept conflicting past its budget: its events were appended (committed; the
    /// append marked the room due) or, rarely, could not be (the item's life kept changing).
    fn out_of_budget(
        &self,
        key: &RoomKey,
        appended: bool,
        conflicts: u32,
        version: costream_core::Version,
    ) -> Result<(Commit, Option<RoomKey>), AppError> {
        metrics::count("writes_out_of_budget");
        if appended {
            tracing::warn!(
                conflicts,
                "room contended: events committed, the lease left to others and the repair loop"
            );
            return Ok((Commit::Done(Handled::Committed { version }), None));
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts,
        })
    }
}
