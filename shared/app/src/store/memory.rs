//! In-memory [`StateStore`]: the same conditional semantics as DynamoDB, for `costream serve` and
//! for fast model tests. Counts requests like the DynamoDB adapter so budgets can be asserted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{StoreError, StoredRoom};
use crate::ports::{RoomKey, StateStore};
use costream_core::Version;

#[derive(Debug, Default)]
pub struct InMemoryStore {
    rooms: Mutex<HashMap<RoomKey, StoredRoom>>,
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

impl StateStore for InMemoryStore {
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
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let current = rooms.get(key).map_or(Version::NONE, |r| r.version);
        if current != expected {
            return Err(StoreError::VersionConflict {
                room: key.to_string(),
                expected,
            });
        }
        let mut stored = room.clone();
        stored.version = expected.next();
        rooms.insert(key.clone(), stored);
        Ok(())
    }
}
