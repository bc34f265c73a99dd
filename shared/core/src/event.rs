//! Room events: what the outside world tells us, already parsed into plain data. Wire formats
//! (ARTC callback JSON, CDN query strings) are turned into these by `inbound`; the core only ever
//! sees these types.

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, Timestamp, UserId};

/// An ARTC role. `Interactive` (ARTC role 1, "streamer") may publish; `Live` (role 2, "viewer")
/// only watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Interactive,
    Live,
}

impl Role {
    /// ARTC's numeric role as sent in callbacks.
    pub fn from_code(code: i64) -> Result<Role, EventError> {
        match code {
            1 => Ok(Role::Interactive),
            2 => Ok(Role::Live),
            other => Err(EventError::UnknownRole(other)),
        }
    }
}

/// What a user did, from the `EventTag` of an ARTC `UserEvent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserAction {
    Join,
    Leave,
    Publish,
    Unpublish,
    /// The user's role changed to this one.
    RoleUpdate(Role),
}

impl UserAction {
    /// Parses an ARTC `EventTag` (case-insensitively). `Roleupdate` needs the event's `Role`.
    pub fn from_tag(tag: &str, role: Option<i64>) -> Result<UserAction, EventError> {
        let action = match tag.to_ascii_lowercase().as_str() {
            "join" => UserAction::Join,
            "leave" => UserAction::Leave,
            "publish" => UserAction::Publish,
            "unpublish" => UserAction::Unpublish,
            "roleupdate" => {
                let code = role.ok_or(EventError::MissingRole)?;
                UserAction::RoleUpdate(Role::from_code(code)?)
            }
            _ => return Err(EventError::UnknownTag(tag.to_owned())),
        };
        Ok(action)
    }

    /// Whether this action leaves the user publishing.
    pub fn publishes(self) -> bool {
        matches!(self, UserAction::Publish)
    }

    /// Order of actions that carry the same timestamp. Callbacks have one-second resolution, so
    /// "join, publish, unpublish, leave" within one second are common; they are ranked in a fixed
    /// order, which makes the outcome independent of arrival order: joining first, leaving last,
    /// and a Publish after an Unpublish (the same-second rule: a user still in the channel whose
    /// events of that second include a Publish counts as publishing).
    pub(crate) fn rank(self) -> u8 {
        match self {
            UserAction::Join => 0,
            UserAction::RoleUpdate(Role::Interactive) => 1,
            // Within one second a Publish wins over an Unpublish: a camera toggle keeps the
            // pane (a placeholder is far less harmful than dropping a live co-streamer), and a
            // real stop is followed by a later event anyway.
            UserAction::Unpublish => 2,
            UserAction::Publish => 3,
            UserAction::RoleUpdate(Role::Live) => 4,
            UserAction::Leave => 5,
        }
    }
}

/// One ARTC user event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserEvent {
    pub user: UserId,
    pub session: SessionId,
    pub at: Timestamp,
    pub action: UserAction,
    /// The role the callback reported, if any. Join and Leave of viewers (`Role::Live`) are
    /// dropped by the core: viewers never take the stage, and storing them would grow the room.
    pub role: Option<Role>,
}

/// A CDN ingest callback's action for the room's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CdnAction {
    /// The CDN receives the room's stream: viewers can play it.
    Publish,
    /// The CDN stopped receiving it.
    PublishDone,
}

/// Everything that can happen to a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomEvent {
    User(UserEvent),
    /// ARTC `ChannelEvent` close: everybody is gone.
    ChannelClosed {
        at: Timestamp,
    },
    /// CDN ingest callback, with its `time`.
    Cdn {
        action: CdnAction,
        at: Timestamp,
    },
    /// The app's backend registered (or, with `None`, cleared) the room's host at `at`: from then
    /// on only that user can start the broadcast. The latest registration wins.
    HostRegistered {
        user: Option<UserId>,
        at: Timestamp,
    },
    /// The app's backend set the room's settings at `at` (the newest settings win as a whole).
    Settings {
        settings: Box<crate::settings::RoomSettings>,
        at: Timestamp,
    },
    /// The app's backend linked the room into a PK (`Some`) or the PK ended (`None`) at `at`;
    /// written to both rooms of the PK in one transaction.
    Pk {
        link: Option<crate::pk::PkLink>,
        at: Timestamp,
    },
    /// An ARTC `UserEvent` with `EventTag` `CameraOpen` (`on`) or `CameraClose`: the user's
    /// camera in that session. Only rooms that hide camera-less co-hosts act on it.
    Camera {
        user: UserId,
        session: SessionId,
        on: bool,
        at: Timestamp,
    },
}

impl RoomEvent {
    /// When the event happened, by the sender's clock.
    pub fn at(&self) -> Timestamp {
        match self {
            RoomEvent::User(e) => e.at,
            RoomEvent::ChannelClosed { at }
            | RoomEvent::Cdn { at, .. }
            | RoomEvent::HostRegistered { at, .. }
            | RoomEvent::Settings { at, .. }
            | RoomEvent::Camera { at, .. }
            | RoomEvent::Pk { at, .. } => *at,
        }
    }

    /// Rejects events from the far future. `now` comes from the caller (the core has no clock).
    /// A timestamp far ahead would otherwise win every "latest event" comparison forever and pin
    /// the room in that state.
    pub fn check_time(
        &self,
        now: Timestamp,
        max_skew_secs: u64,
        floor: Timestamp,
    ) -> Result<(), EventError> {
        let at = self.at();
        if at < floor {
            return Err(EventError::TooOld { at, floor });
        }
        if at > now.saturating_add(max_skew_secs) {
            return Err(EventError::FutureTimestamp {
                at,
                now,
                max_skew_secs,
            });
        }
        Ok(())
    }
}

/// Why an event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("unknown EventTag {0:?}; expected Join, Leave, Publish, Unpublish or Roleupdate")]
    UnknownTag(String),
    #[error("Roleupdate event without a Role")]
    MissingRole,
    #[error("unknown Role {0}; expected 1 (interactive) or 2 (live viewer)")]
    UnknownRole(i64),
    #[error("Timestamp {at} is before {floor}: no ARTC event is that old")]
    TooOld { at: Timestamp, floor: Timestamp },
    #[error("Timestamp {at} is more than {max_skew_secs} s after now ({now})")]
    FutureTimestamp {
        at: Timestamp,
        now: Timestamp,
        max_skew_secs: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_case_insensitively() {
        assert_eq!(
            UserAction::from_tag("Publish", None),
            Ok(UserAction::Publish)
        );
        assert_eq!(
            UserAction::from_tag("UNPUBLISH", None),
            Ok(UserAction::Unpublish)
        );
        assert_eq!(
            UserAction::from_tag("Roleupdate", Some(2)),
            Ok(UserAction::RoleUpdate(Role::Live))
        );
        assert_eq!(
            UserAction::from_tag("Roleupdate", None),
            Err(EventError::MissingRole)
        );
        assert_eq!(
            UserAction::from_tag("RoleUpdate", Some(7)),
            Err(EventError::UnknownRole(7))
        );
        assert_eq!(
            UserAction::from_tag("CameraOpen", None),
            Err(EventError::UnknownTag("CameraOpen".into()))
        );
    }

    #[test]
    fn far_future_is_rejected() {
        let ev = RoomEvent::ChannelClosed {
            at: Timestamp::from_secs(1_000),
        };
        let floor = Timestamp::from_secs(0);
        assert!(ev.check_time(Timestamp::from_secs(900), 300, floor).is_ok());
        let err = ev
            .check_time(Timestamp::from_secs(600), 300, floor)
            .expect_err("too far ahead");
        assert_eq!(
            err.to_string(),
            "Timestamp 1000 is more than 300 s after now (600)"
        );
    }

    #[test]
    fn absurdly_old_is_rejected() {
        let ev = RoomEvent::ChannelClosed {
            at: Timestamp::from_secs(0),
        };
        let err = ev
            .check_time(
                Timestamp::from_secs(2_000),
                300,
                Timestamp::from_secs(1_000),
            )
            .expect_err("before the floor");
        assert_eq!(
            err.to_string(),
            "Timestamp 0 is before 1000: no ARTC event is that old"
        );
    }
}
