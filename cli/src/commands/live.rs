//! What the operations commands (`subscribe`, `cdn-notify`, `tasks`, `stop`) share: the signed
//! [`LiveClient`] built from the environment, the AppId, a runtime for one call, and the
//! redaction that keeps secrets out of everything they print.
//!
//! Secrets can come back in text the CLI did not write: a `SignatureDoesNotMatch` message quotes
//! the server's StringToSign (which holds the STS token and a `NotifyAuthKey` in plain or
//! percent-encoded form), and a malformed answer is quoted as a body snippet. So every error of
//! an operations command goes through [`Redactor::scrub`] before it is printed, and the values
//! the service echoes back (callback URLs, signed stream URLs) are masked in the output.

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use costream_alibaba::client::ENDPOINT_VAR;
use costream_alibaba::credentials::{ACCESS_KEY_ID_VAR, ACCESS_KEY_SECRET_VAR, SECURITY_TOKEN_VAR};
use costream_alibaba::sign::percent_encode;
use costream_alibaba::{Credentials, LiveClient, LiveClientConfig, LiveRequest, Reply};
use secrecy::ExposeSecret as _;

/// Where the AppId comes from when `--app-id` is not given.
pub const APP_ID_VAR: &str = "COSTREAM_APP_ID";

/// Shown in place of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The AppId option every operations command takes.
#[derive(Debug, Args)]
pub struct AppIdArg {
    /// ARTC AppId (the Live+ ARTC application) [default: $COSTREAM_APP_ID].
    #[arg(long, value_name = "APP_ID", global = true)]
    pub app_id: Option<String>,
}

impl AppIdArg {
    /// `--app-id`, else `COSTREAM_APP_ID`; checked like the service checks it.
    pub fn resolve(&self) -> anyhow::Result<String> {
        let app_id = match &self.app_id {
            Some(id) => id.clone(),
            None => match std::env::var(APP_ID_VAR) {
                Ok(id) if !id.is_empty() => id,
                _ => bail!("no AppId: pass --app-id or set the environment variable {APP_ID_VAR}"),
            },
        };
        check_id("AppId", &app_id, 64)?;
        Ok(app_id)
    }
}

/// Checks an id the Live API restricts to `[A-Za-z0-9_-]` and `max` characters.
pub fn check_id(what: &str, value: &str, max: usize) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        bail!("{what} {value:?} must be 1-{max} characters of A-Z a-z 0-9 _ -");
    }
    Ok(())
}

/// Checks that `value` is an absolute `http(s)` URL with a host.
pub fn check_http_url(what: &str, value: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(value).map_err(|e| anyhow!("{what} is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        bail!("{what} must be an http:// or https:// URL with a host");
    }
    Ok(parsed)
}

/// The signed client and the redactor that knows its secrets.
#[derive(Debug)]
pub struct Live {
    client: LiveClient,
    pub redactor: Redactor,
}

impl Live {
    /// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, the optional
    /// `ALIBABA_CLOUD_SECURITY_TOKEN` and `ALIBABA_CLOUD_LIVE_ENDPOINT`.
    pub fn from_env() -> anyhow::Result<Self> {
        let lookup = |k: &str| std::env::var(k).ok();
        let credentials = Credentials::from_lookup(lookup).map_err(|e| {
            anyhow!(
                "{e}: the operations commands sign their calls with {ACCESS_KEY_ID_VAR} and \
                 {ACCESS_KEY_SECRET_VAR} (and {SECURITY_TOKEN_VAR} for STS credentials)"
            )
        })?;
        let mut redactor = Redactor::default();
        redactor.secret(credentials.access_key_secret.expose_secret());
        if let Some(token) = &credentials.security_token {
            redactor.secret(token.expose_secret());
        }
        let config = LiveClientConfig::from_lookup(lookup)
            .with_context(|| format!("check {ENDPOINT_VAR}"))?;
        let client = LiveClient::new(config, credentials)?;
        Ok(Live { client, redactor })
    }

    /// Sends one request (with the client's retries) on a runtime made for it. Errors come back
    /// scrubbed of every secret the redactor knows.
    pub fn call(&self, request: &LiveRequest) -> anyhow::Result<Reply> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime
            .block_on(self.client.send(request))
            .map_err(|e| self.redactor.error(&anyhow::Error::new(e)))
    }
}

/// Replaces known secrets in text: each one as is and in the one- and two-fold percent-encoded
/// forms the signing algorithm produces (a StringToSign holds values encoded twice).
#[derive(Default)]
pub struct Redactor {
    /// (needle, replacement), longest needle first when scrubbing.
    needles: Vec<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    /// The needles are the secrets themselves: only their number is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Redactor {
    /// A secret value, replaced by [`REDACTED`].
    pub fn secret(&mut self, value: &str) {
        self.replace(value, REDACTED);
    }

    /// A value shown as `replacement` (e.g. a callback URL as its masked form).
    pub fn replace(&mut self, value: &str, replacement: &str) {
        // Shorter strings would mask ordinary text; no secret costream handles is that short.
        if value.chars().count() < 4 {
            return;
        }
        let once = percent_encode(value);
        let twice = percent_encode(&once);
        for needle in [value.to_owned(), once, twice] {
            if !self.needles.iter().any(|(n, _)| *n == needle) {
                self.needles.push((needle, replacement.to_owned()));
            }
        }
        self.needles
            .sort_by_key(|(needle, _)| std::cmp::Reverse(needle.len()));
    }

    pub fn scrub(&self, text: &str) -> String {
        self.needles
            .iter()
            .fold(text.to_owned(), |acc, (needle, replacement)| {
                acc.replace(needle.as_str(), replacement)
            })
    }

    /// The error with its whole cause chain, scrubbed, as a new error.
    pub fn error(&self, error: &anyhow::Error) -> anyhow::Error {
        anyhow!(self.scrub(&format!("{error:#}")))
    }
}

/// A URL with its last path segment and its query masked: enough to recognise where it points,
/// nothing of the secret costream's callback URLs carry there (`.../artc/<secret>`).
pub fn mask_url(value: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(value) else {
        return REDACTED.to_owned();
    };
    let segments: Vec<String> = parsed
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(last) = segments.iter().rposition(|s| !s.is_empty()) {
        let masked: Vec<&str> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| if i == last { "***" } else { s.as_str() })
            .collect();
        parsed.set_path(&masked.join("/"));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("***"));
    }
    parsed.set_fragment(None);
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have none.
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    parsed.to_string()
}

/// A signed stream URL with the hash of its `auth_key` masked. The expiry timestamp (first part)
/// stays visible; the hash is what lets anyone push or play until then.
pub fn mask_auth_key(value: &str) -> String {
    const PARAM: &str = "auth_key=";
    let Some(found) = value
        .match_indices(PARAM)
        .find(|(i, _)| *i > 0 && matches!(value.as_bytes()[i - 1], b'?' | b'&'))
        .map(|(i, _)| i + PARAM.len())
    else {
        return value.to_owned();
    };
    let end = value[found..]
        .find(['&', '#'])
        .map_or(value.len(), |n| found + n);
    let parts: Vec<&str> = value[found..end].split('-').collect();
    let masked = if parts.len() == 4 {
        format!("{}-{}-{}-***", parts[0], parts[1], parts[2])
    } else {
        "***".to_owned()
    };
    format!("{}{masked}{}", &value[..found], &value[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_catches_plain_and_encoded_forms() {
        let mut r = Redactor::default();
        r.secret("CAIS+sts/token==");
        let text = "token CAIS+sts/token== in query CAIS%2Bsts%2Ftoken%3D%3D and signed \
                    CAIS%252Bsts%252Ftoken%253D%253D";
        let out = r.scrub(text);
        assert!(!out.contains("CAIS"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 3, "{out}");
    }

    #[test]
    fn short_values_are_not_needles() {
        let mut r = Redactor::default();
        r.secret("ab");
        assert_eq!(r.scrub("abc"), "abc");
    }

    #[test]
    fn urls_are_masked_at_the_end() {
        assert_eq!(
            mask_url("https://x.execute-api.eu-west-1.amazonaws.com/artc/s3cr3tpath"),
            "https://x.execute-api.eu-west-1.amazonaws.com/artc/***"
        );
        assert_eq!(
            mask_url("https://api.example.com/artc/s3cr3t/?k=v#f"),
            "https://api.example.com/artc/***/?***"
        );
        assert_eq!(
            mask_url("https://u:p@api.example.com/"),
            "https://***@api.example.com/"
        );
        assert_eq!(mask_url("not a url"), REDACTED);
    }

    #[test]
    fn auth_key_hash_is_masked_but_expiry_stays() {
        assert_eq!(
            mask_auth_key(
                "rtmp://push.example.com/live/s?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3"
            ),
            "rtmp://push.example.com/live/s?auth_key=1704164645-0-0-***"
        );
        assert_eq!(
            mask_auth_key("rtmp://h/a/s?vhost=v&auth_key=garbage&x=1"),
            "rtmp://h/a/s?vhost=v&auth_key=***&x=1"
        );
        assert_eq!(mask_auth_key("rtmp://h/a/s"), "rtmp://h/a/s");
        assert_eq!(
            mask_auth_key("rtmp://h/a/s?my_auth_key=1"),
            "rtmp://h/a/s?my_auth_key=1"
        );
    }

    #[test]
    fn ids_follow_the_service_rules() {
        assert!(check_id("AppId", "9qb1abcd", 64).is_ok());
        assert!(check_id("TaskId", &"a".repeat(56), 55).is_err());
        assert!(check_id("AppId", "", 64).is_err());
        assert!(check_id("AppId", "a b", 64).is_err());
    }
}
