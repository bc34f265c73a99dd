//! What the shell keeps about a room besides facts and record: the repair bookkeeping and the
//! per-room decision history.

use serde::{Deserialize, Serialize};

/// The longest a room waits between repair attempts: a room that keeps being refused (quota,
/// throttling, a bad parameter) is retried at most this often, never in a hot loop. Half a
/// minute: below the deployed schedule's period (a longer cap would skip passes, and a room
/// would need more than two periods to converge once the refusals stop), and short enough that
/// under `serve` (a pass every 15 s) a room refused all through a storm is right within a
/// minute of the last callback.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// The first retry delay after a failure; doubled per failure in a row up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: u64 = 5_000;

/// How long the repair loop waits before retrying a room after `attempts` failures in a row:
/// 0 → now, then 5 s, 10 s, 20 s, then every 30 s.
pub fn backoff_ms(attempts: u32) -> u64 {
    match attempts {
        0 => 0,
        n => FIRST_BACKOFF_MS
            .saturating_mul(1u64 << (n - 1).min(20))
            .min(MAX_BACKOFF_MS),
    }
}

/// The repair bookkeeping of a room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Upkeep {
    /// Failed convergence attempts in a row (reset when the room converges).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Refusals and unanswered calls since the room was created (for `GET /rooms` and history).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub failures: u64,
    /// The last failure, kept after the room recovers so operators can see what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
    /// Since when the room has been failing to converge (epoch ms; the first failure of the
    /// current streak): the age the repair loop reports and alarms on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// When the running task's StreamURL was last signed (epoch ms): a Start, or a refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_ms: Option<u64>,
    /// When the room's task was last healed after a CDN `publish_done` (epoch ms): heals are
    /// spaced by [`HEAL_SPACING_MS`] per room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_ms: Option<u64>,
    /// The room's webhook pacing: when its current window began (epoch ms) and how many events
    /// were delivered in it (see `webhooks::MAX_PER_MINUTE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks_window: Option<(u64, u32)>,
}

/// A room's heals (a Start of its running task after the CDN said the stream stopped) are at
/// least this far apart. A `publish_done` — genuine, or replayed with a captured signature
/// pair in every room — can't make a room call the Live API more often; a heal inside the
/// spacing waits (the room is due when it ends), it is never dropped.
pub const HEAL_SPACING_MS: u64 = 30_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl Upkeep {
    pub fn is_default(&self) -> bool {
        *self == Upkeep::default()
    }
}

/// Why the last attempt to converge a room failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub at_ms: u64,
    /// `start`, `update`, `stop`, `list`, or `store`.
    pub action: String,
    /// `refused`, `refused, retryable` or `in doubt`.
    pub kind: String,
    /// The redacted reason (the service's code and message, or the transport error).
    pub reason: String,
}

/// How many decisions of a room are kept.
pub const HISTORY_LEN: u64 = 32;

/// One decision of a room: what was called, why, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The room version the command was decided from (unique per call; orders the entries).
    pub version: u64,
    /// When the call ended (epoch ms).
    pub at_ms: u64,
    /// What led to it: the callback's events (`publish u2 @1700000000`), `repair`, or a sweep
    /// finding (`sweep: task missing`).
    pub trigger: String,
    /// The call: `start room-1_1700000000 mix_mode=1 users=[host,u2]`.
    pub command: String,
    /// `ok`, `task missing`, `refused: …`, `in doubt: …`.
    pub outcome: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_at_half_a_minute() {
        let delays: Vec<u64> = (0..8).map(backoff_ms).collect();
        assert_eq!(
            delays,
            [0, 5_000, 10_000, 20_000, 30_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }
}
