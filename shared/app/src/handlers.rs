//! The request handlers shared by the Lambda functions and `costream serve`: one code path from
//! a callback to the shell, so what runs locally is what runs on Lambda.
//!
//! Each handler validates its input completely before touching state (bad input writes nothing
//! and calls nothing), then calls [`Shell::handle`], and maps failures to [`HandlerError`], which
//! knows its HTTP status and whether a Lambda should report it as retryable.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use crate::config::{Config, NotifySettings};
use crate::inbound::{parse_artc, parse_artc_value, parse_cdn, InboundError, Side};
use crate::metrics;
use crate::mpu::{channel_of_stream, stream_name};
use crate::ports::{Clock, MpuPort, RoomKey, StateStore};
use crate::shell::{AppError, Handled, Shell};
use crate::store::{HistoryEntry, LastFailure};
use costream_alibaba::callback_auth::{callback_host, CallbackAuthError, CallbackVerifier};
use costream_alibaba::urls::{PlaybackUrls, StreamLocation};
use costream_core::{CdnAction, ChannelId, Facts, MixMode, RoomEvent, Timestamp, UserId};

mod pk;
mod settings;
pub mod view;
pub mod viewer;
pub use pk::PkRequestOutcome;
pub use settings::{parse_settings, settings_json, SettingsOutcome};

/// Why a request was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("bad request: {0}")]
    BadInput(#[from] InboundError),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A request from the app's backend whose signature does not hold (401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The route needs a setting this deployment does not have.
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is valid but the rooms' state does not allow it (409).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    App(#[from] AppError),
}

impl HandlerError {
    /// The HTTP status for HTTP-triggered handlers.
    pub fn status(&self) -> u16 {
        match self {
            HandlerError::BadInput(InboundError::BodyTooLarge { .. }) => 413,
            HandlerError::BadInput(_) => 400,
            HandlerError::Unauthorized(_) => 403,
            HandlerError::Unauthenticated(_) => 401,
            HandlerError::NotConfigured(_) => 501,
            HandlerError::NotFound(_) => 404,
            HandlerError::Conflict(_) => 409,
            HandlerError::App(e) if e.is_retryable() => 503,
            HandlerError::App(_) => 500,
        }
    }

    /// Whether redelivering the same input can succeed (Lambda "Retryable").
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::App(e) if e.is_retryable())
    }

    /// Logs the error once, at the HTTP boundary (5xx as errors with the cause chain, 4xx as
    /// warnings), and returns the JSON body to answer with: `{"error": kind, "reason": ...}`.
    /// Shared by the Lambda functions and `costream serve`, so both answer alike.
    pub fn log_and_body(&self) -> serde_json::Value {
        if self.status() >= 500 {
            tracing::error!(error_kind = self.kind(), error = %self, cause = ?self, "request failed");
        } else {
            tracing::warn!(error_kind = self.kind(), error = %self, "request rejected");
        }
        serde_json::json!({ "error": self.kind(), "reason": self.to_string() })
    }

    /// Bad input (malformed, unauthorized, unknown): no retry can mend it.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            HandlerError::BadInput(_)
                | HandlerError::Unauthorized(_)
                | HandlerError::Unauthenticated(_)
                | HandlerError::NotFound(_)
                | HandlerError::Conflict(_)
        )
    }

    /// A stable name for logs and Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::BadInput(_) => "BadInput",
            HandlerError::Unauthorized(_) => "Unauthorized",
            HandlerError::Unauthenticated(_) => "Unauthenticated",
            HandlerError::NotConfigured(_) => "NotConfigured",
            HandlerError::NotFound(_) => "NotFound",
            HandlerError::Conflict(_) => "Conflict",
            HandlerError::App(_) if self.is_retryable() => "Retryable",
            HandlerError::App(_) => "NonRetryable",
        }
    }
}

/// What an ARTC callback amounted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtcOutcome {
    pub channel_id: String,
    /// Events this side acted on.
    pub events: usize,
    pub result: &'static str,
    /// Why the callback was rejected (`result` = `rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ArtcOutcome {
    /// A callback handled by rejecting it (bad input): nothing written, nothing called.
    pub fn rejected(e: &HandlerError) -> Self {
        ArtcOutcome {
            channel_id: String::new(),
            events: 0,
            result: "rejected",
            reason: Some(e.to_string()),
        }
    }
}

/// What a CDN callback amounted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CdnOutcome {
    pub result: &'static str,
    pub channel_id: Option<String>,
}

/// What a viewer app asks: is the room live, who is on stage, where to play it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomStatus {
    pub channel_id: String,
    /// A broadcast is on (the host publishes).
    pub live: bool,
    /// The CDN reported the room's stream as received (since this broadcast started).
    pub cdn_live: bool,
    /// 0 (host only) or 1 (mixed), `null` when off.
    pub mix_mode: Option<u8>,
    pub host: Option<String>,
    pub on_stage: Vec<String>,
    pub waiting: Vec<String>,
    /// Signed playback URLs, HTTP-FLV first. Present while live.
    pub playback: Option<PlaybackUrls>,
    /// Unix time the playback URLs stop being accepted.
    pub expires_at: Option<u64>,
    /// Present when the room's MPU calls have failed (refusals, quota, no answer) or it waits
    /// for the repair loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairStatus>,
    /// The room's own settings (`PUT /rooms/{channelId}/settings`), when the backend set any:
    /// the fields set, `null` for the ones cleared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// The PK the room is in (`PUT /rooms/{channelId}/pk`), while it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pk: Option<PkStatus>,
}

/// A room's PK, as `GET /rooms/{channelId}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PkStatus {
    pub peer_channel_id: String,
    /// The peer room's host, shown on the right half.
    pub peer_host: String,
}

/// The repair state of a room, as `GET /rooms/{channelId}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairStatus {
    /// When the repair loop looks at the room next (epoch ms), if something is pending.
    pub due_at_ms: Option<u64>,
    /// Failed attempts in a row (0 once the room converged again).
    pub attempts: u32,
    /// Failed MPU calls since the room was created.
    pub failures: u64,
    /// Since when the room has been failing (epoch ms), while it is.
    pub failing_since_ms: Option<u64>,
    pub last_failure: Option<LastFailure>,
}

/// An ARTC join token (`POST /rooms/{channelId}/tokens`): the parameters of `joinChannel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenOutcome {
    pub app_id: String,
    pub channel_id: String,
    pub user_id: String,
    /// Empty: the official helpers hash without a nonce, so only an empty one works everywhere.
    pub nonce: String,
    /// The token's expiry, unix seconds.
    pub timestamp: i64,
    pub token: String,
}

/// How far a CDN callback's (unsigned) event time may be after its signature's timestamp.
const CDN_TIME_SLACK_SECS: u64 = 60;

/// Rooms one webhook pass looks at, at most.
const WEBHOOK_PASS_ROOMS: usize = 64;
/// One delivery round of a room sends at most this many events, for at most this long (the
/// rest wait for the next round): a handler answers its sender in time, and a round that is
/// cut short has still recorded what it delivered.
const WEBHOOKS_PER_ROUND: usize = 8;
/// Conflicts a webhook round's outbox write tolerates before it leaves the rest to the next round.
const WEBHOOK_CONFLICTS: u32 = 16;
const WEBHOOK_ROUND_TIME: Duration = Duration::from_secs(4);

/// Whether a handled callback may have queued webhooks (it wrote the room).
fn changed(handled: &Handled) -> bool {
    !matches!(
        handled,
        Handled::Duplicate | Handled::NoChange | Handled::Busy
    )
}

/// Join-token requests: small JSON; a token lives 1 h unless asked, at most 24 h (ARTC's limit).
const MAX_TOKEN_BODY: usize = 16 * 1024;
/// Settings requests: at most 16 KB.
const MAX_SETTINGS_BODY: usize = 16 * 1024;
const DEFAULT_TOKEN_TTL_SECS: u64 = 3_600;
const MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// A room's decision history (`GET /rooms/{channelId}/history`, `costream history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomHistory {
    pub channel_id: String,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// What a host registration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostOutcome {
    pub channel_id: String,
    /// The registered host (`null`: cleared).
    pub host: Option<String>,
    pub result: &'static str,
}

/// The parts of a host registration request.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRequest<'a> {
    pub body: &'a [u8],
    /// `X-Costream-Timestamp`: unix seconds; also the registration's time.
    pub timestamp: Option<&'a str>,
    /// `X-Costream-Signature: sha256=<hex hmac(secret, "<timestamp>.PUT /rooms/<id>/host.<body>")>`
    /// (see [`Notifier::backend_signature`]).
    pub signature: Option<&'a str>,
}

/// Host registrations: small JSON, recent signatures only.
const MAX_HOST_BODY: usize = 4096;
const HOST_SIGNATURE_WINDOW_SECS: u64 = 300;

/// The parts of a CDN ingest request the handler needs.
#[derive(Debug, Clone, Default)]
pub struct CdnRequest<'a> {
    pub query: Vec<(&'a str, &'a str)>,
    /// The `Host` the request arrived at (used when `COSTREAM_CALLBACK_HOST` is not set).
    pub host: Option<&'a str>,
    pub ali_timestamp: Option<&'a str>,
    pub ali_signature: Option<&'a str>,
}

/// Delivers webhooks to the app's backend (`COSTREAM_NOTIFY_URL`), each signed with
/// HMAC-SHA256 over `"<timestamp>.<body>"` in `X-Costream-Signature: sha256=<hex>`, the delivery
/// time in `X-Costream-Timestamp`. Any 2xx answer is a delivery.
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    settings: NotifySettings,
}

impl Notifier {
    /// Builds the HTTP client once; a 2 s total timeout keeps a callback's handler within its
    /// sender's deadline (what is not delivered then is retried by the repair loop).
    pub fn new(settings: NotifySettings) -> Result<Notifier, reqwest::Error> {
        Ok(Notifier::with_client(settings, Notifier::http_client()?))
    }

    /// The notifier's HTTP client: 800 ms to connect, 2 s in all, no redirects. Building it
    /// loads the TLS roots, so a cold start builds it while it waits for its secrets.
    pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(800))
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// A notifier over `client` (from [`Notifier::http_client`]).
    pub fn with_client(settings: NotifySettings, client: reqwest::Client) -> Notifier {
        Notifier { client, settings }
    }

    /// `sha256=<hex>` of `"<timestamp>.<body>"`.
    pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The signature the app's backend puts on every request it sends costream:
    /// `sha256=<hex hmac_sha256(secret, "<ts>.<METHOD> <PATH>.<body>")>`, METHOD upper-case and
    /// PATH the request path without query (e.g. `PUT /rooms/c1/host`), so a captured request
    /// cannot be replayed against another room or route.
    pub fn backend_signature(
        secret: &str,
        timestamp: u64,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(method.to_ascii_uppercase().as_bytes());
        mac.update(b" ");
        mac.update(path.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Posts one webhook; only a 2xx answer accepts it (redirects are not followed, so a 3xx
    /// is a failed attempt, and a signed body never goes anywhere else). The error names no
    /// URL: reqwest's would, and a backend URL may hold a token.
    pub async fn post(&self, hook: &crate::webhooks::Webhook, now_secs: u64) -> Result<(), String> {
        let body = serde_json::to_vec(hook).map_err(|e| format!("unserialisable: {e}"))?;
        let signature = Self::signature(self.settings.secret.expose_secret(), now_secs, &body);
        let answer = self
            .client
            .post(&self.settings.url)
            .header("content-type", "application/json")
            .header("x-costream-timestamp", now_secs.to_string())
            .header("x-costream-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the backend answered {status}"))
        }
    }
}

/// Everything a handler needs, built once per process.
#[derive(Debug)]
pub struct Services<S, M, C> {
    pub shell: Shell<S, M, C>,
    pub config: Arc<Config>,
    pub notifier: Option<Notifier>,
    /// Who merges an event held for the end grace when the grace is over.
    pub end_grace: EndGraceWait,
}

/// Who merges an event a callback's handler held back for the end grace (the host's Leave,
/// say: see `store::fold`) once the grace is over. The room is marked due then in any case, so
/// the repair loop's next pass does it at the latest; this makes it happen on time.
#[derive(Debug, Clone, Default)]
pub enum EndGraceWait {
    /// The handler waits and converges the room itself when the grace ends within `max_ms`
    /// (a Lambda function: the invocation is asynchronous, and a few seconds of it cost less
    /// than a minute of a stream showing a host who left).
    Inline { max_ms: u64 },
    /// The handler hands the room to a background task (`costream serve`, whose callbacks are
    /// answered synchronously): `(room, when)`.
    Background(tokio::sync::mpsc::UnboundedSender<(RoomKey, u64)>),
    /// The repair loop's next pass does it.
    #[default]
    RepairLoop,
}

/// How long a Lambda invocation waits for an end grace to end (its Timeout is 30 s).
pub const INLINE_GRACE_WAIT_MS: u64 = 20_000;

/// Counts a callback's outcome (`callbacks_applied`, `_duplicate`, `_rejected`, `_failed`).
fn tally<T>(
    result: Result<T, HandlerError>,
    duplicate: impl Fn(&T) -> bool,
) -> Result<T, HandlerError> {
    metrics::count(match &result {
        Ok(t) if duplicate(t) => "callbacks_duplicate",
        Ok(_) => "callbacks_applied",
        Err(e) if e.is_bad_input() => "callbacks_rejected",
        Err(_) => "callbacks_failed",
    });
    result
}

fn outcome_name(h: &Handled) -> &'static str {
    match h {
        Handled::Duplicate => "duplicate",
        Handled::NoChange => "no_change",
        Handled::Committed { .. } => "committed",
        Handled::Converged { .. } => "converged",
        Handled::LeaseLost { .. } => "handed_over",
        Handled::Busy => "busy",
    }
}

impl<S: StateStore, M: MpuPort, C: Clock> Services<S, M, C> {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(self.shell.clock.now_ms() / 1000)
    }

    fn key(&self, channel: ChannelId) -> RoomKey {
        RoomKey {
            app: self.config.app_id.clone(),
            channel,
        }
    }

    /// An ARTC callback body (`POST /artc/{secret}` locally).
    pub async fn artc_body(
        &self,
        body: &[u8],
        side: Side,
        invocation: &str,
    ) -> Result<ArtcOutcome, HandlerError> {
        let result = match parse_artc(body, &self.config.app_id, self.now()) {
            Ok(cb) => self.artc(cb, side, invocation).await,
            Err(e) => Err(e.into()),
        };
        tally(result, |o| o.result == "duplicate")
    }

    /// An ARTC callback that arrived as an EventBridge event's `detail`.
    pub async fn artc_detail(
        &self,
        detail: &serde_json::Value,
        side: Side,
        invocation: &str,
    ) -> Result<ArtcOutcome, HandlerError> {
        let result = match parse_artc_value(detail, &self.config.app_id, self.now()) {
            Ok(cb) => self.artc(cb, side, invocation).await,
            Err(e) => Err(e.into()),
        };
        tally(result, |o| o.result == "duplicate")
    }

    async fn artc(
        &self,
        cb: crate::inbound::ArtcCallback,
        side: Side,
        invocation: &str,
    ) -> Result<ArtcOutcome, HandlerError> {
        let channel_id = cb.channel.to_string();
        for name in &cb.skipped {
            // Only one side counts them, so each unknown item is counted once per callback.
            if side != Side::Unpublished {
                tracing::warn!(
                    counter = "callback_items_unknown",
                    item = name.as_str(),
                    channel_id = channel_id.as_str(),
                    "skipped a callback item this version does not know"
                );
            }
        }
        if cb.events.is_empty() {
            return Ok(ArtcOutcome {
                channel_id,
                events: 0,
                result: "no_change",
                reason: None,
            });
        }
        let key = self.key(cb.channel.clone());
        // No de-duplication key: the facts merge idempotently, so a redelivered callback
        // changes nothing and costs one read; remembering MsgIds would only grow the room item
        // (written with every event). Only the CDN's signed pairs are remembered.
        let handled = self
            .shell
            .handle(&key, None, &cb.events, invocation)
            .await?;
        if changed(&handled) {
            self.deliver_webhooks(&key).await;
        }
        self.after_grace(&key, invocation).await;
        Ok(ArtcOutcome {
            channel_id,
            events: cb.events.len(),
            result: outcome_name(&handled),
            reason: None,
        })
    }

    /// A CDN ingest callback (`GET /cdn/ingest?action=...`).
    pub async fn cdn_ingest(
        &self,
        req: &CdnRequest<'_>,
        invocation: &str,
    ) -> Result<CdnOutcome, HandlerError> {
        tally(self.cdn_ingest_inner(req, invocation).await, |o| {
            o.result == "duplicate"
        })
    }

    async fn cdn_ingest_inner(
        &self,
        req: &CdnRequest<'_>,
        invocation: &str,
    ) -> Result<CdnOutcome, HandlerError> {
        let now = self.now();
        // The verified (timestamp, signature) pair: the signature does not cover the query, so
        // a pair is accepted once per room and action (see the dedupe key below).
        let mut signed_pair: Option<String> = None;
        if let Some(key) = &self.config.cdn_notify_auth_key {
            let host = self
                .config
                .callback_host
                .as_deref()
                .or(req.host)
                .and_then(callback_host)
                .ok_or_else(|| {
                    HandlerError::Unauthorized("no callback host to verify against".into())
                })?;
            let (Some(ts), Some(sig)) = (req.ali_timestamp, req.ali_signature) else {
                return Err(HandlerError::Unauthorized(
                    "missing ALI-LIVE-TIMESTAMP or ALI-LIVE-SIGNATURE".into(),
                ));
            };
            let now_i = i64::try_from(now.secs()).unwrap_or(i64::MAX);
            CallbackVerifier::new(host, key.clone())
                .verify(ts, sig, now_i)
                .map_err(|e: CallbackAuthError| HandlerError::Unauthorized(e.to_string()))?;
            // As verified: the signature compares case-insensitively.
            signed_pair = Some(format!("{}:{}", ts.trim(), sig.trim().to_ascii_lowercase()));
        }
        let cb = parse_cdn(req.query.iter().copied(), now)?;
        // The query is not signed: its event time must not be after the signature's (a forged
        // future time would pin the room's CDN state).
        if let (Some(_), Some(signed_at)) = (
            &signed_pair,
            req.ali_timestamp.and_then(|t| t.trim().parse::<u64>().ok()),
        ) {
            if cb.at.secs() > signed_at + CDN_TIME_SLACK_SECS {
                return Err(HandlerError::Unauthorized(format!(
                    "the callback's time {} is after its signature's {signed_at}",
                    cb.at.secs()
                )));
            }
        }
        // Ours: our AppName and (when the CDN names it) our ingest domain. Another domain's
        // stream of the same name is not this room's.
        let ours = cb.app_name == self.config.ingest.app_name
            && (cb.domain.is_empty()
                || cb
                    .domain
                    .eq_ignore_ascii_case(&self.config.ingest.push_domain));
        let Some(channel) = channel_of_stream(&cb.stream).filter(|_| ours) else {
            tracing::info!(stream = %cb.stream, app_name = %cb.app_name, "cdn callback for a stream that is not ours");
            return Ok(CdnOutcome {
                result: "ignored_foreign_stream",
                channel_id: None,
            });
        };
        let key = self.key(channel.clone());
        // Signed: the pair is the callback's identity, remembered for the room (an hour, longer
        // than the signature's window), so a captured pair replayed with another query — another
        // time, say — is a duplicate that changes nothing. Unsigned (serve's local defaults):
        // the callback's own fields.
        let dedupe = match &signed_pair {
            Some(pair) => format!("cdnsig:{}:{pair}", cb.action_name()),
            None => cb.dedupe_key(),
        };
        let handled = self
            .shell
            .handle(&key, Some(&dedupe), &[cb.event()], invocation)
            .await?;
        if matches!(handled, Handled::Duplicate) && signed_pair.is_some() {
            tracing::info!(channel_id = %channel, "cdn callback's signature seen before for this room and action: ignored");
        }
        if changed(&handled) {
            self.deliver_webhooks(&key).await;
        }
        Ok(CdnOutcome {
            result: outcome_name(&handled),
            channel_id: Some(channel.to_string()),
        })
    }

    /// `PUT /rooms/{channelId}/host` from the app's backend: `{"user_id": "<id>"}` registers the
    /// room's host, `{"user_id": null}` clears it. Signed like the notifications costream sends
    /// (HMAC-SHA256 with `COSTREAM_NOTIFY_SECRET` over `"<timestamp>.PUT /rooms/<id>/host.<body>"`),
    /// at most 300 s old.
    pub async fn register_host(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
        invocation: &str,
    ) -> Result<HostOutcome, HandlerError> {
        let ts = self.verify_backend("PUT", &format!("/rooms/{channel}/host"), req)?;
        if req.body.len() > MAX_HOST_BODY {
            return Err(InboundError::TooLarge(req.body.len()).into());
        }
        let value: serde_json::Value =
            serde_json::from_slice(req.body).map_err(|e| InboundError::NotJson(e.to_string()))?;
        let obj = value.as_object().ok_or(InboundError::NotObject("body"))?;
        let user = match obj.get("user_id") {
            None => return Err(InboundError::Missing("user_id").into()),
            Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(u)) => Some(UserId::parse(u.as_str()).map_err(
                |source| InboundError::BadId {
                    field: "user_id",
                    source,
                },
            )?),
            Some(_) => {
                return Err(InboundError::WrongType {
                    field: "user_id",
                    expected: "string or null",
                }
                .into())
            }
        };
        let channel = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        let event = RoomEvent::HostRegistered {
            user: user.clone(),
            at: Timestamp::from_secs(ts),
        };
        // A registration is a fact that merges idempotently: no de-duplication key needed.
        let key = self.key(channel.clone());
        let handled = self.shell.handle(&key, None, &[event], invocation).await?;
        if changed(&handled) {
            self.deliver_webhooks(&key).await;
        }
        Ok(HostOutcome {
            channel_id: channel.to_string(),
            host: user.map(|u| u.to_string()),
            result: outcome_name(&handled),
        })
    }

    /// When the room holds an event back for the end grace, sees that it is merged when the
    /// grace ends (see [`EndGraceWait`]).
    async fn after_grace(&self, key: &RoomKey, invocation: &str) {
        if matches!(self.end_grace, EndGraceWait::RepairLoop) {
            return;
        }
        let Some(until) = self.shell.held_until(key).await else {
            return;
        };
        match &self.end_grace {
            EndGraceWait::Inline { max_ms } => {
                let wait = until.saturating_sub(self.shell.clock.now_ms());
                if wait > *max_ms {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match self.shell.end_grace(key, invocation).await {
                    Ok(handled) if changed(&handled) => self.deliver_webhooks(key).await,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(room = %key, error = %e, "end grace: room left to the repair loop")
                    }
                }
            }
            EndGraceWait::Background(tx) => {
                let _ = tx.send((key.clone(), until));
            }
            EndGraceWait::RepairLoop => {}
        }
    }

    /// Delivers the room's due webhooks now (best effort: what fails stays in the outbox for the
    /// repair loop to retry). Nothing without a backend URL.
    pub async fn deliver_webhooks(&self, key: &RoomKey) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let now_ms = self.shell.clock.now_ms();
        // The error names no URL (see `Notifier::post`).
        let send = |hook: crate::webhooks::Webhook| async move {
            notifier.post(&hook, now_ms / 1000).await
        };
        if let Err(e) = crate::webhooks::deliver(
            &self.shell.store,
            key,
            now_ms,
            crate::webhooks::Budget {
                events: WEBHOOKS_PER_ROUND,
                time: WEBHOOK_ROUND_TIME,
            },
            WEBHOOK_CONFLICTS,
            send,
        )
        .await
        {
            tracing::warn!(room = %key, error = %e, "webhooks left for the next round");
        }
    }

    /// One delivery round over every room with webhooks due (the store's due index): what the
    /// repair loop runs after its pass, and `costream serve` every second. Returns how many
    /// rooms it looked at.
    pub async fn webhook_pass(&self) -> usize {
        if self.notifier.is_none() {
            return 0;
        }
        let now_ms = self.shell.clock.now_ms();
        let due = match self
            .shell
            .store
            .hook_rooms(&self.config.app_id, now_ms, WEBHOOK_PASS_ROOMS)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "webhook pass: rooms with webhooks due unreadable");
                return 0;
            }
        };
        for key in &due {
            self.deliver_webhooks(key).await;
        }
        due.len()
    }

    /// Checks a request from the app's backend: `X-Costream-Timestamp` within 300 s of now and
    /// `X-Costream-Signature` = HMAC-SHA256 with `COSTREAM_NOTIFY_SECRET` over
    /// `"<timestamp>.<METHOD> <path>.<body>"`, `path` the route's canonical path (the same
    /// behind any API stage or local server). Returns the timestamp.
    fn verify_backend(
        &self,
        method: &str,
        path: &str,
        req: &HostRequest<'_>,
    ) -> Result<u64, HandlerError> {
        let secret = self
            .config
            .backend_secret
            .as_ref()
            .ok_or(HandlerError::NotConfigured(
                "the backend's routes need COSTREAM_NOTIFY_SECRET",
            ))?;
        let now = self.now().secs();
        let ts: u64 = req
            .timestamp
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| {
                HandlerError::Unauthenticated("missing or bad X-Costream-Timestamp".into())
            })?;
        if now.abs_diff(ts) > HOST_SIGNATURE_WINDOW_SECS {
            return Err(HandlerError::Unauthenticated(format!(
                "X-Costream-Timestamp {ts} is more than {HOST_SIGNATURE_WINDOW_SECS} s from now"
            )));
        }
        let expected =
            Notifier::backend_signature(secret.expose_secret(), ts, method, path, req.body);
        let given = req.signature.unwrap_or_default().trim();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            given.as_bytes(),
        )) {
            return Err(HandlerError::Unauthenticated(
                "X-Costream-Signature does not match".into(),
            ));
        }
        Ok(ts)
    }

    /// `POST /rooms/{channelId}/tokens` from the app's backend (signed like a host
    /// registration): body `{"user_id": "u1", "ttl_secs": 3600}` (ttl 1–86400, default 3600) →
    /// an ARTC join token for that user in that channel, from `COSTREAM_ARTC_APP_KEY`: exactly
    /// the parameters the ARTC SDK's `joinChannel` takes (`timestamp` is the token's expiry).
    pub fn issue_token(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
    ) -> Result<TokenOutcome, HandlerError> {
        if req.body.len() > MAX_TOKEN_BODY {
            return Err(InboundError::BodyTooLarge {
                size: req.body.len(),
                limit: MAX_TOKEN_BODY,
            }
            .into());
        }
        self.verify_backend("POST", &format!("/rooms/{channel}/tokens"), req)?;
        let app_key = self
            .config
            .artc_app_key
            .as_ref()
            .ok_or(HandlerError::NotConfigured(
                "join tokens need COSTREAM_ARTC_APP_KEY",
            ))?;
        let channel = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(req.body).map_err(|e| InboundError::NotJson(e.to_string()))?;
        let obj = value.as_object().ok_or(InboundError::NotObject("body"))?;
        if let Some(unknown) = obj
            .keys()
            .find(|k| !["user_id", "ttl_secs"].contains(&k.as_str()))
        {
            return Err(InboundError::UnknownField(unknown.clone()).into());
        }
        let user = match obj.get("user_id") {
            None => return Err(InboundError::Missing("user_id").into()),
            Some(serde_json::Value::String(u)) => {
                UserId::parse(u.as_str()).map_err(|source| InboundError::BadId {
                    field: "user_id",
                    source,
                })?
            }
            Some(_) => {
                return Err(InboundError::WrongType {
                    field: "user_id",
                    expected: "string",
                }
                .into())
            }
        };
        let ttl = match obj.get("ttl_secs") {
            None => DEFAULT_TOKEN_TTL_SECS,
            Some(v) => v
                .as_u64()
                .filter(|t| (1..=MAX_TOKEN_TTL_SECS).contains(t))
                .ok_or(InboundError::WrongType {
                    field: "ttl_secs",
                    expected: "a whole number of seconds from 1 to 86400",
                })?,
        };
        let expires_at = i64::try_from(self.now().secs() + ttl).unwrap_or(i64::MAX);
        let token = costream_alibaba::token::JoinToken::issue(
            self.config.app_id.as_str(),
            app_key.expose_secret(),
            channel.as_str(),
            user.as_str(),
            expires_at,
        );
        tracing::info!(channel_id = %channel, user_id = %user, expires_at, "join token issued");
        Ok(TokenOutcome {
            app_id: token.app_id,
            channel_id: token.channel_id,
            user_id: token.user_id,
            nonce: token.nonce,
            timestamp: token.timestamp,
            token: token.token,
        })
    }

    /// `GET /rooms/{channelId}/history` from the app's backend (signed like a host
    /// registration, over `"<timestamp>.GET /rooms/<id>/history."`, empty body): the room's
    /// last decisions, oldest first — what was called, why, and how it ended.
    pub async fn room_history(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
    ) -> Result<RoomHistory, HandlerError> {
        self.verify_backend("GET", &format!("/rooms/{channel}/history"), req)?;
        let channel = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        let entries = self
            .shell
            .history(&self.key(channel.clone()))
            .await
            .map_err(HandlerError::App)?;
        Ok(RoomHistory {
            channel_id: channel.to_string(),
            entries,
        })
    }

    /// `GET /rooms/{channelId}`.
    pub async fn room_status(&self, channel: &str) -> Result<RoomStatus, HandlerError> {
        let channel = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        let key = self.key(channel.clone());
        // Eventually consistent: a status answer may trail the last second's writes (viewers
        // poll it), and it costs half a consistent read.
        let room = self
            .shell
            .load_eventually(&key)
            .await
            .map_err(|e| HandlerError::App(e.into()))?
            .ok_or_else(|| HandlerError::NotFound(format!("room {channel} has never been seen")))?;
        let mut status = self.status_of(&room.facts);
        status.settings = room
            .facts
            .settings()
            .map(|s| settings::settings_json(&s.settings));
        let u = &room.upkeep;
        if u.failures > 0 || room.due_ms.is_some_and(|d| d <= self.shell.clock.now_ms()) {
            status.repair = Some(RepairStatus {
                due_at_ms: room.due_ms,
                attempts: u.attempts,
                failures: u.failures,
                failing_since_ms: u.failing_since_ms,
                last_failure: u.last_failure.clone(),
            });
        }
        Ok(status)
    }

    fn status_of(&self, state: &Facts) -> RoomStatus {
        let stage = costream_core::live_stage(state, &self.config.decision);
        let live = stage.is_some();
        let cdn_live = match (&stage, state.cdn()) {
            (Some(s), Some(c)) => c.action == CdnAction::Publish && c.at >= s.broadcast.started,
            _ => false,
        };
        let (playback, expires_at) = if live {
            let (urls, exp) = self.playback_urls(state.channel());
            (Some(urls), exp)
        } else {
            (None, None)
        };
        RoomStatus {
            channel_id: state.channel().to_string(),
            live,
            cdn_live,
            mix_mode: stage.as_ref().map(|s| {
                if s.on_stage.len() > 1 {
                    MixMode::Mixed.code()
                } else {
                    MixMode::Single.code()
                }
            }),
            host: stage.as_ref().map(|s| s.broadcast.host.to_string()),
            on_stage: stage
                .as_ref()
                .map(|s| s.on_stage.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            waiting: stage
                .as_ref()
                .map(|s| s.waiting.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            playback,
            expires_at,
            repair: None,
            settings: None,
            pk: state
                .pk(self.config.decision.end_grace_secs)
                .map(|l| PkStatus {
                    peer_channel_id: l.peer.to_string(),
                    peer_host: l.peer_host.to_string(),
                }),
        }
    }

    /// Freshly signed playback URLs (unsigned if no play key is configured).
    pub fn playback_urls(&self, channel: &ChannelId) -> (PlaybackUrls, Option<u64>) {
        let stream = stream_name(channel);
        let p = &self.config.playback;
        let loc = StreamLocation {
            domain: &p.play_domain,
            app_name: &p.app_name,
            stream_name: &stream,
        };
        match &p.play_auth_key {
            None => (loc.playback_urls(), None),
            Some(key) => {
                let exp = self.now().secs() + p.url_ttl.as_secs();
                match loc.signed_playback_urls(key.expose_secret(), exp) {
                    Ok(urls) => (urls, Some(exp)),
                    // Config validation guarantees a bare domain and a simple app name, so the
                    // URL always has a path; fall back to unsigned URLs rather than fail a read.
                    Err(_) => (loc.playback_urls(), None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_notification_does_not_reveal_the_url() {
        // Nothing listens on port 1: the connection is refused at once.
        let notifier = Notifier::new(NotifySettings {
            url: "http://127.0.0.1:1/hook?token=sekrit-token".into(),
            secret: "backend-hmac-key".to_owned().into(),
        })
        .expect("client");
        let hook = crate::webhooks::Webhook {
            id: "room-1:2:room.live".into(),
            kind: "room.live".into(),
            room: "room-1".into(),
            time: 1_700_000_000,
            data: serde_json::json!({"host": "host"}),
        };
        let err = notifier
            .post(&hook, 1_700_000_000)
            .await
            .expect_err("refused");
        assert!(!err.contains("sekrit-token"), "{err}");
        assert!(!err.contains("127.0.0.1"), "{err}");
    }

    fn token_services(
        app_key: Option<&str>,
    ) -> Services<
        crate::store::memory::InMemoryStore,
        crate::testing::RecordingMpu,
        crate::ports::ManualClock,
    > {
        let key = app_key.map(str::to_owned);
        let config = Config::from_lookup(move |k| match k {
            "COSTREAM_APP_ID" => Some("abc".to_owned()),
            "COSTREAM_PUSH_DOMAIN" => Some("push.example.com".to_owned()),
            "COSTREAM_PLAY_DOMAIN" => Some("play.example.com".to_owned()),
            "COSTREAM_NOTIFY_SECRET" => Some("backend-hmac-key".to_owned()),
            "COSTREAM_ARTC_APP_KEY" => key.clone(),
            _ => None,
        })
        .expect("config");
        Services {
            shell: Shell {
                store: crate::store::memory::InMemoryStore::new(),
                mpu: crate::testing::RecordingMpu::instant(),
                // The vector's expiry minus the default validity of an hour.
                clock: crate::ports::ManualClock::at_ms((1_699_423_634 - 3_600) * 1000),
                decision: config.decision.clone(),
                config: crate::shell::ShellConfig::default(),
            },
            config: Arc::new(config),
            notifier: None,
            end_grace: EndGraceWait::RepairLoop,
        }
    }

    /// Signs `body` for `POST /rooms/{channel}/tokens` at the services' clock.
    fn token_request(channel: &str, body: &str, secret: &str) -> (String, String) {
        let ts = 1_699_423_634 - 3_600;
        let path = format!("/rooms/{channel}/tokens");
        let sig = Notifier::backend_signature(secret, ts, "POST", &path, body.as_bytes());
        (ts.to_string(), sig)
    }

    #[tokio::test]
    async fn a_join_token_is_the_documented_algorithms_vector() {
        let services = token_services(Some("abckey"));
        let body = r#"{"user_id":"abcUser"}"#;
        let (ts, sig) = token_request("abcChannel", body, "backend-hmac-key");
        let request = HostRequest {
            body: body.as_bytes(),
            timestamp: Some(&ts),
            signature: Some(&sig),
        };
        let token = services
            .issue_token("abcChannel", &request)
            .expect("issued");
        // testdata/vectors/url_signing_and_tokens.json → artc_token[0] (the documented example).
        assert_eq!(
            serde_json::to_value(&token).expect("json"),
            serde_json::json!({
                "app_id": "abc", "channel_id": "abcChannel", "user_id": "abcUser", "nonce": "",
                "timestamp": 1_699_423_634,
                "token": "3c9ee8d9f8734f0b7560ed8022a0590659113955819724fc9345ab8eedf84f31",
            })
        );
        let shown = format!(
            "{:?} {}",
            services.config,
            serde_json::to_string(&token).expect("json")
        );
        assert!(!shown.contains("abckey"), "the AppKey never shows: {shown}");
    }

    #[tokio::test]
    async fn join_token_requests_are_checked_before_anything_is_issued() {
        let services = token_services(Some("abckey"));
        let call = |channel: &str, body: &str, ts: Option<&str>, sig: Option<&str>| {
            let request = HostRequest {
                body: body.as_bytes(),
                timestamp: ts,
                signature: sig,
            };
            services
                .issue_token(channel, &request)
                .map(|_| 200)
                .unwrap_or_else(|e| e.status())
        };
        let good = r#"{"user_id":"u1","ttl_secs":600}"#;
        let (ts, sig) = token_request("c1", good, "backend-hmac-key");
        assert_eq!(call("c1", good, Some(&ts), Some(&sig)), 200);
        // Unsigned, wrongly signed, signed for another room, stale.
        assert_eq!(call("c1", good, None, None), 401);
        let (_, wrong) = token_request("c1", good, "another-key");
        assert_eq!(call("c1", good, Some(&ts), Some(&wrong)), 401);
        assert_eq!(call("c2", good, Some(&ts), Some(&sig)), 401);
        let stale = (1_699_423_634 - 3_600 - 301).to_string();
        let old = Notifier::backend_signature(
            "backend-hmac-key",
            1_699_423_634 - 3_600 - 301,
            "POST",
            "/rooms/c1/tokens",
            good.as_bytes(),
        );
        assert_eq!(call("c1", good, Some(&stale), Some(&old)), 401);
        // Bad bodies, signed: unknown field, bad ttl, missing user, too large.
        for (body, status) in [
            (r#"{"user_id":"u1","role":"admin"}"#, 400),
            (r#"{"user_id":"u1","ttl_secs":86401}"#, 400),
            (r#"{"user_id":"u1","ttl_secs":0}"#, 400),
            (r#"{"ttl_secs":60}"#, 400),
            (r#"{"user_id":"no spaces"}"#, 400),
            ("[]", 400),
        ] {
            let (ts, sig) = token_request("c1", body, "backend-hmac-key");
            assert_eq!(call("c1", body, Some(&ts), Some(&sig)), status, "{body}");
        }
        let big = format!(r#"{{"user_id":"u1","pad":"{}"}}"#, "x".repeat(17 * 1024));
        let (ts, sig) = token_request("c1", &big, "backend-hmac-key");
        assert_eq!(call("c1", &big, Some(&ts), Some(&sig)), 413);
        // Without an AppKey the route says so.
        let unconfigured = token_services(None);
        let request = HostRequest {
            body: good.as_bytes(),
            timestamp: Some(&ts),
            signature: Some(&sig),
        };
        let (ts, sig) = token_request("c1", good, "backend-hmac-key");
        let request = HostRequest {
            timestamp: Some(&ts),
            signature: Some(&sig),
            ..request
        };
        let err = unconfigured.issue_token("c1", &request).expect_err("501");
        assert_eq!(err.status(), 501, "{err}");
        // Nothing was written.
        assert!(services.shell.store.rooms().is_empty());
    }

    const BACKEND_VECTOR: &str =
        "sha256=b37a21160efbb9c5f6003d1d9875c59c389821267b29d46e7ef53fb437a1f3c4";

    #[test]
    fn backend_signature_covers_method_and_path() {
        // Independent vector: printf '%s' '1700000000.PUT /rooms/c1/host.{"user_id":"u1"}' |
        //   openssl dgst -sha256 -hmac backend-hmac-key
        let sig = Notifier::backend_signature(
            "backend-hmac-key",
            1_700_000_000,
            "put",
            "/rooms/c1/host",
            br#"{"user_id":"u1"}"#,
        );
        assert_eq!(sig, BACKEND_VECTOR);
        let other_room = Notifier::backend_signature(
            "backend-hmac-key",
            1_700_000_000,
            "PUT",
            "/rooms/c2/host",
            br#"{"user_id":"u1"}"#,
        );
        assert_ne!(sig, other_room);
    }

    #[test]
    fn notification_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(
        //   b'backend-hmac-key', b'1700000000.{\"live\":true}', hashlib.sha256).hexdigest())"
        assert_eq!(
            Notifier::signature("backend-hmac-key", 1_700_000_000, br#"{"live":true}"#),
            "sha256=b9eeefbe68ab0cb9de47ba067d3d05ea91eca37f0e2ab83a9c8dfbfae310cdaf"
        );
    }
}
