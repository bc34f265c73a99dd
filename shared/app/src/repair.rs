//! The repair loop's pass: every room needing work converges with no new callback, and tasks
//! nobody wants are stopped.
//!
//! A pass does two things, both through the same [`Shell`] protocol as a callback (lease,
//! conditional writes, one call at a time per room):
//! 1. **Due rooms.** Every write of the shell marks the room with the time it next needs
//!    attention (`StoredRoom::due_ms`: a lease that may run out, a refused call's backoff, an
//!    unanswered call, the StreamURL's re-signing). The pass asks the store for the rooms due
//!    now — an index query, never a scan — and runs [`Shell::repair`] on each.
//! 2. **The leak sweep.** It pages through `ListRtcMPUTaskDetail` for the AppId and compares
//!    with the table: a costream-named task that no room records or wants is stopped (a room
//!    the table does not hold wants nothing); a task a room records that the list lacks is
//!    asked for by TaskId and, once confirmed gone, started again; a listed task whose mode or
//!    users differ from the record is updated. Tasks not named by costream, and entries without
//!    usable ids, are skipped and counted, never touched. When a room cannot be read, nothing
//!    is done to its tasks.
//!
//! Deployed, the `repair` function runs a pass every minute; `costream serve` runs one every
//! `COSTREAM_REPAIR_INTERVAL_SECS`; `costream repair --once` runs one from a terminal.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::metrics;
use crate::ports::{Clock, DueRoom, MpuPort, RoomKey, StateStore};
use crate::shell::{Finding, Handled, Shell, Stray};
use crate::store::MAX_BACKOFF_MS;
use costream_core::{decide, AppId, Target};

/// How a pass is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfig {
    /// At most this many due rooms per pass (the rest wait for the next one).
    pub batch: usize,
    /// Rooms repaired at once.
    pub concurrency: usize,
    /// No new due room is started after this long (a Lambda's pass must end inside its
    /// Timeout).
    pub deadline: Duration,
    /// Whether the pass also sweeps the task list.
    pub sweep: bool,
    /// The sweep acts on nothing new after this long from the pass's start.
    pub sweep_deadline: Duration,
    /// Whether the sweep stops costream-named tasks of rooms the store does not hold. True
    /// where the store is the deployment's table (one table per AppId: a room it does not hold
    /// expired or was deleted); false for a store that is not authoritative (`serve`'s memory
    /// store in front of the real Live API must not stop the deployment's tasks).
    pub stop_tasks_of_unknown_rooms: bool,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            batch: 1_000,
            concurrency: 8,
            deadline: Duration::from_secs(20),
            sweep: true,
            sweep_deadline: Duration::from_secs(40),
            stop_tasks_of_unknown_rooms: true,
        }
    }
}

/// What a pass did (printed by `costream repair --once`, logged by the function).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Rooms due now.
    pub due: usize,
    /// Due rooms that are right now (converged, or their mark was stale).
    pub repaired: usize,
    /// Due rooms another handler holds (its lease is still valid): left to it.
    pub busy: usize,
    /// Due rooms whose repair failed (refused, in doubt, store errors): marked again.
    pub failed: usize,
    /// Due rooms not reached before the pass's deadline.
    pub deferred: usize,
    /// Whether the sweep stopped at its deadline (the rest waits for the next pass).
    pub sweep_cut_short: bool,
    /// How long the room failing longest has been failing, or the most overdue room overdue
    /// (seconds), among rooms due within the longest backoff.
    pub oldest_due_age_secs: u64,
    pub sweep: Option<SweepReport>,
    /// Store or Live API errors that kept the pass from looking at something.
    pub errors: Vec<String>,
}

/// What the leak sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// costream-named tasks listed.
    pub listed: usize,
    /// Whether the list was read to its end.
    pub complete: bool,
    pub leaks_stopped: usize,
    /// Tasks confirmed gone and started again (or their room brought to its target).
    pub restarted: usize,
    /// Tasks updated because they differed from their room's record.
    pub updated: usize,
    /// Entries not named by costream: never touched.
    pub foreign_skipped: u32,
    /// Entries without usable ids: never touched.
    pub malformed_skipped: u32,
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// One pass of the repair loop for `app` (see the module docs). `owner` names this pass
    /// in the leases it takes. Never fails as a whole: what it could not do is in
    /// [`RepairReport::errors`], counted as `repair_failures`, and left for the next pass.
    pub async fn repair_pass(&self, app: &AppId, owner: &str, cfg: &RepairConfig) -> RepairReport {
        let started = tokio::time::Instant::now();
        let mut report = RepairReport::default();
        let now_ms = self.clock.now_ms();
        // Rooms due within the longest backoff too, for the age of the oldest failing room.
        match self
            .store
            .due_rooms(app, now_ms + MAX_BACKOFF_MS, cfg.batch)
            .await
        {
            Ok(rooms) => {
                let due: Vec<RoomKey> = rooms
                    .iter()
                    .filter(|r| r.due_ms <= now_ms)
                    .map(|r| r.key.clone())
                    .collect();
                report.due = due.len();
                metrics::add("rooms_due", due.len() as f64);
                let outcomes: Vec<Option<Result<Handled, String>>> = stream::iter(due)
                    .map(|key| async move {
                        if started.elapsed() >= cfg.deadline {
                            return None;
                        }
                        Some(self.repair(&key, owner).await.map_err(|e| {
                            tracing::warn!(room = %key, error = %e, "repair failed; the room stays marked");
                            format!("{key}: {e}")
                        }))
                    })
                    .buffer_unordered(cfg.concurrency.max(1))
                    .collect()
                    .await;
                for outcome in outcomes {
                    match outcome {
                        None => report.deferred += 1,
                        Some(Ok(Handled::Busy | Handled::Committed { .. })) => report.busy += 1,
                        Some(Ok(_)) => report.repaired += 1,
                        Some(Err(_)) => report.failed += 1,
                    }
                }
                metrics::add("rooms_repaired", report.repaired as f64);
                metrics::add("repair_failures", report.failed as f64);
                report.oldest_due_age_secs = oldest_age_secs(&rooms, now_ms);
                metrics::gauge_max("oldest_due_age_secs", report.oldest_due_age_secs as f64);
            }
            Err(e) => {
                tracing::error!(error = %e, "repair: cannot read the due rooms");
                metrics::count("repair_failures");
                report.errors.push(format!("due rooms: {e}"));
            }
        }
        if cfg.sweep {
            let mut sweep = Sweep {
                app,
                owner,
                cfg,
                started,
                errors: &mut report.errors,
                cut_short: false,
            };
            report.sweep = Some(self.sweep(&mut sweep).await);
            report.sweep_cut_short = sweep.cut_short;
        }
        tracing::info!(
            due = report.due,
            repaired = report.repaired,
            busy = report.busy,
            failed = report.failed,
            deferred = report.deferred,
            oldest_due_age_secs = report.oldest_due_age_secs,
            sweep = ?report.sweep,
            errors = report.errors.len(),
            "repair pass done"
        );
        report
    }

    async fn sweep(&self, ctx: &mut Sweep<'_>) -> SweepReport {
        let (app, owner) = (ctx.app, ctx.owner);
        let mut report = SweepReport::default();
        let listing = match self.mpu.list_tasks().await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "sweep: cannot list the tasks");
                metrics::count("repair_failures");
                ctx.errors.push(format!("task list: {e}"));
                return report;
            }
        };
        report.listed = listing.tasks.len();
        report.complete = listing.complete;
        report.foreign_skipped = listing.foreign;
        report.malformed_skipped = listing.malformed;
        let skipped = listing.foreign + listing.malformed;
        if skipped > 0 {
            tracing::info!(
                foreign = listing.foreign,
                malformed = listing.malformed,
                "sweep: skipped tasks not named by costream or without usable ids"
            );
            metrics::add("list_items_skipped", f64::from(skipped));
        }
        // Listed tasks: each is wanted by its room, differs from it, or is a leak.
        for listed in &listing.tasks {
            if ctx.out_of_time() {
                return report;
            }
            let key = RoomKey {
                app: app.clone(),
                channel: listed.channel.clone(),
            };
            let room = match self.store.load(&key).await {
                Ok(room) => room,
                Err(e) => {
                    // Never stop a task whose room can't be read.
                    metrics::count("repair_failures");
                    ctx.errors.push(format!("{key}: {e}"));
                    continue;
                }
            };
            let recorded = room.as_ref().and_then(|r| match r.record.running() {
                Target::On {
                    task,
                    shape,
                    outputs,
                } if *task == listed.task => Some((r, shape, outputs)),
                _ => None,
            });
            match recorded {
                Some((r, shape, outputs)) => {
                    let lease_free = r
                        .lease
                        .as_ref()
                        .is_none_or(|l| l.until_ms <= self.clock.now_ms());
                    if listed.matches(shape, outputs) || !lease_free || r.record.is_in_doubt() {
                        continue;
                    }
                    tracing::warn!(task_id = %listed.task, "sweep: task differs from its record; updating it");
                    let finding = Finding::TaskDiffers(listed.task.clone());
                    match self.reconcile(&key, &finding, owner).await {
                        Ok(Handled::Converged { .. }) => {
                            report.updated += 1;
                            metrics::count("tasks_updated");
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics::count("repair_failures");
                            ctx.errors.push(format!("{key}: {e}"));
                        }
                    }
                }
                None => {
                    match &room {
                        // Being started (or about to be): not a leak.
                        Some(r)
                            if decide(&r.facts, &r.record, &self.decision).target.task()
                                == Some(&listed.task) =>
                        {
                            continue
                        }
                        Some(_) => {}
                        None if !ctx.cfg.stop_tasks_of_unknown_rooms => continue,
                        None => {}
                    }
                    match self.stop_stray(&key, &listed.task, owner).await {
                        Ok(Stray::Stopped) => {
                            tracing::warn!(task_id = %listed.task, "sweep: stopped a task no room wants");
                            report.leaks_stopped += 1;
                            metrics::count("leaks_stopped");
                        }
                        Ok(Stray::Wanted | Stray::Busy) => {}
                        Err(e) => {
                            metrics::count("repair_failures");
                            ctx.errors.push(format!("{key}: {e}"));
                        }
                    }
                }
            }
        }
        // Recorded tasks the list lacks: confirmed by TaskId, then started again.
        if !listing.complete {
            return report;
        }
        let listed: HashSet<_> = listing.tasks.iter().map(|t| t.task.clone()).collect();
        let recorded = match self.store.rooms_with_tasks(app).await {
            Ok(recorded) => recorded,
            Err(e) => {
                metrics::count("repair_failures");
                ctx.errors.push(format!("rooms with tasks: {e}"));
                return report;
            }
        };
        for (key, task) in recorded {
            if listed.contains(&task) {
                continue;
            }
            if ctx.out_of_time() {
                return report;
            }
            // The version before asking: a finding about an older state is dropped.
            let seen = match self.store.load(&key).await {
                Ok(Some(room)) if room.record.running().task() == Some(&task) => room.version,
                Ok(_) => continue,
                Err(e) => {
                    metrics::count("repair_failures");
                    ctx.errors.push(format!("{key}: {e}"));
                    continue;
                }
            };
            match self.mpu.task_exists(&task).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    metrics::count("repair_failures");
                    ctx.errors.push(format!("{key}: {e}"));
                    continue;
                }
            }
            tracing::warn!(room = %key, task_id = %task, "sweep: recorded task is gone; restarting it");
            match self
                .reconcile(&key, &Finding::TaskGone { task, seen }, owner)
                .await
            {
                Ok(Handled::Converged { .. }) => {
                    report.restarted += 1;
                    metrics::count("tasks_restarted");
                }
                Ok(_) => {}
                Err(e) => {
                    metrics::count("repair_failures");
                    ctx.errors.push(format!("{key}: {e}"));
                }
            }
        }
        report
    }
}

/// What the sweep carries through.
struct Sweep<'a> {
    app: &'a AppId,
    owner: &'a str,
    cfg: &'a RepairConfig,
    started: tokio::time::Instant,
    errors: &'a mut Vec<String>,
    cut_short: bool,
}

impl Sweep<'_> {
    fn out_of_time(&mut self) -> bool {
        if self.started.elapsed() >= self.cfg.sweep_deadline {
            self.cut_short = true;
        }
        self.cut_short
    }
}

/// How long the room failing longest has been failing, or (for a room nobody could mark as
/// failing: its holder died) how long it has been due, in seconds.
fn oldest_age_secs(rooms: &[DueRoom], now_ms: u64) -> u64 {
    rooms
        .iter()
        .filter(|r| r.due_ms <= now_ms || r.failing_since_ms.is_some())
        .map(|r| now_ms.saturating_sub(r.failing_since_ms.unwrap_or(r.due_ms).min(r.due_ms)) / 1000)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
