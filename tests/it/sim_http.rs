//! The simulated Live API over real HTTP: `costream_sim::http::router` on 127.0.0.1:0, a real
//! `LiveClient` (reqwest, form bodies, RPC V1 signatures, retries) pointed at it, driven through
//! the `AlibabaMpu` adapter exactly as the Lambdas drive Alibaba. Every request that reaches the
//! simulator's core has passed the gateway's signature check, so the recorded calls prove both
//! what was asked and that it was signed correctly.

use std::sync::Arc;
use std::time::Duration;

use costream_alibaba::request::{
    sign_request, CommonParams, ListEventSub, ListRtcMpuTaskDetail, TaskSelector,
};
use costream_alibaba::{
    Credentials, LiveApi, LiveClient, LiveClientConfig, LiveRequest, Outcome, RetryPolicy,
};
use costream_app::mpu::{AlibabaMpu, IngestSettings, MpuSettings};
use costream_app::ports::{
    Clock, ManualClock, MpuDone, MpuFailureKind, MpuPort, RoomKey, SystemClock,
};
use costream_core::{
    layout, AppId, ChannelId, Command, DecisionConfig, ImageUrl, LayoutSpec, Shape, TaskId, UserId,
    Version,
};
use costream_sim::{http, SimCall, SimulatedLive, Transport};
use secrecy::SecretString;
use serde_json::Value;

const KEY_ID: &str = "sim-key-id";
const KEY_SECRET: &str = "sim-key-secret";
const APP: &str = "simapp01";
const CHANNEL: &str = "room-7";
const TASK: &str = "room-7_1700000000";

fn credentials(id: &str, secret: &str) -> Credentials {
    Credentials::new(id, SecretString::from(secret.to_owned()))
}

/// The simulator (system clock, so the client's timestamps are current) served on a free port.
async fn serve_sim() -> (Arc<SimulatedLive>, String) {
    let sim = Arc::new(SimulatedLive::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let router = http::router(sim.clone(), credentials(KEY_ID, KEY_SECRET));
    tokio::spawn(http::serve(listener, router));
    (sim, format!("http://{addr}/"))
}

fn client(endpoint: &str, creds: Credentials) -> LiveClient {
    LiveClient::new(
        LiveClientConfig {
            endpoint: endpoint.to_owned(),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            ..LiveClientConfig::default()
        },
        creds,
    )
    .expect("client builds")
}

fn adapter(api: LiveClient) -> AlibabaMpu<LiveClient, SystemClock> {
    AlibabaMpu::new(
        api,
        SystemClock,
        MpuSettings {
            app_id: AppId::parse(APP).expect("app id"),
            ingest: IngestSettings {
                push_domain: "push.example.com".into(),
                app_name: "live".into(),
                push_auth_key: Some(SecretString::from("ingest-key".to_owned())),
                url_validity: Duration::from_secs(24 * 3600),
            },
            decision: DecisionConfig {
                pane_placeholder: Some(
                    ImageUrl::parse("https://static.example.com/pane.png").expect("url"),
                ),
                ..DecisionConfig::default()
            },
            region: None,
            stream_url_wait: Duration::ZERO,
        },
    )
}

fn room() -> RoomKey {
    RoomKey {
        app: AppId::parse(APP).expect("app id"),
        channel: ChannelId::parse(CHANNEL).expect("channel id"),
    }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("user id")
}

fn single(id: &str) -> Shape {
    Shape::Single { user: user(id) }
}

fn mixed(cfg: &DecisionConfig, ids: &[&str]) -> Shape {
    let spec = LayoutSpec {
        canvas: cfg.canvas,
        style: cfg.style,
        render_mode: cfg.render_mode,
        placeholder: cfg.pane_placeholder.as_ref(),
    };
    let stage: Vec<UserId> = ids.iter().map(|u| user(u)).collect();
    let mut layout = layout(&spec, &stage);
    layout.background = cfg.background_image.clone();
    Shape::Mixed { layout }
}

fn task() -> TaskId {
    TaskId::parse(TASK).expect("task id")
}

fn codes(calls: &[SimCall]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| (c.action.clone(), c.code.clone()))
        .collect()
}

fn pair(action: &str, code: &str) -> (String, String) {
    (action.to_owned(), code.to_owned())
}

async fn get_json(url: String) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

#[tokio::test]
async fn start_update_stop_through_the_adapter_land_in_the_simulator() {
    let (sim, endpoint) = serve_sim().await;
    let mpu = adapter(client(&endpoint, credentials(KEY_ID, KEY_SECRET)));
    let room = room();
    let cfg = mpu.settings().decision.clone();
    let v = Version::NONE;

    let start = Command::Start {
        task: task(),
        shape: single("host_u1"),
        outputs: costream_core::Outputs::NONE,
    };
    let done = mpu.execute(&room, &start, v).await.expect("start");
    assert_eq!(
        done,
        MpuDone::Done {
            request_id: Some("SIM-1".into()),
            fresh_url: true,
        }
    );
    let running = sim.task(APP, TASK).expect("task started");
    assert_eq!(running.mix_mode, 0);
    assert_eq!(running.users, ["host_u1"]);
    assert_eq!(running.channel_id, CHANNEL);
    assert!(
        running
            .stream_url
            .as_deref()
            .is_some_and(|u| u.contains("auth_key=")),
        "the signed ingest URL arrived: {:?}",
        running.stream_url
    );
    assert_eq!(
        running.outputs,
        ["rtmp://push.example.com/live/room-7_main"]
    );

    let two = Command::Update {
        task: task(),
        shape: mixed(&cfg, &["host_u1", "guest_u2"]),
        outputs: costream_core::Outputs::NONE,
        set_outputs: false,
    };
    mpu.execute(&room, &two, v).await.expect("update");
    let running = sim.task(APP, TASK).expect("task running");
    assert_eq!(running.mix_mode, 1);
    assert_eq!(running.users, ["host_u1", "guest_u2"]);
    let transcode = running
        .transcode_params
        .expect("TranscodeParams kept as JSON");
    assert_eq!(
        transcode["Layout"]["UserPanes"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        transcode["Layout"]["UserPanes"][1]["BackgroundImageUrl"],
        "https://static.example.com/pane.png"
    );
    assert_eq!(transcode["EncodeParams"]["VideoWidth"], "720");

    // A retried Start (lost answer): "already exists", which the adapter turns into an Update.
    let three = Command::Start {
        task: task(),
        shape: mixed(&cfg, &["host_u1", "guest_u2", "guest_u3"]),
        outputs: costream_core::Outputs::NONE,
    };
    mpu.execute(&room, &three, v).await.expect("start again");
    let running = sim.task(APP, TASK).expect("task running");
    assert_eq!(running.users, ["host_u1", "guest_u2", "guest_u3"]);
    assert_eq!(running.updates, 2);

    let stop = Command::Stop { task: task() };
    mpu.execute(&room, &stop, v).await.expect("stop");
    assert!(sim.tasks().is_empty());
    mpu.execute(&room, &stop, v)
        .await
        .expect("stop of a stopped task is done");
    let done = mpu.execute(&room, &two, v).await.expect("update");
    assert_eq!(done, MpuDone::TaskMissing);

    let calls = sim.calls();
    assert_eq!(
        codes(&calls),
        [
            pair("StartLiveMPUTask", "OK"),
            pair("UpdateLiveMPUTask", "OK"),
            pair("StartLiveMPUTask", "InvalidParam"),
            pair("UpdateLiveMPUTask", "OK"),
            pair("StopLiveMPUTask", "OK"),
            pair("StopLiveMPUTask", "InvalidParam"),
            pair("UpdateLiveMPUTask", "InvalidParam"),
            // "Task not found" is believed only once the task list by TaskId agrees.
            pair("ListRtcMPUTaskDetail", "OK"),
        ]
    );
    assert!(calls
        .iter()
        .all(|c| c.transport == Transport::Http && c.task_id.as_deref() == Some(TASK)));
    assert_eq!(calls[1].summary, "mix host_u1,guest_u2");

    // The same records over HTTP, for humans and scripts.
    let listed = get_json(format!("{endpoint}_sim/calls")).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(calls.len()));
    assert_eq!(listed[0]["action"], "StartLiveMPUTask");
    assert_eq!(listed[0]["transport"], "http");
    assert_eq!(
        get_json(format!("{endpoint}_sim/tasks")).await,
        Value::Array(vec![])
    );
}

#[tokio::test]
async fn the_tasks_snapshot_is_served_as_json() {
    let (_sim, endpoint) = serve_sim().await;
    let mpu = adapter(client(&endpoint, credentials(KEY_ID, KEY_SECRET)));
    let start = Command::Start {
        task: task(),
        shape: single("host_u1"),
        outputs: costream_core::Outputs::NONE,
    };
    mpu.execute(&room(), &start, Version::NONE)
        .await
        .expect("start");
    let tasks = get_json(format!("{endpoint}_sim/tasks")).await;
    assert_eq!(tasks.as_array().map(Vec::len), Some(1));
    assert_eq!(tasks[0]["task_id"], TASK);
    assert_eq!(tasks[0]["mix_mode"], 0);
    assert_eq!(tasks[0]["users"], serde_json::json!(["host_u1"]));
    assert_eq!(tasks[0]["single_sub_params"]["UserId"], "host_u1");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_once_and_not_retried() {
    let (sim, endpoint) = serve_sim().await;
    let mpu = adapter(client(&endpoint, credentials(KEY_ID, "not-the-secret")));
    let start = Command::Start {
        task: task(),
        shape: single("host_u1"),
        outputs: costream_core::Outputs::NONE,
    };
    let err = mpu
        .execute(&room(), &start, Version::NONE)
        .await
        .expect_err("bad signature");
    // The port's failure says only what the shell acts on: refused for good.
    assert_eq!(
        err.kind,
        MpuFailureKind::Refused { retryable: false },
        "{err}"
    );
    assert!(err.reason.contains("SignatureDoesNotMatch"), "{err}");
    assert_eq!(
        codes(&sim.calls()),
        [pair("StartLiveMPUTask", "SignatureDoesNotMatch")],
        "exactly one attempt"
    );
    assert!(sim.tasks().is_empty());
}

#[tokio::test]
async fn an_unknown_access_key_is_refused_once() {
    let (sim, endpoint) = serve_sim().await;
    let mpu = adapter(client(&endpoint, credentials("someone-else", KEY_SECRET)));
    let err = mpu
        .execute(&room(), &Command::Stop { task: task() }, Version::NONE)
        .await
        .expect_err("unknown key");
    assert!(err.reason.contains("InvalidAccessKeyId.NotFound"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(sim.calls().len(), 1);
    assert_eq!(sim.calls()[0].http_status, 404);
}

#[tokio::test]
async fn a_replayed_nonce_and_a_skewed_clock_are_refused() {
    let (sim, endpoint) = serve_sim().await;
    // Every attempt with the same nonce: the first passes, the next are replays. The client
    // retries SignatureNonceUsed (normally with a fresh nonce), so all three attempts arrive.
    let replaying = client(&endpoint, credentials(KEY_ID, KEY_SECRET))
        .with_nonces(|| "always-the-same".to_owned());
    let stop = LiveRequest::Stop(costream_alibaba::request::StopLiveMpuTask {
        app_id: APP.into(),
        task_id: TASK.into(),
    });
    let reply = replaying.call(&stop).await.expect("first use of the nonce");
    assert_eq!(reply.outcome, Outcome::AlreadyStopped);
    let err = replaying.call(&stop).await.expect_err("replays");
    assert_eq!(err.code(), Some("SignatureNonceUsed"));
    assert_eq!(
        codes(&sim.calls()),
        [
            pair("StopLiveMPUTask", "InvalidParam"),
            pair("StopLiveMPUTask", "SignatureNonceUsed"),
            pair("StopLiveMPUTask", "SignatureNonceUsed"),
            pair("StopLiveMPUTask", "SignatureNonceUsed"),
        ]
    );

    let skewed = client(&endpoint, credentials(KEY_ID, KEY_SECRET))
        .with_clock(ManualClock::at_ms(SystemClock.now_ms() - 20 * 60 * 1000));
    let err = skewed.call(&stop).await.expect_err("expired timestamp");
    assert_eq!(err.code(), Some("InvalidTimeStamp.Expired"));
    assert!(!err.is_retryable());
    assert_eq!(sim.calls().len(), 5, "not retried");
}

#[tokio::test]
async fn list_calls_and_the_tea_sdk_query_layout_are_accepted() {
    let (sim, endpoint) = serve_sim().await;
    let api = client(&endpoint, credentials(KEY_ID, KEY_SECRET));
    let mpu = adapter(api.clone());
    let start = Command::Start {
        task: task(),
        shape: single("host_u1"),
        outputs: costream_core::Outputs::NONE,
    };
    mpu.execute(&room(), &start, Version::NONE)
        .await
        .expect("start");

    let list: LiveRequest = ListRtcMpuTaskDetail {
        app_id: APP.into(),
        selector: TaskSelector::Page {
            page_no: 1,
            page_size: 10,
        },
    }
    .into();
    let reply = api.call(&list).await.expect("list");
    let tasks = reply.body["MPUTasks"].as_array().expect("MPUTasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["TaskId"], TASK);
    assert_eq!(tasks[0]["SingleSubParams"]["UserId"], "host_u1");

    // ListEventSub goes as a signed GET.
    let subs = api
        .call(&ListEventSub { app_id: APP.into() }.into())
        .await
        .expect("list event subs");
    assert_eq!(subs.body["Subscribers"], serde_json::json!([]));

    // The Tea SDK puts every parameter in the query of an empty POST.
    let common = CommonParams {
        access_key_id: KEY_ID,
        timestamp: time::OffsetDateTime::now_utc(),
        signature_nonce: "tea-nonce-1",
        security_token: None,
        format: "json",
    };
    let signed = sign_request(&list, &common, KEY_SECRET).expect("sign");
    let response = reqwest::Client::new()
        .post(format!("{endpoint}?{}", signed.encoded_params()))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["MPUTasks"][0]["TaskId"], TASK);

    assert_eq!(
        codes(&sim.calls()),
        [
            pair("StartLiveMPUTask", "OK"),
            pair("ListRtcMPUTaskDetail", "OK"),
            pair("ListEventSub", "OK"),
            pair("ListRtcMPUTaskDetail", "OK"),
        ]
    );
}
