//! Webhooks for the app's backend, at least once: a transactional outbox in the room item.
//!
//! Every write of a room compares what the room looked like before and after it (live, CDN,
//! stage, waiting list, PK, failing) and appends the events that difference means to the room's
//! `outbox` **in the same conditional write** — an event exists exactly when the change it
//! reports was committed, and nothing between the two can lose it. Delivery is separate: the
//! handler that made the change tries at once, and the repair loop (the `repair` function every
//! minute; `costream serve` every second) retries what is still pending, with backoff, from
//! the store — so a slow or down backend loses nothing, and a restart loses nothing either. A
//! delivered event is removed with a conditional write; one that fails to be removed is sent
//! again with the same `id` (the backend's dedupe key).

use serde::{Deserialize, Serialize};

use crate::store::StoredRoom;
use costream_core::{DecisionConfig, Facts, Record, Version};

/// The most events a room keeps waiting for delivery; beyond it the oldest is dropped (counted
/// and logged as an error).
pub const MAX_OUTBOX: usize = 64;
/// An event the backend has not accepted for this long is dropped (counted, logged).
pub const MAX_AGE_MS: u64 = 24 * 3_600_000;
/// A room is "failing" for `task.failed` after this many failed attempts in a row (the first
/// three backoffs: about 35 s of refusals).
pub const FAILING_ATTEMPTS: u32 = 3;
/// A room delivers at most this many events a minute: beyond it the rest wait in its outbox, in
/// order, for the next minute (counted as `webhooks_paced`), so no flood of changes — genuine,
/// or forged by whoever holds a callback secret — becomes a flood of signed requests to the
/// backend. Waiting events are bounded like any backlog ([`MAX_OUTBOX`]).
pub const MAX_PER_MINUTE: u32 = 30;
const MINUTE_MS: u64 = 60_000;
/// Retry delays: 1 s, doubling, at most 5 minutes.
const FIRST_RETRY_MS: u64 = 1_000;
const MAX_RETRY_MS: u64 = 300_000;

/// One event as the backend receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Unique per event and stable across redeliveries: `<room>:<version>:<ms>:<type>` — the
    /// version the write created and its time in ms (versions start over when an idle room's
    /// item expires).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub room: String,
    /// When the change was committed, unix seconds.
    pub time: u64,
    pub data: serde_json::Value,
}

/// An event waiting in a room's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub hook: Webhook,
    /// Failed deliveries so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (epoch ms).
    pub next_ms: u64,
    /// When it was created (epoch ms).
    pub created_ms: u64,
}

impl Pending {
    /// After a failed delivery at `now_ms`: one more attempt, the next one after the backoff.
    pub fn failed(&mut self, now_ms: u64) {
        self.attempts = self.attempts.saturating_add(1);
        let delay = FIRST_RETRY_MS
            .saturating_mul(1u64 << (self.attempts - 1).min(20))
            .min(MAX_RETRY_MS);
        self.next_ms = now_ms + delay;
    }
}

/// What the backend can see of a room, compared before and after a write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Snapshot {
    live: bool,
    /// When the live broadcast started: a new broadcast is a new room life.
    started: Option<costream_core::Timestamp>,
    cdn_live: bool,
    host: Option<String>,
    on_stage: Vec<String>,
    waiting: Vec<String>,
    mix_mode: Option<u8>,
    pk: Option<String>,
    failing: bool,
}

impl Snapshot {
    fn of(facts: &Facts, attempts: u32, cfg: &DecisionConfig) -> Snapshot {
        let target = costream_core::target(facts, &Record::default(), cfg);
        let stage = costream_core::live_stage(facts, cfg);
        let names = |users: &[costream_core::UserId]| {
            users.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let cdn_live = match (&stage, facts.cdn()) {
            (Some(s), Some(c)) => {
                c.action == costream_core::CdnAction::Publish && c.at >= s.broadcast.started
            }
            _ => false,
        };
        Snapshot {
            live: stage.is_some(),
            started: stage.as_ref().map(|s| s.broadcast.started),
            cdn_live,
            host: stage.as_ref().map(|s| s.broadcast.host.to_string()),
            on_stage: stage
                .as_ref()
                .map(|s| names(&s.on_stage))
                .unwrap_or_default(),
            waiting: stage
                .as_ref()
                .map(|s| names(&s.waiting))
                .unwrap_or_default(),
            mix_mode: target.mix_mode().map(costream_core::MixMode::code),
            pk: facts.pk(cfg.end_grace_secs).map(|l| l.peer.to_string()),
            failing: attempts >= FAILING_ATTEMPTS,
        }
    }
}

/// The events a write from `before` to `after` means, named for the version it writes.
pub fn derive(
    before: &StoredRoom,
    after: &StoredRoom,
    version: Version,
    now_ms: u64,
    cfg: &DecisionConfig,
) -> Vec<Webhook> {
    let b = Snapshot::of(&before.facts, before.upkeep.attempts, cfg);
    let a = Snapshot::of(&after.facts, after.upkeep.attempts, cfg);
    if a == b {
        return Vec::new();
    }
    let room = after.facts.channel().to_string();
    let hook = |kind: &str, data: serde_json::Value| Webhook {
        id: format!("{room}:{}:{now_ms}:{kind}", version.get()),
        kind: kind.to_owned(),
        room: room.clone(),
        time: now_ms / 1000,
        data,
    };
    let mut out = Vec::new();
    if a.cdn_live && !b.cdn_live {
        out.push(hook(
            "room.live",
            serde_json::json!({"host": a.host, "mix_mode": a.mix_mode, "on_stage": a.on_stage}),
        ));
    }
    let restarted = b.live && a.live && a.started != b.started;
    if b.live && (!a.live || restarted) {
        out.push(hook("room.ended", serde_json::json!({"host": b.host})));
    }
    if a.live && (a.on_stage != b.on_stage || a.mix_mode != b.mix_mode || restarted) {
        out.push(hook(
            "stage.changed",
            serde_json::json!({"host": a.host, "on_stage": a.on_stage, "mix_mode": a.mix_mode,
                "waiting": a.waiting}),
        ));
    }
    let new_waiting: Vec<&String> = a
        .waiting
        .iter()
        .filter(|u| !b.waiting.contains(u))
        .collect();
    if a.live && !new_waiting.is_empty() {
        out.push(hook(
            "cohost.waiting",
            serde_json::json!({"users": new_waiting, "waiting": a.waiting,
                "max_panes": after.facts.config(cfg).max_panes}),
        ));
    }
    if let (Some(ended), true) = (&b.pk, a.pk != b.pk) {
        out.push(hook(
            "pk.ended",
            serde_json::json!({"peer_channel_id": ended}),
        ));
    }
    if let (Some(started), true) = (&a.pk, a.pk != b.pk) {
        out.push(hook(
            "pk.started",
            serde_json::json!({"peer_channel_id": started}),
        ));
    }
    if a.failing && !b.failing {
        out.push(hook(
            "task.failed",
            serde_json::json!({"attempts": after.upkeep.attempts,
                "failing_since_ms": after.upkeep.failing_since_ms,
                "last_failure": after.upkeep.last_failure}),
        ));
    }
    out
}

/// Appends `hooks` to the room's outbox (due now), keeping at most [`MAX_OUTBOX`].
pub fn enqueue(room: &mut StoredRoom, hooks: Vec<Webhook>, now_ms: u64) {
    for hook in hooks {
        tracing::info!(webhook_id = %hook.id, webhook_type = %hook.kind, "webhook queued");
        room.outbox.push(Pending {
            hook,
            attempts: 0,
            next_ms: now_ms,
            created_ms: now_ms,
        });
    }
    while room.outbox.len() > MAX_OUTBOX {
        let dropped = room.outbox.remove(0);
        crate::metrics::count("webhooks_dropped");
        tracing::error!(webhook_id = %dropped.hook.id, "webhook outbox full; dropped the oldest event");
    }
}

/// The room's current pacing window at `now_ms`: when it began and how many events it sent.
fn window(room: &StoredRoom, now_ms: u64) -> (u64, u32) {
    match room.upkeep.hooks_window {
        Some((start, n)) if now_ms < start + MINUTE_MS => (start, n),
        _ => (now_ms, 0),
    }
}

/// When the room's outbox next needs a delivery attempt: its oldest event's (a room's events
/// go out in order, each after the one before it was accepted).
pub fn next_due(room: &StoredRoom) -> Option<u64> {
    room.outbox.first().map(|p| p.next_ms)
}

/// How much one delivery round may send.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub events: usize,
    pub time: std::time::Duration,
}

/// What one delivery round for a room did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub failed: usize,
    pub dropped: usize,
}

/// Delivers the room's due webhooks with `send`, oldest first (a failed one, or one waiting
/// for its backoff, holds the rest back: the backend gets a room's events in order), then
/// removes the delivered ones and reschedules the failed one
/// with a conditional write — re-read on a conflict, so nothing another writer added is lost
/// and nothing delivered is sent again unless that write fails.
pub async fn deliver<S, F, Fut>(
    store: &S,
    key: &crate::ports::RoomKey,
    now_ms: u64,
    budget: Budget,
    max_conflicts: u32,
    send: F,
) -> Result<Delivered, crate::ports::StoreError>
where
    S: crate::ports::StateStore,
    F: Fn(Webhook) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut done = Delivered::default();
    let Some(room) = store.load(key).await? else {
        return Ok(done);
    };
    let mut sent: Vec<String> = Vec::new();
    let mut failed: Option<String> = None;
    let started = tokio::time::Instant::now();
    let allowed = MAX_PER_MINUTE.saturating_sub(window(&room, now_ms).1) as usize;
    for pending in room
        .outbox
        .iter()
        .take_while(|p| p.next_ms <= now_ms)
        .take(budget.events.min(allowed))
    {
        if started.elapsed() >= budget.time {
            break;
        }
        match send(pending.hook.clone()).await {
            Ok(()) => {
                crate::metrics::count("webhooks_delivered");
                tracing::info!(webhook_id = %pending.hook.id, webhook_type = %pending.hook.kind, "webhook delivered");
                sent.push(pending.hook.id.clone());
            }
            Err(reason) => {
                crate::metrics::count("webhooks_failed");
                tracing::warn!(webhook_id = %pending.hook.id, attempts = pending.attempts + 1, reason = %reason, "webhook delivery failed; will retry");
                failed = Some(pending.hook.id.clone());
                break;
            }
        }
    }
    done.sent = sent.len();
    done.failed = usize::from(failed.is_some());
    let expired = |p: &Pending| p.created_ms + MAX_AGE_MS <= now_ms;
    let held = allowed == 0 && room.outbox.first().is_some_and(|p| p.next_ms <= now_ms);
    if sent.is_empty() && failed.is_none() && !held && !room.outbox.iter().any(expired) {
        return Ok(done);
    }
    let mut room = room;
    for _ in 0..max_conflicts {
        let before = room.outbox.len();
        room.outbox.retain(|p| !sent.contains(&p.hook.id));
        let mut dropped = 0;
        room.outbox.retain(|p| {
            let keep = !expired(p);
            if !keep {
                dropped += 1;
                crate::metrics::count("webhooks_dropped");
                tracing::error!(webhook_id = %p.hook.id, attempts = p.attempts, "webhook undelivered for 24 h; dropped");
            }
            keep
        });
        if let Some(id) = &failed {
            if let Some(p) = room.outbox.iter_mut().find(|p| &p.hook.id == id) {
                p.failed(now_ms);
            }
        }
        // The pacing window: what this round sent counts in it; once it is full, the next due
        // event waits for the window's end (the `hooks` index says when).
        let (start, n) = window(&room, now_ms);
        let n = n.saturating_add(u32::try_from(sent.len()).unwrap_or(u32::MAX));
        if !sent.is_empty() {
            room.upkeep.hooks_window = Some((start, n));
        }
        let mut paced = false;
        if n >= MAX_PER_MINUTE && failed.is_none() {
            if let Some(head) = room
                .outbox
                .first_mut()
                .filter(|p| p.next_ms < start + MINUTE_MS)
            {
                head.next_ms = start + MINUTE_MS;
                paced = true;
            }
        }
        done.dropped = dropped;
        if room.outbox.len() == before && failed.is_none() && !paced {
            return Ok(done);
        }
        if paced {
            crate::metrics::count("webhooks_paced");
            tracing::warn!(
                until_ms = start + MINUTE_MS,
                "room's webhooks paced: 30 sent this minute"
            );
        }
        match store.save(key, &room, room.version).await {
            Ok(()) => return Ok(done),
            Err(crate::ports::StoreError::VersionConflict { .. }) => {
                crate::metrics::count("version_conflicts");
                match store.load(key).await? {
                    Some(fresh) => room = fresh,
                    None => return Ok(done),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
