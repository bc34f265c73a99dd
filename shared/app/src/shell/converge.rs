//! Converge: the lease holder calls, records the result, decides again, until the running task
//! equals the target of the newest version (see the protocol in [`super`]).

use costream_core::{Command, Target};

use super::commit::{Holding, Step, MAX_WRITE_ATTEMPTS};
use super::plan::{self, RecordPlan};
use super::{AppError, Handled, Shell};
use crate::metrics;
use crate::ports::{Clock, MpuDone, MpuFailure, MpuPort, RoomKey, StateStore, StoreError};
use crate::store::{HistoryEntry, StoredRoom};

/// What recording a call led to.
enum Recorded {
    Converged(Box<StoredRoom>),
    Next(Box<StoredRoom>, Box<Command>, costream_core::Record),
    LeaseLost,
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Runs a holder's steps: each call, its record, the next call the newest state asks for.
    pub(super) async fn converge(
        &self,
        key: &RoomKey,
        holding: Holding,
        trigger: &str,
    ) -> Result<Handled, AppError> {
        let Holding {
            mut room,
            mut step,
            mut prior,
            mut counted,
            token,
        } = holding;
        let mut calls = 0;
        loop {
            if calls == self.config.max_calls {
                self.settle(key, Some(room), &token).await;
                return Err(AppError::NotConverged {
                    room: key.to_string(),
                    calls,
                });
            }
            calls += 1;
            let (command, done) = match &step {
                Step::Command(command) => {
                    let refused = match (std::mem::take(&mut counted), command) {
                        (false, Command::Start { .. }) => self.start_capped(key, command).await,
                        _ => None,
                    };
                    let done = match refused {
                        Some(refused) => Err(refused),
                        None => self.mpu.execute(key, command, room.version).await,
                    };
                    (command.clone(), done)
                }
                Step::Refresh {
                    task,
                    shape,
                    outputs,
                } => (
                    Command::Update {
                        task: task.clone(),
                        shape: shape.clone(),
                        outputs: outputs.clone(),
                        set_outputs: true,
                    },
                    self.mpu
                        .refresh_output(key, task, shape, outputs, room.version)
                        .await,
                ),
            };
            // The call's history entry goes with the write that records its result.
            let entry = self.note(room.version.get(), trigger, &command, &done);
            let (now_running, fresh_url) = match done {
                Ok(MpuDone::Done {
                    request_id,
                    fresh_url,
                }) => {
                    tracing::info!(
                        version = %room.version,
                        command = command.name(),
                        task_id = %command.task(),
                        mpu_request_id = request_id.as_deref().unwrap_or(""),
                        "mpu call applied"
                    );
                    (
                        command.result(),
                        fresh_url || matches!(step, Step::Refresh { .. }),
                    )
                }
                Ok(MpuDone::TaskMissing) => {
                    tracing::warn!(task_id = %command.task(), "task gone (confirmed by TaskId); starting it again");
                    (Target::Off, false)
                }
                Err(source) => {
                    self.keep_note(key, &entry).await;
                    self.fail(key, room, Some(prior), &source, &token).await;
                    return Err(mpu_error(key, source));
                }
            };
            let healing = matches!(command, Command::Start { .. });
            let recorded = self
                .record(key, room, &now_running, fresh_url, &token, &entry, healing)
                .await;
            if !matches!(recorded, Ok(Recorded::Converged(_) | Recorded::Next(..))) {
                // The entry did not go with a record write.
                self.keep_note(key, &entry).await;
            }
            let recorded = match recorded {
                Ok(recorded) => recorded,
                // Kept conflicting past the budget: the events are all committed, the call is
                // done; the lease goes back (best effort) and the room, marked, is the repair
                // loop's — never a failed callback.
                Err(AppError::Contention { conflicts, .. }) => {
                    tracing::warn!(conflicts, "could not record the call under contention; the room is left to the repair loop");
                    self.settle(key, None, &token).await;
                    return Ok(Handled::LeaseLost { calls });
                }
                Err(e) => {
                    // The call is done (we have its answer) but the record failed, or landed
                    // without our knowing: no call of ours is in flight, so the lease goes back
                    // and the redelivery, the next event or the repair loop re-issues the
                    // idempotent call now rather than after the lease expired.
                    self.settle(key, None, &token).await;
                    return Err(e);
                }
            };
            match recorded {
                Recorded::Converged(room) => {
                    return Ok(Handled::Converged {
                        version: room.version,
                        calls,
                        target: room.record.running().clone(),
                    })
                }
                Recorded::Next(r, next, before) => {
                    room = *r;
                    step = Step::Command(*next);
                    prior = before;
                }
                Recorded::LeaseLost => return Ok(Handled::LeaseLost { calls }),
            }
        }
    }

    /// Records what the task now is and decides again from the newest state, releasing the lease
    /// if nothing is left to do, in one conditional write. A conflict answers with the item as
    /// it is: while the lease is still this holder's, it records on top of it (other handlers'
    /// commits and appends included) and decides again.
    /// A retryable store failure while recording (a timeout, throttling: a burst on a busy
    /// table) is tried again this many times within the handler's budget; past that the error
    /// is the caller's (the lease is given back, the room's mark brings the repair loop).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        key: &RoomKey,
        mut room: StoredRoom,
        running: &Target,
        fresh_url: bool,
        token: &str,
        entry: &HistoryEntry,
        healing: bool,
    ) -> Result<Recorded, AppError> {
        let started_ms = self.clock.now_ms();
        // The entry rides with the first attempt only (a conflict is usually an append: the
        // next attempt is a plain write, and the entry is written on its own if none carried it).
        let mut noting = true;
        let mut failures = 0u32;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let now_ms = self.clock.now_ms();
            let wid = self.config.writes.next();
            let RecordPlan {
                room: planned,
                next,
                prior,
            } = plan::plan_record(&room, running, fresh_url, healing, now_ms, &wid, self.ctx());
            let expected = room.version;
            let saved = if noting {
                self.store.save_noting(key, &planned, expected, entry).await
            } else {
                self.store.save(key, &planned, expected).await
            };
            match saved {
                Ok(()) => {
                    if !noting {
                        self.keep_note(key, entry).await;
                    }
                    let mut written = planned;
                    written.version = expected.next();
                    return Ok(match next {
                        None => Recorded::Converged(Box::new(written)),
                        Some(next) => Recorded::Next(Box::new(written), Box::new(next), prior),
                    });
                }
                Err(StoreError::VersionConflict { current, .. }) => {
                    metrics::count("version_conflicts");
                    noting = false;
                    let current = match current {
                        Some(c) => Some(*c),
                        None => self.read(key).await?,
                    };
                    match current {
                        Some(c) if c.wid.as_deref() == Some(wid.as_str()) => {
                            // The write landed (the SDK's retry of it failed its condition).
                            metrics::count("writes_landed");
                            self.keep_note(key, entry).await;
                            return Ok(match next {
                                None => Recorded::Converged(Box::new(c)),
                                Some(next) => Recorded::Next(Box::new(c), Box::new(next), prior),
                            });
                        }
                        // Someone committed or appended meanwhile: record on top of it and
                        // decide again from the newest state.
                        Some(c) if c.holds_lease(token) && !c.expired(now_ms) => room = c,
                        // Our lease expired and was taken over: the new holder owns convergence.
                        _ => return Ok(Recorded::LeaseLost),
                    }
                    if now_ms.saturating_sub(started_ms) > self.config.write_budget_ms {
                        break;
                    }
                }
                // Slow or throttled (a burst on a busy table): the call's result is not given
                // up. The write may have landed — its id tells — else record again from the
                // item as it is, within the handler's budget.
                Err(e)
                    if e.is_retryable()
                        && failures < RECORD_RETRIES
                        && !self.over_budget(started_ms) =>
                {
                    tracing::warn!(error = %e, "recording the call's result failed; trying again");
                    failures += 1;
                    self.pause(failures).await;
                    let current = match self.read(key).await {
                        Ok(current) => current,
                        // Still unknown: the next attempt's condition tells.
                        Err(read) if read.is_retryable() => continue,
                        Err(read) => return Err(read.into()),
                    };
                    // From here the entry is written on its own, after the write.
                    let noted = std::mem::replace(&mut noting, false);
                    match current {
                        Some(c) if c.wid.as_deref() == Some(wid.as_str()) => {
                            metrics::count("writes_landed");
                            if !noted {
                                // (A landed transaction wrote the entry with the room.)
                                self.keep_note(key, entry).await;
                            }
                            return Ok(match next {
                                None => Recorded::Converged(Box::new(c)),
                                Some(next) => Recorded::Next(Box::new(c), Box::new(next), prior),
                            });
                        }
                        Some(c) if c.holds_lease(token) && !c.expired(now_ms) => room = c,
                        _ => return Ok(Recorded::LeaseLost),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        metrics::count("writes_out_of_budget");
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: MAX_WRITE_ATTEMPTS,
        })
    }
}

/// See [`Shell::record`].
const RECORD_RETRIES: u32 = 3;

fn mpu_error(key: &RoomKey, source: MpuFailure) -> AppError {
    AppError::Mpu {
        room: key.to_string(),
        source,
    }
}
