//! What the repair loop's sweep finds: a task no room wants (stopped under the room's lease),
//! and a recorded task that is gone or differs (applied to the record, then converged).

use costream_core::{decide, Command, Record, Target, TaskId, Version};

use super::commit::MAX_WRITE_ATTEMPTS;
use super::plan::{self, Input};
use super::{AppError, Handled, Shell};
use crate::metrics;
use crate::ports::{Clock, MpuPort, RoomKey, StateStore, StoreError};
use crate::store::StoredRoom;

/// What the leak sweep found about a room's recorded task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Absent from the task list, and `ListRtcMPUTaskDetail(TaskId)` confirmed it is gone
    /// (Alibaba stopped it: `MaxIdleTime`, everyone left): start it again if still wanted.
    /// `seen` is the room version read before the confirmation was asked: if the room was
    /// written since, the finding may be stale and is dropped (the next sweep looks again).
    TaskGone { task: TaskId, seen: Version },
    /// Listed with another mode or other users than recorded: re-assert the target.
    TaskDiffers(TaskId),
}

impl Finding {
    /// Changes `record` if it still names the task found; whether it changed.
    pub(crate) fn apply(&self, record: &mut Record) -> bool {
        match self {
            Finding::TaskGone { task, .. } if record.running().task() == Some(task) => {
                record.confirm(Target::Off);
                true
            }
            Finding::TaskDiffers(task)
                if record.running().task() == Some(task) && !record.is_in_doubt() =>
            {
                record.distrust();
                true
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::TaskGone { task, .. } => write!(f, "sweep: task {task} missing"),
            Finding::TaskDiffers(t) => write!(f, "sweep: task {t} differs from the record"),
        }
    }
}

/// What [`Shell::stop_stray`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stray {
    /// Stopped: nobody wanted it.
    Stopped,
    /// The room records or wants the task after all: left alone.
    Wanted,
    /// Another handler holds the room's lease: left for the next sweep.
    Busy,
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Acts on what the leak sweep found about the room's recorded task, then converges.
    /// Only while the lease is free and the record still names that task: a holder's call in
    /// flight is never second-guessed.
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app, finding = %finding))]
    pub async fn reconcile(
        &self,
        key: &RoomKey,
        finding: &Finding,
        owner: &str,
    ) -> Result<Handled, AppError> {
        self.run(key, &Input::Finding(finding), &finding.to_string(), owner)
            .await
            .map(|(handled, _)| handled)
    }

    /// Stops `task`, a costream-named task of this room that the Live API lists, if the room
    /// neither records nor wants it — under the room's lease, so no call of a handler overlaps.
    /// A room the table does not hold (expired, deleted) wants nothing; its item is created with
    /// the lease, so a handler that creates the room meanwhile conflicts instead of overlapping.
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app, task_id = %task))]
    pub async fn stop_stray(
        &self,
        key: &RoomKey,
        task: &TaskId,
        owner: &str,
    ) -> Result<Stray, AppError> {
        let stop = Command::Stop { task: task.clone() };
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self
                .read(key)
                .await?
                .unwrap_or_else(|| StoredRoom::new(key.channel.clone()));
            let now_ms = self.clock.now_ms();
            if !current.lease_free(now_ms) {
                return Ok(Stray::Busy);
            }
            let mut room = current.clone();
            room.fold_keeping_ends(now_ms, &self.rules());
            let decision = decide(&room.facts, &room.record, &self.decision);
            let held = room.record.running().task() == Some(task)
                || decision.target.task() == Some(task)
                || !room.held.is_empty();
            if held {
                return Ok(Stray::Wanted);
            }
            let wid = self.config.writes.next();
            room.take_lease(owner, &wid, now_ms, self.config.lease_ms);
            plan::stamp(&mut room, &current, &wid, now_ms, &self.config);
            let expected = current.version;
            match self.store.save(key, &room, expected).await {
                Ok(()) => room.version = expected.next(),
                Err(StoreError::VersionConflict { current, .. })
                    if !current.as_ref().is_some_and(|c| c.carries(&wid)) =>
                {
                    metrics::count("version_conflicts");
                    continue;
                }
                Err(StoreError::VersionConflict { .. }) => room.version = expected.next(),
                Err(e) => {
                    // The write may have landed: give the lease back.
                    self.settle(key, None, &wid).await;
                    return Err(e.into());
                }
            }
            let done = self.mpu.execute(key, &stop, room.version).await;
            let entry = self.note(
                room.version.get(),
                "sweep: a task no room wants",
                &stop,
                &done,
            );
            self.keep_note(key, &entry).await;
            return match done {
                Ok(_) => {
                    self.settle(key, Some(room), &wid).await;
                    Ok(Stray::Stopped)
                }
                Err(source) => {
                    self.fail(key, room, None, &source, &wid).await;
                    Err(AppError::Mpu {
                        room: key.to_string(),
                        source,
                    })
                }
            };
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: MAX_WRITE_ATTEMPTS,
        })
    }
}
