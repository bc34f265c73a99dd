//! Process start-up: configuration parsed once, clients built once, wired into [`Services`].
//! Used by the Lambda functions and by `costream serve --store dynamodb --mpu alibaba`.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::{dynamodb_client, load_sdk_config, secret_lookup, AwsTimeouts, SecretError};
use costream_alibaba::client::ClientBuildError;
use costream_alibaba::{Credentials, CredentialsError, LiveClient, LiveClientConfig};
use costream_app::config::{env_lookup, Config, ConfigError};
use costream_app::handlers::{Notifier, Services};
use costream_app::mpu::{AlibabaMpu, MpuSettings};
use costream_app::ports::{Clock, MpuPort, StateStore, SystemClock};
use costream_app::shell::{Shell, ShellConfig};
use costream_dynamo::DynamoStore;

/// The services of a deployed function: DynamoDB and the real Live API.
pub type LambdaServices = Services<DynamoStore, AlibabaMpu<LiveClient, SystemClock>, SystemClock>;

/// Why the process cannot start. Names the variable or part at fault, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot build the notification HTTP client")]
    Notifier(#[source] reqwest::Error),
}

/// The MPU adapter's settings from the configuration.
pub fn mpu_settings(config: &Config) -> MpuSettings {
    MpuSettings {
        app_id: config.app_id.clone(),
        ingest: config.ingest.clone(),
        decision: config.decision.clone(),
        region: config.region,
        // Alibaba refuses a StreamURL for 10 s after a Stop; wait that out inside the call.
        stream_url_wait: Duration::from_secs(12),
    }
}

/// The shell's tunables from the configuration: the StreamURL is re-signed at half its
/// validity when the ingest domain signs URLs.
pub fn shell_config(config: &Config) -> ShellConfig {
    let validity_ms = u64::try_from(config.ingest.url_validity.as_millis()).unwrap_or(u64::MAX);
    ShellConfig {
        resign_after_ms: config
            .ingest
            .push_auth_key
            .as_ref()
            .map(|_| validity_ms / 2),
        webhooks: config.notify.is_some(),
        max_starts_per_minute: Some(config.max_starts_per_minute),
        ..ShellConfig::default()
    }
}

/// Wires a shell and its services from parts.
pub fn services<S: StateStore, M: MpuPort, C: Clock>(
    config: Config,
    store: S,
    mpu: M,
    clock: C,
) -> Result<Services<S, M, C>, InitError> {
    let notifier = config
        .notify
        .clone()
        .map(Notifier::new)
        .transpose()
        .map_err(InitError::Notifier)?;
    Ok(Services {
        shell: Shell {
            store,
            mpu,
            clock,
            decision: config.decision.clone(),
            config: shell_config(&config),
        },
        config: Arc::new(config),
        notifier,
    })
}

/// The real Live API client from a variable lookup.
pub fn live_client(lookup: impl Fn(&str) -> Option<String>) -> Result<LiveClient, InitError> {
    Ok(LiveClient::new(
        LiveClientConfig::from_lookup(&lookup)?,
        Credentials::from_lookup(&lookup)?,
    )?)
}

/// `MaxIdleTime` of a deployed function's tasks when `COSTREAM_MAX_IDLE_TIME` is unset.
pub const LAMBDA_MAX_IDLE_TIME_SECS: u32 = 120;

/// Everything a deployed function needs, from the environment and the configuration secret.
pub async fn lambda_services() -> Result<LambdaServices, InitError> {
    let sdk = load_sdk_config(AwsTimeouts::default()).await;
    let lookup = secret_lookup(&sdk, env_lookup()).await?;
    let mut config = Config::from_lookup(&lookup)?;
    // Deployed, a task never runs on without a MaxIdleTime: a leaked or forged task stops by
    // itself after LAMBDA_MAX_IDLE_TIME_SECS idle.
    if config.decision.max_idle_time.is_none() {
        tracing::warn!(
            default = LAMBDA_MAX_IDLE_TIME_SECS,
            "COSTREAM_MAX_IDLE_TIME unset; using the default"
        );
        config.decision.max_idle_time = Some(LAMBDA_MAX_IDLE_TIME_SECS);
    }
    let store = DynamoStore::new(dynamodb_client(&sdk), config.require_table()?);
    let mpu = AlibabaMpu::new(live_client(&lookup)?, SystemClock, mpu_settings(&config));
    services(config, store, mpu, SystemClock)
}
