//! costream's benchmarks (dev-only; see `docs/benchmarks.md`).
//!
//! - `benches/costream.rs` (`cargo bench -p costream-bench`): criterion benchmarks of the core
//!   decision, the layout engine, the Alibaba signatures and one whole in-memory callback.
//! - `src/bin/load.rs` (`costream-load`, driven by `scripts/bench-serve.sh`): replays the
//!   [`room_script`]s of many rooms against `costream serve` and checks where the rooms ended.
//!
//! This library holds what both share: ARTC callback bodies ([`artc_body`]) and the scripted
//! life of one room ([`room_script`]), with the task the simulated Live API must hold at the end.

use serde_json::{json, Value};

/// The app id `costream serve` uses when `COSTREAM_APP_ID` is unset (its local defaults).
pub const LOCAL_APP_ID: &str = "local-app";
/// The callback path secret of `costream serve`'s local defaults: `POST /artc/local-secret`.
pub const LOCAL_ARTC_SECRET: &str = "local-secret";

/// An ARTC `UserEvent` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Join,
    Publish,
    Unpublish,
    Leave,
}

impl Tag {
    fn as_str(self) -> &'static str {
        match self {
            Tag::Join => "Join",
            Tag::Publish => "Publish",
            Tag::Unpublish => "Unpublish",
            Tag::Leave => "Leave",
        }
    }
}

/// ARTC roles: 1 streams (host, co-host), 2 watches.
pub const ROLE_STREAMER: u8 = 1;
pub const ROLE_VIEWER: u8 = 2;

/// One `UserEvent` of a callback.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub user: &'a str,
    pub session: &'a str,
    pub tag: Tag,
    pub role: u8,
    /// Unix seconds.
    pub at: u64,
}

/// The JSON body of one ARTC room callback, shaped like `tests/fixtures/artc/*.json`. The
/// callback's `MsgTimestamp` is its last event's time.
pub fn artc_body(app: &str, channel: &str, msg_id: &str, events: &[Event<'_>]) -> Vec<u8> {
    let contents: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "Event": "UserEvent",
                "UserEvent": {
                    "UserId": e.user,
                    "EventTag": e.tag.as_str(),
                    "SessionId": e.session,
                    "Timestamp": e.at,
                    "Role": e.role,
                    "TerminalType": 1,
                }
            })
        })
        .collect();
    let at = events.iter().map(|e| e.at).max().unwrap_or_default();
    json!({
        "MsgId": msg_id,
        "MsgTimestamp": at,
        "SubscribeID": "bench-sub",
        "AppId": app,
        "ChannelID": channel,
        "Contents": contents,
    })
    .to_string()
    .into_bytes()
}

/// The shape of the load test's rooms.
#[derive(Debug, Clone, Copy)]
pub struct RoomPlan {
    /// Co-streaming cycles per room (see [`room_script`]).
    pub cycles: u32,
    /// Every `host_leaves_every`-th room's host leaves at the end (its task is stopped); 0: none.
    pub host_leaves_every: usize,
}

/// Where a room must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// No task.
    Off,
    /// One MixMode 0 task relaying `host`, updated `updates` times since its Start.
    Single { host: String, updates: u32 },
}

/// The scripted life of one room: its callbacks in the order they must be sent, and where it
/// must end.
#[derive(Debug, Clone)]
pub struct RoomScript {
    pub channel: String,
    pub callbacks: Vec<Vec<u8>>,
    pub expected: Expected,
}

fn streamer<'a>(user: &'a str, session: &'a str, tag: Tag, at: u64) -> Event<'a> {
    Event {
        user,
        session,
        tag,
        role: ROLE_STREAMER,
        at,
    }
}

fn viewer<'a>(user: &'a str, session: &'a str, tag: Tag, at: u64) -> Event<'a> {
    Event {
        user,
        session,
        tag,
        role: ROLE_VIEWER,
        at,
    }
}

/// Room `index` of a run: `bench-<index>`, its events stamped from `t0` (unix seconds) on, one
/// second apart, each callback with its own `MsgId` (`<run>-<index>-<n>`).
///
/// 1. the host joins and publishes (one callback, two events) → Start, MixMode 0;
/// 2. `plan.cycles` times: a viewer joins; a co-host joins and publishes (→ Update to a 2-pane
///    mix); a second viewer joins; the first viewer leaves; the co-host unpublishes (→ Update
///    back to the host alone) and leaves; the second viewer leaves. Viewers change nothing;
/// 3. in every `plan.host_leaves_every`-th room the host leaves (→ Stop).
///
/// So a room sends `1 + 7 × cycles` callbacks (one more if its host leaves) and ends with the
/// host's MixMode 0 task updated `2 × cycles` times, or with no task.
pub fn room_script(app: &str, run: &str, index: usize, t0: u64, plan: RoomPlan) -> RoomScript {
    let channel = format!("bench-{index:05}");
    let host = format!("host-{index}");
    let host_session = format!("{host}-s1");
    let mut callbacks = Vec::new();
    let mut push = |events: &[Event<'_>]| {
        let msg_id = format!("{run}-{index}-{}", callbacks.len());
        callbacks.push(artc_body(app, &channel, &msg_id, events));
    };
    push(&[
        streamer(&host, &host_session, Tag::Join, t0),
        streamer(&host, &host_session, Tag::Publish, t0 + 1),
    ]);
    let mut at = t0 + 2;
    for cycle in 0..plan.cycles {
        let guest = format!("guest-{cycle}");
        let guest_session = format!("{guest}-s1");
        let (v1, v2) = (format!("viewer-{cycle}a"), format!("viewer-{cycle}b"));
        let (s1, s2) = (format!("{v1}-s1"), format!("{v2}-s1"));
        push(&[viewer(&v1, &s1, Tag::Join, at)]);
        push(&[
            streamer(&guest, &guest_session, Tag::Join, at + 1),
            streamer(&guest, &guest_session, Tag::Publish, at + 1),
        ]);
        push(&[viewer(&v2, &s2, Tag::Join, at + 2)]);
        push(&[viewer(&v1, &s1, Tag::Leave, at + 3)]);
        push(&[streamer(&guest, &guest_session, Tag::Unpublish, at + 4)]);
        push(&[streamer(&guest, &guest_session, Tag::Leave, at + 5)]);
        push(&[viewer(&v2, &s2, Tag::Leave, at + 6)]);
        at += 8;
    }
    let leaves = plan.host_leaves_every > 0 && index.is_multiple_of(plan.host_leaves_every);
    if leaves {
        push(&[streamer(&host, &host_session, Tag::Leave, at)]);
    }
    RoomScript {
        expected: if leaves {
            Expected::Off
        } else {
            Expected::Single {
                host,
                updates: 2 * plan.cycles,
            }
        },
        channel,
        callbacks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_script_has_distinct_msg_ids_and_the_documented_length() {
        let plan = RoomPlan {
            cycles: 3,
            host_leaves_every: 2,
        };
        for (index, leaves) in [(1, false), (2, true)] {
            let script = room_script(LOCAL_APP_ID, "r", index, 1_800_000_000, plan);
            assert_eq!(script.callbacks.len(), 1 + 7 * 3 + usize::from(leaves));
            let ids: std::collections::BTreeSet<String> = script
                .callbacks
                .iter()
                .map(|b| {
                    let v: Value = serde_json::from_slice(b).expect("json");
                    v["MsgId"].as_str().expect("MsgId").to_owned()
                })
                .collect();
            assert_eq!(ids.len(), script.callbacks.len());
            assert_eq!(script.expected == Expected::Off, leaves);
        }
    }
}
