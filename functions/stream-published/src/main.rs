//! `stream-published`: ARTC room callbacks delivered by EventBridge (the callback body is the event's
//! `detail`). Acts on Publish, Join and Roleupdate-to-interactive; the other function handles the rest of a callback.
//! Errors are reported as Retryable (Lambda's retries and the redelivery repair the room) or
//! NonRetryable (bad input, kept in the dead-letter queue).

// The main future holds the AWS SDK's deeply nested request futures (init and handler): their
// layout can pass rustc's default query depth of 128 ("queries overflow the depth limit"; the
// remedy rustc suggests, as the aws-sdk users do).
#![recursion_limit = "256"]

use costream_app::inbound::Side;
use costream_runtime::lambda::artc_event;
use lambda_runtime::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| {
        artc_event(&services, event, Side::Published)
    }))
    .await
}
