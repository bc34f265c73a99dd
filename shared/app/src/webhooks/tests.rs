//! The events a write means, and delivery with retries against a store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::ports::{RoomKey, StateStore};
use crate::store::memory::InMemoryStore;
use costream_core::{
    apply, AppId, CdnAction, ChannelId, PkLink, RoomEvent, SessionId, Timestamp, UserAction,
    UserEvent, UserId,
};

fn ev(user: &str, at: u64, action: UserAction) -> RoomEvent {
    RoomEvent::User(UserEvent {
        user: UserId::parse(user).expect("user"),
        session: SessionId::parse(format!("{user}-s")).expect("session"),
        at: Timestamp::from_secs(at),
        action,
        role: None,
    })
}

/// The room after `events`, and the kinds of the events the last one means.
fn step(room: &mut StoredRoom, event: RoomEvent, cfg: &DecisionConfig) -> Vec<(String, String)> {
    let before = room.clone();
    apply(
        &mut room.facts,
        &mut room.record,
        &event,
        &DecisionConfig::default(),
    );
    let hooks = derive(&before, room, room.version.next(), 1_700_000_000_000, cfg);
    room.version = room.version.next();
    hooks.into_iter().map(|h| (h.kind, h.id)).collect()
}

fn kinds(hooks: &[(String, String)]) -> Vec<&str> {
    hooks.iter().map(|(k, _)| k.as_str()).collect()
}

/// The catalogue, through a room's life: each change is the event it names, once, with an id
/// unique to the write.
#[test]
fn a_rooms_life_is_its_events() {
    let cfg = DecisionConfig {
        max_panes: 2,
        ..DecisionConfig::default()
    };
    let mut room = StoredRoom::new(ChannelId::parse("room-1").expect("channel"));
    let live = step(&mut room, ev("host", 10, UserAction::Publish), &cfg);
    assert_eq!(kinds(&live), ["stage.changed"]);
    assert_eq!(live[0].1, "room-1:1:1700000000000:stage.changed");
    let cdn = step(
        &mut room,
        RoomEvent::Cdn {
            action: CdnAction::Publish,
            at: Timestamp::from_secs(11),
        },
        &cfg,
    );
    assert_eq!(kinds(&cdn), ["room.live"]);
    let guest = step(&mut room, ev("guest", 12, UserAction::Publish), &cfg);
    assert_eq!(kinds(&guest), ["stage.changed"]);
    let third = step(&mut room, ev("third", 13, UserAction::Publish), &cfg);
    assert_eq!(kinds(&third), ["cohost.waiting"], "beyond max_panes 2");
    let nothing = step(&mut room, ev("viewer", 14, UserAction::Join), &cfg);
    assert!(nothing.is_empty(), "{nothing:?}");
    let pk = step(
        &mut room,
        RoomEvent::Pk {
            link: Some(PkLink {
                peer: ChannelId::parse("room-2").expect("channel"),
                peer_host: UserId::parse("other").expect("user"),
                host: UserId::parse("host").expect("user"),
                started: Timestamp::from_secs(10),
            }),
            at: Timestamp::from_secs(15),
        },
        &cfg,
    );
    assert_eq!(kinds(&pk), ["pk.started"]);
    let end = step(&mut room, ev("host", 20, UserAction::Leave), &cfg);
    assert_eq!(kinds(&end), ["room.ended", "pk.ended"]);
    // A room that keeps failing: task.failed once, when it crosses the threshold.
    let mut failing = room.clone();
    failing.upkeep.attempts = FAILING_ATTEMPTS;
    let hooks = derive(&room, &failing, failing.version.next(), 0, &cfg);
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].kind, "task.failed");
    let mut worse = failing.clone();
    worse.upkeep.attempts += 1;
    assert!(derive(&failing, &worse, worse.version.next(), 0, &cfg).is_empty());
}

/// A backend that fails the first three deliveries gets every event, in order, exactly as
/// queued, each once it accepted it; a failed one waits for its backoff.
#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_until_accepted() {
    let store = InMemoryStore::new();
    let key = RoomKey {
        app: AppId::parse("app").expect("app"),
        channel: ChannelId::parse("room-1").expect("channel"),
    };
    let mut room = StoredRoom::new(key.channel.clone());
    let hook = |n: u32| Webhook {
        id: format!("room-1:{n}:stage.changed"),
        kind: "stage.changed".into(),
        room: "room-1".into(),
        time: 1,
        data: serde_json::json!({"n": n}),
    };
    enqueue(&mut room, vec![hook(1), hook(2)], 1_000);
    store
        .save(&key, &room, costream_core::Version::NONE)
        .await
        .expect("saved");
    let calls = AtomicUsize::new(0);
    let received = Mutex::new(Vec::new());
    let send = |h: Webhook| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let ok = n >= 3;
        if ok {
            received.lock().expect("lock").push(h.id.clone());
        }
        async move {
            if ok {
                Ok(())
            } else {
                Err("503".to_owned())
            }
        }
    };
    let mut now = 1_000;
    let mut rounds = 0;
    while store
        .load(&key)
        .await
        .expect("load")
        .is_some_and(|r| !r.outbox.is_empty())
    {
        rounds += 1;
        assert!(rounds < 20, "never delivered");
        let budget = Budget {
            events: 8,
            time: std::time::Duration::from_secs(5),
        };
        let done = deliver(&store, &key, now, budget, 4, &send)
            .await
            .expect("round");
        let room = store.load(&key).await.expect("load").expect("room");
        if done.failed > 0 {
            let next = next_due(&room).expect("still due");
            assert!(next > now, "a failure waits for its backoff");
            now = next;
        }
    }
    assert_eq!(
        *received.lock().expect("lock"),
        ["room-1:1:stage.changed", "room-1:2:stage.changed"]
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "3 failures, then each event once"
    );
}

/// A room delivers at most MAX_PER_MINUTE events a minute: a burst beyond it waits in the
/// outbox, in order, for the next minute (its head due then), and is all delivered.
#[tokio::test]
async fn a_burst_of_events_is_paced_per_room_and_all_delivered() {
    let store = InMemoryStore::new();
    let key = RoomKey {
        app: AppId::parse("app").expect("app"),
        channel: ChannelId::parse("room-1").expect("channel"),
    };
    let hook = |n: u32| Webhook {
        id: format!("room-1:{n}:0:stage.changed"),
        kind: "stage.changed".into(),
        room: "room-1".into(),
        time: 1_700_000_000,
        data: serde_json::json!({}),
    };
    let t0 = 1_700_000_000_000;
    let mut room = StoredRoom::new(key.channel.clone());
    let burst = MAX_PER_MINUTE + 10;
    enqueue(&mut room, (0..burst).map(hook).collect(), t0);
    store
        .save(&key, &room, costream_core::Version::NONE)
        .await
        .expect("saved");
    let received = Mutex::new(Vec::new());
    let send = |h: Webhook| {
        received.lock().expect("lock").push(h.id);
        async { Ok(()) }
    };
    let budget = Budget {
        events: 1_000,
        time: std::time::Duration::from_secs(60),
    };
    let round = |at: u64| deliver(&store, &key, at, budget, 4, &send);
    assert_eq!(
        round(t0).await.expect("first").sent,
        MAX_PER_MINUTE as usize
    );
    let stored = store.load(&key).await.expect("load").expect("room");
    assert_eq!(stored.outbox.len(), 10, "the rest wait, none dropped");
    assert_eq!(
        next_due(&stored),
        Some(t0 + 60_000),
        "due when the minute ends"
    );
    assert_eq!(round(t0 + 1_000).await.expect("held").sent, 0);
    assert_eq!(round(t0 + 60_000).await.expect("next minute").sent, 10);
    let ids = received.lock().expect("lock").clone();
    let want: Vec<String> = (0..burst).map(|n| hook(n).id).collect();
    assert_eq!(ids, want, "all delivered, in order");
}
