//! costream's CPU work per callback, measured with criterion (see `docs/benchmarks.md`):
//!
//! - `decide/*`: the core decision (`costream_core::decide`) right after a co-host published, in
//!   a typical room (host + 3 co-hosts) and a full one (host + 15): target, stage, layout and the
//!   command (an Update of the running task);
//! - `layout/*`: the layout engine for 2, 4 and 16 panes (grid; split and pip at 16);
//! - `sign/*`: RPC signature V1 of the StartLiveMPUTask request the typical room's Start sends,
//!   the type-A `auth_key` of the ingest URL and of the three playback URLs, and the check of a
//!   CDN callback's `ALI-LIVE-SIGNATURE`;
//! - `callback/*`: one whole ARTC callback through `Services::artc_body` (parse, dedupe, load,
//!   apply, decide, commit, the MPU adapter and the in-process simulated Live API, record) on the
//!   in-memory store, as `costream serve` wires them: a co-host Publish / Unpublish (each an
//!   Update) and a viewer joining (no change).
//!
//! `cargo bench -p costream-bench` (all), `cargo bench -p costream-bench -- sign/` (one group).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use costream_alibaba::callback_auth::{expected_signature, CallbackVerifier};
use costream_alibaba::request::{sign_request, CommonParams, LiveRequest, DEFAULT_FORMAT};
use costream_alibaba::urls::{sign_url, StreamLocation};
use costream_app::config::{with_local_defaults, Config};
use costream_app::handlers::Services;
use costream_app::inbound::Side;
use costream_app::mpu::AlibabaMpu;
use costream_app::ports::{ManualClock, RoomKey};
use costream_app::shell::Shell;
use costream_app::store::memory::InMemoryStore;
use costream_bench::{artc_body, Event, Tag, ROLE_STREAMER, ROLE_VIEWER};
use costream_core::{
    decide, layout, target, Canvas, ChannelId, Command, DecisionConfig, Facts, LayoutSpec,
    LayoutStyle, Record, RenderMode, RoomEvent, SessionId, Timestamp, UserAction, UserEvent,
    UserId,
};
use costream_sim::SimulatedLive;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use secrecy::SecretString;
use time::macros::datetime;

const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn user_event(user: &str, action: UserAction, at: u64, role: Option<u8>) -> RoomEvent {
    RoomEvent::User(UserEvent {
        user: UserId::parse(user).expect("user id"),
        session: SessionId::parse(format!("{user}-s1")).expect("session id"),
        at: Timestamp::from_secs(at),
        action,
        role: role.map(|r| costream_core::Role::from_code(i64::from(r)).expect("role")),
    })
}

/// A room with its host and `cohosts` publishing, a few viewers having come and gone, and the
/// record of the task that ran before the last co-host published: deciding it gives an Update.
fn room(cohosts: u64) -> (Facts, Record) {
    let mut facts = Facts::new(ChannelId::parse("room-1001").expect("channel id"));
    let streamer = Some(ROLE_STREAMER);
    facts.apply(&user_event("host", UserAction::Join, T0, streamer));
    facts.apply(&user_event("host", UserAction::Publish, T0 + 1, streamer));
    for v in 0..4 {
        let at = T0 + 2 + v;
        facts.apply(&user_event(
            &format!("viewer{v}"),
            UserAction::Join,
            at,
            Some(ROLE_VIEWER),
        ));
        facts.apply(&user_event(
            &format!("viewer{v}"),
            UserAction::Leave,
            at + 30,
            Some(ROLE_VIEWER),
        ));
    }
    let mut before = Record::default();
    for c in 0..cohosts {
        if c + 1 == cohosts {
            before = Record::new(
                target(&facts, &Record::default(), &DecisionConfig::default()),
                false,
            );
        }
        let name = format!("cohost{c:02}");
        let at = T0 + 10 + c;
        facts.apply(&user_event(&name, UserAction::Join, at, streamer));
        facts.apply(&user_event(&name, UserAction::Publish, at, streamer));
    }
    (facts, before)
}

fn bench_decide(c: &mut Criterion) {
    let cfg = DecisionConfig::default();
    let mut group = c.benchmark_group("decide");
    for (name, cohosts) in [("typical_host_3_cohosts", 3), ("full_16_panes", 15)] {
        let (facts, record) = room(cohosts);
        let decision = decide(&facts, &record, &cfg);
        assert!(
            matches!(decision.command, Some(Command::Update { .. })),
            "{name}: {decision:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| decide(black_box(&facts), black_box(&record), black_box(&cfg)))
        });
    }
    group.finish();
}

fn bench_layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("layout");
    let stage: Vec<UserId> = (0..16)
        .map(|i| UserId::parse(format!("user{i:02}")).expect("user id"))
        .collect();
    let cases = [
        ("grid_2", LayoutStyle::Grid, 2),
        ("grid_4", LayoutStyle::Grid, 4),
        ("grid_16", LayoutStyle::Grid, 16),
        ("split_16", LayoutStyle::Split, 16),
        ("pip_16", LayoutStyle::Pip, 16),
    ];
    for (name, style, n) in cases {
        let spec = LayoutSpec {
            canvas: Canvas::PORTRAIT_720P,
            style,
            render_mode: RenderMode::Crop,
            placeholder: None,
        };
        let stage = &stage[..n];
        assert_eq!(layout(&spec, stage).panes.len(), n);
        group.bench_function(name, |b| {
            b.iter(|| layout(black_box(&spec), black_box(stage)))
        });
    }
    group.finish();
}

fn local_config() -> Config {
    Config::from_lookup(with_local_defaults(|_: &str| None)).expect("local default config")
}

fn bench_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");

    // The StartLiveMPUTask of the typical room (host + 3 co-hosts: a 4-pane mix), built by the
    // production adapter with a signed StreamURL; signed and form-encoded per attempt.
    let config = local_config();
    let clock = Arc::new(ManualClock::at_ms(T0 * 1000));
    let mpu = AlibabaMpu::new(
        Arc::new(SimulatedLive::new(clock.clone())),
        clock,
        config.mpu_settings(),
    );
    let (facts, _) = room(3);
    let Some(Command::Start {
        task,
        shape,
        outputs,
    }) = decide(&facts, &Record::default(), &config.decision).command
    else {
        panic!("a room with nothing running starts a task");
    };
    let key = RoomKey {
        app: config.app_id.clone(),
        channel: facts.channel().clone(),
    };
    let start: LiveRequest = mpu
        .start_request(&key, task.as_str(), &shape, &outputs)
        .expect("start request");
    let common = CommonParams {
        access_key_id: "LTAI5tBenchAccessKeyId",
        timestamp: datetime!(2026-01-01 00:00:00 UTC),
        signature_nonce: "5b0a6f3e0c1d4e2f8a9b1c2d3e4f5a6b",
        security_token: None,
        format: DEFAULT_FORMAT,
    };
    group.bench_function("rpc_v1_start_mpu_task_4_panes", |b| {
        b.iter(|| {
            let signed = sign_request(
                black_box(&start),
                black_box(&common),
                black_box("bench-access-key-secret"),
            )
            .expect("signable");
            black_box(signed.encoded_params())
        })
    });

    let location = StreamLocation {
        domain: "push.example.com",
        app_name: "live",
        stream_name: "room-1001_main",
    };
    let ingest = location.ingest_url();
    group.bench_function("auth_key_ingest_url", |b| {
        b.iter(|| {
            sign_url(
                black_box(&ingest),
                black_box("bench-push-key"),
                black_box(T0 + 86_400),
                "0",
                "0",
            )
            .expect("signed")
        })
    });
    let play = StreamLocation {
        domain: "play.example.com",
        ..location
    };
    group.bench_function("auth_key_3_playback_urls", |b| {
        b.iter(|| {
            black_box(&play)
                .signed_playback_urls(black_box("bench-play-key"), black_box(T0 + 3600))
                .expect("signed")
        })
    });

    let verifier = CallbackVerifier::new(
        "callback.example.com",
        SecretString::from("bench-notify-key".to_owned()),
    );
    let timestamp = T0.to_string();
    let signature = expected_signature("callback.example.com", &timestamp, "bench-notify-key");
    let now = i64::try_from(T0).expect("time") + 5;
    verifier
        .verify(&timestamp, &signature, now)
        .expect("a valid signature");
    group.bench_function("cdn_callback_signature_check", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&timestamp), black_box(&signature), black_box(now))
                .expect("valid")
        })
    });
    group.finish();
}

type LocalServices =
    Services<InMemoryStore, AlibabaMpu<Arc<SimulatedLive>, Arc<ManualClock>>, Arc<ManualClock>>;

/// `costream serve --store memory --mpu sim` without the HTTP server: the local default
/// config, the in-memory store, the production MPU adapter over the in-process simulator. The
/// clock is set by hand so that event times stay close to "now" however long the bench runs.
fn local_services(clock: Arc<ManualClock>) -> LocalServices {
    let config = local_config();
    let shell = Shell {
        store: InMemoryStore::new(),
        mpu: AlibabaMpu::new(
            Arc::new(SimulatedLive::new(clock.clone())),
            clock.clone(),
            config.mpu_settings(),
        ),
        clock,
        decision: config.decision.clone(),
        config: config.shell_config(),
    };
    Services {
        shell,
        config: Arc::new(config),
        notifier: None,
        end_grace: costream_app::handlers::EndGraceWait::RepairLoop,
    }
}

fn bench_callback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Arc::new(ManualClock::at_ms(T0 * 1000));
    let services = local_services(clock.clone());
    let app = services.config.app_id.to_string();
    let channel = "room-1001";
    let mut msg = 0u64;
    let mut body = |events: &[Event<'_>]| {
        msg += 1;
        artc_body(&app, channel, &format!("msg-{msg}"), events)
    };
    let streamer = |user, tag, at| Event {
        user,
        session: "s1",
        tag,
        role: ROLE_STREAMER,
        at,
    };
    let handle = |body: Vec<u8>, at: u64| {
        clock.set_ms(at * 1000 + 500);
        let outcome = runtime
            .block_on(services.artc_body(&body, Side::Both, "bench"))
            .expect("handled");
        black_box(outcome)
    };

    // The room is live with its host and one co-host who keeps publishing and unpublishing.
    let first = body(&[
        streamer("host", Tag::Join, T0),
        streamer("host", Tag::Publish, T0),
    ]);
    assert_eq!(handle(first, T0).result, "converged");
    let second = body(&[streamer("guest", Tag::Join, T0 + 1)]);
    handle(second, T0 + 1);

    // One second per callback, so each is the newest event of its room (a Publish and an
    // Unpublish in one second would be the same-second rule's business, not a change).
    let mut at = T0 + 2;
    for tag in [Tag::Publish, Tag::Unpublish] {
        at += 1;
        let b = body(&[streamer("guest", tag, at)]);
        assert_eq!(handle(b, at).result, "converged", "{tag:?} makes an Update");
    }
    let mut publish = false;
    let mut group = c.benchmark_group("callback");
    group.bench_function("cohost_publish_or_unpublish_update", |b| {
        b.iter_batched(
            || {
                at += 1;
                publish = !publish;
                let tag = if publish {
                    Tag::Publish
                } else {
                    Tag::Unpublish
                };
                (body(&[streamer("guest", tag, at)]), at)
            },
            |(body, at)| handle(body, at),
            BatchSize::SmallInput,
        )
    });
    let mut viewer = 0u64;
    group.bench_function("viewer_join_no_change", |b| {
        b.iter_batched(
            || {
                at += 1;
                viewer += 1;
                let name = format!("viewer{}", viewer % 1000);
                (
                    body(&[Event {
                        user: &name,
                        session: "s1",
                        tag: Tag::Join,
                        role: ROLE_VIEWER,
                        at,
                    }]),
                    at,
                )
            },
            |(body, at)| handle(body, at),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_decide, bench_layout, bench_sign, bench_callback
);
criterion_main!(benches);
