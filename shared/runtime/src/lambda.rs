//! Lambda glue shared by the function crates (feature `lambda`): start-up, typed error
//! diagnostics, and API Gateway (HTTP API, payload v2) conversions. No business logic.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde::Serialize;

use crate::init::{lambda_services, status_services, InitError, LambdaServices, StatusServices};
use costream_app::handlers::{ArtcOutcome, CdnRequest, HandlerError, Services};
use costream_app::inbound::Side;
use costream_app::ports::{Clock, MpuPort, StateStore};

/// Tracing (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, as `template.yaml` sets) and the services of
/// a function that runs the room shell. A configuration error ends the process at init with a
/// message naming the variable (or the secret), never a value.
pub async fn start() -> Result<LambdaServices, InitError> {
    lambda_runtime::tracing::init_default_subscriber();
    let started = std::time::Instant::now();
    lambda_services()
        .await
        .inspect(|_| started_in(started))
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))
}

/// [`start`] for room-status: the services without the Live API (no AccessKey).
pub async fn start_status() -> Result<StatusServices, InitError> {
    lambda_runtime::tracing::init_default_subscriber();
    let started = std::time::Instant::now();
    status_services()
        .await
        .inspect(|_| started_in(started))
        .inspect_err(|e| tracing::error!(error = %e, "cannot start"))
}

/// Logs how long the init took: the process's own share of the cold start, beside Lambda's
/// `Init Duration` (secrets, configuration, clients).
fn started_in(started: std::time::Instant) {
    tracing::info!(
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "started"
    );
}

/// The error of an EventBridge-triggered function that a retry can fix: logged once here and
/// reported as `Retryable` (Lambda retries asynchronous invocations whatever `errorType` says,
/// and the redelivery repairs the room).
pub fn diagnostic(e: &HandlerError) -> Diagnostic {
    let error_type = if e.is_retryable() {
        "Retryable"
    } else {
        "NonRetryable"
    };
    tracing::error!(error_type, error_kind = e.kind(), error = %e, cause = ?e, "event not handled");
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: e.to_string(),
    }
}

/// How much of a rejected callback is logged (the full event stays in the EventBridge archive,
/// found by its id).
const REJECTED_DETAIL_LOG_BYTES: usize = 2048;

/// The handler of both stream functions: an ARTC callback that EventBridge delivered as an
/// event's `detail`, acted on for `side`'s tags only.
///
/// Bad input is *handled and rejected*, not an error: Lambda retries every failed asynchronous
/// invocation twice whatever `errorType` says, and no retry can mend bad input. It is logged once
/// (`counter=callbacks_rejected`, the EventBridge event id, the reason and the start of the
/// detail) and the invocation succeeds. Errors are reserved for what a retry can fix.
pub async fn artc_event<S: StateStore, M: MpuPort, C: Clock>(
    services: &Services<S, M, C>,
    event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
    side: Side,
) -> Result<ArtcOutcome, Diagnostic> {
    let result = artc_event_inner(services, event, side).await;
    emit_metrics(match side {
        Side::Published => "stream-published",
        Side::Unpublished => "stream-unpublished",
        Side::Both => "artc",
    });
    result
}

async fn artc_event_inner<S: StateStore, M: MpuPort, C: Clock>(
    services: &Services<S, M, C>,
    event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
    side: Side,
) -> Result<ArtcOutcome, Diagnostic> {
    match services
        .artc_detail(&event.payload.detail, side, &event.context.request_id)
        .await
    {
        Ok(outcome) => Ok(outcome),
        Err(e) if e.is_bad_input() => {
            let detail = event.payload.detail.to_string();
            let end = (0..=REJECTED_DETAIL_LOG_BYTES.min(detail.len()))
                .rev()
                .find(|i| detail.is_char_boundary(*i))
                .unwrap_or(0);
            tracing::warn!(
                counter = "callbacks_rejected",
                event_id = event.payload.id.as_deref().unwrap_or(""),
                error_kind = e.kind(),
                error = %e,
                detail = &detail[..end],
                "callback rejected: bad input, not retried"
            );
            Ok(ArtcOutcome::rejected(&e))
        }
        Err(e) => Err(diagnostic(&e)),
    }
}

/// Prints the metrics counted during this invocation as one CloudWatch embedded-metric-format
/// line on stdout (Lambda's log agent extracts the metrics), in the namespace
/// `COSTREAM_METRICS_NAMESPACE` (default `costream`). Call it once at the end of every
/// invocation.
pub fn emit_metrics(function: &str) {
    let metrics = costream_app::metrics::take();
    let namespace = std::env::var("COSTREAM_METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "costream".to_owned());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if let Some(line) =
        costream_app::metrics::emf_line(&namespace, now_ms, &metrics, &[("function", function)])
    {
        println!("{line}");
    }
}

/// A JSON response.
pub fn json_response(status: u16, body: &impl Serialize) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    ));
    r
}

/// The response for a failed HTTP request: its status and reason, logged once here.
pub fn error_response(e: &HandlerError) -> ApiGatewayV2httpResponse {
    json_response(e.status(), &e.log_and_body())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The parts of a CDN ingest request.
pub fn cdn_request(ev: &ApiGatewayV2httpRequest) -> CdnRequest<'_> {
    CdnRequest {
        query: ev.query_string_parameters.iter().collect(),
        host: header(&ev.headers, "host").or(ev.request_context.domain_name.as_deref()),
        ali_timestamp: header(&ev.headers, "ali-live-timestamp"),
        ali_signature: header(&ev.headers, "ali-live-signature"),
    }
}

/// The body of an HTTP API request as bytes (API Gateway base64-encodes non-text bodies).
pub fn body_bytes(
    ev: &ApiGatewayV2httpRequest,
) -> Result<Vec<u8>, costream_app::inbound::InboundError> {
    let body = ev.body.as_deref().unwrap_or_default();
    if ev.is_base64_encoded {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| costream_app::inbound::InboundError::NotJson(e.to_string()))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// The signature headers of a request from the app's backend.
pub fn backend_headers(ev: &ApiGatewayV2httpRequest) -> (Option<&str>, Option<&str>) {
    (
        header(&ev.headers, "x-costream-timestamp"),
        header(&ev.headers, "x-costream-signature"),
    )
}
