//! The decision: what the bypass task should be, and the one MPU command that moves what runs
//! towards it.
//!
//! Level-triggered: the command is computed from the full target and the full running task (the shell's record), never
//! from the event that just arrived. A retry, a duplicate or any later event therefore re-derives
//! the same command until the task matches, and a lost or reordered callback cannot leave a stale
//! layout behind once any newer state is decided.

use serde::{Deserialize, Serialize};

use crate::config::DecisionConfig;
use crate::facts::Facts;
use crate::ids::UserId;
use crate::ids::{TaskId, Timestamp};
use crate::layout::{layout, pk_layout, screen_layout, Layout, LayoutSpec};
use crate::output::Outputs;
use crate::record::Record;
use crate::settings::RoomSettings;
use crate::stage::{Broadcast, Stage};

/// Alibaba's `MixMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MixMode {
    /// `0`: the host's stream forwarded as is.
    Single,
    /// `1`: several streams mixed and transcoded with a layout.
    Mixed,
}

impl MixMode {
    pub fn code(self) -> u8 {
        match self {
            MixMode::Single => 0,
            MixMode::Mixed => 1,
        }
    }
}

/// What a running task does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shape {
    /// MixMode 0: forward `user`'s stream.
    Single { user: UserId },
    /// MixMode 1: mix the panes of `layout`.
    Mixed { layout: Layout },
    /// A voice room's MixMode 0: forward `user`'s audio only.
    Voice { user: UserId },
    /// A voice room's MixMode 1: mix the audio of `users` (no layout, no video).
    VoiceMix { users: Vec<UserId> },
}

impl Shape {
    pub fn mix_mode(&self) -> MixMode {
        match self {
            Shape::Single { .. } | Shape::Voice { .. } => MixMode::Single,
            Shape::Mixed { .. } | Shape::VoiceMix { .. } => MixMode::Mixed,
        }
    }
}

/// The bypass task of a room: none, or one task with a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Target {
    #[default]
    Off,
    On {
        task: TaskId,
        shape: Shape,
        /// Restreaming targets besides the room's own CDN stream.
        #[serde(default, skip_serializing_if = "Outputs::is_empty")]
        outputs: Outputs,
    },
}

impl Target {
    pub fn task(&self) -> Option<&TaskId> {
        match self {
            Target::Off => None,
            Target::On { task, .. } => Some(task),
        }
    }
    pub fn mix_mode(&self) -> Option<MixMode> {
        match self {
            Target::Off => None,
            Target::On { shape, .. } => Some(shape.mix_mode()),
        }
    }
}

/// One MPU call. Each is idempotent by `TaskId` (see the Alibaba adapter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Start {
        task: TaskId,
        shape: Shape,
        #[serde(default, skip_serializing_if = "Outputs::is_empty")]
        outputs: Outputs,
    },
    Update {
        task: TaskId,
        shape: Shape,
        #[serde(default, skip_serializing_if = "Outputs::is_empty")]
        outputs: Outputs,
        /// The outputs differ from the running task's: the Update carries the complete output
        /// list (otherwise it leaves the task's outputs as they are).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        set_outputs: bool,
    },
    Stop {
        task: TaskId,
    },
}

impl Command {
    pub fn task(&self) -> &TaskId {
        match self {
            Command::Start { task, .. } | Command::Update { task, .. } | Command::Stop { task } => {
                task
            }
        }
    }

    /// What the task is once this command succeeded.
    pub fn result(&self) -> Target {
        match self {
            Command::Start {
                task,
                shape,
                outputs,
            }
            | Command::Update {
                task,
                shape,
                outputs,
                ..
            } => Target::On {
                task: task.clone(),
                shape: shape.clone(),
                outputs: outputs.clone(),
            },
            Command::Stop { .. } => Target::Off,
        }
    }

    /// Stable name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start { .. } => "start",
            Command::Update { .. } => "update",
            Command::Stop { .. } => "stop",
        }
    }
}

/// The target of a room under `cfg`.
///
/// The facts say who is on stage; the record matters only for the task's name: a running task
/// that belongs to the live broadcast keeps its name (see [`running_task_of`]).
/// The room's live stage under `cfg` and its own settings: none without a broadcast (or, in
/// strict mode, without a registered host); every speaker in a voice room (a pane limit is
/// about pictures), else at most the room's `max_panes`.
pub fn live_stage(facts: &Facts, cfg: &DecisionConfig) -> Option<Stage> {
    let cfg = facts.config(cfg);
    if cfg.require_registered_host && facts.registered_host().is_none() {
        return None;
    }
    let voice = facts.settings().is_some_and(|s| s.settings.audio_only());
    let limit = if voice {
        crate::facts::MAX_MEMBERS
    } else {
        cfg.max_panes
    };
    facts.stage(limit, cfg.end_grace_secs)
}

pub fn target(facts: &Facts, record: &Record, cfg: &DecisionConfig) -> Target {
    let Some(stage) = live_stage(facts, cfg) else {
        return Target::Off;
    };
    // The room's own settings over the deployment's.
    let cfg = &facts.config(cfg);
    let settings = facts.settings().map(|s| &s.settings);
    let voice = settings.is_some_and(RoomSettings::audio_only);
    let task = task_of(facts, record, &stage.broadcast, cfg.end_grace_secs);
    let shape = if voice && stage.on_stage.len() == 1 {
        Shape::Voice {
            user: stage.broadcast.host,
        }
    } else if voice {
        Shape::VoiceMix {
            users: stage.on_stage.clone(),
        }
    } else {
        picture(facts, &stage, cfg, settings)
    };
    Target::On {
        task,
        shape,
        outputs: settings
            .map(RoomSettings::extra_outputs)
            .unwrap_or_default(),
    }
}

/// The shape of a room with video: the host alone is relayed (MixMode 0); otherwise a layout.
///
/// - With `screen_share` naming a user on stage, that user's screen is the main picture: alone
///   (the host sharing with nobody else on stage), the screen fills the canvas and the host is
///   heard; with co-hosts, every camera becomes a tile above it (see [`screen_layout`]). This is
///   a MixMode 1 task even for the host alone: a MixMode 0 relay of a screen track
///   (`StreamType` 2) carries no audio (spec §9.3).
/// - With `hide_camera_off`, co-hosts whose camera is off have no pane and are mixed as audio
///   only; the host always keeps a pane.
/// - In a PK the host shares the picture with the peer room's host (see [`pk_layout`]); screen
///   share and hidden cameras don't apply then.
fn picture(
    facts: &Facts,
    stage: &Stage,
    cfg: &DecisionConfig,
    settings: Option<&RoomSettings>,
) -> Shape {
    let host = &stage.broadcast.host;
    let spec = LayoutSpec {
        canvas: cfg.canvas,
        style: cfg.style,
        render_mode: cfg.render_mode,
        placeholder: cfg.pane_placeholder.as_ref(),
    };
    if let Some(pk) = facts.pk(cfg.end_grace_secs) {
        let mut layout = pk_layout(&spec, host, (&pk.peer, &pk.peer_host), &stage.on_stage[1..]);
        layout.background = cfg.background_image.clone();
        return Shape::Mixed { layout };
    }
    let sharer = settings
        .and_then(RoomSettings::screen_sharer)
        .filter(|u| stage.on_stage.contains(u));
    let hide = settings.is_some_and(RoomSettings::hide_camera_off);
    let (shown, heard): (Vec<UserId>, Vec<UserId>) = stage
        .on_stage
        .iter()
        .cloned()
        .partition(|u| u == host || !hide || !facts.camera_off(u));
    if sharer.is_none() && shown.len() == 1 && heard.is_empty() {
        return Shape::Single { user: host.clone() };
    }
    let mut layout = match &sharer {
        Some(sharer) if stage.on_stage.len() == 1 => screen_layout(&spec, sharer, &[]),
        Some(sharer) => screen_layout(&spec, sharer, &shown),
        None => layout(&spec, &shown),
    };
    layout.background = cfg.background_image.clone();
    layout.audio = heard;
    Shape::Mixed { layout }
}

/// The task of the live broadcast: the running one if it belongs to it, else the one named for
/// the broadcast's start. The one rule for the task's name (the target and the CDN heal use it).
pub(crate) fn task_of(facts: &Facts, record: &Record, broadcast: &Broadcast, grace: u64) -> TaskId {
    running_task_of(facts, record, broadcast, grace)
        .unwrap_or_else(|| TaskId::for_broadcast(facts.channel(), broadcast.started))
}

/// The task that runs now, if it belongs to the live broadcast: a running task of a live
/// broadcast is never stopped or renamed because of a late event (a Stop and a Start is ≥ 10 s
/// of black for every viewer). It belongs if it was started during the broadcast (a late event
/// revealed an earlier start), or if it started earlier and the host has been in the channel
/// without a break since then (the room keeps a bounded history, so after many reconnects or
/// camera toggles the earliest publish of a long broadcast can drop out of the facts).
fn running_task_of(
    facts: &Facts,
    record: &Record,
    broadcast: &Broadcast,
    grace: u64,
) -> Option<TaskId> {
    let task = record.running().task()?;
    let (_, secs) = task.as_str().rsplit_once('_')?;
    let since = Timestamp::from_secs(secs.parse().ok()?);
    let ours = TaskId::for_broadcast(facts.channel(), since) == *task;
    // Started during this broadcast (the broadcast has been live without a break since it began,
    // so a task named for any later second was started while it ran — e.g. before a late event
    // revealed an earlier start); or started earlier and the host has been there ever since.
    let during = since >= broadcast.started;
    let before =
        since < broadcast.started && facts.host_continuously_since(&broadcast.host, since, grace);
    (ours && (during || before)).then(|| task.clone())
}

/// The next command that moves the running task towards `target`, or `None` when they are equal.
///
/// A different task id (a new broadcast) is reached in two steps, Stop then Start, so that one
/// call never leaves two tasks pushing to the room's one stream URL.
pub fn next_command(running: &Target, target: &Target) -> Option<Command> {
    match (running, target) {
        (Target::Off, Target::Off) => None,
        (Target::On { task, .. }, Target::Off) => Some(Command::Stop { task: task.clone() }),
        (
            Target::Off,
            Target::On {
                task,
                shape,
                outputs,
            },
        ) => Some(Command::Start {
            task: task.clone(),
            shape: shape.clone(),
            outputs: outputs.clone(),
        }),
        (Target::On { task: running, .. }, Target::On { task, .. }) if running != task => {
            Some(Command::Stop {
                task: running.clone(),
            })
        }
        (
            Target::On {
                shape: now,
                outputs: now_outputs,
                ..
            },
            Target::On {
                task,
                shape,
                outputs,
            },
        ) => (now != shape || now_outputs != outputs).then(|| Command::Update {
            task: task.clone(),
            shape: shape.clone(),
            outputs: outputs.clone(),
            set_outputs: now_outputs != outputs,
        }),
    }
}

/// The target and the next command for a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub target: Target,
    pub command: Option<Command>,
}

pub fn decide(facts: &Facts, record: &Record, cfg: &DecisionConfig) -> Decision {
    let target = target(facts, record, cfg);
    let command = next_command(record.running(), &target).or_else(|| match &target {
        // The task looks right but the CDN lost its stream: Start it again (Start of an existing
        // task becomes an Update; of a vanished one, a new task).
        // Or the last call is unconfirmed: re-assert the target (idempotent upsert).
        Target::On {
            task,
            shape,
            outputs,
        } if record.needs_heal() || record.is_in_doubt() => Some(Command::Start {
            task: task.clone(),
            shape: shape.clone(),
            outputs: outputs.clone(),
        }),
        _ => None,
    });
    Decision { target, command }
}
