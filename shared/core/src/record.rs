//! The shell's record: what it has *done* about a room, as opposed to the [`Facts`] the callbacks
//! told it. Facts merge in any order; the record is written only by the one lease holder, after an
//! MPU call answered, so it needs no merge rule.

use serde::{Deserialize, Serialize};

use crate::decide::{Command, Target};
use crate::event::{CdnAction, RoomEvent};
use crate::facts::{Facts, Merge};

/// What the shell has applied to the Live API for one room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Record {
    /// The task as the Live API last confirmed it.
    running: Target,
    /// The CDN lost the stream of the running task while the room still broadcasts: re-issue the
    /// (idempotent) Start once. Cleared when the next call is recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    heal: bool,
    /// A call was begun and not confirmed (its answer was lost, it timed out, or its caller
    /// died): `running` is what it would have made the task, and the next decision re-asserts
    /// the target with an idempotent call instead of trusting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    doubt: bool,
}

impl Record {
    /// A record of `running`, with or without a pending heal (tests, migrations).
    pub fn new(running: Target, heal: bool) -> Self {
        Record {
            running,
            heal,
            doubt: false,
        }
    }

    /// A record whose last call is unconfirmed (tests).
    pub fn in_doubt(running: Target) -> Self {
        Record {
            running,
            heal: false,
            doubt: true,
        }
    }

    /// Whether the last call was begun and never confirmed.
    pub fn is_in_doubt(&self) -> bool {
        self.doubt
    }

    /// Written with the lease, *before* the call: until [`Record::confirm`], the task is taken to
    /// be what `command` would make it (a Start or Update may have landed; a Stop may not have),
    /// and in doubt. So a caller that dies mid-call, or a call whose answer is lost, leaves a
    /// record from which the next decision re-asserts the target idempotently — never a task
    /// nobody knows about.
    pub fn begin(&mut self, command: &Command) {
        match command {
            Command::Start { .. } | Command::Update { .. } => self.running = command.result(),
            // The task may still run: keep it, so the next decision stops it again if needed.
            Command::Stop { .. } => {}
        }
        self.doubt = true;
    }

    /// The Live API shows the task otherwise than recorded (the repair loop's sweep found other
    /// users or another mode): the next decision re-asserts the target, as after an
    /// unconfirmed call.
    pub fn distrust(&mut self) {
        self.doubt = true;
    }

    /// The task as the Live API last confirmed it.
    pub fn running(&self) -> &Target {
        &self.running
    }

    /// Whether the running task should be re-started (see [`CdnAction::PublishDone`]).
    pub fn needs_heal(&self) -> bool {
        self.heal
    }

    /// Records what the task now is, after the call that made it so succeeded.
    pub fn confirm(&mut self, running: Target) {
        self.running = running;
        self.heal = false;
        self.doubt = false;
    }

    /// Notes what a newly merged event means for the running task: a CDN `publish_done` newer than
    /// anything known, while the running task is the one the broadcast wants, asks for a heal.
    /// Only for that task: a different (older) task still needs its Stop, not a restart.
    /// A newer `publish` (the stream is back, e.g. a reconnect within the second) cancels it.
    pub fn observe(&mut self, facts: &Facts, event: &RoomEvent, merge: Merge, grace: u64) {
        let RoomEvent::Cdn { action, .. } = event else {
            return;
        };
        if merge != Merge::Changed {
            return;
        }
        if *action == CdnAction::Publish {
            self.heal = false;
            return;
        }
        // The task the broadcast wants, by the same naming rule as the target (a running task
        // of the broadcast keeps its name even when its start is no longer the broadcast's).
        let wanted = facts
            .broadcast(grace)
            .map(|b| crate::decide::task_of(facts, self, &b, grace));
        if wanted.is_some() && wanted.as_ref() == self.running.task() {
            self.heal = true;
        }
    }
}

/// Merges `event` into `facts` and lets `record` observe it: what the shell does per event.
/// `cfg` supplies the end grace the broadcast is judged with.
pub fn apply(
    facts: &mut Facts,
    record: &mut Record,
    event: &RoomEvent,
    cfg: &crate::config::DecisionConfig,
) -> Merge {
    let merge = facts.apply(event);
    record.observe(facts, event, merge, cfg.end_grace_secs);
    merge
}
