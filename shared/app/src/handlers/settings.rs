//! `PUT /rooms/{channelId}/settings`: the room's settings from the app's backend, validated
//! field by field (a 400 names the field), committed as a timestamped room fact, and applied to
//! a live room at once (one Update).

use serde::Serialize;

use super::{outcome_name, HandlerError, HostRequest, Services, MAX_SETTINGS_BODY};
use crate::inbound::InboundError;
use crate::ports::{Clock, MpuPort, StateStore};
use costream_core::{
    ChannelId, ImageUrl, LayoutStyle, RoomEvent, RoomSettings, Setting, Timestamp, MAX_PANES,
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

/// The fields a settings body may have, and whether this version applies them.
const FIELDS: [&str; 6] = [
    "layout",
    "canvas",
    "max_panes",
    "background_image_url",
    "placeholder_url",
    "audio_only",
];

/// Fields the settings API defines that this version does not apply yet: refused by name, so a
/// backend never believes a setting took effect when it did not.
const NOT_YET: [&str; 3] = ["extra_outputs", "screen_share", "hide_camera_off"];

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
        let event = RoomEvent::Settings {
            settings: Box::new(settings),
            at: Timestamp::from_secs(ts),
        };
        let dedupe = format!("settings:{ts}:{}", shown);
        let key = self.key(channel.clone());
        let handled = self
            .shell
            .handle(&key, Some(&dedupe), &[event], invocation)
            .await?;
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
            .is_some_and(|s| settings_json(&s.settings) != shown || s.at.secs() != ts);
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
        if let Some(field) = NOT_YET.iter().find(|f| **f == key.as_str()) {
            return Err(bad(field, "not supported by this version yet"));
        }
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
    serde_json::Value::Object(out)
}
