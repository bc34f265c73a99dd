//! The stored shape of a room and the in-memory [`StateStore`](crate::ports::StateStore) (the
//! DynamoDB one is the `costream-dynamo` crate).
//!
//! A stored room is `{ facts, record, version, lease, seen }`: the core's facts and the shell's
//! record (kept apart: facts merge in any order, the record is written by the lease holder only),
//! plus what only the shell needs: the optimistic-concurrency
//! version, the MPU lease (who may call the MPU API for this room, until when) and the recently
//! seen callback keys (de-duplication).

pub mod cached;
pub mod memory;

use serde::{Deserialize, Serialize};

use costream_core::{ChannelId, Facts, Record, Version};

mod upkeep;
pub use upkeep::{
    backoff_ms, HistoryEntry, LastFailure, Upkeep, HEAL_SPACING_MS, HISTORY_LEN, MAX_BACKOFF_MS,
};

pub use crate::ports::StoreError;

/// The right to make MPU calls for a room. Taken in the same conditional write that commits an
/// event, so at most one handler holds it; it expires so a crashed holder can't block the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Epoch milliseconds after which anyone may take the lease over.
    pub until_ms: u64,
}

/// Recently seen callback keys with their expiry, bounded in count and age so the room item
/// can't grow without limit. Only the CDN's verified signature pairs (and, unsigned in `serve`,
/// its natural keys) are kept: ARTC callbacks need none, their facts merge idempotently.
///
/// Keys are kept as 64-bit FNV-1a digests (16 hex characters) rather than verbatim: the set is
/// rewritten with every room write, so its size is paid in WCUs on every event, and a MsgId plus
/// prefix is ~50 bytes. With at most a few hundred keys per room the chance of two colliding is
/// below 1e-14, and a collision would only make the core re-derive an unchanged state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SeenKeys(Vec<(String, u64)>);

fn digest(key: &str) -> String {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

impl SeenKeys {
    /// Whether `key` was seen and has not expired at `now_secs`.
    pub fn contains(&self, key: &str, now_secs: u64) -> bool {
        let key = digest(key);
        self.0.iter().any(|(k, exp)| *k == key && *exp > now_secs)
    }

    /// Records `key` until `expires_secs`, dropping expired keys and, beyond `cap`, the ones
    /// expiring first.
    pub fn insert(&mut self, key: String, now_secs: u64, expires_secs: u64, cap: usize) {
        let key = digest(&key);
        self.0.retain(|(k, exp)| *exp > now_secs && *k != key);
        self.0.push((key, expires_secs));
        if self.0.len() > cap {
            self.0.sort_by_key(|(_, exp)| std::cmp::Reverse(*exp));
            self.0.truncate(cap);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything stored for one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// What the callbacks told us (merged in any order).
    pub facts: Facts,
    /// What the shell applied (the running task, a pending heal).
    pub record: Record,
    /// The version this copy was read at (or written as).
    pub version: Version,
    pub lease: Option<Lease>,
    pub seen: SeenKeys,
    /// When the repair loop should look at the room (epoch ms), or `None` when nothing is
    /// pending. Recomputed by the shell on every write (see `Shell::mark_due`), so the set of due
    /// rooms is known without a scan (the DynamoDB store keeps it in a sparse index).
    pub due_ms: Option<u64>,
    /// The shell's bookkeeping for repairs: failures in a row, the last failure, when the task's
    /// StreamURL was signed.
    pub upkeep: Upkeep,
    /// Webhooks committed with the room's changes and not yet delivered (see `webhooks`).
    pub outbox: Vec<crate::webhooks::Pending>,
}

impl StoredRoom {
    /// A room that was never stored.
    pub fn new(channel: ChannelId) -> StoredRoom {
        StoredRoom {
            facts: Facts::new(channel),
            record: Record::default(),
            version: Version::NONE,
            lease: None,
            seen: SeenKeys::default(),
            due_ms: None,
            upkeep: Upkeep::default(),
            outbox: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_keys_expire_and_stay_bounded() {
        let mut s = SeenKeys::default();
        s.insert("a".into(), 0, 100, 3);
        assert!(s.contains("a", 99));
        assert!(!s.contains("a", 100), "expired");
        for (i, k) in ["b", "c", "d"].into_iter().enumerate() {
            s.insert(k.into(), 0, 200 + i as u64, 3);
        }
        assert_eq!(s.len(), 3);
        assert!(!s.contains("a", 0), "the one expiring first was dropped");
        s.insert("e".into(), 150, 400, 3);
        assert!(s.contains("e", 150) && s.contains("d", 150));
    }
}
