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
//! 4. **Mark.** Every write also sets when the room next needs the repair loop
//!    ([`StoredRoom::due_ms`]): the end of the lease while a command is pending, a backoff after a
//!    refusal, nothing once converged (but the StreamURL's re-signing). So whatever a handler
//!    could not finish is found by the loop ([`crate::repair`]) without a scan.
//!
//! Requests on the common path: 1 read + 1 write + 1 MPU call + its history entry + 1 write.
//! A duplicate callback: 1 read, no write, no call.

use crate::metrics;
use crate::ports::{Clock, MpuDone, MpuPort, RoomKey, StateStore};
use crate::ports::{MpuFailure, StoreError};
use crate::store::{
    backoff_ms, HistoryEntry, LastFailure, Lease, StoredRoom, Upkeep, HEAL_SPACING_MS,
};
use costream_core::{
    apply, decide, CdnAction, Command, DecisionConfig, Merge, Record, Role, RoomEvent, Shape,
    Target, TaskId, UserAction, Version,
};

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
    /// Version conflicts tolerated per handler before giving up with a retryable error.
    pub max_conflicts: u32,
    /// MPU calls one holder makes before giving up (a target that keeps moving).
    pub max_calls: u32,
    /// Re-sign the running task's StreamURL this long after it was signed (half the URL's
    /// validity); `None` when the ingest domain does not sign URLs.
    pub resign_after_ms: Option<u64>,
    /// Queue webhooks in the room's outbox (a backend URL is configured).
    pub webhooks: bool,
    /// At most this many task Starts per minute for the whole app (`None`: no cap).
    pub max_starts_per_minute: Option<u32>,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            lease_ms: 45_000,
            dedupe_secs: 3_600,
            dedupe_cap: 128,
            max_conflicts: 16,
            max_calls: 8,
            resign_after_ms: None,
            webhooks: false,
            max_starts_per_minute: None,
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
    #[tracing::instrument(skip_all, fields(channel_id = %key.channel, app_id = %key.app, dedupe_key = dedupe_key))]
    pub async fn handle(
        &self,
        key: &RoomKey,
        dedupe_key: Option<&str>,
        events: &[RoomEvent],
        owner: &str,
    ) -> Result<Handled, AppError> {
        let input = Input::Events { dedupe_key, events };
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
        let (handled, _) = self.run(key, &Input::Repair, "repair", owner).await?;
        if matches!(handled, Handled::NoChange | Handled::Converged { .. }) {
            if let Some(refreshed) = self.refresh_if_due(key, owner).await? {
                return Ok(refreshed);
            }
        }
        Ok(handled)
    }

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
        for _ in 0..self.config.max_conflicts {
            let mut room = self
                .store
                .load(key)
                .await?
                .unwrap_or_else(|| StoredRoom::new(key.channel.clone()));
            let now_ms = self.clock.now_ms();
            if room.lease.as_ref().is_some_and(|l| l.until_ms > now_ms) {
                return Ok(Stray::Busy);
            }
            let decision = decide(&room.facts, &room.record, &self.decision);
            if room.record.running().task() == Some(task) || decision.target.task() == Some(task) {
                return Ok(Stray::Wanted);
            }
            let lease = Lease {
                owner: owner.to_owned(),
                until_ms: now_ms + self.config.lease_ms,
            };
            room.due_ms = Some(lease.until_ms + DUE_MARGIN_MS);
            room.lease = Some(lease);
            let expected = room.version;
            match self.store.save(key, &room, expected).await {
                Ok(()) => room.version = expected.next(),
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                    continue;
                }
                Err(e) => {
                    // The write may have landed: give the lease back.
                    self.settle(key, None, owner).await;
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
                    self.settle(key, Some(room), owner).await;
                    Ok(Stray::Stopped)
                }
                Err(source) => {
                    self.fail(key, room, None, &source, owner).await;
                    Err(AppError::Mpu {
                        room: key.to_string(),
                        source,
                    })
                }
            };
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: self.config.max_conflicts,
        })
    }

    /// The room's kept decisions, oldest first.
    pub async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, AppError> {
        Ok(self.store.history(key).await?)
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
        let (room, step, prior, counted) = match commit {
            Commit::Done(handled) => return Ok((handled, ended_pk)),
            Commit::Holding(room, command, prior, counted) => {
                (*room, Step::Command(command), prior, counted)
            }
        };
        let handled = self
            .converge(key, room, step, prior, counted, trigger, owner)
            .await?;
        Ok((handled, ended_pk))
    }

    async fn commit(
        &self,
        key: &RoomKey,
        input: &Input<'_>,
        owner: &str,
    ) -> Result<(Commit, Option<RoomKey>), AppError> {
        // Start from this process's copy of the room when it has one (no read: the write below
        // is conditional on its version, and a stale copy just conflicts); conclude "nothing to
        // write" only from a fresh read.
        let mut use_copy = true;
        // The app's start cap refused this handler's Start (counted with the commit).
        let mut capped: Option<MpuFailure> = None;
        for _ in 0..self.config.max_conflicts {
            let copy = if use_copy {
                self.store.cached(key)
            } else {
                None
            };
            let from_copy = copy.is_some();
            let mut room = match copy {
                Some(room) => room,
                None => self
                    .store
                    .load(key)
                    .await?
                    .unwrap_or_else(|| StoredRoom::new(key.channel.clone())),
            };
            let loaded = self.config.webhooks.then(|| room.clone());
            let now_ms = self.clock.now_ms();
            let now_secs = now_ms / 1000;
            // Free when absent or expired — never "ours, so free": two deliveries sharing a
            // request id could otherwise overlap their calls, and the shortcut gained nothing
            // (the lease, 45 s, expires before Lambda's first retry at 60 s).
            let lease_free = room.lease.as_ref().is_none_or(|l| l.until_ms <= now_ms);
            let (mut duplicate, mut changed) = (false, false);
            match input {
                Input::Events { dedupe_key, events } => {
                    duplicate = dedupe_key.is_some_and(|k| room.seen.contains(k, now_secs));
                    if !duplicate {
                        for event in *events {
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
                }
                Input::Repair => {}
                Input::Finding(finding) => {
                    let fresh = match finding {
                        Finding::TaskGone { seen, .. } => *seen == room.version,
                        Finding::TaskDiffers(_) => true,
                    };
                    if lease_free && fresh {
                        changed = finding.apply(&mut room.record);
                    }
                }
            }
            let decision = decide(&room.facts, &room.record, &self.decision);
            if changed
                && self.decision.require_registered_host
                && room.facts.registered_host().is_none()
                && room.facts.broadcast().is_some()
            {
                metrics::count("starts_refused_unregistered");
                tracing::warn!(
                    "a publisher with no registered host: no broadcast (COSTREAM_REQUIRE_REGISTERED_HOST)"
                );
            }
            // A command only matters to us if we can take the lease; otherwise its holder will
            // see our committed state and act on it. A Start the app's cap refused is not
            // made: the room is committed with the refusal and a backoff instead.
            let is_start = matches!(decision.command, Some(Command::Start { .. }));
            let refused = capped.clone().filter(|_| is_start && lease_free);
            // A heal (the Start of the running task after a CDN publish_done) waits until the
            // room's last heal is HEAL_SPACING_MS old.
            let heal = is_start && room.record.needs_heal();
            let heal_waits = room
                .upkeep
                .healed_ms
                .map(|h| h + HEAL_SPACING_MS)
                .filter(|until| heal && lease_free && *until > now_ms);
            let will_call = decision.command.is_some()
                && lease_free
                && refused.is_none()
                && heal_waits.is_none();
            if will_call && heal {
                room.upkeep.healed_ms = Some(now_ms);
            }
            if let (Some(until), Input::Events { .. }) = (heal_waits, input) {
                metrics::count("heals_deferred");
                tracing::warn!(
                    due_ms = until,
                    "heal deferred: the room's last heal is less than 30 s old"
                );
            }
            if let Some(failure) = &refused {
                note_failure(&mut room.upkeep, failure, now_ms);
            }
            let start_cap = self
                .config
                .max_starts_per_minute
                .filter(|_| will_call && is_start);
            let prior = room.record.clone();
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
            let marked = (room.due_ms, room.upkeep.clone());
            self.mark_due(&mut room, decision.command.is_some(), now_ms);
            if let Some(until) = heal_waits {
                room.due_ms = Some(room.due_ms.map_or(until, |d| d.max(until)));
            }
            let remarked = marked != (room.due_ms, room.upkeep.clone());
            if duplicate && !will_call && !remarked {
                if from_copy {
                    use_copy = false;
                    continue;
                }
                return Ok((Commit::Done(Handled::Duplicate), None));
            }
            // (Only the repair loop is told: a callback's answer stays `no_change`.)
            let busy =
                decision.command.is_some() && !lease_free && !matches!(input, Input::Events { .. });
            if !changed && !will_call && !duplicate && !remarked && refused.is_none() {
                if from_copy {
                    use_copy = false;
                    continue;
                }
                tracing::debug!(version = %room.version, "no change");
                return Ok((
                    Commit::Done(if busy {
                        Handled::Busy
                    } else {
                        Handled::NoChange
                    }),
                    None,
                ));
            }
            if let Input::Events {
                dedupe_key: Some(k),
                ..
            } = input
            {
                if !duplicate {
                    room.seen.insert(
                        (*k).to_owned(),
                        now_secs,
                        now_secs + self.config.dedupe_secs,
                        self.config.dedupe_cap,
                    );
                }
            }
            let expected = room.version;
            // A PK whose host in this room no longer broadcasts ends in both rooms, in the
            // same write as what ended it.
            let ended_pk = room
                .facts
                .pk_link()
                .filter(|_| room.facts.pk().is_none())
                .map(|link| RoomKey {
                    app: key.app.clone(),
                    channel: link.peer.clone(),
                });
            let peer_room = match &ended_pk {
                Some(peer) => self.end_pk(key, &mut room, peer).await,
                None => Ok(None),
            };
            if let Some(loaded) = &loaded {
                self.queue_hooks(loaded, &mut room, now_ms);
            }
            // The Start is counted against the app's cap in this write, unless the write is the
            // PK pair's (then converge counts it before the call).
            let counted = start_cap.is_some() && !matches!(peer_room, Ok(Some(_)));
            let saved = match (peer_room, &ended_pk) {
                (Err(e), _) => Err(e),
                (Ok(Some(peer_room)), Some(peer)) => {
                    self.store
                        .save_pair(
                            (key, &room, expected),
                            (peer, &peer_room, peer_room.version),
                        )
                        .await
                }
                (Ok(_), _) => match start_cap {
                    Some(cap) => {
                        let minute = now_ms / 60_000;
                        match self
                            .store
                            .save_counting_start(key, &room, expected, minute, cap)
                            .await
                        {
                            Ok(true) => Ok(()),
                            Ok(false) => {
                                metrics::count("starts_capped");
                                tracing::warn!(cap, "task start refused: the app's starts per minute are used up (COSTREAM_MAX_STARTS_PER_MINUTE)");
                                capped = Some(MpuFailure {
                                    kind: crate::ports::MpuFailureKind::Refused { retryable: true },
                                    action: "start",
                                    reason: format!(
                                        "the app's cap of {cap} task starts per minute is reached"
                                    ),
                                });
                                // Nothing was written: commit again, with the refusal.
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
                    None => self.store.save(key, &room, expected).await,
                },
            };
            match saved {
                Ok(()) => {
                    if let Some(source) = refused {
                        metrics::count("rooms_marked");
                        return Err(AppError::Mpu {
                            room: key.to_string(),
                            source,
                        });
                    }
                    room.version = expected.next();
                    if let Some(peer) = &ended_pk {
                        tracing::info!(room = %key, peer = %peer, "pk ended with this room's broadcast");
                    }
                    tracing::info!(
                        version = %room.version,
                        command = decision.command.as_ref().map_or("none", Command::name),
                        mix_mode = ?decision.target.mix_mode(),
                        lease = will_call,
                        due_ms = room.due_ms,
                        "event committed"
                    );
                    let commit = match decision.command {
                        Some(cmd) if will_call => {
                            Commit::Holding(Box::new(room), cmd, prior, counted)
                        }
                        // Only the repair mark was rewritten.
                        _ if duplicate => Commit::Done(Handled::Duplicate),
                        _ if !changed && busy => Commit::Done(Handled::Busy),
                        _ if !changed => Commit::Done(Handled::NoChange),
                        _ => Commit::Done(Handled::Committed {
                            version: room.version,
                        }),
                    };
                    return Ok((commit, ended_pk));
                }
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                    continue;
                }
                Err(e) => {
                    if will_call {
                        // The write may have landed (DynamoDB applied it, the answer was lost):
                        // then we hold a lease nobody will use. Give it back.
                        self.settle(key, None, owner).await;
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

    /// Sets when the repair loop should next look at `room`, from the state about to be
    /// written: while a command is pending, when the lease (its holder's, or the one just
    /// taken) runs out; otherwise only the StreamURL's re-signing, if the task runs.
    fn mark_due(&self, room: &mut StoredRoom, pending: bool, now_ms: u64) {
        if pending {
            room.due_ms = Some(match room.lease.as_ref().filter(|l| l.until_ms > now_ms) {
                Some(lease) => lease.until_ms + DUE_MARGIN_MS,
                None => now_ms + backoff_ms(room.upkeep.attempts),
            });
            return;
        }
        let resign_at = match (room.record.running(), self.config.resign_after_ms) {
            // A task whose signing time is unknown (recorded before re-signing existed) is
            // re-signed at once rather than trusted.
            (Target::On { .. }, Some(after)) => Some(
                *room
                    .upkeep
                    .signed_ms
                    .get_or_insert(now_ms.saturating_sub(after))
                    + after,
            ),
            (Target::On { .. }, None) => None,
            (Target::Off, _) => {
                room.upkeep.signed_ms = None;
                None
            }
        };
        match resign_at {
            // The re-signing itself is what fails: keep its failures counting (backoff, age).
            Some(at) if at <= now_ms && room.upkeep.attempts > 0 => {
                room.due_ms = Some(now_ms + backoff_ms(room.upkeep.attempts));
            }
            _ => {
                room.upkeep.attempts = 0;
                room.upkeep.failing_since_ms = None;
                room.due_ms = resign_at;
            }
        }
    }

    /// `counted`: the first step's Start was already counted against the app's cap (in the
    /// commit's write); every other Start is counted here, before it is sent.
    #[allow(clippy::too_many_arguments)]
    async fn converge(
        &self,
        key: &RoomKey,
        mut room: StoredRoom,
        mut step: Step,
        mut prior: Record,
        mut counted: bool,
        trigger: &str,
        owner: &str,
    ) -> Result<Handled, AppError> {
        let mut calls = 0;
        loop {
            if calls == self.config.max_calls {
                self.settle(key, Some(room), owner).await;
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
                    self.fail(key, room, Some(prior), &source, owner).await;
                    return Err(AppError::Mpu {
                        room: key.to_string(),
                        source,
                    });
                }
            };
            let recorded = self
                .record(
                    key,
                    room,
                    &now_running,
                    fresh_url,
                    owner,
                    &entry,
                    matches!(command, Command::Start { .. }),
                )
                .await;
            if !matches!(recorded, Ok(Recorded::Converged(_) | Recorded::Next(..))) {
                // The entry did not go with a record write.
                self.keep_note(key, &entry).await;
            }
            let recorded = match recorded {
                Ok(recorded) => recorded,
                Err(e) => {
                    // The call is done (we have its answer) but the record failed, or landed
                    // without our knowing: no call of ours is in flight, so the lease goes back
                    // and the redelivery, the next event or the repair loop re-issues the
                    // idempotent call now rather than after the lease expired.
                    self.settle(key, None, owner).await;
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
    /// if nothing is left to do, in one conditional write.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        key: &RoomKey,
        mut room: StoredRoom,
        running: &Target,
        fresh_url: bool,
        owner: &str,
        entry: &HistoryEntry,
        healing: bool,
    ) -> Result<Recorded, AppError> {
        for _ in 0..self.config.max_conflicts {
            // A heal asked for while this call was in flight (a publish_done committed
            // meanwhile, seen on a re-read) is still owed unless the call was itself a Start,
            // which re-pushes the stream: an Update or a Stop decided before it does not.
            let heal_owed = room.record.needs_heal() && !healing && running.task().is_some();
            room.record.confirm(running.clone());
            if heal_owed {
                room.record = Record::new(running.clone(), true);
            }
            let now_ms = self.clock.now_ms();
            if fresh_url {
                room.upkeep.signed_ms = Some(now_ms);
            }
            let decision = decide(&room.facts, &room.record, &self.decision);
            room.lease = decision.command.as_ref().map(|_| Lease {
                owner: owner.to_owned(),
                until_ms: now_ms + self.config.lease_ms,
            });
            let prior = room.record.clone();
            if let Some(next) = &decision.command {
                room.record.begin(next);
            }
            self.mark_due(&mut room, decision.command.is_some(), now_ms);
            let expected = room.version;
            match self.store.save_noting(key, &room, expected, entry).await {
                Ok(()) => {
                    room.version = expected.next();
                    return Ok(match decision.command {
                        None => Recorded::Converged(Box::new(room)),
                        Some(next) => Recorded::Next(Box::new(room), Box::new(next), prior),
                    });
                }
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                    match self.store.load(key).await? {
                        // Someone committed an event meanwhile: record on top of it and decide
                        // again from the newest state.
                        Some(r) if r.lease.as_ref().is_some_and(|l| l.owner == owner) => room = r,
                        // Our lease expired and was taken over: the new holder owns convergence.
                        _ => return Ok(Recorded::LeaseLost),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention {
            room: key.to_string(),
            conflicts: self.config.max_conflicts,
        })
    }

    /// Re-signs the StreamURL of a converged room whose signature is past its half-life: takes
    /// the lease, sends an Update with the complete parameters and a fresh URL, records it.
    async fn refresh_if_due(
        &self,
        key: &RoomKey,
        owner: &str,
    ) -> Result<Option<Handled>, AppError> {
        let Some(after) = self.config.resign_after_ms else {
            return Ok(None);
        };
        for _ in 0..self.config.max_conflicts {
            let Some(mut room) = self.store.load(key).await? else {
                return Ok(None);
            };
            let now_ms = self.clock.now_ms();
            if room.lease.as_ref().is_some_and(|l| l.until_ms > now_ms) {
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
            let lease = Lease {
                owner: owner.to_owned(),
                until_ms: now_ms + self.config.lease_ms,
            };
            room.due_ms = Some(lease.until_ms + DUE_MARGIN_MS);
            room.lease = Some(lease);
            let expected = room.version;
            match self.store.save(key, &room, expected).await {
                Ok(()) => {
                    room.version = expected.next();
                    tracing::info!(task_id = %task, "re-signing the task's StreamURL");
                    let step = Step::Refresh {
                        task,
                        shape,
                        outputs,
                    };
                    return self
                        .converge(
                            key,
                            room,
                            step,
                            prior,
                            false,
                            "repair: StreamURL re-signing",
                            owner,
                        )
                        .await
                        .map(Some);
                }
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                }
                Err(e) => {
                    self.settle(key, None, owner).await;
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// After a failed call: counts the failure, and marks the room for the repair loop. A
    /// refused call certainly did nothing, so the record goes back to what it was before the
    /// call's intent (the task still runs as last confirmed: the viewers keep their stream),
    /// the lease is released and the room is due after a backoff (5 s, doubling, capped at
    /// [`crate::store::MAX_BACKOFF_MS`]).
    /// A call with no definite answer may still land: the lease is kept (renamed
    /// `<owner>/in-doubt`) for a full period, and the room is due when it runs out.
    async fn fail(
        &self,
        key: &RoomKey,
        room: StoredRoom,
        prior: Option<Record>,
        failure: &MpuFailure,
        owner: &str,
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
        self.amend_own(key, Some(room), owner, |r, now_ms| {
            let before = self.config.webhooks.then(|| r.clone());
            note_failure(&mut r.upkeep, failure, now_ms);
            if definite {
                if let Some(prior) = &prior {
                    if r.record == begun {
                        r.record = prior.clone();
                    }
                }
                r.lease = None;
                r.due_ms = Some(now_ms + backoff_ms(r.upkeep.attempts));
            } else {
                let until_ms = now_ms + lease_ms;
                r.lease = Some(Lease {
                    owner: format!("{owner}{IN_DOUBT}"),
                    until_ms,
                });
                r.due_ms = Some(until_ms + DUE_MARGIN_MS);
            }
            if let Some(before) = &before {
                self.queue_hooks(before, r, now_ms);
            }
        })
        .await;
    }

    /// The app's cap on task Starts per minute for a Start the commit did not count (one
    /// decided after another call, e.g. a new broadcast's Start after the old task's Stop, or
    /// one committed with a PK's end): refused before it is sent, retryable — the room is
    /// marked and the repair loop tries again after its backoff. `None` when it may go ahead.
    async fn start_capped(&self, key: &RoomKey, command: &Command) -> Option<MpuFailure> {
        let (Command::Start { .. }, Some(cap)) = (command, self.config.max_starts_per_minute)
        else {
            return None;
        };
        let minute = self.clock.now_ms() / 60_000;
        let refused = |reason: String| MpuFailure {
            kind: crate::ports::MpuFailureKind::Refused { retryable: true },
            action: "start",
            reason,
        };
        match self.store.take_start(&key.app, minute, cap).await {
            Ok(true) => None,
            Ok(false) => {
                metrics::count("starts_capped");
                tracing::warn!(cap, "task start refused: the app's starts per minute are used up (COSTREAM_MAX_STARTS_PER_MINUTE)");
                Some(refused(format!(
                    "the app's cap of {cap} task starts per minute is reached"
                )))
            }
            // Throttled or timed out: the counter is hot, which is when the cap matters most —
            // refuse (retryable) rather than let a flood through.
            Err(e @ StoreError::Unavailable { .. }) => {
                metrics::count("starts_capped");
                tracing::warn!(error = %e, "start counter unavailable; start refused for now");
                Some(refused("the start counter is unavailable".to_owned()))
            }
            // Misconfigured (permissions, a missing table): the cap can't work at all; logged
            // loudly, and broadcasts go on.
            Err(e) => {
                tracing::error!(error = %e, "start counter unreadable; starting anyway");
                None
            }
        }
    }

    /// Queues the webhooks a write from `before` to `room` means, in that same write (see
    /// [`crate::webhooks`]); the write creates version `room.version + 1`.
    pub(crate) fn queue_hooks(&self, before: &StoredRoom, room: &mut StoredRoom, now_ms: u64) {
        if !self.config.webhooks {
            return;
        }
        let version = room.version.next();
        let hooks = crate::webhooks::derive(before, room, version, now_ms, &self.decision);
        crate::webhooks::enqueue(room, hooks, now_ms);
    }

    /// Gives the lease back when no call of ours is in flight (a call answered but its record
    /// failed, a target that kept moving, a stray stopped) and marks the room due from what it
    /// still needs. Starts from `known` (the room as this handler last wrote it) or a fresh read.
    async fn settle(&self, key: &RoomKey, known: Option<StoredRoom>, owner: &str) {
        let decision_config = &self.decision;
        let shell = self;
        self.amend_own(key, known, owner, |r, now_ms| {
            r.lease = None;
            let pending = decide(&r.facts, &r.record, decision_config)
                .command
                .is_some();
            if pending {
                metrics::count("rooms_marked");
            }
            shell.mark_due(r, pending, now_ms);
        })
        .await;
    }

    /// Applies `amend` to the room and writes it if `owner` still holds the lease. Best effort:
    /// it gives up after a few conflicts or failures (the lease then simply expires, and the
    /// room's mark, written with the lease, brings the repair loop) and never fails itself, so
    /// the caller's own error is what gets reported.
    async fn amend_own(
        &self,
        key: &RoomKey,
        mut known: Option<StoredRoom>,
        owner: &str,
        amend: impl Fn(&mut StoredRoom, u64),
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
            amend(&mut room, self.clock.now_ms());
            match self.store.save(key, &room, room.version).await {
                Ok(()) => return,
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                    conflicts += 1;
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

    /// Counts an MPU call; its entry for the room's history.
    fn note(
        &self,
        version: u64,
        trigger: &str,
        command: &Command,
        done: &Result<MpuDone, MpuFailure>,
    ) -> HistoryEntry {
        let (outcome_metric, outcome) = match done {
            Ok(MpuDone::Done { .. }) => ("ok", "ok".to_owned()),
            Ok(MpuDone::TaskMissing) => ("task_missing", "task missing".to_owned()),
            Err(f) if f.is_definite() => ("refused", format!("refused: {}", f.reason)),
            Err(f) => ("in_doubt", format!("in doubt: {}", f.reason)),
        };
        if let Some(name) = metrics::mpu_metric(command.name(), outcome_metric) {
            metrics::count(name);
        }
        HistoryEntry {
            version,
            at_ms: self.clock.now_ms(),
            trigger: trigger.to_owned(),
            command: describe_command(command),
            outcome,
        }
    }

    /// Adds a call's entry to the room's history on its own (when no record write carried it).
    /// Best effort: a history write that fails is logged, never fails the handler.
    async fn keep_note(&self, key: &RoomKey, entry: &HistoryEntry) {
        if let Err(e) = self.store.append_history(key, entry).await {
            tracing::warn!(error = %e, "could not write the room's history");
        }
    }
}

/// Counts a failed (or refused) call in the room's repair bookkeeping: one more attempt and
/// failure, since when the room fails, and what failed last.
fn note_failure(upkeep: &mut Upkeep, failure: &MpuFailure, now_ms: u64) {
    upkeep.attempts = upkeep.attempts.saturating_add(1);
    upkeep.failures = upkeep.failures.saturating_add(1);
    upkeep.failing_since_ms.get_or_insert(now_ms);
    upkeep.last_failure = Some(LastFailure {
        at_ms: now_ms,
        action: failure.action.to_owned(),
        kind: failure.kind.to_string(),
        reason: failure.reason.clone(),
    });
}

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
    fn apply(&self, record: &mut Record) -> bool {
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

/// The events of a callback in a few words, for the room's history.
pub fn describe(events: &[RoomEvent]) -> String {
    let parts: Vec<String> = events
        .iter()
        .map(|e| match e {
            RoomEvent::User(u) => {
                let action = match u.action {
                    UserAction::Join => "join",
                    UserAction::Publish => "publish",
                    UserAction::Unpublish => "unpublish",
                    UserAction::Leave => "leave",
                    UserAction::RoleUpdate(Role::Interactive) => "role interactive",
                    UserAction::RoleUpdate(Role::Live) => "role live",
                };
                format!("{action} {} @{}", u.user, u.at.secs())
            }
            RoomEvent::ChannelClosed { at } => format!("channel closed @{}", at.secs()),
            RoomEvent::Cdn { action, at } => format!(
                "cdn {} @{}",
                match action {
                    CdnAction::Publish => "publish",
                    CdnAction::PublishDone => "publish_done",
                },
                at.secs()
            ),
            RoomEvent::Settings { at, .. } => format!("settings @{}", at.secs()),
            RoomEvent::Pk { link, at } => match link {
                Some(l) => format!("pk with {} @{}", l.peer, at.secs()),
                None => format!("pk ended @{}", at.secs()),
            },
            RoomEvent::Camera { user, on, at, .. } => format!(
                "camera {} {user} @{}",
                if *on { "on" } else { "off" },
                at.secs()
            ),
            RoomEvent::HostRegistered { user, at } => format!(
                "host {} @{}",
                user.as_ref().map_or("cleared", |u| u.as_str()),
                at.secs()
            ),
        })
        .collect();
    parts.join(", ")
}

/// A command in a few words: `update room-1_1700000000 mix_mode=1 users=[host,u2]`.
pub fn describe_command(command: &Command) -> String {
    let shape = |shape: &Shape| match shape {
        Shape::Single { user } => format!("mix_mode=0 users=[{user}]"),
        Shape::Voice { user } => format!("mix_mode=0 audio users=[{user}]"),
        Shape::VoiceMix { users } => format!(
            "mix_mode=1 audio users=[{}]",
            users
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Shape::Mixed { layout } => format!(
            "mix_mode=1 users=[{}]{}",
            layout
                .users()
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(","),
            layout
                .panes
                .iter()
                .find(|p| p.source == costream_core::Source::Screen)
                .map(|p| format!(" screen={}", p.user))
                .unwrap_or_default()
        ),
    };
    // Restreaming targets are named by their masked form only (they carry stream keys).
    let outputs = |o: &costream_core::Outputs| {
        if o.is_empty() {
            String::new()
        } else {
            format!(
                " outputs=[{}]",
                o.urls()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    };
    match command {
        Command::Start {
            task,
            shape: s,
            outputs: o,
        } => format!("start {task} {}{}", shape(s), outputs(o)),
        Command::Update {
            task,
            shape: s,
            outputs: o,
            set_outputs,
        } => format!(
            "update {task} {}{}",
            shape(s),
            if *set_outputs {
                outputs(o)
            } else {
                String::new()
            }
        ),
        Command::Stop { task } => format!("stop {task}"),
    }
}

/// Appended to the owner of a lease kept after a call whose outcome is unknown.
const IN_DOUBT: &str = "/in-doubt";

/// A room whose lease is held is due this long after the lease runs out (the holder's own last
/// write usually lands first and clears or moves the mark).
const DUE_MARGIN_MS: u64 = 1_000;

/// Store failures tolerated by a best-effort lease release before it leaves the lease to expire.
const RELEASE_FAILURES: u32 = 2;

enum Input<'a> {
    Events {
        dedupe_key: Option<&'a str>,
        events: &'a [RoomEvent],
    },
    Repair,
    Finding(&'a Finding),
}

enum Step {
    Command(Command),
    Refresh {
        task: TaskId,
        shape: Shape,
        outputs: costream_core::Outputs,
    },
}

enum Commit {
    Done(Handled),
    /// Holding the lease with the command to execute and the record before its intent.
    /// Holding the lease with the command to execute, the record before its intent, and
    /// whether the command (a Start) was already counted against the app's cap.
    Holding(Box<StoredRoom>, Command, Record, bool),
}

enum Recorded {
    Converged(Box<StoredRoom>),
    Next(Box<StoredRoom>, Box<Command>, Record),
    LeaseLost,
}

mod pk;
pub use pk::{PkOutcome, PkRefusal};

#[cfg(test)]
mod tests;
