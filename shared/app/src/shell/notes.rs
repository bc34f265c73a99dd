//! The room's history: each MPU call in a few words (what led to it, what it was, how it
//! ended), kept by the store in a small ring of items.

use costream_core::{CdnAction, Command, Role, RoomEvent, Shape, UserAction};

use super::Shell;
use crate::metrics;
use crate::ports::{Clock, MpuDone, MpuFailure, MpuPort, RoomKey, StateStore};
use crate::store::HistoryEntry;

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Counts an MPU call; its entry for the room's history.
    pub(super) fn note(
        &self,
        version: u64,
        trigger: &str,
        command: &Command,
        done: &Result<MpuDone, MpuFailure>,
    ) -> HistoryEntry {
        let (outcome_metric, outcome) = match done {
            Ok(MpuDone::Done { .. }) => ("ok", "ok".to_owned()),
            Ok(MpuDone::TaskMissing) => ("task_missing", "task missing".to_owned()),
            Err(f) if f.is_definite() => ("refused", format!("refused: {}", f.reason)),
            Err(f) => ("in_doubt", format!("in doubt: {}", f.reason)),
        };
        if let Some(name) = metrics::mpu_metric(command.name(), outcome_metric) {
            metrics::count(name);
        }
        HistoryEntry {
            version,
            at_ms: self.clock.now_ms(),
            trigger: trigger.to_owned(),
            command: describe_command(command),
            outcome,
        }
    }

    /// Adds a call's entry to the room's history on its own (when no record write carried it).
    /// Best effort: a history write that fails is logged, never fails the handler.
    pub(super) async fn keep_note(&self, key: &RoomKey, entry: &HistoryEntry) {
        if let Err(e) = self.store.append_history(key, entry).await {
            tracing::warn!(error = %e, "could not write the room's history");
        }
    }
}

/// The events of a callback in a few words, for the room's history.
pub fn describe(events: &[RoomEvent]) -> String {
    let parts: Vec<String> = events
        .iter()
        .map(|e| match e {
            RoomEvent::User(u) => {
                let action = match u.action {
                    UserAction::Join => "join",
                    UserAction::Publish => "publish",
                    UserAction::Unpublish => "unpublish",
                    UserAction::Leave => "leave",
                    UserAction::RoleUpdate(Role::Interactive) => "role interactive",
                    UserAction::RoleUpdate(Role::Live) => "role live",
                };
                format!("{action} {} @{}", u.user, u.at.secs())
            }
            RoomEvent::ChannelClosed { at } => format!("channel closed @{}", at.secs()),
            RoomEvent::Cdn { action, at } => format!(
                "cdn {} @{}",
                match action {
                    CdnAction::Publish => "publish",
                    CdnAction::PublishDone => "publish_done",
                },
                at.secs()
            ),
            RoomEvent::Settings { at, .. } => format!("settings @{}", at.secs()),
            RoomEvent::Pk { link, at } => match link {
                Some(l) => format!("pk with {} @{}", l.peer, at.secs()),
                None => format!("pk ended @{}", at.secs()),
            },
            RoomEvent::Camera { user, on, at, .. } => format!(
                "camera {} {user} @{}",
                if *on { "on" } else { "off" },
                at.secs()
            ),
            RoomEvent::HostRegistered { user, at } => format!(
                "host {} @{}",
                user.as_ref().map_or("cleared", |u| u.as_str()),
                at.secs()
            ),
        })
        .collect();
    parts.join(", ")
}

/// A command in a few words: `update room-1_1700000000 mix_mode=1 users=[host,u2]`.
pub fn describe_command(command: &Command) -> String {
    let shape = |shape: &Shape| match shape {
        Shape::Single { user } => format!("mix_mode=0 users=[{user}]"),
        Shape::Voice { user } => format!("mix_mode=0 audio users=[{user}]"),
        Shape::VoiceMix { users } => format!(
            "mix_mode=1 audio users=[{}]",
            users
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Shape::Mixed { layout } => format!(
            "mix_mode=1 users=[{}]{}",
            layout
                .users()
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(","),
            layout
                .panes
                .iter()
                .find(|p| p.source == costream_core::Source::Screen)
                .map(|p| format!(" screen={}", p.user))
                .unwrap_or_default()
        ),
    };
    // Restreaming targets are named by their masked form only (they carry stream keys).
    let outputs = |o: &costream_core::Outputs| {
        if o.is_empty() {
            String::new()
        } else {
            format!(
                " outputs=[{}]",
                o.urls()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    };
    match command {
        Command::Start {
            task,
            shape: s,
            outputs: o,
        } => format!("start {task} {}{}", shape(s), outputs(o)),
        Command::Update {
            task,
            shape: s,
            outputs: o,
            set_outputs,
        } => format!(
            "update {task} {}{}",
            shape(s),
            if *set_outputs {
                outputs(o)
            } else {
                String::new()
            }
        ),
        Command::Stop { task } => format!("stop {task}"),
    }
}
