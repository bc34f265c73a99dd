//! `stream-published`: ARTC room callbacks delivered by EventBridge (the callback body is the event's
//! `detail`). Acts on Publish, Join and Roleupdate-to-interactive; the other function handles the rest of a callback.
//! Errors are reported as Retryable (Lambda's retries and the redelivery repair the room) or
//! NonRetryable (bad input, kept in the dead-letter queue).

use lambda_runtime::{service_fn, Error};
use shared::inbound::Side;
use shared::lambda::artc_event;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = shared::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| {
        artc_event(&services, event, Side::Published)
    }))
    .await
}
