//! A truthful history per room, and the callbacks that report it.
//!
//! The generator knows the true order. Events of one room get distinct seconds, except a
//! co-streamer's deliberate camera toggle inside one second (Unpublish then Publish), whose truth
//! ("publishing") is also what the documented same-second rule says, and a burst of co-hosts
//! joining and publishing in one second (ordered by user id, as the stage orders a tie) — so the
//! model never has to guess. Sessions stay within the core's bounds (≤ 3 per user, ≤ 7 events
//! each).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::model::{Act, Settings, Truth};

/// One ARTC callback: when its last event happened (ms), its JSON body, the indices of the
/// history events it carries, and whether it belongs to a burst (delivered all at once).
#[derive(Debug, Clone)]
pub struct Callback {
    pub at_ms: u64,
    pub body: Value,
    pub events: Vec<usize>,
    pub burst: bool,
}

/// A request of the app's backend for the room: a host registration or its settings, with the
/// index of the history event it is.
#[derive(Debug, Clone)]
pub enum Backend {
    Host(Option<String>),
    Settings(Settings),
}

/// One room's true history and its callbacks.
#[derive(Debug, Clone)]
pub struct Room {
    pub channel: String,
    pub history: Vec<Truth>,
    /// ARTC callbacks in true order.
    pub callbacks: Vec<Callback>,
    /// CDN callbacks: (time in ms, live?, time in s).
    pub cdn: Vec<(u64, bool, u64)>,
    /// The backend's requests: (time in ms, request, history index).
    pub backend: Vec<(u64, Backend, usize)>,
    /// When the room's channel was empty for a long while (the item may expire): (from, to) in
    /// ms, nobody present in between.
    pub quiet: Option<(u64, u64)>,
}

/// How a room's history is drawn (per seed, swarm-style).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// A burst of this many co-hosts joining and publishing in one second, and leaving in one.
    pub burst: Option<usize>,
    /// The room empties, stays quiet a few minutes, and its host comes back.
    pub second_life: bool,
    /// The app's backend registers hosts and sets settings.
    pub backend: bool,
    /// Co-hosts switch their camera off and on.
    pub cameras: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Viewer,
    Interactive,
    Publishing,
}

#[derive(Debug)]
struct Person {
    name: String,
    host: bool,
    state: State,
    session: u32,
    events_in_session: u32,
}

impl Person {
    fn session_id(&self) -> String {
        format!("{}-s{}", self.name, self.session)
    }
}

/// The app id every simulated callback carries.
pub const APP: &str = "dstapp";

/// Generates room `index` starting at `t0` (unix seconds) with about `events` events.
pub fn room(rng: &mut ChaCha8Rng, index: usize, t0: u64, events: usize, shape: Shape) -> Room {
    let channel = format!("room-{index}");
    // A burst room has only its host and the burst's co-hosts: beyond 64 users a room forgets
    // the ones who left, and a late first event of someone it never knew would be judged
    // against its horizon (ARCHITECTURE.md, "Bounds") — the model does not forget.
    let (guests, viewers) = match shape.burst {
        Some(_) => (0, 0),
        None => (rng.random_range(0..=4), rng.random_range(0..=2)),
    };
    let names = std::iter::once(format!("host{index}"))
        .chain((0..guests).map(|g| format!("guest{index}-{g}")))
        .chain((0..viewers).map(|v| format!("fan{index}-{v}")));
    let mut people: Vec<Person> = names
        .enumerate()
        .map(|(i, name)| Person {
            name,
            host: i == 0,
            state: State::Absent,
            session: 0,
            events_in_session: 0,
        })
        .collect();
    let mut g = Gen {
        history: Vec::new(),
        cdn: Vec::new(),
        backend: Vec::new(),
        bursts: Vec::new(),
        t: t0,
        session_cap: 3,
    };
    if shape.backend && rng.random_bool(0.5) {
        // The backend registers the room's host before the broadcast.
        g.register(Some(people[0].name.clone()));
    }
    g.life(rng, &mut people, events, shape);
    let mut quiet = None;
    if shape.second_life && people.iter().all(|p| p.state == State::Absent) {
        // Everyone left; a few quiet minutes later the host comes back (a new session).
        let from = g.t * 1000;
        g.t += rng.random_range(240..420);
        quiet = Some((from, g.t * 1000));
        g.session_cap = 5;
        g.life(rng, &mut people, events / 2 + 2, Shape::default());
    }
    let callbacks = callbacks(rng, &channel, &g.history, &g.bursts);
    Room {
        channel,
        history: g.history,
        callbacks,
        cdn: g.cdn,
        backend: g.backend,
        quiet,
    }
}

/// The history being written.
struct Gen {
    history: Vec<Truth>,
    cdn: Vec<(u64, bool, u64)>,
    backend: Vec<(u64, Backend, usize)>,
    /// History indices of the events of each burst callback.
    bursts: Vec<Vec<usize>>,
    t: u64,
    /// Sessions a user may have in all (a second life gives them more).
    session_cap: u32,
}

impl Gen {
    fn push(&mut self, p: &mut Person, act: Act, next: State) {
        self.t += 1;
        if p.state == State::Absent && next != State::Absent {
            p.session += 1;
            p.events_in_session = 0;
        }
        self.history.push(Truth::User {
            at: self.t,
            user: p.name.clone(),
            session: p.session_id(),
            act,
        });
        p.events_in_session += 1;
        p.state = next;
    }

    fn register(&mut self, user: Option<String>) {
        self.t += 1;
        let index = self.history.len();
        self.history.push(Truth::Registered {
            at: self.t,
            user: user.clone(),
        });
        self.backend
            .push((self.t * 1000, Backend::Host(user), index));
    }

    fn settings(&mut self, settings: Settings) {
        self.t += 1;
        let index = self.history.len();
        self.history.push(Truth::Settings {
            at: self.t,
            settings: settings.clone(),
        });
        self.backend
            .push((self.t * 1000, Backend::Settings(settings), index));
    }

    /// One life of the room: the host starts it, people come and go; most lives end with
    /// everyone gone.
    fn life(&mut self, rng: &mut ChaCha8Rng, people: &mut [Person], events: usize, shape: Shape) {
        let start = self.history.len();
        self.push(
            &mut people[0],
            Act::Join { viewer: false },
            State::Interactive,
        );
        self.push(&mut people[0], Act::Publish, State::Publishing);
        let mut cdn_live = false;
        if let Some(n) = shape.burst {
            self.burst(people[0].name.trim_start_matches("host"), n);
        }
        let users: Vec<String> = people.iter().map(|p| p.name.clone()).collect();
        // Bounded: users who used up their sessions make no more events.
        for _ in 0..events * 20 {
            if self.history.len() - start >= events {
                break;
            }
            if shape.backend && rng.random_bool(0.06) {
                self.backend_request(rng, &users);
                continue;
            }
            let i = rng.random_range(0..people.len());
            let p = &mut people[i];
            let fan = p.name.starts_with("fan");
            if p.session >= self.session_cap && p.state == State::Absent {
                continue;
            }
            if p.events_in_session >= 6 && p.state != State::Absent {
                let viewer = p.state == State::Viewer;
                self.push(p, Act::Leave { viewer }, State::Absent);
                continue;
            }
            match p.state {
                State::Absent => {
                    let viewer = fan || rng.random_bool(0.3);
                    let next = if viewer {
                        State::Viewer
                    } else {
                        State::Interactive
                    };
                    self.push(p, Act::Join { viewer }, next);
                }
                State::Viewer => {
                    if !fan && rng.random_bool(0.6) {
                        self.push(p, Act::ToInteractive, State::Interactive);
                    } else {
                        self.push(p, Act::Leave { viewer: true }, State::Absent);
                    }
                }
                State::Interactive => match rng.random_range(0..10) {
                    0..=5 => self.push(p, Act::Publish, State::Publishing),
                    6 | 7 if !p.host => self.push(p, Act::ToViewer, State::Viewer),
                    _ => self.push(p, Act::Leave { viewer: false }, State::Absent),
                },
                State::Publishing => match rng.random_range(0..13) {
                    0..=3 => self.push(p, Act::Unpublish, State::Interactive),
                    4 | 5 if !p.host => {
                        // A camera toggle within one second.
                        self.push(p, Act::Unpublish, State::Interactive);
                        self.t -= 1;
                        self.push(p, Act::Publish, State::Publishing);
                    }
                    6 if p.host => {
                        // A reconnect: the new connection joins (and publishes) before ARTC
                        // drops the old one.
                        let old = p.session_id();
                        if p.session + 1 < self.session_cap {
                            p.session += 1;
                            p.events_in_session = 0;
                            self.push(p, Act::Join { viewer: false }, State::Interactive);
                            self.push(p, Act::Publish, State::Publishing);
                            self.t += 1;
                            self.history.push(Truth::User {
                                at: self.t,
                                user: p.name.clone(),
                                session: old,
                                act: Act::Leave { viewer: false },
                            });
                        }
                    }
                    7 => self.push(p, Act::Leave { viewer: false }, State::Absent),
                    8 if shape.cameras && !p.host => {
                        // The camera off, and (mostly) on again later: still publishing.
                        let on = rng.random_bool(0.3);
                        self.push(p, Act::Camera { on }, State::Publishing);
                    }
                    _ => {
                        self.t += rng.random_range(1..20);
                    }
                },
            }
            // The CDN follows the host's publishing now and then.
            let host_publishing = people[0].state == State::Publishing;
            if host_publishing != cdn_live && rng.random_bool(0.5) {
                self.t += 1;
                cdn_live = host_publishing;
                self.history.push(Truth::Cdn {
                    at: self.t,
                    live: cdn_live,
                });
                self.cdn.push((self.t * 1000, cdn_live, self.t));
            }
        }
        // Most lives end; some stay live (their task must stay right).
        if shape.second_life || rng.random_bool(0.5) {
            for p in people.iter_mut() {
                if p.state != State::Absent {
                    let viewer = p.state == State::Viewer;
                    self.push(p, Act::Leave { viewer }, State::Absent);
                }
            }
            if rng.random_bool(0.3) {
                self.t += 1;
                self.history.push(Truth::ChannelClose { at: self.t });
            }
        }
    }

    /// `n` co-hosts join and publish in one second (a callback each, delivered at once), stay a
    /// few seconds, then unpublish and leave in one second.
    fn burst(&mut self, room: &str, n: usize) {
        self.t += 1;
        let at = self.t;
        for i in 0..n {
            let user = format!("burst{room}-{i:03}");
            let session = format!("{user}-s1");
            let first = self.history.len();
            for act in [Act::Join { viewer: false }, Act::Publish] {
                self.history.push(Truth::User {
                    at,
                    user: user.clone(),
                    session: session.clone(),
                    act,
                });
            }
            self.bursts.push(vec![first, first + 1]);
        }
        self.t += 5;
        let at = self.t;
        for i in 0..n {
            let user = format!("burst{room}-{i:03}");
            let session = format!("{user}-s1");
            let first = self.history.len();
            for act in [Act::Unpublish, Act::Leave { viewer: false }] {
                self.history.push(Truth::User {
                    at,
                    user: user.clone(),
                    session: session.clone(),
                    act,
                });
            }
            self.bursts.push(vec![first, first + 1]);
        }
    }

    /// The backend registers someone (or clears it), or sets the room's settings.
    fn backend_request(&mut self, rng: &mut ChaCha8Rng, users: &[String]) {
        match rng.random_range(0..5) {
            0 => {
                let who = users[rng.random_range(0..users.len())].clone();
                self.register(Some(who));
            }
            1 => self.register(None),
            _ => {
                let pick = |rng: &mut ChaCha8Rng| users[rng.random_range(0..users.len())].clone();
                let settings = Settings {
                    max_panes: rng.random_bool(0.5).then(|| rng.random_range(1..=4)),
                    audio_only: rng.random_bool(0.2),
                    hide_camera_off: rng.random_bool(0.3),
                    screen_share: rng.random_bool(0.3).then(|| pick(rng)),
                };
                self.settings(settings);
            }
        }
    }
}

/// Groups the user events into ARTC callbacks of 1–3 `Contents[]`, in true order; each event of
/// a burst in its own callback (from `bursts`).
fn callbacks(
    rng: &mut ChaCha8Rng,
    channel: &str,
    history: &[Truth],
    bursts: &[Vec<usize>],
) -> Vec<Callback> {
    let mut out = Vec::new();
    let mut pending: Vec<(usize, Value)> = Vec::new();
    let mut n = 0;
    let mut flush = |pending: &mut Vec<(usize, Value)>, out: &mut Vec<Callback>, burst: bool| {
        if pending.is_empty() {
            return;
        }
        n += 1;
        let last_at = pending
            .iter()
            .map(|(i, _)| history[*i].at())
            .max()
            .unwrap_or(0);
        let (events, contents): (Vec<usize>, Vec<Value>) =
            std::mem::take(pending).into_iter().unzip();
        out.push(Callback {
            at_ms: last_at * 1000,
            body: json!({
                "MsgId": format!("{channel}-msg-{n}"),
                "MsgTimestamp": last_at,
                "AppId": APP,
                "ChannelId": channel,
                "Contents": contents,
            }),
            events,
            burst,
        });
    };
    let in_burst: std::collections::BTreeSet<usize> = bursts.iter().flatten().copied().collect();
    let limit = rng.random_range(1..=3);
    for (i, truth) in history.iter().enumerate() {
        if in_burst.contains(&i) {
            continue;
        }
        let Some(content) = content(truth) else {
            continue;
        };
        pending.push((i, content));
        if pending.len() >= limit {
            flush(&mut pending, &mut out, false);
        }
    }
    flush(&mut pending, &mut out, false);
    for burst in bursts {
        let mut p: Vec<(usize, Value)> = burst
            .iter()
            .filter_map(|i| content(&history[*i]).map(|c| (*i, c)))
            .collect();
        flush(&mut p, &mut out, true);
    }
    out.sort_by_key(|c| c.at_ms);
    out
}

/// The `Contents[]` item of a user or channel event (`None` for the others).
fn content(truth: &Truth) -> Option<Value> {
    Some(match truth {
        Truth::User {
            at,
            user,
            session,
            act,
        } => {
            let (tag, role) = match act {
                Act::Join { viewer } => ("Join", if *viewer { 2 } else { 1 }),
                Act::Publish => ("Publish", 1),
                Act::Unpublish => ("Unpublish", 1),
                Act::Leave { viewer } => ("Leave", if *viewer { 2 } else { 1 }),
                Act::ToInteractive => ("Roleupdate", 1),
                Act::ToViewer => ("Roleupdate", 2),
                Act::Camera { on: true } => ("CameraOpen", 1),
                Act::Camera { on: false } => ("CameraClose", 1),
            };
            json!({"Event": "UserEvent", "UserEvent": {
                "UserId": user, "SessionId": session, "EventTag": tag,
                "Role": role, "Timestamp": at}})
        }
        Truth::ChannelClose { at } => {
            json!({"Event": "ChannelEvent", "ChannelEvent": {"EventTag": "Close", "Timestamp": at}})
        }
        Truth::Cdn { .. } | Truth::Registered { .. } | Truth::Settings { .. } => return None,
    })
}
