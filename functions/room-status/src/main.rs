//! `room-status`: `GET /rooms/{channelId}` for viewer apps. Without a token: whether the room is
//! live, on the CDN, and its MixMode — the same answer for unknown rooms, cacheable for a few
//! seconds. With `?viewer_token=<exp>.<sig>` from the app's backend: who is on stage and freshly
//! signed playback URLs (HTTP-FLV first, RTMP, HLS), never cached.
//!
//! It reads the room's record and nothing else: it is started without the Live API client, and
//! template.yaml gives it only the secrets it uses (the play domain's URL-signing key and the
//! backend secret that signs viewer tokens), never the Alibaba AccessKey.

// The main future holds the AWS SDK's deeply nested request futures (init and handler): their
// layout can pass rustc's default query depth of 128 ("queries overflow the depth limit"; the
// remedy rustc suggests, as the aws-sdk users do).
#![recursion_limit = "256"]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use costream_runtime::init::StatusServices;
use costream_runtime::lambda::{error_response, json_response};
use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handler(
    services: &StatusServices,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let channel = event
        .payload
        .path_parameters
        .get("channelId")
        .map_or("", String::as_str);
    let token = event.payload.query_string_parameters.first("viewer_token");
    Ok(match services.room_status_for(channel, token).await {
        Ok(answer) => {
            let mut response = json_response(200, &answer);
            response.headers.insert(
                aws_lambda_events::http::header::CACHE_CONTROL,
                aws_lambda_events::http::HeaderValue::from_static(answer.cache_control()),
            );
            response
        }
        Err(e) => {
            let mut response = error_response(&e);
            response.headers.insert(
                aws_lambda_events::http::header::CACHE_CONTROL,
                aws_lambda_events::http::HeaderValue::from_static(
                    costream_app::handlers::viewer::PRIVATE_CACHE_CONTROL,
                ),
            );
            response
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start_status().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
