//! What each callback costs in DynamoDB, measured against moto through the real SDK: the
//! requests sent (counted by an SDK interceptor, with their bodies), the room item's size as
//! DynamoDB counts it, and the read/write units those requests bill by DynamoDB's published
//! rules. The request budget is asserted per callback type; the table it prints is the input of
//! the README's cost table:
//!
//! ```text
//! cargo test -p integration-tests --test it cost:: -- --nocapture --test-threads 1
//! ```
//!
//! Units are computed, not read back: moto's `ConsumedCapacity` is a constant. The rules
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html>):
//! a write bills ⌈max(old, new item size) / 1 KB⌉ write units (a failed conditional write too),
//! a transactional write twice that per item; a strongly consistent read ⌈size / 4 KB⌉ read
//! units, an eventually consistent one half; and each index whose entry the write adds, changes
//! or removes, one more write unit (all three indexes are small, keys-only entries).

use std::collections::HashMap;
use std::sync::Arc;

use costream_app::handlers::{CdnRequest, Services};
use costream_app::inbound::Side;
use costream_app::ports::{Clock, SystemClock};
use costream_app::store::cached::Cached;
use costream_dynamo::DynamoStore;
use serde_json::{json, Value};

use crate::e2e::deployed_like_with;
use crate::helpers::{config, fresh_store, RequestCounter, SentRequest};

/// A DynamoDB-JSON attribute value's size in bytes, as DynamoDB bills it.
fn value_size(v: &Value) -> usize {
    let Some((ty, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (ty.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        // Numbers: about one byte per two significant digits, plus one.
        ("N", Value::String(n)) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        ("B", Value::String(b)) => b.len() * 3 / 4,
        ("BOOL" | "NULL", _) => 1,
        ("L", Value::Array(items)) => 3 + items.iter().map(|i| 1 + value_size(i)).sum::<usize>(),
        ("M", Value::Object(m)) => item_size(m) + 3 + m.len(),
        ("SS" | "NS", Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or(0, str::len)).sum()
        }
        _ => 0,
    }
}

/// An item's size: attribute names plus values.
fn item_size(item: &serde_json::Map<String, Value>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The attributes that put a room into an index (the keys-only indexes' sort keys and the
/// projected `failing_since`).
const INDEXED: [&str; 4] = ["due_at", "task", "hooks_due", "failing_since"];

/// What one callback cost.
#[derive(Debug, Default, Clone)]
struct Cost {
    ops: Vec<String>,
    read_units: f64,
    write_units: u64,
    room_bytes: usize,
}

/// Tracks the room item across writes to price each request.
#[derive(Default)]
struct Meter {
    /// The room item as last written (attribute → value).
    room: serde_json::Map<String, Value>,
}

impl Meter {
    fn price(&mut self, sent: &[SentRequest]) -> Cost {
        let mut cost = Cost::default();
        for r in sent {
            cost.ops.push(r.op.clone());
            let b = &r.body;
            match r.op.as_str() {
                "GetItem" => {
                    let units = item_size(&self.room).max(1).div_ceil(4096) as f64;
                    cost.read_units += if b["ConsistentRead"] == json!(true) {
                        units
                    } else {
                        units / 2.0
                    };
                }
                "PutItem" => cost.write_units += self.put(b, 1),
                "UpdateItem" => {
                    // The history slot or the start counter: small items of their own.
                    let size: usize = b["ExpressionAttributeValues"]
                        .as_object()
                        .map_or(0, item_size);
                    cost.write_units += size.max(1).div_ceil(1024) as u64;
                }
                "TransactWriteItems" => {
                    for t in b["TransactItems"].as_array().into_iter().flatten() {
                        if t.get("Put").is_some() {
                            cost.write_units += self.put(&t["Put"], 2);
                        } else {
                            let size: usize = t["Update"]["ExpressionAttributeValues"]
                                .as_object()
                                .map_or(0, item_size);
                            cost.write_units += 2 * size.max(1).div_ceil(1024) as u64;
                        }
                    }
                }
                _ => {}
            }
        }
        cost.room_bytes = item_size(&self.room);
        cost
    }

    /// Prices a Put (`factor` 2 in a transaction); tracks the room item.
    fn put(&mut self, put: &Value, factor: u64) -> u64 {
        let Some(item) = put["Item"].as_object() else {
            return 0;
        };
        let new = item_size(item);
        let is_room = item["pk"]["S"]
            .as_str()
            .is_some_and(|p| p.starts_with("ROOM#"));
        if !is_room {
            return factor * new.max(1).div_ceil(1024) as u64;
        }
        let old = item_size(&self.room);
        let mut units = factor * new.max(old).max(1).div_ceil(1024) as u64;
        for attr in INDEXED {
            let (before, after) = (self.room.get(attr), item.get(attr));
            if before != after {
                // An index entry added, changed or removed (a key change is a delete + a put).
                units += u64::from(before.is_some()) + u64::from(after.is_some());
            }
        }
        self.room = item.clone();
        units
    }
}

type Svc = Services<
    Cached<Arc<DynamoStore>>,
    costream_app::mpu::AlibabaMpu<costream_alibaba::LiveClient, SystemClock>,
    SystemClock,
>;

fn artc(msg: &str, tag: &str, user: &str, role: u8, at: u64) -> Value {
    json!({
        "MsgId": msg,
        "MsgTimestamp": at,
        "SubscribeID": "sub-1",
        "AppId": "9qb1abcd",
        "ChannelID": "room-cost",
        "Contents": [{
            "Event": "UserEvent",
            "UserEvent": {
                "UserId": user,
                "EventTag": tag,
                // ARTC session ids are 32 characters.
                "SessionId": format!("{user}-0dr15rrnhkz0jnvz6o8sxo01ho")[..32].to_owned(),
                "Timestamp": at,
                "Role": role,
                "TerminalType": 1
            }
        }]
    })
}

/// Delivers an ARTC callback as EventBridge would: to each function whose rule one of its tags
/// matches (template.yaml: Publish, Join, Roleupdate, CameraOpen → stream-published; Unpublish,
/// Leave, Roleupdate, CameraClose, Close → stream-unpublished). Each applies every item.
async fn deliver(svc: &Svc, detail: &Value) -> Vec<&'static str> {
    let tags: Vec<String> = detail["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["UserEvent"]["EventTag"].as_str().map(str::to_owned))
        .collect();
    let routed = |rule: &[&str]| tags.iter().any(|t| rule.contains(&t.as_str()));
    let mut results = Vec::new();
    for (side, rule) in [
        (
            Side::Published,
            &["Publish", "Join", "Roleupdate", "CameraOpen"][..],
        ),
        (
            Side::Unpublished,
            &["Unpublish", "Leave", "Roleupdate", "CameraClose"][..],
        ),
    ] {
        if !routed(rule) {
            continue;
        }
        let out = svc
            .artc_detail(detail, side, "inv")
            .await
            .expect("callback handled");
        results.push(out.result);
    }
    results
}

async fn cdn(svc: &Svc, action: &str, at: u64) -> &'static str {
    let ts = SystemClock.now_ms() / 1000;
    let host = "abc123.execute-api.us-east-1.amazonaws.com";
    let sig = costream_alibaba::callback_auth::expected_signature(host, &ts.to_string(), "yourkey");
    let (ts, time) = (ts.to_string(), at.to_string());
    let req = CdnRequest {
        query: vec![
            ("action", action),
            ("app", "push.example.com"),
            ("appname", "live"),
            ("id", "room-cost_main"),
            ("time", time.as_str()),
        ],
        host: Some(host),
        ali_timestamp: Some(&ts),
        ali_signature: Some(&sig),
    };
    svc.cdn_ingest(&req, "inv-cdn")
        .await
        .expect("cdn handled")
        .result
}

/// The typical room: a host, three co-hosts, viewers coming and going; every callback type
/// priced, the budget asserted for a warm container (the common case) and printed for a cold
/// one.
#[tokio::test]
async fn a_callback_costs_at_most_two_requests() {
    let (store, counter) = fresh_store("cost").await;
    let store = Arc::new(store);
    // Each Services is one container, with its own process cache (as the functions run).
    let (svc, _sim) = deployed_like_with(Cached::new(store.clone()), config(&[])).await;
    let t0 = SystemClock.now_ms() / 1000 - 600;
    let mut meter = Meter::default();
    let mut rows: Vec<(String, usize, Cost)> = Vec::new();
    let mut measure = |name: &str, outcome: String, counter: &RequestCounter| {
        let cost = meter.price(&counter.take());
        eprintln!(
            "{name:<34} {outcome:<22} {:>2} req  {:>4.1} RRU {:>2} WRU  room {:>4} B  {:?}",
            cost.ops.len(),
            cost.read_units,
            cost.write_units,
            cost.room_bytes,
            cost.ops
        );
        rows.push((name.to_owned(), cost.ops.len(), cost));
    };
    counter.take();

    let steps: Vec<(&str, Value)> = vec![
        ("host joins", artc("m01", "Join", "host_8f3a2c19", 1, t0)),
        (
            "host publishes (Start)",
            artc("m02", "Publish", "host_8f3a2c19", 1, t0 + 1),
        ),
        (
            "viewer joins",
            artc("m03", "Join", "viewer_0001", 2, t0 + 2),
        ),
        (
            "viewer joins",
            artc("m04", "Join", "viewer_0002", 2, t0 + 3),
        ),
        (
            "co-host joins",
            artc("m05", "Join", "guest_1a2b3c", 1, t0 + 4),
        ),
        (
            "co-host publishes (Update)",
            artc("m06", "Publish", "guest_1a2b3c", 1, t0 + 5),
        ),
        (
            "co-host joins",
            artc("m07", "Join", "guest_4d5e6f", 1, t0 + 6),
        ),
        (
            "co-host publishes (Update)",
            artc("m08", "Publish", "guest_4d5e6f", 1, t0 + 7),
        ),
        (
            "co-host joins",
            artc("m09", "Join", "guest_7a8b9c", 1, t0 + 8),
        ),
        (
            "co-host publishes (Update)",
            artc("m10", "Publish", "guest_7a8b9c", 1, t0 + 9),
        ),
        (
            "duplicate delivery",
            artc("m10", "Publish", "guest_7a8b9c", 1, t0 + 9),
        ),
        (
            "viewer leaves",
            artc("m11", "Leave", "viewer_0001", 2, t0 + 10),
        ),
        (
            "co-host unpublishes (Update)",
            artc("m12", "Unpublish", "guest_4d5e6f", 1, t0 + 11),
        ),
        (
            "co-host leaves",
            artc("m13", "Leave", "guest_4d5e6f", 1, t0 + 12),
        ),
    ];
    for (name, detail) in &steps {
        let results = deliver(&svc, detail).await;
        measure(name, results.join(","), &counter);
    }
    let out = cdn(&svc, "publish", t0 + 13).await;
    measure("cdn publish", out.to_owned(), &counter);
    let out = svc
        .room_status_for("room-cost", None)
        .await
        .expect("status");
    measure(
        "GET /rooms (public)",
        format!("{out:?}").chars().take(12).collect(),
        &counter,
    );
    // The host's Leave is held for the end grace (5 s): its commit, then — the handler waits
    // out the grace — the Stop from the process's copy: the lease with the held Leave merged,
    // and the record.
    let results = deliver(&svc, &artc("m14", "Leave", "host_8f3a2c19", 1, t0 + 14)).await;
    measure(
        "host leaves (Stop after grace)",
        results.join(","),
        &counter,
    );

    // A cold container (a second Services on the same table, knowing nothing): one read more.
    let (cold, _sim2) = deployed_like_with(Cached::new(store.clone()), config(&[])).await;
    counter.take();
    let results = deliver(&cold, &artc("m15", "Join", "host_8f3a2c19", 1, t0 + 20)).await;
    let cold_cost = meter.price(&counter.take());
    eprintln!(
        "cold container, host joins again: {} req {:?} ({})",
        cold_cost.ops.len(),
        cold_cost.ops,
        results.join(",")
    );
    assert!(cold_cost.ops.len() <= 3, "{:?}", cold_cost.ops);

    // A brand-new room's first Start in a fresh container: a conditional create with no read
    // before it, then the record — two requests, as in a warm one.
    let (fresh, _sim3) = deployed_like_with(Cached::new(store.clone()), config(&[])).await;
    counter.take();
    let mut first = artc("m16", "Publish", "host_new", 1, t0 + 30);
    first["ChannelID"] = json!("room-new");
    let results = deliver(&fresh, &first).await;
    let new_room = meter.price(&counter.take());
    eprintln!(
        "fresh container, a new room's first Start: {} req {:?} ({})",
        new_room.ops.len(),
        new_room.ops,
        results.join(",")
    );
    assert_eq!(results, ["converged"]);
    assert!(new_room.ops.len() <= 2, "{:?}", new_room.ops);

    let budget: HashMap<&str, usize> = [
        ("viewer joins", 1),
        ("viewer leaves", 1),
        ("duplicate delivery", 1),
        ("GET /rooms (public)", 1),
        // The end grace's one write more: the Leave's own commit.
        ("host leaves (Stop after grace)", 3),
    ]
    .into_iter()
    .collect();
    for (name, requests, cost) in &rows {
        let cap = budget.get(name.as_str()).copied().unwrap_or(2);
        assert!(
            *requests <= cap,
            "{name}: {requests} requests {:?} (budget {cap})",
            cost.ops
        );
    }
    let max_room = rows.iter().map(|r| r.2.room_bytes).max().unwrap_or(0);
    eprintln!("largest room item: {max_room} B");
    assert!(max_room <= 1024, "the typical room fits 1 KB: {max_room} B");
}
