//! The commit and record plans, without a store.

use super::*;
use costream_core::{ChannelId, SessionId, Timestamp, UserAction, UserEvent, UserId, Version};

const T: u64 = 1_700_000_000;
const NOW: u64 = (T + 100) * 1000;

fn ev(user: &str, session: &str, at: u64, action: UserAction) -> RoomEvent {
    RoomEvent::User(UserEvent {
        user: UserId::parse(user).expect("user"),
        session: SessionId::parse(session).expect("session"),
        at: Timestamp::from_secs(at),
        action,
        role: None,
    })
}

fn config() -> ShellConfig {
    ShellConfig {
        writes: super::super::WriteIds::new("t"),
        ..ShellConfig::default()
    }
}

fn new_room() -> StoredRoom {
    StoredRoom::new(ChannelId::parse("room-1").expect("channel"))
}

fn events<'a>(events: &'a [RoomEvent]) -> Input<'a> {
    Input::Events { key: None, events }
}

/// A room as a converged write left it: the host live in MixMode 0.
fn live_room(decision: &DecisionConfig, cfg: &ShellConfig) -> StoredRoom {
    let ctx = Ctx {
        decision,
        config: cfg,
    };
    let who = Writer {
        owner: "a",
        wid: "w1",
    };
    let publish = [ev("host", "h1", T, UserAction::Publish)];
    let plan = plan(&new_room(), &events(&publish), NOW, who, None, ctx);
    let mut room = plan.room;
    room.version = Version::new(1);
    let command = plan.command.expect("a start");
    room.record.confirm(command.result());
    room.lease = None;
    room.due_ms = None;
    room
}

#[test]
fn a_new_room_is_created_with_a_life_and_the_lease_for_its_start() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let publish = [ev("host", "h1", T, UserAction::Publish)];
    let who = Writer {
        owner: "inv-1",
        wid: "t.1",
    };
    let p = plan(&new_room(), &events(&publish), NOW, who, None, ctx);
    assert!(p.write);
    assert!(matches!(p.command, Some(Command::Start { .. })));
    assert!(p.room.life.as_ref().is_some_and(|l| l.0.ends_with("t.1")));
    assert_eq!(p.room.wid.as_deref(), Some("t.1"));
    assert!(p.room.holds_lease("t.1"));
    assert!(
        p.room.record.is_in_doubt(),
        "the Start's intent goes with the lease"
    );
    assert_eq!(
        p.room.expires_ms, None,
        "a room whose record names a task never expires"
    );
    assert_eq!(
        p.room.due_ms,
        Some(NOW + cfg.lease_ms + crate::store::DUE_MARGIN_MS)
    );
}

#[test]
fn a_held_lease_makes_a_commit_without_a_call() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let mut room = live_room(&decision, &cfg);
    room.take_lease("other", "other-token", NOW, cfg.lease_ms);
    let publish = [ev("guest", "g1", T + 50, UserAction::Publish)];
    let who = Writer {
        owner: "inv-2",
        wid: "t.2",
    };
    let p = plan(&room, &events(&publish), NOW, who, None, ctx);
    assert!(p.write && p.command.is_none());
    assert!(
        p.room.holds_lease("other-token"),
        "the holder's lease is kept"
    );
    assert_eq!(
        p.outcome,
        Handled::Committed {
            version: Version::new(2)
        }
    );
    assert_eq!(
        p.room.life, room.life,
        "a versioned write keeps the item's life"
    );
}

#[test]
fn nothing_to_write_for_a_duplicate_or_a_viewer() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let room = live_room(&decision, &cfg);
    let who = Writer {
        owner: "inv-3",
        wid: "t.3",
    };
    let again = [ev("host", "h1", T, UserAction::Publish)];
    let p = plan(&room, &events(&again), NOW, who, None, ctx);
    assert!(!p.write);
    assert_eq!(p.outcome, Handled::NoChange);
    let viewer = [RoomEvent::User(UserEvent {
        role: Some(costream_core::Role::Live),
        ..match ev("fan", "f1", T + 3, UserAction::Join) {
            RoomEvent::User(u) => u,
            _ => unreachable!(),
        }
    })];
    assert!(!plan(&room, &events(&viewer), NOW, who, None, ctx).write);
}

/// The host's Leave is held for the end grace: no Stop, the room due when the grace ends; the
/// repair pass after it merges the Leave and stops the task.
#[test]
fn the_hosts_leave_waits_for_the_end_grace() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let mut room = live_room(&decision, &cfg);
    let leave = [ev("host", "h1", T + 90, UserAction::Leave)];
    let who = Writer {
        owner: "inv-4",
        wid: "t.4",
    };
    let p = plan(&room, &events(&leave), NOW, who, None, ctx);
    assert!(p.write);
    assert!(p.command.is_none(), "no Stop during the grace");
    assert_eq!(p.room.held.len(), 1);
    let grace_end = NOW + decision.end_grace_secs * 1000;
    assert_eq!(p.room.due_ms, Some(grace_end));
    room = p.room;
    room.version = Version::new(2);
    let who = Writer {
        owner: "repair",
        wid: "t.5",
    };
    let early = plan(&room, &Input::Repair, grace_end - 1, who, None, ctx);
    assert!(early.command.is_none());
    let p = plan(&room, &Input::Repair, grace_end, who, None, ctx);
    assert!(
        matches!(p.command, Some(Command::Stop { .. })),
        "{:?}",
        p.command
    );
    assert!(p.room.held.is_empty());
}

/// The inbox is folded by any versioned write: the appended events count.
#[test]
fn appended_events_are_folded_and_can_take_the_lease() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let mut room = live_room(&decision, &cfg);
    room.inbox.push(crate::store::InboxEntry {
        id: "x.1".into(),
        at_ms: NOW,
        key: None,
        events: vec![ev("guest", "g1", T + 60, UserAction::Publish)],
    });
    room.version = Version::new(2);
    let who = Writer {
        owner: "inv-6",
        wid: "t.6",
    };
    let p = plan(&room, &Input::Appended, NOW, who, None, ctx);
    assert!(p.room.inbox.is_empty());
    assert!(matches!(p.command, Some(Command::Update { .. })));
    assert!(p.room.holds_lease("t.6"));
    assert!(matches!(p.outcome, Handled::Committed { .. }));
}

/// A heal owed after an Update (a publish_done committed during it) waits for the heal spacing
/// like any heal (issue 21, item 5).
#[test]
fn an_owed_heal_keeps_the_heal_spacing() {
    let (decision, cfg) = (DecisionConfig::default(), config());
    let ctx = Ctx {
        decision: &decision,
        config: &cfg,
    };
    let mut room = live_room(&decision, &cfg);
    let running = room.record.running().clone();
    room.upkeep.healed_ms = Some(NOW - 5_000);
    room.record = costream_core::Record::new(running.clone(), true);
    room.take_lease("holder", "tok", NOW, cfg.lease_ms);
    let p = plan_record(&room, &running, false, false, NOW, "t.7", ctx);
    assert!(p.next.is_none(), "the owed heal waits: {:?}", p.next);
    assert!(p.room.lease.is_none(), "released");
    assert!(p.room.record.needs_heal(), "still owed");
    assert_eq!(p.room.due_ms, Some(NOW - 5_000 + HEAL_SPACING_MS));
    // Past the spacing it goes at once.
    let later = NOW + HEAL_SPACING_MS;
    let p = plan_record(&room, &running, false, false, later, "t.8", ctx);
    assert!(matches!(p.next, Some(Command::Start { .. })));
    assert_eq!(p.room.upkeep.healed_ms, Some(later));
}
