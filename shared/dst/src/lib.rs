//! Deterministic simulation of costream: the **real** handlers, shell, core, MPU adapter and
//! in-memory store (DynamoDB's conditional-write semantics) and the simulated Live API, under a
//! seeded scheduler with simulated time and injected faults, checked against an independent
//! reference model of who should be on stage.
//!
//! # Layout
//! - [`model`]: the reference model (the spec; imports nothing from costream).
//! - [`workload`]: a truthful history per room and the ARTC callbacks and backend requests that
//!   report it.
//! - [`ports`]: the gated store and Live API (fates, latencies), the clock, the recorder.
//! - [`oracle`]: the checks — all from the model, the true history and what the driver saw
//!   (deliveries, the Live API's tasks and calls, the webhooks the backend received), never from
//!   the system's stored state.
//! - [`run_seed`]: **start here** — one seed: workload → delivery plan → storm (faults on) →
//!   heal (faults off, every retry delivered, leases expire) → checks.
//!
//! # How a run works
//! One `current_thread` tokio runtime with paused time per seed: every sleep jumps, nothing real
//! waits, and the run is a pure function of the seed. Each ARTC callback is delivered 1–3 times
//! (duplicates), in any order, after 0 s to an hour, to both stream functions in either order
//! (each applies every item); an invocation may be killed mid-call (its lease stays behind) or
//! time out; a failed one is retried by its sender's policy (Lambda: twice, after 60 and 120
//! s). The app's backend registers hosts, sets settings, links and ends PKs, and takes webhooks
//! (refusing some, losing the answer of others). Store and Live API calls meet seeded fates.
//! Idle rooms' items expire or are deleted while their channel is empty, and come back.
//!
//! # Checks (see [`oracle`])
//! - Safety, all along: the Live API applies a room's requests in the order of the room versions
//!   that decided them; the facts stay within `MAX_FACTS_JSON_BYTES`; at most one task per
//!   channel; after every store write, a room stored in a PK is linked back by its peer.
//! - Transient invariants: a task whose broadcast (per the model, from what costream surely
//!   knew) continues is never stopped; a PK whose two broadcasts continue is never ended.
//! - Webhooks: the same id is the same event; a room's events arrive in order; in the end the
//!   backend's view of every room (live or ended, who is on stage) is the model's.
//! - Liveness, with no callback after the last one: every room's task equals the model — with
//!   the PK the backend's requests made, applied to the true state at request time — within the
//!   longest a room can wait plus one repair period, and stays so. Tasks leaked and foreign,
//!   StreamURLs re-signed, as before.
//!
//! A failing seed prints `COSTREAM_SIM_SEED=<n>` and replays exactly.

pub mod model;
pub mod oracle;
pub mod ports;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_app::config::Config;
use costream_app::handlers::{CdnRequest, Services};
use costream_app::inbound::Side;
use costream_app::mpu::{AlibabaMpu, IngestSettings, MpuSettings};
use costream_app::ports::{Clock, RoomKey, StateStore};
use costream_app::repair::RepairConfig;
use costream_app::shell::{PkOutcome, PkRefusal, Shell, ShellConfig, WriteIds};
use costream_app::store::cached::Cached;
use costream_app::store::memory::InMemoryStore;
use costream_app::store::MAX_BACKOFF_MS;
use costream_core::{ChannelId, Shape, TaskId, Timestamp, UserId};
use costream_sim::SimulatedLive;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ports::{lock, Fired, GatedLive, GatedStore, Knobs, Recorder, SimClock, World, EPOCH_MS};

type Svc = Services<Cached<GatedStore>, Recorder<AlibabaMpu<GatedLive, SimClock>>, SimClock>;

/// Warm containers per seed: each invocation runs in one of them (by its request number), each
/// with its own process cache of rooms (`Cached`), so commits start from stale copies as on
/// Lambda, where a room's callbacks land in different containers.
const CONTAINERS: u64 = 3;

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub rooms: usize,
    pub deliveries: u64,
    /// Rooms that were wrong when the last callback was done and that the repair loop put
    /// right (see the crate doc), by what was wrong.
    pub needs_repair: usize,
    pub repair_causes: BTreeMap<&'static str, usize>,
    /// Deliveries dead-lettered after Lambda's retries (redriven before `T0`).
    pub dead_lettered: usize,
    /// Simulated seconds from `T0` until every room was right.
    pub converged_after_secs: u64,
    pub fired: Fired,
    /// A digest of the run's trace (determinism check).
    pub digest: u64,
}

/// Lambda's function timeout for the simulated invocations.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(30);
/// When Lambda retries a failed asynchronous invocation, after the first attempt.
const RETRY_AFTER: [u64; 2] = [60_000, 120_000];
/// When the backend tries a refused request of its own again (host, settings).
const BACKEND_RETRY_MS: u64 = 2_000;

#[derive(Debug, Clone)]
enum Payload {
    Artc {
        body: Vec<u8>,
        side: Side,
        /// Which callback of the room (its index in `Room::callbacks`).
        callback: usize,
    },
    Cdn {
        live: bool,
        secs: u64,
    },
    /// The app's backend: a host registration or settings (index in `Room::backend`).
    Backend {
        request: usize,
    },
    /// The app's backend links rooms 0 and 1 into a PK (from this delivery's room), or ends this
    /// room's PK — only when what costream knows of both rooms is settled (see [`oracle`]).
    Pk {
        link: bool,
        /// Attempts to find a settled moment so far.
        tries: u32,
    },
}

#[derive(Debug, Clone)]
struct Delivery {
    room: usize,
    payload: Payload,
    attempt: u32,
    id: u64,
    /// The request id of the invocation: Lambda keeps it across the retries of one event, so two
    /// deliveries can share it (a retry racing a straggler of the first attempt).
    request: u64,
}

/// The agenda: deliveries by due time, ties by insertion order.
#[derive(Debug, Default)]
struct Agenda {
    heap: BinaryHeap<std::cmp::Reverse<(u64, u64)>>,
    items: BTreeMap<u64, Delivery>,
    seq: u64,
}

impl Agenda {
    fn push(&mut self, due_ms: u64, mut d: Delivery) {
        self.seq += 1;
        d.id = self.seq;
        if d.request == 0 {
            d.request = self.seq;
        }
        self.heap.push(std::cmp::Reverse((due_ms, self.seq)));
        self.items.insert(self.seq, d);
    }
    fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|r| r.0 .0)
    }
    fn pop(&mut self) -> Option<(u64, Delivery)> {
        let std::cmp::Reverse((due, seq)) = self.heap.pop()?;
        self.items.remove(&seq).map(|d| (due, d))
    }
    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
    /// Whether a delivery for `room` is due before `until` (ms).
    fn holds_before(&self, room: usize, until: u64) -> bool {
        self.heap
            .iter()
            .any(|r| r.0 .0 < until && self.items.get(&r.0 .1).is_some_and(|d| d.room == room))
    }
}

#[derive(Debug)]
enum Done {
    Ok(Delivery),
    /// Failed or killed: the sender retries.
    Retry(Delivery),
}

/// What the driver saw happen, for the oracle: when each true event was first handed to an
/// invocation, when one first completed, the PK requests the backend made and how they ended,
/// and the webhooks the backend received.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per room, per history index: the first delivery start and the first success (sim ms).
    pub started: Vec<BTreeMap<usize, u64>>,
    pub completed: Vec<BTreeMap<usize, u64>>,
    /// Accepted PK requests: (start, sim ms; room; Some(peer) for a link / None for an end).
    pub pk: Vec<(u64, usize, Option<usize>)>,
    /// When each attempt of an unlink request began (sim ms): an attempt whose answer was lost
    /// may have ended the PK all the same.
    pub unlink_tries: Vec<u64>,
    pub hooks: oracle::Hooks,
}

fn config() -> Config {
    Config::from_lookup(|k| {
        match k {
            "COSTREAM_APP_ID" => Some(workload::APP),
            "COSTREAM_PUSH_DOMAIN" => Some("push.example.com"),
            "COSTREAM_PLAY_DOMAIN" => Some("play.example.com"),
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("simulation config")
}

/// Runs one seed; `Err` says what broke and how to replay it.
pub fn run_seed(seed: u64) -> Result<Stats, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    // With COSTREAM_SIM_TRACE, the system's own logs (RUST_LOG filters them, default debug).
    let _logs = trace().then(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .without_time()
                .finish(),
        )
    });
    rt.block_on(run(seed))
        .map_err(|why| format!("COSTREAM_SIM_SEED={seed} cargo test -p costream-dst --test dst replay -- --nocapture\n{why}"))
}

fn now_of(origin: tokio::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn trace() -> bool {
    std::env::var_os("COSTREAM_SIM_TRACE").is_some()
}

async fn run(seed: u64) -> Result<Stats, String> {
    let origin = tokio::time::Instant::now();
    let clock = SimClock { origin };
    // Separate streams, so a new knob does not reshuffle every workload.
    let mut workload_rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_de11_7e21);
    let mut knob_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0bad_c0ff_eeee);
    let knobs = Knobs::swarm(&mut knob_rng);
    let world = Arc::new(Mutex::new(World {
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x000f_a7e5),
        knobs: knobs.clone(),
        faults: true,
        fired: Fired::default(),
        applied: Vec::new(),
        begun: Vec::new(),
        lives_ended: Vec::new(),
        trace: Vec::new(),
        violations: Vec::new(),
    }));

    // What really happens.
    let room_count = workload_rng.random_range(1..=3);
    let rooms: Vec<workload::Room> = (0..room_count)
        .map(|i| {
            let t0 = EPOCH_MS / 1000 + workload_rng.random_range(0..60);
            let events = workload_rng.random_range(4..=14);
            let shape = workload::Shape {
                burst: knobs.burst.filter(|_| i == 0),
                second_life: knobs.second_life,
                backend: knobs.backend,
                cameras: knobs.cameras,
            };
            workload::room(&mut workload_rng, i, t0, events, shape)
        })
        .collect();
    {
        let mut w = lock(&world);
        w.fired.bursts += u64::from(knobs.burst.is_some());
        w.fired.backend_requests += rooms.iter().map(|r| r.backend.len() as u64).sum::<u64>();
        w.fired.camera_events += rooms
            .iter()
            .flat_map(|r| &r.history)
            .filter(|t| {
                matches!(
                    t,
                    model::Truth::User {
                        act: model::Act::Camera { .. },
                        ..
                    }
                )
            })
            .count() as u64;
    }

    // The delivery plan. Long delays and the expiry of idle items do not mix: a callback
    // delivered after its room's item expired reaches a room that forgot what it needed to judge
    // it (in production the TTL is 30 days, far beyond any redelivery).
    let long_delays = if knobs.expire_idle {
        0.0
    } else {
        knobs.long_delays
    };
    let mut agenda = Agenda::default();
    let mut deliveries = 0;
    for (r, room) in rooms.iter().enumerate() {
        for (c, cb) in room.callbacks.iter().enumerate() {
            let copies = if cb.burst {
                1
            } else {
                1 + usize::from(plan_rng.random_bool(knobs.duplicates))
                    + usize::from(plan_rng.random_bool(knobs.duplicates / 2.0))
            };
            for _ in 0..copies {
                let delay = if cb.burst {
                    // A burst: every callback at once.
                    0
                } else if plan_rng.random_bool(long_delays) {
                    plan_rng.random_range(60_000..3_600_000)
                } else {
                    plan_rng.random_range(0..3_000)
                };
                let body = serde_json::to_vec(&cb.body).map_err(|e| e.to_string())?;
                // Both stream functions, in either order.
                for side in [Side::Published, Side::Unpublished] {
                    deliveries += 1;
                    let jitter = plan_rng.random_range(0..400);
                    agenda.push(
                        cb.at_ms - EPOCH_MS + delay + jitter,
                        Delivery {
                            room: r,
                            payload: Payload::Artc {
                                body: body.clone(),
                                side,
                                callback: c,
                            },
                            attempt: 0,
                            id: 0,
                            request: 0,
                        },
                    );
                }
            }
        }
        for (at_ms, live, secs) in &room.cdn {
            deliveries += 1;
            let delay = plan_rng.random_range(0..2_000);
            agenda.push(
                at_ms - EPOCH_MS + delay,
                Delivery {
                    room: r,
                    payload: Payload::Cdn {
                        live: *live,
                        secs: *secs,
                    },
                    attempt: 0,
                    id: 0,
                    request: 0,
                },
            );
        }
        for (i, (at_ms, _, _)) in room.backend.iter().enumerate() {
            deliveries += 1;
            agenda.push(
                at_ms - EPOCH_MS + plan_rng.random_range(0..1_000),
                Delivery {
                    room: r,
                    payload: Payload::Backend { request: i },
                    attempt: 0,
                    id: 0,
                    request: 0,
                },
            );
        }
    }
    // In half the seeds with two rooms or more, the backend links rooms 0 and 1 into a PK and
    // ends it, a few times, at random moments of the storm — each when what costream knows of
    // both rooms is settled (its own stream, so the other plans stay as they were).
    let mut pk_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0070_6b70_6b70);
    let mut pk_plan: Vec<(u64, usize, bool)> = Vec::new();
    if rooms.len() >= 2 && pk_rng.random_bool(0.5) {
        let last = agenda.heap.iter().map(|r| r.0 .0).max().unwrap_or(0);
        for _ in 0..pk_rng.random_range(1..=4) {
            pk_plan.push((
                pk_rng.random_range(0..=last.max(1)),
                pk_rng.random_range(0..2),
                pk_rng.random_bool(0.65),
            ));
        }
        pk_plan.sort();
    }
    let storm_end = agenda
        .heap
        .iter()
        .map(|r| r.0 .0)
        .chain(pk_plan.iter().map(|p| p.0))
        .max()
        .unwrap_or(0);
    // Alibaba stops a task by itself now and then (idle timeout while the camera is off).
    let idle_stops: Vec<u64> = (0..knobs.idle_stops)
        .map(|_| plan_rng.random_range(0..=storm_end.max(1)))
        .collect();
    // Idle items expire or are deleted during their room's quiet while.
    let mut expiries: BTreeSet<(u64, usize, bool)> = BTreeSet::new();
    if knobs.expire_idle {
        for (r, room) in rooms.iter().enumerate() {
            // An item that expires forgets what the backend set for the room (its host, its
            // settings): the backend sets them again for a room that comes back after the TTL
            // (30 days) — the model's rooms keep them, so theirs do not expire.
            let backend_set = room.history.iter().any(|t| {
                matches!(
                    t,
                    model::Truth::Registered { .. } | model::Truth::Settings { .. }
                )
            });
            if let Some((from, to)) = room.quiet.filter(|_| !backend_set) {
                let (from, to) = (from - EPOCH_MS, to - EPOCH_MS);
                // Past the grace and a repair pass, before the room comes back.
                let at = plan_rng.random_range(from + 10_000..to.max(from + 10_001));
                expiries.insert((at, r, plan_rng.random_bool(0.5)));
            }
        }
    }

    // The system under test: one shared store and Live API, as deployed.
    let sim = Arc::new(SimulatedLive::new(clock.clone()));
    let store = GatedStore {
        inner: Arc::new(InMemoryStore::new()),
        world: world.clone(),
    };
    let config = config();
    let mpu = AlibabaMpu::new(
        GatedLive {
            sim: sim.clone(),
            world: world.clone(),
        },
        clock.clone(),
        MpuSettings {
            app_id: config.app_id.clone(),
            ingest: IngestSettings {
                push_domain: "push.example.com".into(),
                app_name: "live".into(),
                push_auth_key: knobs
                    .url_validity_secs
                    .map(|_| "dst-push-key".to_owned().into()),
                url_validity: Duration::from_secs(knobs.url_validity_secs.unwrap_or(86_400)),
            },
            decision: config.decision.clone(),
            region: None,
            stream_url_wait: Duration::from_secs(12),
        },
    );
    let config = Arc::new(config);
    let containers: Vec<Arc<Svc>> = (0..CONTAINERS)
        .map(|c| {
            Arc::new(Services {
                shell: Shell {
                    // Each container's copies age on the simulation's clock.
                    store: Cached::with_clock(store.clone(), Arc::new(clock.clone())),
                    mpu: Recorder {
                        inner: mpu.clone(),
                        world: Some(world.clone()),
                        clock: clock.clone(),
                        sim: Some(sim.clone()),
                    },
                    clock: clock.clone(),
                    decision: config.decision.clone(),
                    config: ShellConfig {
                        resign_after_ms: knobs.url_validity_secs.map(|v| v * 1000 / 2),
                        // Deterministic write ids: one instance per container.
                        writes: WriteIds::new(format!("c{c}")),
                        webhooks: true,
                        max_starts_per_minute: knobs.start_cap,
                        ..ShellConfig::default()
                    },
                },
                config: config.clone(),
                notifier: None,
                end_grace: costream_app::handlers::EndGraceWait::Inline {
                    max_ms: costream_app::handlers::INLINE_GRACE_WAIT_MS,
                },
            })
        })
        .collect();
    let services = containers[0].clone();
    let lease_ms = services.shell.config.lease_ms;
    let grace = services.config.decision.end_grace_secs;
    let seen = Arc::new(Mutex::new(Seen {
        started: vec![BTreeMap::new(); rooms.len()],
        completed: vec![BTreeMap::new(); rooms.len()],
        ..Seen::default()
    }));

    // Tasks that are not the rooms': a costream-named task of a channel the table never saw
    // (a room that expired from the table), and a task not named by costream (another app's).
    let ghost = RoomKey {
        app: services.config.app_id.clone(),
        channel: ChannelId::parse(format!("ghost-{}", seed % 1000)).map_err(|e| e.to_string())?,
    };
    let ghost_task = TaskId::for_broadcast(
        &ghost.channel,
        Timestamp::from_secs(EPOCH_MS / 1000 - 86_400),
    );
    let foreign = RoomKey {
        app: ghost.app.clone(),
        channel: ChannelId::parse("elsewhere").map_err(|e| e.to_string())?,
    };
    let foreign_task = "elsewhere-recording";
    for (key, task) in [(&ghost, ghost_task.as_str()), (&foreign, foreign_task)] {
        let shape = Shape::Single {
            user: UserId::parse("someone").map_err(|e| e.to_string())?,
        };
        let start = services
            .shell
            .mpu
            .inner
            .start_request(key, task, &shape, &costream_core::Outputs::NONE)
            .map_err(|e| e.to_string())?;
        sim.answer(&start)
            .map_err(|e| format!("seeding {task}: {e}"))?;
    }

    // The repair loop, all along: a pass every period, from a random phase, and a webhook pass
    // after each (the backend's sink takes them).
    let period = Duration::from_millis(knobs.repair_period_ms);
    let phase = Duration::from_millis(plan_rng.random_range(0..knobs.repair_period_ms));
    let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let repair_loop = {
        let svc = services.clone();
        let passes = passes.clone();
        let (world, seen) = (world.clone(), seen.clone());
        tokio::spawn(async move {
            let config = RepairConfig {
                deadline: Duration::from_secs(8),
                ..RepairConfig::default()
            };
            let mut next = tokio::time::Instant::now() + phase;
            loop {
                tokio::time::sleep_until(next).await;
                let n = passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if trace() {
                    eprintln!("repair pass {n} starts at {:?}", origin.elapsed());
                }
                let app = svc.config.app_id.clone();
                let report = svc
                    .shell
                    .repair_pass(&app, &format!("repair-{n}"), &config)
                    .await;
                if trace() {
                    eprintln!("repair pass {n}: {report:?}");
                }
                if let Ok(due) = svc
                    .shell
                    .store
                    .hook_rooms(&app, svc.shell.clock.now_ms(), 64)
                    .await
                {
                    for key in due {
                        oracle::deliver_hooks(&svc, &key, &world, &seen).await;
                    }
                }
                costream_app::metrics::take();
                next += period;
                while next <= tokio::time::Instant::now() {
                    next += period;
                }
            }
        })
    };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut running: BTreeMap<u64, usize> = BTreeMap::new();
    let mut dead_letters: Vec<Delivery> = Vec::new();
    let mut dead_lettered = 0;
    let mut idle = idle_stops.into_iter().collect::<BTreeSet<u64>>();
    let mut pk_plan = pk_plan
        .into_iter()
        .collect::<std::collections::VecDeque<_>>();
    let mut pk_in_flight = false;
    let mut faults_off = false;
    loop {
        let now = now_of(origin);
        if now > storm_end + 6 * 3_600_000 {
            return Err(format!(
                "the storm did not end: at {now} ms, {} invocations running, next delivery {:?}, {} PK requests left, in flight {pk_in_flight}",
                running.len(),
                agenda.next_due(),
                pk_plan.len()
            ));
        }
        if !faults_off && now > storm_end {
            faults_off = true;
            lock(&world).faults = false;
        }
        // Idle stops due now: Alibaba ends a running task of some room.
        while let Some(&at) = idle.first().filter(|at| **at <= now) {
            idle.remove(&at);
            let tasks: Vec<_> = sim
                .tasks()
                .into_iter()
                .filter(|t| rooms.iter().any(|r| r.channel == t.channel_id))
                .collect();
            if !tasks.is_empty() {
                let t = &tasks[lock(&world).rng.random_range(0..tasks.len())];
                sim.end_task(&t.app_id, &t.task_id);
                lock(&world).fired.idle_stops += 1;
            }
        }
        // Idle items: expired (still readable, treated as absent) or deleted, when nothing for
        // their room waits or runs.
        while let Some(&(at, r, delete)) = expiries.first().filter(|e| e.0 <= now) {
            expiries.remove(&(at, r, delete));
            let quiet_end = rooms[r].quiet.map_or(0, |q| q.1 - EPOCH_MS);
            let busy = agenda.holds_before(r, quiet_end)
                || running.values().any(|room| *room == r)
                || dead_letters.iter().any(|d| d.room == r);
            if !busy {
                oracle::expire(&store, &services, &rooms[r].channel, delete, now, &world);
            }
        }
        // The next PK request, once the previous one is done.
        if !pk_in_flight {
            if let Some(&(at, room, link)) = pk_plan.front().filter(|p| p.0 <= now) {
                pk_plan.pop_front();
                agenda.push(
                    at.max(now),
                    Delivery {
                        room,
                        payload: Payload::Pk { link, tries: 0 },
                        attempt: 0,
                        id: 0,
                        request: 0,
                    },
                );
                pk_in_flight = true;
            }
        }
        let next = agenda.next_due();
        let wake = [
            next,
            idle.first().copied(),
            expiries.first().map(|e| e.0),
            pk_plan.front().filter(|_| !pk_in_flight).map(|p| p.0),
        ]
        .into_iter()
        .flatten()
        .min();
        if trace() {
            eprintln!(
                "t={now} running={} next={next:?} wake={wake:?}",
                running.len()
            );
        }
        tokio::select! {
            biased;
            Some(done) = rx.recv() => {
                let now = now_of(origin);
                match done {
                    Done::Ok(d) => {
                        if trace() {
                            eprintln!("done #{} room-{} {:?}", d.id, d.room, oracle::events_of(&rooms, &d));
                        }
                        running.remove(&d.id);
                        if let Payload::Pk { .. } = d.payload {
                            pk_in_flight = false;
                        }
                        oracle::completed(&seen, &rooms, &d, now);
                    }
                    Done::Retry(mut d) => {
                        if trace() {
                            eprintln!("failed #{} room-{} {:?}", d.id, d.room, oracle::events_of(&rooms, &d));
                        }
                        running.remove(&d.id);
                        match (&d.payload, RETRY_AFTER.get(usize::try_from(d.attempt).unwrap_or(9))) {
                            // Lambda retries an asynchronous invocation twice.
                            (Payload::Artc { .. }, Some(after)) => {
                                d.attempt += 1;
                                lock(&world).fired.redeliveries += 1;
                                agenda.push(now + after, d);
                            }
                            // Out of retries: the event waits in the dead-letter queue for the
                            // operator's redrive (below, after the storm).
                            (Payload::Artc { .. }, None) => {
                                dead_lettered += 1;
                                d.attempt = 0;
                                dead_letters.push(d);
                            }
                            // The backend tries its own requests again until they are taken.
                            (Payload::Backend { .. }, _) => {
                                d.attempt += 1;
                                agenda.push(now + BACKEND_RETRY_MS, d);
                            }
                            // A PK request not settled yet: a second later.
                            (Payload::Pk { tries, .. }, _) if *tries > 0 => {
                                agenda.push(now + 1_000, d);
                            }
                            // A PK request answered with a 5xx (or none) may have landed: the
                            // backend sends it again until it has an answer, the last word
                            // the model goes by.
                            (Payload::Pk { .. }, _) => {
                                d.attempt += 1;
                                agenda.push(now + BACKEND_RETRY_MS, d);
                            }
                            // A synchronous CDN request nobody redelivers: what it committed
                            // stays, what it did not finish is the repair loop's.
                            (Payload::Cdn { .. }, _) => {}
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(origin + Duration::from_millis(wake.unwrap_or(0))), if wake.is_some() => {
                let now = now_of(origin);
                if agenda.next_due().is_some_and(|due| due <= now) {
                    let Some((_, d)) = agenda.pop() else { continue };
                    running.insert(d.id, d.room);
                    if trace() {
                        eprintln!("start #{} room-{} {:?}", d.id, d.room, oracle::events_of(&rooms, &d));
                    }
                    oracle::started(&seen, &rooms, &d, now);
                    spawn_invocation(&containers, &world, &seen, &tx, d, &rooms, grace);
                }
            }
            else => {
                if running.is_empty() {
                    break;
                }
            }
        }
        if agenda.is_empty()
            && idle.is_empty()
            && running.is_empty()
            && pk_plan.is_empty()
            && expiries.is_empty()
        {
            break;
        }
    }
    // The storm is over (the last delivery may have come exactly at its end).
    lock(&world).faults = false;
    // The operator redrives the dead-letter queue.
    for d in std::mem::take(&mut dead_letters) {
        oracle::started(&seen, &rooms, &d, now_of(origin));
        running.insert(d.id, d.room);
        spawn_invocation(&containers, &world, &seen, &tx, d, &rooms, grace);
    }
    while !running.is_empty() {
        if now_of(origin) > storm_end + 12 * 3_600_000 {
            return Err(format!(
                "{} redriven invocations never ended",
                running.len()
            ));
        }
        match rx.recv().await {
            Some(Done::Ok(d)) => {
                running.remove(&d.id);
                oracle::completed(&seen, &rooms, &d, now_of(origin));
            }
            Some(Done::Retry(d)) => {
                // Faults are off: a redriven event can only fail by a bug.
                return Err(format!("a redriven delivery failed: {d:?}"));
            }
            None => break,
        }
    }

    // T0: faults off, the last callback done. From here only the repair loop acts.
    let t0 = tokio::time::Instant::now();
    if trace() {
        eprintln!("T0 at {:?}", origin.elapsed());
    }
    let rules = oracle::Rules {
        max_panes: services.config.decision.max_panes,
        grace,
    };
    let mut wrong_at_t0: BTreeMap<usize, &'static str> = BTreeMap::new();
    {
        let seen = lock_seen(&seen);
        for (r, room) in rooms.iter().enumerate() {
            let want = oracle::wanted(&rooms, r, &seen.pk, rules);
            let have = oracle::tasks_of(&sim, &room.channel);
            let cause = match (&want, have.as_slice()) {
                (model::Expect::Off, []) => None,
                (model::Expect::Off, _) => Some("a task runs for a room that is off"),
                (_, []) => Some("a live room has no task"),
                (w, [h]) if w == h => None,
                (_, [_]) => Some("the task shows the wrong stage"),
                (_, _) => Some("several tasks"),
            };
            if let Some(cause) = cause {
                wrong_at_t0.insert(r, cause);
            }
        }
    }
    // The longest a room can wait for the loop (a lease kept after a call in doubt, 46 s, or
    // the backoff cap, 30 s), plus one period, plus 15 s for the pass to converge the room (a
    // Stop, the StreamURL's 10 s hold, a Start): 121 s on the deployed one-minute schedule,
    // about two periods. With the app's start cap, a Start may wait for the next minute.
    let cap_wait = if knobs.start_cap.is_some() {
        Duration::from_secs(60)
    } else {
        Duration::ZERO
    };
    let bound = Duration::from_millis((lease_ms + 1_000).max(MAX_BACKOFF_MS)) + period + cap_wait;
    let slack = Duration::from_secs(15);
    // Watch until one period past the deadline: every room right by `bound + slack` (a pass
    // that started within the bound has finished), and still right after; every signed
    // StreamURL unexpired from then on; the webhooks delivered.
    let step = Duration::from_secs(5);
    let mut right_since: Option<Duration> = None;
    let mut leaks = Vec::new();
    while t0.elapsed() < bound + slack + period + Duration::from_secs(60) {
        tokio::time::sleep(step).await;
        let right = {
            let seen = lock_seen(&seen);
            oracle::all_right(&rooms, &sim, &seen.pk, rules)
        };
        if right {
            right_since.get_or_insert(t0.elapsed());
        } else {
            right_since = None;
        }
        if t0.elapsed() >= bound + slack && knobs.url_validity_secs.is_some() {
            leaks.extend(oracle::expired_urls(&sim, &rooms));
        }
    }
    repair_loop.abort();
    if passes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        return Err("the repair loop never ran".into());
    }
    if sim.task(ghost.app.as_str(), ghost_task.as_str()).is_some() {
        leaks.push(format!(
            "the leaked task {ghost_task} of a room the table never saw still runs"
        ));
    }
    if sim.task(foreign.app.as_str(), foreign_task).is_none() {
        leaks.push(format!("the foreign task {foreign_task} was stopped"));
    }
    leaks.dedup();
    if right_since.is_none_or(|since| since > bound + slack) {
        leaks.push(format!(
            "not every room was right within {:?} of the last callback and after (right since {right_since:?})",
            bound + slack
        ));
    }

    let seen = std::mem::take(&mut *lock_seen(&seen));
    let checked = oracle::check(&rooms, &sim, &world, &seen, rules, leaks);
    if checked.is_err() && trace() {
        for (key, room) in store.inner.rooms() {
            eprintln!("stored {key:?}: {room:#?}");
        }
    }
    let mut stats = checked?;
    stats.rooms = rooms.len();
    stats.deliveries = deliveries;
    stats.needs_repair = wrong_at_t0.len();
    for cause in wrong_at_t0.values() {
        *stats.repair_causes.entry(*cause).or_insert(0) += 1;
    }
    stats.dead_lettered = dead_lettered;
    stats.converged_after_secs = right_since.map_or(0, |d| d.as_secs());
    stats.digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for a in &lock(&world).applied {
            (&a.channel, a.version.get(), a.action, a.at_ms).hash(&mut h);
        }
        for t in sim.tasks() {
            (t.task_id, t.users, t.mix_mode).hash(&mut h);
        }
        seed.hash(&mut h);
        h.finish()
    };
    Ok(stats)
}

fn lock_seen(seen: &Arc<Mutex<Seen>>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

#[allow(clippy::too_many_arguments)]
fn spawn_invocation(
    containers: &[Arc<Svc>],
    world: &ports::Shared,
    seen: &Arc<Mutex<Seen>>,
    tx: &tokio::sync::mpsc::UnboundedSender<Done>,
    d: Delivery,
    rooms: &[workload::Room],
    grace: u64,
) {
    let (kill, kill_after) = {
        let mut w = lock(world);
        let p = w.knobs.kill;
        // Backend requests and PK requests are the backend's, not Lambda's: never killed.
        let killable = matches!(d.payload, Payload::Artc { .. } | Payload::Cdn { .. });
        let kill = killable && w.faults && p > 0.0 && w.rng.random_bool(p);
        let after = Duration::from_millis(w.rng.random_range(0..3_000));
        (kill, after)
    };
    let services = &containers[(d.request % CONTAINERS) as usize];
    let svc = services.clone();
    let tx2 = tx.clone();
    let invocation = format!("inv-{}", d.request);
    let room = &rooms[d.room];
    let channel = room.channel.clone();
    let key_of = |r: &workload::Room| costream_app::ports::RoomKey {
        app: services.config.app_id.clone(),
        channel: ChannelId::parse(r.channel.as_str()).expect("a generated channel id"),
    };
    let pair = rooms.iter().take(2).map(key_of).collect::<Vec<_>>();
    let key = key_of(room);
    let backend = match &d.payload {
        Payload::Backend { request } => Some(room.backend[*request].clone()),
        _ => None,
    };
    // Whether a PK request may go now: what costream knows of both rooms is settled.
    let settled = match &d.payload {
        Payload::Pk { .. } => {
            // In sim ms, as the driver's records.
            let now = svc.shell.clock.now_ms().saturating_sub(EPOCH_MS);
            oracle::settled(&lock_seen(seen), rooms, now, grace)
        }
        _ => true,
    };
    let world_for_kill = world.clone();
    let (world, seen) = (world.clone(), seen.clone());
    let retry = d.clone();
    let handle = tokio::spawn(async move {
        let work = async {
            match &d.payload {
                Payload::Artc { body, side, .. } => {
                    let out = svc.artc_body(body, *side, &invocation).await.map(|_| ());
                    oracle::deliver_hooks(&svc, &key, &world, &seen).await;
                    out
                }
                Payload::Cdn { live, secs } => {
                    let stream = format!("{channel}_main");
                    let time = secs.to_string();
                    let action = if *live { "publish" } else { "publish_done" };
                    let query = vec![
                        ("action", action),
                        ("id", stream.as_str()),
                        ("app", "push.example.com"),
                        ("appname", "live"),
                        ("time", time.as_str()),
                    ];
                    let req = CdnRequest {
                        query,
                        host: None,
                        ali_timestamp: None,
                        ali_signature: None,
                    };
                    let out = svc.cdn_ingest(&req, &invocation).await.map(|_| ());
                    oracle::deliver_hooks(&svc, &key, &world, &seen).await;
                    out
                }
                Payload::Backend { .. } => {
                    let Some((at_ms, request, _)) = &backend else {
                        return Ok(());
                    };
                    let at = Timestamp::from_secs(at_ms / 1000);
                    let event = oracle::backend_event(request, at)?;
                    let out = svc
                        .shell
                        .handle(&key, None, &[event], &invocation)
                        .await
                        .map(|_| ())
                        .map_err(costream_app::handlers::HandlerError::App);
                    oracle::deliver_hooks(&svc, &key, &world, &seen).await;
                    out
                }
                Payload::Pk { link, .. } => {
                    if !settled {
                        return Err(costream_app::handlers::HandlerError::NotFound(
                            "not settled yet".into(),
                        ));
                    }
                    let (own, peer) = (&pair[d.room], &pair[1 - d.room]);
                    lock(&world).fired.pk_requests += 1;
                    // In sim ms, as every record of `Seen`.
                    let started = svc.shell.clock.now_ms().saturating_sub(EPOCH_MS);
                    if !*link {
                        lock_seen(&seen).unlink_tries.push(started);
                    }
                    let outcome = if *link {
                        svc.shell.link_pk(own, peer, &invocation).await
                    } else {
                        svc.shell.unlink_pk(own, &invocation).await
                    };
                    let result = match outcome {
                        Ok(PkOutcome::Linked) => {
                            lock(&world).fired.pk_links += 1;
                            lock_seen(&seen)
                                .pk
                                .push((started, d.room, Some(1 - d.room)));
                            Ok(())
                        }
                        Ok(PkOutcome::Unlinked) => {
                            lock_seen(&seen).pk.push((started, d.room, None));
                            Ok(())
                        }
                        // An unlink answered "not in a PK" tells the backend there is none
                        // (its earlier try may have landed with its answer lost).
                        Ok(PkOutcome::Refused(PkRefusal::NotInPk(_))) if !*link => {
                            lock_seen(&seen).pk.push((started, d.room, None));
                            Ok(())
                        }
                        Ok(PkOutcome::Refused(_)) => Ok(()),
                        Err(e) => Err(costream_app::handlers::HandlerError::App(e)),
                    };
                    for k in [own, peer] {
                        oracle::deliver_hooks(&svc, k, &world, &seen).await;
                    }
                    result
                }
            }
        };
        let done = match tokio::time::timeout(FUNCTION_TIMEOUT, work).await {
            Ok(Ok(())) => Done::Ok(d),
            Ok(Err(costream_app::handlers::HandlerError::NotFound(_))) => {
                // An unsettled PK request: the backend tries again a second later (at most a
                // minute of tries).
                let mut d = d;
                let mut gave_up = false;
                if let Payload::Pk { tries, .. } = &mut d.payload {
                    *tries += 1;
                    gave_up = *tries > 60;
                }
                if gave_up {
                    // Nothing was sent: the backend gives the request up.
                    Done::Ok(d)
                } else {
                    Done::Retry(d)
                }
            }
            Ok(Err(e)) if !e.is_retryable() => panic!("non-retryable error {e}: {e:?}"),
            Ok(Err(e)) => {
                // A handler that gave its events up to contention (out of conflicts or time
                // with its events not committed) is a defect, not a transient (issue 21).
                if let costream_app::handlers::HandlerError::App(
                    costream_app::shell::AppError::Contention { .. },
                ) = &e
                {
                    lock(&world)
                        .violations
                        .push(format!("delivery #{} gave up: {e}", d.id));
                }
                let mut d = d;
                if let Payload::Pk { tries, .. } = &mut d.payload {
                    *tries = 0;
                }
                Done::Retry(d)
            }
            Err(_) => {
                let mut d = d;
                if let Payload::Pk { tries, .. } = &mut d.payload {
                    *tries = 0;
                }
                Done::Retry(d)
            }
        };
        let _ = tx2.send(done);
    });
    if kill {
        kill_later(&world_for_kill, tx, retry, kill_after, handle);
    }
}

/// Kills the invocation `handle` after `after` if it is still running (Lambda's timeout, or a
/// crash): what it wrote stays, and the sender retries it.
fn kill_later(
    world: &ports::Shared,
    tx: &tokio::sync::mpsc::UnboundedSender<Done>,
    retry: Delivery,
    after: Duration,
    handle: tokio::task::JoinHandle<()>,
) {
    let (tx, world) = (tx.clone(), world.clone());
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if !handle.is_finished() {
            handle.abort();
            lock(&world).fired.kills += 1;
            let _ = tx.send(Done::Retry(retry));
        }
    });
}
