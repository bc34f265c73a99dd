//! Behaviour of [`LiveClient`] against a local fake server (wiremock) through the real reqwest
//! client: retries, backoff, deadline, idempotent outcomes, garbage answers, and that every
//! attempt is freshly and correctly signed. Backoff is configured in milliseconds so the suite
//! stays fast; time is only asserted as "at least".

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use secrecy::SecretString;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;
use crate::request::{
    Mix, SingleSubParams, StartLiveMpuTask, StopLiveMpuTask, StreamOutput, UpdateLiveMpuTask,
};
use crate::sign::sign;
use crate::Outcome;

const SECRET: &str = "s3cr3t-for-tests";

fn config(endpoint: &str) -> LiveClientConfig {
    LiveClientConfig {
        endpoint: endpoint.to_owned(),
        connect_timeout: Duration::from_millis(300),
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        format: "JSON".into(),
    }
}

/// A clock that advances one second per reading.
struct TickingClock(AtomicI64);

impl crate::Clock for TickingClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.fetch_add(1, Ordering::SeqCst)).unwrap_or(0) * 1000
    }
}

/// A client whose clock advances one second per reading and whose nonces count up, so every
/// attempt's Timestamp and SignatureNonce are distinct and predictable.
fn client_with(config: LiveClientConfig) -> LiveClient {
    let clock = TickingClock(AtomicI64::new(1_704_164_645));
    let counter = AtomicU32::new(0);
    LiveClient::new(
        config,
        Credentials::new("testid", SecretString::from(SECRET.to_owned())),
    )
    .expect("client builds")
    .with_clock(clock)
    .with_nonces(move || format!("nonce-{}", counter.fetch_add(1, Ordering::SeqCst)))
}

fn client(server: &MockServer) -> LiveClient {
    client_with(config(&server.uri()))
}

fn start() -> LiveRequest {
    StartLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Single(SingleSubParams::camera("host_u1")),
        output: StreamOutput::Url("rtmp://push.example.com/live/room-1001_main".into()),
        max_idle_time: None,
        region: None,
        sei: None,
    }
    .into()
}

fn update() -> LiveRequest {
    UpdateLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Single(SingleSubParams::camera("host_u1")),
        output: None,
        sei: None,
    }
    .into()
}

fn stop() -> LiveRequest {
    StopLiveMpuTask {
        app_id: "9qb1abcd".into(),
        task_id: "room-1001_main".into(),
    }
    .into()
}

fn error_body(code: &str, message: &str, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "RequestId": request_id,
        "HostId": "live.aliyuncs.com",
        "Code": code,
        "Message": message,
    })
}

fn ok_body(request_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "RequestId": request_id }))
}

async fn received(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

fn form_params(request: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

#[tokio::test]
async fn retries_throttling_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "Throttling.User",
            "Request was denied due to user flow control.",
            "R-THROTTLED",
        )))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok_body("REQ-START"))
        .expect(1)
        .mount(&server)
        .await;

    let reply = client(&server)
        .call(&start())
        .await
        .expect("third attempt succeeds");

    assert_eq!(reply.outcome, Outcome::Applied);
    assert_eq!(reply.request_id.as_deref(), Some("REQ-START"));
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn honours_x_acs_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-acs-retry-after", "300")
                .set_body_json(error_body("Throttling.User", "slow down", "R1")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok_body("REQ-OK"))
        .mount(&server)
        .await;

    let started = std::time::Instant::now();
    let reply = client(&server)
        .call(&stop())
        .await
        .expect("second attempt succeeds");

    assert_eq!(reply.outcome, Outcome::Applied);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(received(&server).await.len(), 2);
}

#[tokio::test]
async fn gives_up_at_once_when_retry_after_exceeds_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-acs-retry-after", "60000")
                .set_body_json(error_body("Throttling.User", "slow down", "R1")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let started = std::time::Instant::now();
    let err = client(&server).call(&stop()).await.expect_err("throttled");

    assert!(matches!(err, MpuError::Throttled { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn does_not_retry_signature_does_not_match() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
            "R-SIG",
        )))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server).call(&update()).await.expect_err("rejected");

    match &err {
        MpuError::Rejected {
            action,
            code,
            request_id,
            http_status,
            ..
        } => {
            assert_eq!(*action, "UpdateLiveMPUTask");
            assert_eq!(code, "SignatureDoesNotMatch");
            assert_eq!(request_id.as_deref(), Some("R-SIG"));
            assert_eq!(*http_status, 400);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_slow_answer_is_a_retryable_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok_body("late").set_delay(Duration::from_millis(800)))
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.attempt_timeout = Duration::from_millis(100);
    cfg.retry.max_attempts = 2;

    let err = client_with(cfg).call(&stop()).await.expect_err("timed out");

    assert!(
        matches!(
            err,
            MpuError::Timeout {
                action: "StopLiveMPUTask",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(
        received(&server).await.len(),
        2,
        "the timeout was retried once"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    let mut cfg = config(&format!("http://127.0.0.1:{port}/"));
    cfg.retry.max_attempts = 2;

    let err = client_with(cfg)
        .call(&stop())
        .await
        .expect_err("nothing listens");

    assert!(matches!(err, MpuError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn start_on_an_existing_task_is_already_exists() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "InvalidParam",
            "Task already exists.",
            "R-EXISTS",
        )))
        .expect(1)
        .mount(&server)
        .await;

    let reply = client(&server)
        .call(&start())
        .await
        .expect("idempotent success");

    assert_eq!(reply.outcome, Outcome::AlreadyExists);
    assert_eq!(reply.request_id.as_deref(), Some("R-EXISTS"));
}

#[tokio::test]
async fn stop_and_update_of_a_missing_task() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "InvalidParam",
            "The task does not exist.",
            "R-GONE",
        )))
        .expect(2)
        .mount(&server)
        .await;
    let client = client(&server);

    let stopped = client.call(&stop()).await.expect("stop is idempotent");
    let updated = client.call(&update()).await.expect("caller decides");

    assert_eq!(stopped.outcome, Outcome::AlreadyStopped);
    assert!(matches!(updated.outcome, Outcome::TaskNotFound { .. }));
}

/// Every retry is signed again with a new nonce and timestamp, and each received request carries
/// a signature that verifies against its own parameters.
#[tokio::test]
async fn each_attempt_is_freshly_and_correctly_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(error_body(
            "ServiceUnavailable",
            "temporary failure",
            "R-503",
        )))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok_body("REQ-OK"))
        .mount(&server)
        .await;

    client(&server)
        .call(&start())
        .await
        .expect("third attempt succeeds");

    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    let mut nonces = HashSet::new();
    let mut timestamps = HashSet::new();
    for request in &requests {
        assert_eq!(request.url.path(), "/");
        assert_eq!(request.url.query(), None, "all parameters go in the body");
        assert_eq!(
            request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-www-form-urlencoded")
        );
        let mut params = form_params(request);
        let signature = params.remove("Signature").expect("signed");
        assert_eq!(params["Action"], "StartLiveMPUTask");
        assert_eq!(sign(Method::Post, &params, SECRET).signature, signature);
        nonces.insert(params["SignatureNonce"].clone());
        timestamps.insert(params["Timestamp"].clone());
        let body = String::from_utf8_lossy(&request.body);
        assert!(!body.contains(SECRET));
    }
    assert_eq!(nonces.len(), 3, "a new nonce per attempt: {nonces:?}");
    assert_eq!(
        timestamps.len(),
        3,
        "a new timestamp per attempt: {timestamps:?}"
    );
}

#[cfg(feature = "ops")]
#[tokio::test]
async fn list_event_sub_goes_as_a_signed_get() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path("/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"RequestId": "REQ-LS", "Subscribers": []})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let request: LiveRequest = crate::request::ListEventSub {
        app_id: "9qb1abcd".into(),
    }
    .into();

    let reply = client(&server).call(&request).await.expect("listed");

    assert_eq!(reply.body["Subscribers"], serde_json::json!([]));
    let requests = received(&server).await;
    let mut params: BTreeMap<String, String> = requests[0].url.query_pairs().into_owned().collect();
    let signature = params.remove("Signature").expect("signed");
    assert_eq!(sign(Method::Get, &params, SECRET).signature, signature);
}

#[tokio::test]
async fn garbage_answers_are_typed_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"RequestId\":\"R-HALF\""))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(502)
                .set_body_raw("<html><body>502 Bad Gateway</body></html>", "text/html"),
        )
        .mount(&server)
        .await;
    let client = client(&server);

    let empty = client.call(&start()).await.expect_err("empty 200");
    let truncated = client.call(&start()).await.expect_err("truncated JSON");
    let html = client.call(&start()).await.expect_err("HTML page");

    for (err, reason, status) in [
        (&empty, "empty body", 200),
        (&truncated, "body is not JSON", 200),
        (&html, "body is not JSON", 502),
    ] {
        match err {
            MpuError::MalformedResponse {
                action,
                reason: r,
                http_status,
                ..
            } => {
                assert_eq!(*action, "StartLiveMPUTask");
                assert_eq!(*r, reason);
                assert_eq!(*http_status, status);
            }
            other => panic!("expected MalformedResponse, got {other:?}"),
        }
        assert!(err.to_string().contains("StartLiveMPUTask"));
    }
    assert!(html.to_string().contains("Bad Gateway"), "{html}");
    assert!(!empty.is_retryable() && !truncated.is_retryable());
    assert!(html.is_retryable());
    // 1 (empty, not retried) + 1 (truncated, not retried) + 4 (502 retried to max_attempts).
    assert_eq!(received(&server).await.len(), 6);
}

/// A timed-out attempt may still be processed; if the retry is then refused, the call is still in
/// doubt and must not look like a clean refusal (the shell keeps its lease for in-doubt calls).
#[tokio::test]
async fn a_refusal_after_a_timed_out_attempt_is_still_in_doubt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok_body("R-slow").set_delay(Duration::from_millis(800)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "InvalidParam",
            "The task does not exist.",
            "R-400",
        )))
        .mount(&server)
        .await;
    let client = client_with(LiveClientConfig {
        attempt_timeout: Duration::from_millis(200),
        ..config(&server.uri())
    });
    let err = client
        .call(&start())
        .await
        .expect_err("timed out, then refused");
    assert!(!err.is_definite(), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(received(&server).await.len(), 2);
}
