//! `costream serve`: the main job, locally. One process with the deployed HTTP API's routes and
//! the same handler code as the Lambda functions.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use costream_app::config::{env_lookup, with_local_defaults, Config, LOCAL_DEFAULTS};
use costream_app::mpu::AlibabaMpu;
use costream_app::ports::SystemClock;
use costream_app::store::cached::Cached;
use costream_app::store::memory::InMemoryStore;
use costream_dynamo::DynamoStore;
use costream_runtime::init::{live_client, mpu_settings, services};
use costream_sim::SimulatedLive;

use crate::local::{repair_loop, router, serve_with, Local};

/// Run the costream server locally: the routes of the deployed HTTP API on one port.
///
/// Routes: POST /artc/{secret} (ARTC room callbacks, both functions' tags), GET /cdn/ingest (CDN
/// ingest callbacks), GET /rooms/{channelId} (room status with signed playback URLs), PUT
/// /rooms/{channelId}/host (host registration by the app's backend, signed with
/// COSTREAM_NOTIFY_SECRET), GET /rooms/{channelId}/history (signed the same way) and, with the
/// simulator, GET /_sim/tasks (the simulated MPU tasks).
///
/// Live view (local only, unsigned): GET / is a self-contained page (no external assets) that
/// polls GET /_local/view every second and shows each room's host, stage, waiting list, MixMode,
/// CDN liveness, settings, the layout last applied drawn to scale, and the last MPU calls. Both
/// are served only when --listen is a loopback address, and only to requests addressed to
/// localhost or a loopback IP (they show signed playback URLs and user ids); otherwise they
/// answer 404 (403 for another Host).
///
/// The repair loop runs in-process every COSTREAM_REPAIR_INTERVAL_SECS (default 15): rooms whose
/// MPU call was refused or unanswered converge with no new callback, and the leak sweep stops
/// tasks no room wants.
///
/// With no environment at all it runs on local-only defaults (app id `local-app`, callback path
/// secret `local-secret`, fake domains and keys) and says which ones it used. Configure it with
/// the same COSTREAM_* variables as the deployment (see the README).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where room state lives.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// With --store dynamodb: create the COSTREAM_TABLE table first (on-demand, TTL on).
    #[arg(long)]
    pub create_table: bool,
    /// Which MPU API to call.
    #[arg(long, value_enum, default_value_t = MpuKind::Sim)]
    pub mpu: MpuKind,
    /// Log as JSON lines (as on Lambda) instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In-process memory: state is lost when the server stops.
    Memory,
    /// The DynamoDB table COSTREAM_TABLE (AWS_ENDPOINT_URL_DYNAMODB for a local emulator).
    Dynamodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MpuKind {
    /// The built-in simulator with Alibaba's semantics; logs every call.
    Sim,
    /// The real Live API at ALIBABA_CLOUD_LIVE_ENDPOINT (default https://live.aliyuncs.com/),
    /// signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    Alibaba,
}

pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The configuration with local defaults for whatever is unset, naming the defaults used.
pub fn local_config() -> anyhow::Result<Config> {
    let env = env_lookup();
    let defaulted: Vec<&str> = LOCAL_DEFAULTS
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| env(k).is_none_or(|v| v.is_empty()))
        .collect();
    if !defaulted.is_empty() {
        tracing::warn!(
            variables = defaulted.join(","),
            "using LOCAL-ONLY defaults for unset variables; never use these in a deployment"
        );
    }
    Ok(Config::from_lookup(with_local_defaults(env))?)
}

/// The secrets `serve` would otherwise take from its local defaults.
const LOCAL_DEFAULT_SECRETS: [&str; 4] = [
    "COSTREAM_PUSH_AUTH_KEY",
    "COSTREAM_PLAY_AUTH_KEY",
    "COSTREAM_ARTC_CALLBACK_SECRET",
    "COSTREAM_NOTIFY_SECRET",
];

/// With the real Live API, every secret must be set: the local defaults are public (they are
/// in this repository), and a stream signed with them, or a callback path guessable from them,
/// would be a real deployment's hole.
pub fn refuse_local_secrets(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let unset: Vec<&str> = LOCAL_DEFAULT_SECRETS
        .into_iter()
        .filter(|var| env(var).is_none_or(|v| v.is_empty()))
        .collect();
    if !unset.is_empty() {
        anyhow::bail!(
            "--mpu alibaba needs real secrets, not the local defaults: set {}",
            unset.join(", ")
        );
    }
    Ok(())
}

/// `COSTREAM_REPAIR_INTERVAL_SECS`: how often `serve` runs the repair loop (default 15 s, 1–3600).
pub fn repair_interval(
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<std::time::Duration> {
    const VAR: &str = "COSTREAM_REPAIR_INTERVAL_SECS";
    match env(VAR).filter(|v| !v.trim().is_empty()) {
        None => Ok(std::time::Duration::from_secs(DEFAULT_REPAIR_INTERVAL_SECS)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(std::time::Duration::from_secs(n)),
            _ => anyhow::bail!("{VAR} must be a whole number of seconds from 1 to 3600, got {v:?}"),
        },
    }
}

/// The repair loop's period under `serve` when `COSTREAM_REPAIR_INTERVAL_SECS` is unset.
pub const DEFAULT_REPAIR_INTERVAL_SECS: u64 = 15;

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: &ServeArgs) -> anyhow::Result<()> {
    if args.mpu == MpuKind::Alibaba {
        refuse_local_secrets(&env_lookup())?;
    }
    let config = local_config()?;
    let sim = Arc::new(SimulatedLive::default());
    let settings = mpu_settings(&config);
    let store_kind = args.store;
    // Four combinations, one generic router: monomorphised per store and MPU.
    let interval = repair_interval(&env_lookup())?;
    // The memory store knows only this process's rooms: in front of the real Live API, the
    // sweep must not take the deployment's tasks for leaks.
    let stop_unknown = !(store_kind == StoreKind::Memory && args.mpu == MpuKind::Alibaba);
    if !stop_unknown {
        tracing::warn!("--store memory with --mpu alibaba: the repair loop's sweep leaves tasks of rooms it does not know alone");
    }
    let view = args.listen.ip().is_loopback();
    if view {
        tracing::info!("live view: http://{}/", args.listen);
    } else {
        tracing::info!(
            "live view off: GET / and /_local/view are only served on a loopback --listen address"
        );
    }
    macro_rules! start {
        ($store:expr, $mpu:expr, $sim:expr) => {{
            let (graces, grace_ends) = tokio::sync::mpsc::unbounded_channel();
            let mut svc = services(config, $store, $mpu, SystemClock)?;
            // Callbacks are answered at once; an event held for the end grace is merged by a
            // background task when the grace ends.
            svc.end_grace = costream_app::handlers::EndGraceWait::Background(graces);
            let local = Arc::new(Local::new(svc, $sim, view));
            let repair = repair_loop(local.clone(), interval, stop_unknown, grace_ends);
            serve_with(args.listen, router(local), repair).await
        }};
    }
    let table = config.table.clone();
    let dynamo = || async {
        let sdk =
            costream_runtime::aws::load_sdk_config(costream_runtime::aws::AwsTimeouts::default())
                .await;
        let table = table.context("--store dynamodb needs COSTREAM_TABLE")?;
        let store = DynamoStore::new(costream_runtime::aws::dynamodb_client(&sdk), table);
        if args.create_table {
            store
                .create_table()
                .await
                .context("cannot create the table")?;
            tracing::info!(table = store.table(), "table ready");
        }
        // As on Lambda: the process keeps the rooms it wrote, so a commit needs no read.
        anyhow::Ok(Cached::new(store))
    };
    tracing::info!(store = ?store_kind, mpu = ?args.mpu, app_id = %config.app_id, "starting");
    match (store_kind, args.mpu) {
        (StoreKind::Memory, MpuKind::Sim) => start!(
            Cached::new(InMemoryStore::new()),
            AlibabaMpu::new(sim.clone(), SystemClock, settings),
            Some(sim)
        ),
        (StoreKind::Dynamodb, MpuKind::Sim) => start!(
            dynamo().await?,
            AlibabaMpu::new(sim.clone(), SystemClock, settings),
            Some(sim)
        ),
        (StoreKind::Memory, MpuKind::Alibaba) => start!(
            Cached::new(InMemoryStore::new()),
            AlibabaMpu::new(live_client(env_lookup())?, SystemClock, settings),
            None
        ),
        (StoreKind::Dynamodb, MpuKind::Alibaba) => start!(
            dynamo().await?,
            AlibabaMpu::new(live_client(env_lookup())?, SystemClock, settings),
            None
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(value: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let value = value.map(str::to_owned);
        move |k: &str| {
            (k == "COSTREAM_REPAIR_INTERVAL_SECS")
                .then(|| value.clone())
                .flatten()
        }
    }

    #[test]
    fn the_repair_interval_defaults_to_15_s_and_refuses_nonsense_by_name() {
        assert_eq!(
            repair_interval(&lookup(None)).expect("default"),
            std::time::Duration::from_secs(15)
        );
        assert_eq!(
            repair_interval(&lookup(Some(" 2 "))).expect("set"),
            std::time::Duration::from_secs(2)
        );
        for bad in ["0", "3601", "1.5", "soon", "-1"] {
            let err = repair_interval(&lookup(Some(bad)))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("COSTREAM_REPAIR_INTERVAL_SECS"), "{err}");
        }
    }
}
