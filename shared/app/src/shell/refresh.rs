//! Re-signing the running task's StreamURL, at half its validity, through the lease.

use costream_core::{decide, Command, Target};

use super::commit::{Holding, Step, MAX_WRITE_ATTEMPTS};
use super::{plan, AppError, Handled, Shell};
use crate::metrics;
use crate::ports::{Clock, MpuPort, RoomKey, StateStore, StoreError};

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Re-signs the StreamURL of a converged room whose signature is past its half-life: takes
    /// the lease, sends an Update with the complete parameters and a fresh URL, records it.
    pub(super) async fn refresh_if_due(
        &self,
        key: &RoomKey,
        owner: &str,
    ) -> Result<Option<Handled>, AppError> {
        let Some(after) = self.config.resign_after_ms else {
            return Ok(None);
        };
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(current) = self.read(key).await? else {
                return Ok(None);
            };
            let now_ms = self.clock.now_ms();
            let mut room = current.clone();
            room.fold_keeping_ends(now_ms, &self.rules());
            if !room.lease_free(now_ms) || !room.held.is_empty() {
                return Ok(None);
            }
            if decide(&room.facts, &room.record, &self.decision)
                .command
                .is_some()
            {
                return Ok(None);
            }
            let Target::On {
                task,
                shape,
                outputs,
            } = room.record.running().clone()
            else {
                return Ok(None);
            };
            if room.upkeep.signed_ms.is_some_and(|s| s + after > now_ms) {
                return Ok(None);
            }
            let prior = room.record.clone();
            let update = Command::Update {
                task: task.clone(),
                shape: shape.clone(),
                outputs: outputs.clone(),
                set_outputs: true,
            };
            room.record.begin(&update);
            let wid = self.config.writes.next();
            room.take_lease(owner, &wid, now_ms, self.config.lease_ms);
            plan::stamp(&mut room, &current, &wid, now_ms, &self.config);
            if self.config.webhooks {
                plan::queue_hooks(&current, &mut room, now_ms, &self.decision);
            }
            match self.store.save(key, &room, current.version).await {
                Ok(()) => {
                    room.version = current.version.next();
                    tracing::info!(task_id = %task, "re-signing the task's StreamURL");
                    let holding = Holding {
                        room,
                        step: Step::Refresh {
                            task,
                            shape,
                            outputs,
                        },
                        prior,
                        counted: false,
                        token: wid,
                    };
                    return self
                        .converge(key, holding, "repair: StreamURL re-signing")
                        .await
                        .map(Some);
                }
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                }
                Err(e) => {
                    self.settle(key, None, &wid).await;
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }
}
