//! Inbound payloads → plain data for the shell: ARTC room callbacks (JSON, possibly wrapped in an
//! EventBridge envelope by the caller) and CDN ingest callbacks (query parameters). Pure parsing:
//! no I/O, no clock (`now` is passed in to reject far-future timestamps).
//!
//! ARTC field names differ between doc versions (`ChannelID`/`ChannelId`, `SubscribeID`/
//! `SubscribeId`), so every key is matched case-insensitively.

use serde_json::{Map, Value};

use costream_core::{
    AppId, CdnAction, ChannelId, EventError, IdError, MsgId, Role, RoomEvent, SessionId, Timestamp,
    UserAction, UserEvent, UserId,
};

/// The largest callback body accepted; for a callback that arrives already parsed (an
/// EventBridge event's `detail`), the largest compact JSON serialization of it.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How far ahead of our clock an event may be stamped (clock skew between Alibaba and AWS).
pub const MAX_SKEW_SECS: u64 = 600;

/// The oldest event time accepted: 2020-01-01T00:00:00Z, before ARTC's callbacks existed. A
/// timestamp of 0 (or any absurd past) is a sender bug, not history: rejected with a 400 that names
/// the field, never merged.
pub const MIN_EVENT_SECS: u64 = 1_577_836_800;

/// Bad input: answered with a 4xx / NonRetryable, and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("body is {0} bytes, the limit is {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("{0} must be a JSON object")]
    NotObject(&'static str),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {field} has the wrong type (expected {expected})")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("invalid {field}: {source}")]
    BadId {
        field: &'static str,
        source: IdError,
    },
    #[error("callback is for AppId {got}, this deployment serves {expected}")]
    WrongApp { got: String, expected: String },
    #[error("content {index}: {source}")]
    BadEvent { index: usize, source: EventError },
    #[error("content {index}: unknown Event {event:?}; expected UserEvent or ChannelEvent")]
    UnknownContent { index: usize, event: String },
    #[error("callback has no Contents")]
    NoContents,
    #[error("no content of the callback could be read (unknown: {})", .0.join(", "))]
    NothingKnown(Vec<String>),
    #[error("invalid query parameter {param}: {reason}")]
    BadQuery { param: &'static str, reason: String },
    #[error("body is {size} bytes, the limit is {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("invalid {field}: {reason}")]
    BadField { field: &'static str, reason: String },
}

/// Which function is handling a callback. EventBridge routes a callback by its tags to
/// `stream-published`, `stream-unpublished` or both; whichever receives it applies **every**
/// item of it as facts (the routing decides who is invoked, not which facts count), so a
/// callback carrying a reconnect — the new session's Join and Publish, the old one's Leave — is
/// never half-applied, whichever function commits first. Applying a callback twice (once per
/// function) changes nothing the second time: the facts merge idempotently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `stream-published`: invoked for Publish, Join, Roleupdate to the interactive role.
    Published,
    /// `stream-unpublished`: invoked for Unpublish, Leave, Roleupdate to the viewer role,
    /// channel close.
    Unpublished,
    /// Both (the local server's single route).
    Both,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Published => "published",
            Side::Unpublished => "unpublished",
            Side::Both => "all",
        }
    }
}

/// A parsed ARTC callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtcCallback {
    pub app: AppId,
    pub channel: ChannelId,
    pub msg_id: Option<MsgId>,
    /// Its events, every item this version knows (possibly none: a channel open).
    pub events: Vec<RoomEvent>,
    /// Contents of the callback in total (for logs).
    pub contents: usize,
    /// Contents skipped because they name something this version does not know (an `Event`,
    /// `EventTag` or `Role` Alibaba added): `Event/EventTag` names, for the log and the counter.
    pub skipped: Vec<String>,
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string_field(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, InboundError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Ids are documented as strings; accept numbers rather than lose an event.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(InboundError::WrongType {
            field: name,
            expected: "string",
        }),
    }
}

fn id<T>(
    obj: &Map<String, Value>,
    name: &'static str,
    parse: impl Fn(String) -> Result<T, IdError>,
) -> Result<T, InboundError> {
    let raw = string_field(obj, name)?.ok_or(InboundError::Missing(name))?;
    parse(raw).map_err(|source| InboundError::BadId {
        field: name,
        source,
    })
}

fn timestamp(obj: &Map<String, Value>, name: &'static str) -> Result<Timestamp, InboundError> {
    let v = field(obj, name).ok_or(InboundError::Missing(name))?;
    let secs = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or(InboundError::WrongType {
        field: name,
        expected: "unix seconds",
    })?;
    // Some senders use milliseconds; an ARTC timestamp is seconds (10 digits until 2286).
    let secs = if secs > 100_000_000_000 {
        secs / 1000
    } else {
        secs
    };
    Ok(Timestamp::from_secs(secs))
}

fn integer(obj: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, InboundError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(InboundError::WrongType {
            field: name,
            expected: "integer",
        }),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| InboundError::WrongType {
                field: name,
                expected: "integer",
            }),
        Some(_) => Err(InboundError::WrongType {
            field: name,
            expected: "integer",
        }),
    }
}

/// Parses an ARTC callback body. The whole callback is validated (every
/// content), and every known item is kept (see [`Side`]).
pub fn parse_artc(
    body: &[u8],
    expected_app: &AppId,
    now: Timestamp,
) -> Result<ArtcCallback, InboundError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(InboundError::TooLarge(body.len()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| InboundError::NotJson(e.to_string()))?;
    parse_artc_checked(&value, expected_app, now)
}

/// [`parse_artc`] for an already-parsed JSON value (an EventBridge event's `detail`), with the
/// same size limit, applied to its compact JSON.
pub fn parse_artc_value(
    value: &Value,
    expected_app: &AppId,
    now: Timestamp,
) -> Result<ArtcCallback, InboundError> {
    let size = json_len(value);
    if size > MAX_BODY_BYTES {
        return Err(InboundError::TooLarge(size));
    }
    parse_artc_checked(value, expected_app, now)
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value)
        .expect("a JSON value always serializes and counting never fails");
    count.0
}

/// Parses a callback whose size has been checked.
fn parse_artc_checked(
    value: &Value,
    expected_app: &AppId,
    now: Timestamp,
) -> Result<ArtcCallback, InboundError> {
    let obj = value
        .as_object()
        .ok_or(InboundError::NotObject("callback"))?;
    let app = id(obj, "AppId", AppId::parse)?;
    if &app != expected_app {
        return Err(InboundError::WrongApp {
            got: app.to_string(),
            expected: expected_app.to_string(),
        });
    }
    let channel = id(obj, "ChannelId", ChannelId::parse)?;
    let msg_id = match string_field(obj, "MsgId")? {
        None => None,
        Some(m) => Some(MsgId::parse(m).map_err(|source| InboundError::BadId {
            field: "MsgId",
            source,
        })?),
    };
    let contents = match field(obj, "Contents") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(InboundError::WrongType {
                field: "Contents",
                expected: "array",
            })
        }
        None => return Err(InboundError::Missing("Contents")),
    };
    if contents.is_empty() {
        return Err(InboundError::NoContents);
    }
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    for (index, content) in contents.iter().enumerate() {
        let event = match parse_content(index, content) {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            // Alibaba adds tags over time: skip what this version does not know, keep the rest.
            Err(Unknown(name)) => {
                skipped.push(name);
                continue;
            }
            Err(Malformed(e)) => return Err(e),
        };
        event
            .check_time(now, MAX_SKEW_SECS, Timestamp::from_secs(MIN_EVENT_SECS))
            .map_err(|source| InboundError::BadEvent { index, source })?;
        events.push(event);
    }
    if skipped.len() == contents.len() {
        return Err(InboundError::NothingKnown(skipped));
    }
    Ok(ArtcCallback {
        app,
        channel,
        msg_id,
        events,
        contents: contents.len(),
        skipped,
    })
}

/// Why one `Contents[]` item was not turned into an event.
enum ContentError {
    /// It names an `Event`, `EventTag` or `Role` this version does not know: skipped.
    Unknown(String),
    /// It is malformed: the whole callback is bad input.
    Malformed(InboundError),
}
use ContentError::{Malformed, Unknown};

impl From<InboundError> for ContentError {
    fn from(e: InboundError) -> Self {
        Malformed(e)
    }
}

/// One `Contents[]` item. `Ok(None)` for known contents that change nothing (channel open).
fn parse_content(index: usize, content: &Value) -> Result<Option<RoomEvent>, ContentError> {
    let obj = content
        .as_object()
        .ok_or(InboundError::NotObject("Contents[]"))?;
    let kind = string_field(obj, "Event")?.unwrap_or_default();
    if kind.eq_ignore_ascii_case("UserEvent")
        || (kind.is_empty() && field(obj, "UserEvent").is_some())
    {
        let ue = field(obj, "UserEvent")
            .and_then(Value::as_object)
            .ok_or(InboundError::Missing("UserEvent"))?;
        let tag = string_field(ue, "EventTag")?.ok_or(InboundError::Missing("EventTag"))?;
        // Camera state (the 2021 RTC event list's CameraOpen / CameraClose; the current
        // CreateEventSub docs list only Join, Leave, Publish, Unpublish and Roleupdate).
        let camera = match tag.to_ascii_lowercase().as_str() {
            "cameraopen" => Some(true),
            "cameraclose" => Some(false),
            _ => None,
        };
        if let Some(on) = camera {
            return Ok(Some(RoomEvent::Camera {
                user: id(ue, "UserId", UserId::parse)?,
                session: id(ue, "SessionId", SessionId::parse)?,
                on,
                at: timestamp(ue, "Timestamp")?,
            }));
        }
        let role_code = integer(ue, "Role")?;
        let action = match UserAction::from_tag(&tag, role_code) {
            Ok(action) => action,
            Err(EventError::UnknownTag(t)) => return Err(Unknown(format!("UserEvent/{t}"))),
            Err(EventError::UnknownRole(r)) => {
                return Err(Unknown(format!("UserEvent/{tag}/Role={r}")))
            }
            Err(source) => return Err(Malformed(InboundError::BadEvent { index, source })),
        };
        let role = match role_code {
            Some(code) => match Role::from_code(code) {
                Ok(role) => Some(role),
                Err(EventError::UnknownRole(r)) => {
                    return Err(Unknown(format!("UserEvent/{tag}/Role={r}")))
                }
                Err(source) => return Err(Malformed(InboundError::BadEvent { index, source })),
            },
            None => None,
        };
        return Ok(Some(RoomEvent::User(UserEvent {
            user: id(ue, "UserId", UserId::parse)?,
            session: id(ue, "SessionId", SessionId::parse)?,
            at: timestamp(ue, "Timestamp")?,
            action,
            role,
        })));
    }
    if kind.eq_ignore_ascii_case("ChannelEvent")
        || (kind.is_empty() && field(obj, "ChannelEvent").is_some())
    {
        let ce = field(obj, "ChannelEvent")
            .and_then(Value::as_object)
            .ok_or(InboundError::Missing("ChannelEvent"))?;
        let tag = string_field(ce, "EventTag")?.ok_or(InboundError::Missing("EventTag"))?;
        let at = timestamp(ce, "Timestamp")?;
        return match tag.to_ascii_lowercase().as_str() {
            "close" => Ok(Some(RoomEvent::ChannelClosed { at })),
            "open" => Ok(None),
            _ => Err(Unknown(format!("ChannelEvent/{tag}"))),
        };
    }
    if kind.is_empty() {
        return Err(Malformed(InboundError::UnknownContent {
            index,
            event: kind,
        }));
    }
    Err(Unknown(kind))
}

/// A parsed CDN ingest callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnCallback {
    pub action: CdnAction,
    /// `id`: the stream name.
    pub stream: String,
    /// `app`: the ingest domain.
    pub domain: String,
    /// `appname`.
    pub app_name: String,
    pub at: Timestamp,
}

impl CdnCallback {
    /// The callback's natural key (Alibaba retries it 5 times, identically).
    /// `publish` or `publish_done`.
    pub fn action_name(&self) -> &'static str {
        match self.action {
            CdnAction::Publish => "publish",
            CdnAction::PublishDone => "publish_done",
        }
    }

    pub fn dedupe_key(&self) -> String {
        let action = self.action_name();
        format!(
            "cdn:{}:{}:{}:{action}:{}",
            self.domain, self.app_name, self.stream, self.at
        )
    }

    pub fn event(&self) -> RoomEvent {
        RoomEvent::Cdn {
            action: self.action,
            at: self.at,
        }
    }
}

/// Parses the CDN callback's query parameters (unknown ones are ignored).
pub fn parse_cdn<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: Timestamp,
) -> Result<CdnCallback, InboundError> {
    let mut action = None;
    let mut stream = None;
    let mut domain = None;
    let mut app_name = None;
    let mut time = None;
    for (k, v) in params {
        match k {
            "action" => action = Some(v),
            "id" => stream = Some(v),
            "app" => domain = Some(v),
            "appname" => app_name = Some(v),
            "time" => time = Some(v),
            _ => {}
        }
    }
    let missing = |param: &'static str| InboundError::BadQuery {
        param,
        reason: "missing".into(),
    };
    let action = match action.ok_or_else(|| missing("action"))? {
        "publish" => CdnAction::Publish,
        "publish_done" => CdnAction::PublishDone,
        other => {
            return Err(InboundError::BadQuery {
                param: "action",
                reason: format!("{other:?} is not publish or publish_done"),
            })
        }
    };
    let stream = stream
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("id"))?;
    let secs: u64 =
        time.ok_or_else(|| missing("time"))?
            .parse()
            .map_err(|_| InboundError::BadQuery {
                param: "time",
                reason: "not unix seconds".into(),
            })?;
    let at = Timestamp::from_secs(secs);
    if secs < MIN_EVENT_SECS {
        return Err(InboundError::BadQuery {
            param: "time",
            reason: format!("{secs} is before {MIN_EVENT_SECS} (2020-01-01)"),
        });
    }
    if at > now.saturating_add(MAX_SKEW_SECS) {
        return Err(InboundError::BadQuery {
            param: "time",
            reason: format!("{secs} is in the future"),
        });
    }
    Ok(CdnCallback {
        action,
        stream: stream.to_owned(),
        domain: domain.unwrap_or_default().to_owned(),
        app_name: app_name.ok_or_else(|| missing("appname"))?.to_owned(),
        at,
    })
}

#[cfg(test)]
mod tests;
