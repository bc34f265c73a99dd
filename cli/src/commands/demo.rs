//! `costream demo`: the seed guide's co-streaming flow played through the local server's handlers
//! (in-memory store, simulated Live API), printing each callback, the MPU calls it caused, the
//! MixMode and a picture of the layout. Starts nothing external.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use costream_app::config::{with_local_defaults, Config};
use costream_app::handlers::{CdnRequest, Services};
use costream_app::inbound::Side;
use costream_app::mpu::{stream_name, AlibabaMpu};
use costream_app::ports::{Clock, RoomKey, StateStore, SystemClock};
use costream_app::store::memory::InMemoryStore;
use costream_core::{ChannelId, LayoutStyle, Shape, Target};
use costream_runtime::init::{mpu_settings, services};
use costream_sim::SimulatedLive;
use serde_json::json;

use crate::local::ascii::picture;

/// Play the seed co-streaming flow locally and print every decision.
///
/// A streamer publishes (Start, MixMode 0), the CDN reports the stream live (playback URLs), two
/// co-streamers join (Update, MixMode 1 with a layout), they leave (back to MixMode 0), the
/// streamer ends (Stop). Uses the same handlers as `costream serve` and the Lambda functions.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Layout style: grid, split or pip.
    #[arg(long, default_value = "grid")]
    pub layout: LayoutStyle,
    /// Canvas as WIDTHxHEIGHT (default: the seed guide's 720x1280 portrait).
    #[arg(long, default_value = "720x1280")]
    pub canvas: String,
}

type DemoServices =
    Services<InMemoryStore, AlibabaMpu<Arc<SimulatedLive>, SystemClock>, SystemClock>;

const CHANNEL: &str = "room-1001";

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

fn user_event(msg: &str, user: &str, tag: &str, at: u64) -> serde_json::Value {
    json!({
        "MsgId": msg, "MsgTimestamp": at, "SubscribeID": "demo", "AppId": "local-app",
        "ChannelID": CHANNEL,
        "Contents": [{ "Event": "UserEvent", "UserEvent": {
            "UserId": user, "EventTag": tag, "SessionId": format!("{user}-session"),
            "Timestamp": at, "Role": 1 } }]
    })
}

async fn run_async(args: &DemoArgs) -> anyhow::Result<()> {
    let style = format!("{:?}", args.layout).to_ascii_lowercase();
    let vars = [
        ("COSTREAM_CANVAS", args.canvas.clone()),
        ("COSTREAM_LAYOUT_STYLE", style),
    ];
    let config = Config::from_lookup(with_local_defaults(move |k: &str| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }))?;
    let sim = Arc::new(SimulatedLive::default());
    let settings = mpu_settings(&config);
    let svc: DemoServices = services(
        config,
        InMemoryStore::new(),
        AlibabaMpu::new(sim.clone(), SystemClock, settings),
        SystemClock,
    )?;
    let t0 = SystemClock.now_ms() / 1000 - 120;
    println!("costream demo: channel {CHANNEL}, in-memory store, simulated Live API\n");

    let steps: Vec<(&str, serde_json::Value)> = vec![
        (
            "streamer host_u1 publishes",
            user_event("m1", "host_u1", "Publish", t0),
        ),
        (
            "co-streamer guest_u2 publishes",
            user_event("m2", "guest_u2", "Publish", t0 + 20),
        ),
        (
            "second co-streamer guest_u3 publishes",
            user_event("m3", "guest_u3", "Publish", t0 + 30),
        ),
        (
            "guest_u2 leaves",
            user_event("m4", "guest_u2", "Leave", t0 + 50),
        ),
        (
            "guest_u3 stops publishing",
            user_event("m5", "guest_u3", "Unpublish", t0 + 60),
        ),
        (
            "streamer host_u1 leaves",
            user_event("m6", "host_u1", "Leave", t0 + 80),
        ),
    ];
    let mut seen_calls = 0;
    for (i, (what, body)) in steps.iter().enumerate() {
        println!("── step {}: {what}", i + 1);
        println!(
            "   callback: POST /artc/<secret>  {}",
            body["Contents"][0]["UserEvent"]
        );
        let outcome = svc
            .artc_body(body.to_string().as_bytes(), Side::Both, "demo")
            .await
            .with_context(|| format!("step {} failed", i + 1))?;
        seen_calls = print_calls(&sim, seen_calls);
        print_room(&svc, outcome.result).await?;
        if i == 0 {
            cdn_publish(&svc, t0 + 3).await?;
        }
        println!();
    }
    println!("simulated tasks left running: {}", sim.tasks().len());
    Ok(())
}

fn print_calls(sim: &SimulatedLive, seen: usize) -> usize {
    let calls = sim.calls();
    for c in calls.iter().skip(seen) {
        println!(
            "   MPU call: {} task={} MixMode={} {} → HTTP {} {}",
            c.action,
            c.task_id.as_deref().unwrap_or("-"),
            c.mix_mode.as_deref().unwrap_or("-"),
            c.summary,
            c.http_status,
            c.code
        );
    }
    if calls.len() == seen {
        println!("   MPU call: none");
    }
    calls.len()
}

async fn print_room(svc: &DemoServices, result: &str) -> anyhow::Result<()> {
    let key = RoomKey {
        app: svc.config.app_id.clone(),
        channel: ChannelId::parse(CHANNEL)?,
    };
    let room = svc
        .shell
        .store
        .load(&key)
        .await?
        .context("room not stored")?;
    match room.record.running() {
        Target::Off => println!("   MixMode: none (no task) [{result}]"),
        Target::On {
            task,
            shape: Shape::Single { user },
            ..
        } => {
            println!("   MixMode: 0, task {task} forwards {user} [{result}]");
        }
        Target::On {
            task,
            shape: Shape::Mixed { layout },
            ..
        } => {
            println!(
                "   MixMode: 1, task {task}, {} panes [{result}]",
                layout.panes.len()
            );
            for line in picture(layout, 28).lines() {
                println!("      {line}");
            }
        }
        Target::On {
            task,
            shape: Shape::Voice { user },
            ..
        } => {
            println!("   MixMode: 0, task {task} forwards {user}'s audio [{result}]");
        }
        Target::On {
            task,
            shape: Shape::VoiceMix { users },
            ..
        } => {
            println!(
                "   MixMode: 1, task {task}, audio of {} speakers [{result}]",
                users.len()
            );
        }
    }
    Ok(())
}

async fn cdn_publish(svc: &DemoServices, at: u64) -> anyhow::Result<()> {
    let channel = ChannelId::parse(CHANNEL)?;
    let stream = stream_name(&channel);
    let time = at.to_string();
    let domain = svc.config.ingest.push_domain.clone();
    let request = CdnRequest {
        query: vec![
            ("action", "publish"),
            ("app", domain.as_str()),
            ("appname", "live"),
            ("id", stream.as_str()),
            ("time", time.as_str()),
        ],
        ..CdnRequest::default()
    };
    svc.cdn_ingest(&request, "demo").await?;
    let status = svc.room_status(CHANNEL).await?;
    println!("   CDN callback: GET /cdn/ingest?action=publish&id={stream} → live on the CDN");
    if let Some(urls) = status.playback {
        println!(
            "   viewers play: {}\n                 {}\n                 {}",
            urls.flv, urls.rtmp, urls.hls
        );
    }
    Ok(())
}
