//! How a room takes in events: the callback's own (a commit), the inbox's (callbacks committed
//! by an append while the room was contended), and the events held back for the end grace.
//!
//! **The inbox.** Under a burst of callbacks into one room, writes conditional on the room's
//! version conflict with each other; a handler whose versioned write conflicts twice appends its
//! events to the item's inbox instead — an update conditional only on the item's life, which
//! never conflicts with another append — so every callback is committed, whatever the
//! contention. The events wait there, already durable, until a versioned write *folds* them into
//! the facts (every write of the shell does: the lease holder's record, the next commit, the
//! repair loop's pass, for which the append marks the room due). Facts are a join-semilattice, so
//! folding later, in another order or twice gives the same facts.
//!
//! **The end grace.** An event that would end the live broadcast (the host's Leave, a switch to
//! viewer, a channel close: [`Facts::ends_broadcast`](costream_core::Facts::ends_broadcast)) is
//! held back for `end_grace_secs` after it was committed, and merged when that has passed — by
//! whichever write comes first after it, the room being marked due then. A reconnect whose old
//! Leave is processed before the new session's Join therefore never stops the task, ends the
//! PK or tells the backend `room.ended`: by the time the Leave is merged, the new session is
//! known and the Leave ends nothing. A held event is a fact not yet merged: nothing is lost, and
//! the facts in the end are the same as with no grace.

use serde::{Deserialize, Serialize};

use super::{SeenKeys, StoredRoom};
use costream_core::{
    apply, DecisionConfig, Merge, Role, RoomEvent, SessionId, Timestamp, UserAction, UserEvent,
    UserId,
};

/// The most entries an inbox holds: an append finding it full conflicts, and its handler folds
/// with a versioned write instead (the item stays bounded; a typical entry is ~90 bytes).
pub const MAX_INBOX: usize = 100;

/// The most events a room holds back; beyond it the one due first is merged at once.
pub const MAX_HELD: usize = 32;

/// One callback's events, appended to the room's inbox without the room's version. Stored
/// compactly, as `[id, at_ms, key, [events]]` with the ARTC events as short arrays (see
/// [`Compact`]): under a burst the inbox is rewritten with every append, and a write is billed
/// (and, on one item, throttled) by the item's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "EntryRepr", try_from = "EntryRepr")]
pub struct InboxEntry {
    /// The append's write id.
    pub id: String,
    /// When it was appended (epoch ms): an ending event's grace counts from here.
    pub at_ms: u64,
    /// The callback's de-duplication key as a digest ([`SeenKeys::digest`]), if it has one.
    pub key: Option<String>,
    pub events: Vec<RoomEvent>,
}

/// An event that ends the live broadcast, held back until `until_ms`. Stored as
/// `[event, until_ms]`, the event compact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "HeldRepr", try_from = "HeldRepr")]
pub struct Held {
    pub event: RoomEvent,
    pub until_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct EntryRepr(String, u64, Option<String>, Vec<Compact>);

#[derive(Serialize, Deserialize)]
struct HeldRepr(Compact, u64);

impl From<InboxEntry> for EntryRepr {
    fn from(e: InboxEntry) -> Self {
        EntryRepr(
            e.id,
            e.at_ms,
            e.key,
            e.events.into_iter().map(Compact::from).collect(),
        )
    }
}

impl TryFrom<EntryRepr> for InboxEntry {
    type Error = String;
    fn try_from(r: EntryRepr) -> Result<Self, String> {
        Ok(InboxEntry {
            id: r.0,
            at_ms: r.1,
            key: r.2,
            events: r
                .3
                .into_iter()
                .map(RoomEvent::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<Held> for HeldRepr {
    fn from(h: Held) -> Self {
        HeldRepr(Compact::from(h.event), h.until_ms)
    }
}

impl TryFrom<HeldRepr> for Held {
    type Error = String;
    fn try_from(r: HeldRepr) -> Result<Self, String> {
        Ok(Held {
            event: RoomEvent::try_from(r.0)?,
            until_ms: r.1,
        })
    }
}

/// A room event as an inbox keeps it: ARTC's user and camera events (nearly all of a burst) as
/// `[letter, user, session, at, role]` (`J`oin `L`eave `P`ublish `U`npublish, role update to
/// `I`nteractive or `V`iewer; role 0 none, 1, 2; a camera `C` with 1 for on), a channel close as
/// `["X", at]`, anything else in its named form.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Compact {
    Member(String, UserId, SessionId, u64, u8),
    Close(String, u64),
    Named(RoomEvent),
}

impl From<RoomEvent> for Compact {
    fn from(event: RoomEvent) -> Self {
        match event {
            RoomEvent::User(u) => {
                let letter = match u.action {
                    UserAction::Join => "J",
                    UserAction::Leave => "L",
                    UserAction::Publish => "P",
                    UserAction::Unpublish => "U",
                    UserAction::RoleUpdate(Role::Interactive) => "I",
                    UserAction::RoleUpdate(Role::Live) => "V",
                };
                let role = match u.role {
                    None => 0,
                    Some(Role::Interactive) => 1,
                    Some(Role::Live) => 2,
                };
                Compact::Member(letter.to_owned(), u.user, u.session, u.at.secs(), role)
            }
            RoomEvent::Camera {
                user,
                session,
                on,
                at,
            } => Compact::Member("C".to_owned(), user, session, at.secs(), u8::from(on)),
            RoomEvent::ChannelClosed { at } => Compact::Close("X".to_owned(), at.secs()),
            other => Compact::Named(other),
        }
    }
}

impl TryFrom<Compact> for RoomEvent {
    type Error = String;
    fn try_from(c: Compact) -> Result<Self, String> {
        Ok(match c {
            Compact::Member(letter, user, session, at, code) => {
                let at = Timestamp::from_secs(at);
                if letter == "C" {
                    return Ok(RoomEvent::Camera {
                        user,
                        session,
                        on: code == 1,
                        at,
                    });
                }
                let action = match letter.as_str() {
                    "J" => UserAction::Join,
                    "L" => UserAction::Leave,
                    "P" => UserAction::Publish,
                    "U" => UserAction::Unpublish,
                    "I" => UserAction::RoleUpdate(Role::Interactive),
                    "V" => UserAction::RoleUpdate(Role::Live),
                    other => return Err(format!("unknown event letter {other:?}")),
                };
                let role = match code {
                    0 => None,
                    1 => Some(Role::Interactive),
                    2 => Some(Role::Live),
                    other => return Err(format!("unknown role code {other}")),
                };
                RoomEvent::User(UserEvent {
                    user,
                    session,
                    at,
                    action,
                    role,
                })
            }
            Compact::Close(letter, at) if letter == "X" => RoomEvent::ChannelClosed {
                at: Timestamp::from_secs(at),
            },
            Compact::Close(letter, _) => return Err(format!("unknown event letter {letter:?}")),
            Compact::Named(event) => event,
        })
    }
}

/// What folding and admitting need to know.
#[derive(Debug, Clone, Copy)]
pub struct FoldRules<'a> {
    pub decision: &'a DecisionConfig,
    /// How long a callback key is remembered, and how many (see `ShellConfig`).
    pub dedupe_secs: u64,
    pub dedupe_cap: usize,
}

impl FoldRules<'_> {
    fn grace_ms(&self) -> u64 {
        self.decision.end_grace_secs.saturating_mul(1000)
    }
}

/// What [`StoredRoom::admit`] did with one callback's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The callback's key was seen before: nothing was taken in.
    pub duplicate: bool,
    /// The facts, the record or the held events changed (the key alone is not a change).
    pub changed: bool,
    /// Events of forgotten users older than the room's horizon, ignored.
    pub beyond_horizon: u32,
}

impl StoredRoom {
    /// Takes in one callback's events, committed at `at_ms`: a callback whose key (a digest) was
    /// seen is a duplicate and changes nothing; otherwise its key is remembered, an event that
    /// would end the live broadcast is held until `at_ms` + the end grace (unless that has
    /// passed), and every other event is merged.
    pub fn admit(
        &mut self,
        key: Option<&str>,
        events: &[RoomEvent],
        at_ms: u64,
        now_ms: u64,
        rules: &FoldRules<'_>,
    ) -> Admitted {
        self.take_in(key, events, at_ms, now_ms, rules, false)
    }

    /// [`StoredRoom::admit`]; with `keep_ends`, an ending event whose grace is over is held
    /// all the same (due now), for a commit to merge with what it brings.
    fn take_in(
        &mut self,
        key: Option<&str>,
        events: &[RoomEvent],
        at_ms: u64,
        now_ms: u64,
        rules: &FoldRules<'_>,
        keep_ends: bool,
    ) -> Admitted {
        let mut out = Admitted::default();
        let now_secs = now_ms / 1000;
        if let Some(key) = key {
            if self.seen.contains_digest(key, now_secs) {
                out.duplicate = true;
                return out;
            }
            // Remembered with what it brings (a key whose callback changes nothing is not worth
            // a write of its own).
            self.seen.insert_digest(
                key.to_owned(),
                now_secs,
                now_secs + rules.dedupe_secs,
                rules.dedupe_cap,
            );
        }
        let grace = rules.decision.end_grace_secs;
        let mut until_ms = at_ms.saturating_add(rules.grace_ms());
        if keep_ends {
            until_ms = until_ms.max(now_ms);
        }
        for event in events {
            let hold = (until_ms > now_ms || keep_ends) && grace > 0;
            if hold && self.facts.ends_broadcast(event, grace) {
                if !self.held.iter().any(|h| h.event == *event) {
                    crate::metrics::count("events_held");
                    self.held.push(Held {
                        event: event.clone(),
                        until_ms,
                    });
                    out.changed = true;
                    tracing::info!(
                        until_ms,
                        at = event.at().secs(),
                        "an event that ends the broadcast is held for the end grace"
                    );
                }
                continue;
            }
            match self.merge(event, rules) {
                Merge::Changed => out.changed = true,
                Merge::BeyondHorizon => out.beyond_horizon += 1,
                Merge::Unchanged | Merge::IgnoredViewer => {}
            }
        }
        // Bounded: beyond the cap, the events due first are merged now.
        while self.held.len() > MAX_HELD {
            let first = (0..self.held.len())
                .min_by_key(|i| self.held[*i].until_ms)
                .unwrap_or(0);
            let held = self.held.remove(first);
            self.merge(&held.event, rules);
        }
        out
    }

    /// Folds the inbox into the facts (oldest entry first, each as [`StoredRoom::admit`] at the
    /// time it was appended) and merges the held events whose grace is over at `now_ms`.
    /// Whether the room changed.
    pub fn fold(&mut self, now_ms: u64, rules: &FoldRules<'_>) -> bool {
        let changed = self.fold_inbox(now_ms, rules, false);
        self.release_held(now_ms, rules) || changed
    }

    /// Folds the inbox, but merges no event that ends the broadcast (it is held, due at once if
    /// its grace is over): for writes that cannot end a PK with it — the lease holder's record,
    /// a lease's release. The next commit (the room is due) merges it.
    pub fn fold_keeping_ends(&mut self, now_ms: u64, rules: &FoldRules<'_>) -> bool {
        self.fold_inbox(now_ms, rules, true)
    }

    fn fold_inbox(&mut self, now_ms: u64, rules: &FoldRules<'_>, keep_ends: bool) -> bool {
        let mut changed = false;
        for entry in std::mem::take(&mut self.inbox) {
            changed = true;
            let admitted = self.take_in(
                entry.key.as_deref(),
                &entry.events,
                entry.at_ms,
                now_ms,
                rules,
                keep_ends,
            );
            if admitted.beyond_horizon > 0 {
                tracing::warn!(
                    counter = "events_beyond_horizon",
                    events = admitted.beyond_horizon,
                    "event of a forgotten user older than the room's horizon: ignored"
                );
            }
        }
        changed
    }

    /// Merges the held events whose grace is over at `now_ms`; whether the held events
    /// changed. While other events are still held, due ones that would end the broadcast wait
    /// for them (re-dated to the last one's end): a held event may be the host's presence —
    /// the late start of a short session that is over — and the end of the broadcast is
    /// judged with all of them, never in a view that hides where the host was (simulation seed
    /// 72387: a reconnect's Leave came due first, and the Stop came before the grace after the
    /// host's last session).
    fn release_held(&mut self, now_ms: u64, rules: &FoldRules<'_>) -> bool {
        let (mut due, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.until_ms <= now_ms);
        if due.is_empty() {
            self.held = waiting;
            return false;
        }
        if let Some(last) = waiting.iter().map(|h| h.until_ms).max() {
            let grace = rules.decision.end_grace_secs;
            let before = self.facts.broadcast(grace);
            let mut probe = self.facts.clone();
            for held in &due {
                probe.apply(&held.event);
            }
            let ends = before.as_ref().is_some_and(|b| {
                !probe
                    .broadcast(grace)
                    .is_some_and(|a| a.host == b.host && a.started <= b.started)
            });
            if ends {
                for held in &mut due {
                    held.until_ms = last;
                }
                self.held = waiting;
                self.held.extend(due);
                return true;
            }
        }
        self.held = waiting;
        for held in due {
            self.merge(&held.event, rules);
        }
        true
    }

    /// When the first held event's grace ends, if one is held.
    pub fn held_until(&self) -> Option<u64> {
        self.held.iter().map(|h| h.until_ms).min()
    }

    /// The room as every decision sees it: its inbox folded and the held events that are due
    /// merged, on a copy.
    pub fn folded(&self, now_ms: u64, rules: &FoldRules<'_>) -> StoredRoom {
        let mut room = self.clone();
        room.fold(now_ms, rules);
        room
    }

    fn merge(&mut self, event: &RoomEvent, rules: &FoldRules<'_>) -> Merge {
        apply(&mut self.facts, &mut self.record, event, rules.decision)
    }
}

/// The digest of a callback key, as an inbox entry and the seen keys carry it.
pub fn key_digest(key: &str) -> String {
    SeenKeys::digest(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use costream_core::ChannelId;

    fn ev(user: &str, session: &str, at: u64, action: UserAction) -> RoomEvent {
        RoomEvent::User(UserEvent {
            user: UserId::parse(user).expect("user"),
            session: SessionId::parse(session).expect("session"),
            at: Timestamp::from_secs(at),
            action,
            role: None,
        })
    }

    fn ev_role(user: &str, session: &str, at: u64, action: UserAction, role: Role) -> RoomEvent {
        let RoomEvent::User(mut u) = ev(user, session, at, action) else {
            unreachable!()
        };
        u.role = Some(role);
        RoomEvent::User(u)
    }

    fn room() -> StoredRoom {
        StoredRoom::new(ChannelId::parse("room-1").expect("channel"))
    }

    const T: u64 = 1_700_000_000;

    #[test]
    fn inbox_entries_and_held_events_are_stored_compactly_and_read_back() {
        let events = vec![
            ev("guest001", "guest001-s", T, UserAction::Join),
            ev("guest001", "guest001-s", T, UserAction::Publish),
            ev("g", "s", T, UserAction::RoleUpdate(Role::Live)),
            RoomEvent::Camera {
                user: UserId::parse("g").expect("user"),
                session: SessionId::parse("s").expect("session"),
                on: false,
                at: Timestamp::from_secs(T),
            },
            RoomEvent::ChannelClosed {
                at: Timestamp::from_secs(T + 1),
            },
            RoomEvent::Cdn {
                action: costream_core::CdnAction::PublishDone,
                at: Timestamp::from_secs(T + 2),
            },
        ];
        let entry = InboxEntry {
            id: "0123456789abcdef.42".into(),
            at_ms: T * 1000,
            key: Some(key_digest("k")),
            events,
        };
        let json = serde_json::to_string(&entry).expect("json");
        assert!(
            json.starts_with(r#"["0123456789abcdef.42",1700000000000,""#),
            "{json}"
        );
        assert!(
            json.contains(r#"["P","guest001","guest001-s",1700000000,0]"#),
            "{json}"
        );
        let back: InboxEntry = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, entry);
        let held = Held {
            event: ev("host", "h", T, UserAction::Leave),
            until_ms: 5,
        };
        let json = serde_json::to_string(&held).expect("json");
        assert_eq!(json, r#"[["L","host","h",1700000000,0],5]"#);
        assert_eq!(serde_json::from_str::<Held>(&json).expect("parses"), held);
        assert!(serde_json::from_str::<Held>(r#"[["Q","h","h",1,0],5]"#).is_err());
    }

    #[test]
    fn an_ending_event_is_held_for_the_grace_and_merged_after_it() {
        let cfg = DecisionConfig::default();
        let rules = FoldRules {
            decision: &cfg,
            dedupe_secs: 3600,
            dedupe_cap: 128,
        };
        let mut r = room();
        let now = (T + 20) * 1000;
        r.admit(
            None,
            &[ev("host", "h1", T + 10, UserAction::Publish)],
            now,
            now,
            &rules,
        );
        let leave = ev("host", "h1", T + 20, UserAction::Leave);
        let admitted = r.admit(None, std::slice::from_ref(&leave), now, now, &rules);
        assert!(admitted.changed);
        assert_eq!(r.held.len(), 1, "held, not merged");
        assert!(
            r.facts.broadcast(5).is_some(),
            "still live during the grace"
        );
        assert_eq!(r.held_until(), Some(now + 5_000));
        // A duplicate delivery is held once.
        r.admit(None, &[leave], now + 1, now + 1, &rules);
        assert_eq!(r.held.len(), 1);
        assert!(!r.fold(now + 4_999, &rules), "not yet");
        assert!(r.fold(now + 5_000, &rules));
        assert!(r.held.is_empty());
        assert!(
            r.facts.broadcast(5).is_none(),
            "merged: the broadcast ended"
        );
    }

    /// Seed 72387 in small: the host's session h1 leaves (held), a short session h2 begins
    /// as a viewer, turns interactive and leaves; its ToInteractive arrives last (held: with
    /// h2's Leave known, it ends the broadcast). When h1's Leave comes due first it waits for
    /// the ToInteractive, so the end is judged from the host's last session, not before.
    #[test]
    fn a_due_end_waits_for_the_events_still_held() {
        let cfg = DecisionConfig::default();
        let rules = FoldRules {
            decision: &cfg,
            dedupe_secs: 3600,
            dedupe_cap: 128,
        };
        let mut r = room();
        let now = (T + 20) * 1000;
        let host = |session: &str, at: u64, action| ev("host", session, at, action);
        r.admit(
            None,
            &[host("h1", T + 10, UserAction::Publish)],
            now,
            now,
            &rules,
        );
        r.admit(
            None,
            &[host("h1", T + 12, UserAction::Leave)],
            now,
            now,
            &rules,
        );
        assert_eq!(r.held.len(), 1, "h1's Leave is held");
        r.admit(
            None,
            &[
                ev_role("host", "h2", T + 13, UserAction::Join, Role::Live),
                host("h2", T + 15, UserAction::Leave),
            ],
            now,
            now,
            &rules,
        );
        let later = now + 3_000;
        r.admit(
            None,
            &[ev_role(
                "host",
                "h2",
                T + 14,
                UserAction::RoleUpdate(Role::Interactive),
                Role::Interactive,
            )],
            later,
            later,
            &rules,
        );
        assert_eq!(r.held.len(), 2, "the late ToInteractive is held too");
        // h1's Leave is due, the ToInteractive is not: nothing ends yet.
        assert!(r.fold(now + 5_000, &rules), "re-dated");
        assert!(r.facts.broadcast(5).is_some(), "still live");
        assert_eq!(r.held_until(), Some(later + 5_000));
        assert!(r.fold(later + 5_000, &rules));
        assert!(r.held.is_empty());
        assert!(
            r.facts.broadcast(5).is_none(),
            "ended, judged with every session"
        );
    }

    #[test]
    fn a_reconnect_processed_leave_first_never_ends_the_broadcast() {
        let cfg = DecisionConfig::default();
        let rules = FoldRules {
            decision: &cfg,
            dedupe_secs: 3600,
            dedupe_cap: 128,
        };
        let mut r = room();
        let now = (T + 21) * 1000;
        r.admit(
            None,
            &[ev("host", "h1", T + 10, UserAction::Publish)],
            now,
            now,
            &rules,
        );
        // The old session's Leave (t+1) first, then the new session's Join and Publish (t).
        r.admit(
            None,
            &[ev("host", "h1", T + 21, UserAction::Leave)],
            now,
            now,
            &rules,
        );
        let new = [
            ev("host", "h2", T + 20, UserAction::Join),
            ev("host", "h2", T + 20, UserAction::Publish),
        ];
        r.admit(None, &new, now + 300, now + 300, &rules);
        let started = r.facts.broadcast(5).map(|b| b.started);
        r.fold(now + 10_000, &rules);
        assert_eq!(r.facts.broadcast(5).map(|b| b.started), started);
        assert_eq!(started, Some(Timestamp::from_secs(T + 10)));
    }

    #[test]
    fn the_inbox_folds_once_and_duplicate_keys_are_skipped() {
        let cfg = DecisionConfig::default();
        let rules = FoldRules {
            decision: &cfg,
            dedupe_secs: 3600,
            dedupe_cap: 128,
        };
        let mut r = room();
        let now = T * 1000;
        let key = key_digest("cdnsig:publish:1:abc");
        for (i, events) in [
            vec![ev("host", "h1", T, UserAction::Publish)],
            vec![ev("guest", "g1", T + 1, UserAction::Publish)],
        ]
        .into_iter()
        .enumerate()
        {
            r.inbox.push(InboxEntry {
                id: format!("w{i}"),
                at_ms: now,
                key: (i == 1).then(|| key.clone()),
                events,
            });
        }
        // The same key again: a duplicate, skipped.
        r.inbox.push(InboxEntry {
            id: "w2".into(),
            at_ms: now,
            key: Some(key.clone()),
            events: vec![ev("other", "o1", T + 2, UserAction::Publish)],
        });
        assert!(r.fold(now, &rules));
        assert!(r.inbox.is_empty());
        let stage = r.facts.stage(16, 5).expect("live");
        assert_eq!(stage.on_stage.len(), 2, "{:?}", stage.on_stage);
        assert!(r.seen.contains_digest(&key, T));
        assert!(!r.fold(now, &rules), "nothing left to fold");
    }
}
