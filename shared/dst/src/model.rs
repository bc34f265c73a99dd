//! The reference model: who should be on stage, replayed from the *true* history in its true
//! order. Written from the product guide and the rules in ARCHITECTURE.md and the README,
//! importing nothing from costream — as in AWS's ShardStore, this small executable model is the
//! spec.
//!
//! Rules:
//! - A user is in the channel while one of their sessions is (a reconnect overlaps the old
//!   connection, so the user never leaves; a newer session supersedes the older ones, as ARTC
//!   drops the old connection when the new one logs in); a Join as a viewer (role 2) is not "in"
//!   for the stage,
//!   a role update to interactive is, a role update to viewer or a Leave is out; a channel close
//!   puts everyone out.
//! - **The end grace:** a user back in the channel at most `grace` seconds after they were out
//!   counts as never gone (their presence periods are bridged).
//! - A publish *start* (a user's publishing begins) while no broadcast is live begins one, hosted
//!   by its user — unless the app's backend registered another host (then only that host can
//!   begin one). The broadcast lasts while the host is in the channel (bridged as above); it ends
//!   when they are out for longer than the grace, or when the backend registers someone else.
//!   Co-streamers left behind do not take over (only a new publish start begins a broadcast).
//! - The stage: the host first (camera on or off), then co-streamers who publish now, by when
//!   their publishing started (ties by user id), at most the room's pane limit (its settings', else
//!   the deployment's); a voice room (`audio_only`) has every speaker, no pane limit.
//! - The task: none without a broadcast; MixMode 0 relaying the host when the host is alone on
//!   stage (in a voice room too); otherwise MixMode 1 with these users in this order: in a PK, the
//!   host, the peer room's host, then the co-hosts; a shared screen (the `screen_share` user on
//!   stage): the sharer's screen, then — with anyone else on stage — every camera shown; else the
//!   cameras shown. With `hide_camera_off`, a co-host whose camera is off in their current session
//!   is heard but not shown (the host always is); a room whose only picture is then the host's is
//!   still a mix (it carries the others' audio).

use std::collections::{BTreeMap, BTreeSet};

/// The most panes a mix has.
pub const MAX_PANES: usize = 16;
/// The most users a voice room hears (the room's memory).
pub const MAX_SPEAKERS: usize = 64;

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
    /// The camera was switched on or off.
    Camera {
        on: bool,
    },
}

/// Settings the app's backend gave a room (the newest wins as a whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub max_panes: Option<usize>,
    pub audio_only: bool,
    pub hide_camera_off: bool,
    pub screen_share: Option<String>,
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
    /// The app's backend registered a host (or, `None`, cleared the registration).
    Registered {
        at: u64,
        user: Option<String>,
    },
    /// The app's backend set the room's settings.
    Settings {
        at: u64,
        settings: Settings,
    },
}

impl Truth {
    pub fn at(&self) -> u64 {
        match self {
            Truth::User { at, .. }
            | Truth::ChannelClose { at }
            | Truth::Cdn { at, .. }
            | Truth::Registered { at, .. }
            | Truth::Settings { at, .. } => *at,
        }
    }

    /// Whether the event itself ends a broadcast when it happens (a Leave, a switch to viewer, a
    /// channel close, a registration).
    pub fn may_end(&self) -> bool {
        matches!(
            self,
            Truth::User {
                act: Act::Leave { .. } | Act::ToViewer,
                ..
            } | Truth::ChannelClose { .. }
                | Truth::Registered { .. }
        )
    }
}

/// What the room's bypass task should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Off,
    /// MixMode 0, relaying this user.
    Single(String),
    /// MixMode 1, these users in pane order (a voice room: the speakers).
    Mixed(Vec<String>),
}

/// A broadcast: its host and its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub host: String,
    pub start: u64,
    /// When it ended (`None`: it goes on at the end of the history).
    pub end: Option<u64>,
}

/// A PK as the backend made it: with the peer room and its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pk {
    pub peer_host: String,
}

/// Whether `act` begins a session when it is the first of its session id (a viewer's Join is
/// not remembered; a camera event or a Leave alone begins nothing).
fn begins(act: &Act) -> bool {
    !matches!(
        act,
        Act::Join { viewer: true } | Act::Leave { .. } | Act::Camera { .. }
    )
}

/// Each user's periods in the channel, `(from, until)` (`None`: still in), oldest first, with
/// gaps of at most `grace` seconds bridged. A user's newer session supersedes the older ones.
fn presence(history: &[Truth], grace: u64) -> BTreeMap<String, Vec<(u64, Option<u64>)>> {
    let mut sessions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
                // A new connection supersedes the user's older ones (ARTC drops them).
                if begins(act)
                    && known
                        .entry(user.clone())
                        .or_default()
                        .insert(session.clone())
                {
                    s.clear();
                }
                match act {
                    Act::Join { viewer: false } | Act::ToInteractive | Act::Publish => {
                        s.insert(session.clone());
                    }
                    Act::Join { viewer: true } | Act::Unpublish | Act::Camera { .. } => {}
                    Act::Leave { .. } | Act::ToViewer => {
                        s.remove(session);
                    }
                }
                let present = !s.is_empty();
                set(&mut periods, user, *at, present);
            }
            Truth::Cdn { .. } | Truth::Registered { .. } | Truth::Settings { .. } => {}
        }
    }
    periods
}

#[derive(Debug, Default)]
struct User {
    /// Sessions that publish now.
    publishing: BTreeSet<String>,
    /// When the user's current publishing began.
    since: Option<u64>,
    /// The sessions seen, and the one that began last.
    sessions: BTreeSet<String>,
    current: Option<String>,
    /// The latest camera event: (time, on, session).
    camera: Option<(u64, bool, String)>,
}

/// The state of a room after its history (or a part of it), in true order.
#[derive(Debug, Default)]
struct Replay {
    users: BTreeMap<String, User>,
    broadcasts: Vec<Broadcast>,
    settings: Option<(u64, Settings)>,
}

/// Replays `history` in true order with the end grace `grace` (seconds). The presence periods
/// look ahead (a host back within the grace was never gone): they come from the whole of
/// `history`.
fn replay(history: &[Truth], grace: u64) -> Replay {
    let periods = presence(history, grace);
    // When the period of `user` that contains `at` ends (`Some(None)`: still in).
    let until = |user: &str, at: u64| -> Option<Option<u64>> {
        periods
            .get(user)?
            .iter()
            .find(|(from, to)| *from <= at && to.is_none_or(|t| at < t))
            .map(|(_, to)| *to)
    };
    let mut r = Replay::default();
    // The registered host now (None: no registration, or cleared).
    let mut registered: Option<String> = None;
    for truth in history {
        match truth {
            Truth::Cdn { .. } => {}
            Truth::Settings { at, settings } => r.settings = Some((*at, settings.clone())),
            Truth::ChannelClose { .. } => {
                for u in r.users.values_mut() {
                    u.publishing.clear();
                    u.since = None;
                }
            }
            Truth::Registered { at, user } => {
                registered = user.clone();
                if let (Some(reg), Some(b)) = (user, r.broadcasts.last_mut()) {
                    if b.host != *reg && b.end.is_none_or(|e| *at < e) {
                        b.end = Some(*at);
                    }
                }
            }
            Truth::User {
                at,
                user,
                session,
                act,
            } => {
                let u = r.users.entry(user.clone()).or_default();
                let mut started = false;
                // The session that began last is the current one, and supersedes the older
                // ones: what they published no longer counts.
                if begins(act) && u.sessions.insert(session.clone()) {
                    u.current = Some(session.clone());
                    u.publishing.clear();
                }
                match act {
                    Act::Join { .. } | Act::ToInteractive => {}
                    Act::Publish => {
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
                        u.publishing.remove(session);
                    }
                    Act::Camera { on } => {
                        let mark = (*at, *on, session.clone());
                        if u.camera.as_ref().is_none_or(|c| *c < mark) {
                            u.camera = Some(mark);
                        }
                    }
                }
                if u.publishing.is_empty() {
                    u.since = None;
                }
                let live = r
                    .broadcasts
                    .last()
                    .is_some_and(|b| b.end.is_none_or(|e| *at < e));
                let allowed = registered.as_ref().is_none_or(|h| h == user);
                if started && !live && allowed {
                    if let Some(end) = until(user, *at) {
                        r.broadcasts.push(Broadcast {
                            host: user.clone(),
                            start: *at,
                            end,
                        });
                    }
                }
            }
        }
    }
    r
}

/// The broadcast live at the end of `history`, if any.
pub fn broadcast(history: &[Truth], grace: u64) -> Option<Broadcast> {
    replay(history, grace)
        .broadcasts
        .pop()
        .filter(|b| b.end.is_none())
}

/// The broadcast that goes on at `now_ms` (ms since the Unix epoch) in `history`: one
/// not ended, or one whose host left (or the channel closed) less than `grace` seconds before
/// `now_ms` — costream must wait the end grace before it acts on such an end, since the host may
/// be back. An end by a new host registration is at once.
pub fn goes_on_at(history: &[Truth], grace: u64, now_ms: u64) -> Option<Broadcast> {
    let b = replay(history, grace).broadcasts.pop()?;
    match b.end {
        None => Some(b),
        Some(e) => {
            // Another host registered since it began: over at once, grace or not.
            let registered = history.iter().any(|t| {
                matches!(t, Truth::Registered { at, user: Some(u) } if *u != b.host && *at >= b.start)
            });
            (!registered && now_ms < (e + grace) * 1000).then_some(b)
        }
    }
}

/// The broadcast live at time `at` (seconds), from the whole `history` (so a host back within
/// the grace after `at` was never gone).
pub fn broadcast_at(history: &[Truth], grace: u64, at: u64) -> Option<Broadcast> {
    replay(history, grace)
        .broadcasts
        .into_iter()
        .rev()
        .find(|b| b.start <= at && b.end.is_none_or(|e| at < e))
}

/// Whether the room is a voice room at the end of `history`.
pub fn voice(history: &[Truth]) -> bool {
    replay(history, 0)
        .settings
        .is_some_and(|(_, s)| s.audio_only)
}

/// Replays `history` (in true order) and says what the task should be: `max_panes` is the
/// deployment's pane limit, `grace` the end grace (seconds), `pk` the PK the room is in.
pub fn expected(history: &[Truth], max_panes: usize, grace: u64, pk: Option<&Pk>) -> Expect {
    let r = replay(history, grace);
    let Some(Broadcast {
        host, end: None, ..
    }) = r.broadcasts.last().cloned()
    else {
        return Expect::Off;
    };
    let settings = r.settings.map(|(_, s)| s).unwrap_or_default();
    let limit = if settings.audio_only {
        MAX_SPEAKERS
    } else {
        settings.max_panes.unwrap_or(max_panes).clamp(1, MAX_PANES)
    };
    let mut co: Vec<(u64, &String)> = r
        .users
        .iter()
        .filter(|(name, _)| **name != host)
        .filter_map(|(name, u)| u.since.map(|s| (s, name)))
        .collect();
    co.sort();
    let mut stage = vec![host.clone()];
    stage.extend(
        co.into_iter()
            .take(limit.saturating_sub(1))
            .map(|(_, u)| u.clone()),
    );
    if settings.audio_only {
        return if stage.len() == 1 {
            Expect::Single(host)
        } else {
            Expect::Mixed(stage)
        };
    }
    if let Some(pk) = pk {
        let mut users = vec![host, pk.peer_host.clone()];
        users.extend(stage.into_iter().skip(1).take(MAX_PANES - 2));
        return Expect::Mixed(users);
    }
    let camera_off = |name: &String| {
        r.users.get(name).is_some_and(
            |u| matches!((&u.camera, &u.current), (Some((_, false, s)), Some(c)) if s == c),
        )
    };
    let shown: Vec<String> = stage
        .iter()
        .filter(|u| **u == host || !settings.hide_camera_off || !camera_off(u))
        .cloned()
        .collect();
    let heard = shown.len() < stage.len();
    let sharer = settings.screen_share.filter(|s| stage.contains(s));
    match sharer {
        Some(sharer) if stage.len() == 1 => Expect::Mixed(vec![sharer]),
        Some(sharer) => {
            let mut panes = vec![sharer];
            panes.extend(shown.into_iter().take(MAX_PANES - 1));
            Expect::Mixed(panes)
        }
        None if shown.len() == 1 && !heard => Expect::Single(host),
        None => Expect::Mixed(shown),
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
        assert_eq!(expected(&h, 16, 0, None), Expect::Single("h".into()));
        h.push(ev(3, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h, 16, 0, None),
            Expect::Mixed(vec!["h".into(), "g".into()])
        );
        h.push(ev(4, "g", "g1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16, 0, None), Expect::Single("h".into()));
        h.push(ev(5, "h", "h1", Act::Leave { viewer: false }));
        assert_eq!(expected(&h, 16, 0, None), Expect::Off);
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
            expected(&h, 16, 0, None),
            Expect::Mixed(vec!["h".into(), "g".into()]),
            "the reconnect overlapped: still the host, camera off in the new session"
        );
        let mut h2 = h.clone();
        h2.push(ev(5, "h", "h2", Act::Leave { viewer: false }));
        assert_eq!(expected(&h2, 16, 0, None), Expect::Off);
        h2.push(ev(6, "g", "g1", Act::Unpublish));
        h2.push(ev(7, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h2, 16, 0, None),
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
            expected(&h, 16, 5, None),
            Expect::Mixed(vec!["h".into(), "g".into(), "x".into()]),
            "back after 4 s: the same broadcast, x a co-streamer"
        );
        assert_eq!(
            expected(&h, 16, 3, None),
            Expect::Mixed(vec!["x".into(), "g".into()]),
            "back after more than the grace: x's broadcast began at 11"
        );
        let gone = &h[..4];
        assert_eq!(
            expected(gone, 16, 5, None),
            Expect::Mixed(vec!["x".into(), "g".into()])
        );
        assert_eq!(broadcast_at(&h, 5, 12).map(|b| b.host), Some("h".into()));
        assert_eq!(broadcast_at(&h, 3, 12).map(|b| b.host), Some("x".into()));
    }

    #[test]
    fn the_stage_is_bounded_and_ordered_by_start() {
        let mut h = vec![ev(1, "h", "h", Act::Publish)];
        for (i, name) in ["c", "b", "a"].iter().enumerate() {
            h.push(ev(10 + i as u64, name, name, Act::Publish));
        }
        assert_eq!(
            expected(&h, 3, 0, None),
            Expect::Mixed(vec!["h".into(), "c".into(), "b".into()])
        );
    }

    #[test]
    fn a_registered_host_hosts_and_a_registration_of_another_ends_the_broadcast() {
        let reg = |at, user: Option<&str>| Truth::Registered {
            at,
            user: user.map(str::to_owned),
        };
        let mut h = vec![
            reg(1, Some("h")),
            ev(2, "g", "g1", Act::Publish),
            ev(3, "h", "h1", Act::Publish),
        ];
        assert_eq!(
            expected(&h, 16, 5, None),
            Expect::Mixed(vec!["h".into(), "g".into()]),
            "g could not start the broadcast"
        );
        h.push(reg(10, Some("g")));
        assert_eq!(
            expected(&h, 16, 5, None),
            Expect::Off,
            "h's broadcast ended"
        );
        h.push(ev(11, "g", "g1", Act::Unpublish));
        h.push(ev(12, "g", "g1", Act::Publish));
        assert_eq!(
            expected(&h, 16, 5, None),
            Expect::Mixed(vec!["g".into(), "h".into()])
        );
    }

    #[test]
    fn settings_shape_the_picture() {
        let settings = |at, s: Settings| Truth::Settings { at, settings: s };
        let base = vec![
            ev(1, "h", "h1", Act::Publish),
            ev(2, "a", "a1", Act::Publish),
            ev(3, "b", "b1", Act::Publish),
            ev(4, "b", "b1", Act::Camera { on: false }),
        ];
        let with = |s: Settings| {
            let mut h = base.clone();
            h.push(settings(5, s));
            expected(&h, 16, 5, None)
        };
        assert_eq!(
            with(Settings {
                max_panes: Some(2),
                ..Settings::default()
            }),
            Expect::Mixed(vec!["h".into(), "a".into()])
        );
        assert_eq!(
            with(Settings {
                hide_camera_off: true,
                ..Settings::default()
            }),
            Expect::Mixed(vec!["h".into(), "a".into()]),
            "b is heard, not shown"
        );
        assert_eq!(
            with(Settings {
                screen_share: Some("a".into()),
                ..Settings::default()
            }),
            Expect::Mixed(vec!["a".into(), "h".into(), "a".into(), "b".into()])
        );
        assert_eq!(
            with(Settings {
                audio_only: true,
                max_panes: Some(1),
                ..Settings::default()
            }),
            Expect::Mixed(vec!["h".into(), "a".into(), "b".into()]),
            "a voice room hears everyone"
        );
        assert_eq!(
            expected(
                &base,
                16,
                5,
                Some(&Pk {
                    peer_host: "p".into()
                })
            ),
            Expect::Mixed(vec!["h".into(), "p".into(), "a".into(), "b".into()])
        );
    }
}
