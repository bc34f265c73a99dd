//! Metrics: process-wide counters, written out as CloudWatch embedded metric format (EMF).
//!
//! The shell and the handlers count what happens ([`count`], [`gauge_max`]); whoever runs them
//! drains the counters once per invocation ([`take`]) and prints one EMF line ([`emf_line`]) to
//! stdout, where Lambda's log agent turns it into CloudWatch metrics without an API call. The
//! names are an interface: the template's alarms and dashboard use them.
//!
//! One registry per process is enough: a Lambda process handles one invocation at a time, and
//! `costream serve` only drains it for its repair report.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every metric name costream emits (tests/template checks the template's alarms and dashboard
/// against the same list).
pub const NAMES: &[&str] = &[
    "callbacks_applied",
    "callbacks_duplicate",
    "callbacks_rejected",
    "callbacks_failed",
    "mpu_start_ok",
    "mpu_start_refused",
    "mpu_start_in_doubt",
    "mpu_update_ok",
    "mpu_update_refused",
    "mpu_update_in_doubt",
    "mpu_update_task_missing",
    "mpu_stop_ok",
    "mpu_stop_refused",
    "mpu_stop_in_doubt",
    "version_conflicts",
    "rooms_marked",
    "rooms_due",
    "rooms_repaired",
    "repair_failures",
    "leaks_stopped",
    "tasks_restarted",
    "tasks_updated",
    "list_items_skipped",
    "oldest_due_age_secs",
    "webhooks_delivered",
    "webhooks_failed",
    "webhooks_dropped",
    "starts_refused_unregistered",
    "starts_capped",
    "heals_deferred",
    "webhooks_paced",
    "events_appended",
    "events_held",
    "writes_landed",
    "writes_out_of_budget",
];

static REGISTRY: Mutex<BTreeMap<&'static str, f64>> = Mutex::new(BTreeMap::new());

fn registry() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, f64>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds one to `name`.
pub fn count(name: &'static str) {
    add(name, 1.0);
}

/// Adds `n` to `name`.
pub fn add(name: &'static str, n: f64) {
    *registry().entry(name).or_insert(0.0) += n;
}

/// Sets `name` to `value` if that is larger than what it holds (an age, a size).
pub fn gauge_max(name: &'static str, value: f64) {
    let mut r = registry();
    let v = r.entry(name).or_insert(value);
    *v = v.max(value);
}

/// Everything counted since the last `take`, and resets the counters.
pub fn take() -> BTreeMap<&'static str, f64> {
    std::mem::take(&mut *registry())
}

/// The MPU call metric for `action` (`start`, `update`, `stop`) and `outcome` (`ok`,
/// `refused`, `in_doubt`, `task_missing`); `None` for combinations that do not exist.
pub fn mpu_metric(action: &str, outcome: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|n| {
            n.strip_prefix("mpu_")
                .and_then(|rest| rest.strip_prefix(action))
                .and_then(|rest| rest.strip_prefix('_'))
                == Some(outcome)
        })
        .copied()
}

/// One EMF document with `metrics` (no dimensions) and `properties` (searchable log fields such
/// as the function name), or `None` when there is nothing to report.
pub fn emf_line(
    namespace: &str,
    timestamp_ms: u64,
    metrics: &BTreeMap<&'static str, f64>,
    properties: &[(&str, &str)],
) -> Option<String> {
    if metrics.is_empty() {
        return None;
    }
    let definitions: Vec<serde_json::Value> = metrics
        .keys()
        .map(|name| {
            let unit = if name.ends_with("_secs") {
                "Seconds"
            } else {
                "Count"
            };
            serde_json::json!({ "Name": name, "Unit": unit })
        })
        .collect();
    let mut doc = serde_json::Map::new();
    doc.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": definitions,
            }],
        }),
    );
    for (k, v) in properties {
        doc.insert((*k).to_owned(), serde_json::Value::from(*v));
    }
    for (name, value) in metrics {
        doc.insert((*name).to_owned(), serde_json::Value::from(*value));
    }
    Some(serde_json::Value::Object(doc).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_parses_back_with_every_metric_declared_and_valued() {
        let mut m = BTreeMap::new();
        m.insert("rooms_repaired", 3.0);
        m.insert("oldest_due_age_secs", 42.5);
        let line = emf_line(
            "costream/test",
            1_700_000_000_000,
            &m,
            &[("function", "repair")],
        )
        .expect("a line");
        let doc: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        let meta = &doc["_aws"];
        assert_eq!(meta["Timestamp"], 1_700_000_000_000_u64);
        let directive = &meta["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "costream/test");
        assert_eq!(directive["Dimensions"], serde_json::json!([[]]));
        let declared: Vec<(String, String)> = directive["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|d| {
                (
                    d["Name"].as_str().expect("name").to_owned(),
                    d["Unit"].as_str().expect("unit").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            declared,
            [
                ("oldest_due_age_secs".to_owned(), "Seconds".to_owned()),
                ("rooms_repaired".to_owned(), "Count".to_owned())
            ]
        );
        // EMF: every declared metric is a top-level number member of the document.
        assert_eq!(doc["rooms_repaired"], 3.0);
        assert_eq!(doc["oldest_due_age_secs"], 42.5);
        assert_eq!(doc["function"], "repair");
        assert!(emf_line("ns", 0, &BTreeMap::new(), &[]).is_none());
    }

    #[test]
    fn mpu_metric_names_exist_for_each_action_and_outcome() {
        assert_eq!(mpu_metric("start", "ok"), Some("mpu_start_ok"));
        assert_eq!(
            mpu_metric("update", "task_missing"),
            Some("mpu_update_task_missing")
        );
        assert_eq!(mpu_metric("stop", "in_doubt"), Some("mpu_stop_in_doubt"));
        assert_eq!(mpu_metric("stop", "task_missing"), None);
        assert_eq!(mpu_metric("st", "op_ok"), None);
    }
}
