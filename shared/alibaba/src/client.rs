//! [`LiveClient`]: the HTTP transport to the ApsaraVideo Live API.
//!
//! Owns timeouts, retries and the per-attempt common parameters. It signs every attempt afresh
//! (new `Timestamp` and `SignatureNonce`, so a retry is never rejected as a replay), sends it as
//! `POST` with an `application/x-www-form-urlencoded` body and an empty query (spec §1.3; the
//! pop-core layout, which avoids URL-length limits with large `TranscodeParams`), and hands the
//! answer to `response.rs` to interpret. Clock and nonces are injected so tests are
//! deterministic; the domain never sees any of this.
//!
//! Timing defaults (all configurable in [`LiveClientConfig`]): connect 1 s, one attempt 3 s, the
//! whole call including backoff 8 s, at most 5 attempts, backoff 100 ms doubling up to 1 s with
//! full jitter, and never less than the service's `x-acs-retry-after`. A Lambda calling this needs
//! a function timeout above the 8 s deadline plus its own work.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::Url;
use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use super::credentials::Credentials;
use super::request::{
    sign_request, CommonParams, LiveRequest, SignedRequest, DEFAULT_FORMAT, LIVE_API_VERSION,
};
use super::response::{conclude, interpret, parse_retry_after, MpuError, Reply};
use super::sign::Method;
use super::LiveApi;
use crate::clock::{Clock, SystemClock};

pub const DEFAULT_ENDPOINT: &str = "https://live.aliyuncs.com/";
/// Overrides the endpoint, e.g. `http://127.0.0.1:9000` for a local fake.
pub const ENDPOINT_VAR: &str = "ALIBABA_CLOUD_LIVE_ENDPOINT";

/// An attempt is not started with less time than this left before the deadline: it could not
/// complete anyway and would only turn a clear error into a timeout.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// Source of `SignatureNonce`: must never repeat (a reused nonce is `SignatureNonceUsed`).
/// Production: UUID v4 as 32 hex digits, like the Tea SDK.
pub trait NonceSource: Send + Sync {
    fn next_nonce(&self) -> String;
}

impl<F: Fn() -> String + Send + Sync> NonceSource for F {
    fn next_nonce(&self) -> String {
        self()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UuidNonces;

impl NonceSource for UuidNonces {
    fn next_nonce(&self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// Capped exponential backoff with full jitter: before retry `n` (1-based) wait a uniformly
/// random time in `[0, min(max_delay, base_delay * 2^(n-1))]`, but at least the server's
/// `x-acs-retry-after`. Jitter spreads the retries of many Lambdas hitting the same throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retries).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Upper bound of the jittered delay before retry number `retry` (1-based).
    pub fn delay_cap(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let cap = u64::try_from(self.delay_cap(retry).as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(rand::rng().random_range(0..=cap));
        retry_after.map_or(jittered, |wait| wait.max(jittered))
    }
}

#[derive(Debug, Clone)]
pub struct LiveClientConfig {
    /// Default [`DEFAULT_ENDPOINT`]; see [`ENDPOINT_VAR`]. Checked by [`LiveClient::new`].
    pub endpoint: String,
    pub connect_timeout: Duration,
    /// One attempt, connect to last body byte.
    pub attempt_timeout: Duration,
    /// The whole call: all attempts and the waits between them.
    pub deadline: Duration,
    pub retry: RetryPolicy,
    /// `Format` parameter; see `request::DEFAULT_FORMAT`.
    pub format: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("invalid Live API endpoint {value:?} (from {origin})")]
    Endpoint {
        value: String,
        origin: &'static str,
        #[source]
        source: Option<url::ParseError>,
    },
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

impl Default for LiveClientConfig {
    fn default() -> Self {
        LiveClientConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(8),
            retry: RetryPolicy::default(),
            format: DEFAULT_FORMAT.to_owned(),
        }
    }
}

/// Parses an `http(s)` endpoint URL.
pub fn parse_endpoint(value: &str, origin: &'static str) -> Result<Url, ClientBuildError> {
    let url = Url::parse(value).map_err(|source| ClientBuildError::Endpoint {
        value: value.to_owned(),
        origin,
        source: Some(source),
    })?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(url)
    } else {
        Err(ClientBuildError::Endpoint {
            value: value.to_owned(),
            origin,
            source: None,
        })
    }
}

impl LiveClientConfig {
    /// Defaults, with the endpoint taken from `ALIBABA_CLOUD_LIVE_ENDPOINT` when `lookup` has it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ClientBuildError> {
        let mut config = LiveClientConfig::default();
        if let Some(value) = lookup(ENDPOINT_VAR).filter(|v| !v.is_empty()) {
            parse_endpoint(&value, ENDPOINT_VAR)?;
            config.endpoint = value;
        }
        Ok(config)
    }
}

/// The real [`LiveApi`]: one `reqwest::Client` (connection pool, rustls) built once and reused
/// for every call, as a Lambda must to keep warm invocations cheap.
#[derive(Clone)]
pub struct LiveClient {
    http: reqwest::Client,
    endpoint: Url,
    config: LiveClientConfig,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    nonces: Arc<dyn NonceSource>,
}

impl fmt::Debug for LiveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveClient")
            .field("config", &self.config)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// What one attempt produced, before idempotent interpretation.
struct AttemptError {
    error: MpuError,
    nonce: String,
}

impl LiveClient {
    pub fn new(
        config: LiveClientConfig,
        credentials: Credentials,
    ) -> Result<Self, ClientBuildError> {
        let http = Self::http_client(&config)?;
        Self::with_http(config, credentials, http)
    }

    /// The HTTP client of a `LiveClient` with `config`: its timeouts, no redirects (a 3xx would
    /// re-send the signed request, and its StreamURL, elsewhere). Building one loads the TLS
    /// roots — milliseconds of CPU — so a cold start builds it while it waits for its secrets.
    pub fn http_client(config: &LiveClientConfig) -> Result<reqwest::Client, ClientBuildError> {
        reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientBuildError::Http)
    }

    /// A `LiveClient` over `http`, which must come from [`LiveClient::http_client`] with the
    /// same timeouts as `config`.
    pub fn with_http(
        config: LiveClientConfig,
        credentials: Credentials,
        http: reqwest::Client,
    ) -> Result<Self, ClientBuildError> {
        let endpoint = parse_endpoint(&config.endpoint, "LiveClientConfig.endpoint")?;
        Ok(LiveClient {
            http,
            endpoint,
            config,
            credentials,
            clock: Arc::new(SystemClock),
            nonces: Arc::new(UuidNonces),
        })
    }

    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn with_nonces(mut self, nonces: impl NonceSource + 'static) -> Self {
        self.nonces = Arc::new(nonces);
        self
    }

    pub fn config(&self) -> &LiveClientConfig {
        &self.config
    }

    /// Sends `request` with retries (see the module doc) and interprets the answer.
    pub async fn send(&self, request: &LiveRequest) -> Result<Reply, MpuError> {
        let action = request.action();
        let deadline = Instant::now() + self.config.deadline;
        let mut attempt: u32 = 0;
        // The first attempt whose fate is unknown (it may still be processed). If a later attempt
        // is refused, the call as a whole is still in doubt: report that, not the refusal, so
        // the caller doesn't assume nothing happened.
        let mut in_doubt: Option<MpuError> = None;
        let conclusion = |error: MpuError, in_doubt: Option<MpuError>| match in_doubt {
            Some(doubt) if error.is_definite() => doubt,
            _ => error,
        };
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = remaining.min(self.config.attempt_timeout);
            let AttemptError { error, nonce } = match self.attempt(request, budget).await {
                Ok(success) => return conclude(request, Ok(success)),
                Err(e) => e,
            };
            let code = error.code().map(str::to_owned);
            let error = match conclude(request, Err(error)) {
                Ok(reply) => {
                    tracing::info!(
                        action,
                        attempt,
                        mpu_request_id = reply.request_id.as_deref(),
                        code = code.as_deref(),
                        outcome = %reply.outcome,
                        "alibaba call answered idempotently"
                    );
                    return Ok(reply);
                }
                Err(error) => error,
            };
            let retryable = error.is_retryable();
            tracing::warn!(
                action,
                attempt,
                mpu_request_id = error.request_id(),
                code = error.code(),
                signature_nonce = %nonce,
                retryable,
                error = %error,
                "alibaba call attempt failed"
            );
            if !retryable || attempt >= self.config.retry.max_attempts {
                return Err(conclusion(error, in_doubt));
            }
            let wait = self.config.retry.delay(attempt, error.retry_after());
            let next_start = Instant::now() + wait;
            if next_start + MIN_ATTEMPT_TIME > deadline {
                return Err(conclusion(error, in_doubt));
            }
            if !error.is_definite() && in_doubt.is_none() {
                in_doubt = Some(error);
            }
            tokio::time::sleep_until(next_start).await;
        }
    }

    /// Signs and sends one attempt with at most `budget` of time.
    async fn attempt(
        &self,
        request: &LiveRequest,
        budget: Duration,
    ) -> Result<super::response::Success, AttemptError> {
        let action = request.action();
        let nonce = self.nonces.next_nonce();
        let signed = match self.sign(request, &nonce) {
            Ok(s) => s,
            Err(error) => return Err(AttemptError { error, nonce }),
        };
        let fail = |error: MpuError| AttemptError {
            error,
            nonce: nonce.clone(),
        };
        let response = self
            .build_http_request(&signed)
            .timeout(budget)
            .send()
            .await
            .map_err(|e| fail(transport_error(action, e)))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(
            response
                .headers()
                .get("x-acs-retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(transport_error(action, e)))?;
        interpret(action, status, retry_after, &body).map_err(fail)
    }

    fn sign(&self, request: &LiveRequest, nonce: &str) -> Result<SignedRequest, MpuError> {
        let creds = &self.credentials;
        let token = creds.security_token.as_ref().map(|t| t.expose_secret());
        let common = CommonParams {
            access_key_id: &creds.access_key_id,
            timestamp: self.clock.now_utc(),
            signature_nonce: nonce,
            security_token: token,
            format: &self.config.format,
        };
        Ok(sign_request(
            request,
            &common,
            creds.access_key_secret.expose_secret(),
        )?)
    }

    fn build_http_request(&self, signed: &SignedRequest) -> reqwest::RequestBuilder {
        let encoded = signed.encoded_params();
        let builder = match signed.method {
            Method::Post => self
                .http
                .post(self.endpoint.clone())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(encoded),
            Method::Get => {
                let mut url = self.endpoint.clone();
                url.set_query(Some(&encoded));
                self.http.get(url)
            }
        };
        // Informational headers the Tea SDK also sends; not part of the V1 signature.
        builder
            .header("x-acs-action", signed.action)
            .header("x-acs-version", LIVE_API_VERSION)
            .header(USER_AGENT, concat!("costream/", env!("CARGO_PKG_VERSION")))
    }
}

fn transport_error(action: &'static str, source: reqwest::Error) -> MpuError {
    // The URL of a signed GET carries the signature and any STS token: never in an error.
    let source = source.without_url();
    if source.is_timeout() {
        MpuError::Timeout { action, source }
    } else {
        MpuError::Transport { action, source }
    }
}

impl LiveApi for LiveClient {
    fn call(
        &self,
        request: &LiveRequest,
    ) -> impl std::future::Future<Output = Result<Reply, MpuError>> + Send {
        self.send(request)
    }
}

#[cfg(test)]
mod tests;
