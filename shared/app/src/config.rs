//! Typed configuration, parsed once at start from environment variables (and, on Lambda, from
//! the Secrets Manager secrets named by `COSTREAM_SECRET_ARN`, see
//! `costream_runtime::aws::secret_lookup`).
//! Nothing below this module reads the environment.
//!
//! Every variable is documented in the README. A missing required variable or a bad value stops
//! the process at start with a message naming the variable; secret values never appear in errors
//! or `Debug` output.

use std::time::Duration;

use secrecy::SecretString;

use crate::mpu::IngestSettings;
use costream_alibaba::request::MpuRegion;
use costream_core::{
    AppId, Canvas, DecisionConfig, EncodeSettings, ImageUrl, LayoutStyle, RenderMode, VideoCodec,
    MAX_PANES,
};

/// Why the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required environment variable {var}")]
    Missing { var: &'static str },
    #[error("invalid {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Where viewers play the room's stream.
#[derive(Clone)]
pub struct PlaybackSettings {
    pub play_domain: String,
    pub app_name: String,
    pub play_auth_key: Option<SecretString>,
    /// Validity of freshly signed playback URLs.
    pub url_ttl: Duration,
}

impl std::fmt::Debug for PlaybackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackSettings")
            .field("play_domain", &self.play_domain)
            .field("app_name", &self.app_name)
            .field(
                "play_auth_key",
                &self.play_auth_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("url_ttl", &self.url_ttl)
            .finish()
    }
}

/// Where to tell the app's backend that a room went live.
#[derive(Clone)]
pub struct NotifySettings {
    pub url: String,
    /// HMAC-SHA256 key for the `X-Costream-Signature` header.
    pub secret: SecretString,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's path, query or user info may carry a token: show scheme and host only.
        let shown = match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                let host = authority.rsplit('@').next().unwrap_or_default();
                format!("{scheme}://{host}/…")
            }
            None => "…".to_owned(),
        };
        f.debug_struct("NotifySettings")
            .field("url", &shown)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// costream's configuration (everything but the Alibaba client's own, see
/// [`costream_alibaba::LiveClientConfig`] and [`costream_alibaba::Credentials`]).
#[derive(Clone)]
pub struct Config {
    /// `COSTREAM_APP_ID`: the ARTC AppId; callbacks of other apps are rejected.
    pub app_id: AppId,
    /// `COSTREAM_TABLE`: the DynamoDB table (required where DynamoDB is used).
    pub table: Option<String>,
    pub decision: DecisionConfig,
    pub ingest: IngestSettings,
    pub playback: PlaybackSettings,
    /// `COSTREAM_CDN_NOTIFY_AUTH_KEY`: when set, CDN callbacks must carry a valid
    /// `ALI-LIVE-SIGNATURE`.
    pub cdn_notify_auth_key: Option<SecretString>,
    /// `COSTREAM_CALLBACK_HOST`: the host part of the CDN notify URL (else the request's host).
    pub callback_host: Option<String>,
    /// `COSTREAM_ARTC_CALLBACK_SECRET`: the secret path segment of `POST /artc/{secret}`.
    pub artc_callback_secret: Option<SecretString>,
    pub notify: Option<NotifySettings>,
    /// `COSTREAM_NOTIFY_SECRET`: the secret shared with the app's backend; signs notifications
    /// and authenticates its host registrations (`PUT /rooms/{channelId}/host`).
    pub backend_secret: Option<SecretString>,
    /// `COSTREAM_ARTC_APP_KEY`: the ARTC AppKey, for join tokens (`POST /rooms/{channelId}/tokens`).
    pub artc_app_key: Option<SecretString>,
    pub region: Option<MpuRegion>,
    /// `COSTREAM_MAX_STARTS_PER_MINUTE`: task Starts the whole app may make per minute (1 to
    /// 100000, default 120); beyond it a Start is refused, counted and retried later.
    pub max_starts_per_minute: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("app_id", &self.app_id)
            .field("table", &self.table)
            .field("decision", &self.decision)
            .field("ingest", &self.ingest)
            .field("playback", &self.playback)
            .field(
                "cdn_notify_auth_key",
                &self.cdn_notify_auth_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("callback_host", &self.callback_host)
            .field(
                "artc_callback_secret",
                &self.artc_callback_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("notify", &self.notify)
            .field(
                "backend_secret",
                &self.backend_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "artc_app_key",
                &self.artc_app_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("region", &self.region)
            .field("max_starts_per_minute", &self.max_starts_per_minute)
            .finish()
    }
}

/// Values `costream serve` and `costream demo` use for anything not set, so they run with no
/// environment at all. LOCAL ONLY: the domains don't exist and the keys are public.
pub const LOCAL_DEFAULTS: &[(&str, &str)] = &[
    ("COSTREAM_APP_ID", "local-app"),
    ("COSTREAM_PUSH_DOMAIN", "push.costream.localhost"),
    ("COSTREAM_PLAY_DOMAIN", "play.costream.localhost"),
    ("COSTREAM_PUSH_AUTH_KEY", "local-only-push-key"),
    ("COSTREAM_PLAY_AUTH_KEY", "local-only-play-key"),
    ("COSTREAM_ARTC_CALLBACK_SECRET", "local-secret"),
    ("COSTREAM_NOTIFY_SECRET", "local-only-backend-secret"),
];

/// The process environment as a variable lookup: the only place costream reads it.
pub fn env_lookup() -> impl Fn(&str) -> Option<String> + Clone {
    |var: &str| std::env::var(var).ok()
}

/// A lookup that falls back to [`LOCAL_DEFAULTS`].
pub fn with_local_defaults(
    lookup: impl Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> {
    move |var| {
        lookup(var).or_else(|| {
            LOCAL_DEFAULTS
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        })
    }
}

struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// A set, non-empty value (an empty variable counts as unset: that's how CloudFormation
    /// passes an optional parameter left blank).
    fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing { var })
    }

    fn secret(&self, var: &'static str) -> Option<SecretString> {
        self.get(var).map(SecretString::from)
    }

    fn parsed<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(v) => parse(&v).map_err(|reason| ConfigError::Invalid { var, reason }),
        }
    }

    fn number(
        &self,
        var: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        self.parsed(var, default, |v| {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a whole number"))?;
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "{n} is outside {}..={}",
                    range.start(),
                    range.end()
                ))
            }
        })
    }

    fn image(&self, var: &'static str) -> Result<Option<ImageUrl>, ConfigError> {
        self.get(var)
            .map(|v| {
                ImageUrl::parse(v).map_err(|e| ConfigError::Invalid {
                    var,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn domain(&self, var: &'static str) -> Result<String, ConfigError> {
        let d = self.required(var)?;
        let ok = d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if ok {
            Ok(d)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: format!("{d:?} is not a bare domain name (no scheme, path or spaces)"),
            })
        }
    }
}

pub(crate) fn parse_canvas(v: &str) -> Result<Canvas, String> {
    let (w, h) = v
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{v:?} is not WIDTHxHEIGHT, e.g. 720x1280"))?;
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| format!("bad width in {v:?}"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| format!("bad height in {v:?}"))?;
    Canvas::new(w, h).map_err(|e| e.to_string())
}

impl Config {
    /// The MPU adapter's settings.
    pub fn mpu_settings(&self) -> crate::mpu::MpuSettings {
        crate::mpu::MpuSettings {
            app_id: self.app_id.clone(),
            ingest: self.ingest.clone(),
            decision: self.decision.clone(),
            region: self.region,
            // Alibaba refuses a StreamURL for 10 s after a Stop; wait that out inside the call.
            stream_url_wait: Duration::from_secs(12),
        }
    }

    /// The shell's tunables: the StreamURL is re-signed at half its validity when the ingest
    /// domain signs URLs.
    pub fn shell_config(&self) -> crate::shell::ShellConfig {
        let validity_ms = u64::try_from(self.ingest.url_validity.as_millis()).unwrap_or(u64::MAX);
        crate::shell::ShellConfig {
            resign_after_ms: self.ingest.push_auth_key.as_ref().map(|_| validity_ms / 2),
            webhooks: self.notify.is_some(),
            max_starts_per_minute: Some(self.max_starts_per_minute),
            ..crate::shell::ShellConfig::default()
        }
    }

    /// Parses the configuration from a variable lookup (the environment, possibly backed by the
    /// Secrets Manager secret).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(lookup);
        let app_id = {
            let v = env.required("COSTREAM_APP_ID")?;
            AppId::parse(v).map_err(|e| ConfigError::Invalid {
                var: "COSTREAM_APP_ID",
                reason: e.to_string(),
            })?
        };
        let app_name = env
            .get("COSTREAM_LIVE_APP_NAME")
            .unwrap_or_else(|| "live".to_owned());
        if !app_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::Invalid {
                var: "COSTREAM_LIVE_APP_NAME",
                reason: format!("{app_name:?} may only contain A-Z a-z 0-9 _ -"),
            });
        }
        let max_panes = env.number("COSTREAM_MAX_PANES", 16, 1..=16)?;
        let decision = DecisionConfig {
            canvas: env.parsed("COSTREAM_CANVAS", Canvas::PORTRAIT_720P, parse_canvas)?,
            style: env.parsed("COSTREAM_LAYOUT_STYLE", LayoutStyle::Grid, |v| {
                v.parse::<LayoutStyle>().map_err(|e| e.to_string())
            })?,
            render_mode: env.parsed("COSTREAM_RENDER_MODE", RenderMode::Crop, |v| {
                match v.to_ascii_lowercase().as_str() {
                    "crop" => Ok(RenderMode::Crop),
                    "fit" => Ok(RenderMode::Fit),
                    _ => Err(format!("{v:?} is not crop or fit")),
                }
            })?,
            max_panes: usize::try_from(max_panes).unwrap_or(MAX_PANES),
            background_image: env.image("COSTREAM_BACKGROUND_IMAGE_URL")?,
            pane_placeholder: env.image("COSTREAM_PANE_PLACEHOLDER_URL")?,
            max_idle_time: match env.get("COSTREAM_MAX_IDLE_TIME") {
                None => None,
                Some(_) => Some(env.number("COSTREAM_MAX_IDLE_TIME", 0, 10..=86_400)?),
            },
            encode: EncodeSettings {
                fps: env.number("COSTREAM_VIDEO_FPS", 20, 1..=60)?,
                bitrate_kbps: env.number("COSTREAM_VIDEO_BITRATE_KBPS", 1200, 1..=10_000)?,
                gop: env.number("COSTREAM_VIDEO_GOP", 2, 1..=60)?,
                codec: env.parsed("COSTREAM_VIDEO_CODEC", VideoCodec::H264, |v| {
                    match v.to_ascii_uppercase().replace('.', "").as_str() {
                        "H264" => Ok(VideoCodec::H264),
                        "H265" => Ok(VideoCodec::H265),
                        _ => Err(format!("{v:?} is not H.264 or H.265")),
                    }
                })?,
                ..EncodeSettings::default()
            },
            require_registered_host: env.parsed(
                "COSTREAM_REQUIRE_REGISTERED_HOST",
                false,
                |v| match v.to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(format!("{v:?} is not true or false")),
                },
            )?,
            end_grace_secs: u64::from(env.number("COSTREAM_END_GRACE_SECS", 5, 0..=60)?),
        };
        let notify = match env.get("COSTREAM_NOTIFY_URL") {
            None => None,
            Some(url) => {
                // Webhooks carry room state and a signature: https, except to this machine
                // (a local backend beside `costream serve`).
                // Judged on the URL as the HTTP client parses it (a backslash or userinfo trick
                // must not make another host look local).
                let parsed = reqwest::Url::parse(&url).ok();
                let loopback = parsed.as_ref().is_some_and(|u| {
                    u.scheme() == "http"
                        && match u.host() {
                            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                            None => false,
                        }
                });
                let https = parsed.as_ref().is_some_and(|u| u.scheme() == "https");
                if !(https || loopback) {
                    return Err(ConfigError::Invalid {
                        var: "COSTREAM_NOTIFY_URL",
                        reason: "must start with https:// (http:// only to localhost or a loopback address)".into(),
                    });
                }
                Some(NotifySettings {
                    url,
                    secret: env
                        .secret("COSTREAM_NOTIFY_SECRET")
                        .ok_or(ConfigError::Missing {
                            var: "COSTREAM_NOTIFY_SECRET",
                        })?,
                })
            }
        };
        Ok(Config {
            app_id,
            table: env.get("COSTREAM_TABLE"),
            ingest: IngestSettings {
                push_domain: env.domain("COSTREAM_PUSH_DOMAIN")?,
                app_name: app_name.clone(),
                push_auth_key: env.secret("COSTREAM_PUSH_AUTH_KEY"),
                // At least 10 minutes: the repair loop re-signs at half the validity, and a
                // pass comes every minute, so a shorter one could lapse between passes.
                url_validity: Duration::from_secs(u64::from(env.number(
                    "COSTREAM_INGEST_URL_TTL_SECS",
                    86_400,
                    600..=2_592_000,
                )?)),
            },
            playback: PlaybackSettings {
                play_domain: env.domain("COSTREAM_PLAY_DOMAIN")?,
                app_name,
                play_auth_key: env.secret("COSTREAM_PLAY_AUTH_KEY"),
                url_ttl: Duration::from_secs(u64::from(env.number(
                    "COSTREAM_PLAY_URL_TTL_SECS",
                    3_600,
                    60..=604_800,
                )?)),
            },
            decision,
            cdn_notify_auth_key: env.secret("COSTREAM_CDN_NOTIFY_AUTH_KEY"),
            callback_host: env.get("COSTREAM_CALLBACK_HOST"),
            artc_callback_secret: env.secret("COSTREAM_ARTC_CALLBACK_SECRET"),
            notify,
            backend_secret: env.secret("COSTREAM_NOTIFY_SECRET"),
            artc_app_key: env.secret("COSTREAM_ARTC_APP_KEY"),
            region: env.parsed("COSTREAM_MPU_REGION", None, |v| {
                v.parse::<MpuRegion>().map(Some).map_err(|e| e.to_string())
            })?,
            max_starts_per_minute: env.number(
                "COSTREAM_MAX_STARTS_PER_MINUTE",
                120,
                1..=100_000,
            )?,
        })
    }

    /// The table name, or the error naming `COSTREAM_TABLE`.
    pub fn require_table(&self) -> Result<&str, ConfigError> {
        self.table.as_deref().ok_or(ConfigError::Missing {
            var: "COSTREAM_TABLE",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("COSTREAM_APP_ID", "9qb1abcd"),
        ("COSTREAM_PUSH_DOMAIN", "push.example.com"),
        ("COSTREAM_PLAY_DOMAIN", "pull.example.com"),
    ];

    #[test]
    fn minimal_config_uses_documented_defaults() {
        let c = Config::from_lookup(lookup(MINIMAL)).expect("valid");
        assert_eq!(c.decision, DecisionConfig::default());
        assert_eq!(c.ingest.app_name, "live");
        assert_eq!(c.decision.encode.fps, 20);
        assert_eq!(c.decision.encode.bitrate_kbps, 1200);
        assert!(c.notify.is_none() && c.cdn_notify_auth_key.is_none() && c.table.is_none());
    }

    #[test]
    fn missing_and_invalid_variables_are_named() {
        let err = Config::from_lookup(lookup(&MINIMAL[1..])).err();
        assert_eq!(
            err,
            Some(ConfigError::Missing {
                var: "COSTREAM_APP_ID"
            })
        );
        let mut vars = MINIMAL.to_vec();
        vars.push(("COSTREAM_MAX_PANES", "17"));
        let err = Config::from_lookup(lookup(&vars)).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "invalid COSTREAM_MAX_PANES: 17 is outside 1..=16"
        );
        let mut vars = MINIMAL.to_vec();
        vars.push(("COSTREAM_CANVAS", "1280*720"));
        assert!(matches!(
            Config::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid {
                var: "COSTREAM_CANVAS",
                ..
            })
        ));
        for (url, ok) in [
            ("http://backend.example.com/hooks", false),
            ("ftp://backend.example.com/hooks", false),
            ("http://127.0.0.1:8080/hooks", true),
            ("http://localhost/hooks", true),
            ("http://[::1]:9/hooks", true),
            ("http://127.0.0.1.evil.example/hooks", false),
            ("http://evil.example\\@127.0.0.1/hooks", false),
            ("http://127.0.0.1@evil.example/hooks", false),
            ("https://backend.example.com/hooks", true),
        ] {
            let mut vars = MINIMAL.to_vec();
            vars.push(("COSTREAM_NOTIFY_URL", url));
            vars.push(("COSTREAM_NOTIFY_SECRET", "s"));
            assert_eq!(Config::from_lookup(lookup(&vars)).is_ok(), ok, "{url}");
        }
        let mut vars = MINIMAL.to_vec();
        vars.push(("COSTREAM_NOTIFY_URL", "https://backend.example.com/live"));
        assert_eq!(
            Config::from_lookup(lookup(&vars)).err(),
            Some(ConfigError::Missing {
                var: "COSTREAM_NOTIFY_SECRET"
            })
        );
        let mut vars = MINIMAL.to_vec();
        vars[1] = ("COSTREAM_PUSH_DOMAIN", "rtmp://push.example.com/live");
        assert!(matches!(
            Config::from_lookup(lookup(&vars)),
            Err(ConfigError::Invalid {
                var: "COSTREAM_PUSH_DOMAIN",
                ..
            })
        ));
    }

    #[test]
    fn layout_and_encoder_settings_parse() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("COSTREAM_CANVAS", "1280x720"),
            ("COSTREAM_LAYOUT_STYLE", "pip"),
            ("COSTREAM_MAX_PANES", "4"),
            ("COSTREAM_MAX_IDLE_TIME", "120"),
            ("COSTREAM_VIDEO_FPS", "25"),
            ("COSTREAM_VIDEO_BITRATE_KBPS", "1500"),
            (
                "COSTREAM_BACKGROUND_IMAGE_URL",
                "https://static.example.com/bg.png",
            ),
            ("COSTREAM_TABLE", "costream-rooms"),
        ]);
        let c = Config::from_lookup(lookup(&vars)).expect("valid");
        assert_eq!(c.decision.canvas, Canvas::LANDSCAPE_720P);
        assert_eq!(c.decision.style, LayoutStyle::Pip);
        assert_eq!(c.decision.max_panes, 4);
        assert_eq!(c.decision.max_idle_time, Some(120));
        assert_eq!(
            (c.decision.encode.fps, c.decision.encode.bitrate_kbps),
            (25, 1500)
        );
        assert_eq!(c.require_table(), Ok("costream-rooms"));
    }

    #[test]
    fn secrets_never_print() {
        let mut vars = MINIMAL.to_vec();
        vars.extend([
            ("COSTREAM_PUSH_AUTH_KEY", "push-secret-1"),
            ("COSTREAM_PLAY_AUTH_KEY", "play-secret-2"),
            ("COSTREAM_CDN_NOTIFY_AUTH_KEY", "notify-secret-3"),
            ("COSTREAM_ARTC_CALLBACK_SECRET", "path-secret-4"),
            (
                "COSTREAM_NOTIFY_URL",
                "https://b.example.com/x?token=url-secret-6",
            ),
            ("COSTREAM_NOTIFY_SECRET", "hmac-secret-5"),
        ]);
        let c = Config::from_lookup(lookup(&vars)).expect("valid");
        let shown = format!("{c:?}");
        for s in [
            "push-secret-1",
            "play-secret-2",
            "notify-secret-3",
            "path-secret-4",
            "hmac-secret-5",
            "url-secret-6",
        ] {
            assert!(!shown.contains(s), "{s} leaked in {shown}");
        }
    }

    #[test]
    fn local_defaults_fill_only_what_is_unset() {
        let l = with_local_defaults(lookup(&[("COSTREAM_APP_ID", "mine")]));
        let c = Config::from_lookup(l).expect("runs with nothing else set");
        assert_eq!(c.app_id.as_str(), "mine");
        assert_eq!(c.ingest.push_domain, "push.costream.localhost");
    }
}
