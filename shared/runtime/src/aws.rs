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

/// Why the configuration secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret named by COSTREAM_SECRET_ARN")]
    Fetch(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the secret named by COSTREAM_SECRET_ARN is not a JSON object of strings")]
    Format(#[source] serde_json::Error),
    #[error("the secret named by COSTREAM_SECRET_ARN has no SecretString")]
    Empty,
}

/// The variable lookup of a Lambda function: the environment first, then — if
/// `COSTREAM_SECRET_ARN` is set — the keys of that Secrets Manager secret (a JSON object such as
/// `{"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "...", "COSTREAM_PUSH_AUTH_KEY": "..."}`), read once at
/// init. Secrets thus never sit in plain environment values.
pub async fn secret_lookup(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<impl Fn(&str) -> Option<String>, SecretError> {
    let mut secrets = std::collections::HashMap::<String, String>::new();
    if let Some(arn) = env("COSTREAM_SECRET_ARN").filter(|a| !a.is_empty()) {
        let out = aws_sdk_secretsmanager::Client::new(sdk)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Fetch(Box::new(e)))?;
        let text = out.secret_string().ok_or(SecretError::Empty)?;
        secrets = serde_json::from_str(text).map_err(SecretError::Format)?;
    }
    Ok(move |var: &str| env(var).or_else(|| secrets.get(var).cloned()))
}
