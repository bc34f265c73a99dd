//! Test set-up: the real aws-sdk-dynamodb client against the local moto server, a fresh table
//! per test, and a request counter (an SDK interceptor, so SDK-level retries count too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use costream_dynamo::DynamoStore;
use costream_runtime::aws::{load_sdk_config, AwsTimeouts};

/// Counts HTTP requests sent to DynamoDB, and keeps each one's operation and body (for the
/// cost measurements: which writes, of what item sizes).
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicU64>, Arc<Mutex<Vec<SentRequest>>>);

/// One request as sent: the operation (`PutItem`, `GetItem`, ...) and its JSON body.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub op: String,
    pub body: serde_json::Value,
}

impl RequestCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// The requests sent since the log was last taken.
    pub fn take(&self) -> Vec<SentRequest> {
        std::mem::take(&mut *self.1.lock().expect("request log"))
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let request = context.request();
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_owned();
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(serde_json::Value::Null);
        self.1
            .lock()
            .expect("request log")
            .push(SentRequest { op, body });
        Ok(())
    }
}

/// A store on a brand-new table, and the counter of its requests.
pub async fn fresh_store(name: &str) -> (DynamoStore, RequestCounter) {
    let endpoint = integration_tests::dynamodb_endpoint();
    let sdk = load_sdk_config(AwsTimeouts::default()).await;
    let counter = RequestCounter::default();
    // moto takes any credentials; set them here so a plain `cargo test` needs no environment.
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .interceptor(counter.clone())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let table = format!("costream-{name}-{nanos}");
    let store = DynamoStore::new(client, table);
    store.create_table().await.expect("create table on moto");
    (store, counter)
}

/// A fixture file under `tests/fixtures`.
pub fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// A fixture parsed as `T`.
pub fn fixture_json<T: serde::de::DeserializeOwned>(path: &str) -> T {
    serde_json::from_slice(&fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The deployment's configuration for the fixtures' app (AppId 9qb1abcd, the spec's domains and
/// keys), plus `extra` variables.
pub fn config(extra: &[(&str, &str)]) -> costream_app::config::Config {
    let base = [
        ("COSTREAM_APP_ID", "9qb1abcd"),
        ("COSTREAM_PUSH_DOMAIN", "push.example.com"),
        ("COSTREAM_PUSH_AUTH_KEY", "ingestkey"),
        ("COSTREAM_PLAY_DOMAIN", "pull.example.com"),
        ("COSTREAM_PLAY_AUTH_KEY", "playkey"),
        ("COSTREAM_CDN_NOTIFY_AUTH_KEY", "yourkey"),
        (
            "COSTREAM_CALLBACK_HOST",
            "abc123.execute-api.us-east-1.amazonaws.com",
        ),
    ];
    let vars: Vec<(String, String)> = base
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    costream_app::config::Config::from_lookup(move |k| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    })
    .expect("test configuration")
}
