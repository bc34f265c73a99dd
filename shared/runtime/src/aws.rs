//! AWS SDK set-up, done once per process: the shared `SdkConfig` (region, credentials and the
//! standard endpoint overrides such as `AWS_ENDPOINT_URL_DYNAMODB`, all from the environment)
//! with explicit timeouts, since the SDK sets no operation timeout by default.

use std::collections::HashMap;
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

/// The Secrets Manager client (build once, share).
pub fn secrets_client(sdk: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(sdk)
}

/// The variable naming the secrets a function reads: one secret ARN, or several separated by
/// commas (ARNs and secret names never contain one). Each secret is a JSON object of strings
/// whose keys are the variable names the configuration looks up.
pub const SECRET_ARN_VAR: &str = "COSTREAM_SECRET_ARN";

/// Why the configuration secrets could not be read. Names the secret (its ARN, not secret) and
/// the key at fault, never a value: a JSON error is reduced to its position, since serde's
/// message can quote the offending value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the secret {arn} (named by COSTREAM_SECRET_ARN)")]
    Fetch {
        arn: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the secret {arn} (named by COSTREAM_SECRET_ARN) is not a JSON object of strings \
         ({what} at line {line}, column {column})"
    )]
    Format {
        arn: String,
        what: &'static str,
        line: usize,
        column: usize,
    },
    #[error("the secret {arn} (named by COSTREAM_SECRET_ARN) has no SecretString")]
    Empty { arn: String },
    #[error("the key {key} is in two secrets named by COSTREAM_SECRET_ARN: {first} and {second}")]
    Duplicate {
        key: String,
        first: String,
        second: String,
    },
}

/// The secret ARNs in `COSTREAM_SECRET_ARN` (comma-separated, blanks ignored), in order.
pub fn secret_arns(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One secret's keys and values, parsed. Nothing of the text reaches the error.
pub fn parse_secret(arn: &str, text: &str) -> Result<HashMap<String, String>, SecretError> {
    serde_json::from_str(text).map_err(|e| SecretError::Format {
        arn: arn.to_owned(),
        what: match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not an object of strings",
            serde_json::error::Category::Eof => "cut short",
        },
        line: e.line(),
        column: e.column(),
    })
}

/// Merges the secrets' keys, in `COSTREAM_SECRET_ARN` order. A key in two secrets is an error:
/// each value has exactly one home, so rotating it in one secret can't leave a stale copy winning.
pub fn merge_secrets(
    parsed: Vec<(String, HashMap<String, String>)>,
) -> Result<HashMap<String, String>, SecretError> {
    let mut merged = HashMap::new();
    let mut home: HashMap<String, String> = HashMap::new();
    for (arn, keys) in parsed {
        for (key, value) in keys {
            if let Some(first) = home.get(&key) {
                return Err(SecretError::Duplicate {
                    key,
                    first: first.clone(),
                    second: arn,
                });
            }
            home.insert(key.clone(), arn.clone());
            merged.insert(key, value);
        }
    }
    Ok(merged)
}

/// Reads one secret.
async fn fetch_secret(
    client: aws_sdk_secretsmanager::Client,
    arn: String,
) -> Result<(String, HashMap<String, String>), SecretError> {
    let out = match client.get_secret_value().secret_id(&arn).send().await {
        Ok(out) => out,
        Err(e) => {
            return Err(SecretError::Fetch {
                arn,
                source: Box::new(e),
            })
        }
    };
    let Some(text) = out.secret_string() else {
        return Err(SecretError::Empty { arn });
    };
    let keys = parse_secret(&arn, text)?;
    Ok((arn, keys))
}

/// Reads the secrets `arns` **concurrently** (one request each, all in flight at once, so a
/// function with three secrets waits about as long as one with one) and merges their keys
/// ([`merge_secrets`]). The first failure, in `arns` order, is the error.
pub async fn fetch_secrets(
    client: &aws_sdk_secretsmanager::Client,
    arns: &[String],
) -> Result<HashMap<String, String>, SecretError> {
    let tasks: Vec<_> = arns
        .iter()
        .map(|arn| tokio::spawn(fetch_secret(client.clone(), arn.clone())))
        .collect();
    let mut parsed = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for (task, arn) in tasks.into_iter().zip(arns) {
        let result = match task.await {
            Ok(result) => result,
            // Only a panic inside the SDK gets here: report it as that secret's fetch failing.
            Err(e) => Err(SecretError::Fetch {
                arn: arn.clone(),
                source: Box::new(e),
            }),
        };
        match result {
            Ok(one) => parsed.push(one),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => merge_secrets(parsed),
    }
}

/// The variable lookup of a Lambda function: the environment first, then the keys of the
/// Secrets Manager secrets named by `COSTREAM_SECRET_ARN` (each a JSON object such as
/// `{"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "..."}`), read once at init, concurrently, and kept for
/// the life of the process (the container): warm invocations never call Secrets Manager.
/// Secrets thus never sit in plain environment values, and each function is given (by
/// template.yaml: its variable and its IAM policy) only the secrets it uses.
pub async fn secret_lookup(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<impl Fn(&str) -> Option<String>, SecretError> {
    let arns = secret_arns(env(SECRET_ARN_VAR).as_deref());
    let secrets = if arns.is_empty() {
        HashMap::new()
    } else {
        let started = std::time::Instant::now();
        let secrets = fetch_secrets(&secrets_client(sdk), &arns).await?;
        // Counts and time only: never a key's value.
        tracing::info!(
            secrets = arns.len(),
            keys = secrets.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "configuration secrets loaded"
        );
        secrets
    };
    Ok(move |var: &str| env(var).or_else(|| secrets.get(var).cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_variable_holds_one_or_several_arns() {
        assert!(secret_arns(None).is_empty());
        assert!(secret_arns(Some("")).is_empty());
        assert_eq!(secret_arns(Some("arn:a")), ["arn:a"]);
        assert_eq!(
            secret_arns(Some(" arn:a , arn:b,,")),
            ["arn:a".to_owned(), "arn:b".to_owned()]
        );
    }

    #[test]
    fn secrets_merge_and_a_key_has_one_home() {
        let merged = merge_secrets(vec![
            ("arn:a".into(), keys(&[("A", "1")])),
            ("arn:b".into(), keys(&[("B", "2")])),
        ])
        .expect("disjoint");
        assert_eq!(merged, keys(&[("A", "1"), ("B", "2")]));
        let err = merge_secrets(vec![
            ("arn:a".into(), keys(&[("A", "value-one")])),
            ("arn:b".into(), keys(&[("A", "value-two")])),
        ])
        .expect_err("A twice");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("A") && shown.contains("arn:a") && shown.contains("arn:b"));
        assert!(
            !shown.contains("value-one") && !shown.contains("value-two"),
            "{shown}"
        );
    }

    #[test]
    fn a_malformed_secret_never_shows_its_content() {
        for text in [
            r#"{"ALIBABA_CLOUD_ACCESS_KEY_SECRET": 987654321}"#,
            r#"{"COSTREAM_PUSH_AUTH_KEY": true}"#,
            r#"{"COSTREAM_PUSH_AUTH_KEY": "s3cr3t-value""#,
            r#"s3cr3t-value"#,
            r#"["s3cr3t-value"]"#,
        ] {
            let err = parse_secret("arn:x", text).expect_err(text);
            let shown = format!("{err} {err:?}");
            for needle in ["987654321", "true", "s3cr3t-value"] {
                assert!(!shown.contains(needle), "{text}: {shown}");
            }
            assert!(shown.contains("arn:x"), "{shown}");
        }
        assert_eq!(
            parse_secret("arn:x", r#"{"K": "v"}"#).expect("valid"),
            keys(&[("K", "v")])
        );
    }
}
