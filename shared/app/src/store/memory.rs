//! In-memory [`StateStore`]: the same conditional semantics as DynamoDB, for `costream serve` and
//! for fast model tests. Counts requests like the DynamoDB adapter so budgets can be asserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{HistoryEntry, InboxEntry, Life, StoreError, StoredRoom, HISTORY_LEN, MAX_INBOX};
use crate::ports::{DueRoom, RoomKey, StateStore, APPEND_MIN_TTL_MS};
use costream_core::{AppId, TaskId, Version};

#[derive(Debug, Default)]
pub struct InMemoryStore {
    rooms: Mutex<HashMap<RoomKey, StoredRoom>>,
    history: Mutex<HashMap<RoomKey, Vec<HistoryEntry>>>,
    /// Task Starts counted per (app, unix minute).
    starts: Mutex<HashMap<(AppId, u64), u32>>,
    requests: AtomicU64,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests served so far (loads and saves, successful or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A snapshot of every stored room.
    pub fn rooms(&self) -> Vec<(RoomKey, StoredRoom)> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = rooms.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl InMemoryStore {
    /// Removes a room's item, as DynamoDB's TTL (or an operator) would.
    pub fn delete(&self, key: &RoomKey) -> Option<StoredRoom> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.remove(key)
    }

    /// Sets a room's expiry (tests and the simulation: an idle item expiring).
    pub fn set_expiry(&self, key: &RoomKey, expires_ms: Option<u64>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get_mut(key) {
            room.expires_ms = expires_ms;
        }
    }

    /// Writes `room` over `expected` if the item's condition holds (see [`StateStore::save`])
    /// and `admit` agrees (evaluated only then): `Ok(false)` when it did not.
    fn put(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        admit: impl FnOnce() -> bool,
    ) -> Result<bool, StoreError> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let current = rooms.get(key);
        if !writable(current, room, expected) {
            return Err(conflict(key, expected, current));
        }
        if !admit() {
            return Ok(false);
        }
        let mut stored = room.clone();
        stored.version = expected.next();
        rooms.insert(key.clone(), stored);
        Ok(true)
    }

    /// The same ring as the DynamoDB store: slot = version mod HISTORY_LEN, an entry only
    /// replaces an older one.
    fn ring(&self, key: &RoomKey, entry: &HistoryEntry) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let entries = history.entry(key.clone()).or_default();
        let slot = entry.version % HISTORY_LEN;
        match entries.iter_mut().find(|e| e.version % HISTORY_LEN == slot) {
            Some(e) if e.version < entry.version => *e = entry.clone(),
            Some(_) => {}
            None => entries.push(entry.clone()),
        }
    }
}

/// The condition of every room write: a create finds no item, or one past its expiry at the
/// write's time; any other write finds its expected version of the same life, unexpired.
fn writable(current: Option<&StoredRoom>, room: &StoredRoom, expected: Version) -> bool {
    match current {
        None => expected == Version::NONE,
        Some(c) if c.expired(room.at_ms) => expected == Version::NONE,
        Some(c) => expected != Version::NONE && c.version == expected && c.life == room.life,
    }
}

fn conflict(key: &RoomKey, expected: Version, current: Option<&StoredRoom>) -> StoreError {
    StoreError::VersionConflict {
        room: key.to_string(),
        expected,
        current: current.map(|c| Box::new(c.clone())),
    }
}

impl StateStore for InMemoryStore {
    async fn append(
        &self,
        key: &RoomKey,
        life: Option<&Life>,
        entry: &InboxEntry,
        due_ms: u64,
    ) -> Result<StoredRoom, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let current = rooms.get_mut(key);
        match current {
            Some(c)
                if c.life.as_ref() == life
                    && !c.expired(entry.at_ms + APPEND_MIN_TTL_MS)
                    && c.inbox.len() < MAX_INBOX =>
            {
                // A set, as DynamoDB's: the same entry twice (a retried append) is one.
                if !c.inbox.contains(entry) {
                    c.inbox.push(entry.clone());
                }
                c.version = c.version.next();
                c.due_ms = Some(due_ms);
                Ok(c.clone())
            }
            current => Err(StoreError::VersionConflict {
                room: key.to_string(),
                expected: Version::NONE,
                current: current.map(|c| Box::new(c.clone())),
            }),
        }
    }

    async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means another thread panicked mid-test; the map itself is whole
        // because every mutation below is a single insert.
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        Ok(rooms.get(key).cloned())
    }

    async fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.put(key, room, expected, || true).map(|_| ())
    }

    /// One request, as DynamoDB's transaction.
    async fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.put(key, room, expected, || true)?;
        self.ring(key, entry);
        Ok(())
    }

    /// One request, as DynamoDB's transaction: the Start is counted only with the write.
    async fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> Result<bool, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        starts.retain(|(_, m), _| *m + 2 > minute);
        let n = starts.entry((key.app.clone(), minute)).or_insert(0);
        self.put(key, room, expected, || {
            if *n >= cap {
                return false;
            }
            *n += 1;
            true
        })
    }

    async fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for (key, room, expected) in [a, b] {
            let current = rooms.get(key);
            if !writable(current, room, expected) {
                return Err(conflict(key, expected, current));
            }
        }
        for (key, room, expected) in [a, b] {
            let mut stored = room.clone();
            stored.version = expected.next();
            rooms.insert(key.clone(), stored);
        }
        Ok(())
    }

    async fn take_start(&self, app: &AppId, minute: u64, cap: u32) -> Result<bool, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        starts.retain(|(_, m), _| *m + 2 > minute);
        let n = starts.entry((app.clone(), minute)).or_insert(0);
        if *n >= cap {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }

    async fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RoomKey>, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<(u64, RoomKey)> = rooms
            .iter()
            .filter(|(k, _)| k.app == *app)
            .filter_map(|(k, r)| {
                crate::webhooks::next_due(r)
                    .filter(|d| *d <= now_ms)
                    .map(|d| (d, k.clone()))
            })
            .collect();
        due.sort();
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, k)| k).collect())
    }

    async fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueRoom>, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut due: Vec<DueRoom> = rooms
            .iter()
            .filter(|(k, _)| k.app == *app)
            .filter_map(|(k, r)| {
                r.due_ms.filter(|d| *d <= now_ms).map(|due_ms| DueRoom {
                    key: k.clone(),
                    due_ms,
                    failing_since_ms: r.upkeep.failing_since_ms,
                })
            })
            .collect();
        due.sort_by(|a, b| a.due_ms.cmp(&b.due_ms).then_with(|| a.key.cmp(&b.key)));
        due.truncate(limit);
        Ok(due)
    }

    async fn rooms_with_tasks(&self, app: &AppId) -> Result<Vec<(RoomKey, TaskId)>, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut with: Vec<(RoomKey, TaskId)> = rooms
            .iter()
            .filter(|(k, _)| k.app == *app)
            .filter_map(|(k, r)| r.record.running().task().map(|t| (k.clone(), t.clone())))
            .collect();
        with.sort();
        Ok(with)
    }

    async fn append_history(&self, key: &RoomKey, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.ring(key, entry);
        Ok(())
    }

    async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = history.get(key).cloned().unwrap_or_default();
        entries.sort_by_key(|e| e.version);
        Ok(entries)
    }
}
