//! The world's ports, gated: the in-memory store and the simulated Live API with seeded fates and
//! latencies, a clock on tokio's paused time, and a recorder of what the Live API applied.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_alibaba::{Clock, LiveApi, LiveRequest, MpuError, Reply};
use costream_app::ports::{Listing, MpuDone, MpuFailure, MpuPort, RoomKey, StateStore, StoreError};
use costream_app::store::memory::InMemoryStore;
use costream_app::store::{HistoryEntry, StoredRoom};
use costream_core::{AppId, Command, Shape, TaskId, Version, MAX_FACTS_JSON_BYTES};
use costream_sim::SimulatedLive;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Unix time (ms) at the start of every run.
pub const EPOCH_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Wall time of the simulation: a fixed epoch plus tokio's (paused) time since the run began.
#[derive(Debug, Clone)]
pub struct SimClock {
    pub origin: tokio::time::Instant,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        EPOCH_MS + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Per-seed switches and rates of each fault class (swarm testing: a class is on or off for the
/// whole seed, and its rate is drawn).
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    pub store_conflict: f64,
    pub store_unavailable: f64,
    pub store_landed: f64,
    pub live_throttled: f64,
    pub live_5xx: f64,
    pub live_timeout_applied: f64,
    pub live_timeout_lost: f64,
    pub live_applied_later: f64,
    pub kill: f64,
    pub idle_stops: u32,
    pub duplicates: f64,
    pub long_delays: f64,
    /// The repair loop's period (ms): the deployed schedule (60 s) or `serve`'s default (15 s).
    pub repair_period_ms: u64,
    /// When the seed signs StreamURLs: their validity (s), so the loop re-signs at half of it.
    pub url_validity_secs: Option<u64>,
    /// A write lands, its answer is lost, and the SDK's retry of it fails its condition: the
    /// store answers a conflict with the item carrying the write.
    pub store_landed_conflict: f64,
    /// The riding item of a transaction (a history slot, the start counter) is busy: the
    /// DynamoDB adapter's fallbacks (the room's write alone, the plain counter increment).
    pub riding_busy: f64,
    /// The app's backend refuses a webhook (5xx), or takes it and its answer is lost.
    pub hook_refused: f64,
    pub hook_lost: f64,
    /// A room of the seed gets a burst of this many co-hosts at once.
    pub burst: Option<usize>,
    /// Rooms empty and come back after a quiet while; their idle items expire or are deleted.
    pub second_life: bool,
    pub expire_idle: bool,
    /// The backend registers hosts and sets settings; co-hosts toggle their camera.
    pub backend: bool,
    pub cameras: bool,
    /// The app's cap on task Starts per minute.
    pub start_cap: Option<u32>,
}

impl Knobs {
    pub fn swarm(rng: &mut ChaCha8Rng) -> Knobs {
        let idle_stops = if rng.random_bool(0.2) {
            rng.random_range(1..=2)
        } else {
            0
        };
        let repair_period_ms = if rng.random_bool(0.7) { 60_000 } else { 15_000 };
        // The shortest validity the configuration accepts (600 s) up to 20 minutes.
        let url_validity_secs = rng.random_bool(0.3).then(|| rng.random_range(600..=1_200));
        fn rate(rng: &mut ChaCha8Rng, max: f64) -> f64 {
            if rng.random_bool(0.5) {
                rng.random_range(0.0..max)
            } else {
                0.0
            }
        }
        let store_conflict = rate(rng, 0.1);
        let store_unavailable = rate(rng, 0.05);
        let store_landed = rate(rng, 0.05);
        let live_throttled = rate(rng, 0.1);
        let live_5xx = rate(rng, 0.05);
        let live_timeout_applied = rate(rng, 0.05);
        let live_timeout_lost = rate(rng, 0.05);
        let live_applied_later = rate(rng, 0.05);
        let kill = rate(rng, 0.2);
        let duplicates = rate(rng, 0.5);
        let long_delays = rate(rng, 0.1);
        // Drawn after the older knobs, so their seeds keep their values.
        let store_landed_conflict = rate(rng, 0.05);
        let riding_busy = rate(rng, 0.2);
        let hook_refused = rate(rng, 0.3);
        let hook_lost = rate(rng, 0.2);
        // Up to 62 co-hosts, two callbacks each (up to 124 handlers at once): with the host, the
        // room never holds more users than it remembers (64; see `workload::room`).
        let burst = rng.random_bool(0.04).then(|| rng.random_range(20..=62));
        let second_life = rng.random_bool(0.25);
        let expire_idle = second_life && rng.random_bool(0.7);
        let backend = rng.random_bool(0.4);
        let cameras = rng.random_bool(0.4);
        let start_cap = rng.random_bool(0.15).then(|| rng.random_range(2..=3));
        Knobs {
            store_conflict,
            store_unavailable,
            store_landed,
            live_throttled,
            live_5xx,
            live_timeout_applied,
            live_timeout_lost,
            live_applied_later,
            kill,
            idle_stops,
            duplicates,
            long_delays,
            repair_period_ms,
            url_validity_secs,
            store_landed_conflict,
            riding_busy,
            hook_refused,
            hook_lost,
            burst,
            second_life,
            expire_idle,
            backend,
            cameras,
            start_cap,
        }
    }
}

/// How often each fault fired in a run (the bulk run fails if a class never fires).
#[derive(Debug, Clone, Default)]
pub struct Fired {
    pub store_conflict: u64,
    pub store_unavailable: u64,
    pub store_landed: u64,
    pub live_throttled: u64,
    pub live_5xx: u64,
    pub live_timeout_applied: u64,
    pub live_timeout_lost: u64,
    pub live_applied_later: u64,
    pub kills: u64,
    pub idle_stops: u64,
    pub redeliveries: u64,
    pub calls: u64,
    /// Backend PK requests made, and links that took (both rooms live, neither in a PK).
    pub pk_requests: u64,
    pub pk_links: u64,
    pub store_landed_conflict: u64,
    pub riding_busy: u64,
    pub hooks_refused: u64,
    pub hooks_lost: u64,
    pub hooks_accepted: u64,
    pub bursts: u64,
    pub items_expired: u64,
    pub items_deleted: u64,
    pub backend_requests: u64,
    pub camera_events: u64,
    pub held_stops_checked: u64,
}

impl Fired {
    pub fn add(&mut self, o: &Fired) {
        self.store_conflict += o.store_conflict;
        self.store_unavailable += o.store_unavailable;
        self.store_landed += o.store_landed;
        self.live_throttled += o.live_throttled;
        self.live_5xx += o.live_5xx;
        self.live_timeout_applied += o.live_timeout_applied;
        self.live_timeout_lost += o.live_timeout_lost;
        self.live_applied_later += o.live_applied_later;
        self.kills += o.kills;
        self.idle_stops += o.idle_stops;
        self.redeliveries += o.redeliveries;
        self.calls += o.calls;
        self.pk_requests += o.pk_requests;
        self.pk_links += o.pk_links;
        self.store_landed_conflict += o.store_landed_conflict;
        self.riding_busy += o.riding_busy;
        self.hooks_refused += o.hooks_refused;
        self.hooks_lost += o.hooks_lost;
        self.hooks_accepted += o.hooks_accepted;
        self.bursts += o.bursts;
        self.items_expired += o.items_expired;
        self.items_deleted += o.items_deleted;
        self.backend_requests += o.backend_requests;
        self.camera_events += o.camera_events;
        self.held_stops_checked += o.held_stops_checked;
    }

    /// The classes that never fired, by name.
    pub fn silent(&self) -> Vec<&'static str> {
        [
            ("store_conflict", self.store_conflict),
            ("store_unavailable", self.store_unavailable),
            ("store_landed", self.store_landed),
            ("live_throttled", self.live_throttled),
            ("live_5xx", self.live_5xx),
            ("live_timeout_applied", self.live_timeout_applied),
            ("live_timeout_lost", self.live_timeout_lost),
            ("live_applied_later", self.live_applied_later),
            ("kills", self.kills),
            ("idle_stops", self.idle_stops),
            ("redeliveries", self.redeliveries),
            ("pk_links", self.pk_links),
            ("store_landed_conflict", self.store_landed_conflict),
            ("riding_busy", self.riding_busy),
            ("hooks_refused", self.hooks_refused),
            ("hooks_lost", self.hooks_lost),
            ("hooks_accepted", self.hooks_accepted),
            ("bursts", self.bursts),
            ("items_expired", self.items_expired),
            ("items_deleted", self.items_deleted),
            ("backend_requests", self.backend_requests),
            ("camera_events", self.camera_events),
            ("held_stops_checked", self.held_stops_checked),
        ]
        .into_iter()
        .filter(|(_, n)| *n == 0)
        .map(|(name, _)| name)
        .collect()
    }
}

/// One request the Live API applied: which room, which room version decided it, when.
#[derive(Debug, Clone)]
pub struct Applied {
    pub channel: String,
    pub version: Version,
    pub action: &'static str,
    pub at_ms: u64,
}

/// An MPU command as the shell began it: which room, which task, which action, when (the
/// decision was the write just before).
#[derive(Debug, Clone)]
pub struct Begun {
    pub channel: String,
    pub task: String,
    pub action: &'static str,
    pub at_ms: u64,
    /// Other tasks of the channel the Live API ran then.
    pub other_tasks: usize,
}

/// What every port shares: the RNG (one stream for fates, so a run is one sequence of draws),
/// the knobs, whether faults are on, the trace and the safety log.
#[derive(Debug)]
pub struct World {
    pub rng: ChaCha8Rng,
    pub knobs: Knobs,
    pub faults: bool,
    pub fired: Fired,
    pub applied: Vec<Applied>,
    /// Every command the shell began (the transient invariants read the Stops).
    pub begun: Vec<Begun>,
    /// When a room's item was expired or deleted (epoch ms): its versions start over after.
    pub lives_ended: Vec<(String, u64)>,
    pub trace: Vec<String>,
    pub violations: Vec<String>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(world: &Shared) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    fn draw(&mut self, p: f64) -> bool {
        self.faults && p > 0.0 && self.rng.random_bool(p.min(1.0))
    }
    fn latency(&mut self, max_ms: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(0..=max_ms))
    }
}

/// The in-memory store (DynamoDB's conditional semantics) behind seeded fates: a forced version
/// conflict, an error with nothing written, an error after the write landed; and the item-size
/// bound checked on every write.
#[derive(Debug, Clone)]
pub struct GatedStore {
    pub inner: Arc<InMemoryStore>,
    pub world: Shared,
}

impl GatedStore {
    /// A write under the seed's fates: a conflict or a timeout before it is applied, or applied
    /// with the answer lost; else `apply`'s own result.
    async fn write(
        &self,
        room: &str,
        key: Option<&RoomKey>,
        expected: Version,
        apply: impl std::future::Future<Output = Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let delay = lock(&self.world).latency(20);
        tokio::time::sleep(delay).await;
        let fate = {
            let mut w = lock(&self.world);
            let k = w.knobs.clone();
            if w.draw(k.store_conflict) {
                w.fired.store_conflict += 1;
                1
            } else if w.draw(k.store_unavailable) {
                w.fired.store_unavailable += 1;
                2
            } else if w.draw(k.store_landed) {
                w.fired.store_landed += 1;
                3
            } else if w.draw(k.store_landed_conflict) {
                w.fired.store_landed_conflict += 1;
                4
            } else {
                0
            }
        };
        match fate {
            1 => Err(StoreError::VersionConflict {
                room: room.to_owned(),
                expected,
                current: None,
            }),
            2 => Err(StoreError::Unavailable {
                room: room.to_owned(),
                source: "injected: write timed out, not applied".into(),
            }),
            3 => {
                apply.await?;
                Err(StoreError::Unavailable {
                    room: room.to_owned(),
                    source: "injected: write applied, answer lost".into(),
                })
            }
            4 => {
                apply.await?;
                // The SDK's retry of the landed write: the version moved (to it).
                Err(StoreError::VersionConflict {
                    room: room.to_owned(),
                    expected,
                    current: match key {
                        Some(key) => self.inner.load(key).await?.map(Box::new),
                        None => None,
                    },
                })
            }
            _ => apply.await,
        }
    }

    /// Whether the riding item of this transaction is busy (a fate).
    fn riding_busy(&self) -> bool {
        let mut w = lock(&self.world);
        let p = w.knobs.riding_busy;
        let busy = w.draw(p);
        if busy {
            w.fired.riding_busy += 1;
        }
        busy
    }

    /// The PK invariant, after every write: a room whose stored facts link it to a peer is
    /// linked back by that peer — never one room in a PK and the other out of it.
    fn check_pk_pairs(&self) {
        let rooms = self.inner.rooms();
        let link_of = |channel: &costream_core::ChannelId| {
            rooms
                .iter()
                .find(|(k, _)| k.channel == *channel)
                .and_then(|(_, r)| r.facts.pk_link().map(|l| l.peer.clone()))
        };
        for (key, room) in &rooms {
            if let Some(link) = room.facts.pk_link() {
                if link_of(&link.peer).as_ref() != Some(&key.channel) {
                    let mut w = lock(&self.world);
                    let at = w.trace.len();
                    w.violations.push(format!(
                        "{key} is in a PK with {} but {} is not in one with it (after write #{at})",
                        link.peer, link.peer
                    ));
                }
            }
        }
    }
}

impl StateStore for GatedStore {
    async fn append(
        &self,
        key: &RoomKey,
        life: Option<&costream_app::store::Life>,
        entry: &costream_app::store::InboxEntry,
        due_ms: u64,
    ) -> Result<StoredRoom, StoreError> {
        if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
            eprintln!("append {key} {}", entry.id);
        }
        let delay = lock(&self.world).latency(20);
        tokio::time::sleep(delay).await;
        let fate = {
            let mut w = lock(&self.world);
            let k = w.knobs.clone();
            if w.draw(k.store_unavailable) {
                w.fired.store_unavailable += 1;
                1
            } else if w.draw(k.store_landed) {
                w.fired.store_landed += 1;
                2
            } else {
                0
            }
        };
        match fate {
            1 => Err(StoreError::Unavailable {
                room: key.to_string(),
                source: "injected: append timed out, not applied".into(),
            }),
            2 => {
                self.inner.append(key, life, entry, due_ms).await?;
                Err(StoreError::Unavailable {
                    room: key.to_string(),
                    source: "injected: append applied, answer lost".into(),
                })
            }
            _ => self.inner.append(key, life, entry, due_ms).await,
        }
    }

    async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        let delay = lock(&self.world).latency(20);
        tokio::time::sleep(delay).await;
        let unavailable = {
            let mut w = lock(&self.world);
            let p = w.knobs.store_unavailable;
            w.draw(p)
        };
        if unavailable {
            lock(&self.world).fired.store_unavailable += 1;
            return Err(StoreError::Unavailable {
                room: key.to_string(),
                source: "injected: read timed out".into(),
            });
        }
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<(), StoreError> {
        let size = serde_json::to_string(&room.facts).map_or(usize::MAX, |s| s.len());
        if size > MAX_FACTS_JSON_BYTES {
            lock(&self.world)
                .violations
                .push(format!("{key}: facts of {size} bytes exceed the bound"));
        }
        let room_name = key.to_string();
        let result = self
            .write(
                &room_name,
                Some(key),
                expected,
                self.inner.save(key, room, expected),
            )
            .await;
        trace_write("save", key, room, expected, &result);
        self.check_pk_pairs();
        result
    }

    async fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> Result<(), StoreError> {
        let name = format!("{} and {}", a.0, b.0);
        let result = self
            .write(&name, Some(a.0), a.2, self.inner.save_pair(a, b))
            .await;
        if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
            eprintln!(
                "save_pair {name} -> {:?} a.pk={:?} b.pk={:?}",
                result.as_ref().map_err(|e| e.to_string()),
                a.1.facts.pk_write(),
                b.1.facts.pk_write()
            );
        }
        self.check_pk_pairs();
        result
    }

    /// As DynamoDB's transaction of the room and the call's history slot; when the slot is
    /// busy, the adapter's fallback: the room alone, then the entry on its own.
    async fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> Result<(), StoreError> {
        self.save(key, room, expected).await?;
        if self.riding_busy() {
            // The slot's write, after the room's (best effort, as the adapter does it).
            let delay = lock(&self.world).latency(20);
            tokio::time::sleep(delay).await;
        }
        let _ = self.inner.append_history(key, entry).await;
        Ok(())
    }

    /// As DynamoDB's transaction of the room and the start counter; when the counter is busy,
    /// the adapter's fallback: the plain conditional increment, then the room alone.
    async fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> Result<bool, StoreError> {
        if self.riding_busy() {
            self.gate_query("start counter").await?;
            if !self.inner.take_start(&key.app, minute, cap).await? {
                return Ok(false);
            }
            return self.save(key, room, expected).await.map(|()| true);
        }
        let counted = {
            let inner = self.inner.clone();
            let (key, room) = (key.clone(), room.clone());
            async move {
                match inner
                    .save_counting_start(&key, &room, expected, minute, cap)
                    .await
                {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(StoreError::Failed {
                        room: key.to_string(),
                        source: "capped".into(),
                    }),
                    Err(e) => Err(e),
                }
            }
        };
        let result = self
            .write(&key.to_string(), Some(key), expected, counted)
            .await;
        trace_write("save_counting_start", key, room, expected, &result);
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::Failed { source, .. }) if source.to_string() == "capped" => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn take_start(&self, app: &AppId, minute: u64, cap: u32) -> Result<bool, StoreError> {
        self.gate_query("start counter").await?;
        self.inner.take_start(app, minute, cap).await
    }

    async fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RoomKey>, StoreError> {
        self.gate_query("hook rooms").await?;
        self.inner.hook_rooms(app, now_ms, limit).await
    }

    async fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<costream_app::ports::DueRoom>, StoreError> {
        self.gate_query("due rooms").await?;
        self.inner.due_rooms(app, now_ms, limit).await
    }

    async fn rooms_with_tasks(&self, app: &AppId) -> Result<Vec<(RoomKey, TaskId)>, StoreError> {
        self.gate_query("rooms with tasks").await?;
        self.inner.rooms_with_tasks(app).await
    }

    async fn append_history(&self, key: &RoomKey, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.inner.append_history(key, entry).await
    }

    async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(key).await
    }
}

impl GatedStore {
    /// An index query: a latency, and (with faults on) the chance of a timeout.
    async fn gate_query(&self, what: &str) -> Result<(), StoreError> {
        let delay = lock(&self.world).latency(20);
        tokio::time::sleep(delay).await;
        let unavailable = {
            let mut w = lock(&self.world);
            let p = w.knobs.store_unavailable;
            w.draw(p)
        };
        if unavailable {
            lock(&self.world).fired.store_unavailable += 1;
            return Err(StoreError::Unavailable {
                room: what.to_owned(),
                source: "injected: query timed out".into(),
            });
        }
        Ok(())
    }
}

tokio::task_local! {
    /// The room version the current MPU command was decided from (set by [`Recorder`]).
    static VERSION: Version;
}

/// The simulated Live API behind seeded fates: refusals (throttling, 5xx), timeouts where the
/// call was applied or not, answers after the client gave up (applied later).
#[derive(Debug, Clone)]
pub struct GatedLive {
    pub sim: Arc<SimulatedLive>,
    pub world: Shared,
}

fn throttled(action: &'static str) -> MpuError {
    MpuError::Throttled {
        action,
        http_status: 400,
        code: "Throttling.User".into(),
        message: "injected".into(),
        request_id: None,
        retry_after: None,
    }
}

fn unavailable(action: &'static str) -> MpuError {
    MpuError::Rejected {
        action,
        http_status: 503,
        code: "ServiceUnavailable".into(),
        message: "injected".into(),
        request_id: None,
        recommend: None,
    }
}

/// No answer to trust (a gateway's timeout page): the request may or may not have landed.
fn in_doubt(action: &'static str) -> MpuError {
    MpuError::MalformedResponse {
        action,
        http_status: 504,
        request_id: None,
        reason: "injected: gateway timeout",
        snippet: String::new(),
    }
}

impl GatedLive {
    fn record(&self, request: &LiveRequest, version: Option<Version>) {
        let channel = match request {
            LiveRequest::Start(r) => r.channel_id.clone(),
            LiveRequest::Update(r) => r.channel_id.clone(),
            LiveRequest::Stop(r) => r
                .task_id
                .rsplit_once('_')
                .map_or_else(String::new, |(c, _)| c.to_owned()),
            _ => return,
        };
        let mut w = lock(&self.world);
        if let Some(version) = version {
            let at_ms = self.sim.now_ms();
            w.applied.push(Applied {
                channel,
                version,
                action: request.action(),
                at_ms,
            });
        }
    }

    /// Calls the simulator and, when it applied something, records it with `version`.
    fn apply(&self, request: &LiveRequest, version: Option<Version>) -> Result<Reply, MpuError> {
        let reply = self.sim.answer(request);
        if reply.is_ok() {
            self.record(request, version);
        }
        reply
    }
}

impl LiveApi for GatedLive {
    async fn call(&self, request: &LiveRequest) -> Result<Reply, MpuError> {
        let version = VERSION.try_with(|v| *v).ok();
        let action = request.action();
        let (delay, fate) = {
            let mut w = lock(&self.world);
            w.fired.calls += 1;
            let delay = Duration::from_millis(10) + w.latency(490);
            let k = w.knobs.clone();
            let fate = if w.draw(k.live_throttled) {
                w.fired.live_throttled += 1;
                1
            } else if w.draw(k.live_5xx) {
                w.fired.live_5xx += 1;
                2
            } else if w.draw(k.live_timeout_applied) {
                w.fired.live_timeout_applied += 1;
                3
            } else if w.draw(k.live_timeout_lost) {
                w.fired.live_timeout_lost += 1;
                4
            } else if w.draw(k.live_applied_later) {
                w.fired.live_applied_later += 1;
                5
            } else {
                0
            };
            (delay, fate)
        };
        tokio::time::sleep(delay).await;
        match fate {
            1 => Err(throttled(action)),
            2 => Err(unavailable(action)),
            3 => {
                let _ = self.apply(request, version);
                Err(in_doubt(action))
            }
            4 => Err(in_doubt(action)),
            5 => {
                // Lands after the client gave up, but within the lease the shell keeps for a
                // call in doubt (45 s).
                let later = {
                    let mut w = lock(&self.world);
                    Duration::from_millis(w.rng.random_range(1_000..30_000))
                };
                let me = self.clone();
                let request = request.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(later).await;
                    let _ = me.apply(&request, version);
                });
                Err(in_doubt(action))
            }
            _ => self.apply(request, version),
        }
    }
}

/// The MPU port as the shell sees it, tagging every Live API call made for a command with the
/// room version the command was decided from.
#[derive(Debug, Clone)]
pub struct Recorder<M> {
    pub inner: M,
    /// Where the commands begun are logged, the clock they are timed on, and the Live API
    /// they are judged against.
    pub world: Option<Shared>,
    pub clock: SimClock,
    pub sim: Option<Arc<SimulatedLive>>,
}

impl<M: MpuPort> MpuPort for Recorder<M> {
    async fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        if let (Some(world), Some(sim)) = (&self.world, &self.sim) {
            let other_tasks = sim
                .tasks()
                .iter()
                .filter(|t| {
                    t.channel_id == room.channel.as_str() && t.task_id != command.task().as_str()
                })
                .count();
            let at_ms = self.clock.now_ms();
            lock(world).begun.push(Begun {
                channel: room.channel.to_string(),
                task: command.task().to_string(),
                action: command.name(),
                at_ms,
                other_tasks,
            });
        }
        VERSION
            .scope(version, self.inner.execute(room, command, version))
            .await
    }

    async fn list_tasks(&self) -> Result<Listing, MpuFailure> {
        self.inner.list_tasks().await
    }

    async fn task_exists(&self, task: &TaskId) -> Result<bool, MpuFailure> {
        self.inner.task_exists(task).await
    }

    async fn refresh_output(
        &self,
        room: &RoomKey,
        task: &TaskId,
        shape: &Shape,
        outputs: &costream_core::Outputs,
        version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        VERSION
            .scope(
                version,
                self.inner
                    .refresh_output(room, task, shape, outputs, version),
            )
            .await
    }
}

/// With `COSTREAM_SIM_TRACE`, one line per room write: the version, the result, what it wrote.
fn trace_write(
    kind: &str,
    key: &RoomKey,
    room: &StoredRoom,
    expected: Version,
    result: &Result<(), StoreError>,
) {
    if std::env::var_os("COSTREAM_SIM_TRACE").is_none() {
        return;
    }
    let cur = match result {
        Err(StoreError::VersionConflict {
            current: Some(c), ..
        }) => format!(
            "cur v{} pk={:?} wid={:?}",
            c.version.get(),
            c.facts.pk_write().map(|p| p.at),
            c.wid
        ),
        _ => String::new(),
    };
    eprintln!(
        "{kind} {key} v{} -> {:?} {cur} pk={:?} held={} inbox={} wid={:?} lease={:?}\n  marks {}\n  held {:?}",
        expected.get(),
        result.as_ref().map_err(|e| e.to_string()),
        room.facts.pk_write().map(|p| p.at),
        room.held.len(),
        room.inbox.len(),
        room.wid,
        room.lease,
        marks_of(&room.facts),
        room.held
    );
}

/// A compact view of a room's sessions for traces: the members as stored (compact).
fn marks_of(facts: &costream_core::Facts) -> String {
    let value = serde_json::to_value(facts).unwrap_or_default();
    value
        .get("members")
        .map(|m| m.to_string())
        .unwrap_or_default()
}
