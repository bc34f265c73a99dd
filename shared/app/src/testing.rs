//! Test helpers shared by unit and integration tests (feature `testing`): [`RecordingMpu`] (the
//! real adapter over the simulated Live API, recorded and with injected failures) and scenario
//! builders.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use costream_core::{AppId, Command, DecisionConfig, MixMode, Shape, TaskId, UserId, Version};
use costream_sim::SimulatedLive;

use crate::mpu::{AlibabaMpu, IngestSettings, MpuSettings};
pub use crate::ports::ManualClock;
use crate::ports::{MpuDone, MpuFailure, MpuFailureKind, MpuPort, RoomKey};

/// One recorded MPU call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub room: RoomKey,
    pub command: Command,
    pub version: Version,
    /// Sequence numbers of the call's start and end across all calls of the recorder.
    pub started: u64,
    pub ended: u64,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    in_flight: BTreeMap<RoomKey, u32>,
    overlaps: u32,
    rng: Option<StdRng>,
}

/// What an injected failure of [`RecordingMpu`] looks like to the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeFailure {
    /// No definite answer (like a timeout) and the request was *not* applied.
    #[default]
    Ambiguous,
    /// The service refused the request (throttled): it never takes effect.
    Refused,
    /// No definite answer, but the request *was* applied (a timeout after the service acted).
    AppliedInDoubt,
}

impl FakeFailure {
    pub fn error(self) -> MpuFailure {
        MpuFailure {
            kind: match self {
                FakeFailure::Ambiguous | FakeFailure::AppliedInDoubt => MpuFailureKind::InDoubt,
                FakeFailure::Refused => MpuFailureKind::Refused { retryable: true },
            },
            action: "injected",
            reason: "injected failure".into(),
        }
    }
}

/// The real MPU adapter over the simulated Live API, with a recorder in front: every successful
/// call with the room version it was decided from and its start/end order, overlapping calls per
/// room, and injected failures and latency. This is not a second MPU fake: Alibaba's semantics
/// (tasks, "already exists", "task not found", the StreamURL rule) are the simulator's, reached
/// through the production adapter.
#[derive(Debug)]
pub struct RecordingMpu {
    adapter: AlibabaMpu<Arc<SimulatedLive>, Arc<SimClock>>,
    sim: Arc<SimulatedLive>,
    /// The simulator's clock: tokio's time plus [`CALL_SPACING_MS`] per call, so the 10 s
    /// StreamURL hold after a Stop never makes a shell test wait, while the adapter's own waits
    /// (tokio sleeps) still move it.
    sim_clock: Arc<SimClock>,
    inner: Mutex<Inner>,
    seq: AtomicU64,
    max_latency: Duration,
    failure_rate: f64,
    failure: FakeFailure,
    /// Calls still to fail before the seeded rate applies.
    fail_next: AtomicU32,
    attempts: AtomicU32,
}

/// The clock of a [`RecordingMpu`]'s simulator: tokio's time (paused or not) plus a hand-moved
/// offset.
#[derive(Debug)]
pub struct SimClock {
    origin: tokio::time::Instant,
    spacing: ManualClock,
}

impl crate::ports::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.spacing.now_ms() + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(0)
    }
}

/// How far the simulator's clock moves before each call of a [`RecordingMpu`].
pub const CALL_SPACING_MS: u64 = 11_000;

/// Adapter settings for tests: app `app`, unsigned ingest on `push.example.com`.
pub fn mpu_settings(app: &AppId, decision: DecisionConfig) -> MpuSettings {
    MpuSettings {
        app_id: app.clone(),
        ingest: IngestSettings {
            push_domain: "push.example.com".into(),
            app_name: "live".into(),
            push_auth_key: None,
            url_validity: Duration::from_secs(86_400),
        },
        decision,
        region: None,
        stream_url_wait: Duration::from_secs(12),
    }
}

impl RecordingMpu {
    /// `seed` drives latency (up to `max_latency`) and failures (probability `failure_rate`,
    /// reported as in doubt unless [`Self::with_failure`] says otherwise).
    pub fn new(seed: u64, max_latency: Duration, failure_rate: f64) -> Self {
        let clock = Arc::new(SimClock {
            origin: tokio::time::Instant::now(),
            spacing: ManualClock::at_ms(1_000_000),
        });
        let sim = Arc::new(SimulatedLive::new(clock.clone()));
        let app = AppId::parse("app").expect("app id");
        RecordingMpu {
            adapter: AlibabaMpu::new(
                sim.clone(),
                clock.clone(),
                mpu_settings(&app, DecisionConfig::default()),
            ),
            sim,
            sim_clock: clock,
            inner: Mutex::new(Inner {
                rng: Some(StdRng::seed_from_u64(seed)),
                ..Inner::default()
            }),
            seq: AtomicU64::new(0),
            max_latency,
            failure_rate,
            failure: FakeFailure::default(),
            fail_next: AtomicU32::new(0),
            attempts: AtomicU32::new(0),
        }
    }

    /// An instant recorder whose adapter signs StreamURLs (key `test-push-key`) valid for
    /// `validity`.
    pub fn signing(validity: Duration) -> Self {
        let mut fake = Self::instant();
        let app = AppId::parse("app").expect("app id");
        let mut settings = mpu_settings(&app, DecisionConfig::default());
        settings.ingest.push_auth_key = Some("test-push-key".to_owned().into());
        settings.ingest.url_validity = validity;
        fake.adapter = AlibabaMpu::new(fake.sim.clone(), fake.sim_clock.clone(), settings);
        fake
    }

    /// An instant recorder whose first `n` calls fail with `failure`; later calls succeed.
    pub fn failing(n: u32, failure: FakeFailure) -> Self {
        let fake = Self::instant().with_failure(failure);
        fake.fail_next.store(n, Ordering::SeqCst);
        fake
    }

    /// Which failure injected failures report.
    pub fn with_failure(mut self, failure: FakeFailure) -> Self {
        self.failure = failure;
        self
    }

    /// Answers at once and never fails.
    pub fn instant() -> Self {
        Self::new(0, Duration::ZERO, 0.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls that succeeded.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call made, failed ones included.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The simulated Live API behind the adapter.
    pub fn sim(&self) -> &SimulatedLive {
        &self.sim
    }

    /// The tasks running for `room` now, by task id: MixMode and the users shown, in pane order.
    pub fn tasks(&self, room: &RoomKey) -> BTreeMap<TaskId, (MixMode, Vec<UserId>)> {
        self.sim
            .tasks()
            .into_iter()
            .filter(|t| t.channel_id == room.channel.as_str())
            .map(|t| {
                let mode = if t.mix_mode == 0 {
                    MixMode::Single
                } else {
                    MixMode::Mixed
                };
                let users = t
                    .users
                    .iter()
                    .map(|u| UserId::parse(u.as_str()).expect("the simulator keeps valid user ids"))
                    .collect();
                (
                    TaskId::parse(t.task_id.as_str()).expect("the simulator keeps valid task ids"),
                    (mode, users),
                )
            })
            .collect()
    }

    /// How many calls started while another call for the same room was in flight.
    pub fn overlaps(&self) -> u32 {
        self.lock().overlaps
    }
}

/// What a task of `shape` looks like on the Live API: MixMode and the users shown, pane order.
pub fn seen_as(shape: &Shape) -> (MixMode, Vec<UserId>) {
    match shape {
        Shape::Single { user } | Shape::Voice { user } => (MixMode::Single, vec![user.clone()]),
        Shape::VoiceMix { users } => (MixMode::Mixed, users.clone()),
        Shape::Mixed { layout } => (
            MixMode::Mixed,
            layout.panes.iter().map(|p| p.user.clone()).collect(),
        ),
    }
}

impl MpuPort for RecordingMpu {
    async fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        let started = self.seq.fetch_add(1, Ordering::SeqCst);
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let forced = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let (latency, fail) = {
            let mut inner = self.lock();
            let n = inner.in_flight.entry(room.clone()).or_default();
            *n += 1;
            if *n > 1 {
                inner.overlaps += 1;
            }
            let max = u64::try_from(self.max_latency.as_micros()).unwrap_or(u64::MAX);
            let rate = self.failure_rate;
            match inner.rng.as_mut() {
                Some(rng) => (
                    Duration::from_micros(if max == 0 {
                        0
                    } else {
                        rng.random_range(0..=max)
                    }),
                    rate > 0.0 && rng.random_bool(rate),
                ),
                None => (Duration::ZERO, false),
            }
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let result = if (fail || forced) && self.failure == FakeFailure::AppliedInDoubt {
            self.sim_clock.spacing.advance_ms(CALL_SPACING_MS);
            let _ = self.adapter.execute(room, command, version).await;
            Err(self.failure.error())
        } else if fail || forced {
            Err(self.failure.error())
        } else {
            self.sim_clock.spacing.advance_ms(CALL_SPACING_MS);
            self.adapter.execute(room, command, version).await
        };
        let ended = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        if let Some(n) = inner.in_flight.get_mut(room) {
            *n -= 1;
        }
        if result.is_ok() {
            inner.calls.push(Call {
                room: room.clone(),
                command: command.clone(),
                version,
                started,
                ended,
            });
        }
        result
    }

    async fn list_tasks(&self) -> Result<crate::ports::Listing, MpuFailure> {
        self.adapter.list_tasks().await
    }

    async fn task_exists(&self, task: &TaskId) -> Result<bool, MpuFailure> {
        self.adapter.task_exists(task).await
    }

    async fn refresh_output(
        &self,
        room: &RoomKey,
        task: &TaskId,
        shape: &Shape,
        outputs: &costream_core::Outputs,
        version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        self.sim_clock.spacing.advance_ms(CALL_SPACING_MS);
        self.adapter
            .refresh_output(room, task, shape, outputs, version)
            .await
    }
}

/// The concurrency model test: a random scenario of callbacks for one room, all delivered at
/// once to shells sharing one store and one MPU fake, then checked against the model.
pub mod concurrency {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{seen_as, ManualClock, RecordingMpu};
    use crate::ports::{RoomKey, StateStore};
    use crate::shell::{Shell, ShellConfig};
    use costream_core::{
        target, AppId, ChannelId, DecisionConfig, Facts, Record, RoomEvent, SessionId, Target,
        Timestamp, UserAction, UserEvent, UserId,
    };

    /// The room every scenario plays in.
    pub fn key() -> RoomKey {
        RoomKey {
            app: AppId::parse("app").expect("app"),
            channel: ChannelId::parse("room-1").expect("channel"),
        }
    }

    /// A user event of `who`'s (single) session.
    pub fn ev(who: &str, at: u64, action: UserAction) -> RoomEvent {
        RoomEvent::User(UserEvent {
            user: UserId::parse(who).expect("user"),
            session: SessionId::parse(format!("{who}-s")).expect("session"),
            at: Timestamp::from_secs(at),
            action,
            role: None,
        })
    }

    /// A random scenario for one room: the host publishes first; co-streamers join, publish,
    /// unpublish and leave; some callbacks are delivered twice. Returns (MsgId, event) deliveries.
    pub fn scenario(seed: u64, handlers: usize) -> Vec<(String, RoomEvent)> {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = vec![("m-host".to_owned(), ev("host", 1, UserAction::Publish))];
        while out.len() < handlers {
            if rng.random_bool(0.2) {
                let i = rng.random_range(0..out.len());
                let dup = out[i].clone();
                out.push(dup);
                continue;
            }
            let who = format!("co{}", rng.random_range(0..6));
            let action = match rng.random_range(0..4) {
                0 => UserAction::Join,
                1 | 2 => UserAction::Publish,
                _ => {
                    if rng.random_bool(0.5) {
                        UserAction::Unpublish
                    } else {
                        UserAction::Leave
                    }
                }
            };
            let at = rng.random_range(2..40);
            out.push((format!("m{}", out.len()), ev(&who, at, action)));
        }
        out
    }

    /// Runs one scenario with all deliveries concurrent; a delivery that fails retryably is retried
    /// (as Lambda would). Then checks the guarantees.
    pub async fn run_concurrent<S: StateStore + 'static>(
        store: Arc<S>,
        seed: u64,
        handlers: usize,
        max_latency: Duration,
    ) {
        let mpu = Arc::new(RecordingMpu::new(seed, max_latency, 0.0));
        let clock = Arc::new(ManualClock::at_ms(1_000_000));
        // Three processes, each with its own copy of the room (`Cached`): handlers start from
        // stale copies as Lambda containers do.
        let shells: Vec<_> = (0..3)
            .map(|_| {
                Arc::new(Shell {
                    store: crate::store::cached::Cached::with_clock(store.clone(), clock.clone()),
                    mpu: mpu.clone(),
                    clock: clock.clone(),
                    decision: DecisionConfig::default(),
                    config: ShellConfig::default(),
                })
            })
            .collect();
        let shell = Shell {
            store: store.clone(),
            mpu: mpu.clone(),
            clock: clock.clone(),
            decision: DecisionConfig::default(),
            config: ShellConfig::default(),
        };
        let deliveries = scenario(seed, handlers);
        let mut tasks = Vec::new();
        for (i, (msg, event)) in deliveries.iter().cloned().enumerate() {
            let shell = shells[i % shells.len()].clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("inv-{i}");
                for _ in 0..10 {
                    match shell
                        .handle(&key(), Some(&msg), std::slice::from_ref(&event), &owner)
                        .await
                    {
                        Ok(h) => return h,
                        Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                        Err(e) => panic!("seed {seed}: non-retryable {e}: {e:?}"),
                    }
                }
                panic!("seed {seed}: delivery {i} kept failing")
            }));
        }
        for t in tasks {
            t.await.expect("handler task");
        }
        // Events that would have ended the broadcast were held for the end grace (an early
        // co-host's Leave, say, before the host's Publish arrived): the grace ends, and the
        // room's due mark brings the repair loop, which merges them and converges.
        clock.advance_ms(shell.decision.end_grace_secs * 1000);
        shell
            .repair(&key(), "repair")
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the repair after the grace failed: {e}"));

        // The model: the same events folded into a fresh room, in delivery order.
        let mut model = Facts::new(key().channel);
        for (_, e) in &deliveries {
            model.apply(e);
        }
        // As decisions see it: callbacks committed by an append wait in the inbox until a
        // versioned write folds them (the next commit, or the repair loop's pass).
        let room = shell.load(&key()).await.expect("load").expect("room");
        assert_eq!(
            room.facts, model,
            "seed {seed}: stored facts differ from the model"
        );
        // The task's name depends on history (a running task of a live broadcast keeps its
        // name), so the target is the model's facts under the shell's record; who is on stage
        // and how does not depend on the record.
        let want = target(&model, &room.record, &shell.decision);
        let fresh = target(&model, &Record::default(), &shell.decision);
        assert_eq!(
            want.mix_mode(),
            fresh.mix_mode(),
            "seed {seed}: the record changed the stage"
        );
        if let (Target::On { shape: a, .. }, Target::On { shape: b, .. }) = (&want, &fresh) {
            assert_eq!(a, b, "seed {seed}: the record changed the layout");
        }
        assert_eq!(
            room.record.running(),
            &want,
            "seed {seed}: applied record is not the latest target"
        );
        assert_eq!(room.lease, None, "seed {seed}: lease left behind");

        let running = mpu.tasks(&key());
        match &want {
            Target::Off => assert!(
                running.is_empty(),
                "seed {seed}: tasks left running: {running:?}"
            ),
            Target::On { task, shape, .. } => {
                assert_eq!(running.len(), 1, "seed {seed}: {running:?}");
                assert_eq!(
                    running.get(task),
                    Some(&seen_as(shape)),
                    "seed {seed}: stale layout on the CDN"
                );
            }
        }
        let calls = mpu.calls();
        assert_eq!(mpu.overlaps(), 0, "seed {seed}: overlapping MPU calls");
        for w in calls.windows(2) {
            assert!(
                w[0].ended < w[1].started,
                "seed {seed}: calls overlap: {w:?}"
            );
            assert!(
                w[0].version < w[1].version,
                "seed {seed}: a call for a stale version: {w:?}"
            );
        }
        if let Some(last) = calls.last() {
            assert_eq!(
                last.command.result(),
                want,
                "seed {seed}: last call is not the final target"
            );
        }
    }
}

/// A burst of concurrent callbacks into one room (issue 21): the driver of the burst tests (in
/// memory, and on DynamoDB through moto) and of `scripts/bench-burst.sh`. A host is live; then
/// `n` co-hosts join and publish at once (`n` concurrent callbacks, each delivered once, never
/// again), then all `n` unpublish and leave at once. Every callback must be answered with
/// success, and the room must be right — the host and the first co-hosts by the documented
/// order, then the host alone — soon after the last answer.
pub mod burst {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::RecordingMpu;
    use crate::ports::{Clock, RoomKey, StateStore};
    use crate::shell::Shell;
    use costream_core::{
        AppId, ChannelId, MixMode, RoomEvent, SessionId, Timestamp, UserAction, UserEvent, UserId,
        MAX_PANES,
    };

    /// The room of a burst run `run` (a fresh room each run).
    pub fn room(run: usize) -> RoomKey {
        RoomKey {
            app: AppId::parse("app").expect("app"),
            channel: ChannelId::parse(format!("burst-{run}")).expect("channel"),
        }
    }

    fn event(user: &str, at: u64, action: UserAction) -> RoomEvent {
        RoomEvent::User(UserEvent {
            user: UserId::parse(user).expect("user"),
            session: SessionId::parse(format!("{user}-s")).expect("session"),
            at: Timestamp::from_secs(at),
            action,
            role: None,
        })
    }

    /// The `i`th co-host's name: zero-padded, so the stage's order (start, then user id) is
    /// their number.
    pub fn guest(i: usize) -> String {
        format!("guest{i:03}")
    }

    /// One burst's measurements.
    #[derive(Debug, Clone, Default)]
    pub struct Measured {
        /// Callbacks answered with success, and the failures (each a defect).
        pub answered: usize,
        pub failed: Vec<String>,
        /// From the burst's start to its last answer.
        pub answers_took: Duration,
        /// From the last answer until the task was right (`None`: not within the settle time).
        pub right_after: Option<Duration>,
    }

    /// What the task should show: `mix_mode` and the users in pane order.
    pub type Want = (MixMode, Vec<UserId>);

    /// Sends `callbacks` at once, each through one of `shells` in turn (one shell per
    /// container), and waits (polling the simulated Live API) until the room's one task is
    /// `want`, at most `settle` after the last answer.
    pub async fn burst<S, C>(
        shells: &[Arc<Shell<S, Arc<RecordingMpu>, C>>],
        key: &RoomKey,
        callbacks: Vec<Vec<RoomEvent>>,
        want: &Want,
        settle: Duration,
    ) -> Measured
    where
        S: StateStore + 'static,
        C: Clock + 'static,
    {
        let started = Instant::now();
        let tasks: Vec<_> = callbacks
            .into_iter()
            .enumerate()
            .map(|(i, events)| {
                let shell = shells[i % shells.len()].clone();
                let key = key.clone();
                tokio::spawn(async move {
                    shell
                        .handle(&key, None, &events, &format!("burst-{i}"))
                        .await
                        .map_err(|e| {
                            format!(
                                "callback {i}: {e} ({:?})",
                                std::error::Error::source(&e).map(ToString::to_string)
                            )
                        })
                })
            })
            .collect();
        let mut out = Measured::default();
        for t in tasks {
            match t.await {
                Ok(Ok(_)) => out.answered += 1,
                Ok(Err(e)) => out.failed.push(e),
                Err(e) => out.failed.push(format!("handler panicked: {e}")),
            }
        }
        let last_answer = Instant::now();
        out.answers_took = last_answer - started;
        let mpu = &shells[0].mpu;
        loop {
            let tasks = mpu.tasks(key);
            if tasks.len() == 1 && tasks.values().next() == Some(want) {
                out.right_after = Some(last_answer.elapsed());
                break;
            }
            if last_answer.elapsed() > settle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    }

    /// The whole scenario in room `key`: the host goes live, `n` co-hosts join and publish at
    /// once, then leave at once. The two bursts' measurements.
    pub async fn scenario<S, C>(
        shells: &[Arc<Shell<S, Arc<RecordingMpu>, C>>],
        key: &RoomKey,
        n: usize,
        settle: Duration,
    ) -> [Measured; 2]
    where
        S: StateStore + 'static,
        C: Clock + 'static,
    {
        let t = shells[0].clock.now_ms() / 1000 - 60;
        let host = || UserId::parse("host").expect("host");
        shells[0]
            .handle(key, None, &[event("host", t, UserAction::Publish)], "host")
            .await
            .expect("the host goes live");
        let joins = (0..n)
            .map(|i| {
                vec![
                    event(&guest(i), t + 10, UserAction::Join),
                    event(&guest(i), t + 10, UserAction::Publish),
                ]
            })
            .collect();
        let mut stage = vec![host()];
        stage.extend((0..n.min(MAX_PANES - 1)).map(|i| UserId::parse(guest(i)).expect("user")));
        let want = if n == 0 {
            (MixMode::Single, stage)
        } else {
            (MixMode::Mixed, stage)
        };
        let joined = burst(shells, key, joins, &want, settle).await;
        let leaves = (0..n)
            .map(|i| {
                vec![
                    event(&guest(i), t + 20, UserAction::Unpublish),
                    event(&guest(i), t + 20, UserAction::Leave),
                ]
            })
            .collect();
        let left = burst(
            shells,
            key,
            leaves,
            &(MixMode::Single, vec![host()]),
            settle,
        )
        .await;
        [joined, left]
    }
}
