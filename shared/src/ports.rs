//! The seams between the shell and the outside world: the room store and the MPU API. Exactly two
//! implementations of each exist (real and fake/simulated), so the shell is generic over them.

use std::future::Future;

use crate::alibaba::MpuError;
use crate::domain::{AppId, ChannelId, Command, Version};
use crate::store::{StoreError, StoredRoom};

/// Which room: the ARTC app and channel (one app's channels never collide with another's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    pub app: AppId,
    pub channel: ChannelId,
}

impl std::fmt::Display for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.app, self.channel)
    }
}

/// Room state persistence with optimistic concurrency.
pub trait StateStore: Send + Sync {
    /// The stored room, read strongly consistently, or `None` if it was never written.
    fn load(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send;

    /// Writes `room` as version `expected.next()`, only if the stored version is still `expected`
    /// ([`Version::NONE`]: only if the room does not exist). Otherwise
    /// [`StoreError::VersionConflict`] and nothing is written.
    fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What an MPU command amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpuDone {
    /// The task now is what the command asked for (including the idempotent cases: Start of an
    /// existing task made to match, Stop of a task already gone).
    Applied { request_id: Option<String> },
    /// Update found no task (Alibaba stopped it): nothing runs now.
    TaskMissing,
}

/// The MPU API at the level of the core's commands.
pub trait MpuPort: Send + Sync {
    /// Executes one command for `room`. `version` is the room version the command was decided
    /// from (for logs and for tests that check no stale version ever calls).
    fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> impl Future<Output = Result<MpuDone, MpuError>> + Send;
}

/// Wall-clock milliseconds since the Unix epoch, injected so tests control time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

// Shared ownership: the local server and tests hand the same store, fake or clock to several
// shells and inspect it afterwards.
impl<T: Clock> Clock for std::sync::Arc<T> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<T: MpuPort> MpuPort for std::sync::Arc<T> {
    fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> impl Future<Output = Result<MpuDone, MpuError>> + Send {
        (**self).execute(room, command, version)
    }
}

impl<T: StateStore> StateStore for std::sync::Arc<T> {
    fn load(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send {
        (**self).load(key)
    }

    fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save(key, room, expected)
    }
}
