//! Settings that shape the decision and the mixed stream. Plain data with defaults; reading them
//! from the environment happens once, at start, in the crate's `config` module.

use crate::layout::{Canvas, ImageUrl, LayoutStyle, RenderMode, MAX_PANES};

/// Video codec of the mixed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    #[default]
    H264,
    H265,
}

/// Encoder settings of the mixed (MixMode 1) stream. Defaults follow the seed guide's encoder
/// configuration: 20 fps, 1200 kbps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeSettings {
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Alibaba's `VideoGop` (1..=60).
    pub gop: u32,
    pub codec: VideoCodec,
    pub audio_sample_rate: u32,
    pub audio_bitrate_kbps: u32,
    pub audio_channels: u32,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            fps: 20,
            bitrate_kbps: 1200,
            gop: 2,
            codec: VideoCodec::H264,
            audio_sample_rate: 48_000,
            audio_bitrate_kbps: 64,
            audio_channels: 2,
        }
    }
}

/// Everything the core needs to turn a room into a target task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionConfig {
    pub canvas: Canvas,
    pub style: LayoutStyle,
    pub render_mode: RenderMode,
    /// Panes in the mix, host included (1..=16). Co-streamers beyond it wait for a free slot.
    pub max_panes: usize,
    /// Whole-canvas background image (Alibaba has no background colour: use a solid image).
    pub background_image: Option<ImageUrl>,
    /// Image shown in a pane (the host's included) while its camera is off.
    pub pane_placeholder: Option<ImageUrl>,
    /// Alibaba `MaxIdleTime` in seconds (10..=86400): the task stops after idling this long. `None`
    /// lets the task stop as soon as the channel closes.
    pub max_idle_time: Option<u32>,
    pub encode: EncodeSettings,
    /// Strict mode: only a host the app's backend registered can start a broadcast (a room
    /// with no registration stays off, whoever publishes).
    pub require_registered_host: bool,
    /// The end grace, in seconds (0..=60): a host back in the channel within this long of
    /// leaving keeps the broadcast (its task, its PK) — a reconnect whose Leave ARTC reports
    /// after the gap — and the shell acts on an event that ends a broadcast only this long
    /// after it committed it (see `Facts::ends_broadcast`).
    pub end_grace_secs: u64,
}

/// The default end grace (`COSTREAM_END_GRACE_SECS`).
pub const DEFAULT_END_GRACE_SECS: u64 = 5;
/// The longest end grace the configuration accepts.
pub const MAX_END_GRACE_SECS: u64 = 60;

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            canvas: Canvas::PORTRAIT_720P,
            style: LayoutStyle::Grid,
            render_mode: RenderMode::Crop,
            max_panes: MAX_PANES,
            background_image: None,
            pane_placeholder: None,
            max_idle_time: None,
            encode: EncodeSettings::default(),
            require_registered_host: false,
            end_grace_secs: DEFAULT_END_GRACE_SECS,
        }
    }
}
