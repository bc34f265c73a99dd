//! The stored shape of a room and the in-memory [`StateStore`](crate::ports::StateStore) (the
//! DynamoDB one is the `costream-dynamo` crate).
//!
//! A stored room is `{ facts, record, version, life, lease, seen, inbox, held, … }`: the core's
//! facts and the shell's record (kept apart: facts merge in any order, the record is written by
//! the lease holder only), plus what only the shell needs: the optimistic-concurrency version and
//! the item's life (its incarnation: both are checked by every conditional write), the id of the
//! write that made this version, the MPU lease (who may call the MPU API for this room, until
//! when), the recently seen callback keys (de-duplication), the inbox (callbacks committed
//! without the version when the room was contended, merged by the next write that folds) and
//! the events held back for the end grace (see [`StoredRoom::admit`]).

pub mod cached;
pub mod memory;

use serde::{Deserialize, Serialize};

use costream_core::{ChannelId, Facts, Record, Version};

mod fold;
mod upkeep;
pub use fold::{key_digest, Admitted, FoldRules, Held, InboxEntry, MAX_HELD, MAX_INBOX};
pub use upkeep::{
    backoff_ms, HistoryEntry, LastFailure, Upkeep, HEAL_SPACING_MS, HISTORY_LEN, MAX_BACKOFF_MS,
};

pub use crate::ports::StoreError;

/// The right to make MPU calls for a room. Taken in the same conditional write that commits an
/// event, so at most one handler holds it; it expires so a crashed holder can't block the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The invocation holding it (for logs and status).
    pub owner: String,
    /// Epoch milliseconds after which anyone may take the lease over.
    pub until_ms: u64,
    /// The id of the write that took it: the holder's proof that the lease is its own (an
    /// owner's name can be shared by two deliveries of one event; a write id is unique).
    #[serde(default)]
    pub token: String,
}

/// A room item's life: set when the item is created (the item was absent, or expired), never
/// changed by a later write, and checked by every conditional write with the version — so a
/// process's copy of a past life (the item expired or was deleted, and was created again, its
/// versions starting over) can never be written over the new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Life(pub String);

impl std::fmt::Display for Life {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room whose lease is held is due this long after the lease runs out (the holder's own last
/// write usually lands first and clears or moves the mark).
pub const DUE_MARGIN_MS: u64 = 1_000;

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
        self.insert_digest(digest(&key), now_secs, expires_secs, cap);
    }

    /// The digest a key is kept as (an inbox entry carries its callback's key so).
    pub fn digest(key: &str) -> String {
        digest(key)
    }

    /// Whether the key of this digest was seen and has not expired at `now_secs`.
    pub fn contains_digest(&self, key: &str, now_secs: u64) -> bool {
        self.0.iter().any(|(k, exp)| k == key && *exp > now_secs)
    }

    /// [`SeenKeys::insert`] of a digest.
    pub fn insert_digest(&mut self, key: String, now_secs: u64, expires_secs: u64, cap: usize) {
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
    /// The item's life (`None`: never stored, or stored before lives existed).
    pub life: Option<Life>,
    /// The id of the write that made this version (`None` before write ids existed): a write
    /// whose answer was lost, or which the SDK retried into a conflict, is recognised as landed
    /// when the item carries its id ([`StoredRoom::carries`]).
    pub wid: Option<String>,
    /// When the write that made this version was made (epoch ms).
    pub at_ms: u64,
    /// When the item expires (epoch ms; DynamoDB's TTL): `None` while the record names a task.
    /// An item past it is treated as absent, whether or not it was deleted yet.
    pub expires_ms: Option<u64>,
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
    /// Callbacks committed by an append (without the version), oldest first, not yet folded.
    pub inbox: Vec<InboxEntry>,
    /// Events that end the live broadcast, held back for the end grace (see
    /// [`StoredRoom::admit`]).
    pub held: Vec<Held>,
}

impl StoredRoom {
    /// A room that was never stored.
    pub fn new(channel: ChannelId) -> StoredRoom {
        StoredRoom {
            facts: Facts::new(channel),
            record: Record::default(),
            version: Version::NONE,
            life: None,
            wid: None,
            at_ms: 0,
            expires_ms: None,
            lease: None,
            seen: SeenKeys::default(),
            due_ms: None,
            upkeep: Upkeep::default(),
            outbox: Vec::new(),
            inbox: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Whether the item is past its expiry at `now_ms`: then it is treated as absent.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// The lease rule: the lease is free when absent or expired — never because its owner is
    /// the asking invocation (two deliveries sharing a request id must not overlap, and the
    /// lease, 45 s, expires before Lambda's first retry at 60 s anyway).
    pub fn lease_free(&self, now_ms: u64) -> bool {
        self.lease.as_ref().is_none_or(|l| l.until_ms <= now_ms)
    }

    /// Whether the lease is the one the write `token` took (expired or not: its holder checks
    /// that its lease is still its own before writing).
    pub fn holds_lease(&self, token: &str) -> bool {
        self.lease.as_ref().is_some_and(|l| l.token == token)
    }

    /// Takes the lease for `owner` by the write `token` until `now_ms + lease_ms`, and marks the
    /// room due just after it ends: if the holder never records, the repair loop takes over.
    pub fn take_lease(&mut self, owner: &str, token: &str, now_ms: u64, lease_ms: u64) {
        let until_ms = now_ms + lease_ms;
        self.lease = Some(Lease {
            owner: owner.to_owned(),
            until_ms,
            token: token.to_owned(),
        });
        self.due_ms = Some(until_ms + DUE_MARGIN_MS);
    }

    /// Whether the stored item carries the write `wid`: it made this version, or it took the
    /// lease this item still holds (later writes of others kept it). A write that "failed"
    /// (its answer lost, or the SDK's retry of a write that had landed failed its condition)
    /// but which the item carries landed.
    pub fn carries(&self, wid: &str) -> bool {
        self.wid.as_deref() == Some(wid) || self.holds_lease(wid)
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
