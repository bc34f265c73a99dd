//! The deterministic simulation's entry points.
//!
//! - `cargo test -p costream-dst` runs a fast slice of seeds (`fast_slice`) and the determinism
//!   check.
//! - `COSTREAM_SIM_SEED=N cargo test -p costream-dst --test dst replay -- --nocapture` replays
//!   one seed exactly (add `RUST_LOG`-free `--nocapture` for its report).
//! - `COSTREAM_SIM_SEEDS=10000 cargo test -p costream-dst --test dst bulk -- --nocapture` runs
//!   many seeds on every core (base seed: `COSTREAM_SIM_BASE`, default a fresh printed one) and
//!   prints seeds/s, the fault counts and the `needs_repair` rooms.

use std::time::Instant;

use costream_dst::ports::Fired;
use costream_dst::{run_seed, Stats};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `count` seeds from `base` on `threads` threads; panics with every failing seed's report.
fn run_many(base: u64, count: u64, threads: u64) -> (Vec<Stats>, f64) {
    let started = Instant::now();
    let results: Vec<Result<Stats, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..count)
                        .filter(|i| i % threads == t)
                        .map(|i| run_seed(base.wrapping_add(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(3).map(|s| s.as_str()).collect();
        let seeds: Vec<&str> = failures
            .iter()
            .filter_map(|s| s.strip_prefix("COSTREAM_SIM_SEED="))
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        panic!(
            "{} of {count} seeds failed (base {base}): {}; first ones:\n{}",
            failures.len(),
            seeds.join(" "),
            shown.join("\n---\n")
        );
    }
    (results.into_iter().filter_map(Result::ok).collect(), secs)
}

fn report(stats: &[Stats], secs: f64) -> Fired {
    let mut fired = Fired::default();
    for s in stats {
        fired.add(&s.fired);
    }
    let repair: usize = stats.iter().map(|s| s.needs_repair).sum();
    let mut causes = std::collections::BTreeMap::new();
    for s in stats {
        for (cause, n) in &s.repair_causes {
            *causes.entry(*cause).or_insert(0) += n;
        }
    }
    let dead_lettered: usize = stats.iter().map(|s| s.dead_lettered).sum();
    let slowest = stats
        .iter()
        .map(|s| s.converged_after_secs)
        .max()
        .unwrap_or(0);
    let rooms: usize = stats.iter().map(|s| s.rooms).sum();
    let deliveries: u64 = stats.iter().map(|s| s.deliveries).sum();
    eprintln!(
        "{} seeds in {secs:.1} s = {:.0} seeds/s; {rooms} rooms, {deliveries} deliveries; \
         wrong when the last callback was done, then put right by the repair loop: {repair} \
         rooms in {} seeds {causes:?}; dead-lettered and redriven: {dead_lettered}; every room \
         right at most {slowest} s after the last callback\nfaults fired: {fired:?}",
        stats.len(),
        stats.len() as f64 / secs,
        stats.iter().filter(|s| s.needs_repair > 0).count()
    );
    fired
}

fn threads() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u64)
}

#[test]
fn fast_slice() {
    let (stats, secs) = run_many(0, 300, threads());
    let fired = report(&stats, secs);
    // A broken knob "passes" by testing nothing: every fault class must fire in the slice.
    assert!(
        fired.silent().is_empty(),
        "fault classes that never fired: {:?}",
        fired.silent()
    );
}

#[test]
fn replay() {
    let Some(seed) = env_u64("COSTREAM_SIM_SEED") else {
        eprintln!("set COSTREAM_SIM_SEED=N to replay one seed");
        return;
    };
    match run_seed(seed) {
        Ok(stats) => eprintln!("seed {seed} passed: {stats:?}"),
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn bulk() {
    let Some(count) = env_u64("COSTREAM_SIM_SEEDS") else {
        eprintln!("set COSTREAM_SIM_SEEDS=N to run N seeds");
        return;
    };
    let base = env_u64("COSTREAM_SIM_BASE").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
            .wrapping_mul(1_000_003)
    });
    eprintln!("bulk: {count} seeds from COSTREAM_SIM_BASE={base}");
    let (stats, secs) = run_many(base, count, threads());
    let fired = report(&stats, secs);
    assert!(
        fired.silent().is_empty(),
        "fault classes that never fired: {:?}",
        fired.silent()
    );
}

/// The same seeds give the same runs, in another order and on another thread.
#[test]
fn runs_are_deterministic() {
    let first: Vec<u64> = (500..560)
        .map(|s| run_seed(s).map(|st| st.digest).unwrap_or(0))
        .collect();
    let second: Vec<u64> = std::thread::spawn(|| {
        let mut v: Vec<u64> = (500..560)
            .rev()
            .map(|s| run_seed(s).map(|st| st.digest).unwrap_or(0))
            .collect();
        v.reverse();
        v
    })
    .join()
    .expect("thread");
    assert_eq!(first, second);
}
