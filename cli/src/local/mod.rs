//! The local server: the same routes and handler code as the deployed functions, on one port,
//! with an in-memory store (or DynamoDB) and the Live API simulator (or the real API).

pub mod ascii;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use costream_app::handlers::{CdnRequest, HandlerError, HostRequest, Services};
use costream_app::inbound::{Side, MAX_BODY_BYTES};
use costream_app::ports::{Clock, MpuPort, StateStore};
use costream_sim::SimulatedLive;
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

/// What the routes share.
pub struct Local<S, M, C> {
    pub services: Services<S, M, C>,
    /// The simulator, when `--mpu sim` (serves `GET /_sim/tasks`).
    pub sim: Option<Arc<SimulatedLive>>,
}

type Shared<S, M, C> = Arc<Local<S, M, C>>;

fn error(e: &HandlerError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.log_and_body())).into_response()
}

/// A request from the app's backend: its body and signature headers.
fn backend_request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> HostRequest<'a> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    HostRequest {
        body,
        timestamp: header("x-costream-timestamp"),
        signature: header("x-costream-signature"),
    }
}

fn next_invocation() -> String {
    format!("local-{}", uuid::Uuid::new_v4().simple())
}

/// The routes of the deployed HTTP API, plus `GET /_sim/tasks`.
pub fn router<S, M, C>(local: Shared<S, M, C>) -> Router
where
    S: StateStore + 'static,
    M: MpuPort + 'static,
    C: Clock + 'static,
{
    Router::new()
        .route("/artc/{secret}", post(artc::<S, M, C>))
        .route("/cdn/ingest", get(cdn::<S, M, C>))
        .route("/rooms/{channel_id}", get(room::<S, M, C>))
        .route("/rooms/{channel_id}/host", put(host::<S, M, C>))
        .route("/rooms/{channel_id}/history", get(history::<S, M, C>))
        .route("/rooms/{channel_id}/tokens", post(tokens::<S, M, C>))
        .route("/rooms/{channel_id}/settings", put(settings::<S, M, C>))
        .route("/_sim/tasks", get(sim_tasks::<S, M, C>))
        // One byte over the limit so the handler, not the framework, words the rejection.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
        .with_state(local)
}

async fn artc<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(secret): Path<String>,
    body: Bytes,
) -> Response {
    // On AWS a wrong path never reaches code (the route *is* the secret); here it is compared in
    // constant time and answered like an unknown route.
    let expected = local.services.config.artc_callback_secret.as_ref();
    let ok =
        expected.is_some_and(|s| bool::from(s.expose_secret().as_bytes().ct_eq(secret.as_bytes())));
    if !ok {
        tracing::warn!("artc callback on a wrong secret path");
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match local
        .services
        .artc_body(&body, Side::Both, &next_invocation())
        .await
    {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => error(&e),
    }
}

async fn cdn<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = CdnRequest {
        query: pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        host: header("host"),
        ali_timestamp: header("ali-live-timestamp"),
        ali_signature: header("ali-live-signature"),
    };
    match local
        .services
        .cdn_ingest(&request, &next_invocation())
        .await
    {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => error(&e),
    }
}

async fn room<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
) -> Response {
    match local.services.room_status(&channel_id).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(&e),
    }
}

async fn host<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = backend_request(&headers, &body);
    match local
        .services
        .register_host(&channel_id, &request, &next_invocation())
        .await
    {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => error(&e),
    }
}

async fn settings<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = backend_request(&headers, &body);
    match local
        .services
        .put_settings(&channel_id, &request, &next_invocation())
        .await
    {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => error(&e),
    }
}

async fn tokens<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = backend_request(&headers, &body);
    match local.services.issue_token(&channel_id, &request) {
        Ok(token) => Json(token).into_response(),
        Err(e) => error(&e),
    }
}

async fn history<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let request = backend_request(&headers, b"");
    match local.services.room_history(&channel_id, &request).await {
        Ok(history) => Json(history).into_response(),
        Err(e) => error(&e),
    }
}

/// The repair loop in-process: a pass every `interval` (the first one after one interval),
/// the leak sweep included, until the server stops.
pub async fn repair_loop<S, M, C>(
    local: Shared<S, M, C>,
    interval: std::time::Duration,
    stop_tasks_of_unknown_rooms: bool,
) where
    S: StateStore + 'static,
    M: MpuPort + 'static,
    C: Clock + 'static,
{
    let config = costream_app::repair::RepairConfig {
        // A pass must not outlast its period by much; what is left waits for the next.
        deadline: interval.max(std::time::Duration::from_secs(1)),
        sweep_deadline: interval.max(std::time::Duration::from_secs(1)) * 2,
        stop_tasks_of_unknown_rooms,
        ..costream_app::repair::RepairConfig::default()
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let owner = format!("repair/{}", next_invocation());
        let app = local.services.config.app_id.clone();
        let report = local
            .services
            .shell
            .repair_pass(&app, &owner, &config)
            .await;
        // Nobody scrapes EMF locally: the counters are reported in the pass's log line.
        costream_app::metrics::take();
        if report.due > 0
            || report
                .sweep
                .as_ref()
                .is_some_and(|s| s.leaks_stopped + s.restarted + s.updated > 0)
        {
            tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "repair pass");
        }
    }
}

async fn sim_tasks<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Query(_): Query<Vec<(String, String)>>,
) -> Response {
    match &local.sim {
        Some(sim) => Json(sim.tasks()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no simulator: started with --mpu alibaba",
        )
            .into_response(),
    }
}

/// Binds and serves until Ctrl-C, running `background` (the repair loop) alongside.
pub async fn serve_with(
    listen: SocketAddr,
    router: Router,
    background: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let background = tokio::spawn(background);
    let served = serve_only(listen, router).await;
    background.abort();
    served
}

async fn serve_only(listen: SocketAddr, router: Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "costream serve listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            // If the signal handler can't be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await?;
    Ok(())
}
