//! `cdn-ingest`: Alibaba CDN ingest callbacks (`GET /cdn/ingest?action=publish|publish_done&...`)
//! through the HTTP API. Verifies `ALI-LIVE-SIGNATURE` (it does not start without the key; a
//! signature pair is accepted once per room and action), records
//! the room's CDN liveness (and tells the app's backend), re-starts the task when the CDN lost a
//! stream the room still wants. Answers fast: Alibaba waits 5 s.

// The main future holds the AWS SDK's deeply nested request futures (init and handler): their
// layout can pass rustc's default query depth of 128 ("queries overflow the depth limit"; the
// remedy rustc suggests, as the aws-sdk users do).
#![recursion_limit = "256"]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use costream_runtime::init::LambdaServices;
use costream_runtime::lambda::{cdn_request, emit_metrics, error_response, json_response};
use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handler(
    services: &LambdaServices,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let invocation = event.context.request_id.clone();
    let request = cdn_request(&event.payload);
    let response = match services.cdn_ingest(&request, &invocation).await {
        Ok(outcome) => json_response(200, &outcome),
        Err(e) => error_response(&e),
    };
    emit_metrics("cdn-ingest");
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    // Fail closed: on Lambda the CDN's callbacks are always verified (only `costream serve` may
    // take them unsigned, on its local defaults).
    if services.config.cdn_notify_auth_key.is_none() {
        return Err(
            "COSTREAM_CDN_NOTIFY_AUTH_KEY is not set: cdn-ingest refuses to take unsigned callbacks"
                .into(),
        );
    }
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
