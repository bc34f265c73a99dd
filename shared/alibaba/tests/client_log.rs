//! The Live API client logs one line per failed attempt and never the secret. Its own test binary
//! on purpose: tracing caches per-call-site interest process-wide, so capturing logs with a scoped
//! subscriber while other tests run in parallel threads is racy.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use costream_alibaba::request::{Mix, SingleSubParams, StartLiveMpuTask, StreamOutput};
use costream_alibaba::{
    Credentials, LiveApi, LiveClient, LiveClientConfig, LiveRequest, RetryPolicy,
};
use secrecy::SecretString;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "s3cr3t-for-tests";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_and_errors_never_contain_the_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "RequestId": "R-500", "HostId": "live.aliyuncs.com",
            "Code": "InternalError", "Message": "boom",
        })))
        .mount(&server)
        .await;
    let client = LiveClient::new(
        LiveClientConfig {
            endpoint: server.uri(),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            },
            ..LiveClientConfig::default()
        },
        Credentials::new("testid", SecretString::from(SECRET.to_owned())),
    )
    .expect("client builds");
    let start: LiveRequest = StartLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Single(SingleSubParams::camera("host_u1")),
        output: StreamOutput::Url("rtmp://push.example.com/live/room-1001_main".into()),
        max_idle_time: None,
        region: None,
        sei: None,
    }
    .into();

    let err = client.call(&start).await.expect_err("always 500");

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8 logs");
    assert_eq!(
        logs.matches("alibaba call attempt failed").count(),
        4,
        "one line per failed attempt:\n{logs}"
    );
    assert!(
        logs.contains("R-500") && logs.contains("InternalError"),
        "{logs}"
    );
    for text in [logs, format!("{err} {err:?}"), format!("{client:?}")] {
        assert!(!text.contains(SECRET), "secret leaked: {text}");
    }
}
