//! The DynamoDB adapter and the shell against moto, through the real aws-sdk-dynamodb client.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use costream_app::ports::StateStore;
use costream_app::shell::{Handled, Shell, ShellConfig};
use costream_app::store::{Lease, StoreError, StoredRoom};
use costream_app::testing::concurrency::{ev, key, run_concurrent};
use costream_app::testing::{ManualClock, RecordingMpu};
use costream_core::{
    decide, DecisionConfig, Facts, Record, SessionId, Timestamp, UserAction, UserEvent, UserId,
    Version,
};
use costream_dynamo::DynamoStore;

use crate::helpers::fresh_store;

#[tokio::test]
async fn conditional_writes_conflict_with_a_typed_error() {
    let (store, _) = fresh_store("conflict").await;
    let room = StoredRoom::new(key().channel);
    store
        .save(&key(), &room, Version::NONE)
        .await
        .expect("create");
    let again = store.save(&key(), &room, Version::NONE).await;
    assert!(
        matches!(again, Err(StoreError::VersionConflict { .. })),
        "{again:?}"
    );
    let loaded = store.load(&key()).await.expect("load").expect("exists");
    assert_eq!(loaded.version, Version::new(1));
    store
        .save(&key(), &loaded, Version::new(1))
        .await
        .expect("v1 -> v2");
    let stale = store.save(&key(), &loaded, Version::new(1)).await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { .. })),
        "{stale:?}"
    );
    assert_eq!(
        store
            .load(&key())
            .await
            .expect("load")
            .expect("exists")
            .version,
        Version::new(2)
    );
}

/// A full room: 16 publishing members (one with three sessions), the applied 16-pane layout,
/// a lease and the CDN's remembered signature pairs. Round-trips exactly; its item, as DynamoDB
/// counts it, stays within 4 KB (four write units).
#[tokio::test]
async fn a_sixteen_member_room_round_trips() {
    let (store, _) = fresh_store("roundtrip").await;
    let mut state = Facts::new(key().channel);
    for i in 0..16u64 {
        let user = UserId::parse(format!("user-{i:02}-abcdefgh")).expect("user");
        for s in 0..if i == 0 { 3 } else { 1 } {
            state.apply(&costream_core::RoomEvent::User(UserEvent {
                user: user.clone(),
                session: SessionId::parse(format!("0dr15rrnhkz0jnvz6o8sxo01hoond{i:02}{s}"))
                    .expect("session"),
                at: Timestamp::from_secs(1_700_000_000 + i * 10 + s),
                action: UserAction::Publish,
                role: None,
            }));
        }
    }
    let decision = decide(&state, &Record::default(), &DecisionConfig::default());
    let mut room = StoredRoom::new(key().channel);
    room.facts = state;
    room.record.confirm(decision.target.clone());
    room.lease = Some(Lease {
        owner: "c0ffee00-1111-2222-3333-444455556666".into(),
        until_ms: 1_700_000_060_000,
        token: "0123456789abcdef.42".into(),
    });
    // Only the CDN's signed pairs are remembered: a couple per broadcast.
    for i in 0..4 {
        room.seen.insert(
            format!("{i:08x}-83d3-44af-a94f-4e0ad82fd6cf"),
            0,
            1_700_003_600,
            128,
        );
    }
    store
        .save(&key(), &room, Version::NONE)
        .await
        .expect("save");
    let loaded = store.load(&key()).await.expect("load").expect("exists");
    assert_eq!(loaded.facts, room.facts);
    assert_eq!(loaded.record, room.record);
    assert_eq!(loaded.lease, room.lease);
    assert_eq!(loaded.seen, room.seen);
    assert_eq!(loaded.version, Version::new(1));

    // DynamoDB item size: attribute names + values (UTF-8 bytes; numbers ~ digits).
    let raw = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(DynamoStore::partition_key(&key())))
        .send()
        .await
        .expect("get");
    let item = raw.item().expect("item");
    let size: usize = item
        .iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    _ => 0,
                }
        })
        .sum();
    let state_only = item
        .get("state")
        .and_then(|v| v.as_s().ok())
        .map_or(0, String::len);
    eprintln!(
        "16-member room item: {size} bytes ({} WCU per write); state alone {state_only} bytes",
        size.div_ceil(1024)
    );
    assert!(size <= 4096, "a 16-pane room fits 4 KB: {size} bytes");
}

#[tokio::test]
async fn ttl_is_enabled_and_set_on_every_item() {
    let (store, _) = fresh_store("ttl").await;
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("describe ttl");
    let desc = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(desc.attribute_name(), Some("expires_at"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // The shell stamps every write with the room's expiry (its clock, its TTL).
    let shell = Shell {
        store: Arc::new(store),
        mpu: Arc::new(RecordingMpu::instant()),
        clock: ManualClock::at_ms(now * 1000),
        decision: DecisionConfig::default(),
        config: ShellConfig::default(),
    };
    let raw = |store: Arc<DynamoStore>| async move {
        store
            .client()
            .get_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(DynamoStore::partition_key(&key())))
            .send()
            .await
            .expect("get")
            .item()
            .cloned()
            .expect("item")
    };
    shell
        .handle(&key(), None, &[ev("host", 10, UserAction::Join)], "a")
        .await
        .expect("join");
    let item = raw(shell.store.clone()).await;
    let expires: u64 = item
        .get("expires_at")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .expect("expires_at set");
    assert!(
        expires > now + 7 * 24 * 3600,
        "room TTL is weeks ahead: {expires}"
    );

    // A room whose task runs never expires: a quiet day-long broadcast keeps its room, or the
    // leak sweep would take its task for a leak.
    shell
        .handle(&key(), None, &[ev("host", 11, UserAction::Publish)], "b")
        .await
        .expect("publish");
    let item = raw(shell.store.clone()).await;
    assert!(!item.contains_key("expires_at"), "{item:?}");
    assert!(item.contains_key("task"), "in the tasks index: {item:?}");
}

#[tokio::test]
async fn a_corrupt_item_is_a_loud_error_naming_the_room() {
    let (store, _) = fresh_store("corrupt").await;
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("pk", AttributeValue::S(DynamoStore::partition_key(&key())))
        .item("version", AttributeValue::N("4".into()))
        .item("state", AttributeValue::S("{\"channel\":\"room-1\"".into()))
        .send()
        .await
        .expect("put raw");
    let err = store.load(&key()).await.expect_err("corrupt");
    assert!(
        matches!(&err, StoreError::Corrupt { room, .. } if room == "app/room-1"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_dynamodb_is_a_retryable_error() {
    // A loopback port nobody listens on: connection refused, like a network failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(conf), "nowhere");
    let err = store.load(&key()).await.expect_err("unreachable");
    assert!(
        matches!(err, StoreError::Unavailable { .. }) && err.is_retryable(),
        "{err:?}"
    );
}

/// The budget without a process cache (a cold container each time): a state-changing event
/// costs ≤ 3 DynamoDB requests (the create attempt that answers with the item, the commit, the
/// record with its call's history entry in one transaction) and exactly one MPU call; a
/// duplicate ≤ 1 request and no call. Warm containers save the first: `cost::a_callback_costs_at_most_two_requests`.
#[tokio::test]
async fn request_budget_against_dynamodb() {
    let (store, counter) = fresh_store("budget").await;
    let mpu = Arc::new(RecordingMpu::instant());
    let shell = Shell {
        store,
        mpu: mpu.clone(),
        clock: ManualClock::at_ms(1_000_000),
        // The host's Leave acts at once here (the end grace's extra write is priced in
        // `cost::a_callback_costs_at_most_two_requests`).
        decision: DecisionConfig {
            end_grace_secs: 0,
            ..DecisionConfig::default()
        },
        config: ShellConfig::default(),
    };
    let steps = [
        ev("host", 10, UserAction::Publish),
        ev("guest", 20, UserAction::Publish),
        ev("guest", 30, UserAction::Leave),
        ev("host", 40, UserAction::Leave),
    ];
    for (i, e) in steps.iter().enumerate() {
        let msg = format!("msg-{i}");
        let before = (counter.get(), mpu.calls().len());
        let out = shell
            .handle(&key(), Some(&msg), std::slice::from_ref(e), "inv")
            .await
            .expect("handled");
        assert!(
            matches!(out, Handled::Converged { calls: 1, .. }),
            "{out:?}"
        );
        let requests = counter.get() - before.0;
        eprintln!("event {i}: {requests} DynamoDB requests, 1 MPU call");
        assert!(requests <= 3, "event {i}: {requests} requests");
        assert_eq!(mpu.calls().len() - before.1, 1);

        let before = (counter.get(), mpu.calls().len());
        let out = shell
            .handle(&key(), Some(&msg), std::slice::from_ref(e), "inv-dup")
            .await
            .expect("handled");
        assert_eq!(out, Handled::Duplicate);
        assert!(counter.get() - before.0 <= 1);
        assert_eq!(mpu.calls().len(), before.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_handlers_converge_on_dynamodb() {
    let (store, counter) = fresh_store("concurrency").await;
    let store = Arc::new(store);
    let seeds = 12;
    for seed in 0..seeds {
        // Each seed plays in a fresh room: clear the item between runs.
        store
            .client()
            .delete_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(DynamoStore::partition_key(&key())))
            .send()
            .await
            .expect("reset room");
        run_concurrent(store.clone(), 1000 + seed, 32, Duration::from_millis(2)).await;
    }
    eprintln!(
        "{seeds} seeds x 32 handlers: {} DynamoDB requests",
        counter.get()
    );
}

fn room_key(channel: &str) -> costream_app::ports::RoomKey {
    costream_app::ports::RoomKey {
        app: key().app,
        channel: costream_core::ChannelId::parse(channel).expect("channel"),
    }
}

/// The repair loop's two sparse indexes on moto: rooms due by time (across the shards, most
/// overdue first, only the due ones), and rooms whose record names a task.
#[tokio::test]
async fn the_due_and_tasks_indexes_find_rooms_without_a_scan() {
    let (store, counter) = fresh_store("indexes").await;
    let channels = ["due-early", "due-late", "not-due", "future", "with-task"];
    for (i, channel) in channels.iter().enumerate() {
        let mut room = StoredRoom::new(room_key(channel).channel);
        room.due_ms = match *channel {
            "due-early" => Some(1_000),
            "due-late" => Some(2_000),
            "future" => Some(9_000),
            _ => None,
        };
        if *channel == "with-task" {
            let publish = ev("host", 10, UserAction::Publish);
            costream_core::apply(
                &mut room.facts,
                &mut room.record,
                &publish,
                &costream_core::DecisionConfig::default(),
            );
            let target = decide(&room.facts, &room.record, &DecisionConfig::default()).target;
            room.record.confirm(target);
        }
        store
            .save(&room_key(channel), &room, Version::NONE)
            .await
            .unwrap_or_else(|e| panic!("save {i}: {e}"));
    }
    let before = counter.get();
    let due = store
        .due_rooms(&key().app, 5_000, 100)
        .await
        .expect("query");
    assert_eq!(
        due.iter()
            .map(|d| (d.key.channel.as_str(), d.due_ms))
            .collect::<Vec<_>>(),
        [("due-early", 1_000), ("due-late", 2_000)]
    );
    assert_eq!(
        counter.get() - before,
        costream_dynamo::SHARDS,
        "one query per shard, no scan"
    );
    let limited = store.due_rooms(&key().app, 5_000, 1).await.expect("query");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].key.channel.as_str(), "due-early");

    let with = store.rooms_with_tasks(&key().app).await.expect("query");
    assert_eq!(with.len(), 1, "{with:?}");
    assert_eq!(with[0].0.channel.as_str(), "with-task");
    assert!(with[0].1.as_str().starts_with("with-task_"));

    // Clearing the mark takes the room out of the index.
    let mut early = store
        .load(&room_key("due-early"))
        .await
        .expect("load")
        .expect("room");
    early.due_ms = None;
    store
        .save(&room_key("due-early"), &early, early.version)
        .await
        .expect("save");
    let due = store
        .due_rooms(&key().app, 5_000, 100)
        .await
        .expect("query");
    assert_eq!(due.len(), 1);
    // Another app's rooms are not this app's.
    let other = costream_core::AppId::parse("other-app").expect("app");
    assert!(store
        .due_rooms(&other, u64::MAX / 2, 100)
        .await
        .expect("query")
        .is_empty());
}

/// The per-room history on moto: a bounded ring, idempotent, newest kept, oldest first.
#[tokio::test]
async fn the_history_keeps_the_newest_decisions_in_order() {
    use costream_app::store::HISTORY_LEN;
    let (store, _) = fresh_store("history").await;
    let entry = history_entry;
    assert!(store.history(&key()).await.expect("empty").is_empty());
    for v in (1..=HISTORY_LEN + 5).rev() {
        store
            .append_history(&key(), &entry(v))
            .await
            .expect("append");
    }
    // Written newest first: every older entry found its slot taken by a newer one.
    store
        .append_history(&key(), &entry(3))
        .await
        .expect("an older entry changes nothing");
    store
        .append_history(&key(), &entry(HISTORY_LEN + 5))
        .await
        .expect("idempotent");
    let history = store.history(&key()).await.expect("history");
    let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
    assert_eq!(versions, (6..=HISTORY_LEN + 5).collect::<Vec<_>>());
    assert_eq!(history.last(), Some(&entry(HISTORY_LEN + 5)));
    // The room item itself is untouched by history writes.
    assert!(store.load(&key()).await.expect("load").is_none());
}

/// Two rooms in one TransactWriteItems (a PK's link and its end): both land, or, when either
/// version moved, neither — the other room is left exactly as it was.
#[tokio::test]
async fn a_pair_of_rooms_is_written_together_or_not_at_all() {
    let (store, _) = fresh_store("pair").await;
    let (a, b) = (room_key("room-a"), room_key("room-b"));
    let mut ra = StoredRoom::new(a.channel.clone());
    let mut rb = StoredRoom::new(b.channel.clone());
    store
        .save_pair((&a, &ra, Version::NONE), (&b, &rb, Version::NONE))
        .await
        .expect("both created");
    ra = store.load(&a).await.expect("load").expect("a");
    rb = store.load(&b).await.expect("load").expect("b");
    assert_eq!((ra.version, rb.version), (Version::new(1), Version::new(1)));

    // b moves on alone; a pair write from the old versions writes neither.
    store.save(&b, &rb, rb.version).await.expect("b alone");
    ra.due_ms = Some(42);
    let stale = store
        .save_pair((&a, &ra, ra.version), (&b, &rb, rb.version))
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { .. })),
        "{stale:?}"
    );
    let a_now = store.load(&a).await.expect("load").expect("a");
    assert_eq!((a_now.version, a_now.due_ms), (Version::new(1), None));
    let b_now = store.load(&b).await.expect("load").expect("b");
    assert_eq!(b_now.version, Version::new(2));

    // From the current versions: both.
    store
        .save_pair((&a, &ra, a_now.version), (&b, &b_now, b_now.version))
        .await
        .expect("both");
    assert_eq!(
        store.load(&a).await.expect("load").expect("a").due_ms,
        Some(42)
    );
    assert_eq!(
        store.load(&b).await.expect("load").expect("b").version,
        Version::new(3)
    );
}

/// The per-app starts counter: one conditional increment per Start, at most `cap` a minute,
/// per app; the next minute starts afresh.
#[tokio::test]
async fn the_starts_counter_admits_at_most_the_cap_a_minute() {
    let (store, _) = fresh_store("starts").await;
    let app = room_key("room-a").app;
    let other = costream_core::AppId::parse("otherapp").expect("app");
    let mut admitted = Vec::new();
    for _ in 0..4 {
        admitted.push(store.take_start(&app, 1_000, 3).await.expect("counted"));
    }
    assert_eq!(admitted, [true, true, true, false]);
    assert!(store.take_start(&other, 1_000, 3).await.expect("other app"));
    assert!(store.take_start(&app, 1_001, 3).await.expect("next minute"));
}

/// The writes that carry something along, each one TransactWriteItems: the room with its call's
/// history entry (written alone when the slot holds a newer entry), and the room with a Start
/// counted against the app's cap (neither when the minute is full).
#[tokio::test]
async fn a_record_carries_its_history_entry_and_a_start_its_count() {
    use costream_app::store::HISTORY_LEN;
    let (store, counter) = fresh_store("carry").await;
    let entry = history_entry;
    let room = StoredRoom::new(key().channel);
    let before = counter.get();
    store
        .save_noting(&key(), &room, Version::NONE, &entry(1))
        .await
        .expect("room and entry");
    assert_eq!(counter.get() - before, 1, "one request");
    assert_eq!(store.history(&key()).await.expect("history"), [entry(1)]);

    // The slot already holds a newer entry: the room is still written, the entry is not.
    store
        .append_history(&key(), &entry(1 + HISTORY_LEN))
        .await
        .expect("newer entry");
    store
        .save_noting(&key(), &room, Version::new(1), &entry(1))
        .await
        .expect("room written alone");
    let loaded = store.load(&key()).await.expect("load").expect("room");
    assert_eq!(loaded.version, Version::new(2));
    assert_eq!(
        store.history(&key()).await.expect("history"),
        [entry(1 + HISTORY_LEN)]
    );
    // A stale version: a conflict, nothing written.
    let stale = store
        .save_noting(&key(), &room, Version::new(1), &entry(5))
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { .. })),
        "{stale:?}"
    );
    assert_eq!(store.history(&key()).await.expect("history").len(), 1);

    // Starts: a cap of 1 a minute. The first counted start writes the room; the second is
    // refused and writes nothing; a stale version is a conflict, and counts nothing.
    let counted = store
        .save_counting_start(&key(), &loaded, Version::new(2), 7, 1)
        .await
        .expect("counted");
    assert!(counted);
    let refused = store
        .save_counting_start(&key(), &loaded, Version::new(3), 7, 1)
        .await
        .expect("refused");
    assert!(!refused);
    assert_eq!(
        store
            .load(&key())
            .await
            .expect("load")
            .expect("room")
            .version,
        Version::new(3),
        "the refused start wrote nothing"
    );
    let stale = store
        .save_counting_start(&key(), &loaded, Version::new(1), 8, 1)
        .await;
    assert!(
        matches!(stale, Err(StoreError::VersionConflict { .. })),
        "{stale:?}"
    );
    assert!(
        store.take_start(&key().app, 8, 1).await.expect("minute 8"),
        "the conflicting write counted nothing"
    );
    assert!(store
        .load_eventually(&key())
        .await
        .expect("eventually consistent read")
        .is_some());
}

/// A room's history written before it was split into slot items (one item, `h<i>` attributes)
/// is still shown, merged with the slots.
#[tokio::test]
async fn history_written_in_the_single_item_layout_still_reads() {
    let (store, _) = fresh_store("legacyhist").await;
    let entry = history_entry;
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("pk", AttributeValue::S("HIST#app#room-1".into()))
        .item(
            "h3",
            AttributeValue::S(serde_json::to_string(&entry(3)).expect("json")),
        )
        .item("v3", AttributeValue::N("3".into()))
        .send()
        .await
        .expect("legacy item");
    store.append_history(&key(), &entry(4)).await.expect("slot");
    let versions: Vec<u64> = store
        .history(&key())
        .await
        .expect("history")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [3, 4]);
}

/// Two containers with their own process caches: the one whose copy is stale commits with one
/// failed conditional write — which answers with the item as it is, so no read — never over the
/// newer state.
#[tokio::test]
async fn a_stale_process_copy_costs_a_conflict_never_a_lost_write() {
    use costream_app::store::cached::Cached;
    let (store, counter) = fresh_store("stale").await;
    let store = Arc::new(store);
    let shell = |store: Cached<Arc<DynamoStore>>| Shell {
        store,
        mpu: Arc::new(RecordingMpu::instant()),
        clock: ManualClock::at_ms(1_000_000),
        decision: DecisionConfig::default(),
        config: ShellConfig::default(),
    };
    let (a, b) = (
        shell(Cached::new(store.clone())),
        shell(Cached::new(store.clone())),
    );
    a.handle(&key(), None, &[ev("host", 10, UserAction::Join)], "a1")
        .await
        .expect("a");
    b.handle(&key(), None, &[ev("guest", 11, UserAction::Join)], "b1")
        .await
        .expect("b");
    // a's copy misses b's write.
    let before = counter.get();
    a.handle(&key(), None, &[ev("viewer", 12, UserAction::Leave)], "a2")
        .await
        .expect("a again");
    assert_eq!(
        counter.get() - before,
        2,
        "a failed write (answering with the item as it is), then the write"
    );
    let facts = store.load(&key()).await.expect("load").expect("room").facts;
    let json = serde_json::to_string(&facts).expect("json");
    for who in ["host", "guest", "viewer"] {
        assert!(json.contains(&format!("\"{who}\"")), "{who} kept: {json}");
    }
}

/// A history entry of room version `version`.
fn history_entry(version: u64) -> costream_app::store::HistoryEntry {
    costream_app::store::HistoryEntry {
        version,
        at_ms: 1_700_000_000_000 + version,
        trigger: format!("publish u{version} @1700000000"),
        command: "update room-1_1700000000 mix_mode=1 users=[host,u2]".into(),
        outcome: "ok".into(),
    }
}
