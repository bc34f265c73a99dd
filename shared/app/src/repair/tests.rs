//! The repair pass on the in-memory store and the production MPU adapter over the simulated
//! Live API: refused calls retried after their backoff, tasks Alibaba stopped started again,
//! leaks stopped, foreign tasks never touched, unreadable rooms left alone, the StreamURL
//! re-signed.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::mpu::AlibabaMpu;
use crate::ports::{ManualClock, StateStore, StoreError};
use crate::shell::ShellConfig;
use crate::store::memory::InMemoryStore;
use crate::store::{backoff_ms, HistoryEntry, StoredRoom};
use crate::testing::concurrency::{ev, key};
use crate::testing::{mpu_settings, FakeFailure, RecordingMpu};
use costream_core::{
    ChannelId, DecisionConfig, MixMode, Shape, TaskId, UserAction, UserId, Version,
};

type TestShell<S> = Shell<S, Arc<RecordingMpu>, Arc<ManualClock>>;

fn shell(mpu: RecordingMpu) -> TestShell<Arc<InMemoryStore>> {
    shell_on(Arc::new(InMemoryStore::new()), mpu)
}

fn shell_on<S: StateStore>(store: S, mpu: RecordingMpu) -> TestShell<S> {
    Shell {
        store,
        mpu: Arc::new(mpu),
        clock: Arc::new(ManualClock::at_ms(1_000_000_000)),
        decision: DecisionConfig::default(),
        config: ShellConfig::default(),
    }
}

fn app() -> AppId {
    key().app
}

fn no_sweep() -> RepairConfig {
    RepairConfig {
        sweep: false,
        ..RepairConfig::default()
    }
}

async fn live_host<S: StateStore>(s: &TestShell<S>) {
    s.handle(
        &key(),
        Some("m1"),
        &[ev("host", 10, UserAction::Publish)],
        "inv-1",
    )
    .await
    .expect("converged");
    assert_eq!(s.mpu.tasks(&key()).len(), 1);
}

/// Starts a task on the simulated Live API behind costream's back.
fn start_elsewhere(mpu: &RecordingMpu, channel: &str, task: &str) {
    let other = AlibabaMpu::new(
        Arc::new(costream_sim::SimulatedLive::default()),
        ManualClock::at_ms(0),
        mpu_settings(&app(), DecisionConfig::default()),
    );
    let room = RoomKey {
        app: app(),
        channel: ChannelId::parse(channel).expect("channel"),
    };
    let shape = Shape::Single {
        user: UserId::parse("someone").expect("user"),
    };
    let request = other
        .start_request(&room, task, &shape, &costream_core::Outputs::NONE)
        .expect("request");
    mpu.sim().answer(&request).expect("started");
}

#[tokio::test]
async fn a_task_stopped_behind_costreams_back_is_started_again_by_the_loop() {
    let s = shell(RecordingMpu::instant());
    live_host(&s).await;
    let (task, before) = s.mpu.tasks(&key()).into_iter().next().expect("task");
    // MaxIdleTime while the host's camera was off: Alibaba ends the task, no callback says so.
    s.mpu.sim().end_task("app", task.as_str()).expect("ended");
    assert!(s.mpu.tasks(&key()).is_empty());

    let report = s
        .repair_pass(&app(), "repair-1", &RepairConfig::default())
        .await;
    let sweep = report.sweep.expect("swept");
    assert_eq!((sweep.restarted, sweep.leaks_stopped), (1, 0), "{sweep:?}");
    assert_eq!(
        s.mpu.tasks(&key()).get(&task),
        Some(&before),
        "the same task, same stage"
    );
    let history = s.history(&key()).await.expect("history");
    let last = history.last().expect("an entry");
    assert!(
        last.trigger.contains("missing")
            && last.command.starts_with("start ")
            && last.outcome == "ok",
        "{last:?}"
    );

    // The next pass finds nothing to do.
    let report = s
        .repair_pass(&app(), "repair-2", &RepairConfig::default())
        .await;
    let sweep = report.sweep.expect("swept");
    assert_eq!(
        (sweep.restarted, sweep.leaks_stopped, sweep.updated),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn the_sweep_stops_leaks_and_never_touches_tasks_costream_did_not_name() {
    let s = shell(RecordingMpu::instant());
    live_host(&s).await;
    // A costream-named task of a room the table does not hold (expired from it), one of a room
    // it holds that is not the room's task, and two tasks named otherwise.
    start_elsewhere(&s.mpu, "gone-room", "gone-room_1700000000");
    start_elsewhere(&s.mpu, "room-2", "room-2_1700000000");
    start_elsewhere(&s.mpu, "recording", "recording-main");
    start_elsewhere(&s.mpu, "room-3", "room-3_main");
    let room2 = RoomKey {
        app: app(),
        channel: ChannelId::parse("room-2").expect("channel"),
    };
    s.handle(
        &room2,
        Some("r2"),
        &[ev("guest", 5, UserAction::Join)],
        "inv-2",
    )
    .await
    .expect("room-2 known, off");

    let report = s
        .repair_pass(&app(), "repair-1", &RepairConfig::default())
        .await;
    let sweep = report.sweep.expect("swept");
    assert_eq!(sweep.leaks_stopped, 2, "{sweep:?}");
    assert_eq!(sweep.foreign_skipped, 2, "{sweep:?}");
    let left: Vec<String> = s.mpu.sim().tasks().into_iter().map(|t| t.task_id).collect();
    assert!(left.contains(&"recording-main".to_owned()), "{left:?}");
    assert!(left.contains(&"room-3_main".to_owned()), "{left:?}");
    assert!(!left
        .iter()
        .any(|t| t.starts_with("gone-room") || t.starts_with("room-2_")));
    assert_eq!(s.mpu.tasks(&key()).len(), 1, "the live room's task is kept");
}

#[tokio::test]
async fn a_store_that_is_not_the_deployments_table_leaves_tasks_of_unknown_rooms_alone() {
    // `serve --store memory --mpu alibaba`: the memory store knows none of the real rooms.
    let s = shell(RecordingMpu::instant());
    start_elsewhere(&s.mpu, "real-room", "real-room_1700000000");
    let cfg = RepairConfig {
        stop_tasks_of_unknown_rooms: false,
        ..RepairConfig::default()
    };
    let report = s.repair_pass(&app(), "repair-1", &cfg).await;
    assert_eq!(report.sweep.expect("swept").leaks_stopped, 0);
    assert_eq!(s.mpu.sim().tasks().len(), 1);
    // With the deployment's table it is a leak.
    let report = s
        .repair_pass(&app(), "repair-2", &RepairConfig::default())
        .await;
    assert_eq!(report.sweep.expect("swept").leaks_stopped, 1);
    assert!(s.mpu.sim().tasks().is_empty());
}

#[tokio::test]
async fn a_finding_about_an_older_version_of_the_room_is_dropped() {
    let s = shell(RecordingMpu::instant());
    live_host(&s).await;
    let room = s.store.load(&key()).await.expect("load").expect("room");
    let task = room.record.running().task().expect("task").clone();
    let stale = crate::shell::Finding::TaskGone {
        task: task.clone(),
        seen: Version::new(room.version.get() - 1),
    };
    let out = s
        .reconcile(&key(), &stale, "repair-1")
        .await
        .expect("reconciled");
    assert_eq!(out, Handled::NoChange);
    let after = s.store.load(&key()).await.expect("load").expect("room");
    assert_eq!(
        after.record, room.record,
        "the record still names the running task"
    );
    assert_eq!(s.mpu.calls().len(), 1, "no call");
    let fresh = crate::shell::Finding::TaskGone {
        task,
        seen: room.version,
    };
    // Believed (the task really runs here, so the Start finds it and becomes an Update).
    let out = s
        .reconcile(&key(), &fresh, "repair-2")
        .await
        .expect("reconciled");
    assert!(
        matches!(out, Handled::Converged { calls: 1, .. }),
        "{out:?}"
    );
    assert_eq!(s.mpu.tasks(&key()).len(), 1);
}

#[tokio::test]
async fn a_refused_call_is_retried_by_the_loop_after_its_backoff() {
    let s = shell(RecordingMpu::failing(1, FakeFailure::Refused));
    let err = s
        .handle(
            &key(),
            Some("m1"),
            &[ev("host", 10, UserAction::Publish)],
            "inv-1",
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, crate::shell::AppError::Mpu { .. }));
    // Not due before its backoff: no hot loop.
    let report = s.repair_pass(&app(), "repair-1", &no_sweep()).await;
    assert_eq!(report.due, 0);
    assert!(s.mpu.tasks(&key()).is_empty());

    s.clock.advance_ms(backoff_ms(1));
    let report = s.repair_pass(&app(), "repair-2", &no_sweep()).await;
    assert_eq!(
        (report.due, report.repaired, report.failed),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(s.mpu.tasks(&key()).len(), 1);
    let room = s.store.load(&key()).await.expect("load").expect("room");
    assert_eq!(room.due_ms, None, "converged: no longer due");
    assert_eq!(room.upkeep.attempts, 0);
    assert_eq!(room.upkeep.failures, 1, "the refusal stays counted");
    let history = s.history(&key()).await.expect("history");
    let outcomes: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.trigger.as_str(), h.outcome.as_str()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(outcomes[0].0.starts_with("publish host") && outcomes[0].1.starts_with("refused"));
    assert_eq!(outcomes[1], ("repair", "ok"));
}

#[tokio::test]
async fn repeated_refusals_back_off_to_the_cap_and_keep_the_last_applied_task() {
    // Host alone (MixMode 0) is applied; then every call is refused (a quota).
    let s = shell(RecordingMpu::instant());
    live_host(&s).await;
    let refusing = Shell {
        store: s.store.clone(),
        mpu: Arc::new(RecordingMpu::failing(100, FakeFailure::Refused)),
        clock: s.clock.clone(),
        decision: s.decision.clone(),
        config: s.config.clone(),
    };
    let _ = refusing
        .handle(
            &key(),
            Some("m2"),
            &[ev("guest", 11, UserAction::Publish)],
            "inv-2",
        )
        .await
        .expect_err("refused");
    let mut delays = Vec::new();
    for i in 0..8 {
        let room = refusing
            .store
            .load(&key())
            .await
            .expect("load")
            .expect("room");
        // The record is still the host alone: a refused Update changed nothing.
        assert_eq!(
            room.record.running().mix_mode(),
            Some(MixMode::Single),
            "attempt {i}"
        );
        let due = room.due_ms.expect("marked");
        delays.push(due - refusing.clock.now_ms());
        refusing.clock.advance_ms(due - refusing.clock.now_ms());
        let report = refusing
            .repair_pass(&app(), &format!("repair-{i}"), &no_sweep())
            .await;
        assert_eq!(report.failed, 1, "{report:?}");
    }
    assert_eq!(
        delays,
        [5_000, 10_000, 20_000, 30_000, 30_000, 30_000, 30_000, 30_000]
    );
    let room = refusing
        .store
        .load(&key())
        .await
        .expect("load")
        .expect("room");
    assert!(room.upkeep.failing_since_ms.is_some() && room.upkeep.failures >= 9);
}

/// A store whose reads of one room fail.
struct Unreadable {
    inner: Arc<InMemoryStore>,
    room: RoomKey,
}

impl StateStore for Unreadable {
    async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        if *key == self.room {
            return Err(StoreError::Unavailable {
                room: key.to_string(),
                source: "injected".into(),
            });
        }
        self.inner.load(key).await
    }
    async fn save(&self, key: &RoomKey, room: &StoredRoom, v: Version) -> Result<(), StoreError> {
        self.inner.save(key, room, v).await
    }
    async fn append(
        &self,
        key: &RoomKey,
        life: Option<&crate::store::Life>,
        entry: &crate::store::InboxEntry,
        due_ms: u64,
    ) -> Result<StoredRoom, StoreError> {
        self.inner.append(key, life, entry, due_ms).await
    }
    async fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<crate::ports::DueRoom>, StoreError> {
        self.inner.due_rooms(app, now_ms, limit).await
    }
    async fn rooms_with_tasks(&self, app: &AppId) -> Result<Vec<(RoomKey, TaskId)>, StoreError> {
        self.inner.rooms_with_tasks(app).await
    }
    async fn append_history(&self, key: &RoomKey, e: &HistoryEntry) -> Result<(), StoreError> {
        self.inner.append_history(key, e).await
    }
    async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(key).await
    }
}

#[tokio::test]
async fn the_sweep_never_stops_a_task_whose_room_it_cannot_read() {
    let s = shell_on(
        Unreadable {
            inner: Arc::new(InMemoryStore::new()),
            room: key(),
        },
        RecordingMpu::instant(),
    );
    start_elsewhere(&s.mpu, "room-1", "room-1_1700000000");
    let report = s
        .repair_pass(&app(), "repair-1", &RepairConfig::default())
        .await;
    assert_eq!(report.sweep.expect("swept").leaks_stopped, 0);
    assert!(!report.errors.is_empty(), "the store error is reported");
    assert_eq!(s.mpu.tasks(&key()).len(), 1, "nothing stopped");
}

#[tokio::test]
async fn a_long_broadcast_gets_its_stream_url_signed_again_at_half_its_validity() {
    let mut s = shell(RecordingMpu::signing(Duration::from_secs(600)));
    s.config.resign_after_ms = Some(300_000);
    live_host(&s).await;
    let url = |s: &TestShell<Arc<InMemoryStore>>| {
        s.mpu.sim().tasks()[0]
            .stream_url
            .clone()
            .expect("signed url")
    };
    let first = url(&s);
    assert!(first.contains("auth_key="), "{first}");
    let room = s.store.load(&key()).await.expect("load").expect("room");
    assert_eq!(
        room.due_ms,
        Some(s.clock.now_ms() + 300_000),
        "due for re-signing"
    );

    s.clock.advance_ms(299_000);
    s.repair_pass(&app(), "repair-1", &no_sweep()).await;
    assert_eq!(url(&s), first, "not yet");
    s.clock.advance_ms(1_000);
    let report = s.repair_pass(&app(), "repair-2", &no_sweep()).await;
    assert_eq!(report.repaired, 1, "{report:?}");
    assert_ne!(url(&s), first, "a freshly signed StreamURL");
    assert_eq!(s.mpu.sim().tasks()[0].updates, 1, "one Update, no restart");
    let room = s.store.load(&key()).await.expect("load").expect("room");
    assert_eq!(
        room.due_ms,
        Some(s.clock.now_ms() + 300_000),
        "due again in half a validity"
    );
}

/// A task whose restreaming targets differ from the record (changed behind costream's back,
/// here by an Update from elsewhere) is put back by the sweep with one Update: the outputs are
/// part of what the sweep compares.
#[tokio::test]
async fn the_sweep_restores_restreaming_targets_a_task_lost() {
    let s = shell(RecordingMpu::instant());
    live_host(&s).await;
    let settings = costream_core::RoomSettings {
        extra_outputs: costream_core::Setting::Set(
            costream_core::Outputs::new(vec![costream_core::OutputUrl::parse(
                "rtmp://r.example/live/key",
            )
            .expect("url")])
            .expect("outputs"),
        ),
        ..costream_core::RoomSettings::default()
    };
    s.handle(
        &key(),
        Some("settings"),
        &[costream_core::RoomEvent::Settings {
            settings: Box::new(settings),
            at: costream_core::Timestamp::from_secs(20),
        }],
        "inv-2",
    )
    .await
    .expect("converged");
    let listed = |s: &TestShell<Arc<InMemoryStore>>| {
        s.mpu.sim().tasks()[0]
            .multi_stream_url
            .as_ref()
            .map(|m| m.to_string())
    };
    assert!(listed(&s).is_some_and(|m| m.contains("rtmp://r.example/live/key")));
    // Someone updates the task to push to the CDN only.
    let task = s.mpu.sim().tasks()[0].task_id.clone();
    let other = AlibabaMpu::new(
        Arc::new(costream_sim::SimulatedLive::default()),
        ManualClock::at_ms(0),
        mpu_settings(&app(), DecisionConfig::default()),
    );
    let host = Shape::Single {
        user: UserId::parse("host").expect("user"),
    };
    let drop_targets = other
        .refresh_request(&key(), &task, &host, &costream_core::Outputs::NONE)
        .expect("request");
    s.mpu.sim().answer(&drop_targets).expect("updated");
    assert_eq!(listed(&s), None);

    let report = s
        .repair_pass(&app(), "repair-1", &RepairConfig::default())
        .await;
    let sweep = report.sweep.expect("swept");
    assert_eq!(
        (sweep.updated, sweep.restarted, sweep.leaks_stopped),
        (1, 0, 0),
        "{sweep:?}"
    );
    assert!(listed(&s).is_some_and(|m| m.contains("rtmp://r.example/live/key")));
    assert_eq!(s.mpu.sim().tasks()[0].task_id, task, "the same task");
}

/// The per-app cap on task Starts per minute: beyond it a Start is refused before it is sent
/// (no MPU call), counted, and the room is marked; in the next minute the loop starts it.
#[tokio::test]
async fn starts_beyond_the_per_minute_cap_wait_for_the_next_minute() {
    let mut s = shell(RecordingMpu::instant());
    s.config.max_starts_per_minute = Some(2);
    let room = |n: usize| RoomKey {
        app: app(),
        channel: ChannelId::parse(format!("room-{n}")).expect("channel"),
    };
    let mut outcomes = Vec::new();
    for n in 0..3 {
        outcomes.push(
            s.handle(
                &room(n),
                Some(&format!("m{n}")),
                &[ev(&format!("host{n}"), 10, UserAction::Publish)],
                "inv",
            )
            .await
            .is_ok(),
        );
    }
    assert_eq!(outcomes, [true, true, false], "the third Start is refused");
    assert!(s.mpu.tasks(&room(2)).is_empty(), "no MPU call for it");
    let capped = s.store.load(&room(2)).await.expect("load").expect("room");
    assert!(capped.due_ms.is_some(), "marked for the repair loop");
    assert!(capped
        .upkeep
        .last_failure
        .as_ref()
        .is_some_and(|f| f.reason.contains("cap of 2")));
    // Still the same minute: the loop's retry is refused too.
    s.clock.set_ms(s.clock.now_ms() + 10_000);
    s.repair_pass(&app(), "repair-1", &no_sweep()).await;
    assert!(s.mpu.tasks(&room(2)).is_empty());
    // The next minute: started.
    s.clock.set_ms(s.clock.now_ms() + 60_000);
    s.repair_pass(&app(), "repair-2", &no_sweep()).await;
    assert_eq!(s.mpu.tasks(&room(2)).len(), 1);
}
