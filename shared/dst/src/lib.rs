//! Deterministic simulation of costream: the **real** handlers, shell, core, MPU adapter and
//! in-memory store (DynamoDB's conditional-write semantics) and the simulated Live API, under a
//! seeded scheduler with simulated time and injected faults, checked against an independent
//! reference model of who should be on stage.
//!
//! # Layout
//! - [`model`]: the reference model (the spec, ~100 lines, imports nothing from costream).
//! - [`workload`]: a truthful history per room and the ARTC/CDN callbacks that report it.
//! - [`ports`]: the gated store and Live API (fates, latencies), the clock, the recorder.
//! - [`run_seed`]: **start here** — one seed: workload → delivery plan → storm (faults on) →
//!   heal (faults off, every retry delivered, leases expire) → checks.
//!
//! # How a run works
//! One `current_thread` tokio runtime with paused time per seed: every sleep jumps, nothing real
//! waits, and the run is a pure function of the seed. Each ARTC callback is delivered 1–3 times
//! (duplicates), in any order, after 0 s to an hour, as two invocations (the `stream-published`
//! and `stream-unpublished` functions EventBridge fans it out to); an invocation may be killed
//! mid-call (its lease stays behind) or time out; a failed one is retried by its sender's policy
//! (Lambda: twice, after 60 and 120 s). Store and Live API calls meet seeded fates.
//!
//! # Checks
//! - Safety, all along: the Live API applies a room's requests in the order of the room versions
//!   that decided them (no stale layout lands after a newer one); the facts stay within
//!   `MAX_FACTS_JSON_BYTES`; at most one task per channel; after every store write, a room
//!   stored in a PK is linked back by its peer (never one room in a PK and the other out).
//! - PK: in half the seeds with two rooms or more, the app's backend links rooms 0 and 1 into
//!   a PK and ends it, 1–4 times at random moments, racing the callbacks and the faults. At the
//!   end a stored link must name the hosts the model says broadcast in both rooms (a PK never
//!   outlives a broadcast), and both tasks must show the PK picture (the room's host, the
//!   peer's host, the room's co-hosts); without a link, the room's own stage.
//! - Liveness, with no callback after the last one: the repair loop runs all along (every 60 s
//!   as deployed, or every 15 s as under `serve`, faults and all), and once the faults stop and
//!   the last delivery is done (`T0`), every room's task equals the model (mode, users, host
//!   first) after the longest a room can wait (its lease, or the backoff cap, one minute) plus
//!   one period: two periods on the deployed schedule. Rooms that were wrong at `T0` are
//!   counted (`repaired_by_loop`, by what was wrong). Events dead-lettered after Lambda's
//!   retries are redriven before `T0`, as the runbook says.
//! - The leak sweep: a costream-named task of a channel the table never saw is stopped; a task
//!   not named by costream is never touched; every running task's signed StreamURL is still
//!   valid at the end (re-signed at half its validity).
//!
//! A failing seed prints `COSTREAM_SIM_SEED=<n>` and replays exactly.

pub mod model;
pub mod ports;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_app::config::Config;
use costream_app::handlers::{CdnRequest, Services};
use costream_app::inbound::Side;
use costream_app::mpu::{AlibabaMpu, IngestSettings, MpuSettings};
use costream_app::ports::RoomKey;
use costream_app::repair::RepairConfig;
use costream_app::shell::{Shell, ShellConfig, WriteIds};
use costream_app::store::cached::Cached;
use costream_app::store::memory::InMemoryStore;
use costream_app::store::MAX_BACKOFF_MS;
use costream_core::{ChannelId, Shape, TaskId, Timestamp, UserId};
use costream_sim::SimulatedLive;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use model::Expect;
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

#[derive(Debug, Clone)]
enum Payload {
    Artc {
        body: Vec<u8>,
        side: Side,
    },
    Cdn {
        live: bool,
        secs: u64,
    },
    /// The app's backend links rooms 0 and 1 into a PK (from this delivery's room), or ends
    /// this room's PK.
    Pk {
        link: bool,
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
}

#[derive(Debug)]
enum Done {
    Ok,
    /// Failed or killed: the sender retries.
    Retry(Delivery),
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
    rt.block_on(run(seed))
        .map_err(|why| format!("COSTREAM_SIM_SEED={seed} cargo test -p costream-dst --test dst replay -- --nocapture\n{why}"))
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
        trace: Vec::new(),
        violations: Vec::new(),
    }));

    // What really happens.
    let room_count = workload_rng.random_range(1..=3);
    let rooms: Vec<workload::Room> = (0..room_count)
        .map(|i| {
            let t0 = EPOCH_MS / 1000 + workload_rng.random_range(0..60);
            let events = workload_rng.random_range(4..=14);
            workload::room(&mut workload_rng, i, t0, events)
        })
        .collect();

    // The delivery plan.
    let mut agenda = Agenda::default();
    let mut deliveries = 0;
    for (r, room) in rooms.iter().enumerate() {
        for (at_ms, body) in &room.callbacks {
            let copies = 1
                + usize::from(plan_rng.random_bool(knobs.duplicates))
                + usize::from(plan_rng.random_bool(knobs.duplicates / 2.0));
            for _ in 0..copies {
                let delay = if plan_rng.random_bool(knobs.long_delays) {
                    plan_rng.random_range(60_000..3_600_000)
                } else {
                    plan_rng.random_range(0..3_000)
                };
                let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
                for side in [Side::Published, Side::Unpublished] {
                    deliveries += 1;
                    agenda.push(
                        at_ms - EPOCH_MS + delay,
                        Delivery {
                            room: r,
                            payload: Payload::Artc {
                                body: body.clone(),
                                side,
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
    }
    // In half the seeds with two rooms or more, the backend links rooms 0 and 1 into a PK and
    // ends it, a few times, at random moments of the storm: racing the callbacks, the faults
    // and each other (its own stream, so the other plans stay as they were).
    let mut pk_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0070_6b70_6b70);
    if rooms.len() >= 2 && pk_rng.random_bool(0.5) {
        let last = agenda.heap.iter().map(|r| r.0 .0).max().unwrap_or(0);
        for _ in 0..pk_rng.random_range(1..=4) {
            deliveries += 1;
            agenda.push(
                pk_rng.random_range(0..=last.max(1)),
                Delivery {
                    room: pk_rng.random_range(0..2),
                    payload: Payload::Pk {
                        link: pk_rng.random_bool(0.65),
                    },
                    attempt: 0,
                    id: 0,
                    request: 0,
                },
            );
        }
    }
    let storm_end = agenda.heap.iter().map(|r| r.0 .0).max().unwrap_or(0);
    // Alibaba stops a task by itself now and then (idle timeout while the camera is off).
    let idle_stops: Vec<u64> = (0..knobs.idle_stops)
        .map(|_| plan_rng.random_range(0..=storm_end.max(1)))
        .collect();

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
                    mpu: Recorder { inner: mpu.clone() },
                    clock: clock.clone(),
                    decision: config.decision.clone(),
                    config: ShellConfig {
                        resign_after_ms: knobs.url_validity_secs.map(|v| v * 1000 / 2),
                        // Deterministic write ids: one instance per container.
                        writes: WriteIds::new(format!("c{c}")),
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

    // The repair loop, all along: a pass every period, from a random phase.
    let period = Duration::from_millis(knobs.repair_period_ms);
    let phase = Duration::from_millis(plan_rng.random_range(0..knobs.repair_period_ms));
    let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let repair_loop = {
        let svc = services.clone();
        let passes = passes.clone();
        tokio::spawn(async move {
            let config = RepairConfig {
                deadline: Duration::from_secs(8),
                ..RepairConfig::default()
            };
            let mut next = tokio::time::Instant::now() + phase;
            loop {
                tokio::time::sleep_until(next).await;
                let n = passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
                    eprintln!("repair pass {n} starts at {:?}", origin.elapsed());
                }
                let app = svc.config.app_id.clone();
                let report = svc
                    .shell
                    .repair_pass(&app, &format!("repair-{n}"), &config)
                    .await;
                if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
                    eprintln!("repair pass {n}: {report:?}");
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
    let mut running = 0usize;
    let mut dead_letters: Vec<Delivery> = Vec::new();
    let mut dead_lettered = 0;
    let mut idle = idle_stops.into_iter().collect::<BTreeSet<u64>>();
    let mut faults_off = false;
    loop {
        let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !faults_off && now > storm_end {
            faults_off = true;
            lock(&world).faults = false;
        }
        // Idle stops due now: Alibaba ends a running task of some room.
        while let Some(&at) = idle.first().filter(|at| **at <= now) {
            idle.remove(&at);
            let tasks = sim.tasks();
            let tasks: Vec<_> = tasks
                .into_iter()
                .filter(|t| rooms.iter().any(|r| r.channel == t.channel_id))
                .collect();
            if !tasks.is_empty() {
                let t = &tasks[lock(&world).rng.random_range(0..tasks.len())];
                sim.end_task(&t.app_id, &t.task_id);
                lock(&world).fired.idle_stops += 1;
            }
        }
        let next = agenda.next_due();
        let wake = match (next, idle.first()) {
            (Some(a), Some(b)) => Some(a.min(*b)),
            (a, b) => a.or(b.copied()),
        };
        if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
            eprintln!("t={now} running={running} next={next:?} wake={wake:?} idle={idle:?}");
        }
        tokio::select! {
            biased;
            Some(done) = rx.recv() => {
                running -= 1;
                if let Done::Retry(mut d) = done {
                    let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
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
                        // A synchronous CDN request nobody redelivers: what it committed
                        // stays, what it did not finish is the repair loop's. The same for the
                        // backend's PK request (its 5xx is the backend's to retry or not).
                        (Payload::Cdn { .. } | Payload::Pk { .. }, _) => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(origin + Duration::from_millis(wake.unwrap_or(0))), if wake.is_some() => {
                let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
                if agenda.next_due().is_some_and(|due| due <= now) {
                    let Some((_, d)) = agenda.pop() else { continue };
                    running += 1;
                    spawn_invocation(&containers, &world, &tx, d, &rooms);
                }
            }
            else => {
                if running == 0 {
                    break;
                }
            }
        }
        if agenda.is_empty() && idle.is_empty() && running == 0 {
            break;
        }
    }
    // The storm is over (the last delivery may have come exactly at its end).
    lock(&world).faults = false;
    // The operator redrives the dead-letter queue.
    for d in std::mem::take(&mut dead_letters) {
        spawn_invocation(&containers, &world, &tx, d, &rooms);
        running += 1;
    }
    while running > 0 {
        match rx.recv().await {
            Some(Done::Ok) => running -= 1,
            Some(Done::Retry(d)) => {
                // Faults are off: a redriven event can only fail by a bug.
                return Err(format!("a redriven delivery failed: {d:?}"));
            }
            None => break,
        }
    }

    // T0: faults off, the last callback done. From here only the repair loop acts.
    let t0 = tokio::time::Instant::now();
    if std::env::var_os("COSTREAM_SIM_TRACE").is_some() {
        eprintln!("T0 at {:?}", origin.elapsed());
    }
    let mut wrong_at_t0: BTreeMap<usize, &'static str> = BTreeMap::new();
    let max_panes = services.config.decision.max_panes;
    let grace = services.config.decision.end_grace_secs;
    let stored = services.shell.store.inner().inner.rooms();
    for (r, room) in rooms.iter().enumerate() {
        let want = wanted(rooms.as_slice(), r, &stored, max_panes, grace).unwrap_or(Expect::Off);
        let have = seen(&sim, &room.channel);
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
    // The longest a room can wait for the loop (a lease kept after a call in doubt, 46 s, or
    // the backoff cap, 30 s), plus one period, plus 15 s for the pass to converge the room (a
    // Stop, the StreamURL's 10 s hold, a Start): 121 s on the deployed one-minute schedule,
    // about two periods (the runs measure at most 105 s).
    let bound = Duration::from_millis((lease_ms + 1_000).max(MAX_BACKOFF_MS)) + period;
    let slack = Duration::from_secs(15);
    // Watch until one period past the deadline: every room right by `bound + slack` (a pass
    // that started within the bound has finished), and still right after; every signed
    // StreamURL unexpired from then on.
    let step = Duration::from_secs(5);
    let mut right_since: Option<Duration> = None;
    let mut leaks = Vec::new();
    while t0.elapsed() < bound + slack + period {
        tokio::time::sleep(step).await;
        if all_right(&rooms, &sim, &services, max_panes) {
            right_since.get_or_insert(t0.elapsed());
        } else {
            right_since = None;
        }
        if t0.elapsed() >= bound + slack && knobs.url_validity_secs.is_some() {
            leaks.extend(expired_urls(&sim, &rooms));
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

    let mut stats = check(seed, &rooms, &sim, &world, &services, deliveries, leaks).await?;
    stats.needs_repair = wrong_at_t0.len();
    for cause in wrong_at_t0.values() {
        *stats.repair_causes.entry(*cause).or_insert(0) += 1;
    }
    stats.dead_lettered = dead_lettered;
    stats.converged_after_secs = right_since.map_or(0, |d| d.as_secs());
    Ok(stats)
}

/// The running tasks of the rooms whose signed StreamURL has expired.
fn expired_urls(sim: &SimulatedLive, rooms: &[workload::Room]) -> Vec<String> {
    let now_secs = sim.now_ms() / 1000;
    sim.tasks()
        .into_iter()
        .filter(|t| rooms.iter().any(|r| r.channel == t.channel_id))
        .filter_map(|t| {
            let exp = t
                .stream_url
                .as_deref()
                .and_then(|u| u.split("auth_key=").nth(1))
                .and_then(|a| a.split('-').next())
                .and_then(|e| e.parse::<u64>().ok());
            exp.is_none_or(|e| e <= now_secs).then(|| {
                format!(
                    "{}: the StreamURL's signature expired (expires {exp:?}, now {now_secs})",
                    t.task_id
                )
            })
        })
        .collect()
}

/// Whether every room's tasks are what the model says.
fn all_right(
    rooms: &[workload::Room],
    sim: &SimulatedLive,
    services: &Svc,
    max_panes: usize,
) -> bool {
    let stored = services.shell.store.inner().inner.rooms();
    rooms.iter().enumerate().all(|(r, room)| {
        let Ok(want) = wanted(
            rooms,
            r,
            &stored,
            max_panes,
            services.config.decision.end_grace_secs,
        ) else {
            return false;
        };
        let have = seen(sim, &room.channel);
        match &want {
            model::Expect::Off => have.is_empty(),
            w => have.len() == 1 && &have[0] == w,
        }
    })
}

/// What room `r`'s task should be: the model's stage, or, while the room is in a PK (after the
/// storm the stored link is settled: whether a racing link request took is not something the
/// true history says), the PK picture — the room's host as the model says, the peer's host as
/// the model says for the peer room, then the room's own co-hosts. `Err` when the stored link
/// disagrees with the model (a PK that outlived either broadcast, or names other hosts).
fn wanted(
    rooms: &[workload::Room],
    r: usize,
    stored: &[(
        costream_app::ports::RoomKey,
        costream_app::store::StoredRoom,
    )],
    max_panes: usize,
    grace: u64,
) -> Result<Expect, String> {
    let want = model::expected(&rooms[r].history, max_panes, grace);
    let channel = &rooms[r].channel;
    let Some(link) = stored
        .iter()
        .find(|(k, _)| k.channel.as_str() == channel)
        .and_then(|(_, room)| room.facts.pk_link())
    else {
        return Ok(want);
    };
    let host_of = |e: &Expect| match e {
        Expect::Off => None,
        Expect::Single(h) => Some(h.clone()),
        Expect::Mixed(users) => users.first().cloned(),
    };
    let peer = rooms
        .iter()
        .find(|room| room.channel == link.peer.as_str())
        .ok_or_else(|| format!("{channel} is in a PK with an unknown room {}", link.peer))?;
    let peer_want = model::expected(&peer.history, max_panes, grace);
    if host_of(&want).as_deref() != Some(link.host.as_str())
        || host_of(&peer_want).as_deref() != Some(link.peer_host.as_str())
    {
        return Err(format!(
            "{channel}: the PK with {} ({} and {}) outlived a broadcast: the model says {want:?} and {peer_want:?}",
            link.peer, link.host, link.peer_host
        ));
    }
    let mut users = vec![link.host.to_string(), link.peer_host.to_string()];
    if let Expect::Mixed(stage) = &want {
        users.extend(
            stage
                .iter()
                .skip(1)
                .take(costream_core::MAX_PANES - 2)
                .cloned(),
        );
    }
    Ok(Expect::Mixed(users))
}

fn spawn_invocation(
    containers: &[Arc<Svc>],
    world: &ports::Shared,
    tx: &tokio::sync::mpsc::UnboundedSender<Done>,
    d: Delivery,
    rooms: &[workload::Room],
) {
    let (kill, kill_after) = {
        let mut w = lock(world);
        let p = w.knobs.kill;
        let kill = w.faults && p > 0.0 && w.rng.random_bool(p);
        let after = Duration::from_millis(w.rng.random_range(0..3_000));
        (kill, after)
    };
    let services = &containers[(d.request % CONTAINERS) as usize];
    let svc = services.clone();
    let tx2 = tx.clone();
    let invocation = format!("inv-{}", d.request);
    let channel = rooms[d.room].channel.clone();
    let pair = rooms
        .iter()
        .take(2)
        .map(|r| costream_app::ports::RoomKey {
            app: services.config.app_id.clone(),
            channel: ChannelId::parse(r.channel.as_str()).expect("a generated channel id"),
        })
        .collect::<Vec<_>>();
    let world_pk = world.clone();
    let retry = d.clone();
    let handle = tokio::spawn(async move {
        let work = async {
            match &d.payload {
                Payload::Artc { body, side } => {
                    svc.artc_body(body, *side, &invocation).await.map(|_| ())
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
                    svc.cdn_ingest(&req, &invocation).await.map(|_| ())
                }
                Payload::Pk { link } => {
                    let (own, peer) = (&pair[d.room], &pair[1 - d.room]);
                    lock(&world_pk).fired.pk_requests += 1;
                    let outcome = if *link {
                        svc.shell.link_pk(own, peer, &invocation).await
                    } else {
                        svc.shell.unlink_pk(own, &invocation).await
                    };
                    match outcome {
                        Ok(costream_app::shell::PkOutcome::Linked) => {
                            lock(&world_pk).fired.pk_links += 1;
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(costream_app::handlers::HandlerError::App(e)),
                    }
                }
            }
        };
        let done = match tokio::time::timeout(FUNCTION_TIMEOUT, work).await {
            Ok(Ok(())) => Done::Ok,
            Ok(Err(e)) if !e.is_retryable() => panic!("non-retryable error {e}: {e:?}"),
            Ok(Err(_)) | Err(_) => Done::Retry(d),
        };
        let _ = tx2.send(done);
    });
    if kill {
        let tx3 = tx.clone();
        let world = world.clone();
        tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            if !handle.is_finished() {
                handle.abort();
                lock(&world).fired.kills += 1;
                let _ = tx3.send(Done::Retry(retry));
            }
        });
    }
}

/// What the Live API runs for `channel`, as the model states it.
fn seen(sim: &SimulatedLive, channel: &str) -> Vec<Expect> {
    sim.tasks()
        .into_iter()
        .filter(|t| t.channel_id == channel)
        .map(|t| {
            if t.mix_mode == 0 {
                Expect::Single(t.users.first().cloned().unwrap_or_default())
            } else {
                Expect::Mixed(t.users.clone())
            }
        })
        .collect()
}

async fn check(
    seed: u64,
    rooms: &[workload::Room],
    sim: &SimulatedLive,
    world: &ports::Shared,
    services: &Svc,
    deliveries: u64,
    leaks: Vec<String>,
) -> Result<Stats, String> {
    let mut problems = leaks;
    let w = lock(world);
    problems.extend(w.violations.iter().cloned());
    // No stale layout applied after a newer one.
    for room in rooms {
        let mut last: Option<(costream_core::Version, &'static str)> = None;
        for a in w.applied.iter().filter(|a| a.channel == room.channel) {
            if let Some((v, action)) = last {
                if a.version < v {
                    problems.push(format!(
                        "{}: {} from version {} applied at {} ms after {action} from version {v}",
                        room.channel, a.action, a.version, a.at_ms
                    ));
                }
            }
            last = Some((a.version, a.action));
        }
    }
    let fired = w.fired.clone();
    drop(w);
    let max_panes = services.config.decision.max_panes;
    let stored = services.shell.store.inner().inner.rooms();
    for (r, room) in rooms.iter().enumerate() {
        let want = match wanted(
            rooms,
            r,
            &stored,
            max_panes,
            services.config.decision.end_grace_secs,
        ) {
            Ok(want) => want,
            Err(why) => {
                problems.push(why);
                continue;
            }
        };
        let have = seen(sim, &room.channel);
        if have.len() > 1 {
            problems.push(format!("{}: {} tasks", room.channel, have.len()));
        }
        let right = match &want {
            Expect::Off => have.is_empty(),
            w => have.len() == 1 && &have[0] == w,
        };
        if !right {
            {
                let key = costream_app::ports::RoomKey {
                    app: services.config.app_id.clone(),
                    channel: costream_core::ChannelId::parse(room.channel.as_str())
                        .map_err(|e| e.to_string())?,
                };
                let stored = services.shell.store.inner().inner.rooms();
                let stored = stored.iter().find(|(k, _)| *k == key).map(|(_, r)| r);
                problems.push(format!(
                    "{}: model says {want:?}, the Live API runs {have:?}\n  history: {:?}\n  record: {:?}\n  lease: {:?}",
                    room.channel,
                    room.history,
                    stored.map(|s| &s.record),
                    stored.map(|s| &s.lease),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!("{}\n{:?}", problems.join("\n"), lock(world).knobs));
    }
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for a in &lock(world).applied {
            (&a.channel, a.version.get(), a.action, a.at_ms).hash(&mut h);
        }
        for t in sim.tasks() {
            (t.task_id, t.users, t.mix_mode).hash(&mut h);
        }
        seed.hash(&mut h);
        h.finish()
    };
    Ok(Stats {
        rooms: rooms.len(),
        deliveries,
        needs_repair: 0,
        repair_causes: BTreeMap::new(),
        dead_lettered: 0,
        converged_after_secs: 0,
        fired,
        digest,
    })
}
