//! `room-status`: `GET /rooms/{channelId}` → who is on stage, the MixMode, whether the CDN has
//! the stream, and freshly signed playback URLs (HTTP-FLV first, RTMP, HLS) for viewer apps.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use costream_runtime::init::LambdaServices;
use costream_runtime::lambda::{error_response, json_response};
use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handler(
    services: &LambdaServices,
    event: LambdaEvent<ApiGatewayV2httpRequest>,
) -> Result<ApiGatewayV2httpResponse, Error> {
    let channel = event
        .payload
        .path_parameters
        .get("channelId")
        .map_or("", String::as_str);
    Ok(match services.room_status(channel).await {
        Ok(status) => json_response(200, &status),
        Err(e) => error_response(&e),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = costream_runtime::lambda::start().await?;
    lambda_runtime::run(service_fn(|event| handler(&services, event))).await
}
