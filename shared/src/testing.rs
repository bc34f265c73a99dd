//! Test doubles shared by unit and integration tests (feature `testing`): an MPU fake that keeps
//! Alibaba's task semantics, records every call with its timing, detects overlapping calls and
//! injects seeded random latency and failures; and a settable clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::alibaba::MpuError;
use crate::domain::{Command, Shape, TaskId, Version};
use crate::ports::{Clock, MpuDone, MpuPort, RoomKey};

/// One recorded MPU call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub room: RoomKey,
    pub command: Command,
    pub version: Version,
    /// Sequence numbers of the call's start and end across all calls of the fake.
    pub started: u64,
    pub ended: u64,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<Call>,
    /// Running tasks per room, as Alibaba would hold them.
    tasks: BTreeMap<RoomKey, BTreeMap<TaskId, Shape>>,
    in_flight: BTreeMap<RoomKey, u32>,
    overlaps: u32,
    rng: Option<StdRng>,
}

/// The error an injected failure of [`RecordingMpu`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeFailure {
    /// No answer to trust (a gateway's 504 page, like a timeout): the request may still land.
    #[default]
    Ambiguous,
    /// The service refused the request (throttled): it never takes effect.
    Refused,
}

impl FakeFailure {
    pub fn error(self) -> MpuError {
        match self {
            FakeFailure::Ambiguous => MpuError::MalformedResponse {
                action: "FakeMpu",
                http_status: 504,
                request_id: None,
                reason: "injected failure",
                snippet: String::new(),
            },
            FakeFailure::Refused => MpuError::Throttled {
                action: "FakeMpu",
                http_status: 400,
                code: "Throttling.User".into(),
                message: "injected failure".into(),
                request_id: Some("fake".into()),
                retry_after: None,
            },
        }
    }
}

/// An MPU fake with Alibaba's semantics: Start of an existing task makes it match (the adapter's
/// "already exists → Update"), Stop of an unknown task succeeds, Update of an unknown task
/// reports [`MpuDone::TaskMissing`].
#[derive(Debug)]
pub struct RecordingMpu {
    inner: Mutex<Inner>,
    clock: AtomicU64,
    max_latency: Duration,
    failure_rate: f64,
    failure: FakeFailure,
    /// Calls still to fail before the seeded rate applies.
    fail_next: AtomicU32,
    attempts: AtomicU32,
}

impl RecordingMpu {
    /// `seed` drives latency (up to `max_latency`) and failures (probability `failure_rate`,
    /// reported as a retryable, ambiguous error unless [`Self::with_failure`] says otherwise).
    pub fn new(seed: u64, max_latency: Duration, failure_rate: f64) -> Self {
        RecordingMpu {
            inner: Mutex::new(Inner {
                rng: Some(StdRng::seed_from_u64(seed)),
                ..Inner::default()
            }),
            clock: AtomicU64::new(0),
            max_latency,
            failure_rate,
            failure: FakeFailure::default(),
            fail_next: AtomicU32::new(0),
            attempts: AtomicU32::new(0),
        }
    }

    /// An instant fake whose first `n` calls fail with `failure`; later calls succeed.
    pub fn failing(n: u32, failure: FakeFailure) -> Self {
        let fake = Self::instant().with_failure(failure);
        fake.fail_next.store(n, Ordering::SeqCst);
        fake
    }

    /// Which error injected failures report.
    pub fn with_failure(mut self, failure: FakeFailure) -> Self {
        self.failure = failure;
        self
    }

    /// A fake that answers at once and never fails.
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

    /// The tasks running for `room` now.
    pub fn tasks(&self, room: &RoomKey) -> BTreeMap<TaskId, Shape> {
        self.lock().tasks.get(room).cloned().unwrap_or_default()
    }

    /// How many calls started while another call for the same room was in flight.
    pub fn overlaps(&self) -> u32 {
        self.lock().overlaps
    }
}

impl MpuPort for RecordingMpu {
    async fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> Result<MpuDone, MpuError> {
        let started = self.clock.fetch_add(1, Ordering::SeqCst);
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
        let mut inner = self.lock();
        if let Some(n) = inner.in_flight.get_mut(room) {
            *n -= 1;
        }
        let ended = self.clock.fetch_add(1, Ordering::SeqCst);
        if fail || forced {
            return Err(self.failure.error());
        }
        inner.calls.push(Call {
            room: room.clone(),
            command: command.clone(),
            version,
            started,
            ended,
        });
        let tasks = inner.tasks.entry(room.clone()).or_default();
        Ok(match command {
            Command::Start { task, shape } => {
                tasks.insert(task.clone(), shape.clone());
                MpuDone::Applied { request_id: None }
            }
            Command::Update { task, shape } => match tasks.get_mut(task) {
                Some(s) => {
                    *s = shape.clone();
                    MpuDone::Applied { request_id: None }
                }
                None => MpuDone::TaskMissing,
            },
            Command::Stop { task } => {
                tasks.remove(task);
                MpuDone::Applied { request_id: None }
            }
        })
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at_ms(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The concurrency model test: a random scenario of callbacks for one room, all delivered at
/// once to shells sharing one store and one MPU fake, then checked against the model.
pub mod concurrency {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{ManualClock, RecordingMpu};
    use crate::app::{Shell, ShellConfig};
    use crate::domain::{
        target, AppId, ChannelId, DecisionConfig, RoomEvent, RoomState, SessionId, Target,
        Timestamp, UserAction, UserEvent, UserId,
    };
    use crate::ports::{RoomKey, StateStore};

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
        let shell = Arc::new(Shell {
            store,
            mpu: mpu.clone(),
            clock: Arc::new(ManualClock::at_ms(1_000_000)),
            decision: DecisionConfig::default(),
            config: ShellConfig::default(),
        });
        let deliveries = scenario(seed, handlers);
        let mut tasks = Vec::new();
        for (i, (msg, event)) in deliveries.iter().cloned().enumerate() {
            let shell = shell.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("inv-{i}");
                for _ in 0..10 {
                    match shell
                        .handle(&key(), Some(&msg), std::slice::from_ref(&event), &owner)
                        .await
                    {
                        Ok(h) => return h,
                        Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                        Err(e) => panic!("seed {seed}: non-retryable {e}"),
                    }
                }
                panic!("seed {seed}: delivery {i} kept failing")
            }));
        }
        for t in tasks {
            t.await.expect("handler task");
        }

        // The model: the same events folded into a fresh room, in delivery order.
        let mut model = RoomState::new(key().channel);
        for (_, e) in &deliveries {
            model.apply(e);
        }
        let want = target(&model, &shell.decision);
        let room = shell.store.load(&key()).await.expect("load").expect("room");
        assert_eq!(
            target(&room.state, &shell.decision),
            want,
            "seed {seed}: stored facts differ from the model"
        );
        assert_eq!(
            room.state.applied(),
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
            Target::On { task, shape } => {
                assert_eq!(running.len(), 1, "seed {seed}: {running:?}");
                assert_eq!(
                    running.get(task),
                    Some(shape),
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
