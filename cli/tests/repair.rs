//! The repair loop end to end: `costream serve --store dynamodb --mpu alibaba` as a real
//! process, against moto and the signature-checking simulated Live API over HTTP, with a fault
//! layer in front of the Live API that refuses calls (503) and answers some too late (after
//! applying them). A storm of callbacks across many rooms is sent once — no retries, no
//! redelivery — and every room must be right soon after, with no further callback: only the
//! in-process repair loop can do that. Then a task is ended behind costream's back (an idle
//! stop) and the loop starts it again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use costream_alibaba::Credentials;
use costream_sim::SimulatedLive;
use secrecy::SecretString;
use serde_json::json;

const AK_ID: &str = "storm-key-id";
const AK_SECRET: &str = "storm-key-secret";
const SECRET_PATH: &str = "storm-path";
const REPAIR_INTERVAL_SECS: u64 = 5;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _kill = self.0.kill();
        let _wait = self.0.wait();
    }
}

/// How often the fault layer refused or delayed a call.
#[derive(Default)]
struct Faults {
    refused: AtomicU64,
    late: AtomicU64,
    calls: AtomicU64,
}

/// The simulated Live API on 127.0.0.1 behind a seeded fault layer: of the MPU calls (Start,
/// Update, Stop, ListRtcMPUTaskDetail), `refuse` are refused without reaching the simulator —
/// half with 503 ServiceUnavailable (the client retries those), half with a quota refusal the
/// client does not retry — and `late` are applied and answered after the client's 3 s attempt
/// timeout.
struct FaultyLive {
    endpoint: String,
    sim: Arc<SimulatedLive>,
    faults: Arc<Faults>,
    on: Arc<std::sync::atomic::AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultyLive {
    fn start(seed: u64, refuse: f64, late: f64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = Arc::new(SimulatedLive::default());
        let faults = Arc::new(Faults::default());
        let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let rng = Arc::new(Mutex::new(seed.max(1)));
        let (f, switch) = (faults.clone(), on.clone());
        let credentials = Credentials::new(AK_ID, SecretString::from(AK_SECRET));
        let router = costream_sim::http::router(sim.clone(), credentials).layer(
            axum::middleware::from_fn(move |request: Request, next: Next| {
                let (f, rng, switch) = (f.clone(), rng.clone(), switch.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
                    let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
                    let param = |name: &str| {
                        url::form_urlencoded::parse(&query)
                            .chain(url::form_urlencoded::parse(&bytes))
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    let action = param("Action");
                    // One room is refused for quota all through the storm, so at least one
                    // room is certainly wrong when the callbacks end.
                    let quota_room =
                        param("ChannelId") == "storm-0" || param("TaskId").starts_with("storm-0_");
                    let mpu = action.contains("MPUTask");
                    // xorshift64: a seeded, dependency-free draw in [0, 1).
                    let draw = {
                        let mut x = rng.lock().expect("rng");
                        *x ^= *x << 13;
                        *x ^= *x >> 7;
                        *x ^= *x << 17;
                        (*x >> 11) as f64 / (1u64 << 53) as f64
                    };
                    let faulty = mpu && switch.load(Ordering::SeqCst);
                    let call = if mpu {
                        f.calls.fetch_add(1, Ordering::SeqCst) + 1
                    } else {
                        0
                    };
                    if faulty && (draw < refuse || quota_room) {
                        f.refused.fetch_add(1, Ordering::SeqCst);
                        let (status, code, message) = if draw < refuse / 2.0 && !quota_room {
                            (503, "ServiceUnavailable", "injected: try again later")
                        } else {
                            (
                                400,
                                "InvalidParam",
                                "injected: the number of mixing tasks reached the quota limit",
                            )
                        };
                        let body = json!({"RequestId": "FAULT", "HostId": "live.aliyuncs.com",
                            "Code": code, "Message": message});
                        let status = axum::http::StatusCode::from_u16(status).expect("status");
                        return (status, axum::Json(body)).into_response();
                    }
                    let response = next
                        .run(Request::from_parts(parts, Body::from(bytes)))
                        .await;
                    // At a 3% rate a run of 100+ calls may draw no late answer (about one run
                    // in 50): the 20th call is late if none was, so every run has both faults.
                    let forced = call >= 20 && f.late.load(Ordering::SeqCst) == 0;
                    if faulty && (draw < refuse + late || forced) {
                        f.late.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(4)).await;
                    }
                    response
                }
            }),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(costream_sim::http::serve(listener, router));
        FaultyLive {
            endpoint: format!("http://{addr}/"),
            sim,
            faults,
            on,
            _runtime: runtime,
        }
    }
}

/// The `costream` binary with the deployment's environment: the table on moto, the faulty
/// Live API.
fn costream(live: &FaultyLive, table: &str) -> Command {
    let endpoint = integration_tests::dynamodb_endpoint();
    let mut command = Command::new(env!("CARGO_BIN_EXE_costream"));
    command
        .env_clear()
        .env("COSTREAM_APP_ID", "stormapp")
        .env("COSTREAM_ARTC_CALLBACK_SECRET", SECRET_PATH)
        .env("COSTREAM_PUSH_DOMAIN", "push.example.com")
        .env("COSTREAM_PLAY_DOMAIN", "play.example.com")
        .env("COSTREAM_PUSH_AUTH_KEY", "storm-push-key")
        .env("COSTREAM_PLAY_AUTH_KEY", "storm-play-key")
        .env("COSTREAM_NOTIFY_SECRET", "storm-backend-secret")
        .env(
            "COSTREAM_REPAIR_INTERVAL_SECS",
            REPAIR_INTERVAL_SECS.to_string(),
        )
        .env("COSTREAM_TABLE", table)
        .env("ALIBABA_CLOUD_LIVE_ENDPOINT", &live.endpoint)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "error");
    command
}

fn start_serve(live: &FaultyLive, table: &str) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = costream(live, table)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", "dynamodb", "--create-table", "--mpu", "alibaba"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn costream serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "costream serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), format!("http://127.0.0.1:{port}"))
}

/// Each room's end state: `None` (no task) or (MixMode, the users shown).
type Expected = BTreeMap<String, Option<(u8, BTreeSet<String>)>>;

fn callback(msg: &str, channel: &str, user: &str, tag: &str, at: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "MsgId": msg,
        "MsgTimestamp": at,
        "SubscribeID": "sub-storm",
        "AppId": "stormapp",
        "ChannelID": channel,
        "Contents": [{"Event": "UserEvent", "UserEvent": {
            "UserId": user, "EventTag": tag, "SessionId": format!("sess-{user}"),
            "Timestamp": at, "Role": 1, "TerminalType": 1}}],
    }))
    .expect("json")
}

/// Each room's callbacks and what it must end as: `None` (no task) or (MixMode, users).
fn storm(rooms: usize, t0: u64) -> (Vec<Vec<u8>>, Expected) {
    let mut bodies = Vec::new();
    let mut expected = BTreeMap::new();
    for r in 0..rooms {
        let channel = format!("storm-{r}");
        let mut n = 0;
        let mut send = |user: &str, tag: &str, at: u64| {
            n += 1;
            bodies.push(callback(
                &format!("{channel}-m{n}"),
                &channel,
                user,
                tag,
                at,
            ));
        };
        send("host", "Publish", t0);
        let guests = r % 4;
        let mut on_stage = BTreeSet::from(["host".to_owned()]);
        for g in 0..guests {
            let guest = format!("guest{g}");
            send(&guest, "Publish", t0 + 1 + g as u64);
            if g % 2 == 1 {
                send(&guest, "Leave", t0 + 10 + g as u64);
            } else {
                on_stage.insert(guest);
            }
        }
        let want = if r % 5 == 4 {
            send("host", "Leave", t0 + 20);
            None
        } else {
            Some((u8::from(on_stage.len() > 1), on_stage))
        };
        expected.insert(channel, want);
    }
    (bodies, expected)
}

fn wrong_rooms(sim: &SimulatedLive, expected: &Expected) -> Vec<String> {
    let tasks = sim.tasks();
    expected
        .iter()
        .filter(|(channel, want)| {
            let have: Vec<(u8, BTreeSet<String>)> = tasks
                .iter()
                .filter(|t| &t.channel_id == *channel)
                .map(|t| (t.mix_mode, t.users.iter().cloned().collect()))
                .collect();
            match want {
                None => !have.is_empty(),
                Some(w) => have.len() != 1 || &have[0] != w,
            }
        })
        .map(|(c, _)| c.clone())
        .collect()
}

/// Polls until every room is right; the time it took, or the rooms still wrong.
async fn until_right(
    sim: &SimulatedLive,
    expected: &Expected,
    limit: Duration,
) -> Result<Duration, Vec<String>> {
    let begun = Instant::now();
    loop {
        let wrong = wrong_rooms(sim, expected);
        if wrong.is_empty() {
            return Ok(begun.elapsed());
        }
        if begun.elapsed() > limit {
            return Err(wrong);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn a_storm_against_a_refusing_live_api_converges_with_no_further_callback() {
    let seed = std::env::var("COSTREAM_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("storm seed: COSTREAM_STORM_SEED={seed}");
    let live = FaultyLive::start(seed, 0.16, 0.03);
    let table = format!("costream-storm-{seed}");
    let (server, base) = start_serve(&live, &table);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(storm_and_repair(&live, &base, seed));

    // The operators' view: a room's decisions, from the running server (signed route) and from
    // the table.
    let history = |extra: &[&str]| -> serde_json::Value {
        let out = costream(&live, &table)
            .args(["history", "storm-1"])
            .args(extra)
            .output()
            .expect("costream history");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("history JSON")
    };
    let served = history(&["--server", &base]);
    let entries = served["entries"].as_array().expect("entries");
    assert!(!entries.is_empty(), "{served}");
    let last = entries.last().expect("an entry");
    assert!(
        last["trigger"]
            .as_str()
            .expect("trigger")
            .contains("missing"),
        "{last}"
    );
    assert_eq!(history(&[]), served, "the table says the same");

    // With the server stopped, `costream repair --once` is the loop: it restarts a task Alibaba
    // ended and stops a leaked one, and reports it.
    drop(server);
    let victim = live
        .sim
        .tasks()
        .into_iter()
        .find(|t| t.channel_id == "storm-2")
        .expect("storm-2 is live");
    live.sim
        .end_task(&victim.app_id, &victim.task_id)
        .expect("ended");
    let out = costream(&live, &table)
        .args(["repair", "--once"])
        .output()
        .expect("costream repair --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    assert_eq!(report["sweep"]["restarted"], 1, "{report}");
    assert!(
        live.sim.tasks().iter().any(|t| t.channel_id == "storm-2"),
        "{report}"
    );
}

async fn storm_and_repair(live: &FaultyLive, base: &str, seed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (mut bodies, expected) = storm(40, now - 60);
    // Every callback once or twice, in a shuffled order, 16 at a time, never retried.
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let dupes: Vec<Vec<u8>> = bodies.iter().filter(|_| next() % 4 == 0).cloned().collect();
    bodies.extend(dupes);
    for i in (1..bodies.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        bodies.swap(i, j);
    }
    let http = reqwest::Client::new();
    let url = format!("{base}/artc/{SECRET_PATH}");
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u32>::new()));
    let chunks: Vec<Vec<Vec<u8>>> = bodies.chunks(16).map(<[_]>::to_vec).collect();
    for chunk in chunks {
        let sends = chunk.into_iter().map(|body| {
            let (http, url, statuses) = (http.clone(), url.clone(), statuses.clone());
            tokio::spawn(async move {
                let status = http
                    .post(&url)
                    .body(body)
                    .send()
                    .await
                    .expect("post")
                    .status();
                *statuses
                    .lock()
                    .expect("statuses")
                    .entry(status.as_u16())
                    .or_default() += 1;
            })
        });
        for send in sends.collect::<Vec<_>>() {
            send.await.expect("send");
        }
    }
    let wrong_after_storm = wrong_rooms(&live.sim, &expected);
    // The faults stop with the last callback; from here on only the repair loop acts.
    live.on.store(false, Ordering::SeqCst);
    let took = until_right(&live.sim, &expected, Duration::from_secs(60)).await;
    let (refused, late, calls) = (
        live.faults.refused.load(Ordering::SeqCst),
        live.faults.late.load(Ordering::SeqCst),
        live.faults.calls.load(Ordering::SeqCst),
    );
    eprintln!(
        "{} callbacks ({:?} by status), {calls} Live API calls, {refused} refused, {late} late; \
         {} of 40 rooms wrong after the storm; all right {:?} after the last callback",
        bodies.len(),
        statuses.lock().expect("statuses"),
        wrong_after_storm.len(),
        took
    );
    let took = took.unwrap_or_else(|wrong| panic!("rooms still wrong after 60 s: {wrong:?}"));
    assert!(refused > 0 && late > 0, "the faults fired");
    assert!(
        wrong_after_storm.contains(&"storm-0".to_owned()),
        "the room refused for quota was wrong after the storm: {wrong_after_storm:?}"
    );
    assert!(took <= Duration::from_secs(60));

    // A task stopped behind costream's back (MaxIdleTime while the host's camera was off) is
    // started again by the loop's sweep, with no callback.
    let victim = live
        .sim
        .tasks()
        .into_iter()
        .find(|t| t.channel_id == "storm-1")
        .expect("storm-1 is live");
    live.sim
        .end_task(&victim.app_id, &victim.task_id)
        .expect("ended");
    assert_eq!(wrong_rooms(&live.sim, &expected), ["storm-1"]);
    let took = until_right(
        &live.sim,
        &expected,
        Duration::from_secs(4 * REPAIR_INTERVAL_SECS),
    )
    .await
    .unwrap_or_else(|wrong| panic!("not restarted: {wrong:?}"));
    eprintln!("the idle-stopped task was started again after {took:?}");
}
