//! Cross-room PK: two rooms, each with its own live broadcast, shown side by side in both
//! streams. The link is a room fact written by the app's backend to **both** rooms at once (the
//! shell's two-room transaction), and it holds only while this room's broadcast is the one it
//! was made with: once the host who linked it is no longer broadcasting, the room's own picture
//! comes back even before the unlink is written.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, Timestamp, UserId};

/// This room's side of a PK.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PkLink {
    /// The other room.
    pub peer: ChannelId,
    /// The other room's host when the PK was made (shown on the right half).
    pub peer_host: UserId,
    /// This room's host when the PK was made: the PK holds while they broadcast.
    pub host: UserId,
    /// When that broadcast started: a later broadcast (after a gap) is not the PK's, even by
    /// the same host. (A late event can only move a broadcast's start earlier.)
    pub started: Timestamp,
}

/// The room's latest PK write: a link, or `None` for an ended PK. The newest wins (ties by
/// content), so it merges in any order like every other fact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StampedPk {
    pub at: Timestamp,
    pub link: Option<PkLink>,
}
