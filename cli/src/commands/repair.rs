//! `costream repair` (one pass of the repair loop, or the loop) and `costream history` (a
//! room's decisions), for operators.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use costream_app::config::{env_lookup, Config};
use costream_app::handlers::{Notifier, RoomHistory};
use costream_app::ports::{RoomKey, SystemClock};
use costream_app::repair::{RepairConfig, RepairReport};
use costream_core::ChannelId;
use costream_dynamo::DynamoStore;
use costream_runtime::init::{live_client, mpu_settings, services};
use secrecy::ExposeSecret as _;

use super::print_json;
use super::serve::{init_tracing, repair_interval};

/// Run the repair loop against the deployment's table and the Live API
///
/// One pass converges every room marked due (a refused or unanswered MPU call, a lease nobody
/// released, a StreamURL due for re-signing) and sweeps ListRtcMPUTaskDetail: costream-named
/// tasks no room wants are stopped, vanished ones started again, diverging ones updated. Tasks
/// not named by costream are never touched. The deployed `repair` function does the same every
/// minute; this is for operators (after an outage, or to see what a pass would find).
///
/// --once runs one pass and prints its report as JSON (exit status 1 if the pass met errors);
/// without it, a pass every COSTREAM_REPAIR_INTERVAL_SECS (default 15) until Ctrl-C.
///
/// Configured like the functions: COSTREAM_APP_ID, COSTREAM_TABLE (AWS credentials and region
/// from the usual AWS variables, AWS_ENDPOINT_URL_DYNAMODB for a local emulator),
/// COSTREAM_PUSH_DOMAIN and the other COSTREAM_* layout variables, and
/// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (ALIBABA_CLOUD_LIVE_ENDPOINT
/// overrides the endpoint).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RepairArgs {
    /// Run one pass, print its report and exit.
    #[arg(long)]
    pub once: bool,
    /// Skip the leak sweep (only the rooms marked due).
    #[arg(long)]
    pub no_sweep: bool,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

/// Show a room's last decisions: what was called, why, and how it ended
///
/// Prints {"channel_id", "entries": [{version, at_ms, trigger, command, outcome}, ...]}, oldest
/// first (the newest 32 are kept).
///
/// Reads the table COSTREAM_TABLE for the app COSTREAM_APP_ID; or, with --server, asks a running
/// costream (`costream serve`, or the deployed API) with the signed GET /rooms/{channelId}/history,
/// signed with the secret in COSTREAM_NOTIFY_SECRET.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct HistoryArgs {
    /// The room (ARTC ChannelId).
    #[arg(value_name = "CHANNEL")]
    pub channel: String,
    /// Base URL of a running costream (e.g. http://127.0.0.1:8080) instead of the table.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

pub fn run_repair(args: &RepairArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let failed = runtime.block_on(repair(args))?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

async fn repair(args: &RepairArgs) -> anyhow::Result<bool> {
    let env = env_lookup();
    let config = Config::from_lookup(&env)?;
    let interval = repair_interval(&env)?;
    let store = dynamo_store(&config).await?;
    let mpu =
        costream_app::mpu::AlibabaMpu::new(live_client(&env)?, SystemClock, mpu_settings(&config));
    let app = config.app_id.clone();
    let services = Arc::new(services(config, store, mpu, SystemClock)?);
    let repair_config = RepairConfig {
        sweep: !args.no_sweep,
        ..RepairConfig::default()
    };
    let pass = || async {
        let owner = format!("repair/cli-{}", uuid::Uuid::new_v4().simple());
        let report: RepairReport = services
            .shell
            .repair_pass(&app, &owner, &repair_config)
            .await;
        services.webhook_pass().await;
        costream_app::metrics::take();
        report
    };
    if args.once {
        let report = pass().await;
        print_json(&report)?;
        return Ok(!report.errors.is_empty());
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let report = pass().await;
                println!("{}", serde_json::to_string(&report)?);
            }
            _ = tokio::signal::ctrl_c() => return Ok(false),
        }
    }
}

async fn dynamo_store(config: &Config) -> anyhow::Result<DynamoStore> {
    let sdk =
        costream_runtime::aws::load_sdk_config(costream_runtime::aws::AwsTimeouts::default()).await;
    let table = config.require_table()?;
    Ok(DynamoStore::new(
        costream_runtime::aws::dynamodb_client(&sdk),
        table,
    ))
}

pub fn run_history(args: &HistoryArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let history = runtime.block_on(history(args))?;
    print_json(&history)
}

async fn history(args: &HistoryArgs) -> anyhow::Result<RoomHistory> {
    let channel = ChannelId::parse(args.channel.as_str()).map_err(|e| {
        anyhow::anyhow!("CHANNEL {:?} is not a valid channel id: {e}", args.channel)
    })?;
    if let Some(server) = &args.server {
        let secret = super::secret_from_env(
            "COSTREAM_NOTIFY_SECRET",
            "the secret shared with the app's backend",
        )?;
        let path = format!("/rooms/{channel}/history");
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let signature = Notifier::backend_signature(secret.expose_secret(), ts, "GET", &path, b"");
        let url = format!("{}{path}", server.trim_end_matches('/'));
        let response = reqwest::Client::new()
            .get(&url)
            .header("X-Costream-Timestamp", ts.to_string())
            .header("X-Costream-Signature", signature)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url} answered {status} with a body that is not JSON"))?;
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {body}");
        }
        return Ok(RoomHistory {
            channel_id: channel.to_string(),
            entries: serde_json::from_value(body["entries"].clone())
                .context("the answer has no valid entries")?,
        });
    }
    let env = env_lookup();
    let config = Config::from_lookup(&env)?;
    let store = dynamo_store(&config).await?;
    let key = RoomKey {
        app: config.app_id.clone(),
        channel: channel.clone(),
    };
    let entries = costream_app::ports::StateStore::history(&store, &key).await?;
    Ok(RoomHistory {
        channel_id: channel.to_string(),
        entries,
    })
}
