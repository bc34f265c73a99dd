//! The parameter checks the real Live API does cheaply, as pure functions of the received values
//! (spec §3.1–§3.3): ids, `MixMode` with its one matching JSON parameter, the layout, the encoder
//! settings and the output URLs.
//!
//! Messages are worded so that `response.rs` never mistakes a validation error for an idempotent
//! outcome ("exist", "not found") and the adapter never mistakes it for a busy stream URL (the
//! word "StreamURL" appears only in that one answer).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::Fault;

/// `TaskId`: `[A-Za-z0-9_-]`, at most 55 characters.
pub(super) const MAX_TASK_ID: usize = 55;
/// `AppId`, `ChannelId`: `[A-Za-z0-9_-]`, at most 64 characters.
pub(super) const MAX_ID: usize = 64;
/// The old layout system's limit, which the simulator applies to `Layout.UserPanes` too.
pub(super) const MAX_PANES: usize = 16;
/// StreamURL, image URLs.
const MAX_URL: usize = 2048;

pub(super) type Params = BTreeMap<String, String>;

/// A parameter's value; an empty value counts as absent, as it does for the service.
pub(super) fn optional<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

pub(super) fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, Fault> {
    optional(params, name).ok_or_else(|| Fault::missing(name))
}

/// A required id parameter with the `[A-Za-z0-9_-]{1,max}` format.
pub(super) fn id<'a>(params: &'a Params, name: &str, max: usize) -> Result<&'a str, Fault> {
    let value = required(params, name)?;
    let well_formed = value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(value)
    } else {
        Err(Fault::invalid(format!(
            "{name} must be 1 to {max} characters of A-Z, a-z, 0-9, _ and -."
        )))
    }
}

/// The mixing parameters of Start/Update: exactly the JSON parameter that goes with `MixMode`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Mix {
    /// `MixMode=0` with its `SingleSubParams`.
    Single(Value),
    /// `MixMode=1` with its `TranscodeParams`.
    Transcode(Value),
}

impl Mix {
    pub(super) fn mix_mode(&self) -> u8 {
        match self {
            Mix::Single(_) => 0,
            Mix::Transcode(_) => 1,
        }
    }
}

pub(super) fn mix(params: &Params) -> Result<Mix, Fault> {
    let single = optional(params, "SingleSubParams");
    let transcode = optional(params, "TranscodeParams");
    match required(params, "MixMode")? {
        "0" => {
            if transcode.is_some() {
                return Err(Fault::invalid(
                    "TranscodeParams must not be set when MixMode is 0.",
                ));
            }
            let text = single.ok_or_else(|| Fault::missing("SingleSubParams"))?;
            let value = json_object("SingleSubParams", text)?;
            user("SingleSubParams", as_object(&value)?)?;
            Ok(Mix::Single(value))
        }
        "1" => {
            if single.is_some() {
                return Err(Fault::invalid(
                    "SingleSubParams must not be set when MixMode is 1.",
                ));
            }
            let text = transcode.ok_or_else(|| Fault::missing("TranscodeParams"))?;
            let value = json_object("TranscodeParams", text)?;
            transcode_params(as_object(&value)?)?;
            Ok(Mix::Transcode(value))
        }
        _ => Err(Fault::invalid("MixMode must be 0 or 1.")),
    }
}

fn json_object(name: &str, text: &str) -> Result<Value, Fault> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) | Err(_) => Err(Fault::invalid(format!("{name} must be a JSON object."))),
    }
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, Fault> {
    value
        .as_object()
        .ok_or_else(|| Fault::invalid("A JSON object was expected."))
}

/// A scalar as the text the service reads: the SDK sends numbers as strings, but a JSON number
/// or boolean is accepted too (the service parses the value as JSON, spec §3.4).
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn one_of(obj: &Map<String, Value>, path: &str, key: &str, allowed: &[&str]) -> Result<(), Fault> {
    match obj.get(key) {
        None => Ok(()),
        Some(v) if text(v).is_some_and(|t| allowed.contains(&t.as_str())) => Ok(()),
        Some(_) => Err(Fault::invalid(format!(
            "{path}.{key} must be one of {}.",
            allowed.join(", ")
        ))),
    }
}

fn non_empty_string<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<&'a str, Fault> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(Fault::invalid(format!(
            "{path}.{key} must be a non-empty string."
        ))),
        None => Err(Fault::missing(&format!("{path}.{key}"))),
    }
}

fn url_field(obj: &Map<String, Value>, path: &str, key: &str, needed: bool) -> Result<(), Fault> {
    match obj.get(key) {
        None if !needed => Ok(()),
        None => Err(Fault::missing(&format!("{path}.{key}"))),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_URL => Ok(()),
        Some(_) => Err(Fault::invalid(format!(
            "{path}.{key} must be a URL of at most {MAX_URL} characters."
        ))),
    }
}

/// A subscribed user (`SingleSubParams`, `UserInfos[]`): `UserId` plus the optional stream and
/// source types.
fn user<'a>(path: &str, obj: &'a Map<String, Value>) -> Result<&'a str, Fault> {
    let user_id = non_empty_string(obj, path, "UserId")?;
    one_of(obj, path, "StreamType", &["0", "1", "2"])?;
    one_of(obj, path, "SourceType", &["camera", "shareScreen"])?;
    Ok(user_id)
}

fn number(value: &Value) -> Option<f64> {
    text(value)
        .and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite())
}

fn integer(value: &Value) -> Option<i64> {
    text(value).and_then(|t| t.trim().parse::<i64>().ok())
}

fn fraction(obj: &Map<String, Value>, path: &str, key: &str) -> Result<(), Fault> {
    match obj.get(key) {
        None => Err(Fault::missing(&format!("{path}.{key}"))),
        Some(v) if number(v).is_some_and(|f| (0.0..=1.0).contains(&f)) => Ok(()),
        Some(_) => Err(Fault::invalid(format!(
            "{path}.{key} must be a number in [0, 1]."
        ))),
    }
}

fn transcode_params(obj: &Map<String, Value>) -> Result<(), Fault> {
    let mut listed = BTreeSet::new();
    // The video tracks subscribed, as (user, source): a pane can show only those (spec §9.2:
    // a pane's UserInfo is valid only for StreamType 0 or 2; §9.3: SourceType shareScreen only
    // with StreamType 2).
    let mut video: BTreeSet<(&str, &str)> = BTreeSet::new();
    match obj.get("UserInfos") {
        None => {}
        Some(Value::Array(infos)) => {
            for (i, info) in infos.iter().enumerate() {
                let path = format!("TranscodeParams.UserInfos[{i}]");
                let info = info
                    .as_object()
                    .ok_or_else(|| Fault::invalid(format!("{path} must be a JSON object.")))?;
                let user_id = user(&path, info)?;
                listed.insert(user_id);
                let stream = info
                    .get("StreamType")
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                let source = info
                    .get("SourceType")
                    .and_then(Value::as_str)
                    .unwrap_or("camera");
                match (stream, source) {
                    ("0", _) => {
                        video.insert((user_id, "camera"));
                    }
                    ("2", source) => {
                        video.insert((user_id, source));
                    }
                    _ => {}
                }
            }
        }
        Some(_) => {
            return Err(Fault::invalid(
                "TranscodeParams.UserInfos must be a JSON array.",
            ))
        }
    }
    let audio_only = encode_params(obj.get("EncodeParams"))?;
    if let Some(layout) = obj.get("Layout") {
        if audio_only {
            return Err(Fault::invalid(
                "TranscodeParams.Layout must be omitted for audio-only output.",
            ));
        }
        panes(layout, &listed, &video)?;
    }
    if let Some(background) = obj.get("Background") {
        let background = background
            .as_object()
            .ok_or_else(|| Fault::invalid("TranscodeParams.Background must be a JSON object."))?;
        url_field(background, "TranscodeParams.Background", "URL", true)?;
        one_of(
            background,
            "TranscodeParams.Background",
            "RenderMode",
            &["0", "1"],
        )?;
    }
    Ok(())
}

fn panes(
    layout: &Value,
    listed: &BTreeSet<&str>,
    video: &BTreeSet<(&str, &str)>,
) -> Result<(), Fault> {
    let layout = layout
        .as_object()
        .ok_or_else(|| Fault::invalid("TranscodeParams.Layout must be a JSON object."))?;
    let panes = match layout.get("UserPanes") {
        Some(Value::Array(panes)) => panes,
        Some(_) => {
            return Err(Fault::invalid(
                "TranscodeParams.Layout.UserPanes must be a JSON array.",
            ))
        }
        None => return Err(Fault::missing("TranscodeParams.Layout.UserPanes")),
    };
    if panes.len() > MAX_PANES {
        return Err(Fault::invalid(format!(
            "TranscodeParams.Layout.UserPanes has {} panes; at most {MAX_PANES} are allowed.",
            panes.len()
        )));
    }
    for (i, pane) in panes.iter().enumerate() {
        let path = format!("TranscodeParams.Layout.UserPanes[{i}]");
        let pane = pane
            .as_object()
            .ok_or_else(|| Fault::invalid(format!("{path} must be a JSON object.")))?;
        for key in ["X", "Y", "Width", "Height"] {
            fraction(pane, &path, key)?;
        }
        if let Some(z) = pane.get("ZOrder") {
            if integer(z).is_none_or(|z| z < 0) {
                return Err(Fault::invalid(format!(
                    "{path}.ZOrder must be a non-negative integer."
                )));
            }
        }
        one_of(pane, &path, "RenderMode", &["0", "1"])?;
        url_field(pane, &path, "BackgroundImageUrl", false)?;
        if let Some(info) = pane.get("UserInfo") {
            let info_path = format!("{path}.UserInfo");
            let info = info
                .as_object()
                .ok_or_else(|| Fault::invalid(format!("{info_path} must be a JSON object.")))?;
            let user_id = non_empty_string(info, &info_path, "UserId")?;
            one_of(info, &info_path, "SourceType", &["camera", "shareScreen"])?;
            if !listed.is_empty() && !listed.contains(user_id) {
                return Err(Fault::invalid(format!(
                    "{info_path}.UserId {user_id} must also be listed in TranscodeParams.UserInfos."
                )));
            }
            let source = info
                .get("SourceType")
                .and_then(Value::as_str)
                .unwrap_or("camera");
            if !listed.is_empty() && !video.contains(&(user_id, source)) {
                return Err(Fault::invalid(format!(
                    "{info_path} shows the {source} video of {user_id}, which TranscodeParams.UserInfos does not subscribe (StreamType 0 for the camera, 2 for a shareScreen source)."
                )));
            }
        }
    }
    Ok(())
}

/// Integer encoder settings and their inclusive ranges.
const ENCODE_RANGES: [(&str, i64, i64); 7] = [
    ("VideoWidth", 0, 1920),
    ("VideoHeight", 0, 1920),
    ("VideoFramerate", 1, 60),
    ("VideoBitrate", 1, 10_000),
    ("VideoGop", 1, 60),
    ("AudioBitrate", 8, 500),
    ("AudioChannels", 1, 2),
];
const SAMPLE_RATES: [&str; 5] = ["8000", "16000", "32000", "44100", "48000"];

/// Checks `EncodeParams` and returns whether the output is audio only. Unless it is, every field
/// except `VideoCodec` and `EnhancedParam` is required (spec §3.3).
fn encode_params(value: Option<&Value>) -> Result<bool, Fault> {
    const PATH: &str = "TranscodeParams.EncodeParams";
    let obj = match value {
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(Fault::invalid(format!("{PATH} must be a JSON object."))),
        None => return Err(Fault::missing(PATH)),
    };
    one_of(obj, PATH, "AudioOnly", &["true", "false"])?;
    let audio_only = obj.get("AudioOnly").and_then(text).as_deref() == Some("true");
    for (key, low, high) in ENCODE_RANGES {
        match obj.get(key) {
            None if audio_only => {}
            None => return Err(Fault::missing(&format!("{PATH}.{key}"))),
            Some(v) if integer(v).is_some_and(|n| (low..=high).contains(&n)) => {}
            Some(_) => {
                return Err(Fault::invalid(format!(
                    "{PATH}.{key} must be an integer in [{low}, {high}]."
                )))
            }
        }
    }
    if !audio_only && !obj.contains_key("AudioSampleRate") {
        return Err(Fault::missing(&format!("{PATH}.AudioSampleRate")));
    }
    one_of(obj, PATH, "AudioSampleRate", &SAMPLE_RATES)?;
    one_of(obj, PATH, "VideoCodec", &["H.264", "H.265"])?;
    Ok(audio_only)
}

/// Where a task sends its output: `StreamURL` or `MultiStreamURL` as received, and the identity
/// of every target URL (scheme, host and path: the `auth_key` query is not part of it, so a
/// re-signed URL is still the same stream).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Output {
    pub stream_url: Option<String>,
    pub multi_stream_url: Option<Value>,
    pub identities: Vec<String>,
}

/// The output parameters, if any were given (Start requires them, Update may change them).
pub(super) fn output(params: &Params) -> Result<Option<Output>, Fault> {
    match (
        optional(params, "StreamURL"),
        optional(params, "MultiStreamURL"),
    ) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Fault::invalid(
            "Give either a single output URL or a URL list, not both.",
        )),
        (Some(url), None) => Ok(Some(Output {
            stream_url: Some(url.to_owned()),
            multi_stream_url: None,
            identities: vec![rtmp_identity(url)?],
        })),
        (None, Some(text)) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|_| Fault::invalid("The output URL list must be a JSON array."))?;
            let targets = value.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                Fault::invalid("The output URL list must be a non-empty JSON array.")
            })?;
            let mut identities = Vec::with_capacity(targets.len());
            for target in targets {
                let target = target.as_object().ok_or_else(|| {
                    Fault::invalid("Each output URL entry must be a JSON object.")
                })?;
                let url = match target.get("URL") {
                    Some(Value::String(url)) => url,
                    _ => return Err(Fault::missing("URL")),
                };
                if !matches!(target.get("IsAliCdn"), None | Some(Value::Bool(_))) {
                    return Err(Fault::invalid("IsAliCdn must be a JSON boolean."));
                }
                identities.push(rtmp_identity(url)?);
            }
            Ok(Some(Output {
                stream_url: None,
                multi_stream_url: Some(value),
                identities,
            }))
        }
    }
}

/// `rtmp://host[:port]/path` of an RTMP URL, host lower-cased, query and fragment dropped.
pub(super) fn rtmp_identity(url: &str) -> Result<String, Fault> {
    let bad = || {
        Fault::invalid(format!(
            "The output URL must be an rtmp:// URL of at most {MAX_URL} characters."
        ))
    };
    if url.len() > MAX_URL {
        return Err(bad());
    }
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(bad)?;
    if parsed.scheme() != "rtmp" {
        return Err(bad());
    }
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!(
        "rtmp://{}{port}{}",
        host.to_ascii_lowercase(),
        parsed.path()
    ))
}

/// `MaxIdleTime`: seconds in [10, 86400].
pub(super) fn max_idle_time(params: &Params) -> Result<Option<u32>, Fault> {
    match optional(params, "MaxIdleTime") {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|s| (10..=86_400).contains(s))
            .map(Some)
            .ok_or_else(|| Fault::invalid("MaxIdleTime must be an integer in [10, 86400].")),
    }
}

pub(super) fn region(params: &Params) -> Result<Option<String>, Fault> {
    match optional(params, "Region") {
        None => Ok(None),
        Some(r @ ("CN-Shanghai" | "AP-Singapore" | "EMAA-Saudi")) => Ok(Some(r.to_owned())),
        Some(_) => Err(Fault::invalid(
            "Region must be one of CN-Shanghai, AP-Singapore, EMAA-Saudi.",
        )),
    }
}

pub(super) fn sei_params(params: &Params) -> Result<Option<Value>, Fault> {
    optional(params, "SeiParams")
        .map(|text| json_object("SeiParams", text))
        .transpose()
}

/// The users a mix shows, in pane order: each pane's `UserInfo.UserId` (`?` for a pane filled in
/// join order), else the `UserInfos` list; empty means "everyone in the channel".
pub(super) fn mix_users(transcode: &Value) -> Vec<String> {
    let panes = transcode
        .pointer("/Layout/UserPanes")
        .and_then(Value::as_array);
    match panes {
        Some(panes) if !panes.is_empty() => panes
            .iter()
            .map(|p| {
                p.pointer("/UserInfo/UserId")
                    .and_then(text)
                    .unwrap_or_else(|| "?".to_owned())
            })
            .collect(),
        _ => transcode
            .get("UserInfos")
            .and_then(Value::as_array)
            .map(|infos| {
                infos
                    .iter()
                    .filter_map(|i| i.get("UserId").and_then(text))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The repeat list `Name.1`, `Name.2`, … in index order.
pub(super) fn flat_list(params: &Params, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    let mut items: Vec<(u32, String)> = params
        .iter()
        .filter_map(|(k, v)| {
            let index = k.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((index, v.clone()))
        })
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, v)| v).collect()
}
