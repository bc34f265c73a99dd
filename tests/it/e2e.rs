//! The seed flow end to end through the handler code of the Lambda functions, with real event
//! JSON (EventBridge envelopes around ARTC callbacks, API Gateway v2 events for the CDN), a real
//! `LiveClient` talking HTTP to the simulated Live API (which verifies every signature), on the
//! in-memory store and on DynamoDB (moto).

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::http::HeaderValue;
use costream_alibaba::callback_auth::expected_signature;
use costream_alibaba::{Credentials, LiveClient, LiveClientConfig};
use costream_app::handlers::Services;
use costream_app::inbound::Side;
use costream_app::mpu::AlibabaMpu;
use costream_app::ports::{Clock, StateStore, SystemClock};
use costream_app::store::memory::InMemoryStore;
use costream_runtime::init::{mpu_settings, services};
use costream_sim::{http, SimulatedLive};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{config, fixture_json, fresh_store};

type E2e<S> = Services<S, AlibabaMpu<LiveClient, SystemClock>, SystemClock>;

/// Services wired like a deployed function, but with the Live API endpoint at a local fake.
pub async fn deployed_like<S: StateStore>(store: S) -> (E2e<S>, Arc<SimulatedLive>) {
    deployed_like_with(store, config(&[])).await
}

/// [`deployed_like`] with another configuration.
pub async fn deployed_like_with<S: StateStore>(
    store: S,
    config: costream_app::config::Config,
) -> (E2e<S>, Arc<SimulatedLive>) {
    let sim = Arc::new(SimulatedLive::new(SystemClock));
    let credentials = Credentials::new("testid", SecretString::from("testsecret"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(http::serve(
        listener,
        http::router(sim.clone(), credentials.clone()),
    ));
    let live = LiveClient::new(
        LiveClientConfig {
            endpoint: format!("http://{addr}/"),
            ..LiveClientConfig::default()
        },
        credentials,
    )
    .expect("client");
    let mpu = AlibabaMpu::new(live, SystemClock, mpu_settings(&config));
    (
        services(config, store, mpu, SystemClock).expect("services"),
        sim,
    )
}

/// Delivers an EventBridge fixture to both stream functions, as the rules would (each acts on
/// its own tags only).
async fn deliver<S: StateStore>(svc: &E2e<S>, name: &str) {
    let event: EventBridgeEvent<Value> = fixture_json(&format!("eventbridge/{name}"));
    for side in [Side::Published, Side::Unpublished] {
        svc.artc_detail(&event.detail, side, &format!("{name}-{side:?}"))
            .await
            .unwrap_or_else(|e| panic!("{name} on {side:?}: {e}"));
    }
}

/// The CDN callback fixture, signed now as Alibaba would sign it.
fn cdn_event(name: &str, key: &str) -> ApiGatewayV2httpRequest {
    let mut ev: ApiGatewayV2httpRequest = fixture_json(&format!("apigw/{name}"));
    let ts = (SystemClock.now_ms() / 1000).to_string();
    let sig = expected_signature("abc123.execute-api.us-east-1.amazonaws.com", &ts, key);
    ev.headers.insert(
        "ali-live-timestamp",
        HeaderValue::from_str(&ts).expect("header"),
    );
    ev.headers.insert(
        "ali-live-signature",
        HeaderValue::from_str(&sig).expect("header"),
    );
    ev
}

async fn seed_flow<S: StateStore>(store: S) {
    let (svc, sim) = deployed_like(store).await;
    deliver(&svc, "01_host_publish.json").await;

    let ev = cdn_event("cdn_publish.json", "yourkey");
    let out = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-1")
        .await
        .expect("cdn publish");
    assert_eq!(out.channel_id.as_deref(), Some("room-1001"));
    let room: ApiGatewayV2httpRequest = fixture_json("apigw/room_status.json");
    let status = svc
        .room_status(room.path_parameters.get("channelId").expect("path"))
        .await
        .expect("status");
    assert!(status.live && status.cdn_live, "{status:?}");
    assert_eq!(status.mix_mode, Some(0));
    let urls = status.playback.expect("playback urls");
    assert!(
        urls.flv
            .starts_with("https://pull.example.com/live/room-1001_main.flv?auth_key="),
        "{}",
        urls.flv
    );

    deliver(&svc, "02_guest_publish.json").await;
    deliver(&svc, "03_guest_leave.json").await;
    deliver(&svc, "04_host_leave.json").await;

    let calls: Vec<(String, Option<String>, String)> = sim
        .calls()
        .into_iter()
        .map(|c| (c.action, c.mix_mode, c.code))
        .collect();
    let expect = |a: &str, m: Option<&str>| (a.to_owned(), m.map(str::to_owned), "OK".to_owned());
    assert_eq!(
        calls,
        [
            expect("StartLiveMPUTask", Some("0")),
            expect("UpdateLiveMPUTask", Some("1")),
            expect("UpdateLiveMPUTask", Some("0")),
            expect("StopLiveMPUTask", None),
        ],
        "every request was signature-checked by the fake Live API and accepted"
    );
    let mixed = &sim.calls()[1];
    assert!(
        mixed.summary.contains("host_u1,guest_u2"),
        "2 panes: {}",
        mixed.summary
    );
    assert!(sim.tasks().is_empty());
    let after = svc.room_status("room-1001").await.expect("status");
    assert!(!after.live && after.playback.is_none());
}

#[tokio::test]
async fn seed_flow_in_memory() {
    seed_flow(InMemoryStore::new()).await;
}

#[tokio::test]
async fn seed_flow_on_dynamodb() {
    let (store, _) = fresh_store("e2e").await;
    seed_flow(store).await;
}

#[tokio::test]
async fn publish_done_while_live_restarts_the_task() {
    let (svc, sim) = deployed_like(InMemoryStore::new()).await;
    deliver(&svc, "01_host_publish.json").await;
    let task = sim.tasks()[0].task_id.clone();
    // Alibaba ended the task on its own; the CDN reports the stream gone.
    sim.end_task("9qb1abcd", &task).expect("running");
    let ev = cdn_event("cdn_publish_done.json", "yourkey");
    svc.cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-2")
        .await
        .expect("publish_done");
    let tasks = sim.tasks();
    assert_eq!(tasks.len(), 1, "the task is running again");
    assert_eq!(tasks[0].task_id, task);
    assert_eq!(tasks[0].mix_mode, 0);
}

/// With `COSTREAM_NOTIFY_URL`, the room's changes reach the app's backend as webhooks with an
/// HMAC-SHA256 signature it can verify: the broadcast's stage, then the CDN's publish as
/// `room.live` — once each, the CDN's retry being a duplicate.
#[tokio::test]
async fn room_changes_reach_the_backend_as_signed_webhooks() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let backend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(204))
        .expect(2)
        .mount(&backend)
        .await;
    let sim = Arc::new(SimulatedLive::new(SystemClock));
    let config = config(&[
        ("COSTREAM_NOTIFY_URL", &format!("{}/hooks", backend.uri())),
        ("COSTREAM_NOTIFY_SECRET", "backend-hmac-key"),
    ]);
    let mpu = AlibabaMpu::new(sim.clone(), SystemClock, mpu_settings(&config));
    let svc = services(config, InMemoryStore::new(), mpu, SystemClock).expect("services");
    let publish: EventBridgeEvent<Value> = fixture_json("eventbridge/01_host_publish.json");
    svc.artc_detail(&publish.detail, Side::Published, "i1")
        .await
        .expect("publish");
    let ev = cdn_event("cdn_publish.json", "yourkey");
    svc.cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-1")
        .await
        .expect("cdn");
    // The CDN's retry of the same callback is a duplicate: no second room.live.
    svc.cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-2")
        .await
        .expect("cdn retry");

    let received = backend.received_requests().await.expect("recorded");
    let mut kinds = Vec::new();
    for req in &received {
        let ts: u64 = req.headers["x-costream-timestamp"]
            .to_str()
            .expect("ts")
            .parse()
            .expect("number");
        let sig = req.headers["x-costream-signature"].to_str().expect("sig");
        assert_eq!(
            sig,
            costream_app::handlers::Notifier::signature("backend-hmac-key", ts, &req.body)
        );
        let body: Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(body["room"], "room-1001");
        kinds.push(body["type"].as_str().expect("type").to_owned());
        if body["type"] == "room.live" {
            assert_eq!(body["data"]["host"], "host_u1");
            assert_eq!(body["data"]["mix_mode"], 0);
        }
    }
    assert_eq!(kinds, ["stage.changed", "room.live"]);
}

/// The app's backend registers a room's host: only then can that user start the broadcast, and a
/// broadcast by someone else ends. Unsigned or stale registrations change nothing.
#[tokio::test]
async fn host_registration_from_the_backend() {
    use costream_app::handlers::{HostRequest, Notifier};

    let sim = Arc::new(SimulatedLive::new(SystemClock));
    let config = config(&[("COSTREAM_NOTIFY_SECRET", "backend-hmac-key")]);
    let mpu = AlibabaMpu::new(sim.clone(), SystemClock, mpu_settings(&config));
    let svc = services(config, InMemoryStore::new(), mpu, SystemClock).expect("services");
    let guest: EventBridgeEvent<Value> = fixture_json("eventbridge/02_guest_publish.json");
    svc.artc_detail(&guest.detail, Side::Published, "i1")
        .await
        .expect("guest");
    assert_eq!(
        svc.room_status("room-1001")
            .await
            .expect("status")
            .host
            .as_deref(),
        Some("guest_u2")
    );

    let now = SystemClock.now_ms() / 1000;
    let body = br#"{"user_id":"host_u1"}"#;
    let sig = Notifier::backend_signature(
        "backend-hmac-key",
        now,
        "PUT",
        "/rooms/room-1001/host",
        body,
    );
    let ts = now.to_string();
    let bad = HostRequest {
        body,
        timestamp: Some(&ts),
        signature: Some("sha256=00"),
    };
    let e = svc
        .register_host("room-1001", &bad, "i2")
        .await
        .expect_err("unsigned");
    assert_eq!(e.status(), 401);
    let stale_ts = (now - 3600).to_string();
    let stale_sig = Notifier::backend_signature(
        "backend-hmac-key",
        now - 3600,
        "PUT",
        "/rooms/room-1001/host",
        body,
    );
    let stale = HostRequest {
        body,
        timestamp: Some(&stale_ts),
        signature: Some(&stale_sig),
    };
    assert_eq!(
        svc.register_host("room-1001", &stale, "i3")
            .await
            .expect_err("stale")
            .status(),
        401
    );
    assert_eq!(
        sim.tasks().len(),
        1,
        "rejected registrations changed nothing"
    );

    // A captured, valid registration replayed against another room is refused.
    let replayed = HostRequest {
        body,
        timestamp: Some(&ts),
        signature: Some(&sig),
    };
    assert_eq!(
        svc.register_host("room-2002", &replayed, "i3b")
            .await
            .expect_err("replayed to another room")
            .status(),
        401
    );
    let ok = HostRequest {
        body,
        timestamp: Some(&ts),
        signature: Some(&sig),
    };
    let out = svc
        .register_host("room-1001", &ok, "i4")
        .await
        .expect("registered");
    assert_eq!(out.host.as_deref(), Some("host_u1"));
    assert!(sim.tasks().is_empty(), "the guest's broadcast ended");
    let publish: EventBridgeEvent<Value> = fixture_json("eventbridge/01_host_publish.json");
    svc.artc_detail(&publish.detail, Side::Published, "i5")
        .await
        .expect("host");
    let status = svc.room_status("room-1001").await.expect("status");
    assert_eq!(status.host.as_deref(), Some("host_u1"));
    assert_eq!(status.on_stage, ["host_u1", "guest_u2"]);
}

/// room-1001's stored facts.
async fn stored_facts<S: StateStore>(svc: &E2e<S>) -> costream_core::Facts {
    svc.shell
        .store
        .load(&costream_app::ports::RoomKey {
            app: svc.config.app_id.clone(),
            channel: costream_core::ChannelId::parse("room-1001").expect("channel"),
        })
        .await
        .expect("load")
        .expect("room")
        .facts
}

/// The CDN's signature covers the timestamp and host, not the query: a captured (timestamp,
/// signature) pair is accepted once per room and action. Replayed with another query it is a
/// duplicate that changes nothing; the genuine callback's retry is one too.
#[tokio::test]
async fn a_captured_cdn_signature_is_accepted_once_per_room_and_action() {
    let (svc, _sim) = deployed_like(InMemoryStore::new()).await;
    deliver(&svc, "01_host_publish.json").await;
    let ev = cdn_event("cdn_publish.json", "yourkey");
    let first = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-1")
        .await
        .expect("cdn publish");
    assert_ne!(first.result, "duplicate");
    let facts_before = stored_facts(&svc).await;
    // The same headers on another query: two later publishes.
    for (action, time) in [("publish", "1704164700"), ("publish", "1704164999")] {
        let mut replay = ev.clone();
        let mut query = std::collections::HashMap::new();
        for (k, v) in ev.query_string_parameters.iter() {
            query.insert(k.to_owned(), vec![v.to_owned()]);
        }
        query.insert("action".to_owned(), vec![action.to_owned()]);
        query.insert("time".to_owned(), vec![time.to_owned()]);
        replay.query_string_parameters = query.into();
        let out = svc
            .cdn_ingest(
                &costream_runtime::lambda::cdn_request(&replay),
                "cdn-replay",
            )
            .await
            .expect("answered");
        assert_eq!(out.result, "duplicate", "{action} {time}");
    }
    let facts_after = stored_facts(&svc).await;
    assert_eq!(facts_before, facts_after, "the replays changed nothing");
}

/// The pair is the verified one (a case-changed signature is the same pair), and the unsigned
/// event time may not be after the signature's (a forged future time would pin the room).
#[tokio::test]
async fn a_cdn_replay_cannot_dodge_the_pair_or_move_time_forward() {
    let (svc, _sim) = deployed_like(InMemoryStore::new()).await;
    deliver(&svc, "01_host_publish.json").await;
    let ev = cdn_event("cdn_publish.json", "yourkey");
    svc.cdn_ingest(&costream_runtime::lambda::cdn_request(&ev), "cdn-1")
        .await
        .expect("cdn publish");
    let mut upper = ev.clone();
    let sig = ev.headers["ali-live-signature"]
        .to_str()
        .expect("sig")
        .to_ascii_uppercase();
    upper.headers.insert(
        "ali-live-signature",
        HeaderValue::from_str(&sig).expect("header"),
    );
    let out = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&upper), "cdn-2")
        .await
        .expect("answered");
    assert_eq!(out.result, "duplicate");

    let future = SystemClock.now_ms() / 1000 + 300;
    let fresh = cdn_event("cdn_publish.json", "yourkey");
    let mut forged = fresh.clone();
    let mut query = std::collections::HashMap::new();
    for (k, v) in fresh.query_string_parameters.iter() {
        query.insert(k.to_owned(), vec![v.to_owned()]);
    }
    query.insert("time".to_owned(), vec![future.to_string()]);
    forged.query_string_parameters = query.into();
    let err = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&forged), "cdn-3")
        .await
        .expect_err("refused");
    assert_eq!(err.status(), 403, "{err}");
    assert!(err.to_string().contains("after its signature"), "{err}");
}
