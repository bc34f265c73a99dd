//! `room-host`: `PUT /rooms/{channelId}/host` from the app's backend registers (or clears) a room's
//! host: `{"user_id": "<id>"}` or `{"user_id": null}`, signed with the secret shared with the
//! backend (`X-Costream-Timestamp`, `X-Costream-Signature`). May change who hosts, so it can make
//! the room's MPU call like the stream functions.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use costream_app::handlers::HostRequest;
use costream_runtime::init::LambdaServices;
use costream_runtime::lambda::{backend_headers, body_bytes, error_response, json_response};
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
    let result = match body_bytes(ev) {
        Ok(body) => {
            let request = HostRequest {
                body: &body,
                timestamp,
                signature,
            };
            services
                .register_host(channel, &request, &event.context.request_id)
                .await
        }
        Err(e) => Err(e.into()),
    };
    Ok(match result {
        Ok(outcome) => json_response(200, &outcome),
        Err(e) => error_response(&e),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
