//! Webhooks end to end: `costream serve --store dynamodb` as a real process (moto), posting to
//! a backend on a loopback port that refuses deliveries when told to. Every event arrives,
//! signed as documented; a refused one comes again with the same `id`; and events still
//! undelivered when serve stops are delivered by the next serve on the same table.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
mod common;

use common::fixture;
use serde_json::Value;

const SECRET: &str = "webhook-test-secret";

/// One delivery attempt as the backend saw it.
#[derive(Debug, Clone)]
struct Attempt {
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    accepted: bool,
}

/// The app's backend: records every attempt; refuses the next `refuse` ones, or all while
/// `down`.
#[derive(Default)]
struct Backend {
    attempts: Mutex<Vec<Attempt>>,
    refuse: AtomicUsize,
    down: AtomicBool,
}

impl Backend {
    /// The events accepted, once each (concurrent delivery rounds may send one twice: at
    /// least once), in the order first accepted.
    fn accepted(&self) -> Vec<Value> {
        let mut seen = std::collections::BTreeMap::new();
        let mut out = Vec::new();
        for a in self
            .attempts
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a.accepted)
        {
            let event: Value = serde_json::from_slice(&a.body).expect("json body");
            let id = event["id"].as_str().expect("id").to_owned();
            match seen.get(&id) {
                // A duplicate is the same event, byte for byte.
                Some(first) => assert_eq!(first, &a.body, "{id} came back different"),
                None => {
                    seen.insert(id, a.body.clone());
                    out.push(event);
                }
            }
        }
        out
    }

    fn all(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("lock").clone()
    }
}

async fn receive(
    State(backend): State<Arc<Backend>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let refuse = backend.down.load(Ordering::SeqCst)
        || backend
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    backend.attempts.lock().expect("lock").push(Attempt {
        timestamp: header("x-costream-timestamp"),
        signature: header("x-costream-signature"),
        body: body.to_vec(),
        accepted: !refuse,
    });
    if refuse {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _kill = self.0.kill();
        let _wait = self.0.wait();
    }
}

fn start_serve(port: u16, table: &str, hook_url: &str, log: &std::path::Path) -> Serve {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_costream"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", "dynamodb", "--create-table"])
        .env_clear()
        .env("COSTREAM_APP_ID", "9qb1abcd")
        .env("COSTREAM_ARTC_CALLBACK_SECRET", "s3cret-path")
        .env("COSTREAM_PUSH_DOMAIN", "push.example.com")
        .env("COSTREAM_NOTIFY_URL", hook_url)
        .env("COSTREAM_NOTIFY_SECRET", SECRET)
        .env("COSTREAM_TABLE", table)
        .env(
            "AWS_ENDPOINT_URL_DYNAMODB",
            integration_tests::dynamodb_endpoint(),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn costream serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "costream serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve(child)
}

/// Waits until the backend accepted events of these types (in this order), or fails.
async fn wait_for(backend: &Backend, types: &[&str], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = backend.accepted();
        let kinds: Vec<&str> = got.iter().filter_map(|e| e["type"].as_str()).collect();
        if kinds == types {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {types:?}, the backend accepted {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_at_least_once_across_refusals_and_a_restart() {
    let backend = Arc::new(Backend::default());
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!(
        "http://{}/hooks?token=t0k3n",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let table = format!(
        "costream-hooks-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{table}.log"));
    let http = reqwest::Client::new();
    let post = |name: &str| {
        http.post(format!("{base}/artc/s3cret-path"))
            .body(fixture(name))
            .send()
    };

    // The backend refuses the first three deliveries.
    backend.refuse.store(3, Ordering::SeqCst);
    let serve = start_serve(port, &table, &hook_url, &log);
    assert_eq!(
        post("01_host_publish.json").await.expect("post").status(),
        200
    );
    let cdn = http
        .get(format!(
            "{base}/cdn/ingest?action=publish&id=room-1001_main&app=push.example.com&appname=live&time=1704164650"
        ))
        .send()
        .await
        .expect("cdn");
    assert_eq!(cdn.status(), 200);
    let cdn: Value = cdn.json().await.expect("json");
    assert_eq!(cdn["channel_id"], "room-1001", "{cdn}");
    assert_eq!(
        post("02_guest_publish.json").await.expect("post").status(),
        200
    );
    assert_eq!(
        post("03_guest_leave.json").await.expect("post").status(),
        200
    );
    let got = wait_for(
        &backend,
        &[
            "stage.changed",
            "room.live",
            "stage.changed",
            "stage.changed",
        ],
        Duration::from_secs(30),
    )
    .await;
    let stages: Vec<&Value> = got
        .iter()
        .filter(|e| e["type"] == "stage.changed")
        .map(|e| &e["data"]["on_stage"])
        .collect();
    assert_eq!(
        stages,
        [
            &serde_json::json!(["host_u1"]),
            &serde_json::json!(["host_u1", "guest_u2"]),
            &serde_json::json!(["host_u1"]),
        ]
    );
    assert_eq!(got[2]["data"]["mix_mode"], 1);
    for e in &got {
        assert_eq!(e["room"], "room-1001");
        assert!(e["time"].as_u64().is_some_and(|t| t > 1_700_000_000), "{e}");
    }

    // Every attempt is signed over `ts.body`; the refused ones came again with the same id.
    let attempts = backend.all();
    for a in &attempts {
        let want = costream_app::handlers::Notifier::signature(
            SECRET,
            a.timestamp.parse().expect("a unix timestamp"),
            &a.body,
        );
        assert_eq!(
            a.signature,
            want,
            "signature of {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    let refused: Vec<String> = attempts
        .iter()
        .filter(|a| !a.accepted)
        .map(|a| {
            serde_json::from_slice::<Value>(&a.body).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    let accepted_ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    for id in &refused {
        assert!(
            accepted_ids.contains(&id.as_str()),
            "{id} was never accepted"
        );
    }
    let mut unique = accepted_ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        accepted_ids.len(),
        "each event accepted once: {accepted_ids:?}"
    );

    // The backend goes down; the host leaves; serve stops before it could deliver.
    backend.down.store(true, Ordering::SeqCst);
    assert_eq!(
        post("04_host_leave.json").await.expect("post").status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(serve);
    assert_eq!(
        backend.accepted().len(),
        4,
        "nothing new accepted while down"
    );
    // Back up, with a new serve on the same table: the room's end is delivered.
    backend.down.store(false, Ordering::SeqCst);
    let _serve = start_serve(port, &table, &hook_url, &log);
    let got = wait_for(
        &backend,
        &[
            "stage.changed",
            "room.live",
            "stage.changed",
            "stage.changed",
            "room.ended",
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got[4]["data"]["host"], "host_u1");
    // The query's token never shows in a body.
    assert!(backend
        .all()
        .iter()
        .all(|a| !String::from_utf8_lossy(&a.body).contains("t0k3n")));
}
