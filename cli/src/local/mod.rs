//! The local server: the same routes and handler code as the deployed functions, on one port,
//! with an in-memory store (or DynamoDB) and the Live API simulator (or the real API).

pub mod ascii;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use costream_app::handlers::{CdnRequest, HandlerError, HostRequest, Services};
use costream_app::inbound::{Side, MAX_BODY_BYTES};
use costream_app::ports::{Clock, MpuPort, StateStore};
use costream_core::ChannelId;
use costream_sim::SimulatedLive;
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

/// What the routes share.
pub struct Local<S, M, C> {
    pub services: Services<S, M, C>,
    /// The simulator, when `--mpu sim` (serves `GET /_sim/tasks`).
    pub sim: Option<Arc<SimulatedLive>>,
    /// Whether the live view (`GET /`, `GET /_local/view`) is served: only on a loopback listen
    /// address, since it shows signed playback URLs and user ids to anyone who asks.
    pub view: bool,
    /// The channels requests named lately, for the live view (the store cannot list its rooms).
    seen: RecentChannels,
}

impl<S, M, C> Local<S, M, C> {
    /// The shared state of the routes; `view`: serve the live view (see [`Local::view`]).
    pub fn new(services: Services<S, M, C>, sim: Option<Arc<SimulatedLive>>, view: bool) -> Self {
        Local {
            services,
            sim,
            view,
            seen: RecentChannels::default(),
        }
    }

    /// A successful answer about `channel`, noted for the live view.
    fn seen_ok(&self, channel: &str, answer: impl serde::Serialize) -> Response {
        self.seen.note(channel);
        Json(answer).into_response()
    }
}

/// The most recently named channels, at most [`RecentChannels::CAP`], most recent last.
#[derive(Debug, Default)]
struct RecentChannels(Mutex<VecDeque<ChannelId>>);

impl RecentChannels {
    const CAP: usize = 256;

    /// Notes `channel` as the most recent (ignored unless it is a valid channel id).
    fn note(&self, channel: &str) {
        let Ok(channel) = ChannelId::parse(channel) else {
            return;
        };
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|c| *c != channel);
        seen.push_back(channel);
        while seen.len() > Self::CAP {
            seen.pop_front();
        }
    }

    fn all(&self) -> Vec<ChannelId> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter().cloned().collect()
    }
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

/// The routes of the deployed HTTP API, plus `GET /_sim/tasks` and the live view (`GET /`, the
/// page, and `GET /_local/view`, its data).
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
        .route(
            "/rooms/{channel_id}/pk",
            put(pk_link::<S, M, C>).delete(pk_end::<S, M, C>),
        )
        .route("/_sim/tasks", get(sim_tasks::<S, M, C>))
        .route("/", get(view_page::<S, M, C>))
        .route("/_local/view", get(view_data::<S, M, C>))
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
        Ok(outcome) => {
            local.seen.note(&outcome.channel_id);
            Json(outcome).into_response()
        }
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
        Ok(outcome) => {
            if let Some(channel) = &outcome.channel_id {
                local.seen.note(channel);
            }
            Json(outcome).into_response()
        }
        Err(e) => error(&e),
    }
}

async fn room<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let token = query
        .iter()
        .find(|(k, _)| k == "viewer_token")
        .map(|(_, v)| v.as_str());
    match local.services.room_status_for(&channel_id, token).await {
        Ok(answer) => {
            let cache = answer.cache_control();
            let mut response = local.seen_ok(&channel_id, answer);
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static(cache),
            );
            response
        }
        Err(e) => {
            let mut response = error(&e);
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static(
                    costream_app::handlers::viewer::PRIVATE_CACHE_CONTROL,
                ),
            );
            response
        }
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
        Ok(outcome) => local.seen_ok(&channel_id, outcome),
        Err(e) => error(&e),
    }
}

async fn pk_link<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = backend_request(&headers, &body);
    match local
        .services
        .link_pk(&channel_id, &request, &next_invocation())
        .await
    {
        Ok(outcome) => {
            local.seen.note(&outcome.peer_channel_id);
            local.seen_ok(&channel_id, outcome)
        }
        Err(e) => error(&e),
    }
}

async fn pk_end<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = backend_request(&headers, &body);
    match local
        .services
        .unlink_pk(&channel_id, &request, &next_invocation())
        .await
    {
        Ok(outcome) => local.seen_ok(&channel_id, outcome),
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
        Ok(outcome) => local.seen_ok(&channel_id, outcome),
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
        Ok(token) => local.seen_ok(&channel_id, token),
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
        Ok(history) => local.seen_ok(&channel_id, history),
        Err(e) => error(&e),
    }
}

/// How often `serve` retries webhooks still due.
const WEBHOOK_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The repair loop in-process: a pass every `interval` (the first one after one interval),
/// the leak sweep included, until the server stops.
pub async fn repair_loop<S, M, C>(
    local: Shared<S, M, C>,
    interval: std::time::Duration,
    stop_tasks_of_unknown_rooms: bool,
    mut graces: tokio::sync::mpsc::UnboundedReceiver<(costream_app::ports::RoomKey, u64)>,
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
    // Webhooks still due (a backend that refused or was down) are retried every second.
    let webhooks = {
        let local = local.clone();
        async move {
            let mut ticks = tokio::time::interval(WEBHOOK_RETRY_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                local.services.webhook_pass().await;
            }
        }
    };
    // Rooms holding an event back for the end grace (see `EndGraceWait::Background`): each is
    // converged when its grace ends, on its own task.
    let ends = {
        let local = local.clone();
        async move {
            while let Some((key, until)) = graces.recv().await {
                let local = local.clone();
                tokio::spawn(async move {
                    let wait = until.saturating_sub(local.services.shell.clock.now_ms());
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    let owner = format!("grace/{}", next_invocation());
                    match local.services.shell.end_grace(&key, &owner).await {
                        Ok(_) => local.services.deliver_webhooks(&key).await,
                        Err(e) => {
                            tracing::warn!(room = %key, error = %e, "end grace: room left to the repair loop")
                        }
                    }
                });
            }
        }
    };
    let repairs = async move {
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
    };
    tokio::join!(repairs, webhooks, ends);
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

/// The live view's page: one self-contained file (inline CSS and JS) that polls
/// `GET /_local/view` every second and draws each room's layout to scale.
const VIEW_PAGE: &str = include_str!("view.html");

/// What the page may load: nothing but its own inline code and `/_local/view` on this origin.
const VIEW_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Why the live view is not answered, if it is not: `serve` listens on a non-loopback address
/// (404, as if there were no such route), or the request names a host other than localhost or a
/// loopback IP (403: a DNS-rebinding page must not read the view through the browser).
fn view_refused(view: bool, headers: &HeaderMap) -> Option<Response> {
    if !view {
        return Some(
            (
                StatusCode::NOT_FOUND,
                "not found: the live view is only served when costream serve listens on a \
                 loopback address (e.g. --listen 127.0.0.1:8080)",
            )
                .into_response(),
        );
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !is_loopback_host(host) {
        tracing::warn!("live view requested for a host that is not loopback");
        return Some(
            (
                StatusCode::FORBIDDEN,
                "forbidden: the live view answers only requests addressed to localhost or a \
                 loopback IP",
            )
                .into_response(),
        );
    }
    None
}

/// Whether a `Host` header (`name[:port]`, `[v6][:port]`) names localhost or a loopback IP.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /`: the live view's page.
async fn view_page<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = view_refused(local.view, &headers) {
        return refused;
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, VIEW_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        VIEW_PAGE,
    )
        .into_response()
}

/// `GET /_local/view`: the known rooms with their applied layouts and last calls (see
/// [`Services::live_view`]).
async fn view_data<S: StateStore, M: MpuPort, C: Clock>(
    State(local): State<Shared<S, M, C>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = view_refused(local.view, &headers) {
        return refused;
    }
    match local.services.live_view(local.seen.all()).await {
        Ok(view) => ([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response(),
        Err(e) => error(&e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_answers_only_hosts_that_name_loopback() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "127.1.2.3:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "attacker.example",
            "attacker.example:8080",
            "10.0.0.5:8080",
            "[2001:db8::1]:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        let mut headers = HeaderMap::new();
        assert!(view_refused(true, &headers).is_some(), "no Host at all");
        headers.insert(header::HOST, "127.0.0.1:8080".parse().expect("header"));
        assert!(view_refused(true, &headers).is_none());
        let off = view_refused(false, &headers).expect("refused");
        assert_eq!(off.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn recent_channels_are_valid_distinct_and_bounded() {
        let seen = RecentChannels::default();
        seen.note("");
        seen.note("not a channel!");
        for n in 0..RecentChannels::CAP + 10 {
            seen.note(&format!("room-{n}"));
        }
        seen.note("room-20");
        let all = seen.all();
        assert_eq!(all.len(), RecentChannels::CAP);
        assert_eq!(all.first().map(ChannelId::as_str), Some("room-10"));
        assert_eq!(all.last().map(ChannelId::as_str), Some("room-20"));
        assert_eq!(all.iter().filter(|c| c.as_str() == "room-20").count(), 1);
    }
}
