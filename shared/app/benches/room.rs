//! Cost of the core and the shell for one callback in a full room (host + 15 co-streamers):
//! merge the event, derive the stage and the 16-pane layout, pick the command; and the whole
//! shell path on the in-memory store with an instant MPU fake (load, decide, commit, call,
//! record). Both run inside every Lambda invocation, so they should stay far below the
//! DynamoDB and Live API round trips (milliseconds).
//!
//! `cargo bench -p costream-app --features testing --bench room -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use costream_app::shell::{Shell, ShellConfig};
use costream_app::store::memory::InMemoryStore;
use costream_app::testing::concurrency::key;
use costream_app::testing::{ManualClock, RecordingMpu};
use costream_core::{
    decide, ChannelId, DecisionConfig, Facts, Record, RoomEvent, SessionId, Timestamp, UserAction,
    UserEvent, UserId,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn publish(user: &str, at: u64) -> RoomEvent {
    RoomEvent::User(UserEvent {
        user: UserId::parse(user).expect("user"),
        session: SessionId::parse(format!("{user}-session")).expect("session"),
        at: Timestamp::from_secs(at),
        action: UserAction::Publish,
        role: None,
    })
}

fn full_room() -> Facts {
    let mut room = Facts::new(ChannelId::parse("room-1").expect("channel"));
    room.apply(&publish("host", 1));
    for i in 0..15 {
        room.apply(&publish(&format!("co{i:02}"), 10 + i));
    }
    room
}

fn core(c: &mut Criterion) {
    let cfg = DecisionConfig::default();
    let room = full_room();
    let leave = RoomEvent::User(UserEvent {
        user: UserId::parse("co07").expect("user"),
        session: SessionId::parse("co07-session").expect("session"),
        at: Timestamp::from_secs(100),
        action: UserAction::Leave,
        role: None,
    });
    c.bench_function("core: apply + decide, 16-member room", |b| {
        b.iter(|| {
            let mut r = room.clone();
            r.apply(black_box(&leave));
            black_box(decide(&r, &Record::default(), &cfg))
        })
    });
}

fn shell(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let shell = Shell {
        store: InMemoryStore::new(),
        mpu: RecordingMpu::instant(),
        clock: ManualClock::at_ms(1_000_000),
        decision: DecisionConfig::default(),
        config: ShellConfig::default(),
    };
    let mut n = 0u64;
    c.bench_function("shell: one co-streamer publish/unpublish, in memory", |b| {
        b.iter(|| {
            n += 1;
            let action = if n.is_multiple_of(2) {
                UserAction::Publish
            } else {
                UserAction::Unpublish
            };
            let ev = RoomEvent::User(UserEvent {
                user: UserId::parse("guest").expect("user"),
                session: SessionId::parse("g").expect("session"),
                at: Timestamp::from_secs(10 + n),
                action,
                role: None,
            });
            runtime
                .block_on(shell.handle(&key(), None, &[publish("host", 1), ev], "bench"))
                .expect("handled")
        })
    });
}

criterion_group!(benches, core, shell);
criterion_main!(benches);
