//! The seams between the shell and the outside world: the room store and the MPU API, each with
//! its own error type that says only what the shell acts on (retry? may it still land?), nothing
//! about HTTP or DynamoDB. The clock is the third input ([`Clock`], shared with the Alibaba client).
//!
//! Implementations: [`StateStore`] — `store::memory::InMemoryStore` (DynamoDB's conditional-write
//! semantics in memory) and `costream_dynamo::DynamoStore`; [`MpuPort`] — one adapter,
//! [`crate::mpu::AlibabaMpu`], over a Live API transport (the real client, or the simulated Live API
//! in `costream-sim` for `serve` and tests). There is no second MPU fake: tests run the real
//! adapter's idempotency rules against the simulator.

use std::future::Future;

use costream_core::{AppId, ChannelId, Command, MixMode, Outputs, Shape, TaskId, Version};

use crate::store::{HistoryEntry, InboxEntry, Life, StoredRoom};

pub use costream_alibaba::clock::{Clock, ManualClock, SystemClock};

/// An append needs the item to live at least this much longer (its TTL is refreshed by the
/// versioned write that folds it, not by the append).
pub const APPEND_MIN_TTL_MS: u64 = 3_600_000;

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

    /// Writes `room` as version `expected.next()`, only if the stored item is still version
    /// `expected` of the life `room.life` ([`Version::NONE`]: only if there is no item, or
    /// only one past its expiry at `room.at_ms`). Otherwise [`StoreError::VersionConflict`]
    /// (with the item as it is, where the store can tell) and nothing is written.
    fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends `entry` to the room's inbox without regard to its version — the version goes up,
    /// so a versioned writer that read before sees the new events, and the room is marked due
    /// at `due_ms`, so the repair loop folds them if nobody else does — only if the item exists
    /// in the life `life`, is not about to expire (within [`APPEND_MIN_TTL_MS`] of
    /// `entry.at_ms`) and holds fewer than [`crate::store::MAX_INBOX`] entries: otherwise
    /// [`StoreError::VersionConflict`] with the item as it is. Returns the item as written.
    /// Appends never conflict with each other: a burst of callbacks into one room all commit.
    fn append(
        &self,
        key: &RoomKey,
        life: Option<&Life>,
        entry: &InboxEntry,
        due_ms: u64,
    ) -> impl Future<Output = Result<StoredRoom, StoreError>> + Send;

    /// The room as this process last wrote or read it, if it remembers it (see
    /// [`crate::store::cached::Cached`]) — no request. Possibly stale: only for a caller whose
    /// next step is a write conditional on its version (which finds out), or who re-reads before
    /// concluding anything from it. Stores that remember nothing answer `None`.
    fn cached(&self, key: &RoomKey) -> Option<StoredRoom> {
        let _ = key;
        None
    }

    /// The stored room read eventually consistently (it may miss the last second's writes, at
    /// half the cost): for status answers, never for a decision.
    fn load_eventually(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send {
        self.load(key)
    }

    /// [`StateStore::save`], and the history entry of the MPU call whose result the write
    /// records, in one request where the store can (DynamoDB: one transaction). The entry is
    /// best effort (it never fails the save); the save is exactly `save`'s.
    fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            self.save(key, room, expected).await?;
            if let Err(e) = self.append_history(key, entry).await {
                tracing::warn!(error = %e, "could not write the room's history");
            }
            Ok(())
        }
    }

    /// [`StateStore::save`] that also counts one task Start of the room's app in `minute`
    /// against `cap` (as [`StateStore::take_start`]), both or neither: `Ok(false)` when the
    /// minute is full — then nothing was written.
    fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move {
            if !self.take_start(&key.app, minute, cap).await? {
                return Ok(false);
            }
            self.save(key, room, expected).await.map(|()| true)
        }
    }

    /// Writes two rooms at once, each only if its stored version is still the one given, or
    /// neither ([`StoreError::VersionConflict`] when a version moved): a PK's link and its end
    /// are never in one room only. A store that can't do it says so.
    fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let room = format!("{} and {}", a.0, b.0);
        async move {
            Err(StoreError::Failed {
                room,
                source: "this store cannot write two rooms in one transaction".into(),
            })
        }
    }

    /// Counts one task Start of `app` in minute `minute` (unix minutes) if fewer than `cap` were
    /// counted there: `true` when counted, `false` when the minute is full. Shared by every
    /// process (one conditional increment). A store without the counter admits every Start.
    fn take_start(
        &self,
        app: &AppId,
        minute: u64,
        cap: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (app, minute, cap);
        async { Ok(true) }
    }

    /// Rooms of `app` with a webhook due at or before `now_ms` (the head of their outbox),
    /// most overdue first, at most `limit`: an index of its own, so a backlog of repairs never
    /// starves the webhooks (nor the reverse). Stores without webhooks have none.
    fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RoomKey>, StoreError>> + Send {
        let _ = (app, now_ms, limit);
        async { Ok(Vec::new()) }
    }

    /// Rooms of `app` whose `due_ms` is at or before `now_ms`, most overdue first, at most
    /// `limit`. Read from an index (eventually consistent): the caller re-reads each room before
    /// acting.
    fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueRoom>, StoreError>> + Send;

    /// Rooms of `app` whose record names a task (running, or begun and unconfirmed), with it.
    /// From an index too: the caller re-reads each room before acting.
    fn rooms_with_tasks(
        &self,
        app: &AppId,
    ) -> impl Future<Output = Result<Vec<(RoomKey, TaskId)>, StoreError>> + Send;

    /// Adds a decision to the room's bounded history (the newest [`crate::store::HISTORY_LEN`]
    /// are kept). Writing the same entry twice, or an entry older than the one in its slot,
    /// changes nothing.
    fn append_history(
        &self,
        key: &RoomKey,
        entry: &HistoryEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The room's kept decisions, oldest first.
    fn history(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send;
}

/// A room in the due index: when it is due, and since when it has been failing (if it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRoom {
    pub key: RoomKey,
    pub due_ms: u64,
    pub failing_since_ms: Option<u64>,
}

/// A task as `ListRtcMPUTaskDetail` shows it, named the costream way (`<channel>_<secs>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTask {
    pub channel: ChannelId,
    pub task: TaskId,
    /// `None` if the answer's `MixMode` was missing or unknown.
    pub mix_mode: Option<MixMode>,
    /// The users shown (MixMode 0: the relayed user; 1: the panes' users).
    pub users: Vec<String>,
    /// The restreaming targets it pushes to (the `MultiStreamURL` entries with `IsAliCdn` false;
    /// none with a `StreamURL`), or `None` when the answer shows neither.
    pub extra_outputs: Option<Vec<String>>,
}

impl ListedTask {
    /// Whether the task does what `shape` and `outputs` say: the same mode, the same users and,
    /// where the listing shows them, the same restreaming targets.
    pub fn matches(&self, shape: &Shape, outputs: &Outputs) -> bool {
        let same_outputs = self.extra_outputs.as_ref().is_none_or(|listed| {
            let mut listed: Vec<&str> = listed.iter().map(String::as_str).collect();
            let mut want: Vec<&str> = outputs.urls().iter().map(|u| u.expose()).collect();
            listed.sort_unstable();
            want.sort_unstable();
            listed == want
        });
        same_outputs && self.shows(shape)
    }

    /// Whether the task shows what `shape` says: the same mode and the same users.
    fn shows(&self, shape: &Shape) -> bool {
        let mut want: Vec<&str> = match shape {
            Shape::Single { user } | Shape::Voice { user } => vec![user.as_str()],
            Shape::VoiceMix { users } => users.iter().map(|u| u.as_str()).collect(),
            Shape::Mixed { layout } => layout.users().into_iter().map(|u| u.as_str()).collect(),
        };
        let mut have: Vec<&str> = self.users.iter().map(String::as_str).collect();
        want.sort_unstable();
        have.sort_unstable();
        // A user subscribed twice (screen and audio) counts once.
        have.dedup();
        self.mix_mode == Some(shape.mix_mode()) && want == have
    }
}

/// Every task of the app the Live API listed, with what was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// Tasks named by costream.
    pub tasks: Vec<ListedTask>,
    /// Well-formed tasks not named by costream: never touched.
    pub foreign: u32,
    /// Entries without a usable `ChannelId` / `TaskId`: skipped, never touched.
    pub malformed: u32,
    /// False when the listing stopped at the page limit: absence from it proves nothing.
    pub complete: bool,
}

/// What an MPU command amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpuDone {
    /// The task now is what the command asked for (including the idempotent cases: Start of an
    /// existing task made to match, Stop of a task already gone).
    Done {
        request_id: Option<String>,
        /// The call pushed a freshly signed StreamURL (a Start that created the task, or a
        /// re-signing Update).
        fresh_url: bool,
    },
    /// Update found no task (Alibaba stopped it): nothing runs now.
    TaskMissing,
}

/// Why an MPU command did not complete, as far as the shell is concerned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action} failed ({kind}): {reason}")]
pub struct MpuFailure {
    pub kind: MpuFailureKind,
    /// Which call (`start`, `update`, `stop`).
    pub action: &'static str,
    /// A redacted, human-readable reason (the service's code and message, or the transport error).
    pub reason: String,
}

/// The two facts about a failed MPU call that decide what the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpuFailureKind {
    /// The call certainly has no effect, now or later (the service refused it, or it was never
    /// sent). `retryable`: trying again later can succeed (throttling, 5xx), as opposed to a
    /// refusal no retry changes (bad parameters, access denied).
    Refused { retryable: bool },
    /// No definite answer (timeout, broken connection, unreadable answer): the service may still
    /// apply the request after we gave up, so no other call for the room may overlap it.
    InDoubt,
}

impl std::fmt::Display for MpuFailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MpuFailureKind::Refused { retryable: true } => "refused, retryable",
            MpuFailureKind::Refused { retryable: false } => "refused",
            MpuFailureKind::InDoubt => "in doubt",
        })
    }
}

impl MpuFailure {
    /// Whether the call certainly has no effect (see [`MpuFailureKind::Refused`]).
    pub fn is_definite(&self) -> bool {
        matches!(self.kind, MpuFailureKind::Refused { .. })
    }

    /// Whether trying the call again later can help (in-doubt calls always can).
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            MpuFailureKind::Refused { retryable } => retryable,
            MpuFailureKind::InDoubt => true,
        }
    }
}

/// Failures of a state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the room since it was read (or its life or expiry did not allow the
    /// write): decide again from `current`, the item as it is when the store could tell
    /// (DynamoDB's `ReturnValuesOnConditionCheckFailure`; `None`: absent, or unknown — read it).
    #[error("room {room} was changed concurrently (expected version {expected})")]
    VersionConflict {
        room: String,
        expected: Version,
        current: Option<Box<StoredRoom>>,
    },
    /// The stored item can't be understood. Never "fixed" by resetting the room: that would
    /// forget a running task.
    #[error("stored room {room} is corrupt: {reason}")]
    Corrupt { room: String, reason: String },
    /// Throttling, timeouts, 5xx: worth retrying the whole event later.
    #[error("state store temporarily unavailable for room {room}")]
    Unavailable {
        room: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else (permissions, missing table, validation).
    #[error("state store request failed for room {room}")]
    Failed {
        room: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::VersionConflict { .. } | StoreError::Unavailable { .. }
        )
    }
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
    ) -> impl Future<Output = Result<MpuDone, MpuFailure>> + Send;

    /// Every task of the app (`ListRtcMPUTaskDetail`, paged).
    fn list_tasks(&self) -> impl Future<Output = Result<Listing, MpuFailure>> + Send;

    /// Whether `task` exists, asked by its TaskId (`ListRtcMPUTaskDetail(TaskId)`): the
    /// confirmation before a task is recorded as gone.
    fn task_exists(&self, task: &TaskId) -> impl Future<Output = Result<bool, MpuFailure>> + Send;

    /// Re-signs the running task's StreamURL: an Update carrying the task's complete parameters
    /// (`shape`) and a freshly signed URL. `version` as for [`MpuPort::execute`].
    fn refresh_output(
        &self,
        room: &RoomKey,
        task: &TaskId,
        shape: &Shape,
        outputs: &Outputs,
        version: Version,
    ) -> impl Future<Output = Result<MpuDone, MpuFailure>> + Send;
}

impl<T: MpuPort> MpuPort for std::sync::Arc<T> {
    fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        version: Version,
    ) -> impl Future<Output = Result<MpuDone, MpuFailure>> + Send {
        (**self).execute(room, command, version)
    }

    fn list_tasks(&self) -> impl Future<Output = Result<Listing, MpuFailure>> + Send {
        (**self).list_tasks()
    }

    fn task_exists(&self, task: &TaskId) -> impl Future<Output = Result<bool, MpuFailure>> + Send {
        (**self).task_exists(task)
    }

    fn refresh_output(
        &self,
        room: &RoomKey,
        task: &TaskId,
        shape: &Shape,
        outputs: &Outputs,
        version: Version,
    ) -> impl Future<Output = Result<MpuDone, MpuFailure>> + Send {
        (**self).refresh_output(room, task, shape, outputs, version)
    }
}

impl<T: StateStore> StateStore for std::sync::Arc<T> {
    fn load(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send {
        (**self).load(key)
    }

    fn cached(&self, key: &RoomKey) -> Option<StoredRoom> {
        (**self).cached(key)
    }

    fn load_eventually(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Option<StoredRoom>, StoreError>> + Send {
        (**self).load_eventually(key)
    }

    fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_noting(key, room, expected, entry)
    }

    fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).save_counting_start(key, room, expected, minute, cap)
    }

    fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save(key, room, expected)
    }

    fn append(
        &self,
        key: &RoomKey,
        life: Option<&Life>,
        entry: &InboxEntry,
        due_ms: u64,
    ) -> impl Future<Output = Result<StoredRoom, StoreError>> + Send {
        (**self).append(key, life, entry, due_ms)
    }

    fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_pair(a, b)
    }

    fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueRoom>, StoreError>> + Send {
        (**self).due_rooms(app, now_ms, limit)
    }

    fn rooms_with_tasks(
        &self,
        app: &AppId,
    ) -> impl Future<Output = Result<Vec<(RoomKey, TaskId)>, StoreError>> + Send {
        (**self).rooms_with_tasks(app)
    }

    fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RoomKey>, StoreError>> + Send {
        (**self).hook_rooms(app, now_ms, limit)
    }

    fn take_start(
        &self,
        app: &AppId,
        minute: u64,
        cap: u32,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).take_start(app, minute, cap)
    }

    fn append_history(
        &self,
        key: &RoomKey,
        entry: &HistoryEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).append_history(key, entry)
    }

    fn history(
        &self,
        key: &RoomKey,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send {
        (**self).history(key)
    }
}
