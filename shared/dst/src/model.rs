//! The reference model: who should be on stage, replayed from the *true* history in its true
//! order. Written from the product guide and the rules in ARCHITECTURE.md, importing nothing from
//! costream — as in AWS's ShardStore, this small executable model is the spec.
//!
//! Rules:
//! - A user is in the channel while one of their sessions is (a reconnect overlaps the old
//!   connection, so the user never leaves); a Join as a viewer (role 2) is not "in" for the stage,
//!   a role update to interactive is, a role update to viewer or a Leave is out; a channel close
//!   puts everyone out.
//! - **The end grace:** a user back in the channel at most `grace` seconds after they were out
//!   counts as never gone (their presence periods are bridged).
//! - A publish *start* while no broadcast is live begins one, hosted by its user. The broadcast
//!   lasts while the host is in the channel (bridged as above); it ends when they are out for
//!   longer than the grace. Co-streamers left behind do not take over (only a new publish start
//!   begins a broadcast).
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

/// Each user's periods in the channel, `(from, until)` (`None`: still in), oldest first, with
/// gaps of at most `grace` seconds bridged.
fn presence(history: &[Truth], grace: u64) -> BTreeMap<String, Vec<(u64, Option<u64>)>> {
    let mut sessions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut periods: BTreeMap<String, Vec<(u64, Option<u64>)>> = BTreeMap::new();
    let set = |periods: &mut BTreeMap<String, Vec<(u64, Option<u64>)>>,
               user: &str,
               at: u64,
               present: bool| {
        let list = periods.entry(user.to_owned()).or_default();
        let open = list.last().is_some_and(|p| p.1.is_none());
        match (present, open) {
            (true, false) => match list.last_mut() {
                // Back within the grace: the same period.
                Some(last) if last.1.is_some_and(|end| at <= end + grace) => last.1 = None,
                _ => list.push((at, None)),
            },
            (false, true) => {
                if let Some(last) = list.last_mut() {
                    last.1 = Some(at);
                }
            }
            _ => {}
        }
    };
    for truth in history {
        match truth {
            Truth::Cdn { .. } => {}
            Truth::ChannelClose { at } => {
                for (user, s) in sessions.iter_mut() {
                    s.clear();
                    set(&mut periods, user, *at, false);
                }
            }
            Truth::User {
                at,
                user,
                session,
                act,
            } => {
                let s = sessions.entry(user.clone()).or_default();
                match act {
                    Act::Join { viewer: false } | Act::ToInteractive | Act::Publish => {
                        s.insert(session.clone());
                    }
                    Act::Join { viewer: true } | Act::Unpublish => {}
                    Act::Leave { .. } | Act::ToViewer => {
                        s.remove(session);
                    }
                }
                let present = !s.is_empty();
                set(&mut periods, user, *at, present);
            }
        }
    }
    periods
}

/// Replays `history` (in true order) and says what the task should be, with the end grace
/// `grace` (seconds).
pub fn expected(history: &[Truth], max_panes: usize, grace: u64) -> Expect {
    let periods = presence(history, grace);
    // When the period of `user` that contains `at` ends (`Some(None)`: still in).
    let until = |user: &str, at: u64| -> Option<Option<u64>> {
        periods
            .get(user)?
            .iter()
            .find(|(from, to)| *from <= at && to.is_none_or(|t| at < t))
            .map(|(_, to)| *to)
    };
    let mut users: BTreeMap<String, User> = BTreeMap::new();
    // The broadcast: its host and when it ends (`None`: it goes on).
    let mut broadcast: Option<(String, Option<u64>)> = None;
    for truth in history {
        match truth {
            Truth::Cdn { .. } => {}
            Truth::ChannelClose { .. } => users.clear(),
            Truth::User {
                at,
                user,
                session,
                act,
            } => {
                let u = users.entry(user.clone()).or_default();
                let mut started = false;
                match act {
                    Act::Join { viewer: false } | Act::ToInteractive => {
                        u.interactive.insert(session.clone());
                    }
                    Act::Join { viewer: true } => {}
                    Act::Publish => {
                        u.interactive.insert(session.clone());
                        if u.publishing.is_empty() {
                            u.since = Some(*at);
                            started = true;
                        }
                        u.publishing.insert(session.clone());
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
                let live = broadcast
                    .as_ref()
                    .is_some_and(|(_, end)| end.is_none_or(|e| *at < e));
                if started && !live {
                    broadcast = until(user, *at).map(|end| (user.clone(), end));
                }
            }
        }
    }
    let Some((host, None)) = broadcast else {
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
        assert_eq!(expected(&h, 16, 0), Expect::Single("h".into()));
        h.push(ev(3, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h, 16, 0),
            Expect::Mixed(vec!["h".into(), "g".into()])
        );
        h.push(ev(4, "g", "g1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16, 0), Expect::Single("h".into()));
        h.push(ev(5, "h", "h1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16, 0), Expect::Off);
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
            expected(&h, 16, 0),
            Expect::Mixed(vec!["h".into(), "g".into()]),
            "the reconnect overlapped: still the host, camera off in the new session"
        );
        let mut h2 = h.clone();
        h2.push(ev(5, "h", "h2", Act::Leave { viewer: false }));
        assert_eq!(expected(&h2, 16, 0), Expect::Off);
        h2.push(ev(6, "g", "g1", Act::Unpublish));
        h2.push(ev(7, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h2, 16, 0),
            Expect::Single("g".into()),
            "a new start"
        );
    }

    #[test]
    fn a_host_back_within_the_grace_keeps_the_broadcast() {
        let h = vec![
            ev(1, "h", "h1", Act::Publish),
            ev(2, "g", "g1", Act::Publish),
            ev(10, "h", "h1", Act::Leave { viewer: false }),
            ev(11, "x", "x1", Act::Publish),
            ev(14, "h", "h2", Act::Join { viewer: false }),
        ];
        assert_eq!(
            expected(&h, 16, 5),
            Expect::Mixed(vec!["h".into(), "g".into(), "x".into()]),
            "back after 4 s: the same broadcast, x a co-streamer"
        );
        assert_eq!(
            expected(&h, 16, 3),
            Expect::Mixed(vec!["x".into(), "g".into()]),
            "back after more than the grace: x's broadcast began at 11"
        );
        let gone = &h[..4];
        assert_eq!(
            expected(gone, 16, 5),
            Expect::Mixed(vec!["x".into(), "g".into()])
        );
    }

    #[test]
    fn the_stage_is_bounded_and_ordered_by_start() {
        let mut h = vec![ev(1, "h", "h", Act::Publish)];
        for (i, name) in ["c", "b", "a"].iter().enumerate() {
            h.push(ev(10 + i as u64, name, name, Act::Publish));
        }
        assert_eq!(
            expected(&h, 3, 0),
            Expect::Mixed(vec!["h".into(), "c".into(), "b".into()])
        );
    }
}
