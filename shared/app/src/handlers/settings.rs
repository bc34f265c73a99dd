//! `PUT /rooms/{channelId}/settings`: the room's settings from the app's backend, validated
//! field by field (a 400 names the field), committed as a timestamped room fact, and applied to
//! a live room at once (one Update).

use serde::Serialize;

use super::{outcome_name, HandlerError, HostRequest, Services, MAX_SETTINGS_BODY};
use crate::inbound::InboundError;
use crate::ports::{Clock, MpuPort, StateStore};
use costream_core::{
    ChannelId, ImageUrl, LayoutStyle, OutputUrl, Outputs, RoomEvent, RoomSettings, ScreenShare,
    Setting, Timestamp, UserId, MAX_EXTRA_OUTPUTS, MAX_PANES,
};

/// What a settings request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsOutcome {
    pub channel_id: String,
    /// The settings now in force for the room: these, or newer ones (then `result` is
    /// `superseded`).
    pub settings: serde_json::Value,
    pub result: &'static str,
}

/// The fields a settings body may have.
const FIELDS: [&str; 9] = [
    "layout",
    "canvas",
    "max_panes",
    "background_image_url",
    "placeholder_url",
    "audio_only",
    "extra_outputs",
    "screen_share",
    "hide_camera_off",
];

impl<S: StateStore, M: MpuPort, C: Clock> Services<S, M, C> {
    /// `PUT /rooms/{channelId}/settings` (signed like a host registration, over
    /// `"<ts>.PUT /rooms/<id>/settings.<body>"`). Every field is optional: absent means the
    /// deployment's default, `null` means none. The newest settings (by `X-Costream-Timestamp`)
    /// win as a whole.
    pub async fn put_settings(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
        invocation: &str,
    ) -> Result<SettingsOutcome, HandlerError> {
        if req.body.len() > MAX_SETTINGS_BODY {
            return Err(InboundError::BodyTooLarge {
                size: req.body.len(),
                limit: MAX_SETTINGS_BODY,
            }
            .into());
        }
        let ts = self.verify_backend("PUT", &format!("/rooms/{channel}/settings"), req)?;
        let channel = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        let settings = parse_settings(req.body)?;
        let shown = settings_json(&settings);
        // The whole content (restream URLs unmasked), so two requests differing only in a
        // stream key are not taken for one.
        // (Plain data always serialises; the Debug text is a masked stand-in.)
        let content = serde_json::to_string(&settings).unwrap_or_else(|_| format!("{settings:?}"));
        let event = RoomEvent::Settings {
            settings: Box::new(settings.clone()),
            at: Timestamp::from_secs(ts),
        };
        let dedupe = format!("settings:{ts}:{content}");
        let key = self.key(channel.clone());
        let handled = self
            .shell
            .handle(&key, Some(&dedupe), &[event], invocation)
            .await?;
        if super::changed(&handled) {
            self.deliver_webhooks(&key).await;
        }
        // What is in force now: these settings, or newer ones that won (last writer wins, by
        // X-Costream-Timestamp).
        let in_force = self
            .shell
            .store
            .load(&key)
            .await
            .map_err(|e| HandlerError::App(e.into()))?
            .and_then(|room| room.facts.settings().cloned());
        let superseded = in_force
            .as_ref()
            .is_some_and(|s| s.settings != settings || s.at.secs() != ts);
        Ok(SettingsOutcome {
            channel_id: channel.to_string(),
            settings: in_force.map_or(shown, |s| settings_json(&s.settings)),
            result: if superseded {
                "superseded"
            } else {
                outcome_name(&handled)
            },
        })
    }
}

fn bad(field: &'static str, reason: impl Into<String>) -> HandlerError {
    InboundError::BadField {
        field,
        reason: reason.into(),
    }
    .into()
}

/// The settings of a request body, or a 400 naming the first bad field.
pub fn parse_settings(body: &[u8]) -> Result<RoomSettings, HandlerError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| InboundError::NotJson(e.to_string()))?;
    let obj = value.as_object().ok_or(InboundError::NotObject("body"))?;
    for key in obj.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(InboundError::UnknownField(key.clone()).into());
        }
    }
    let get = |field: &'static str| match obj.get(field) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(v) => Ok::<_, HandlerError>(Some(Some(v))),
    };
    let mut s = RoomSettings::default();
    if let Some(v) = get("layout")? {
        s.layout = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(
                v.as_str()
                    .and_then(|t| t.parse::<LayoutStyle>().ok())
                    .ok_or_else(|| bad("layout", "expected \"grid\", \"split\" or \"pip\""))?,
            ),
        };
    }
    if let Some(v) = get("canvas")? {
        s.canvas = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(
                v.as_str()
                    .ok_or_else(|| bad("canvas", "expected \"WIDTHxHEIGHT\", e.g. \"1280x720\""))
                    .and_then(|t| crate::config::parse_canvas(t).map_err(|e| bad("canvas", e)))?,
            ),
        };
    }
    if let Some(v) = get("max_panes")? {
        s.max_panes = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(
                v.as_u64()
                    .filter(|n| (1..=MAX_PANES as u64).contains(n))
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| bad("max_panes", "expected a whole number from 1 to 16"))?,
            ),
        };
    }
    if let Some(v) = get("audio_only")? {
        s.audio_only = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(
                v.as_bool()
                    .ok_or_else(|| bad("audio_only", "expected true or false"))?,
            ),
        };
    }
    if let Some(v) = get("hide_camera_off")? {
        s.hide_camera_off = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(
                v.as_bool()
                    .ok_or_else(|| bad("hide_camera_off", "expected true or false"))?,
            ),
        };
    }
    if let Some(v) = get("extra_outputs")? {
        s.extra_outputs = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(outputs(v)?),
        };
    }
    if let Some(v) = get("screen_share")? {
        s.screen_share = match v {
            None => Setting::Cleared,
            Some(v) => Setting::Set(screen_share(v)?),
        };
    }
    for (field, slot) in [
        ("background_image_url", &mut s.background_image_url),
        ("placeholder_url", &mut s.placeholder_url),
    ] {
        if let Some(v) = get(field)? {
            *slot = match v {
                None => Setting::Cleared,
                Some(v) => Setting::Set(image(field, v)?),
            };
        }
    }
    Ok(s)
}

/// `extra_outputs`: a list of at most nine distinct `rtmp://` URLs (never echoed in an error:
/// they carry stream keys).
fn outputs(v: &serde_json::Value) -> Result<Outputs, HandlerError> {
    const FIELD: &str = "extra_outputs";
    let list = v.as_array().ok_or_else(|| {
        bad(
            FIELD,
            format!("expected a list of at most {MAX_EXTRA_OUTPUTS} rtmp:// URLs"),
        )
    })?;
    if list.len() > MAX_EXTRA_OUTPUTS {
        return Err(bad(
            FIELD,
            format!(
                "at most {MAX_EXTRA_OUTPUTS} extra outputs, got {}",
                list.len()
            ),
        ));
    }
    let urls = list
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let text = u
                .as_str()
                .ok_or_else(|| bad(FIELD, format!("entry {i}: expected an rtmp:// URL")))?;
            OutputUrl::parse(text).map_err(|e| bad(FIELD, format!("entry {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Outputs::new(urls).map_err(|e| bad(FIELD, e.to_string()))
}

/// `screen_share`: `{"user_id": "u1"}`.
fn screen_share(v: &serde_json::Value) -> Result<ScreenShare, HandlerError> {
    const FIELD: &str = "screen_share";
    let obj = v
        .as_object()
        .ok_or_else(|| bad(FIELD, "expected {\"user_id\": \"...\"}"))?;
    if let Some(other) = obj.keys().find(|k| k.as_str() != "user_id") {
        return Err(bad(
            FIELD,
            format!("unknown field {other:?}; expected user_id"),
        ));
    }
    let user = obj
        .get("user_id")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad(FIELD, "user_id is required (a string)"))?;
    let user_id = UserId::parse(user).map_err(|e| bad(FIELD, format!("user_id: {e}")))?;
    Ok(ScreenShare { user_id })
}

fn image(field: &'static str, v: &serde_json::Value) -> Result<ImageUrl, HandlerError> {
    let url = v
        .as_str()
        .ok_or_else(|| bad(field, "expected an https URL"))?;
    if !url.starts_with("https://") {
        return Err(bad(field, "expected an https URL"));
    }
    ImageUrl::parse(url).map_err(|e| bad(field, e.to_string()))
}

/// The settings as the API shows them: only the fields set, `null` for cleared ones.
pub fn settings_json(s: &RoomSettings) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut put = |field: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            out.insert(field.to_owned(), v);
        }
    };
    fn shown<T>(s: &Setting<T>, f: impl Fn(&T) -> serde_json::Value) -> Option<serde_json::Value> {
        match s {
            Setting::Default => None,
            Setting::Cleared => Some(serde_json::Value::Null),
            Setting::Set(v) => Some(f(v)),
        }
    }
    put(
        "layout",
        shown(&s.layout, |l| {
            serde_json::Value::from(match l {
                LayoutStyle::Grid => "grid",
                LayoutStyle::Split => "split",
                LayoutStyle::Pip => "pip",
            })
        }),
    );
    put(
        "canvas",
        shown(&s.canvas, |c| {
            serde_json::Value::from(format!("{}x{}", c.width(), c.height()))
        }),
    );
    put(
        "max_panes",
        shown(&s.max_panes, |n| serde_json::Value::from(*n)),
    );
    put(
        "background_image_url",
        shown(&s.background_image_url, |u| {
            serde_json::Value::from(u.as_str())
        }),
    );
    put(
        "placeholder_url",
        shown(&s.placeholder_url, |u| serde_json::Value::from(u.as_str())),
    );
    put(
        "audio_only",
        shown(&s.audio_only, |b| serde_json::Value::from(*b)),
    );
    // Masked: restream URLs carry other platforms' stream keys.
    put(
        "extra_outputs",
        shown(&s.extra_outputs, |o| {
            serde_json::Value::from(
                o.urls()
                    .iter()
                    .map(OutputUrl::masked)
                    .collect::<Vec<String>>(),
            )
        }),
    );
    put(
        "screen_share",
        shown(
            &s.screen_share,
            |sh| serde_json::json!({"user_id": sh.user_id.as_str()}),
        ),
    );
    put(
        "hide_camera_off",
        shown(&s.hide_camera_off, |b| serde_json::Value::from(*b)),
    );
    serde_json::Value::Object(out)
}
