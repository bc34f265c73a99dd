//! Identifier newtypes. Parsing is the validation: a value of one of these types is always
//! acceptable to Alibaba, so nothing downstream re-checks or has to guess which string is which.
//!
//! Alibaba's rule for AppId, ChannelId, UserId and TaskId is `[A-Za-z0-9_-]`, at most 64
//! characters (TaskId at most 55). SessionId and MsgId are produced by Alibaba with no documented
//! alphabet, so they accept any visible ASCII up to 128 characters: rejecting a real callback
//! because its message id had a `.` in it would lose an event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long, the limit is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} contains {found:?} at position {at}; allowed: {allowed}")]
    BadChar {
        kind: &'static str,
        found: char,
        at: usize,
        allowed: &'static str,
    },
}

#[derive(Clone, Copy)]
enum Alphabet {
    /// `[A-Za-z0-9_-]`, Alibaba's rule for names the caller chooses.
    Name,
    /// Visible ASCII, for opaque ids Alibaba generates.
    Opaque,
}

impl Alphabet {
    fn allows(self, c: char) -> bool {
        match self {
            Alphabet::Name => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            Alphabet::Opaque => c.is_ascii_graphic(),
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Alphabet::Name => "A-Z a-z 0-9 _ -",
            Alphabet::Opaque => "visible ASCII",
        }
    }
}

fn check(kind: &'static str, s: &str, max: usize, alphabet: Alphabet) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if let Some((at, found)) = s.chars().enumerate().find(|(_, c)| !alphabet.allows(*c)) {
        return Err(IdError::BadChar {
            kind,
            found,
            at,
            allowed: alphabet.describe(),
        });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:expr, $alphabet:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest value Alibaba accepts.
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(stringify!($name), &s, $max, $alphabet)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// The ARTC application id (`AppId` in every call and callback).
    AppId, 64, Alphabet::Name);
string_id!(
    /// An ARTC channel: one room, one broadcast at a time, one bypass task.
    ChannelId, 64, Alphabet::Name);
string_id!(
    /// An ARTC user id (streamer, co-streamer or viewer).
    UserId, 64, Alphabet::Name);
string_id!(
    /// One connection of a user to a channel. A user who reconnects gets a new session; events of
    /// an older session must not undo the newer one.
    SessionId, 128, Alphabet::Opaque);
string_id!(
    /// A callback message id, the de-duplication key of ARTC callbacks.
    MsgId, 128, Alphabet::Opaque);
string_id!(
    /// The id of a bypass (MPU) task. Chosen by us, deterministically (see [`TaskId::for_broadcast`]),
    /// so that a retried Start addresses the same task.
    TaskId, 55, Alphabet::Name);

impl TaskId {
    /// The task of the broadcast of `channel` that started at `started`.
    ///
    /// Deterministic (no randomness, no clock): every handler that sees the same broadcast computes
    /// the same id, so a retried or duplicated Start hits "task already exists" instead of creating a
    /// second task. The broadcast's start makes a new broadcast in the same channel a new task, which
    /// avoids colliding with a stopped task Alibaba has not cleared yet. Channel ids longer than 44
    /// characters (with a 10-digit time) are shortened with a hash of the full id to stay within
    /// the 55-character limit.
    pub fn for_broadcast(channel: &ChannelId, started: Timestamp) -> TaskId {
        let suffix = format!("_{}", started.secs());
        let keep = TaskId::MAX_LEN - suffix.len();
        let ch = channel.as_str();
        let stem = if ch.len() <= keep {
            ch.to_owned()
        } else {
            // ASCII only (parsing guarantees it), so byte slicing is on a char boundary.
            format!("{}-{:08x}", &ch[..keep - 9], fnv1a32(ch.as_bytes()))
        };
        TaskId(stem + &suffix)
    }
}

/// FNV-1a, 32 bit: a stable, dependency-free hash (std's hasher is not stable across releases).
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A point in time in Unix seconds, as Alibaba's callbacks carry it. Only ever arrives as data:
/// the domain never reads a clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }
    pub const fn secs(self) -> u64 {
        self.0
    }
    pub const fn saturating_add(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The optimistic-concurrency counter of a room's stored state. Every successful write increments
/// it, and every write is conditional on the version that was read, so two handlers that read the
/// same state cannot both commit: the loser re-reads and re-decides.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of a room that has never been stored.
    pub const NONE: Version = Version(0);
    pub const fn new(v: u64) -> Self {
        Self(v)
    }
    pub const fn get(self) -> u64 {
        self.0
    }
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_alibabas_rule() {
        assert!(ChannelId::parse("room-1001_A").is_ok());
        assert_eq!(
            ChannelId::parse(""),
            Err(IdError::Empty { kind: "ChannelId" })
        );
        assert_eq!(
            UserId::parse("bob smith"),
            Err(IdError::BadChar {
                kind: "UserId",
                found: ' ',
                at: 3,
                allowed: "A-Z a-z 0-9 _ -"
            })
        );
        assert!(AppId::parse("a".repeat(64)).is_ok());
        assert_eq!(
            AppId::parse("a".repeat(65)),
            Err(IdError::TooLong {
                kind: "AppId",
                len: 65,
                max: 64
            })
        );
        assert!(TaskId::parse("t".repeat(55)).is_ok());
        assert!(TaskId::parse("t".repeat(56)).is_err());
        assert!(UserId::parse("用户").is_err());
    }

    #[test]
    fn opaque_ids_accept_visible_ascii_only() {
        assert!(MsgId::parse("4f1c.9a:77/x").is_ok());
        assert!(SessionId::parse("0dr15rrnhkz0jnvz6o8sxo01hoondhu1").is_ok());
        assert!(MsgId::parse("a b").is_err());
        assert!(MsgId::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: ChannelId = serde_json::from_str("\"room-1\"").expect("valid id");
        assert_eq!(ok.as_str(), "room-1");
        let err = serde_json::from_str::<ChannelId>("\"room 1\"").expect_err("space rejected");
        assert!(err.to_string().contains("ChannelId contains ' '"), "{err}");
    }

    #[test]
    fn task_ids_are_deterministic_and_fit() {
        let ch = ChannelId::parse("room-1001").expect("valid");
        let t = TaskId::for_broadcast(&ch, Timestamp::from_secs(1_704_164_645));
        assert_eq!(t.as_str(), "room-1001_1704164645");
        assert_eq!(
            t,
            TaskId::for_broadcast(&ch, Timestamp::from_secs(1_704_164_645))
        );

        let long = ChannelId::parse("c".repeat(64)).expect("valid");
        let other = ChannelId::parse(format!("{}d", "c".repeat(63))).expect("valid");
        let a = TaskId::for_broadcast(&long, Timestamp::from_secs(u64::MAX));
        let b = TaskId::for_broadcast(&other, Timestamp::from_secs(u64::MAX));
        assert!(a.as_str().len() <= TaskId::MAX_LEN, "{a}");
        assert_ne!(
            a, b,
            "long channels that share a prefix get different tasks"
        );
        assert!(TaskId::parse(a.as_str()).is_ok());
    }
}
