//! The reference model: who should be on stage, replayed from the *true* history in its true
//! order. Written from the product guide and the rules in ARCHITECTURE.md, importing nothing from
//! costream — as in AWS's ShardStore, this small executable model is the spec.
//!
//! Rules:
//! - A user is in the channel while one of their sessions is (a reconnect overlaps the old
//!   connection, so the user never leaves); a Join as a viewer (role 2) is not "in" for the stage,
//!   a role update to interactive is, a role update to viewer or a Leave is out.
//! - A publish *start* while no broadcast is live begins one, hosted by its user. The broadcast
//!   lasts while the host is in the channel as an interactive member; it ends when they leave,
//!   become a viewer, or the channel closes. Co-streamers left behind do not take over.
//! - The stage: the host first (camera on or off), then co-streamers who publish now, by when
//!   their publishing started (ties by user id), at most `max_panes`.
//! - The task: none without a broadcast; MixMode 0 relaying the host when the host is alone on
//!   stage; MixMode 1 with the stage's users in that order otherwise.

use std::collections::{BTreeMap, BTreeSet};

/// What a user did, as it really happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Joined as an interactive member (`viewer = false`) or as a viewer.
    Join {
        viewer: bool,
    },
    Publish,
    Unpublish,
    /// Left (with the role they had).
    Leave {
        viewer: bool,
    },
    ToInteractive,
    ToViewer,
}

/// One true event of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    User {
        at: u64,
        user: String,
        session: String,
        act: Act,
    },
    ChannelClose {
        at: u64,
    },
    /// The CDN saw the stream start or stop (does not change who is on stage).
    Cdn {
        at: u64,
        live: bool,
    },
}

/// What the room's bypass task should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Off,
    /// MixMode 0, relaying this user.
    Single(String),
    /// MixMode 1, these users in pane order.
    Mixed(Vec<String>),
}

#[derive(Debug, Default)]
struct User {
    /// Sessions in the channel as interactive members.
    interactive: BTreeSet<String>,
    /// Sessions that publish now.
    publishing: BTreeSet<String>,
    /// When the user's current publishing began.
    since: Option<u64>,
}

/// Replays `history` (in true order) and says what the task should be.
pub fn expected(history: &[Truth], max_panes: usize) -> Expect {
    let mut users: BTreeMap<String, User> = BTreeMap::new();
    let mut host: Option<String> = None;
    for truth in history {
        match truth {
            Truth::Cdn { .. } => {}
            Truth::ChannelClose { .. } => {
                users.clear();
                host = None;
            }
            Truth::User {
                at,
                user,
                session,
                act,
            } => {
                let u = users.entry(user.clone()).or_default();
                match act {
                    Act::Join { viewer: false } | Act::ToInteractive => {
                        u.interactive.insert(session.clone());
                    }
                    Act::Join { viewer: true } => {}
                    Act::Publish => {
                        u.interactive.insert(session.clone());
                        if u.publishing.is_empty() {
                            u.since = Some(*at);
                        }
                        u.publishing.insert(session.clone());
                        if host.is_none() {
                            host = Some(user.clone());
                        }
                    }
                    Act::Unpublish => {
                        u.publishing.remove(session);
                    }
                    Act::Leave { .. } | Act::ToViewer => {
                        u.interactive.remove(session);
                        u.publishing.remove(session);
                    }
                }
                if u.publishing.is_empty() {
                    u.since = None;
                }
                let gone = u.interactive.is_empty();
                if gone && host.as_deref() == Some(user.as_str()) {
                    host = None;
                }
            }
        }
    }
    let Some(host) = host else {
        return Expect::Off;
    };
    let mut co: Vec<(u64, &String)> = users
        .iter()
        .filter(|(name, _)| **name != host)
        .filter_map(|(name, u)| u.since.map(|s| (s, name)))
        .collect();
    co.sort();
    let mut stage = vec![host];
    stage.extend(
        co.into_iter()
            .take(max_panes.saturating_sub(1))
            .map(|(_, u)| u.clone()),
    );
    if stage.len() == 1 {
        Expect::Single(stage.remove(0))
    } else {
        Expect::Mixed(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: u64, user: &str, session: &str, act: Act) -> Truth {
        Truth::User {
            at,
            user: user.into(),
            session: session.into(),
            act,
        }
    }

    #[test]
    fn seed_flow() {
        let mut h = vec![
            ev(1, "h", "h1", Act::Join { viewer: false }),
            ev(2, "h", "h1", Act::Publish),
        ];
        assert_eq!(expected(&h, 16), Expect::Single("h".into()));
        h.push(ev(3, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h, 16),
            Expect::Mixed(vec!["h".into(), "g".into()])
        );
        h.push(ev(4, "g", "g1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16), Expect::Single("h".into()));
        h.push(ev(5, "h", "h1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16), Expect::Off);
    }

    #[test]
    fn co_streamers_left_behind_do_not_take_over_and_reconnects_keep_the_host() {
        let h = vec![
            ev(1, "h", "h1", Act::Publish),
            ev(2, "g", "g1", Act::Publish),
            ev(3, "h", "h2", Act::Join { viewer: false }),
            ev(4, "h", "h1", Act::Leave { viewer: false }),
        ];
        assert_eq!(
            expected(&h, 16),
            Expect::Mixed(vec!["h".into(), "g".into()]),
            "the reconnect overlapped: still the host, camera off in the new session"
        );
        let mut h2 = h.clone();
        h2.push(ev(5, "h", "h2", Act::Leave { viewer: false }));
        assert_eq!(expected(&h2, 16), Expect::Off);
        h2.push(ev(6, "g", "g1", Act::Unpublish));
        h2.push(ev(7, "g", "g1", Act::Publish));
        assert_eq!(expected(&h2, 16), Expect::Single("g".into()), "a new start");
    }

    #[test]
    fn the_stage_is_bounded_and_ordered_by_start() {
        let mut h = vec![ev(1, "h", "h", Act::Publish)];
        for (i, name) in ["c", "b", "a"].iter().enumerate() {
            h.push(ev(10 + i as u64, name, name, Act::Publish));
        }
        assert_eq!(
            expected(&h, 3),
            Expect::Mixed(vec!["h".into(), "c".into(), "b".into()])
        );
    }
}
