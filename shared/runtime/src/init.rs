//! Process start-up: configuration parsed once, clients built once, wired into [`Services`].
//! Used by the Lambda functions and by `costream serve --store dynamodb --mpu alibaba`.

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::aws::{dynamodb_client, load_sdk_config, secret_lookup, AwsTimeouts, SecretError};
use costream_alibaba::client::ClientBuildError;
use costream_alibaba::{Credentials, CredentialsError, LiveClient, LiveClientConfig};
use costream_app::config::{env_lookup, Config, ConfigError};
use costream_app::handlers::{EndGraceWait, Notifier, Services, INLINE_GRACE_WAIT_MS};
use costream_app::mpu::{AlibabaMpu, MpuSettings};
use costream_app::ports::{
    Clock, Listing, MpuDone, MpuFailure, MpuFailureKind, MpuPort, RoomKey, StateStore, SystemClock,
};
use costream_app::shell::{Shell, ShellConfig};
use costream_app::store::cached::Cached;
use costream_core::{Command, Outputs, Shape, TaskId, Version};
use costream_dynamo::DynamoStore;

/// The services of a deployed function: DynamoDB and the real Live API.
///
/// The store keeps this container's copy of each room it wrote or read (`Cached`), so a warm
/// container commits a callback with one conditional write and no read (ARCHITECTURE.md, "The
/// cost of a callback").
pub type LambdaServices =
    Services<Cached<DynamoStore>, AlibabaMpu<LiveClient, SystemClock>, SystemClock>;

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
    config.mpu_settings()
}

/// The shell's tunables from the configuration ([`Config::shell_config`]).
pub fn shell_config(config: &Config) -> ShellConfig {
    config.shell_config()
}

/// Wires a shell and its services from parts.
pub fn services<S: StateStore, M: MpuPort, C: Clock>(
    config: Config,
    store: S,
    mpu: M,
    clock: C,
) -> Result<Services<S, M, C>, InitError> {
    services_with(config, store, mpu, clock, None)
}

/// [`services`] with the notifier's HTTP client already built ([`Notifier::http_client`]).
fn services_with<S: StateStore, M: MpuPort, C: Clock>(
    config: Config,
    store: S,
    mpu: M,
    clock: C,
    notify_http: Option<reqwest::Client>,
) -> Result<Services<S, M, C>, InitError> {
    let notifier = match (config.notify.clone(), notify_http) {
        (Some(settings), Some(client)) => Some(Notifier::with_client(settings, client)),
        (Some(settings), None) => Some(Notifier::new(settings).map_err(InitError::Notifier)?),
        (None, _) => None,
    };
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
        // A function waits out an end grace that fits its invocation; `serve` hands it to a
        // background task instead.
        end_grace: EndGraceWait::Inline {
            max_ms: INLINE_GRACE_WAIT_MS,
        },
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

/// The configuration of a deployed function: the environment backed by the function's secrets
/// (read once, here, concurrently), and the lookup itself for the clients that read their own
/// variables (the Alibaba AccessKey).
async fn configure(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Config, impl Fn(&str) -> Option<String>), InitError> {
    let lookup = secret_lookup(sdk, env).await?;
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
    Ok((config, lookup))
}

/// Everything a deployed function that runs the room shell needs (stream-published,
/// stream-unpublished, cdn-ingest, room-host, room-settings, repair), from the environment and
/// the function's secrets: DynamoDB and the real Live API (so the Alibaba AccessKey).
pub async fn lambda_services() -> Result<LambdaServices, InitError> {
    let sdk = load_sdk_config(AwsTimeouts::default()).await;
    lambda_services_from(&sdk, env_lookup()).await
}

/// [`lambda_services`] from a given SDK configuration and variable lookup (tests, benches).
pub async fn lambda_services_from(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LambdaServices, InitError> {
    // The two HTTP clients load the TLS roots (milliseconds of CPU each): built on a blocking
    // thread while the secrets are fetched (network wait), with the client settings of the
    // environment (they are not secrets); rebuilt only if the secrets set other timeouts.
    let early = LiveClientConfig::from_lookup(&env)?;
    let clients = tokio::task::spawn_blocking(move || {
        let live = LiveClient::http_client(&early).map(|http| (early, http));
        (live, Notifier::http_client())
    });
    let (config, lookup) = configure(sdk, env).await?;
    let (live_http, notify_http) = match clients.await {
        Ok((live, notify)) => (live.ok(), notify.ok()),
        Err(_) => (None, None),
    };
    let live_config = LiveClientConfig::from_lookup(&lookup)?;
    let credentials = Credentials::from_lookup(&lookup)?;
    let live = match live_http {
        Some((early, http))
            if early.connect_timeout == live_config.connect_timeout
                && early.attempt_timeout == live_config.attempt_timeout =>
        {
            LiveClient::with_http(live_config, credentials, http)?
        }
        _ => LiveClient::new(live_config, credentials)?,
    };
    let store = Cached::new(DynamoStore::new(
        dynamodb_client(sdk),
        config.require_table()?,
    ));
    let mpu = AlibabaMpu::new(live, SystemClock, mpu_settings(&config));
    services_with(config, store, mpu, SystemClock, notify_http)
}

/// The services of room-status: DynamoDB only. It answers from the room's record and never
/// calls the Live API, so it is built without an Alibaba AccessKey (template.yaml gives it no
/// access to that secret) and its MPU port refuses every call.
pub type StatusServices = Services<DynamoStore, NoMpu, SystemClock>;

/// Everything room-status needs, from the environment and its secrets (the play domain's
/// URL-signing key and the backend secret that signs viewer tokens).
pub async fn status_services() -> Result<StatusServices, InitError> {
    let sdk = load_sdk_config(AwsTimeouts::default()).await;
    status_services_from(&sdk, env_lookup()).await
}

/// [`status_services`] from a given SDK configuration and variable lookup (tests, benches).
pub async fn status_services_from(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StatusServices, InitError> {
    let (mut config, _) = configure(sdk, env).await?;
    // room-status writes nothing, so it has no webhooks to send: no notifier, whose HTTP client
    // would load the TLS roots at every cold start for nothing (the viewer route's cold starts
    // come in bursts, when a popular room goes live).
    config.notify = None;
    let store = DynamoStore::new(dynamodb_client(sdk), config.require_table()?);
    services(config, store, NoMpu, SystemClock)
}

/// The MPU port of a function that makes no MPU calls (room-status). It holds no credentials;
/// a call, were one ever made, is refused for good and never sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoMpu;

impl NoMpu {
    fn refused(action: &'static str) -> MpuFailure {
        MpuFailure {
            kind: MpuFailureKind::Refused { retryable: false },
            action,
            reason: "this function has no Alibaba AccessKey and makes no MPU calls".to_owned(),
        }
    }
}

impl MpuPort for NoMpu {
    async fn execute(
        &self,
        _room: &RoomKey,
        command: &Command,
        _version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        Err(Self::refused(match command {
            Command::Start { .. } => "start",
            Command::Update { .. } => "update",
            Command::Stop { .. } => "stop",
        }))
    }

    async fn list_tasks(&self) -> Result<Listing, MpuFailure> {
        Err(Self::refused("list"))
    }

    async fn task_exists(&self, _task: &TaskId) -> Result<bool, MpuFailure> {
        Err(Self::refused("list"))
    }

    async fn refresh_output(
        &self,
        _room: &RoomKey,
        _task: &TaskId,
        _shape: &Shape,
        _outputs: &Outputs,
        _version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        Err(Self::refused("update"))
    }
}
