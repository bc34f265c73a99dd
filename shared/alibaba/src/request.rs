//! Wire-level requests of the ApsaraVideo Live API (`Version=2016-11-01`) that costream sends, and
//! the function that turns one into the complete signed parameter map.
//!
//! Owns the exact shape the official Tea SDK puts on the wire (spec §3.4): nested parameters
//! (`SingleSubParams`, `TranscodeParams`, `SeiParams`, `MultiStreamURL`) are single compact JSON
//! strings with PascalCase keys in alphabetical order, string values (only `IsAliCdn` is a JSON
//! boolean) and absent fields omitted. The structs below declare their fields alphabetically *by
//! wire name* because serde emits fields in declaration order; a test walks every object and
//! checks the order, so adding a field in the wrong place fails loudly.
//!
//! These types know nothing about the room domain: the mapping from the core's target task to a
//! [`LiveRequest`] lives with the caller. Nothing here reads a clock or draws a nonce; the caller
//! passes both in [`CommonParams`], which is what makes the SDK captures reproducible.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[cfg(feature = "ops")]
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Serialize, Serializer};
#[cfg(feature = "ops")]
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::sign::{percent_encode, sign, Method, Signed};

/// The Live API version all MPU and event-subscription actions belong to (spec §0.1).
pub const LIVE_API_VERSION: &str = "2016-11-01";
/// `Format` as the Tea SDK sends it. The classic SDKs send `JSON`; the service accepts both and
/// answers JSON either way. Lowercase is the default because it reproduces the SDK captures.
pub const DEFAULT_FORMAT: &str = "json";

/// Why a request could not be turned into parameters.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot serialize {param} of {action} as JSON")]
    Json {
        action: &'static str,
        param: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The ingest URL could not be signed (a malformed push domain or app name).
    #[error("cannot build the StreamURL of {action}")]
    StreamUrl {
        action: &'static str,
        #[source]
        source: super::urls::UrlSignError,
    },
}

/// A normalised layout coordinate or size in `[0, 1]` (fraction of the output canvas).
///
/// Private field so that NaN, infinities and out-of-range values can't reach the wire. On the
/// wire it prints like the SDK's callers write it: `0`, `0.5`, `1`, `0.2516`, never `1.0`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(f64);

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("layout value {0} is not a finite number in [0, 1]")]
pub struct FractionError(pub f64);

impl Fraction {
    pub const ZERO: Fraction = Fraction(0.0);
    pub const HALF: Fraction = Fraction(0.5);
    pub const ONE: Fraction = Fraction(1.0);

    pub fn new(value: f64) -> Result<Self, FractionError> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            // `-0.0` passes the range check but would print as "-0".
            Ok(Fraction(if value == 0.0 { 0.0 } else { value }))
        } else {
            Err(FractionError(value))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Fraction {
    type Error = FractionError;
    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Fraction::new(value)
    }
}

impl fmt::Display for Fraction {
    /// Rust's `Display` for `f64` is the shortest representation that round-trips and never uses
    /// an exponent, and prints whole numbers without a fraction part (`1`, not `1.0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Serializes any `Display` value as a JSON string: the Live models type every number as `str`.
fn as_string<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Like [`as_string`] for optional fields (always paired with `skip_serializing_if`).
fn opt_as_string<T: fmt::Display, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

/// `FollowIdr` is a `"0"`/`"1"` string on the wire.
fn opt_flag_01<S: Serializer>(value: &Option<bool>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(true) => serializer.serialize_str("1"),
        Some(false) => serializer.serialize_str("0"),
        None => serializer.serialize_none(),
    }
}

/// Which media of a user to subscribe: `0` original (audio + video), `1` audio only, `2` video
/// only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StreamType {
    #[serde(rename = "0")]
    Original,
    #[serde(rename = "1")]
    AudioOnly,
    #[serde(rename = "2")]
    VideoOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SourceType {
    #[serde(rename = "camera")]
    Camera,
    #[serde(rename = "shareScreen")]
    ShareScreen,
}

/// How a video is fitted into its pane or the canvas: `0` scale with black bars, `1` crop (the
/// service default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RenderMode {
    #[serde(rename = "0")]
    Fit,
    #[serde(rename = "1")]
    Crop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VideoCodec {
    #[serde(rename = "H.264")]
    H264,
    #[serde(rename = "H.265")]
    H265,
}

/// `MixMode=0` relays one user's stream as is (`SingleSubParams`); `MixMode=1` mixes and
/// transcodes (`TranscodeParams`). One enum instead of two optional fields makes "both set" or
/// "neither set" — both rejected by the service — unrepresentable, and ties `MixMode` to the
/// parameter that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Mix {
    Single(SingleSubParams),
    Transcode(TranscodeParams),
}

impl Mix {
    /// The `MixMode` value that goes with these parameters.
    pub fn mix_mode(&self) -> &'static str {
        match self {
            Mix::Single(_) => "0",
            Mix::Transcode(_) => "1",
        }
    }
}

/// `SingleSubParams` (MixMode=0): the one user whose stream is relayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SingleSubParams {
    #[serde(rename = "SourceType", skip_serializing_if = "Option::is_none")]
    pub source_type: Option<SourceType>,
    #[serde(rename = "StreamType", skip_serializing_if = "Option::is_none")]
    pub stream_type: Option<StreamType>,
    #[serde(rename = "UserId")]
    pub user_id: String,
}

impl SingleSubParams {
    /// The user's camera stream with audio and video, spelled out as the SDK capture does.
    pub fn camera(user_id: impl Into<String>) -> Self {
        SingleSubParams {
            source_type: Some(SourceType::Camera),
            stream_type: Some(StreamType::Original),
            user_id: user_id.into(),
        }
    }
}

/// `TranscodeParams` (MixMode=1): who is mixed, where each pane goes, and the output encoding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscodeParams {
    #[serde(rename = "Background", skip_serializing_if = "Option::is_none")]
    pub background: Option<Background>,
    #[serde(rename = "EncodeParams")]
    pub encode_params: EncodeParams,
    /// Must be `None` for audio-only output.
    #[serde(rename = "Layout", skip_serializing_if = "Option::is_none")]
    pub layout: Option<MixLayout>,
    /// Users to subscribe. Empty means "everyone in the channel" and is omitted on the wire.
    #[serde(rename = "UserInfos", skip_serializing_if = "Vec::is_empty")]
    pub user_infos: Vec<UserInfo>,
}

/// One entry of `TranscodeParams.UserInfos`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserInfo {
    /// Only for cross-channel mixing.
    #[serde(rename = "ChannelId", skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(rename = "SourceType", skip_serializing_if = "Option::is_none")]
    pub source_type: Option<SourceType>,
    #[serde(rename = "StreamType", skip_serializing_if = "Option::is_none")]
    pub stream_type: Option<StreamType>,
    #[serde(rename = "UserId")]
    pub user_id: String,
}

impl UserInfo {
    pub fn camera(user_id: impl Into<String>) -> Self {
        UserInfo {
            channel_id: None,
            source_type: Some(SourceType::Camera),
            stream_type: Some(StreamType::Original),
            user_id: user_id.into(),
        }
    }
}

/// `TranscodeParams.Layout`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixLayout {
    #[serde(rename = "UserPanes")]
    pub user_panes: Vec<UserPane>,
}

/// One pane of the mixed picture; coordinates are fractions of the canvas, origin top-left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserPane {
    /// Shown while the pane's user has no video.
    #[serde(rename = "BackgroundImageUrl", skip_serializing_if = "Option::is_none")]
    pub background_image_url: Option<String>,
    #[serde(rename = "Height")]
    pub height: Fraction,
    #[serde(rename = "RenderMode", skip_serializing_if = "Option::is_none")]
    pub render_mode: Option<RenderMode>,
    /// Who is shown here. `None` fills panes in join order; if set, the user must also be listed
    /// in `UserInfos`.
    #[serde(rename = "UserInfo", skip_serializing_if = "Option::is_none")]
    pub user_info: Option<PaneUserInfo>,
    #[serde(rename = "Width")]
    pub width: Fraction,
    #[serde(rename = "X")]
    pub x: Fraction,
    #[serde(rename = "Y")]
    pub y: Fraction,
    /// Stacking order: 0 is the bottom.
    #[serde(rename = "ZOrder", serialize_with = "as_string")]
    pub z_order: u32,
}

/// `UserPanes[].UserInfo` (no `StreamType`, unlike [`UserInfo`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaneUserInfo {
    #[serde(rename = "ChannelId", skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(rename = "SourceType", skip_serializing_if = "Option::is_none")]
    pub source_type: Option<SourceType>,
    #[serde(rename = "UserId")]
    pub user_id: String,
}

impl PaneUserInfo {
    pub fn camera(user_id: impl Into<String>) -> Self {
        PaneUserInfo {
            channel_id: None,
            source_type: Some(SourceType::Camera),
            user_id: user_id.into(),
        }
    }
}

/// `TranscodeParams.Background`: a global background **image**; the Live API has no colour
/// field, so a solid colour is a one-colour image (spec §0.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Background {
    #[serde(rename = "RenderMode", skip_serializing_if = "Option::is_none")]
    pub render_mode: Option<RenderMode>,
    #[serde(rename = "URL")]
    pub url: String,
}

/// `TranscodeParams.EncodeParams`. With `AudioOnly=false` every field except `VideoCodec` and
/// `EnhancedParam` is required by the service; they are options here because the wire omits what
/// is absent and audio-only output needs no video fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EncodeParams {
    /// kbps, 8–500.
    #[serde(
        rename = "AudioBitrate",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub audio_bitrate: Option<u32>,
    /// 1 or 2.
    #[serde(
        rename = "AudioChannels",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub audio_channels: Option<u32>,
    /// `"true"`/`"false"` on the wire.
    #[serde(
        rename = "AudioOnly",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub audio_only: Option<bool>,
    /// Hz: 8000, 16000, 32000, 44100 or 48000.
    #[serde(
        rename = "AudioSampleRate",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub audio_sample_rate: Option<u32>,
    /// Itself a JSON string, e.g. `{"profile":"high","preset":"veryfast"}`, passed through as is.
    #[serde(rename = "EnhancedParam", skip_serializing_if = "Option::is_none")]
    pub enhanced_param: Option<String>,
    /// kbps, 1–10000.
    #[serde(
        rename = "VideoBitrate",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub video_bitrate: Option<u32>,
    #[serde(rename = "VideoCodec", skip_serializing_if = "Option::is_none")]
    pub video_codec: Option<VideoCodec>,
    /// 1–60.
    #[serde(
        rename = "VideoFramerate",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub video_framerate: Option<u32>,
    /// 1–60 (unit not documented; spec §3.3).
    #[serde(
        rename = "VideoGop",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub video_gop: Option<u32>,
    /// Pixels, 0–1920.
    #[serde(
        rename = "VideoHeight",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub video_height: Option<u32>,
    /// Pixels, 0–1920.
    #[serde(
        rename = "VideoWidth",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub video_width: Option<u32>,
}

/// `SeiParams`: SEI messages carrying the layout/volume or custom payloads in the output stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeiParams {
    #[serde(rename = "LayoutVolume", skip_serializing_if = "Option::is_none")]
    pub layout_volume: Option<SeiLayoutVolume>,
    #[serde(rename = "PassThrough", skip_serializing_if = "Option::is_none")]
    pub pass_through: Option<SeiPassThrough>,
    /// 100–254 (service default 5). **Start only**: `UpdateLiveMPUTask` has no `PayloadType`, so
    /// [`UpdateLiveMpuTask`] leaves it out when it serializes.
    #[serde(
        rename = "PayloadType",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub payload_type: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeiLayoutVolume {
    /// Send with every IDR frame (`"1"`) or not (`"0"`).
    #[serde(
        rename = "FollowIdr",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_flag_01"
    )]
    pub follow_idr: Option<bool>,
    /// Milliseconds, 1000–5000.
    #[serde(
        rename = "Interval",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub interval_ms: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeiPassThrough {
    #[serde(
        rename = "FollowIdr",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_flag_01"
    )]
    pub follow_idr: Option<bool>,
    #[serde(
        rename = "Interval",
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_as_string"
    )]
    pub interval_ms: Option<u32>,
    #[serde(rename = "PayloadContent", skip_serializing_if = "Option::is_none")]
    pub payload_content: Option<String>,
    /// Service default `udd`.
    #[serde(rename = "PayloadContentKey", skip_serializing_if = "Option::is_none")]
    pub payload_content_key: Option<String>,
}

/// One target of `MultiStreamURL`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiStreamUrl {
    /// Relay through Alibaba Cloud CDN. The one JSON boolean among the nested parameters.
    #[serde(rename = "IsAliCdn")]
    pub is_ali_cdn: bool,
    #[serde(rename = "URL")]
    pub url: String,
}

/// Where the task pushes its output: one RTMP `StreamURL` (signed with `auth_key` when the ingest
/// domain has URL signing, see `urls.rs`) or a `MultiStreamURL` list. Mutually exclusive on the
/// wire, hence an enum.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutput {
    Url(String),
    Multi(Vec<MultiStreamUrl>),
}

/// `Region` of StartLiveMPUTask: where the mixing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpuRegion {
    CnShanghai,
    ApSingapore,
    EmaaSaudi,
}

impl MpuRegion {
    pub fn as_str(self) -> &'static str {
        match self {
            MpuRegion::CnShanghai => "CN-Shanghai",
            MpuRegion::ApSingapore => "AP-Singapore",
            MpuRegion::EmaaSaudi => "EMAA-Saudi",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown MPU region {0:?} (expected CN-Shanghai, AP-Singapore or EMAA-Saudi)")]
pub struct UnknownRegion(pub String);

impl FromStr for MpuRegion {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MpuRegion::CnShanghai,
            MpuRegion::ApSingapore,
            MpuRegion::EmaaSaudi,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| UnknownRegion(s.to_owned()))
    }
}

/// `StartLiveMPUTask`. The `TaskId` is chosen by the caller; a deterministic one is what makes a
/// retried Start land on the same task (and come back as "already exists").
#[derive(Debug, Clone, PartialEq)]
pub struct StartLiveMpuTask {
    pub app_id: String,
    pub channel_id: String,
    pub task_id: String,
    pub mix: Mix,
    pub output: StreamOutput,
    /// Seconds, 10–86400. Without it the task stops as soon as the channel closes.
    pub max_idle_time: Option<u32>,
    pub region: Option<MpuRegion>,
    pub sei: Option<SeiParams>,
}

/// `UpdateLiveMPUTask`: always the complete target (mode plus full parameters), because whether
/// the service merges partial updates is undocumented (spec §3.2). It has no `MaxIdleTime` and no
/// `Region`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateLiveMpuTask {
    pub app_id: String,
    pub channel_id: String,
    pub task_id: String,
    pub mix: Mix,
    /// Optional on Update; the captures do not re-send it.
    pub output: Option<StreamOutput>,
    /// Serialized without `PayloadType` (not a field of Update).
    pub sei: Option<SeiParams>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopLiveMpuTask {
    pub app_id: String,
    pub task_id: String,
}

/// `ListRtcMPUTaskDetail`, the describe call (no task status in its answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRtcMpuTaskDetail {
    pub app_id: String,
    pub selector: TaskSelector,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSelector {
    Task(String),
    /// All tasks of the app, newest update first; `page_size` 1–100.
    Page {
        page_no: u32,
        page_size: u32,
    },
}

/// Event families of `CreateEventSub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg(feature = "ops")]
pub enum EventKind {
    ChannelEvent,
    UserEvent,
}

#[cfg(feature = "ops")]
impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ChannelEvent => "ChannelEvent",
            EventKind::UserEvent => "UserEvent",
        }
    }
}

/// `CreateEventSub`: ARTC room callbacks to `callback_url`. Lists go flat (`Events.1`, `Users.1`)
/// unlike the MPU JSON parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "ops")]
pub struct CreateEventSub {
    pub app_id: String,
    pub callback_url: String,
    pub events: Vec<EventKind>,
    /// `None` (or `*`) subscribes to all channels; required when `users` is not empty.
    pub channel_id: Option<String>,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "ops")]
pub struct DeleteEventSub {
    pub app_id: String,
    pub subscribe_id: String,
}

/// `ListEventSub` — the one action the SDK sends as `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "ops")]
pub struct ListEventSub {
    pub app_id: String,
}

/// Shortest and longest `NotifyAuthKey` the service accepts (spec §5.1).
#[cfg(feature = "ops")]
pub const NOTIFY_AUTH_KEY_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// The key Alibaba signs ingest callbacks with (`ALI-LIVE-SIGNATURE`, spec §5.1): 16–64 ASCII
/// letters and digits, checked on construction. A secret: `Debug` prints `[REDACTED]`, errors
/// describe it without quoting it, and only [`LiveRequest::action_params`] exposes it.
#[derive(Clone)]
#[cfg(feature = "ops")]
pub struct NotifyAuthKey(SecretString);

/// Why a string is not a valid [`NotifyAuthKey`]. Carries no part of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg(feature = "ops")]
pub enum NotifyAuthKeyError {
    #[error("the CDN notify auth key must be 16-64 characters long, not {0}")]
    Length(usize),
    #[error("the CDN notify auth key must consist of letters A-Z a-z and digits 0-9 only")]
    Charset,
}

#[cfg(feature = "ops")]
impl NotifyAuthKey {
    pub fn new(key: SecretString) -> Result<Self, NotifyAuthKeyError> {
        let text = key.expose_secret();
        let chars = text.chars().count();
        if !NOTIFY_AUTH_KEY_LEN.contains(&chars) {
            return Err(NotifyAuthKeyError::Length(chars));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(NotifyAuthKeyError::Charset);
        }
        Ok(NotifyAuthKey(key))
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(feature = "ops")]
impl fmt::Debug for NotifyAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotifyAuthKey([REDACTED])")
    }
}

#[cfg(feature = "ops")]
impl PartialEq for NotifyAuthKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(
            self.expose_secret()
                .as_bytes()
                .ct_eq(other.expose_secret().as_bytes()),
        )
    }
}

#[cfg(feature = "ops")]
impl Eq for NotifyAuthKey {}

/// `SetLiveStreamsNotifyUrlConfig`: where Alibaba sends the ingest (`publish`/`publish_done`)
/// callbacks of one ingest domain, and whether it signs them (spec §5.1). Sent with
/// `NotifyReqAuth` always explicit, so registering without a key really turns signing off.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg(feature = "ops")]
pub struct SetLiveStreamsNotifyUrlConfig {
    pub domain_name: String,
    pub notify_url: String,
    /// `Some`: `NotifyReqAuth=yes` with this `NotifyAuthKey`; `None`: `NotifyReqAuth=no` and no
    /// key. One field instead of a flag plus an optional key, so "yes without a key" cannot be
    /// built.
    pub notify_auth_key: Option<NotifyAuthKey>,
}

#[cfg(feature = "ops")]
impl SetLiveStreamsNotifyUrlConfig {
    /// The `NotifyReqAuth` flag this request sends.
    pub fn notify_req_auth(&self) -> bool {
        self.notify_auth_key.is_some()
    }
}

/// Every action the adapter can send. The port (`LiveApi`) takes this, so a fake can match on it.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveRequest {
    Start(StartLiveMpuTask),
    Update(UpdateLiveMpuTask),
    Stop(StopLiveMpuTask),
    ListTasks(ListRtcMpuTaskDetail),
    #[cfg(feature = "ops")]
    CreateEventSub(CreateEventSub),
    #[cfg(feature = "ops")]
    DeleteEventSub(DeleteEventSub),
    #[cfg(feature = "ops")]
    ListEventSub(ListEventSub),
    #[cfg(feature = "ops")]
    SetNotifyUrl(SetLiveStreamsNotifyUrlConfig),
}

impl From<StartLiveMpuTask> for LiveRequest {
    fn from(r: StartLiveMpuTask) -> Self {
        LiveRequest::Start(r)
    }
}
impl From<UpdateLiveMpuTask> for LiveRequest {
    fn from(r: UpdateLiveMpuTask) -> Self {
        LiveRequest::Update(r)
    }
}
impl From<StopLiveMpuTask> for LiveRequest {
    fn from(r: StopLiveMpuTask) -> Self {
        LiveRequest::Stop(r)
    }
}
impl From<ListRtcMpuTaskDetail> for LiveRequest {
    fn from(r: ListRtcMpuTaskDetail) -> Self {
        LiveRequest::ListTasks(r)
    }
}
#[cfg(feature = "ops")]
impl From<CreateEventSub> for LiveRequest {
    fn from(r: CreateEventSub) -> Self {
        LiveRequest::CreateEventSub(r)
    }
}
#[cfg(feature = "ops")]
impl From<DeleteEventSub> for LiveRequest {
    fn from(r: DeleteEventSub) -> Self {
        LiveRequest::DeleteEventSub(r)
    }
}
#[cfg(feature = "ops")]
impl From<ListEventSub> for LiveRequest {
    fn from(r: ListEventSub) -> Self {
        LiveRequest::ListEventSub(r)
    }
}
#[cfg(feature = "ops")]
impl From<SetLiveStreamsNotifyUrlConfig> for LiveRequest {
    fn from(r: SetLiveStreamsNotifyUrlConfig) -> Self {
        LiveRequest::SetNotifyUrl(r)
    }
}

/// Builds the action's parameters into `out`; a small helper so each arm stays one line per field.
struct ParamWriter<'a> {
    action: &'static str,
    out: &'a mut BTreeMap<String, String>,
}

impl ParamWriter<'_> {
    fn put(&mut self, name: &str, value: impl Into<String>) {
        self.out.insert(name.to_owned(), value.into());
    }

    fn json<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), RequestError> {
        let text = serde_json::to_string(value).map_err(|source| RequestError::Json {
            action: self.action,
            param: name,
            source,
        })?;
        self.put(name, text);
        Ok(())
    }

    fn mix(&mut self, mix: &Mix) -> Result<(), RequestError> {
        self.put("MixMode", mix.mix_mode());
        match mix {
            Mix::Single(p) => self.json("SingleSubParams", p),
            Mix::Transcode(p) => self.json("TranscodeParams", p),
        }
    }

    fn output(&mut self, output: &StreamOutput) -> Result<(), RequestError> {
        match output {
            StreamOutput::Url(url) => {
                self.put("StreamURL", url.as_str());
                Ok(())
            }
            StreamOutput::Multi(targets) => self.json("MultiStreamURL", targets),
        }
    }

    /// Repeat lists are 1-based and flat: `Events.1`, `Events.2`, …
    #[cfg(feature = "ops")]
    fn flat_list<'s>(&mut self, prefix: &str, items: impl IntoIterator<Item = &'s str>) {
        for (i, item) in items.into_iter().enumerate() {
            self.put(&format!("{prefix}.{}", i + 1), item);
        }
    }
}

impl LiveRequest {
    /// The `Action` parameter (also logged as the `action` field).
    pub fn action(&self) -> &'static str {
        match self {
            LiveRequest::Start(_) => "StartLiveMPUTask",
            LiveRequest::Update(_) => "UpdateLiveMPUTask",
            LiveRequest::Stop(_) => "StopLiveMPUTask",
            LiveRequest::ListTasks(_) => "ListRtcMPUTaskDetail",
            #[cfg(feature = "ops")]
            LiveRequest::CreateEventSub(_) => "CreateEventSub",
            #[cfg(feature = "ops")]
            LiveRequest::DeleteEventSub(_) => "DeleteEventSub",
            #[cfg(feature = "ops")]
            LiveRequest::ListEventSub(_) => "ListEventSub",
            #[cfg(feature = "ops")]
            LiveRequest::SetNotifyUrl(_) => "SetLiveStreamsNotifyUrlConfig",
        }
    }

    /// The method the official SDK uses; it is the first token of the StringToSign.
    pub fn method(&self) -> Method {
        match self {
            #[cfg(feature = "ops")]
            LiveRequest::ListEventSub(_) => Method::Get,
            LiveRequest::Start(_)
            | LiveRequest::Update(_)
            | LiveRequest::Stop(_)
            | LiveRequest::ListTasks(_) => Method::Post,
            #[cfg(feature = "ops")]
            LiveRequest::CreateEventSub(_)
            | LiveRequest::DeleteEventSub(_)
            | LiveRequest::SetNotifyUrl(_) => Method::Post,
        }
    }

    /// The action-specific parameters (`Action` included, common parameters not).
    pub fn action_params(&self) -> Result<BTreeMap<String, String>, RequestError> {
        let mut out = BTreeMap::new();
        let mut w = ParamWriter {
            action: self.action(),
            out: &mut out,
        };
        w.put("Action", self.action());
        match self {
            LiveRequest::Start(r) => {
                w.put("AppId", r.app_id.as_str());
                w.put("ChannelId", r.channel_id.as_str());
                w.put("TaskId", r.task_id.as_str());
                w.mix(&r.mix)?;
                w.output(&r.output)?;
                if let Some(secs) = r.max_idle_time {
                    w.put("MaxIdleTime", secs.to_string());
                }
                if let Some(region) = r.region {
                    w.put("Region", region.as_str());
                }
                if let Some(sei) = &r.sei {
                    w.json("SeiParams", sei)?;
                }
            }
            LiveRequest::Update(r) => {
                w.put("AppId", r.app_id.as_str());
                w.put("ChannelId", r.channel_id.as_str());
                w.put("TaskId", r.task_id.as_str());
                w.mix(&r.mix)?;
                if let Some(output) = &r.output {
                    w.output(output)?;
                }
                if let Some(sei) = &r.sei {
                    let without_payload_type = SeiParams {
                        payload_type: None,
                        ..sei.clone()
                    };
                    w.json("SeiParams", &without_payload_type)?;
                }
            }
            LiveRequest::Stop(r) => {
                w.put("AppId", r.app_id.as_str());
                w.put("TaskId", r.task_id.as_str());
            }
            LiveRequest::ListTasks(r) => {
                w.put("AppId", r.app_id.as_str());
                match &r.selector {
                    TaskSelector::Task(task_id) => w.put("TaskId", task_id.as_str()),
                    TaskSelector::Page { page_no, page_size } => {
                        w.put("PageNo", page_no.to_string());
                        w.put("PageSize", page_size.to_string());
                    }
                }
            }
            #[cfg(feature = "ops")]
            LiveRequest::CreateEventSub(r) => {
                w.put("AppId", r.app_id.as_str());
                w.put("CallbackUrl", r.callback_url.as_str());
                if let Some(channel_id) = &r.channel_id {
                    w.put("ChannelId", channel_id.as_str());
                }
                w.flat_list("Events", r.events.iter().map(|e| e.as_str()));
                w.flat_list("Users", r.users.iter().map(String::as_str));
            }
            #[cfg(feature = "ops")]
            LiveRequest::DeleteEventSub(r) => {
                w.put("AppId", r.app_id.as_str());
                w.put("SubscribeId", r.subscribe_id.as_str());
            }
            #[cfg(feature = "ops")]
            LiveRequest::ListEventSub(r) => {
                w.put("AppId", r.app_id.as_str());
            }
            #[cfg(feature = "ops")]
            LiveRequest::SetNotifyUrl(r) => {
                w.put("DomainName", r.domain_name.as_str());
                w.put("NotifyUrl", r.notify_url.as_str());
                match &r.notify_auth_key {
                    Some(key) => {
                        w.put("NotifyReqAuth", "yes");
                        w.put("NotifyAuthKey", key.expose_secret());
                    }
                    None => w.put("NotifyReqAuth", "no"),
                }
            }
        }
        Ok(out)
    }
}

/// The per-attempt common parameters. Timestamp and nonce change on every attempt (a reused nonce
/// is rejected with `SignatureNonceUsed`), so they are inputs, never fields of the request.
#[derive(Clone, Copy)]
pub struct CommonParams<'a> {
    pub access_key_id: &'a str,
    pub timestamp: OffsetDateTime,
    pub signature_nonce: &'a str,
    /// STS token, sent (and signed) as `SecurityToken` when the credentials are temporary.
    pub security_token: Option<&'a str>,
    /// See [`DEFAULT_FORMAT`].
    pub format: &'a str,
}

impl fmt::Debug for CommonParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonParams")
            .field("access_key_id", &self.access_key_id)
            .field("timestamp", &self.timestamp)
            .field("signature_nonce", &self.signature_nonce)
            .field("security_token", &self.security_token.map(|_| "[REDACTED]"))
            .field("format", &self.format)
            .finish()
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ` in UTC without fractions, the only form the gateway accepts.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// A request ready to send: the full map (with `Signature`) and the signing intermediates.
///
/// `Debug` shows the parameters with the values of [`SECRET_PARAMS`] redacted and leaves out the
/// signing intermediates (which contain those values too), so a logged or panicking request
/// never leaks an STS token or a notify key.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub action: &'static str,
    pub method: Method,
    /// Every parameter that goes on the wire, `Signature` included.
    pub params: BTreeMap<String, String>,
    pub signed: Signed,
}

/// Parameters whose values are secrets: the STS token and the CDN notify signing key.
pub const SECRET_PARAMS: [&str; 2] = ["NotifyAuthKey", "SecurityToken"];

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: BTreeMap<&str, &str> = self
            .params
            .iter()
            .map(|(name, value)| {
                let shown = if SECRET_PARAMS.contains(&name.as_str()) {
                    "[REDACTED]"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("SignedRequest")
            .field("action", &self.action)
            .field("method", &self.method)
            .field("params", &params)
            .finish_non_exhaustive()
    }
}

impl SignedRequest {
    /// The `application/x-www-form-urlencoded` body (or query string for `GET`): the canonical
    /// string plus the percent-encoded signature, exactly what pop-core sends (spec §1.3).
    pub fn encoded_params(&self) -> String {
        let sig = percent_encode(&self.signed.signature);
        let mut out =
            String::with_capacity(self.signed.canonicalized_query_string.len() + 11 + sig.len());
        out.push_str(&self.signed.canonicalized_query_string);
        out.push_str("&Signature=");
        out.push_str(&sig);
        out
    }

    pub fn signature_nonce(&self) -> Option<&str> {
        self.params.get("SignatureNonce").map(String::as_str)
    }
}

/// The complete, signed parameter map of one attempt: action parameters, the common parameters
/// (`AccessKeyId`, `Format`, `SignatureMethod`, `SignatureNonce`, `SignatureVersion`,
/// `Timestamp`, `Version`, optional `SecurityToken`) and finally `Signature`.
pub fn sign_request(
    request: &LiveRequest,
    common: &CommonParams<'_>,
    access_key_secret: &str,
) -> Result<SignedRequest, RequestError> {
    let mut params = request.action_params()?;
    params.insert("AccessKeyId".into(), common.access_key_id.into());
    params.insert("Format".into(), common.format.into());
    params.insert("SignatureMethod".into(), "HMAC-SHA1".into());
    params.insert("SignatureNonce".into(), common.signature_nonce.into());
    params.insert("SignatureVersion".into(), "1.0".into());
    params.insert("Timestamp".into(), format_timestamp(common.timestamp));
    params.insert("Version".into(), LIVE_API_VERSION.into());
    if let Some(token) = common.security_token {
        params.insert("SecurityToken".into(), token.into());
    }
    let method = request.method();
    let signed = sign(method, &params, access_key_secret);
    params.insert("Signature".into(), signed.signature.clone());
    Ok(SignedRequest {
        action: request.action(),
        method,
        params,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use time::macros::datetime;

    const APP: &str = "9qb1abcd";
    const CHANNEL: &str = "room-1001";
    const TASK: &str = "room-1001_main";
    const HOST: &str = "host_u1";
    const GUEST: &str = "guest_u2";
    const STREAM_URL: &str = "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3";

    fn captures() -> serde_json::Value {
        let text = std::fs::read_to_string(crate::vector_path("mpu_requests.json"))
            .expect("read mpu_requests.json");
        serde_json::from_str(&text).expect("parse mpu_requests.json")
    }

    /// The common parameters fixed by the capture (`fixed` in the vector file).
    fn assert_reproduces(request: impl Into<LiveRequest>, group: &str, name: &str) {
        let doc = captures();
        let fixed = &doc["fixed"];
        let nonce = fixed["SignatureNonce"].as_str().expect("fixed nonce");
        assert_eq!(fixed["Timestamp"], "2024-01-02T03:04:05Z");
        let common = CommonParams {
            access_key_id: fixed["AccessKeyId"].as_str().expect("fixed AccessKeyId"),
            timestamp: datetime!(2024-01-02 03:04:05 UTC),
            signature_nonce: nonce,
            security_token: None,
            format: DEFAULT_FORMAT,
        };
        let secret = fixed["AccessKeySecret"].as_str().expect("fixed secret");
        let capture = &doc[group][name];
        let request = request.into();
        let signed = sign_request(&request, &common, secret).expect("sign");
        let expected: BTreeMap<String, String> =
            serde_json::from_value(capture["query_params"].clone()).expect("query_params");
        assert_eq!(signed.params, expected, "{group}.{name}");
        assert_eq!(
            signed.method.as_str(),
            capture["http_method"].as_str().expect("method"),
            "{group}.{name}"
        );
    }

    fn two_pane_transcode() -> TranscodeParams {
        TranscodeParams {
            background: Some(Background {
                render_mode: Some(RenderMode::Crop),
                url: "https://static.example.com/bg-1280x720-0x1E1E1E.png".into(),
            }),
            encode_params: EncodeParams {
                audio_bitrate: Some(64),
                audio_channels: Some(2),
                audio_only: Some(false),
                audio_sample_rate: Some(48000),
                enhanced_param: None,
                video_bitrate: Some(1500),
                video_codec: Some(VideoCodec::H264),
                video_framerate: Some(25),
                video_gop: Some(2),
                video_height: Some(720),
                video_width: Some(1280),
            },
            layout: Some(MixLayout {
                user_panes: vec![
                    UserPane {
                        background_image_url: None,
                        height: Fraction::ONE,
                        render_mode: Some(RenderMode::Crop),
                        user_info: Some(PaneUserInfo::camera(HOST)),
                        width: Fraction::new(0.5).expect("0.5"),
                        x: Fraction::new(0.0).expect("0"),
                        y: Fraction::ZERO,
                        z_order: 0,
                    },
                    UserPane {
                        background_image_url: Some("https://static.example.com/pane-bg.png".into()),
                        height: Fraction::new(1.0).expect("1"),
                        render_mode: Some(RenderMode::Crop),
                        user_info: Some(PaneUserInfo::camera(GUEST)),
                        width: Fraction::HALF,
                        x: Fraction::new(0.5).expect("0.5"),
                        y: Fraction::ZERO,
                        z_order: 0,
                    },
                ],
            }),
            user_infos: vec![UserInfo::camera(HOST), UserInfo::camera(GUEST)],
        }
    }

    #[test]
    fn flow_a_start_single_stream() {
        let req = StartLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Single(SingleSubParams::camera(HOST)),
            output: StreamOutput::Url(STREAM_URL.into()),
            max_idle_time: None,
            region: None,
            sei: None,
        };
        assert_reproduces(req, "flow", "a_start_mixmode0_single_stream");
    }

    #[test]
    fn flow_b_update_to_two_panes() {
        let req = UpdateLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Transcode(two_pane_transcode()),
            output: None,
            sei: None,
        };
        assert_reproduces(req, "flow", "b_update_mixmode1_two_panes");
    }

    #[test]
    fn flow_c_update_back_to_single() {
        let req = UpdateLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Single(SingleSubParams::camera(HOST)),
            output: None,
            sei: None,
        };
        assert_reproduces(req, "flow", "c_update_back_to_mixmode0");
    }

    #[test]
    fn flow_d_stop() {
        let req = StopLiveMpuTask {
            app_id: APP.into(),
            task_id: TASK.into(),
        };
        assert_reproduces(req, "flow", "d_stop");
    }

    #[test]
    fn start_in_mixing_mode_with_idle_time_and_region() {
        let req = StartLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Transcode(two_pane_transcode()),
            output: StreamOutput::Url(STREAM_URL.into()),
            max_idle_time: Some(120),
            region: Some("CN-Shanghai".parse().expect("known region")),
            sei: None,
        };
        assert_reproduces(
            req,
            "other_operations",
            "start_mixmode1_with_maxidletime_region",
        );
    }

    #[test]
    fn list_task_detail_by_task_id() {
        let req = ListRtcMpuTaskDetail {
            app_id: APP.into(),
            selector: TaskSelector::Task(TASK.into()),
        };
        assert_reproduces(req, "other_operations", "list_rtc_mputask_detail_by_taskid");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn create_event_sub_for_channel_users() {
        let req = CreateEventSub {
            app_id: APP.into(),
            callback_url: "https://api.example.com/artc/events".into(),
            events: vec![EventKind::ChannelEvent, EventKind::UserEvent],
            channel_id: Some(CHANNEL.into()),
            users: vec![HOST.into(), GUEST.into()],
        };
        assert_reproduces(req, "other_operations", "create_event_sub_channel_users");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn create_event_sub_for_all_channels() {
        let req = CreateEventSub {
            app_id: APP.into(),
            callback_url: "https://api.example.com/artc/events".into(),
            events: vec![EventKind::ChannelEvent, EventKind::UserEvent],
            channel_id: None,
            users: vec![],
        };
        assert_reproduces(req, "other_operations", "create_event_sub_all_channels");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn delete_event_sub() {
        let req = DeleteEventSub {
            app_id: APP.into(),
            subscribe_id: "sub-123".into(),
        };
        assert_reproduces(req, "other_operations", "delete_event_sub");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn list_event_sub_is_a_get() {
        let req = ListEventSub { app_id: APP.into() };
        assert_reproduces(req, "other_operations", "list_event_sub");
    }

    #[test]
    fn security_token_is_sent_and_signed() {
        let req: LiveRequest = StopLiveMpuTask {
            app_id: APP.into(),
            task_id: TASK.into(),
        }
        .into();
        let common = CommonParams {
            access_key_id: "testid",
            timestamp: datetime!(2024-01-02 03:04:05 UTC),
            signature_nonce: "n",
            security_token: Some("CAIS+sts/token=="),
            format: DEFAULT_FORMAT,
        };
        let signed = sign_request(&req, &common, "testsecret").expect("sign");
        assert_eq!(signed.params["SecurityToken"], "CAIS+sts/token==");
        assert!(signed
            .signed
            .canonicalized_query_string
            .contains("SecurityToken=CAIS%2Bsts%2Ftoken%3D%3D"));
        assert!(!format!("{common:?}").contains("CAIS"));
    }

    #[cfg(feature = "ops")]
    #[test]
    fn set_notify_url_with_a_key_sends_exactly_these_params() {
        let key = NotifyAuthKey::new(SecretString::from("NotifyKey0123456789")).expect("valid");
        let req: LiveRequest = SetLiveStreamsNotifyUrlConfig {
            domain_name: "push.example.com".into(),
            notify_url: "https://api.example.com/cdn/ingest?x=1".into(),
            notify_auth_key: Some(key),
        }
        .into();
        assert_eq!(req.action(), "SetLiveStreamsNotifyUrlConfig");
        assert_eq!(req.method(), Method::Post);
        let expected: BTreeMap<String, String> = [
            ("Action", "SetLiveStreamsNotifyUrlConfig"),
            ("DomainName", "push.example.com"),
            ("NotifyAuthKey", "NotifyKey0123456789"),
            ("NotifyReqAuth", "yes"),
            ("NotifyUrl", "https://api.example.com/cdn/ingest?x=1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(req.action_params().expect("params"), expected);
        let shown = format!("{req:?} {req:#?}");
        assert!(!shown.contains("NotifyKey0123456789"), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn set_notify_url_without_a_key_says_no_explicitly() {
        let req: LiveRequest = SetLiveStreamsNotifyUrlConfig {
            domain_name: "push.example.com".into(),
            notify_url: "https://api.example.com/cdn/ingest".into(),
            notify_auth_key: None,
        }
        .into();
        let params = req.action_params().expect("params");
        assert_eq!(
            params.keys().map(String::as_str).collect::<Vec<_>>(),
            ["Action", "DomainName", "NotifyReqAuth", "NotifyUrl"]
        );
        assert_eq!(params["NotifyReqAuth"], "no");
    }

    #[cfg(feature = "ops")]
    #[test]
    fn notify_auth_key_is_16_to_64_letters_and_digits() {
        let key = |s: &str| NotifyAuthKey::new(SecretString::from(s.to_owned()));
        assert!(key(&"a".repeat(16)).is_ok());
        assert!(key(&"Z9".repeat(32)).is_ok());
        assert_eq!(
            key(&"a".repeat(15)).expect_err("short"),
            NotifyAuthKeyError::Length(15)
        );
        assert_eq!(
            key(&"a".repeat(65)).expect_err("long"),
            NotifyAuthKeyError::Length(65)
        );
        for bad in ["0123456789abcde-", "0123456789abcdé0", "0123456789 abcde"] {
            let err = key(bad).expect_err("charset");
            assert!(!err.to_string().contains(bad), "{err}");
        }
        assert_eq!(key(&"k".repeat(20)), key(&"k".repeat(20)));
        assert_ne!(key(&"k".repeat(20)), key(&"j".repeat(20)));
    }

    #[cfg(feature = "ops")]
    #[test]
    fn signed_request_debug_redacts_token_and_notify_key() {
        let req: LiveRequest = SetLiveStreamsNotifyUrlConfig {
            domain_name: "push.example.com".into(),
            notify_url: "https://api.example.com/cdn/ingest".into(),
            notify_auth_key: Some(
                NotifyAuthKey::new(SecretString::from("SecretNotifyKey2024")).expect("valid"),
            ),
        }
        .into();
        let common = CommonParams {
            access_key_id: "testid",
            timestamp: datetime!(2024-01-02 03:04:05 UTC),
            signature_nonce: "n",
            security_token: Some("StsTokenValue"),
            format: DEFAULT_FORMAT,
        };
        let signed = sign_request(&req, &common, "testsecret").expect("sign");
        assert_eq!(signed.params["NotifyAuthKey"], "SecretNotifyKey2024");
        let shown = format!("{signed:?}");
        assert!(shown.contains("push.example.com"), "{shown}");
        for secret in ["SecretNotifyKey2024", "StsTokenValue", "testsecret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn encoded_params_end_with_the_encoded_signature() {
        let req: LiveRequest = StopLiveMpuTask {
            app_id: APP.into(),
            task_id: TASK.into(),
        }
        .into();
        let common = CommonParams {
            access_key_id: "testid",
            timestamp: datetime!(2024-01-02 03:04:05 UTC),
            signature_nonce: "1e85ee2a97c9a3dd8da9578cd3480e0a",
            security_token: None,
            format: "JSON",
        };
        let signed = sign_request(&req, &common, "testsecret").expect("sign");
        // Same parameters as the pop-core POST capture: the body must be byte-identical.
        let capture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(crate::vector_path("popcore_post_capture.json"))
                .expect("read popcore_post_capture.json"),
        )
        .expect("parse popcore capture");
        assert_eq!(
            signed.encoded_params(),
            capture["body"].as_str().expect("body")
        );
    }

    #[test]
    fn fractions_print_like_the_sdk_callers() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (0.5, "0.5"),
            (0.2516, "0.2516"),
            (0.0021, "0.0021"),
        ];
        for (v, s) in cases {
            assert_eq!(Fraction::new(v).expect("in range").to_string(), s);
        }
        for bad in [f64::NAN, f64::INFINITY, -0.1, 1.0001] {
            assert!(Fraction::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn update_drops_sei_payload_type_but_start_keeps_it() {
        let sei = SeiParams {
            layout_volume: Some(SeiLayoutVolume {
                follow_idr: Some(true),
                interval_ms: Some(1000),
            }),
            pass_through: None,
            payload_type: Some(100),
        };
        let update: LiveRequest = UpdateLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Single(SingleSubParams::camera(HOST)),
            output: None,
            sei: Some(sei.clone()),
        }
        .into();
        let start: LiveRequest = StartLiveMpuTask {
            app_id: APP.into(),
            channel_id: CHANNEL.into(),
            task_id: TASK.into(),
            mix: Mix::Single(SingleSubParams::camera(HOST)),
            output: StreamOutput::Multi(vec![MultiStreamUrl {
                is_ali_cdn: false,
                url: "rtmp://a/b/c".into(),
            }]),
            max_idle_time: None,
            region: None,
            sei: Some(sei),
        }
        .into();
        let up = update.action_params().expect("update params");
        assert_eq!(
            up["SeiParams"],
            r#"{"LayoutVolume":{"FollowIdr":"1","Interval":"1000"}}"#
        );
        let st = start.action_params().expect("start params");
        assert_eq!(
            st["SeiParams"],
            r#"{"LayoutVolume":{"FollowIdr":"1","Interval":"1000"},"PayloadType":"100"}"#
        );
        assert_eq!(
            st["MultiStreamURL"],
            r#"[{"IsAliCdn":false,"URL":"rtmp://a/b/c"}]"#
        );
        assert!(!st.contains_key("StreamURL"));
    }

    /// Visits a JSON document in *document* order (independent of serde_json's map features) and
    /// fails if any object's keys are not strictly ascending in byte order.
    struct SortedKeys;

    impl<'de> de::Deserialize<'de> for SortedKeys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(SortedKeysVisitor)
        }
    }

    struct SortedKeysVisitor;

    impl<'de> Visitor<'de> for SortedKeysVisitor {
        type Value = SortedKeys;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SortedKeys, A::Error> {
            let mut previous: Option<String> = None;
            while let Some(key) = map.next_key::<String>()? {
                if let Some(p) = &previous {
                    if p.as_str() >= key.as_str() {
                        return Err(de::Error::custom(format!("key {key} after {p}")));
                    }
                }
                map.next_value::<SortedKeys>()?;
                previous = Some(key);
            }
            Ok(SortedKeys)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SortedKeys, A::Error> {
            while seq.next_element::<SortedKeys>()?.is_some() {}
            Ok(SortedKeys)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<SortedKeys, E> {
            Ok(SortedKeys)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<SortedKeys, E> {
            Err(E::custom("numbers must be strings on the wire"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<SortedKeys, E> {
            Err(E::custom("numbers must be strings on the wire"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<SortedKeys, E> {
            Err(E::custom("numbers must be strings on the wire"))
        }
    }

    #[test]
    fn every_field_of_every_nested_param_is_in_alphabetical_order() {
        let mut full = two_pane_transcode();
        full.encode_params.enhanced_param = Some(r#"{"profile":"high"}"#.into());
        full.encode_params.video_codec = Some(VideoCodec::H265);
        full.user_infos[0].channel_id = Some("other-room".into());
        full.user_infos[0].stream_type = Some(StreamType::VideoOnly);
        full.user_infos[1].source_type = Some(SourceType::ShareScreen);
        if let Some(layout) = &mut full.layout {
            layout.user_panes[0].render_mode = Some(RenderMode::Fit);
            if let Some(info) = &mut layout.user_panes[0].user_info {
                info.channel_id = Some("other-room".into());
            }
        }
        let sei = SeiParams {
            layout_volume: Some(SeiLayoutVolume {
                follow_idr: Some(false),
                interval_ms: Some(2000),
            }),
            pass_through: Some(SeiPassThrough {
                follow_idr: Some(true),
                interval_ms: Some(1000),
                payload_content: Some("hi".into()),
                payload_content_key: Some("udd".into()),
            }),
            payload_type: Some(200),
        };
        let docs = [
            serde_json::to_string(&full).expect("transcode"),
            serde_json::to_string(&SingleSubParams::camera("u")).expect("single"),
            serde_json::to_string(&sei).expect("sei"),
            serde_json::to_string(&[MultiStreamUrl {
                is_ali_cdn: true,
                url: "rtmp://x/y/z".into(),
            }])
            .expect("multi"),
        ];
        for doc in docs {
            serde_json::from_str::<SortedKeys>(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
        }
    }
}
