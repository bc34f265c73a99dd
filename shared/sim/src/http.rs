//! The simulated Live API over HTTP: a gateway that accepts exactly what the official SDKs and
//! [`LiveClient`](costream_alibaba::LiveClient) send (spec §1.3) and authenticates it the way the
//! real gateway does (spec §1.2, §1.5) before the [`SimulatedLive`] core sees it.
//!
//! - `POST /` with parameters in an `application/x-www-form-urlencoded` body (pop-core,
//!   `LiveClient`) and/or in the query string (Tea SDK); `GET /` with the query (`ListEventSub`).
//!   The signature covers the union of both, with the request's own method.
//! - Checks, in order: no parameter twice (a doubled `SignatureNonce` is `SignatureNonceUsed`),
//!   the common parameters present (`Missing<Name>`), the AccessKeyId known
//!   (`InvalidAccessKeyId.NotFound`, 404), `HMAC-SHA1` / `1.0`, the `Timestamp` well formed and
//!   within 15 minutes of the simulator's clock (`InvalidTimeStamp.*`), the signature
//!   recomputed with the known secret (`SignatureDoesNotMatch`, with the server's StringToSign
//!   in the message as the real gateway gives it), the STS token, the nonce unused in the last
//!   15 minutes (`SignatureNonceUsed`), and `Version=2016-11-01`.
//! - A refused request is recorded and logged like any call (its `code` says why), so
//!   `GET /_sim/calls` shows every request that arrived.
//! - `GET /_sim/tasks`, `GET /_sim/calls`, `GET /_sim/subscriptions`, `GET /_sim/notify`: JSON
//!   snapshots for humans and tests (unauthenticated: this is a local development server).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::validate::{optional, Params};
use super::{Fault, SimResponse, SimulatedLive, Transport};
use costream_alibaba::request::LIVE_API_VERSION;
use costream_alibaba::sign::{sign, Method};
use costream_alibaba::Credentials;

/// How far a request's `Timestamp` may be from the gateway's clock, and how long a nonce is
/// remembered (a replay older than that fails the timestamp check instead).
pub const TIMESTAMP_WINDOW_MS: u64 = 15 * 60 * 1000;

/// The common parameters every signed request carries (`SecurityToken` only with STS).
const COMMON_REQUIRED: [&str; 7] = [
    "AccessKeyId",
    "Signature",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "Version",
];

struct Gateway {
    sim: Arc<SimulatedLive>,
    credentials: Credentials,
    /// Nonce → when it was first accepted.
    nonces: Mutex<HashMap<String, u64>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("sim", &self.sim)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The fake Live API endpoint, accepting requests signed with `credentials`; point
/// `LiveClientConfig::endpoint` (or `ALIBABA_CLOUD_LIVE_ENDPOINT`) at where it is served.
pub fn router(sim: Arc<SimulatedLive>, credentials: Credentials) -> Router {
    let gateway = Arc::new(Gateway {
        sim,
        credentials,
        nonces: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(api).post(api))
        .route("/_sim/tasks", get(tasks))
        .route("/_sim/calls", get(calls))
        .route("/_sim/subscriptions", get(subscriptions))
        .route("/_sim/notify", get(notify_configs))
        .with_state(gateway)
}

/// Serves `router` on `listener` until the task is dropped or the connection fails, e.g.
/// `tokio::spawn(serve(TcpListener::bind("127.0.0.1:0").await?, router(sim, creds)))`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

async fn api(
    State(gateway): State<Arc<Gateway>>,
    method: HttpMethod,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Only GET (and HEAD, which axum routes to it) and POST reach this handler.
    let method = if method == HttpMethod::POST {
        Method::Post
    } else {
        Method::Get
    };
    let form_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body: &[u8] = if form_body { &body } else { &[] };
    let answer = gateway.receive(method, query.as_deref().unwrap_or(""), body);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer.body)).into_response()
}

async fn tasks(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(gateway.sim.tasks()).into_response()
}

async fn calls(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(gateway.sim.calls()).into_response()
}

async fn subscriptions(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(gateway.sim.subscriptions()).into_response()
}

async fn notify_configs(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(gateway.sim.notify_configs()).into_response()
}

impl Gateway {
    /// One request: its query string and form body (both percent-encoded), signed with `method`.
    fn receive(&self, method: Method, query: &str, form_body: &[u8]) -> SimResponse {
        let mut params = BTreeMap::new();
        let mut doubled = None;
        let pairs = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .chain(url::form_urlencoded::parse(form_body).into_owned());
        for (name, value) in pairs {
            if params.insert(name.clone(), value).is_some() {
                doubled.get_or_insert(name);
            }
        }
        match self.authenticate(method, &params, doubled) {
            Ok(()) => self.sim.handle(&params, Transport::Http),
            Err(fault) => self.sim.reject(&params, Transport::Http, fault),
        }
    }

    fn authenticate(
        &self,
        method: Method,
        params: &Params,
        doubled: Option<String>,
    ) -> Result<(), Fault> {
        if let Some(name) = doubled {
            return Err(if name == "SignatureNonce" {
                nonce_used()
            } else {
                Fault::invalid(format!("The parameter {name} is given more than once."))
            });
        }
        for name in COMMON_REQUIRED {
            if optional(params, name).is_none() {
                return Err(Fault::new(
                    400,
                    &format!("Missing{name}"),
                    format!("{name} is mandatory for this action."),
                ));
            }
        }
        let get = |name: &str| optional(params, name).unwrap_or_default();
        if get("AccessKeyId") != self.credentials.access_key_id {
            return Err(Fault::new(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ));
        }
        if get("SignatureMethod") != "HMAC-SHA1" {
            return Err(Fault::new(
                400,
                "InvalidSignatureMethod",
                "Specified signature method is not supported.",
            ));
        }
        if get("SignatureVersion") != "1.0" {
            return Err(Fault::new(
                400,
                "InvalidSignatureVersion",
                "Specified signature version is not supported.",
            ));
        }
        let now = self.sim.now_ms();
        let sent_at = parse_timestamp(get("Timestamp")).ok_or_else(|| {
            Fault::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        })?;
        if sent_at.abs_diff(now) > TIMESTAMP_WINDOW_MS {
            return Err(Fault::new(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
        let mut unsigned = params.clone();
        let received = unsigned.remove("Signature").unwrap_or_default();
        let expected = sign(
            method,
            &unsigned,
            self.credentials.access_key_secret.expose_secret(),
        );
        if !bool::from(expected.signature.as_bytes().ct_eq(received.as_bytes())) {
            return Err(Fault::new(
                400,
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature does not match our calculation. server string to sign is:{}",
                    expected.string_to_sign
                ),
            ));
        }
        let token = self
            .credentials
            .security_token
            .as_ref()
            .map(|t| t.expose_secret());
        if optional(params, "SecurityToken") != token {
            return Err(Fault::new(
                400,
                "InvalidSecurityToken.Mismatch",
                "Specified SecurityToken mismatch with the AccessKey.",
            ));
        }
        self.use_nonce(get("SignatureNonce"), now)?;
        if get("Version") != LIVE_API_VERSION {
            return Err(Fault::api_not_found());
        }
        Ok(())
    }

    /// Accepts a nonce once per [`TIMESTAMP_WINDOW_MS`]. Only called for a correctly signed
    /// request, so nobody can burn another client's nonces.
    fn use_nonce(&self, nonce: &str, now: u64) -> Result<(), Fault> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.retain(|_, at| now.saturating_sub(*at) < TIMESTAMP_WINDOW_MS);
        if nonces.contains_key(nonce) {
            return Err(nonce_used());
        }
        nonces.insert(nonce.to_owned(), now);
        Ok(())
    }
}

fn nonce_used() -> Fault {
    Fault::new(
        400,
        "SignatureNonceUsed",
        "Specified signature nonce was used already.",
    )
}

/// `yyyy-MM-ddTHH:mm:ssZ` (the only form the gateway takes, spec §1.1) as Unix milliseconds.
fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let field = |from: usize, to: usize| text.get(from..to)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(field(5, 7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::from(field(0, 4)?),
        month,
        u8::try_from(field(8, 10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(field(11, 13)?).ok()?,
        u8::try_from(field(14, 16)?).ok()?,
        u8::try_from(field(17, 19)?).ok()?,
    )
    .ok()?;
    let secs = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(secs).ok()?.checked_mul(1000)
}

#[cfg(test)]
mod tests;
