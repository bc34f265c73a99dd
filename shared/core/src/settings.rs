//! Per-room settings from the app's backend (`PUT /rooms/{channelId}/settings`): a room fact
//! with a timestamp. The newest settings win as a whole (last writer wins, ties broken by
//! content), so they merge in any order like every other fact. A field left out means the
//! deployment's default; a field set to null means "none" where that differs (no background
//! image, no placeholder).

use serde::{Deserialize, Serialize};

use crate::config::DecisionConfig;
use crate::ids::{Timestamp, UserId};
use crate::layout::{Canvas, ImageUrl, LayoutStyle, MAX_PANES};
use crate::output::Outputs;

/// One setting: the deployment's default, explicitly none, or a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum Setting<T> {
    #[default]
    Default,
    Cleared,
    Set(T),
}

impl<T> Setting<T> {
    fn is_default(&self) -> bool {
        matches!(self, Setting::Default)
    }

    /// The value given the deployment's `default`.
    pub fn or(&self, default: Option<T>) -> Option<T>
    where
        T: Clone,
    {
        match self {
            Setting::Default => default,
            Setting::Cleared => None,
            Setting::Set(v) => Some(v.clone()),
        }
    }
}

/// Whose shared screen is the main picture (`screen_share` setting).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScreenShare {
    pub user_id: UserId,
}

/// What the app's backend chose for one room. Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct RoomSettings {
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub layout: Setting<LayoutStyle>,
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub canvas: Setting<Canvas>,
    /// Panes in the mix, host included (1..=16).
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub max_panes: Setting<u8>,
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub background_image_url: Setting<ImageUrl>,
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub placeholder_url: Setting<ImageUrl>,
    /// A voice room: the mix carries audio only (no video is pulled or encoded).
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub audio_only: Setting<bool>,
    /// Restreaming targets the task also pushes to (there is no deployment default).
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub extra_outputs: Setting<Outputs>,
    /// While this user is on stage, their shared screen is the main picture.
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub screen_share: Setting<ScreenShare>,
    /// Co-hosts whose camera is off (`CameraClose`) are heard but get no pane.
    #[serde(default, skip_serializing_if = "Setting::is_default")]
    pub hide_camera_off: Setting<bool>,
}

impl RoomSettings {
    /// Whether the room is a voice room (the deployment's default: no).
    pub fn audio_only(&self) -> bool {
        self.audio_only.or(None).unwrap_or(false)
    }

    /// The room's restreaming targets (none unless set).
    pub fn extra_outputs(&self) -> Outputs {
        self.extra_outputs.or(None).unwrap_or_default()
    }

    /// The user whose screen is the main picture while on stage, if any.
    pub fn screen_sharer(&self) -> Option<UserId> {
        self.screen_share.or(None).map(|s| s.user_id)
    }

    /// Whether co-hosts with their camera off get no pane (the default: they keep one, with
    /// the placeholder image).
    pub fn hide_camera_off(&self) -> bool {
        self.hide_camera_off.or(None).unwrap_or(false)
    }

    /// The decision configuration of a room with these settings, starting from the
    /// deployment's.
    pub fn apply_to(&self, cfg: &DecisionConfig) -> DecisionConfig {
        let mut out = cfg.clone();
        // A layout, canvas or pane limit can't be "none": cleared means the deployment's.
        out.style = self.layout.or(Some(cfg.style)).unwrap_or(cfg.style);
        out.canvas = self.canvas.or(Some(cfg.canvas)).unwrap_or(cfg.canvas);
        out.max_panes = self
            .max_panes
            .or(None)
            .map_or(cfg.max_panes, |n| usize::from(n).clamp(1, MAX_PANES));
        out.background_image = self.background_image_url.or(cfg.background_image.clone());
        out.pane_placeholder = self.placeholder_url.or(cfg.pane_placeholder.clone());
        out
    }
}

/// Settings with the time the backend set them (its signed request's timestamp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampedSettings {
    pub at: Timestamp,
    pub settings: RoomSettings,
}

impl StampedSettings {
    /// Whether `self` wins over `other`: the newer, or at the same second the larger by
    /// content (so the winner does not depend on arrival order).
    pub(crate) fn wins_over(&self, other: &StampedSettings) -> bool {
        (self.at, &self.settings) > (other.at, &other.settings)
    }
}
