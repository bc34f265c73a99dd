//! AWS SDK set-up, done once per process: the shared `SdkConfig` (region, credentials and the
//! standard endpoint overrides such as `AWS_ENDPOINT_URL_DYNAMODB`, all from the environment)
//! with explicit timeouts, since the SDK sets no operation timeout by default.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// DynamoDB timeouts. The whole operation (SDK retries included) stays far below the functions'
/// timeout, so a slow DynamoDB surfaces as a retryable error instead of a killed invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsTimeouts {
    pub connect: Duration,
    pub attempt: Duration,
    pub operation: Duration,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            connect: Duration::from_millis(1_000),
            attempt: Duration::from_millis(1_500),
            operation: Duration::from_millis(4_000),
        }
    }
}

/// Loads the SDK configuration from the environment (call once, at start).
pub async fn load_sdk_config(timeouts: AwsTimeouts) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .operation_attempt_timeout(timeouts.attempt)
                .operation_timeout(timeouts.operation)
                .build(),
        )
        .load()
        .await
}

/// The DynamoDB client (build once, share).
pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}
