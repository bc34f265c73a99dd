//! A truthful history per room, and the callbacks that report it.
//!
//! The generator knows the true order. Events of one room get distinct seconds, except a
//! co-streamer's deliberate camera toggle inside one second (Unpublish then Publish), whose truth
//! ("publishing") is also what the documented same-second rule says — so the model never has to
//! guess. Sessions stay within the core's bounds (≤ 3 per user, ≤ 7 events each).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::model::{Act, Truth};

/// One room's true history and its callbacks.
#[derive(Debug, Clone)]
pub struct Room {
    pub channel: String,
    pub history: Vec<Truth>,
    /// ARTC callbacks in true order: (time of the last event in ms, JSON body).
    pub callbacks: Vec<(u64, Value)>,
    /// CDN callbacks: (time in ms, live?, time in s).
    pub cdn: Vec<(u64, bool, u64)>,
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
pub fn room(rng: &mut ChaCha8Rng, index: usize, t0: u64, events: usize) -> Room {
    let channel = format!("room-{index}");
    let guests = rng.random_range(0..=4);
    let viewers = rng.random_range(0..=2);
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
    let mut t = t0;
    let mut history = Vec::new();
    let mut cdn = Vec::new();
    let mut cdn_live = false;
    // The host starts the room.
    push(
        &mut history,
        &mut people[0],
        &mut t,
        Act::Join { viewer: false },
        State::Interactive,
    );
    push(
        &mut history,
        &mut people[0],
        &mut t,
        Act::Publish,
        State::Publishing,
    );
    // Bounded: users who used up their sessions make no more events.
    for _ in 0..events * 20 {
        if history.len() >= events {
            break;
        }
        let i = rng.random_range(0..people.len());
        let p = &mut people[i];
        let fan = p.name.starts_with("fan");
        if p.session >= 3 && p.state == State::Absent {
            continue;
        }
        if p.events_in_session >= 6 && p.state != State::Absent {
            let viewer = p.state == State::Viewer;
            push(
                &mut history,
                p,
                &mut t,
                Act::Leave { viewer },
                State::Absent,
            );
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
                push(&mut history, p, &mut t, Act::Join { viewer }, next);
            }
            State::Viewer => {
                if !fan && rng.random_bool(0.6) {
                    push(
                        &mut history,
                        p,
                        &mut t,
                        Act::ToInteractive,
                        State::Interactive,
                    );
                } else {
                    push(
                        &mut history,
                        p,
                        &mut t,
                        Act::Leave { viewer: true },
                        State::Absent,
                    );
                }
            }
            State::Interactive => match rng.random_range(0..10) {
                0..=5 => push(&mut history, p, &mut t, Act::Publish, State::Publishing),
                6 | 7 if !p.host => push(&mut history, p, &mut t, Act::ToViewer, State::Viewer),
                _ => push(
                    &mut history,
                    p,
                    &mut t,
                    Act::Leave { viewer: false },
                    State::Absent,
                ),
            },
            State::Publishing => match rng.random_range(0..12) {
                0..=3 => push(&mut history, p, &mut t, Act::Unpublish, State::Interactive),
                4 | 5 if !p.host => {
                    // A camera toggle within one second.
                    push(&mut history, p, &mut t, Act::Unpublish, State::Interactive);
                    t -= 1;
                    push(&mut history, p, &mut t, Act::Publish, State::Publishing);
                }
                6 if p.host => {
                    // A reconnect: the new connection joins (and publishes) before ARTC drops
                    // the old one.
                    let old = p.session_id();
                    if p.session < 2 {
                        p.session += 1;
                        p.events_in_session = 0;
                        push(
                            &mut history,
                            p,
                            &mut t,
                            Act::Join { viewer: false },
                            State::Interactive,
                        );
                        push(&mut history, p, &mut t, Act::Publish, State::Publishing);
                        t += 1;
                        history.push(Truth::User {
                            at: t,
                            user: p.name.clone(),
                            session: old,
                            act: Act::Leave { viewer: false },
                        });
                    }
                }
                7 => push(
                    &mut history,
                    p,
                    &mut t,
                    Act::Leave { viewer: false },
                    State::Absent,
                ),
                _ => {
                    t += rng.random_range(1..20);
                }
            },
        }
        // The CDN follows the host's publishing now and then.
        let host_publishing = people[0].state == State::Publishing;
        if host_publishing != cdn_live && rng.random_bool(0.5) {
            t += 1;
            cdn_live = host_publishing;
            history.push(Truth::Cdn {
                at: t,
                live: cdn_live,
            });
            cdn.push((t * 1000, cdn_live, t));
        }
    }
    // Most rooms end; some stay live (their task must stay right).
    if rng.random_bool(0.5) {
        for p in &mut people {
            if p.state != State::Absent {
                let viewer = p.state == State::Viewer;
                push(
                    &mut history,
                    p,
                    &mut t,
                    Act::Leave { viewer },
                    State::Absent,
                );
            }
        }
        if rng.random_bool(0.3) {
            t += 1;
            history.push(Truth::ChannelClose { at: t });
        }
    }
    let callbacks = callbacks(rng, &channel, &history);
    Room {
        channel,
        history,
        callbacks,
        cdn,
    }
}

fn push(history: &mut Vec<Truth>, p: &mut Person, t: &mut u64, act: Act, next: State) {
    *t += 1;
    if p.state == State::Absent && next != State::Absent {
        p.session += 1;
        p.events_in_session = 0;
    }
    history.push(Truth::User {
        at: *t,
        user: p.name.clone(),
        session: p.session_id(),
        act,
    });
    p.events_in_session += 1;
    p.state = next;
}

/// Groups the user events into ARTC callbacks of 1–3 `Contents[]`, in true order.
fn callbacks(rng: &mut ChaCha8Rng, channel: &str, history: &[Truth]) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let mut pending: Vec<Value> = Vec::new();
    let mut last_at = 0;
    let mut n = 0;
    let mut flush = |pending: &mut Vec<Value>, last_at: u64, out: &mut Vec<(u64, Value)>| {
        if pending.is_empty() {
            return;
        }
        n += 1;
        out.push((
            last_at * 1000,
            json!({
                "MsgId": format!("{channel}-msg-{n}"),
                "MsgTimestamp": last_at,
                "AppId": APP,
                "ChannelId": channel,
                "Contents": std::mem::take(pending),
            }),
        ));
    };
    let limit = rng.random_range(1..=3);
    for truth in history {
        let content = match truth {
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
                };
                last_at = *at;
                json!({"Event": "UserEvent", "UserEvent": {
                    "UserId": user, "SessionId": session, "EventTag": tag,
                    "Role": role, "Timestamp": at}})
            }
            Truth::ChannelClose { at } => {
                last_at = *at;
                json!({"Event": "ChannelEvent", "ChannelEvent": {"EventTag": "Close", "Timestamp": at}})
            }
            Truth::Cdn { .. } => continue,
        };
        pending.push(content);
        if pending.len() >= limit {
            flush(&mut pending, last_at, &mut out);
        }
    }
    flush(&mut pending, last_at, &mut out);
    out
}
