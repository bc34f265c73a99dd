//! Room settings that change what the task pushes and shows, end to end: `costream serve --mpu
//! alibaba` as a real process against the signature-checking simulated Live API over HTTP (every
//! request's signature is verified, and the spec's parameter rules are checked). Each test reads
//! back the exact parameters the Live API received.
//!
//! - restreaming targets (`extra_outputs`): `MultiStreamURL` with our CDN URL and each target;
//!   adding and removing targets on a live room is one Update each, never a Stop;
//! - screen share (`screen_share`): the sharer's `shareScreen` track is the main pane;
//! - camera-less co-hosts (`hide_camera_off` and `CameraClose` callbacks): heard, no pane;
//! - cross-room PK (`PUT`/`DELETE /rooms/{channelId}/pk`): each room's task shows the peer's host
//!   from the peer's channel, and the PK ends in both rooms when either host leaves.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use costream_alibaba::Credentials;
use costream_sim::{SimTask, SimulatedLive};
use secrecy::SecretString;
use serde_json::{json, Value};

const AK_ID: &str = "shapes-key-id";
const AK_SECRET: &str = "shapes-key-secret";
const BACKEND_SECRET: &str = "shapes-backend-secret";

/// The simulated Live API on a loopback port, checking signatures with the test's AccessKey.
struct Live {
    endpoint: String,
    sim: Arc<SimulatedLive>,
}

impl Live {
    /// Serves the simulator on the test's runtime until the test ends.
    async fn start() -> Live {
        let sim = Arc::new(SimulatedLive::default());
        let credentials = Credentials::new(AK_ID, SecretString::from(AK_SECRET));
        let router = costream_sim::http::router(sim.clone(), credentials);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(costream_sim::http::serve(listener, router));
        Live {
            endpoint: format!("http://{addr}/"),
            sim,
        }
    }

    /// The one task of the test's room.
    fn task(&self) -> SimTask {
        let tasks = self.sim.tasks();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        tasks.into_iter().next().expect("one task")
    }

    /// How many calls of `action` the simulator answered successfully.
    fn count(&self, action: &str) -> usize {
        self.sim
            .calls()
            .iter()
            .filter(|c| c.action == action && c.code == "OK")
            .count()
    }

    /// Every call the simulator refused, as `action code`.
    fn refusals(&self) -> Vec<String> {
        self.sim
            .calls()
            .iter()
            .filter(|c| c.code != "OK")
            .map(|c| format!("{} {}", c.action, c.code))
            .collect()
    }
}

struct Serve {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _kill = self.child.kill();
        let _wait = self.child.wait();
    }
}

impl Serve {
    fn start(live: &Live) -> Serve {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_costream"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--mpu", "alibaba"])
            .env_clear()
            .env("COSTREAM_APP_ID", "9qb1abcd")
            .env("COSTREAM_ARTC_CALLBACK_SECRET", "s3cret-path")
            .env("COSTREAM_PUSH_DOMAIN", "push.example.com")
            .env("COSTREAM_PLAY_DOMAIN", "play.example.com")
            .env("COSTREAM_PUSH_AUTH_KEY", "shapes-push-key")
            .env("COSTREAM_PLAY_AUTH_KEY", "shapes-play-key")
            .env("COSTREAM_NOTIFY_SECRET", BACKEND_SECRET)
            .env("ALIBABA_CLOUD_LIVE_ENDPOINT", &live.endpoint)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn costream serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "costream serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn callback(&self, body: Value) {
        let answer = self
            .http
            .post(format!("{}/artc/s3cret-path", self.base))
            .body(body.to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    }

    /// `PUT /rooms/room-1001/settings`, signed by the backend; the status and answer.
    async fn settings(&self, body: &str, ts: u64) -> (u16, Value) {
        self.backend("PUT", "/rooms/room-1001/settings", body, ts)
            .await
    }

    /// A request from the app's backend, signed (`ts` 0: unsigned); the status and answer.
    async fn backend(&self, method: &str, path: &str, body: &str, ts: u64) -> (u16, Value) {
        let signature = costream_app::handlers::Notifier::backend_signature(
            BACKEND_SECRET,
            ts,
            method,
            path,
            body.as_bytes(),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_owned());
        if ts != 0 {
            request = request
                .header("x-costream-timestamp", ts.to_string())
                .header("x-costream-signature", signature);
        }
        let answer = request.send().await.expect("request");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self) -> Value {
        self.status_of("room-1001").await
    }

    /// The full status, with a viewer token.
    async fn status_of(&self, channel: &str) -> Value {
        let token =
            costream_app::handlers::viewer::viewer_token(BACKEND_SECRET, channel, now() + 600);
        self.http
            .get(format!(
                "{}/rooms/{channel}?viewer_token={token}",
                self.base
            ))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// One ARTC user event for room-1001, `at` seconds ago.
fn user_event(user: &str, tag: &str, ago: u64) -> Value {
    user_event_in("room-1001", user, tag, ago)
}

/// One ARTC user event for `channel`, `at` seconds ago.
fn user_event_in(channel: &str, user: &str, tag: &str, ago: u64) -> Value {
    json!({"AppId": "9qb1abcd", "ChannelId": channel, "MsgId": format!("{channel}-{user}-{tag}-{ago}"),
        "Contents": [{"Event": "UserEvent", "UserEvent": {"UserId": user,
        "SessionId": format!("sess-{user}"), "EventTag": tag, "Timestamp": now() - ago,
        "Role": 1}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restream_targets_are_added_and_removed_with_one_update_each() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let ts = now();
    serve.callback(user_event("host_u1", "Publish", 30)).await;
    let started = live.task();
    assert!(started.stream_url.is_some() && started.multi_stream_url.is_none());

    // Bad targets: 400 naming the field, nothing called.
    for body in [
        r#"{"extra_outputs":["https://a.example/live/key"]}"#,
        r#"{"extra_outputs":"rtmp://a.example/live/key"}"#,
        r#"{"extra_outputs":["rtmp://a.example/live/k","rtmp://a.example/live/k"]}"#,
    ] {
        let (status, answer) = serve.settings(body, ts).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["reason"]
                .as_str()
                .is_some_and(|r| r.contains("extra_outputs") && !r.contains("key")),
            "{answer}"
        );
    }
    let ten: Vec<String> = (0..10)
        .map(|i| format!("rtmp://r{i}.example/live/key{i}"))
        .collect();
    let (status, _) = serve
        .settings(&json!({ "extra_outputs": ten }).to_string(), ts)
        .await;
    assert_eq!(status, 400, "at most nine targets");
    assert_eq!(live.count("UpdateLiveMPUTask"), 0);

    // Two targets on the live room: one Update carrying MultiStreamURL, ours first.
    let (status, answer) = serve
        .settings(
            r#"{"extra_outputs":["rtmp://a.rtmp.youtube.com/live2/yt-secret-key","rtmp://live.twitch.tv/app/tw-secret-key"]}"#,
            ts,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let task = live.task();
    assert_eq!(task.task_id, started.task_id, "the same task");
    assert_eq!(task.started_at_ms, started.started_at_ms, "no restart");
    assert_eq!(task.updates, 1, "exactly one Update");
    assert!(task.stream_url.is_none());
    let multi = task.multi_stream_url.clone().expect("MultiStreamURL");
    let targets = multi.as_array().expect("a list");
    assert_eq!(targets.len(), 3, "{multi}");
    assert_eq!(targets[0]["IsAliCdn"], true);
    assert!(targets[0]["URL"]
        .as_str()
        .expect("url")
        .starts_with("rtmp://push.example.com/live/room-1001_main?auth_key="));
    assert_eq!(
        &targets[1..],
        [
            json!({"IsAliCdn": false, "URL": "rtmp://a.rtmp.youtube.com/live2/yt-secret-key"}),
            json!({"IsAliCdn": false, "URL": "rtmp://live.twitch.tv/app/tw-secret-key"}),
        ]
    );
    // Shown masked, to the backend and to viewers.
    for shown in [answer.to_string(), serve.status().await.to_string()] {
        assert!(
            shown.contains("rtmp://a.rtmp.youtube.com/live2/***"),
            "{shown}"
        );
        assert!(!shown.contains("secret-key"), "{shown}");
    }
    // A co-host joins: the layout changes, the outputs are left as they are.
    serve.callback(user_event("guest_u2", "Publish", 20)).await;
    let mixed = live.task();
    assert_eq!((mixed.mix_mode, mixed.updates), (1, 2));
    assert_eq!(mixed.multi_stream_url.as_ref(), Some(&multi));

    // One target removed, then all: one Update each, still no Stop.
    let (status, _) = serve
        .settings(
            r#"{"extra_outputs":["rtmp://live.twitch.tv/app/tw-secret-key"]}"#,
            ts + 1,
        )
        .await;
    assert_eq!(status, 200);
    let one = live.task();
    assert_eq!(one.updates, 3);
    let urls: Vec<&str> = one
        .multi_stream_url
        .as_ref()
        .expect("multi")
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["URL"].as_str())
        .collect();
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[1], "rtmp://live.twitch.tv/app/tw-secret-key");
    let (status, _) = serve.settings(r#"{"extra_outputs":null}"#, ts + 2).await;
    assert_eq!(status, 200);
    let none = live.task();
    assert_eq!(none.updates, 4);
    assert!(none.multi_stream_url.is_none());
    assert!(none
        .stream_url
        .as_deref()
        .is_some_and(|u| u.starts_with("rtmp://push.example.com/live/room-1001_main?auth_key=")));
    assert_eq!(none.task_id, started.task_id);
    assert_eq!(live.count("StopLiveMPUTask"), 0);
    assert_eq!(live.count("StartLiveMPUTask"), 1);
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_screen_is_the_main_pane_and_the_sharer_is_heard() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let ts = now();
    for (body, field) in [
        (r#"{"screen_share":{"user":"u1"}}"#, "screen_share"),
        (r#"{"screen_share":"u1"}"#, "screen_share"),
        (r#"{"screen_share":{"user_id":""}}"#, "screen_share"),
    ] {
        let (status, answer) = serve.settings(body, ts).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| r.contains(field)),
            "{answer}"
        );
    }
    // Set before anyone publishes: the host's first task already shows the screen.
    let (status, _) = serve
        .settings(r#"{"screen_share":{"user_id":"host_u1"}}"#, ts)
        .await;
    assert_eq!(status, 200);
    serve.callback(user_event("host_u1", "Publish", 30)).await;
    let alone = live.task();
    assert_eq!(alone.mix_mode, 1, "a one-pane mix keeps the host's audio");
    let tp = alone.transcode_params.clone().expect("transcode");
    assert_eq!(
        tp["UserInfos"],
        json!([
            {"SourceType": "shareScreen", "StreamType": "2", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"},
        ])
    );
    let panes = tp["Layout"]["UserPanes"].as_array().expect("panes");
    assert_eq!(panes.len(), 1);
    assert_eq!(
        panes[0]["UserInfo"],
        json!({"SourceType": "shareScreen", "UserId": "host_u1"})
    );
    assert_eq!(
        (&panes[0]["Width"], &panes[0]["Height"], &panes[0]["ZOrder"]),
        (&json!("1"), &json!("1"), &json!("0"))
    );

    // A co-host: the screen stays the main pane, both cameras are tiles above it.
    serve.callback(user_event("guest_u2", "Publish", 20)).await;
    let both = live.task();
    assert_eq!(both.updates, 1);
    let tp = both.transcode_params.clone().expect("transcode");
    let panes = tp["Layout"]["UserPanes"].as_array().expect("panes");
    let shown: Vec<(String, String, String)> = panes
        .iter()
        .map(|p| {
            (
                p["UserInfo"]["UserId"].as_str().unwrap_or("").to_owned(),
                p["UserInfo"]["SourceType"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                p["ZOrder"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let row = |u: &str, s: &str, z: &str| (u.to_owned(), s.to_owned(), z.to_owned());
    assert_eq!(
        shown,
        [
            row("host_u1", "shareScreen", "0"),
            row("host_u1", "camera", "1"),
            row("guest_u2", "camera", "1"),
        ]
    );
    assert_eq!(
        tp["UserInfos"],
        json!([
            {"SourceType": "shareScreen", "StreamType": "2", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "0", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "0", "UserId": "guest_u2"},
        ])
    );
    // Cleared: back to the normal two-pane layout, with one Update.
    let (status, _) = serve.settings(r#"{"screen_share":null}"#, ts + 1).await;
    assert_eq!(status, 200);
    let normal = live.task();
    assert_eq!(normal.updates, 2);
    let tp = normal.transcode_params.clone().expect("transcode");
    assert_eq!(tp["Layout"]["UserPanes"].as_array().map(Vec::len), Some(2));
    assert!(!tp.to_string().contains("shareScreen"));
    assert_eq!(live.count("StopLiveMPUTask"), 0);
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_host_whose_camera_is_off_is_heard_without_a_pane_when_the_room_asks() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let ts = now();
    let (status, answer) = serve.settings(r#"{"hide_camera_off":"yes"}"#, ts).await;
    assert_eq!(status, 400);
    assert!(answer["reason"]
        .as_str()
        .is_some_and(|r| r.contains("hide_camera_off")));
    serve.callback(user_event("host_u1", "Publish", 30)).await;
    serve.callback(user_event("guest_u2", "Publish", 25)).await;
    serve.callback(user_event("guest_u3", "Publish", 24)).await;
    // By default a camera turned off keeps its pane (with the placeholder): nothing to do.
    serve
        .callback(user_event("guest_u2", "CameraClose", 20))
        .await;
    let three = live.task();
    assert_eq!(
        three.transcode_params.as_ref().expect("tp")["Layout"]["UserPanes"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let updates = three.updates;
    // The room asks to hide camera-less co-hosts: one Update, guest_u2 heard only.
    let (status, _) = serve.settings(r#"{"hide_camera_off":true}"#, ts).await;
    assert_eq!(status, 200);
    let hidden = live.task();
    assert_eq!(hidden.updates, updates + 1);
    let tp = hidden.transcode_params.clone().expect("tp");
    let pane_users: Vec<&str> = tp["Layout"]["UserPanes"]
        .as_array()
        .expect("panes")
        .iter()
        .filter_map(|p| p["UserInfo"]["UserId"].as_str())
        .collect();
    assert_eq!(pane_users, ["host_u1", "guest_u3"]);
    assert_eq!(
        tp["UserInfos"],
        json!([
            {"SourceType": "camera", "StreamType": "0", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "0", "UserId": "guest_u3"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "guest_u2"},
        ])
    );
    // The camera back on: the pane is back.
    serve
        .callback(user_event("guest_u2", "CameraOpen", 10))
        .await;
    let back = live.task();
    assert_eq!(back.updates, updates + 2);
    assert_eq!(
        back.transcode_params.as_ref().expect("tp")["Layout"]["UserPanes"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(live.count("StopLiveMPUTask"), 0);
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}

/// The task of `channel` on the simulated Live API.
fn task_of(live: &Live, channel: &str) -> SimTask {
    let tasks: Vec<SimTask> = live
        .sim
        .tasks()
        .into_iter()
        .filter(|t| t.channel_id == channel)
        .collect();
    assert_eq!(tasks.len(), 1, "{channel}: {tasks:?}");
    tasks.into_iter().next().expect("one task")
}

/// The panes of a mixing task as (user, channel, x, width).
fn pk_panes(task: &SimTask) -> Vec<(String, String, String, String)> {
    task.transcode_params
        .as_ref()
        .and_then(|tp| tp["Layout"]["UserPanes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (
                text(&p["UserInfo"]["UserId"]),
                text(&p["UserInfo"]["ChannelId"]),
                text(&p["X"]),
                text(&p["Width"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pk_shows_both_hosts_in_both_rooms_and_ends_in_both() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let ts = now();
    serve
        .callback(user_event_in("room-a", "host_a", "Publish", 40))
        .await;
    serve
        .callback(user_event_in("room-b", "host_b", "Publish", 39))
        .await;
    serve
        .callback(user_event_in("room-a", "guest_a", "Publish", 38))
        .await;
    serve
        .callback(user_event_in("room-e", "host_e", "Publish", 37))
        .await;
    // room-d is known but nobody broadcasts there.
    serve
        .callback(user_event_in("room-d", "u_d", "Join", 36))
        .await;
    let calls_before = live.sim.calls().len();

    // Bad input and refusals: a reason, nothing written, no call.
    let link = |peer: &str| format!(r#"{{"peer_channel_id":"{peer}"}}"#);
    for (path, body, want) in [
        ("/rooms/room-a/pk", link("room-a"), 400),
        ("/rooms/room-a/pk", link("bad room!"), 400),
        ("/rooms/room-a/pk", r#"{"peer":"room-b"}"#.to_owned(), 400),
        ("/rooms/room-a/pk", link("room-nobody"), 404),
        ("/rooms/room-a/pk", link("room-d"), 409),
        ("/rooms/room-d/pk", link("room-a"), 409),
    ] {
        let (status, answer) = serve.backend("PUT", path, &body, ts).await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{answer}"
        );
    }
    let (status, _) = serve
        .backend("PUT", "/rooms/room-a/pk", &link("room-b"), 0)
        .await;
    assert_eq!(status, 401, "unsigned");
    let (status, _) = serve
        .backend("PUT", "/rooms/room-a/pk", &link("room-b"), ts - 400)
        .await;
    assert_eq!(status, 401, "stale");
    assert_eq!(live.sim.calls().len(), calls_before, "no MPU call");
    assert!(serve.status_of("room-a").await.get("pk").is_none());
    assert!(serve.status_of("room-d").await.get("pk").is_none());

    let updates_a = task_of(&live, "room-a").updates;
    let updates_b = task_of(&live, "room-b").updates;
    let (status, answer) = serve
        .backend("PUT", "/rooms/room-a/pk", &link("room-b"), ts)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "linked");
    let a = task_of(&live, "room-a");
    let b = task_of(&live, "room-b");
    assert_eq!(
        (a.updates, b.updates),
        (updates_a + 1, updates_b + 1),
        "one Update per room"
    );
    let row = |u: &str, c: &str, x: &str, w: &str| {
        (u.to_owned(), c.to_owned(), x.to_owned(), w.to_owned())
    };
    assert_eq!(
        pk_panes(&a),
        [
            row("host_a", "", "0", "0.5"),
            row("host_b", "room-b", "0.5", "0.5"),
            row("guest_a", "", "0.38", "0.11"),
        ]
    );
    assert_eq!(
        pk_panes(&b),
        [
            row("host_b", "", "0", "0.5"),
            row("host_a", "room-a", "0.5", "0.5")
        ]
    );
    let infos = &a.transcode_params.as_ref().expect("tp")["UserInfos"];
    assert!(
        infos
            .as_array()
            .expect("infos")
            .iter()
            .any(|i| i["UserId"] == "host_b" && i["ChannelId"] == "room-b"),
        "{infos}"
    );
    assert_eq!(
        serve.status_of("room-a").await["pk"],
        json!({"peer_channel_id": "room-b", "peer_host": "host_b"})
    );
    assert_eq!(
        serve.status_of("room-b").await["pk"]["peer_channel_id"],
        "room-a"
    );
    // Linking again is idempotent; a third room can't join either side.
    let (status, _) = serve
        .backend("PUT", "/rooms/room-b/pk", &link("room-a"), ts)
        .await;
    assert_eq!(status, 200);
    let (status, answer) = serve
        .backend("PUT", "/rooms/room-e/pk", &link("room-a"), ts)
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["reason"]
        .as_str()
        .is_some_and(|r| r.contains("already in a PK")));
    assert_eq!(task_of(&live, "room-a").updates, updates_a + 1);

    // room-b's host leaves: once the end grace (5 s) is over with nobody back, the PK ends in
    // both rooms and room-a gets its own picture back. Not before: room-b still runs.
    serve
        .callback(user_event_in("room-b", "host_b", "Leave", 5))
        .await;
    assert!(
        live.sim.tasks().iter().any(|t| t.channel_id == "room-b"),
        "nothing stops during the end grace"
    );
    assert_eq!(task_of(&live, "room-a").updates, updates_a + 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while live.sim.tasks().iter().any(|t| t.channel_id == "room-b") {
        assert!(Instant::now() < deadline, "room-b stopped after the grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The peer's Update follows the Stop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while task_of(&live, "room-a").updates < updates_a + 2 {
        assert!(Instant::now() < deadline, "room-a back to its own picture");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = task_of(&live, "room-a");
    assert_eq!(a.updates, updates_a + 2);
    let own: Vec<(String, String)> = pk_panes(&a)
        .into_iter()
        .map(|(user, channel, _, _)| (user, channel))
        .collect();
    assert_eq!(
        own,
        [
            ("host_a".to_owned(), String::new()),
            ("guest_a".to_owned(), String::new())
        ],
        "the room's own two panes, no peer"
    );
    assert!(serve.status_of("room-a").await.get("pk").is_none());
    assert!(serve.status_of("room-b").await.get("pk").is_none());

    // Linked again with room-e, then ended by the backend: both back to their own picture.
    let (status, _) = serve
        .backend("PUT", "/rooms/room-e/pk", &link("room-a"), ts)
        .await;
    assert_eq!(status, 200);
    assert_eq!(task_of(&live, "room-e").mix_mode, 1);
    let (status, answer) = serve.backend("DELETE", "/rooms/room-a/pk", "", ts).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            answer["result"].as_str(),
            answer["peer_channel_id"].as_str()
        ),
        (Some("unlinked"), Some("room-e"))
    );
    assert_eq!(
        task_of(&live, "room-e").mix_mode,
        0,
        "room-e relays its host again"
    );
    assert!(pk_panes(&task_of(&live, "room-a"))
        .iter()
        .all(|(_, c, _, _)| c.is_empty()));
    let (status, _) = serve.backend("DELETE", "/rooms/room-a/pk", "", ts).await;
    assert_eq!(status, 409, "not in a PK");
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}

/// A voice room through the signature-checking fake: set before the first callback, the host
/// alone is a MixMode 0 relay of the audio track; with a co-host, an audio-only mix without
/// Layout and with every speaker's audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_room_sends_audio_only_parameters() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let (status, _) = serve.settings(r#"{"audio_only":true}"#, now()).await;
    assert_eq!(status, 200);
    assert!(live.sim.tasks().is_empty());
    serve.callback(user_event("host_u1", "Publish", 30)).await;
    let alone = live.task();
    assert_eq!(alone.mix_mode, 0);
    assert_eq!(
        alone.single_sub_params,
        Some(json!({"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"}))
    );
    serve.callback(user_event("guest_u2", "Publish", 20)).await;
    let mixed = live.task();
    assert_eq!((mixed.mix_mode, mixed.updates), (1, 1));
    let tp = mixed.transcode_params.clone().expect("transcode");
    assert!(tp.get("Layout").is_none(), "{tp}");
    assert_eq!(tp["EncodeParams"]["AudioOnly"], "true");
    assert!(tp["EncodeParams"].get("VideoWidth").is_none(), "{tp}");
    assert_eq!(
        tp["UserInfos"],
        json!([
            {"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "guest_u2"},
        ])
    );
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}

/// One ARTC callback for `channel` carrying `contents` (user, session, tag, seconds ago).
fn callback_in(channel: &str, msg: &str, contents: &[(&str, &str, &str, u64)]) -> Value {
    let contents: Vec<Value> = contents
        .iter()
        .map(|(user, session, tag, ago)| {
            json!({"Event": "UserEvent", "UserEvent": {"UserId": user, "SessionId": session,
                "EventTag": tag, "Timestamp": now() - ago, "Role": 1}})
        })
        .collect();
    json!({"AppId": "9qb1abcd", "ChannelId": channel, "MsgId": msg, "Contents": contents})
}

/// A host's reconnect processed out of order (issue 21, item 2): ARTC reports the new session's
/// Join and Publish at t and the old session's Leave at t+1, in two callbacks, and `serve`
/// commits them in either order. Whichever comes first, the broadcast goes on: no Stop (no 10 s
/// of black), the same task, and its PK with another room holds — in both rooms, after the end
/// grace too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_reconnect_stops_nothing_and_keeps_the_pk() {
    let live = Live::start().await;
    let serve = Serve::start(&live);
    let ts = now();
    let link = |peer: &str| format!(r#"{{"peer_channel_id":"{peer}"}}"#);
    // Two PKs: room-a with room-b (the Leave first), room-c with room-d (the new session first).
    for (host_room, peer_room) in [("room-a", "room-b"), ("room-c", "room-d")] {
        for room in [host_room, peer_room] {
            serve
                .callback(callback_in(
                    room,
                    &format!("{room}-live"),
                    &[(&format!("host_{room}"), "s1", "Publish", 60)],
                ))
                .await;
        }
        let (status, answer) = serve
            .backend(
                "PUT",
                &format!("/rooms/{host_room}/pk"),
                &link(peer_room),
                ts,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let tasks_before: Vec<String> = ["room-a", "room-b", "room-c", "room-d"]
        .iter()
        .map(|r| task_of(&live, r).task_id)
        .collect();
    for (room, leave_first) in [("room-a", true), ("room-c", false)] {
        let host = format!("host_{room}");
        let new_session = callback_in(
            room,
            &format!("{room}-new"),
            &[(&host, "s2", "Join", 20), (&host, "s2", "Publish", 20)],
        );
        let old_leave = callback_in(room, &format!("{room}-old"), &[(&host, "s1", "Leave", 19)]);
        let (first, second) = if leave_first {
            (old_leave, new_session)
        } else {
            (new_session, old_leave)
        };
        serve.callback(first).await;
        serve.callback(second).await;
    }
    // Past the end grace (5 s): the held Leave was merged, and ended nothing.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        live.count("StopLiveMPUTask"),
        0,
        "no Stop of a live broadcast"
    );
    let tasks_after: Vec<String> = ["room-a", "room-b", "room-c", "room-d"]
        .iter()
        .map(|r| task_of(&live, r).task_id)
        .collect();
    assert_eq!(tasks_after, tasks_before, "the same tasks");
    for (room, peer) in [
        ("room-a", "room-b"),
        ("room-b", "room-a"),
        ("room-c", "room-d"),
        ("room-d", "room-c"),
    ] {
        assert_eq!(
            serve.status_of(room).await["pk"]["peer_channel_id"],
            peer,
            "{room}: the PK holds"
        );
        let panes = pk_panes(&task_of(&live, room));
        assert_eq!(
            panes.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            [format!("host_{room}"), format!("host_{peer}")],
            "{room}: both hosts still shown"
        );
    }
    assert!(live.refusals().is_empty(), "{:?}", live.refusals());
}
