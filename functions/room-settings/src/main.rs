//! `room-settings`: `PUT /rooms/{channelId}/settings` from the app's backend, signed with the
//! secret shared with it (`X-Costream-Timestamp`, `X-Costream-Signature`). Sets the room's
//! layout, canvas, pane limit and images; a live room converges to them at once (one Update),
//! so like the stream functions it can make the room's MPU call.

// The main future holds the AWS SDK's deeply nested request futures (init and handler): their
// layout can pass rustc's default query depth of 128 ("queries overflow the depth limit"; the
// remedy rustc suggests, as the aws-sdk users do).
#![recursion_limit = "256"]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use costream_app::handlers::HostRequest;
use costream_runtime::init::LambdaServices;
use costream_runtime::lambda::{
    backend_headers, body_bytes, emit_metrics, error_response, json_response,
};
use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handler(
    services: &LambdaServices,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let ev = &event.payload;
    let channel = ev
        .path_parameters
        .get("channelId")
        .map_or("", String::as_str);
    let (timestamp, signature) = backend_headers(ev);
    let response = match body_bytes(ev) {
        Ok(body) => {
            let request = HostRequest {
                body: &body,
                timestamp,
                signature,
            };
            match services
                .put_settings(channel, &request, &event.context.request_id)
                .await
            {
                Ok(outcome) => json_response(200, &outcome),
                Err(e) => error_response(&e),
            }
        }
        Err(e) => error_response(&e.into()),
    };
    emit_metrics("room-settings");
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
