//! What a write of the shell does, decided without a store: [`plan`] for a commit (a callback's
//! events, events already appended, a repair pass, a sweep finding) and [`plan_record`] for the
//! lease holder's record of a call. Both start from the item as stored (its inbox unfolded), so
//! the webhooks the write means are derived from exactly what it changes; both stamp the write
//! with its id, its time, the item's life and expiry. Pure: unit tests call them without a store.

use costream_core::{decide, ChannelId, Command, DecisionConfig, Record, RoomEvent, Target};

use super::{Finding, Handled, ShellConfig};
use crate::metrics;
use crate::ports::{MpuFailure, MpuFailureKind};
use crate::store::{
    backoff_ms, FoldRules, LastFailure, Life, StoredRoom, Upkeep, DUE_MARGIN_MS, HEAL_SPACING_MS,
};

/// What a commit takes in.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    /// A callback's events, with its de-duplication key as a digest.
    Events {
        key: Option<String>,
        events: &'a [RoomEvent],
    },
    /// The callback's events were committed by an append: fold, and take the lease if a
    /// command waits and nobody holds it.
    Appended,
    /// The repair loop: decide again from what is stored.
    Repair,
    /// An end grace is over: merge the held events (as the repair loop would), starting from
    /// this process's copy of the room when it has one.
    GraceOver,
    /// What the leak sweep found about the recorded task.
    Finding(&'a Finding),
}

/// Who writes: the invocation (named in a lease it takes) and this write's id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writer<'a> {
    pub owner: &'a str,
    pub wid: &'a str,
}

/// The configuration a plan reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub decision: &'a DecisionConfig,
    pub config: &'a ShellConfig,
}

impl Ctx<'_> {
    pub fn rules(&self) -> FoldRules<'_> {
        FoldRules {
            decision: self.decision,
            dedupe_secs: self.config.dedupe_secs,
            dedupe_cap: self.config.dedupe_cap,
        }
    }
}

/// What a commit writes, and what the committer does next.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The room to write: `base` folded, the input taken in, stamped, marked, with the lease
    /// and the command's intent when this writer calls.
    pub room: StoredRoom,
    /// Whether there is anything to write at all.
    pub write: bool,
    /// The command this writer makes after its write lands (it took the lease in `room`).
    pub command: Option<Command>,
    /// The record before the command's intent (restored if the call is refused).
    pub prior: Record,
    /// What the handler answers once the write landed (or at once, with nothing to write),
    /// when it makes no call.
    pub outcome: Handled,
    /// The Start is counted against the app's cap in this write (the cap).
    pub count_start: Option<u32>,
    /// The room's PK ended (its broadcast ended): the peer whose link ends in the same write.
    pub ends_pk: Option<ChannelId>,
    /// The app's start cap refused this commit's Start: committed with the refusal.
    pub refused: Option<MpuFailure>,
    /// The decided target (logs).
    pub target: Target,
}

/// Plans a commit of `input` on `base` (the item as stored, or a new room) at `now_ms`.
/// `capped`: the app's start cap refused the Start of an earlier attempt of this commit.
pub(crate) fn plan(
    base: &StoredRoom,
    input: &Input<'_>,
    now_ms: u64,
    who: Writer<'_>,
    capped: Option<&MpuFailure>,
    ctx: Ctx<'_>,
) -> Plan {
    let rules = ctx.rules();
    let mut room = base.clone();
    // Free when absent or expired — never "ours, so free" (see `StoredRoom::lease_free`).
    let lease_free = room.lease_free(now_ms);
    // What waits in the inbox, and the held events whose grace is over.
    let folded = room.fold(now_ms, &rules);
    let (mut duplicate, mut changed) = (false, false);
    match input {
        Input::Events { key, events } => {
            let admitted = room.admit(key.as_deref(), events, now_ms, now_ms, &rules);
            duplicate = admitted.duplicate;
            changed = admitted.changed;
            if admitted.beyond_horizon > 0 {
                tracing::warn!(
                    counter = "events_beyond_horizon",
                    events = admitted.beyond_horizon,
                    "event of a forgotten user older than the room's horizon: ignored"
                );
            }
        }
        Input::Appended | Input::Repair | Input::GraceOver => {}
        Input::Finding(finding) => {
            let fresh = match finding {
                Finding::TaskGone { seen, .. } => *seen == base.version,
                Finding::TaskDiffers(_) => true,
            };
            if lease_free && fresh {
                changed = finding.apply(&mut room.record);
            }
        }
    }
    let decision = decide(&room.facts, &room.record, ctx.decision);
    if changed
        && ctx.decision.require_registered_host
        && room.facts.registered_host().is_none()
        && room.facts.broadcast(ctx.decision.end_grace_secs).is_some()
    {
        metrics::count("starts_refused_unregistered");
        tracing::warn!(
            "a publisher with no registered host: no broadcast (COSTREAM_REQUIRE_REGISTERED_HOST)"
        );
    }
    // A command only matters to us if we can take the lease; otherwise its holder will see our
    // committed state and act on it. A Start the app's cap refused is not made: the room is
    // committed with the refusal and a backoff instead.
    let is_start = matches!(decision.command, Some(Command::Start { .. }));
    let refused = capped.filter(|_| is_start && lease_free).cloned();
    // A heal (the Start of the running task after a CDN publish_done) waits until the room's
    // last heal is HEAL_SPACING_MS old.
    let heal_waits = heal_wait(&room, decision.command.as_ref(), now_ms).filter(|_| lease_free);
    let will_call =
        decision.command.is_some() && lease_free && refused.is_none() && heal_waits.is_none();
    if will_call && is_heal(&room, decision.command.as_ref()) {
        room.upkeep.healed_ms = Some(now_ms);
    }
    if let (Some(until), Input::Events { .. }) = (heal_waits, input) {
        metrics::count("heals_deferred");
        tracing::warn!(
            due_ms = until,
            "heal deferred: the room's last heal is less than 30 s old"
        );
    }
    if let Some(failure) = &refused {
        note_failure(&mut room.upkeep, failure, now_ms);
    }
    let count_start = ctx
        .config
        .max_starts_per_minute
        .filter(|_| will_call && is_start);
    let prior = room.record.clone();
    if let (true, Some(cmd)) = (will_call, &decision.command) {
        // Write-ahead: the call's intent goes with the lease, so a caller that dies mid-call
        // leaves a record the next holder re-asserts from.
        room.record.begin(cmd);
        room.take_lease(who.owner, who.wid, now_ms, ctx.config.lease_ms);
    }
    let marked = (room.due_ms, room.upkeep.clone());
    mark_due(
        &mut room,
        decision.command.is_some(),
        now_ms,
        ctx.config.resign_after_ms,
    );
    if let Some(until) = heal_waits {
        room.due_ms = Some(room.due_ms.map_or(until, |d| d.max(until)));
    }
    let remarked = marked != (room.due_ms, room.upkeep.clone());
    // (Only the repair loop is told: a callback's answer stays `no_change`.)
    let busy = decision.command.is_some()
        && !lease_free
        && !matches!(input, Input::Events { .. } | Input::Appended);
    let write = will_call || changed || folded || remarked || refused.is_some();
    // A PK whose host in this room no longer broadcasts ends in both rooms, in the same write as
    // what ended it.
    let ends_pk = room
        .facts
        .pk_link()
        .filter(|_| room.facts.pk(ctx.decision.end_grace_secs).is_none())
        .map(|link| link.peer.clone());
    stamp(&mut room, base, who.wid, now_ms, ctx.config);
    if ctx.config.webhooks {
        queue_hooks(base, &mut room, now_ms, ctx.decision);
    }
    let outcome = if duplicate {
        Handled::Duplicate
    } else if !changed && busy {
        Handled::Busy
    } else if !changed && !matches!(input, Input::Appended) {
        Handled::NoChange
    } else {
        Handled::Committed {
            version: base.version.next(),
        }
    };
    Plan {
        room,
        write: write || (ends_pk.is_some() && lease_free),
        command: decision.command.filter(|_| will_call),
        prior,
        outcome,
        count_start,
        ends_pk,
        refused,
        target: decision.target,
    }
}

/// What the lease holder writes after a call answered.
#[derive(Debug)]
pub(crate) struct RecordPlan {
    pub room: StoredRoom,
    /// The next call, if the target moved on (the lease is renewed for it).
    pub next: Option<Command>,
    /// The record before the next call's intent.
    pub prior: Record,
}

/// Plans the holder's record of a call on `current` (the item as stored, its lease the holder's
/// own): the task now is `running`; `fresh_url` when the call pushed a freshly signed
/// StreamURL; `healing` when the call was a Start (it re-pushed the stream). Folds the inbox
/// (events held for the end grace stay held: only a commit merges them, with the end of a PK
/// they may bring), decides again, renews the lease for the next call or releases it.
pub(crate) fn plan_record(
    current: &StoredRoom,
    running: &Target,
    fresh_url: bool,
    healing: bool,
    now_ms: u64,
    wid: &str,
    ctx: Ctx<'_>,
) -> RecordPlan {
    let mut room = current.clone();
    room.fold_keeping_ends(now_ms, &ctx.rules());
    // A heal asked for while this call was in flight (a publish_done committed meanwhile) is
    // still owed unless the call was itself a Start, which re-pushes the stream: an Update or a
    // Stop decided before it does not.
    let heal_owed = room.record.needs_heal() && !healing && running.task().is_some();
    room.record.confirm(running.clone());
    if heal_owed {
        room.record = Record::new(running.clone(), true);
    }
    if fresh_url {
        room.upkeep.signed_ms = Some(now_ms);
    }
    let decision = decide(&room.facts, &room.record, ctx.decision);
    // The owed heal goes through the same spacing as any heal.
    let heal_waits = heal_wait(&room, decision.command.as_ref(), now_ms);
    let next = decision.command.clone().filter(|_| heal_waits.is_none());
    if next.is_some() && is_heal(&room, next.as_ref()) {
        room.upkeep.healed_ms = Some(now_ms);
    }
    room.lease = match (&next, &current.lease) {
        (Some(_), Some(lease)) => Some(crate::store::Lease {
            until_ms: now_ms + ctx.config.lease_ms,
            ..lease.clone()
        }),
        _ => None,
    };
    let prior = room.record.clone();
    if let Some(next) = &next {
        room.record.begin(next);
    }
    mark_due(
        &mut room,
        decision.command.is_some(),
        now_ms,
        ctx.config.resign_after_ms,
    );
    if let Some(until) = heal_waits {
        metrics::count("heals_deferred");
        room.due_ms = Some(room.due_ms.map_or(until, |d| d.max(until)));
    }
    stamp(&mut room, current, wid, now_ms, ctx.config);
    if ctx.config.webhooks {
        queue_hooks(current, &mut room, now_ms, ctx.decision);
    }
    RecordPlan { room, next, prior }
}

/// When a heal `command` must wait for the room's heal spacing, the time it may go.
pub(crate) fn heal_wait(room: &StoredRoom, command: Option<&Command>, now_ms: u64) -> Option<u64> {
    if !is_heal(room, command) {
        return None;
    }
    room.upkeep
        .healed_ms
        .map(|h| h + HEAL_SPACING_MS)
        .filter(|until| *until > now_ms)
}

/// Whether `command` is a heal: a Start while the record asks for one.
fn is_heal(room: &StoredRoom, command: Option<&Command>) -> bool {
    matches!(command, Some(Command::Start { .. })) && room.record.needs_heal()
}

/// Sets when the repair loop should next look at `room`, from the state about to be written:
/// while a command is pending, when the lease (its holder's, or the one just taken) runs out;
/// otherwise only the StreamURL's re-signing, if the task runs — and, in any case, no later
/// than the end of a held event's grace.
pub(crate) fn mark_due(
    room: &mut StoredRoom,
    pending: bool,
    now_ms: u64,
    resign_after_ms: Option<u64>,
) {
    mark_pending(room, pending, now_ms, resign_after_ms);
    if let Some(until) = room.held_until() {
        room.due_ms = Some(room.due_ms.map_or(until, |d| d.min(until)));
    }
}

fn mark_pending(room: &mut StoredRoom, pending: bool, now_ms: u64, resign_after_ms: Option<u64>) {
    if pending {
        room.due_ms = Some(match room.lease.as_ref().filter(|l| l.until_ms > now_ms) {
            Some(lease) => lease.until_ms + DUE_MARGIN_MS,
            None => now_ms + backoff_ms(room.upkeep.attempts),
        });
        return;
    }
    let resign_at = match (room.record.running(), resign_after_ms) {
        // A task whose signing time is unknown (recorded before re-signing existed) is
        // re-signed at once rather than trusted.
        (Target::On { .. }, Some(after)) => Some(
            *room
                .upkeep
                .signed_ms
                .get_or_insert(now_ms.saturating_sub(after))
                + after,
        ),
        (Target::On { .. }, None) => None,
        (Target::Off, _) => {
            room.upkeep.signed_ms = None;
            None
        }
    };
    match resign_at {
        // The re-signing itself is what fails: keep its failures counting (backoff, age).
        Some(at) if at <= now_ms && room.upkeep.attempts > 0 => {
            room.due_ms = Some(now_ms + backoff_ms(room.upkeep.attempts));
        }
        _ => {
            room.upkeep.attempts = 0;
            room.upkeep.failing_since_ms = None;
            room.due_ms = resign_at;
        }
    }
}

/// Stamps a write made from `base`: its id and time, the item's life (a new one when the write
/// creates the item) and its expiry (none while the record names a task: a room whose task runs
/// never expires — a quiet 24-hour broadcast must not lose its room, or the sweep would take its
/// task for a leak).
pub(crate) fn stamp(
    room: &mut StoredRoom,
    base: &StoredRoom,
    wid: &str,
    now_ms: u64,
    config: &ShellConfig,
) {
    room.wid = Some(wid.to_owned());
    room.at_ms = now_ms;
    if base.version == costream_core::Version::NONE {
        room.life = Some(Life(format!("{now_ms:x}-{wid}")));
    }
    room.expires_ms = match room.record.running().task() {
        Some(_) => None,
        None => Some(now_ms + config.room_ttl_ms),
    };
}

/// Queues the webhooks a write from `before` to `room` means, in that same write (see
/// [`crate::webhooks`]); the write creates version `before.version + 1`.
pub(crate) fn queue_hooks(
    before: &StoredRoom,
    room: &mut StoredRoom,
    now_ms: u64,
    decision: &DecisionConfig,
) {
    let version = before.version.next();
    let hooks = crate::webhooks::derive(before, room, version, now_ms, decision);
    crate::webhooks::enqueue(room, hooks, now_ms);
}

/// Counts a failed (or refused) call in the room's repair bookkeeping: one more attempt and
/// failure, since when the room fails, and what failed last.
pub(crate) fn note_failure(upkeep: &mut Upkeep, failure: &MpuFailure, now_ms: u64) {
    upkeep.attempts = upkeep.attempts.saturating_add(1);
    upkeep.failures = upkeep.failures.saturating_add(1);
    upkeep.failing_since_ms.get_or_insert(now_ms);
    upkeep.last_failure = Some(LastFailure {
        at_ms: now_ms,
        action: failure.action.to_owned(),
        kind: failure.kind.to_string(),
        reason: failure.reason.clone(),
    });
}

/// The refusal of a Start by the app's start cap (retryable: the repair loop tries again).
pub(crate) fn start_refused(cap: u32) -> MpuFailure {
    MpuFailure {
        kind: MpuFailureKind::Refused { retryable: true },
        action: "start",
        reason: format!("the app's cap of {cap} task starts per minute is reached"),
    }
}

#[cfg(test)]
mod tests;
