//! The live view of `costream serve` (`GET /_local/view`): every known room as
//! `GET /rooms/{channelId}` shows it, plus the layout the shell last *applied* (the room's
//! record, not what the facts want next), the task id and the last MPU calls.
//!
//! Local only: the view is unsigned and shows signed playback URLs and user ids, so no Lambda
//! function serves it, and `costream serve` only on a loopback address.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{HandlerError, RoomStatus, Services};
use crate::ports::{Clock, MpuPort, RoomKey, StateStore};
use crate::store::HistoryEntry;
use costream_core::{Canvas, ChannelId, Frac, Layout, Shape, Source, Target, UserId};

/// How many of a room's last decisions the view shows.
pub const VIEW_CALLS: usize = 8;

/// At most this many rooms come from each of the store's indexes (due rooms, rooms with tasks).
const VIEW_INDEX_LIMIT: usize = 256;

/// `GET /_local/view`: the known rooms, sorted by channel id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveView {
    pub rooms: Vec<RoomView>,
    /// When the view was read (epoch ms, the services' clock).
    pub generated_at_ms: u64,
}

/// One room of the live view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomView {
    /// Everything `GET /rooms/{channelId}` answers, at the top level.
    #[serde(flatten)]
    pub status: RoomStatus,
    /// The running task's id, `null` when none runs (as last applied).
    pub task: Option<String>,
    /// The task's output as last applied, `null` when no task runs.
    pub layout: Option<LayoutView>,
    /// The room's last decisions (at most [`VIEW_CALLS`]), oldest first.
    pub calls: Vec<HistoryEntry>,
}

/// The output of a room's task. Pane coordinates are exact integers in units of 1/`units` of the
/// canvas (`units` is 10000: `x: 5000` is the middle), as the layout engine computes them; the
/// pixel position is `x * canvas.width / units`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutView {
    /// The task's MixMode: 0 (one user's stream relayed) or 1 (mixed).
    pub mix_mode: u8,
    /// A voice room's task: sound only, so no canvas and no panes.
    pub audio_only: bool,
    /// The output canvas in pixels (`null` for audio-only tasks).
    pub canvas: Option<CanvasView>,
    /// Denominator of the pane coordinates (10000).
    pub units: u16,
    /// The panes, in the layout's order (host first); `z_order` 0 is the bottom layer.
    pub panes: Vec<PaneView>,
    /// The users the task carries (the panes' users, or the voices of an audio-only task).
    pub users: Vec<String>,
    /// Users heard without a pane (co-hosts hidden with their camera off).
    pub audio: Vec<String>,
}

/// A canvas size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CanvasView {
    pub width: u32,
    pub height: u32,
}

/// One pane, in 1/10000 of the canvas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaneView {
    pub user: String,
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub z_order: u8,
    /// `camera`, or `screen` for a shared screen.
    pub source: &'static str,
}

impl From<Canvas> for CanvasView {
    fn from(c: Canvas) -> Self {
        CanvasView {
            width: c.width(),
            height: c.height(),
        }
    }
}

impl LayoutView {
    /// The output of `shape`; `canvas` is the room's configured canvas, which a MixMode 0 relay
    /// fills with its one user.
    pub fn of(shape: &Shape, canvas: Canvas) -> LayoutView {
        let names = |users: &[UserId]| users.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mix_mode = shape.mix_mode().code();
        match shape {
            Shape::Single { user } => LayoutView {
                mix_mode,
                audio_only: false,
                canvas: Some(canvas.into()),
                units: Frac::DENOM,
                panes: vec![PaneView {
                    user: user.to_string(),
                    x: Frac::ZERO.units(),
                    y: Frac::ZERO.units(),
                    width: Frac::ONE.units(),
                    height: Frac::ONE.units(),
                    z_order: 0,
                    source: "camera",
                }],
                users: vec![user.to_string()],
                audio: Vec::new(),
            },
            Shape::Mixed { layout } => Self::mixed(mix_mode, layout),
            Shape::Voice { user } => Self::voice(mix_mode, vec![user.to_string()]),
            Shape::VoiceMix { users } => Self::voice(mix_mode, names(users)),
        }
    }

    fn mixed(mix_mode: u8, layout: &Layout) -> LayoutView {
        LayoutView {
            mix_mode,
            audio_only: false,
            canvas: Some(layout.canvas.into()),
            units: Frac::DENOM,
            panes: layout
                .panes
                .iter()
                .map(|p| PaneView {
                    user: p.user.to_string(),
                    x: p.x.units(),
                    y: p.y.units(),
                    width: p.width.units(),
                    height: p.height.units(),
                    z_order: p.z_order,
                    source: match p.source {
                        Source::Camera => "camera",
                        Source::Screen => "screen",
                    },
                })
                .collect(),
            users: layout.users().iter().map(ToString::to_string).collect(),
            audio: layout.audio.iter().map(ToString::to_string).collect(),
        }
    }

    fn voice(mix_mode: u8, users: Vec<String>) -> LayoutView {
        LayoutView {
            mix_mode,
            audio_only: true,
            canvas: None,
            units: Frac::DENOM,
            panes: Vec::new(),
            users,
            audio: Vec::new(),
        }
    }
}

impl<S: StateStore, M: MpuPort, C: Clock> Services<S, M, C> {
    /// One room of the live view, `None` if the room was never stored (or belongs to another
    /// app). The status is [`Services::room_status`]'s; the layout and task are the record's.
    pub async fn room_view(&self, key: &RoomKey) -> Result<Option<RoomView>, HandlerError> {
        if key.app != self.config.app_id {
            return Ok(None);
        }
        let status = match self.room_status(key.channel.as_str()).await {
            Ok(status) => status,
            Err(HandlerError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(room) = self
            .shell
            .store
            .load(key)
            .await
            .map_err(|e| HandlerError::App(e.into()))?
        else {
            return Ok(None);
        };
        let (task, layout) = match room.record.running() {
            Target::Off => (None, None),
            Target::On { task, shape, .. } => {
                let canvas = room.facts.config(&self.config.decision).canvas;
                (Some(task.to_string()), Some(LayoutView::of(shape, canvas)))
            }
        };
        let mut calls = self.shell.history(key).await.map_err(HandlerError::App)?;
        calls.drain(..calls.len().saturating_sub(VIEW_CALLS));
        Ok(Some(RoomView {
            status,
            task,
            layout,
            calls,
        }))
    }

    /// The live view: the rooms the store indexes (with a task, or due for repair) and the
    /// `seen` channels (those the caller saw in requests), the ones never stored left out.
    pub async fn live_view(
        &self,
        seen: impl IntoIterator<Item = ChannelId>,
    ) -> Result<LiveView, HandlerError> {
        let app = &self.config.app_id;
        let store = &self.shell.store;
        let store_error = |e: crate::ports::StoreError| HandlerError::App(e.into());
        let mut channels: BTreeSet<ChannelId> = seen.into_iter().collect();
        let with_tasks = store.rooms_with_tasks(app).await.map_err(store_error)?;
        channels.extend(
            with_tasks
                .into_iter()
                .take(VIEW_INDEX_LIMIT)
                .map(|(key, _)| key.channel),
        );
        let due = store
            .due_rooms(app, u64::MAX, VIEW_INDEX_LIMIT)
            .await
            .map_err(store_error)?;
        channels.extend(due.into_iter().map(|d| d.key.channel));
        let mut rooms = Vec::with_capacity(channels.len());
        for channel in channels {
            let key = RoomKey {
                app: app.clone(),
                channel,
            };
            if let Some(room) = self.room_view(&key).await? {
                rooms.push(room);
            }
        }
        Ok(LiveView {
            rooms,
            generated_at_ms: self.shell.clock.now_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> UserId {
        UserId::parse(u).expect("user id")
    }

    #[test]
    fn a_relay_fills_the_configured_canvas_and_a_voice_task_has_no_panes() {
        let single = LayoutView::of(&Shape::Single { user: user("h") }, Canvas::LANDSCAPE_720P);
        assert_eq!(
            serde_json::to_value(&single).expect("json"),
            serde_json::json!({
                "mix_mode": 0, "audio_only": false,
                "canvas": {"width": 1280, "height": 720}, "units": 10000,
                "panes": [{"user": "h", "x": 0, "y": 0, "width": 10000, "height": 10000,
                           "z_order": 0, "source": "camera"}],
                "users": ["h"], "audio": [],
            })
        );
        // A shared screen is marked as such; the host is heard once.
        let spec = costream_core::LayoutSpec {
            canvas: Canvas::LANDSCAPE_720P,
            style: costream_core::LayoutStyle::Grid,
            render_mode: costream_core::RenderMode::Crop,
            placeholder: None,
        };
        let mut screen = costream_core::screen_layout(&spec, &user("h"), &[user("h"), user("g")]);
        screen.audio = vec![user("q")];
        let shared = LayoutView::of(&Shape::Mixed { layout: screen }, Canvas::LANDSCAPE_720P);
        let sources: Vec<&str> = shared.panes.iter().map(|p| p.source).collect();
        assert_eq!(sources, ["screen", "camera", "camera"]);
        assert_eq!(shared.users, ["h", "g", "q"]);
        assert_eq!(shared.audio, ["q"]);
        let voices = LayoutView::of(
            &Shape::VoiceMix {
                users: vec![user("h"), user("g")],
            },
            Canvas::PORTRAIT_720P,
        );
        assert!(voices.audio_only && voices.panes.is_empty() && voices.canvas.is_none());
        assert_eq!(
            (voices.mix_mode, voices.users),
            (1, vec!["h".into(), "g".into()])
        );
    }
}
