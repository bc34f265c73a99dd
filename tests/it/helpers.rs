//! Test set-up: the real aws-sdk-dynamodb client against the local moto server, a fresh table
//! per test, and a request counter (an SDK interceptor, so SDK-level retries count too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use shared::aws::{load_sdk_config, AwsTimeouts};
use shared::store::dynamo::DynamoStore;

/// Counts HTTP requests sent to DynamoDB.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<AtomicU64>);

impl RequestCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A store on a brand-new table, and the counter of its requests.
pub async fn fresh_store(name: &str) -> (DynamoStore, RequestCounter) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run the tests with `bash scripts/test-all.sh`, \
         which starts moto_server on 127.0.0.1 and exports it"
    );
    let sdk = load_sdk_config(AwsTimeouts::default()).await;
    let counter = RequestCounter::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
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
