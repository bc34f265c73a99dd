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
        let mut rate = |max: f64| {
            if rng.random_bool(0.5) {
                rng.random_range(0.0..max)
            } else {
                0.0
            }
        };
        Knobs {
            store_conflict: rate(0.1),
            store_unavailable: rate(0.05),
            store_landed: rate(0.05),
            live_throttled: rate(0.1),
            live_5xx: rate(0.05),
            live_timeout_applied: rate(0.05),
            live_timeout_lost: rate(0.05),
            live_applied_later: rate(0.05),
            kill: rate(0.2),
            idle_stops,
            duplicates: rate(0.5),
            long_delays: rate(0.1),
            repair_period_ms,
            url_validity_secs,
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

/// What every port shares: the RNG (one stream for fates, so a run is one sequence of draws),
/// the knobs, whether faults are on, the trace and the safety log.
#[derive(Debug)]
pub struct World {
    pub rng: ChaCha8Rng,
    pub knobs: Knobs,
    pub faults: bool,
    pub fired: Fired,
    pub applied: Vec<Applied>,
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
            _ => apply.await,
        }
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
            .write(&room_name, expected, self.inner.save(key, room, expected))
            .await;
        if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
            let cur = match &result {
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
                "save {key} v{} -> {:?} {cur} pk={:?} held={} inbox={} wid={:?} lease={:?}",
                expected.get(),
                result.as_ref().map_err(|e| e.to_string()),
                room.facts.pk_write().map(|p| p.at),
                room.held.len(),
                room.inbox.len(),
                room.wid,
                room.lease
            );
        }
        self.check_pk_pairs();
        result
    }

    async fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> Result<(), StoreError> {
        let name = format!("{} and {}", a.0, b.0);
        let result = self.write(&name, a.2, self.inner.save_pair(a, b)).await;
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
}

impl<M: MpuPort> MpuPort for Recorder<M> {
    async fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> Result<MpuDone, MpuFailure> {
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
