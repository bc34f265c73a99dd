//! `repair`: the repair loop, on a schedule (every minute, see template.yaml). Converges every
//! room marked due — a refused or unanswered MPU call, a lease its holder never released, a
//! StreamURL due for re-signing — and sweeps the app's task list for leaked, vanished or
//! diverging tasks, all through the same shell as the callbacks (see `costream_app::repair`).
//!
//! It never fails as a whole: what it could not do is counted (`repair_failures`, alarmed) and
//! left for the next pass, a minute later.

// The main future holds the AWS SDK's deeply nested request futures (init and handler): their
// layout can pass rustc's default query depth of 128 ("queries overflow the depth limit"; the
// remedy rustc suggests, as the aws-sdk users do).
#![recursion_limit = "256"]

use std::time::Duration;

use costream_app::repair::{RepairConfig, RepairReport};
use costream_runtime::init::LambdaServices;
use costream_runtime::lambda::emit_metrics;
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// No due room is started after this long, and the sweep acts on nothing new after
/// `SWEEP_DEADLINE`: a room's repair can take one Start waiting out a held StreamURL (12 s) plus
/// a call (8 s), and the function's Timeout is 30 s. What is left waits for the next minute; a
/// pass cut off by the Timeout all the same loses nothing (leases and marks cover it).
const PASS_DEADLINE: Duration = Duration::from_secs(5);
const SWEEP_DEADLINE: Duration = Duration::from_secs(10);

async fn handler(
    services: &LambdaServices,
    event: LambdaEvent<serde_json::Value>,
) -> Result<RepairReport, Error> {
    let config = RepairConfig {
        deadline: PASS_DEADLINE,
        sweep_deadline: SWEEP_DEADLINE,
        ..RepairConfig::default()
    };
    let owner = format!("repair/{}", event.context.request_id);
    let report = services
        .shell
        .repair_pass(&services.config.app_id, &owner, &config)
        .await;
    // Webhooks the handlers could not deliver, retried with their backoff.
    services.webhook_pass().await;
    emit_metrics("repair");
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
