//! `room-host`: the routes of the app's backend, signed with the secret shared with it
//! (`X-Costream-Timestamp`, `X-Costream-Signature`):
//! - `PUT /rooms/{channelId}/host` registers (or clears) a room's host: `{"user_id": "<id>"}` or
//!   `{"user_id": null}`. May change who hosts, so it can make the room's MPU call like the
//!   stream functions.
//! - `GET /rooms/{channelId}/history`: the room's last decisions (what was called, why, how it
//!   ended).
//! - `POST /rooms/{channelId}/tokens`: an ARTC join token for a user of the room.
//! - `PUT /rooms/{channelId}/pk` (`{"peer_channel_id": "c2"}`) and `DELETE
//!   /rooms/{channelId}/pk`: link two live rooms into a PK, or end it — written to both rooms in
//!   one transaction, then each room converges (one Update each).

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
    let method = ev.request_context.http.method.clone();
    let response = match body_bytes(ev) {
        Ok(body) => {
            let request = HostRequest {
                body: &body,
                timestamp,
                signature,
            };
            let invocation = event.context.request_id.as_str();
            let pk_route = ev.route_key.as_deref().is_some_and(|r| r.ends_with("/pk"));
            if method == aws_lambda_events::http::Method::GET {
                match services.room_history(channel, &request).await {
                    Ok(h) => json_response(200, &h),
                    Err(e) => error_response(&e),
                }
            } else if method == aws_lambda_events::http::Method::POST {
                match services.issue_token(channel, &request) {
                    Ok(t) => json_response(200, &t),
                    Err(e) => error_response(&e),
                }
            } else if method == aws_lambda_events::http::Method::DELETE {
                match services.unlink_pk(channel, &request, invocation).await {
                    Ok(outcome) => json_response(200, &outcome),
                    Err(e) => error_response(&e),
                }
            } else if pk_route {
                match services.link_pk(channel, &request, invocation).await {
                    Ok(outcome) => json_response(200, &outcome),
                    Err(e) => error_response(&e),
                }
            } else {
                match services.register_host(channel, &request, invocation).await {
                    Ok(outcome) => json_response(200, &outcome),
                    Err(e) => error_response(&e),
                }
            }
        }
        Err(e) => error_response(&e.into()),
    };
    emit_metrics("room-host");
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
