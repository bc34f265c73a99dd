//! Bad input: a clear 4xx (or NonRetryable) with a reason, nothing written, no MPU call.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::http::HeaderValue;
use costream_alibaba::callback_auth::expected_signature;
use costream_app::handlers::{HandlerError, Services};
use costream_app::inbound::Side;
use costream_app::mpu::AlibabaMpu;
use costream_app::ports::{Clock, SystemClock};
use costream_app::store::memory::InMemoryStore;
use costream_runtime::init::{mpu_settings, services};
use costream_sim::SimulatedLive;
use serde_json::Value;

use crate::helpers::{config, fixture, fixture_json};

type Local = Services<InMemoryStore, AlibabaMpu<Arc<SimulatedLive>, SystemClock>, SystemClock>;

fn local() -> (Local, Arc<SimulatedLive>) {
    let sim = Arc::new(SimulatedLive::new(SystemClock));
    let config = config(&[]);
    let mpu = AlibabaMpu::new(sim.clone(), SystemClock, mpu_settings(&config));
    (
        services(config, InMemoryStore::new(), mpu, SystemClock).expect("services"),
        sim,
    )
}

/// Nothing stored, nothing called.
async fn assert_untouched(svc: &Local, sim: &SimulatedLive) {
    assert_eq!(svc.shell.store.rooms().len(), 0, "nothing written");
    assert!(sim.calls().is_empty(), "no MPU call");
}

fn assert_client_error(e: &HandlerError, status: u16, reason: &str) {
    assert_eq!(e.status(), status, "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains(reason),
        "{e} should mention {reason:?}"
    );
}

#[tokio::test]
async fn bad_artc_bodies_are_400_and_change_nothing() {
    let (svc, sim) = local();
    let big = vec![b' '; 64 * 1024 + 1];
    let cases: [(&[u8], &str); 4] = [
        (br#"{"AppId": "9qb1abcd", "Contents": ["#, "not JSON"),
        (b"hello", "not JSON"),
        (&big, "the limit is 65536"),
        (br#"{"AppId":"9qb1abcd","ChannelId":"room-1001","Contents":[{"Event":"UserEvent","UserEvent":{"EventTag":"Publish"}}]}"#, "missing field UserId"),
    ];
    for (body, reason) in cases {
        let e = svc
            .artc_body(body, Side::Both, "t")
            .await
            .expect_err("rejected");
        assert_client_error(&e, 400, reason);
    }
    for (name, reason) in [
        ("wrong_app.json", "AppId otherapp"),
        ("unknown_tag.json", "unknown: UserEvent/ScreenShareStart"),
    ] {
        let e = svc
            .artc_body(&fixture(&format!("artc/{name}")), Side::Both, "t")
            .await
            .expect_err(name);
        assert_client_error(&e, 400, reason);
    }
    assert_untouched(&svc, &sim).await;
}

#[tokio::test]
async fn bad_eventbridge_details_are_non_retryable() {
    let (svc, sim) = local();
    for name in ["wrong_app.json", "unknown_tag.json"] {
        let ev: EventBridgeEvent<Value> = fixture_json(&format!("eventbridge/{name}"));
        for side in [Side::Published, Side::Unpublished] {
            let e = svc
                .artc_detail(&ev.detail, side, "t")
                .await
                .expect_err(name);
            assert_eq!(e.kind(), "BadInput");
            assert!(!e.is_retryable());
        }
    }
    assert_untouched(&svc, &sim).await;
}

/// Defect 8: Lambda retries failed asynchronous invocations whatever `errorType` says, so the
/// stream functions answer bad input as handled-and-rejected (logged, counted, in the archive),
/// never as an error.
#[tokio::test]
async fn the_stream_functions_answer_bad_input_as_handled_and_rejected() {
    let (svc, sim) = local();
    for name in ["wrong_app.json", "unknown_tag.json"] {
        let ev: EventBridgeEvent<Value> = fixture_json(&format!("eventbridge/{name}"));
        for side in [Side::Published, Side::Unpublished] {
            let event = lambda_runtime::LambdaEvent::new(ev.clone(), Default::default());
            let out = costream_runtime::lambda::artc_event(&svc, event, side)
                .await
                .expect("bad input is not an invocation error");
            assert_eq!(out.result, "rejected", "{name}");
            assert!(out.reason.is_some(), "{name}");
        }
    }
    assert_untouched(&svc, &sim).await;
}

fn signed_cdn(ts: u64, key: &str) -> ApiGatewayV2httpRequest {
    let mut ev: ApiGatewayV2httpRequest = fixture_json("apigw/cdn_publish.json");
    let ts = ts.to_string();
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

#[tokio::test]
async fn bad_cdn_callbacks_are_rejected_and_change_nothing() {
    let (svc, sim) = local();
    let now = SystemClock.now_ms() / 1000;

    let wrong_key = signed_cdn(now, "not-the-key");
    let e = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&wrong_key), "t")
        .await
        .expect_err("bad sig");
    assert_client_error(&e, 403, "does not match");

    let stale = signed_cdn(now - 3600, "yourkey");
    let e = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&stale), "t")
        .await
        .expect_err("stale");
    assert_client_error(&e, 403, "away from now");

    let mut unsigned: ApiGatewayV2httpRequest = fixture_json("apigw/cdn_publish.json");
    unsigned.headers.remove("ali-live-signature");
    let e = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&unsigned), "t")
        .await
        .expect_err("unsigned");
    assert_client_error(&e, 403, "missing ALI-LIVE");

    let mut no_id = signed_cdn(now, "yourkey");
    no_id.query_string_parameters = no_id
        .query_string_parameters
        .iter()
        .filter(|(k, _)| *k != "id")
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<std::collections::HashMap<String, String>>()
        .into();
    let e = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&no_id), "t")
        .await
        .expect_err("no id");
    assert_client_error(&e, 400, "id: missing");
    assert_untouched(&svc, &sim).await;

    // A correctly signed callback for a stream that isn't ours: accepted (no retries), ignored.
    let mut foreign = signed_cdn(now, "yourkey");
    let mut q: std::collections::HashMap<String, String> = foreign
        .query_string_parameters
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    q.insert("id".into(), "someone-elses-stream".into());
    foreign.query_string_parameters = q.clone().into();
    let out = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&foreign), "t")
        .await
        .expect("ignored");
    assert_eq!(out.result, "ignored_foreign_stream");
    // Our stream name on another ingest domain is not our room either.
    q.insert("id".into(), "room-1001_main".into());
    q.insert("app".into(), "push.other.example.net".into());
    foreign.query_string_parameters = q.into();
    let out = svc
        .cdn_ingest(&costream_runtime::lambda::cdn_request(&foreign), "t")
        .await
        .expect("ignored");
    assert_eq!(out.result, "ignored_foreign_stream");
    assert_untouched(&svc, &sim).await;
}

#[tokio::test]
async fn unknown_rooms_and_bad_channel_ids() {
    let (svc, sim) = local();
    let e = svc.room_status("room-404").await.expect_err("unknown");
    assert_client_error(&e, 404, "never been seen");
    let e = svc.room_status("bad id").await.expect_err("bad id");
    assert_client_error(&e, 400, "invalid channelId");
    assert_untouched(&svc, &sim).await;
}
