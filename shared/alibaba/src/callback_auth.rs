//! Verification of ApsaraVideo Live callbacks signed with `ALI-LIVE-SIGNATURE` (spec §5.1).
//!
//! With `NotifyReqAuth=yes` the CDN sends `ALI-LIVE-TIMESTAMP` (unix seconds) and
//! `ALI-LIVE-SIGNATURE = md5("{callback host}|{timestamp}|{NotifyAuthKey}")` in lowercase hex.
//! The scheme has no nonce, so a captured callback could be replayed forever; rejecting
//! timestamps outside a window (default 300 s either way) bounds that. The comparison is
//! constant-time so the signature cannot be guessed byte by byte from response times. The time
//! is an input, which keeps this pure.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use super::urls::md5_hex;

pub const TIMESTAMP_HEADER: &str = "ALI-LIVE-TIMESTAMP";
pub const SIGNATURE_HEADER: &str = "ALI-LIVE-SIGNATURE";
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackAuthError {
    #[error("{TIMESTAMP_HEADER} is not a unix timestamp: {0:?}")]
    BadTimestamp(String),
    #[error(
        "{TIMESTAMP_HEADER} {timestamp} is {skew_secs} s away from now (allowed {window_secs} s)"
    )]
    Stale {
        timestamp: i64,
        skew_secs: u64,
        window_secs: u64,
    },
    #[error("{SIGNATURE_HEADER} does not match")]
    Mismatch,
}

/// The expected `ALI-LIVE-SIGNATURE` for a callback to `host` at `timestamp` (the header's text).
pub fn expected_signature(host: &str, timestamp: &str, key: &str) -> String {
    md5_hex(&format!("{host}|{timestamp}|{key}"))
}

/// The host part of the callback URL as configured (`https://host[:port]/path` → `host`).
///
/// The signature covers the host the callback was configured with, not whatever `Host` header
/// arrives (API Gateway may rewrite it), so derive it from configuration. Whether a non-default
/// port is part of it is undocumented; the documented example has none, and this drops it.
pub fn callback_host(callback_url: &str) -> Option<&str> {
    let rest = callback_url
        .split_once("://")
        .map_or(callback_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// Checks `ALI-LIVE-*` headers against the shared `NotifyAuthKey`.
#[derive(Clone)]
pub struct CallbackVerifier {
    host: String,
    key: SecretString,
    window: Duration,
}

impl fmt::Debug for CallbackVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackVerifier")
            .field("host", &self.host)
            .field("key", &"[REDACTED]")
            .field("window", &self.window)
            .finish()
    }
}

impl CallbackVerifier {
    /// `host` is the callback URL's host (see [`callback_host`]).
    pub fn new(host: impl Into<String>, key: SecretString) -> Self {
        CallbackVerifier {
            host: host.into(),
            key,
            window: DEFAULT_WINDOW,
        }
    }

    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Verifies the two header values; `now_unix` is the current unix time in seconds.
    pub fn verify(
        &self,
        timestamp_header: &str,
        signature_header: &str,
        now_unix: i64,
    ) -> Result<(), CallbackAuthError> {
        let timestamp_text = timestamp_header.trim();
        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| CallbackAuthError::BadTimestamp(timestamp_header.to_owned()))?;
        let skew_secs = now_unix.abs_diff(timestamp);
        let window_secs = self.window.as_secs();
        if skew_secs > window_secs {
            return Err(CallbackAuthError::Stale {
                timestamp,
                skew_secs,
                window_secs,
            });
        }
        let expected = expected_signature(&self.host, timestamp_text, self.key.expose_secret());
        let given = signature_header.trim().to_ascii_lowercase();
        if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            Ok(())
        } else {
            Err(CallbackAuthError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct File {
        ali_live_signature: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        callback_url: String,
        #[serde(rename = "ALI-LIVE-TIMESTAMP")]
        timestamp: String,
        key: String,
        md5_content: String,
        #[serde(rename = "ALI-LIVE-SIGNATURE")]
        signature: String,
    }

    fn cases() -> Vec<Case> {
        let text = std::fs::read_to_string(crate::vector_path("url_signing_and_tokens.json"))
            .expect("read url_signing_and_tokens.json");
        serde_json::from_str::<File>(&text)
            .expect("parse vectors")
            .ali_live_signature
    }

    #[test]
    fn every_ali_live_signature_vector_verifies() {
        let cases = cases();
        assert!(!cases.is_empty());
        for c in cases {
            let host = callback_host(&c.callback_url).expect("host");
            assert_eq!(format!("{host}|{}|{}", c.timestamp, c.key), c.md5_content);
            assert_eq!(expected_signature(host, &c.timestamp, &c.key), c.signature);
            let ts: i64 = c.timestamp.parse().expect("numeric timestamp");
            let verifier = CallbackVerifier::new(host, SecretString::from(c.key.clone()));
            verifier
                .verify(&c.timestamp, &c.signature, ts + 10)
                .expect("valid");
            verifier
                .verify(&c.timestamp, &c.signature.to_ascii_uppercase(), ts - 10)
                .expect("case-insensitive");
        }
    }

    #[test]
    fn rejects_wrong_signature_stale_and_garbage() {
        let c = cases().remove(0);
        let host = callback_host(&c.callback_url).expect("host");
        let ts: i64 = c.timestamp.parse().expect("numeric");
        let v = CallbackVerifier::new(host, SecretString::from(c.key.clone()));
        assert_eq!(
            v.verify(&c.timestamp, "00000000000000000000000000000000", ts),
            Err(CallbackAuthError::Mismatch)
        );
        assert_eq!(
            v.verify(&c.timestamp, "", ts),
            Err(CallbackAuthError::Mismatch)
        );
        assert!(matches!(
            v.verify(&c.timestamp, &c.signature, ts + 301),
            Err(CallbackAuthError::Stale { skew_secs: 301, .. })
        ));
        assert!(matches!(
            v.verify(&c.timestamp, &c.signature, ts - 301),
            Err(CallbackAuthError::Stale { .. })
        ));
        v.verify(&c.timestamp, &c.signature, ts + 300)
            .expect("edge of window");
        let tight = v.clone().with_window(Duration::from_secs(5));
        assert!(tight.verify(&c.timestamp, &c.signature, ts + 6).is_err());
        assert!(matches!(
            v.verify("yesterday", &c.signature, ts),
            Err(CallbackAuthError::BadTimestamp(_))
        ));
        let other_key = CallbackVerifier::new(host, SecretString::from("otherkey".to_owned()));
        assert_eq!(
            other_key.verify(&c.timestamp, &c.signature, ts),
            Err(CallbackAuthError::Mismatch)
        );
        assert!(!format!("{v:?}").contains(&c.key));
    }

    #[test]
    fn callback_host_strips_scheme_port_path_and_userinfo() {
        assert_eq!(
            callback_host("https://learn.aliyundoc.com/your/callback"),
            Some("learn.aliyundoc.com")
        );
        assert_eq!(
            callback_host("http://u:p@h.example:8080/x?y"),
            Some("h.example")
        );
        assert_eq!(callback_host("h.example"), Some("h.example"));
        assert_eq!(callback_host("https:///x"), None);
    }
}
