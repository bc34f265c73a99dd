//! A burst of concurrent callbacks into one room on DynamoDB (moto, with its conditional writes
//! made atomic), over three containers with their own process copies (issue 21, item 1): every
//! callback is answered with success — none given up after conflicts, as 11 were in 6 of 12
//! such bursts before — and the room is right within 2 s of the last answer.
//! `scripts/bench-burst.sh` measures the same scenario for 20, 50 and 100 callbacks.

use std::sync::Arc;
use std::time::Duration;

use costream_app::ports::SystemClock;
use costream_app::shell::{Shell, ShellConfig};
use costream_app::store::cached::Cached;
use costream_app::testing::burst::{room, scenario};
use costream_app::testing::RecordingMpu;
use costream_core::DecisionConfig;

use costream_dynamo::DynamoStore;

use crate::helpers::{fresh_store, RequestCounter};

type Containers = (
    Vec<Arc<Shell<Cached<Arc<DynamoStore>>, Arc<RecordingMpu>, SystemClock>>>,
    Arc<RecordingMpu>,
    RequestCounter,
);

/// Three containers (each with its own process copies) on a fresh moto table, and the
/// recording Live API they share (0–80 ms a call).
async fn containers(name: &str) -> Containers {
    let (store, counter) = fresh_store(name).await;
    let store = Arc::new(store);
    let mpu = Arc::new(RecordingMpu::new(21, Duration::from_millis(80), 0.0));
    let shells = (0..3)
        .map(|_| {
            Arc::new(Shell {
                store: Cached::new(store.clone()),
                mpu: mpu.clone(),
                clock: SystemClock,
                decision: DecisionConfig::default(),
                config: ShellConfig::default(),
            })
        })
        .collect();
    (shells, mpu, counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_a_hundred_callbacks_on_dynamodb_is_committed_and_converges() {
    let (shells, mpu, counter) = containers("burst").await;
    let key = room(1);
    let before = counter.get();
    let bursts = scenario(&shells, &key, 100, Duration::from_secs(2)).await;
    let mut ops = std::collections::BTreeMap::new();
    for r in counter.take() {
        *ops.entry(r.op).or_insert(0) += 1;
    }
    eprintln!(
        "{} DynamoDB requests for 201 callbacks {ops:?}; {bursts:?}",
        counter.get() - before
    );
    for (name, b) in ["join", "leave"].iter().zip(&bursts) {
        assert!(b.failed.is_empty(), "{name}: {:?}", b.failed);
        assert_eq!(b.answered, 100, "{name}");
        assert!(
            b.right_after.is_some(),
            "{name}: not right within 2 s of the last answer: {:?}",
            mpu.tasks(&key)
        );
    }
    assert_eq!(mpu.overlaps(), 0);
}

/// The burst benchmark (`scripts/bench-burst.sh`, results in docs/benchmarks.md): for each size
/// in `COSTREAM_BURST_SIZES` (default 20,50,100), `COSTREAM_BURST_RUNS` scenarios (default 10;
/// each a fresh room: the host live, the co-hosts joining at once, then leaving at once), over
/// three containers on moto. Prints, per size: give-ups (callbacks answered with an error),
/// handlers that left their room's convergence to others and the repair loop (`to-loop`, the
/// `writes_out_of_budget` metric; their events committed), the time from the last answer until
/// the task was right (p50, p99, max), the time to answer a whole burst, and per callback the
/// conflicts, appends and DynamoDB requests. Not run by `cargo test` (it measures, it does not
/// judge): the script runs it against a release build.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: scripts/bench-burst.sh"]
async fn bench_burst() {
    let sizes: Vec<usize> = std::env::var("COSTREAM_BURST_SIZES")
        .unwrap_or_else(|_| "20,50,100".into())
        .split(',')
        .map(|s| s.trim().parse().expect("COSTREAM_BURST_SIZES: numbers"))
        .collect();
    let runs: usize = std::env::var("COSTREAM_BURST_RUNS")
        .ok()
        .map_or(10, |s| s.parse().expect("COSTREAM_BURST_RUNS: a number"));
    let (shells, mpu, counter) = containers("bench-burst").await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |sorted: &[f64], p: f64| -> f64 {
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    };
    println!(
        "{:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>11}",
        "burst",
        "bursts",
        "give-ups",
        "to-loop",
        "ttr p50",
        "ttr p99",
        "ttr max",
        "answers p50",
        "confl/cb",
        "appends/cb",
        "requests/cb"
    );
    let mut run = 1000;
    for &n in &sizes {
        let mut right = Vec::new();
        let mut answers = Vec::new();
        let (mut gave_up, mut not_right, mut callbacks) = (0, 0, 0);
        costream_app::metrics::take();
        let before = counter.get();
        for _ in 0..runs {
            run += 1;
            let key = room(run);
            for b in scenario(&shells, &key, n, Duration::from_secs(10)).await {
                gave_up += b.failed.len();
                for f in b.failed.iter().take(2) {
                    println!("      gave up: {f}");
                }
                callbacks += n;
                answers.push(ms(b.answers_took));
                match b.right_after {
                    Some(d) => right.push(ms(d)),
                    None => not_right += 1,
                }
            }
            callbacks += 1; // the host's Publish
        }
        let requests = (counter.get() - before) as f64;
        let m = costream_app::metrics::take();
        let per = |name: &str| m.get(name).copied().unwrap_or(0.0) / callbacks as f64;
        right.sort_by(f64::total_cmp);
        answers.sort_by(f64::total_cmp);
        let ttr = |p: f64| {
            if right.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0} ms", pct(&right, p))
            }
        };
        println!(
            "{n:>5} {:>6} {:>8} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10.2} {:>10.2} {:>11.2}",
            runs * 2,
            gave_up,
            m.get("writes_out_of_budget").copied().unwrap_or(0.0),
            ttr(0.5),
            ttr(0.99),
            ttr(1.0),
            format!("{:.0} ms", pct(&answers, 0.5)),
            per("version_conflicts"),
            per("events_appended"),
            requests / callbacks as f64,
        );
        if not_right > 0 {
            println!("      {not_right} bursts were not right within 10 s of their last answer");
        }
    }
    assert_eq!(mpu.overlaps(), 0, "never two calls of a room at once");
}
