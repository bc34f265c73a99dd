//! The Alibaba Cloud adapter: everything costream sends to or verifies from Alibaba, byte-exact
//! with the official SDKs (spec `alibaba-api.md`).
//!
//! # Layout
//! - [`sign`]: RPC signature V1, pure (spec §1.2).
//! - [`request`]: the Live API 2016-11-01 requests as wire DTOs and the complete signed parameter
//!   map of one attempt (spec §3, §4.1). Independent of the room domain.
//! - [`response`]: the answer of one attempt → success, typed [`MpuError`], or an idempotent
//!   [`Outcome`] ("task already exists" on Start is fine).
//! - [`client`]: [`LiveClient`], the reqwest transport with timeouts, deadline and retries.
//! - [`credentials`]: the AccessKey pair (and STS token) as secrets.
//! - [`urls`], [`callback_auth`], [`token`]: type-A `auth_key` URL signing, `ALI-LIVE-SIGNATURE`
//!   verification of CDN callbacks, and ARTC join tokens (spec §5, §6).
//!
//! The rest of the crate talks to Alibaba only through the [`LiveApi`] port, so tests and the
//! local server can stand a fake in for [`LiveClient`].

pub mod callback_auth;
pub mod client;
pub mod clock;
pub mod credentials;
pub mod request;
pub mod response;
pub mod sign;
pub mod token;
pub mod urls;

use std::future::Future;

pub use client::{LiveClient, LiveClientConfig, NonceSource, RetryPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credentials::{Credentials, CredentialsError};
pub use request::LiveRequest;
pub use response::{MpuError, Outcome, Reply};

/// The port to the Live API: send one request (retries, signing and idempotent interpretation
/// included) and get back what it means for the caller.
///
/// `Ok` covers every answer the caller can proceed with — including [`Outcome::AlreadyExists`]
/// (Start found the task running: make it match with an Update), [`Outcome::AlreadyStopped`]
/// (Stop of a task that is gone) and [`Outcome::TaskNotFound`] (Update of a task that is gone:
/// Start it again). `Err` is a failure; [`MpuError::is_retryable`] says whether trying the whole
/// operation again later can help.
pub trait LiveApi {
    fn call(&self, request: &LiveRequest) -> impl Future<Output = Result<Reply, MpuError>> + Send;
}

// Shared ownership: `costream serve` and tests keep a handle on the transport they wire in.
impl<T: LiveApi + Send + Sync> LiveApi for std::sync::Arc<T> {
    fn call(&self, request: &LiveRequest) -> impl Future<Output = Result<Reply, MpuError>> + Send {
        (**self).call(request)
    }
}

/// Path of a file in the committed test vectors (`<repo>/testdata/vectors`, see its README), read at test time so
/// expectations are never copied into the code. For this crate's and its neighbours' tests.
#[doc(hidden)]
pub fn vector_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(name)
}
