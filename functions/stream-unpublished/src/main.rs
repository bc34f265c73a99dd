//! `stream-unpublished`: ARTC room callbacks delivered by EventBridge (the callback body is the event's
//! `detail`). Acts on Unpublish, Leave, Roleupdate-to-viewer and channel close; the other
//! function handles the rest of a callback. Errors are reported as Retryable (Lambda's retries
//! and the redelivery repair the room) or NonRetryable (bad input, kept in the dead-letter queue).

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::Value;
use shared::handlers::ArtcOutcome;
use shared::inbound::Side;
use shared::init::LambdaServices;

async fn handler(
    services: &LambdaServices,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<ArtcOutcome, Diagnostic> {
    let invocation = event.context.request_id;
    services
        .artc_detail(&event.payload.detail, Side::Unpublished, &invocation)
        .await
        .map_err(|e| shared::lambda::diagnostic(&e))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = shared::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
