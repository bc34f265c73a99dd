//! DynamoDB [`StateStore`]: one item per room, every write conditional on the version read.
//!
//! Item layout (table with a single string partition key `pk`, on-demand):
//!
//! | attribute     | type | content |
//! |---------------|------|---------|
//! | `pk`          | S    | `ROOM#<AppId>#<ChannelId>` (ids can't contain `#`, so keys of different apps never collide) |
//! | `version`     | N    | optimistic-concurrency counter, +1 on every write (and every append) |
//! | `life`        | S    | the item's life: set when it is created, checked by every conditional write with the version |
//! | `wid`         | S    | the id of the write that made this version (a retried write that landed is recognised by it) |
//! | `at`          | N    | when that write was made, epoch ms |
//! | `inbox`       | SS   | callbacks committed by an append (each a compact JSON string with its unique write id), not yet folded (absent when empty) |
//! | `held`        | S    | events held back for the end grace, with when (JSON; absent when none) |
//! | `facts`       | S    | the room's [`Facts`](costream_core::Facts) as compact JSON |
//! | `record`      | S    | the shell's [`Record`](costream_core::Record) (the task applied) as JSON |
//! | `seen`        | S    | the CDN's recently seen signature pairs with expiry (JSON), bounded |
//! | `lease_owner` | S    | MPU lease holder (absent when free) |
//! | `lease_until` | N    | lease expiry, epoch ms |
//! | `lease_token` | S    | the id of the write that took the lease |
//! | `expires_at`  | N    | TTL attribute (s): rooms untouched for the shell's `room_ttl_ms` disappear by themselves; past it an item is treated as absent |
//! | `shard`       | S    | `<AppId>#<n>`, n = hash(channel) mod 8: the partition key of both indexes, spread so no index partition gets one app's whole write rate |
//! | `due_at`      | N    | when the repair loop should look at the room (absent when nothing is pending): index `due` |
//! | `outbox`      | S    | webhooks committed with the room's changes, not yet delivered (JSON; absent when empty) |
//! | `hooks_due`   | N    | when the room's oldest undelivered webhook is next due (absent when none): index `hooks` |
//! | `task`        | S    | the task the record names (absent when none): index `tasks`, for the leak sweep |
//! | `upkeep`      | S    | repair bookkeeping (failures in a row, last failure, StreamURL signing time), JSON; absent when empty |
//! | `failing_since` | N  | since when the room fails to converge (absent when it does not): projected into `due`, for the age alarm |
//!
//! `expires_at` is left out while the record names a task: a room whose task runs never expires
//! (a quiet 24-hour broadcast must not lose its room, or the sweep would take its task for a leak).
//!
//! Both indexes are sparse (an item without `due_at` / `task` is not in them); `tasks` is
//! KEYS_ONLY and `due` also carries `failing_since`:
//! the repair loop queries `due` for `shard = s AND due_at <= now` over the 8 shards and
//! `tasks` for every room with a task, then reads each room itself (consistently) before acting.
//!
//! The per-room decision history is a ring of [`HISTORY_LEN`] small items,
//! `HIST#<AppId>#<ChannelId>#<slot>` (`entry` as JSON, `v` its room version), each written
//! conditional on the slot holding an older version, so writes are idempotent,
//! order-insensitive and bounded, and never rewrite the room item; an MPU call's entry goes in
//! the same `TransactWriteItems` as the room write that records the call (`save_noting`).
//! History written before the split (one item `HIST#<AppId>#<ChannelId>` with `h<i>`/`v<i>`
//! attributes) is still read.
//!
//! Items written before facts and record were split hold one `state` attribute (the facts with
//! the record's `applied`/`heal` inside); they are read as such and rewritten in the new shape.
//!
//! The facts are one JSON attribute rather than a tree of DynamoDB maps: it is always read and
//! written whole (the decision needs all of it), the JSON is smaller than the typed-attribute
//! encoding, and the schema evolves with serde instead of with item surgery.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, Projection, ProjectionType};
use costream_app::ports::{DueRoom, RoomKey, StateStore, StoreError};
use costream_app::store::{
    HistoryEntry, InboxEntry, Lease, Life, SeenKeys, StoredRoom, Upkeep, HISTORY_LEN, MAX_INBOX,
};
use costream_core::{AppId, ChannelId, Facts, Record, Target, TaskId, Version};

/// How many `shard` values an app's rooms spread over (the indexes' partition keys).
pub const SHARDS: u64 = 8;

/// The index of rooms due for repair.
pub const DUE_INDEX: &str = "due";

/// The index of rooms whose record names a task.
pub const TASKS_INDEX: &str = "tasks";

/// The index of rooms with webhooks waiting for delivery.
pub const HOOKS_INDEX: &str = "hooks";

/// Rooms nobody touched for this long are removed by DynamoDB's TTL.
pub const DEFAULT_ROOM_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    room_ttl: Duration,
}

impl DynamoStore {
    /// The room's item and the condition of writing it over `expected`.
    fn item_of(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<(HashMap<String, AttributeValue>, WriteCondition), StoreError> {
        let json =
            |v: Result<String, serde_json::Error>| v.map_err(|e| failed(&key.to_string(), e));
        let facts = json(serde_json::to_string(&room.facts))?;
        let record = json(serde_json::to_string(&room.record))?;
        let seen = json(serde_json::to_string(&room.seen))?;
        let mut item = HashMap::from([
            ("pk".to_owned(), Self::pk(key)),
            (
                "version".to_owned(),
                AttributeValue::N(expected.next().get().to_string()),
            ),
            ("facts".to_owned(), AttributeValue::S(facts)),
            ("record".to_owned(), AttributeValue::S(record)),
            ("seen".to_owned(), AttributeValue::S(seen)),
            ("shard".to_owned(), AttributeValue::S(Self::shard(key))),
            ("at".to_owned(), AttributeValue::N(room.at_ms.to_string())),
        ]);
        if let Some(life) = &room.life {
            item.insert("life".to_owned(), AttributeValue::S(life.0.clone()));
        }
        if let Some(wid) = &room.wid {
            item.insert("wid".to_owned(), AttributeValue::S(wid.clone()));
        }
        if let Some(expires) = room.expires_ms {
            item.insert(
                "expires_at".to_owned(),
                AttributeValue::N(expires.div_ceil(1000).to_string()),
            );
        }
        if let Some(since) = room.upkeep.failing_since_ms {
            item.insert(
                "failing_since".to_owned(),
                AttributeValue::N(since.to_string()),
            );
        }
        if let Some(due) = room.due_ms {
            item.insert("due_at".to_owned(), AttributeValue::N(due.to_string()));
        }
        if let Some(due) = costream_app::webhooks::next_due(room) {
            item.insert("hooks_due".to_owned(), AttributeValue::N(due.to_string()));
        }
        if !room.outbox.is_empty() {
            let outbox = json(serde_json::to_string(&room.outbox))?;
            item.insert("outbox".to_owned(), AttributeValue::S(outbox));
        }
        if !room.inbox.is_empty() {
            let entries = room
                .inbox
                .iter()
                .map(|e| json(serde_json::to_string(e)))
                .collect::<Result<Vec<_>, _>>()?;
            item.insert("inbox".to_owned(), AttributeValue::Ss(entries));
        }
        if !room.held.is_empty() {
            let held = json(serde_json::to_string(&room.held))?;
            item.insert("held".to_owned(), AttributeValue::S(held));
        }
        if let Some(task) = room.record.running().task() {
            item.insert("task".to_owned(), AttributeValue::S(task.to_string()));
        }
        if !room.upkeep.is_default() {
            let upkeep = json(serde_json::to_string(&room.upkeep))?;
            item.insert("upkeep".to_owned(), AttributeValue::S(upkeep));
        }
        if let Some(lease) = &room.lease {
            item.insert(
                "lease_owner".to_owned(),
                AttributeValue::S(lease.owner.clone()),
            );
            item.insert(
                "lease_until".to_owned(),
                AttributeValue::N(lease.until_ms.to_string()),
            );
            item.insert(
                "lease_token".to_owned(),
                AttributeValue::S(lease.token.clone()),
            );
        }
        Ok((item, WriteCondition::of(room, expected)))
    }

    /// `client` is built once per process (with timeouts) and shared.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            room_ttl: DEFAULT_ROOM_TTL,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The partition key of a room's item.
    pub fn partition_key(key: &RoomKey) -> String {
        format!("ROOM#{}#{}", key.app, key.channel)
    }

    /// Creates the table (on-demand, TTL on `expires_at`) as `template.yaml` does; for local
    /// runs and tests. Succeeds if the table already exists.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(
                [
                    ("pk", ScalarAttributeType::S),
                    ("shard", ScalarAttributeType::S),
                    ("due_at", ScalarAttributeType::N),
                    ("task", ScalarAttributeType::S),
                    ("hooks_due", ScalarAttributeType::N),
                ]
                .into_iter()
                .map(|(name, ty)| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ty)
                        .build()
                        .map_err(|e| failed(&self.table, e))
                })
                .collect::<Result<Vec<_>, _>>()?,
            ))
            .key_schema(key_element("pk", KeyType::Hash).map_err(|e| failed(&self.table, e))?)
            .set_global_secondary_indexes(Some(
                [
                    (DUE_INDEX, "due_at"),
                    (TASKS_INDEX, "task"),
                    (HOOKS_INDEX, "hooks_due"),
                ]
                .into_iter()
                .map(|(index, range)| {
                    let projection = if index == DUE_INDEX {
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .non_key_attributes("failing_since")
                            .build()
                    } else {
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build()
                    };
                    GlobalSecondaryIndex::builder()
                        .index_name(index)
                        .key_schema(key_element("shard", KeyType::Hash)?)
                        .key_schema(key_element(range, KeyType::Range)?)
                        .projection(projection)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed(&self.table, e))?,
            ))
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => return Ok(()),
            Err(e) => return Err(classify(&self.table, e)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(|e| failed(&self.table, e))?,
            )
            .send()
            .await
            .map_err(|e| classify(&self.table, e))?;
        Ok(())
    }

    fn pk(key: &RoomKey) -> AttributeValue {
        AttributeValue::S(Self::partition_key(key))
    }

    /// The room of a partition key (the inverse of [`Self::partition_key`]).
    pub fn room_of(pk: &str) -> Option<RoomKey> {
        let rest = pk.strip_prefix("ROOM#")?;
        let (app, channel) = rest.split_once('#')?;
        Some(RoomKey {
            app: AppId::parse(app).ok()?,
            channel: ChannelId::parse(channel).ok()?,
        })
    }

    /// The `shard` of a room: `<AppId>#<n>`.
    pub fn shard(key: &RoomKey) -> String {
        let h = key
            .channel
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("{}#{}", key.app, h % SHARDS)
    }

    /// The room's item, read strongly consistently or not.
    async fn get_room(
        &self,
        key: &RoomKey,
        consistent: bool,
    ) -> Result<Option<StoredRoom>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| classify(&key.to_string(), e))?;
        out.item().map(|item| from_item(key, item)).transpose()
    }

    /// The item of the history written before it was split into one item per slot (read, never
    /// written).
    fn history_pk(key: &RoomKey) -> AttributeValue {
        AttributeValue::S(format!("HIST#{}#{}", key.app, key.channel))
    }

    /// The item of one history slot: `HIST#<app>#<channel>#<slot>`.
    fn history_slot_pk(key: &RoomKey, slot: u64) -> AttributeValue {
        AttributeValue::S(format!("HIST#{}#{}#{slot:02}", key.app, key.channel))
    }

    /// The room's conditional Put (for a transaction).
    fn room_put(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<Put, StoreError> {
        let (item, condition) = self.item_of(key, room, expected)?;
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition.expression)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, attribute) in condition.names {
            put = put.expression_attribute_names(name, attribute);
        }
        for (name, value) in condition.values {
            put = put.expression_attribute_values(name, value);
        }
        put.build().map_err(|e| failed(&key.to_string(), e))
    }

    /// A history entry's slot item and its condition: written only over an older entry, so
    /// writes are idempotent and order-insensitive. A small item of its own (one write unit),
    /// never a rewrite of the room item or of the whole history.
    fn history_put(&self, key: &RoomKey, entry: &HistoryEntry) -> Result<Put, StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| failed(&key.to_string(), e))?;
        Put::builder()
            .table_name(&self.table)
            .item(
                "pk",
                Self::history_slot_pk(key, entry.version % HISTORY_LEN),
            )
            .item("entry", AttributeValue::S(json))
            .item("v", AttributeValue::N(entry.version.to_string()))
            .item("expires_at", self.expires_at())
            .condition_expression("attribute_not_exists(pk) OR v < :v")
            .expression_attribute_values(":v", AttributeValue::N(entry.version.to_string()))
            .build()
            .map_err(|e| failed(&key.to_string(), e))
    }

    /// One task Start counted on `STARTS#<app>#<minute>`: `n + 1` only while `n < cap`; the
    /// item expires an hour later.
    fn start_update(
        app: &AppId,
        minute: u64,
        cap: u32,
    ) -> (String, [(&'static str, AttributeValue); 4]) {
        (
            format!("STARTS#{app}#{minute}"),
            [
                (":zero", AttributeValue::N("0".into())),
                (":one", AttributeValue::N("1".into())),
                (":cap", AttributeValue::N(cap.to_string())),
                (":exp", AttributeValue::N((minute * 60 + 3_600).to_string())),
            ],
        )
    }

    /// Runs a transaction whose first item is the room `key`'s write over `expected` and whose
    /// second is something that rides with it (a history slot, the start counter): `Ok(None)`
    /// when both landed, `Ok(Some(_))` when only the second item stopped it (nothing was
    /// written), a version conflict when the room's condition failed or another transaction
    /// held the room.
    async fn transact(
        &self,
        key: &RoomKey,
        expected: Version,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let room = key.to_string();
        let Err(e) = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        else {
            return Ok(None);
        };
        let (reasons, items) = cancellation_reasons(&room, e)?;
        match riding_cancelled(room, expected, &reasons) {
            Err(StoreError::VersionConflict { .. }) => Err(conflict(
                key,
                expected,
                items.first().and_then(Option::as_ref),
            )),
            other => other.map(Some),
        }
    }

    /// The expiry of a history slot: as long as a room's.
    fn expires_at(&self) -> AttributeValue {
        AttributeValue::N((now_secs() + self.room_ttl.as_secs()).to_string())
    }

    /// Every item of `index` in one shard matching the key condition, paginated.
    async fn query_shard(
        &self,
        index: &str,
        shard: String,
        due_before: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<std::collections::HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .expression_attribute_names("#s", "shard")
                .expression_attribute_values(":s", AttributeValue::S(shard.clone()))
                .set_exclusive_start_key(start.take());
            q = match due_before {
                Some((attribute, t)) => q
                    .key_condition_expression("#s = :s AND #d <= :t")
                    .expression_attribute_names("#d", attribute)
                    .expression_attribute_values(":t", AttributeValue::N(t.to_string())),
                None => q.key_condition_expression("#s = :s"),
            };
            let out = q.send().await.map_err(|e| classify(&self.table, e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if items.len() < limit => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }
}

/// A raw DynamoDB item.
type Item = HashMap<String, AttributeValue>;

impl DynamoStore {
    /// The rooms of `app` a sparse index (`index`, sort key `attribute`) holds due at or before
    /// `now_ms`, over every shard, as (due time, room, item); items without a usable key are
    /// skipped with a warning.
    async fn due_in(
        &self,
        index: &str,
        attribute: &str,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RoomKey, Item)>, StoreError> {
        let mut due = Vec::new();
        for n in 0..SHARDS {
            let shard = format!("{app}#{n}");
            for item in self
                .query_shard(index, shard, Some((attribute, now_ms)), limit)
                .await?
            {
                let room = match item.get("pk") {
                    Some(AttributeValue::S(pk)) => Self::room_of(pk),
                    _ => None,
                };
                let at = match item.get(attribute) {
                    Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
                    _ => None,
                };
                match (room, at) {
                    (Some(key), Some(at)) => due.push((at, key, item)),
                    _ => tracing::warn!(index, "skipping an index item without a usable key"),
                }
            }
        }
        Ok(due)
    }
}

fn key_element(
    name: &str,
    ty: KeyType,
) -> Result<KeySchemaElement, aws_sdk_dynamodb::error::BuildError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(ty)
        .build()
}

fn failed(room: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Failed {
        room: room.to_owned(),
        source: Box::new(e),
    }
}

/// A room write's condition (see `StateStore::save`): a create finds no item, or one past its
/// expiry; any other write finds version `expected` of the room's life, unexpired.
struct WriteCondition {
    expression: &'static str,
    names: Vec<(&'static str, &'static str)>,
    values: Vec<(&'static str, AttributeValue)>,
}

impl WriteCondition {
    fn of(room: &StoredRoom, expected: Version) -> WriteCondition {
        let now = AttributeValue::N((room.at_ms / 1000).to_string());
        if expected == Version::NONE {
            return WriteCondition {
                expression: "attribute_not_exists(pk) OR expires_at <= :now",
                names: Vec::new(),
                values: vec![(":now", now)],
            };
        }
        let mut values = vec![
            (":expected", AttributeValue::N(expected.get().to_string())),
            (":now", now),
        ];
        let expression = match &room.life {
            Some(life) => {
                values.push((":life", AttributeValue::S(life.0.clone())));
                "#v = :expected AND #life = :life AND (attribute_not_exists(expires_at) OR expires_at > :now)"
            }
            None => "#v = :expected AND attribute_not_exists(#life) AND (attribute_not_exists(expires_at) OR expires_at > :now)",
        };
        WriteCondition {
            expression,
            names: vec![("#v", "version"), ("#life", "life")],
            values,
        }
    }
}

/// Throttling, server errors, timeouts and connection failures are retryable; the rest is not.
fn classify<E, R>(room: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
            )
        ),
        _ => false,
    };
    store_error(room.to_owned(), transient, Box::new(e))
}

/// A failed request's error: retryable when `transient`.
fn store_error(
    room: String,
    transient: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> StoreError {
    if transient {
        StoreError::Unavailable { room, source }
    } else {
        StoreError::Failed { room, source }
    }
}

fn corrupt(key: &RoomKey, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        room: key.to_string(),
        reason: reason.into(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn number<T: std::str::FromStr>(
    item: &std::collections::HashMap<String, AttributeValue>,
    name: &str,
    key: &RoomKey,
) -> Result<Option<T>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| {
            corrupt(
                key,
                format!("attribute {name} is not a valid number: {n:?}"),
            )
        }),
        Some(_) => Err(corrupt(key, format!("attribute {name} is not a number"))),
    }
}

fn string<'a>(
    item: &'a std::collections::HashMap<String, AttributeValue>,
    name: &str,
    key: &RoomKey,
) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(s)) => Ok(Some(s)),
        Some(_) => Err(corrupt(key, format!("attribute {name} is not a string"))),
    }
}

/// The one-attribute shape written before facts and record were split: the facts with the
/// applied task (`applied`) and the heal flag inside.
fn legacy_state(
    key: &RoomKey,
    item: &std::collections::HashMap<String, AttributeValue>,
) -> Result<(Facts, Record), StoreError> {
    #[derive(serde::Deserialize)]
    struct Applied {
        applied: Target,
        #[serde(default)]
        heal: bool,
    }
    let json =
        string(item, "state", key)?.ok_or_else(|| corrupt(key, "attribute facts is missing"))?;
    let facts: Facts = serde_json::from_str(json)
        .map_err(|e| corrupt(key, format!("attribute state does not parse: {e}")))?;
    let applied: Applied = serde_json::from_str(json)
        .map_err(|e| corrupt(key, format!("attribute state does not parse: {e}")))?;
    Ok((facts, Record::new(applied.applied, applied.heal)))
}

/// Storage record → domain. Any surprise is a loud [`StoreError::Corrupt`] naming the room:
/// silently starting from an empty room would forget a running task.
fn from_item(
    key: &RoomKey,
    item: &std::collections::HashMap<String, AttributeValue>,
) -> Result<StoredRoom, StoreError> {
    let version = number::<u64>(item, "version", key)?
        .ok_or_else(|| corrupt(key, "attribute version is missing"))?;
    let (facts, record) = match string(item, "facts", key)? {
        Some(facts_json) => {
            let facts: Facts = serde_json::from_str(facts_json)
                .map_err(|e| corrupt(key, format!("attribute facts does not parse: {e}")))?;
            let record: Record = match string(item, "record", key)? {
                Some(r) => serde_json::from_str(r)
                    .map_err(|e| corrupt(key, format!("attribute record does not parse: {e}")))?,
                None => return Err(corrupt(key, "attribute record is missing")),
            };
            (facts, record)
        }
        None => legacy_state(key, item)?,
    };
    if facts.channel() != &key.channel {
        return Err(corrupt(
            key,
            format!("facts belong to channel {}", facts.channel()),
        ));
    }
    let seen = match string(item, "seen", key)? {
        Some(s) => serde_json::from_str(s)
            .map_err(|e| corrupt(key, format!("attribute seen does not parse: {e}")))?,
        None => SeenKeys::default(),
    };
    let lease = match (
        string(item, "lease_owner", key)?,
        number::<u64>(item, "lease_until", key)?,
    ) {
        (Some(owner), Some(until_ms)) => Some(Lease {
            owner: owner.to_owned(),
            until_ms,
            token: string(item, "lease_token", key)?
                .unwrap_or_default()
                .to_owned(),
        }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                key,
                "lease_owner and lease_until must come together",
            ))
        }
    };
    let upkeep: Upkeep = match string(item, "upkeep", key)? {
        Some(u) => serde_json::from_str(u)
            .map_err(|e| corrupt(key, format!("attribute upkeep does not parse: {e}")))?,
        None => Upkeep::default(),
    };
    let outbox = match string(item, "outbox", key)? {
        Some(o) => serde_json::from_str(o)
            .map_err(|e| corrupt(key, format!("attribute outbox does not parse: {e}")))?,
        None => Vec::new(),
    };
    let due_ms = number::<u64>(item, "due_at", key)?;
    let mut inbox: Vec<InboxEntry> = match item.get("inbox") {
        None => Vec::new(),
        Some(AttributeValue::Ss(entries)) => entries
            .iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| corrupt(key, format!("an inbox entry does not parse: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(corrupt(key, "attribute inbox is not a string set")),
    };
    // A set has no order; the fold needs none, but a stable one keeps reads reproducible.
    inbox.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let held = match string(item, "held", key)? {
        Some(h) => serde_json::from_str(h)
            .map_err(|e| corrupt(key, format!("attribute held does not parse: {e}")))?,
        None => Vec::new(),
    };
    Ok(StoredRoom {
        facts,
        record,
        version: Version::new(version),
        life: string(item, "life", key)?.map(|l| Life(l.to_owned())),
        wid: string(item, "wid", key)?.map(str::to_owned),
        at_ms: number::<u64>(item, "at", key)?.unwrap_or(0),
        expires_ms: number::<u64>(item, "expires_at", key)?.map(|s| s.saturating_mul(1000)),
        lease,
        seen,
        due_ms,
        upkeep,
        outbox,
        inbox,
        held,
    })
}

impl StateStore for DynamoStore {
    async fn load(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        self.get_room(key, true).await
    }

    async fn save(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
    ) -> Result<(), StoreError> {
        let (item, condition) = self.item_of(key, room, expected)?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition.expression)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, attribute) in condition.names {
            put = put.expression_attribute_names(name, attribute);
        }
        for (name, value) in condition.values {
            put = put.expression_attribute_values(name, value);
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                use aws_sdk_dynamodb::operation::put_item::PutItemError;
                if let Some(PutItemError::ConditionalCheckFailedException(failed)) =
                    e.as_service_error()
                {
                    return Err(conflict(key, expected, failed.item()));
                }
                Err(classify(&key.to_string(), e))
            }
        }
    }

    /// One UpdateItem: the entry added to the `inbox` list, the version incremented, the room
    /// marked due — conditional on the item's life, its expiry and the inbox's size only, so
    /// appends never conflict with each other. `ALL_NEW` is the room as written; a failed
    /// condition answers with the item as it was.
    async fn append(
        &self,
        key: &RoomKey,
        life: Option<&Life>,
        entry: &InboxEntry,
        due_ms: u64,
    ) -> Result<StoredRoom, StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| failed(&key.to_string(), e))?;
        let living = (entry.at_ms + costream_app::ports::APPEND_MIN_TTL_MS) / 1000;
        let life_condition = match life {
            Some(_) => "#life = :life",
            None => "attribute_not_exists(#life)",
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", Self::pk(key))
            // A string set: an append the SDK retries after it landed adds nothing the second
            // time (the entry carries its unique write id), and sets are cheaper to grow than
            // lists.
            .update_expression("ADD #inbox :entry SET #v = #v + :one, due_at = :due")
            .condition_expression(format!(
                "attribute_exists(pk) AND {life_condition} AND (attribute_not_exists(expires_at) OR expires_at > :living) AND (attribute_not_exists(#inbox) OR size(#inbox) < :max)"
            ))
            .expression_attribute_names("#inbox", "inbox")
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#life", "life")
            .expression_attribute_values(":entry", AttributeValue::Ss(vec![json]))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":due", AttributeValue::N(due_ms.to_string()))
            .expression_attribute_values(":living", AttributeValue::N(living.to_string()))
            .expression_attribute_values(":max", AttributeValue::N(MAX_INBOX.to_string()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(life) = life {
            update = update.expression_attribute_values(":life", AttributeValue::S(life.0.clone()));
        }
        match update.send().await {
            Ok(out) => match out.attributes() {
                Some(item) => from_item(key, item),
                None => Err(corrupt(key, "an append answered without the item")),
            },
            Err(e) => {
                use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
                if let Some(UpdateItemError::ConditionalCheckFailedException(failed)) =
                    e.as_service_error()
                {
                    return Err(conflict(key, Version::NONE, failed.item()));
                }
                Err(classify(&key.to_string(), e))
            }
        }
    }

    /// One `TransactWriteItems` of two conditional Puts: both land or neither.
    async fn save_pair(
        &self,
        a: (&RoomKey, &StoredRoom, Version),
        b: (&RoomKey, &StoredRoom, Version),
    ) -> Result<(), StoreError> {
        let both = format!("{} and {}", a.0, b.0);
        let mut items = Vec::with_capacity(2);
        for (key, room, expected) in [a, b] {
            let put = self.room_put(key, room, expected)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let (reasons, items) = cancellation_reasons(&both, e)?;
                // A version moved, or another transaction held an item: decide again from the
                // item as it is.
                let Some(i) = reasons
                    .iter()
                    .position(|c| c == "ConditionalCheckFailed" || c == "TransactionConflict")
                else {
                    return Err(cancelled_error(both, &reasons));
                };
                let (key, _, expected) = if i == 0 { a } else { b };
                Err(conflict(
                    key,
                    expected,
                    items.get(i).and_then(Option::as_ref),
                ))
            }
        }
    }

    /// One `TransactWriteItems`: the room's conditional Put and the history slot's. If only the
    /// slot's condition failed (it holds this entry or a newer one), the room is written alone.
    async fn save_noting(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        entry: &HistoryEntry,
    ) -> Result<(), StoreError> {
        let items = vec![
            TransactWriteItem::builder()
                .put(self.room_put(key, room, expected)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.history_put(key, entry)?)
                .build(),
        ];
        match self.transact(key, expected, items).await? {
            None => Ok(()),
            // The slot holds this entry or a newer one: the room alone.
            Some(Cancelled::Condition) => self.save(key, room, expected).await,
            // The entry is best effort: never a reason to fail the record.
            Some(Cancelled::Busy) => {
                self.save(key, room, expected).await?;
                if let Err(e) = self.append_history(key, entry).await {
                    tracing::warn!(error = %e, "could not write the room's history");
                }
                Ok(())
            }
        }
    }

    /// One `TransactWriteItems`: the room's conditional Put and the start counter's conditional
    /// increment; a full minute cancels both.
    async fn save_counting_start(
        &self,
        key: &RoomKey,
        room: &StoredRoom,
        expected: Version,
        minute: u64,
        cap: u32,
    ) -> Result<bool, StoreError> {
        let (pk, values) = Self::start_update(&key.app, minute, cap);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .update_expression(START_UPDATE)
            .condition_expression(START_CONDITION)
            .expression_attribute_names("#n", "n");
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        let update = update.build().map_err(|e| failed(&key.to_string(), e))?;
        let items = vec![
            TransactWriteItem::builder()
                .put(self.room_put(key, room, expected)?)
                .build(),
            TransactWriteItem::builder().update(update).build(),
        ];
        match self.transact(key, expected, items).await? {
            None => Ok(true),
            Some(Cancelled::Condition) => Ok(false),
            // The counter is busy (a burst of the app's Starts contends for it) or throttled:
            // count with a plain conditional increment, which queues instead of failing, then
            // write the room.
            Some(Cancelled::Busy) => match self.take_start(&key.app, minute, cap).await {
                Ok(true) => self.save(key, room, expected).await.map(|()| true),
                Ok(false) => Ok(false),
                // Throttled or timed out: the counter is hot, which is when the cap matters
                // most — refuse (retryable; the room is committed and marked) rather than let
                // a flood through.
                Err(e @ StoreError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "start counter unavailable; start refused for now");
                    Ok(false)
                }
                // Misconfigured: the cap can't work at all; logged loudly, broadcasts go on.
                Err(e) => {
                    tracing::error!(error = %e, "start counter unreadable; starting anyway");
                    self.save(key, room, expected).await.map(|()| true)
                }
            },
        }
    }

    async fn load_eventually(&self, key: &RoomKey) -> Result<Option<StoredRoom>, StoreError> {
        self.get_room(key, false).await
    }

    async fn due_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueRoom>, StoreError> {
        let number = |item: &Item, name: &str| match item.get(name) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
            _ => None,
        };
        let mut due: Vec<DueRoom> = self
            .due_in(DUE_INDEX, "due_at", app, now_ms, limit)
            .await?
            .into_iter()
            .map(|(due_ms, key, item)| DueRoom {
                key,
                due_ms,
                failing_since_ms: number(&item, "failing_since"),
            })
            .collect();
        due.sort_by(|a, b| a.due_ms.cmp(&b.due_ms).then_with(|| a.key.cmp(&b.key)));
        due.truncate(limit);
        Ok(due)
    }

    /// One conditional UpdateItem (see `start_update`).
    async fn take_start(&self, app: &AppId, minute: u64, cap: u32) -> Result<bool, StoreError> {
        let (pk, values) = Self::start_update(app, minute, cap);
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.clone()))
            .update_expression(START_UPDATE)
            .condition_expression(START_CONDITION)
            .expression_attribute_names("#n", "n");
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        let out = update.send().await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(classify(&pk, e)),
        }
    }

    async fn hook_rooms(
        &self,
        app: &AppId,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RoomKey>, StoreError> {
        let mut due = self
            .due_in(HOOKS_INDEX, "hooks_due", app, now_ms, limit)
            .await?;
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, key, _)| key).collect())
    }

    async fn rooms_with_tasks(&self, app: &AppId) -> Result<Vec<(RoomKey, TaskId)>, StoreError> {
        let mut with = Vec::new();
        for n in 0..SHARDS {
            let shard = format!("{app}#{n}");
            for item in self
                .query_shard(TASKS_INDEX, shard, None, usize::MAX)
                .await?
            {
                let room = match item.get("pk") {
                    Some(AttributeValue::S(pk)) => Self::room_of(pk),
                    _ => None,
                };
                let task = match item.get("task") {
                    Some(AttributeValue::S(t)) => TaskId::parse(t.clone()).ok(),
                    _ => None,
                };
                match (room, task) {
                    (Some(room), Some(task)) => with.push((room, task)),
                    _ => tracing::warn!("tasks index: skipping an item without a usable key"),
                }
            }
        }
        with.sort();
        Ok(with)
    }

    async fn append_history(&self, key: &RoomKey, entry: &HistoryEntry) -> Result<(), StoreError> {
        let put = self.history_put(key, entry)?;
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .condition_expression("attribute_not_exists(pk) OR v < :v")
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            // The slot holds this entry or a newer one: nothing to do.
            Err(e)
                if e.code() == Some("ConditionalCheckFailed")
                    || e.code() == Some("ConditionalCheckFailedException") =>
            {
                Ok(())
            }
            Err(e) => Err(classify(&key.to_string(), e)),
        }
    }

    /// The slot items in one BatchGetItem (and the single item of rooms written before the
    /// split, if any).
    async fn history(&self, key: &RoomKey) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut keys: Vec<HashMap<String, AttributeValue>> = (0..HISTORY_LEN)
            .map(|slot| HashMap::from([("pk".to_owned(), Self::history_slot_pk(key, slot))]))
            .collect();
        keys.push(HashMap::from([("pk".to_owned(), Self::history_pk(key))]));
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .build()
            .map_err(|e| failed(&key.to_string(), e))?;
        let mut entries = Vec::new();
        let mut parse = |name: &str, json: &str| -> Result<(), StoreError> {
            let entry: HistoryEntry = serde_json::from_str(json)
                .map_err(|e| corrupt(key, format!("history {name} does not parse: {e}")))?;
            entries.push(entry);
            Ok(())
        };
        // Unprocessed keys (throttling) are asked again, a few times.
        for _ in 0..4 {
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request.clone())
                .send()
                .await
                .map_err(|e| classify(&key.to_string(), e))?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                for (name, value) in item {
                    let AttributeValue::S(json) = value else {
                        continue;
                    };
                    if name == "entry"
                        || (name.starts_with('h') && name[1..].parse::<u64>().is_ok())
                    {
                        parse(name, json)?;
                    }
                }
            }
            match out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                Some(rest) if !rest.keys().is_empty() => request = rest.clone(),
                _ => break,
            }
        }
        entries.sort_by_key(|e| e.version);
        entries.dedup_by_key(|e| e.version);
        // The legacy item and the slots may both hold entries: keep the newest ring's worth.
        let excess = entries
            .len()
            .saturating_sub(usize::try_from(HISTORY_LEN).unwrap_or(usize::MAX));
        entries.drain(..excess);
        Ok(entries)
    }
}

/// The update and condition of the start counter (`take_start`, `save_counting_start`).
const START_UPDATE: &str = "SET #n = if_not_exists(#n, :zero) + :one, expires_at = :exp";
const START_CONDITION: &str = "attribute_not_exists(#n) OR #n < :cap";

/// Why the item riding with a room's write stopped a transaction (see `DynamoStore::transact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// Its condition failed.
    Condition,
    /// Another transaction held it, it was throttled, or it failed otherwise.
    Busy,
}

/// What stopped a transaction of a room's write (item 0) and a riding item (item 1), from its
/// cancellation reasons.
fn riding_cancelled(
    room: String,
    expected: Version,
    reasons: &[String],
) -> Result<Cancelled, StoreError> {
    let code = |i: usize| reasons.get(i).map_or("None", String::as_str);
    match code(0) {
        "None" => {}
        "ConditionalCheckFailed" | "TransactionConflict" => {
            return Err(StoreError::VersionConflict {
                room,
                expected,
                current: None,
            })
        }
        _ => return Err(cancelled_error(room, reasons)),
    }
    Ok(match code(1) {
        "ConditionalCheckFailed" => Cancelled::Condition,
        // Another transaction held it (the app-wide start counter in a burst of Starts), it
        // was throttled, or it failed otherwise: the room's write goes on without it.
        _ => Cancelled::Busy,
    })
}

/// A cancelled transaction's reasons, one per item in order ("None" for the items that were
/// fine), and the items as they were where a condition failed (`ALL_OLD`); any other failure,
/// classified.
fn cancellation_reasons<R>(
    room: &str,
    e: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Result<(Vec<String>, Vec<Option<Item>>), StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        e.as_service_error()
    else {
        return Err(classify(room, e));
    };
    let reasons = cancelled.cancellation_reasons();
    Ok((
        reasons
            .iter()
            .map(|r| r.code().unwrap_or("None").to_owned())
            .collect(),
        reasons.iter().map(|r| r.item().cloned()).collect(),
    ))
}

/// A version conflict of the room `key`, with the item as the failed condition found it (when
/// the answer carried one that parses).
fn conflict(key: &RoomKey, expected: Version, item: Option<&Item>) -> StoreError {
    let current = item.filter(|i| i.contains_key("version")).and_then(|i| {
        match from_item(key, i) {
            Ok(room) => Some(Box::new(room)),
            Err(e) => {
                tracing::warn!(error = %e, "a conflict's current item does not parse; reading it");
                None
            }
        }
    });
    StoreError::VersionConflict {
        room: key.to_string(),
        expected,
        current,
    }
}

/// The error of a transaction cancelled for reasons other than a condition: throttling is
/// retryable, anything else is not.
fn cancelled_error(room: String, reasons: &[String]) -> StoreError {
    let throttled = reasons.iter().any(|c| {
        matches!(
            c.as_str(),
            "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
        )
    });
    let source = format!("transaction cancelled: {}", reasons.join(", ")).into();
    store_error(room, throttled, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_transaction_is_read_item_by_item() {
        let reasons = |r: &[&str]| r.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        let v = Version::new(3);
        let read = |r: &[&str]| riding_cancelled("app/room-1".into(), v, &reasons(r));
        assert!(matches!(
            read(&["ConditionalCheckFailed", "None"]),
            Err(StoreError::VersionConflict { .. })
        ));
        assert!(matches!(
            read(&["TransactionConflict", "None"]),
            Err(StoreError::VersionConflict { .. })
        ));
        assert!(matches!(
            read(&["ThrottlingError", "None"]),
            Err(StoreError::Unavailable { .. })
        ));
        assert!(matches!(
            read(&["ValidationError", "None"]),
            Err(StoreError::Failed { .. })
        ));
        // The riding item alone: its condition (cap reached, slot newer), or busy — another
        // transaction on the start counter, or throttled — which the room's write survives.
        assert_eq!(
            read(&["None", "ConditionalCheckFailed"]).ok(),
            Some(Cancelled::Condition)
        );
        assert_eq!(
            read(&["None", "TransactionConflict"]).ok(),
            Some(Cancelled::Busy)
        );
        assert_eq!(
            read(&["None", "ThrottlingError"]).ok(),
            Some(Cancelled::Busy)
        );
    }
    use costream_core::{AppId, ChannelId};

    fn key() -> RoomKey {
        RoomKey {
            app: AppId::parse("app").expect("app"),
            channel: ChannelId::parse("room-1").expect("channel"),
        }
    }

    #[test]
    fn corrupt_items_are_loud_and_name_the_room() {
        let mut item = std::collections::HashMap::new();
        item.insert("version".to_owned(), AttributeValue::N("3".into()));
        item.insert("facts".to_owned(), AttributeValue::S("{not json".into()));
        let err = from_item(&key(), &item).expect_err("corrupt");
        assert!(
            matches!(&err, StoreError::Corrupt { room, reason } if room == "app/room-1" && reason.contains("facts does not parse")),
            "{err:?}"
        );
        item.insert("version".to_owned(), AttributeValue::S("3".into()));
        assert!(matches!(
            from_item(&key(), &item),
            Err(StoreError::Corrupt { .. })
        ));
        item.remove("version");
        assert!(matches!(
            from_item(&key(), &item),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_item_of_the_single_state_shape_is_read_as_facts_and_record() {
        let mut item = std::collections::HashMap::new();
        item.insert("version".to_owned(), AttributeValue::N("4".into()));
        item.insert(
            "state".to_owned(),
            AttributeValue::S(
                r#"{"channel":"room-1","registrations":[],"members":{},"closed_at":null,"cdn":null,"applied":{"On":{"task":"room-1_10","shape":{"Single":{"user":"host"}}}},"heal":true}"#.into(),
            ),
        );
        let room = from_item(&key(), &item).expect("legacy item");
        assert_eq!(
            room.record.running().task().map(|t| t.as_str()),
            Some("room-1_10")
        );
        assert!(room.record.needs_heal());
        assert_eq!(room.facts.channel().as_str(), "room-1");
    }

    #[test]
    fn a_state_of_another_channel_is_corrupt() {
        let other = Facts::new(ChannelId::parse("other").expect("channel"));
        let mut item = std::collections::HashMap::new();
        item.insert("version".to_owned(), AttributeValue::N("1".into()));
        item.insert(
            "facts".to_owned(),
            AttributeValue::S(serde_json::to_string(&other).expect("json")),
        );
        item.insert("record".to_owned(), AttributeValue::S("{}".into()));
        assert!(matches!(
            from_item(&key(), &item),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
