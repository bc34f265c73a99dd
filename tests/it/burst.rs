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

use crate::helpers::fresh_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_a_hundred_callbacks_on_dynamodb_is_committed_and_converges() {
    let (store, counter) = fresh_store("burst").await;
    let store = Arc::new(store);
    let mpu = Arc::new(RecordingMpu::new(21, Duration::from_millis(80), 0.0));
    let shells: Vec<_> = (0..3)
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
