//! [`Cached`]: a store that remembers, per process, each room as it last wrote or read it, so
//! a warm container commits an event with one conditional write instead of a read and a write.
//!
//! Why it is safe: the copy is only a guess of the stored version. The shell writes conditional
//! on the version it started from; a stale copy makes that write fail (a version conflict, the
//! copy is dropped) and the shell reads and redoes, exactly as when another handler wrote
//! between its read and its write. Whatever the shell would conclude *without* writing (nothing
//! changed, a duplicate) it concludes only from a fresh read (see `Shell::commit`).
//!
//! Why it pays: a room's callbacks come in bursts to the same function, and Lambda reuses the
//! most recently used container; every write of this process refreshes the copy. A copy found
//! stale costs a failed conditional write (billed like a write) where a read would have done,
//! so the break-even is about one stale copy in five commits (ARCHITECTURE.md, "The cost of a
//! callback").

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use costream_alibaba::clock::{Clock, SystemClock};
use costream_core::{AppId, TaskId, Version};

use super::{HistoryEntry, InboxEntry, Life, StoreError, StoredRoom};
use crate::ports::{DueRoom, RoomKey, StateStore};

/// The most the copies may take per process, by the size of their facts and record as JSON (a
/// typical room is under 1 KB; the facts' bound is 200 KB): beyond it the memory starts over.
pub const CACHED_BYTES: usize = 16 * 1024 * 1024;

/// A copy older than this (on the process's clock) is not used: it serves a room's bursts, and
/// an old one is likely stale. (A copy of a past life — the item expired or was deleted and
/// created again — is harmless anyway: every write is conditional on the item's life too.)
pub const CACHED_FOR_MS: u64 = 600_000;

/// A [`StateStore`] that keeps what it last wrote or read of each room (see the module docs).
pub struct Cached<S> {
    inner: S,
    rooms: Mutex<Copies>,
    clock: Arc<dyn Clock>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cached<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Copies {
    /// Each room's copy, when it was taken (the clock's ms) and its size.
    rooms: HashMap<RoomKey, (StoredRoom, u64, usize)>,
    bytes: usize,
}

/// About what a copy takes in memory, estimated without serializing it (it is remembered
/// after every request): a few hundred bytes of its own, per user and per waiting entry.
fn size_of(room: &StoredRoom) -> usize {
    512 + room.facts.member_count() * 400
        + room.inbox.len() * 300
        + room.held.len() * 200
        + room.outbox.len() * 600
}

impl<S> Cached<S> {
    /// Copies aged on the system clock.
    pub fn new(inner: S) -> Self {
        Self::with_clock(inner, Arc::new(SystemClock))
    }

    /// Copies aged on `clock` (the deterministic simulation's).
    pub fn with_clock(inner: S, clock: Arc<dyn Clock>) -> Self {
        Cached {
            inner,
            rooms: Mutex::new(Copies::default()),
            clock,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Keeps `room` as the room's copy (an item past its expiry is absent: nothing is kept), or
    /// forgets the room.
    fn remember(&self, key: &RoomKey, room: Option<StoredRoom>) {
        let now_ms = self.clock.now_ms();
        let room = room.filter(|r| !r.expired(now_ms));
        let size = room.as_ref().map(size_of);
        let mut copies = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, old)) = copies.rooms.remove(key) {
            copies.bytes -= old;
        }
        if let (Some(room), Some(size)) = (room, size) {
            if copies.bytes + size > CACHED_BYTES {
                *copies = Copies::default();
            }
            copies.bytes += size;
            copies.rooms.insert(key.clone(), (room, now_ms, size));
        }
    }

    /// After a write of `room` over `expected`: remember what was written; after a conflict,
    /// the item as the store returned it; after any other failure, forget the room (its stored
    /// version is unknown).
    fn wrote<T>(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        result: &Result<T, StoreError>,
        landed: impl Fn(&T) -> bool,
    ) {
        match result {
            Ok(t) if landed(t) => {
                let mut stored = room.clone();
                stored.version = expected.next();
                self.remember(key, Some(stored));
            }
            Ok(_) => {}
            Err(StoreError::VersionConflict {
                current: Some(current),
                ..
            }) if current.facts.channel() == &key.channel => {
                self.remember(key, Some((**current).clone()));
            }
            Err(_) => self.remember(key, None),
        }
    }
}

impl<S: StateStore> StateStore for Cached<S> {
    async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        let loaded = self.inner.load(key).await;
        match &loaded {
            Ok(room) => self.remember(key, room.clone()),
            Err(_) => self.remember(key, None),
        }
        loaded
    }

    fn cached(&self, key: &RoomKey) -> Option<StoredRoom> {
        let now_ms = self.clock.now_ms();
        let copies = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        copies
            .rooms
            .get(key)
            .filter(|(room, at, _)| now_ms < at + CACHED_FOR_MS && !room.expired(now_ms))
            .map(|(room, _, _)| room.clone())
    }

    fn load_eventually(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send {
        self.inner.load_eventually(key)
    }

    async fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<(), StoreError> {
        let result = self.inner.save(key, room, expected).await;
        self.wrote(key, room, expected, &result, |_| true);
        result
    }

    async fn append(
        &self,
        key: &RoomKey,
        life: Option<&Life>,
        entry: &InboxEntry,
        due_ms: u64,
    ) -> Result<StoredRoom, StoreError> {
        let result = self.inner.append(key, life, entry, due_ms).await;
        match &result {
            Ok(room) => self.remember(key, Some(room.clone())),
            Err(StoreError::VersionConflict {
                current: Some(current),
                ..
            }) => self.remember(key, Some((**current).clone())),
            Err(_) => self.remember(key, None),
        }
        result
    }

    async fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> Result<(), StoreError> {
        let result = self.inner.save_noting(key, room, expected, entry).await;
        self.wrote(key, room, expected, &result, |_| true);
        result
    }

    async fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> Result<bool, StoreError> {
        let result = self
            .inner
            .save_counting_start(key, room, expected, minute, cap)
            .await;
        self.wrote(key, room, expected, &result, |counted| *counted);
        result
    }

    async fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> Result<(), StoreError> {
        let result = self.inner.save_pair(a, b).await;
        for (key, room, expected) in [a, b] {
            self.wrote(key, room, expected, &result, |_| true);
        }
        result
    }

    fn take_start(
        &self,
        app: &AppId,
        minute: u64,
        cap: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.inner.take_start(app, minute, cap)
    }

    fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RoomKey>, StoreError>> + Send {
        self.inner.hook_rooms(app, now_ms, limit)
    }

    fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueRoom>, StoreError>> + Send {
        self.inner.due_rooms(app, now_ms, limit)
    }

    fn rooms_with_tasks(
        &self,
        app: &AppId,
    ) -> impl Future<Output = Result<Vec<(RoomKey, TaskId)>, StoreError>> + Send {
        self.inner.rooms_with_tasks(app)
    }

    fn append_history(
        &self,
        key: &RoomKey,
        entry: &HistoryEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.inner.append_history(key, entry)
    }

    fn history(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send {
        self.inner.history(key)
    }
}
