//! Request building (byte-exact against the SDK captures) and the adapter's idempotency rules
//! against the simulated Live API.

use std::collections::BTreeMap;

use super::*;
use costream_alibaba::request::{sign_request, CommonParams};
use costream_alibaba::ManualClock;
use costream_alibaba::Reply;
use costream_core::{
    layout, Canvas, EncodeSettings, ImageUrl, LayoutSpec, LayoutStyle, TaskId, UserId,
};

/// A LiveApi that must not be called (these tests only build requests).
struct NoApi;
impl LiveApi for NoApi {
    async fn call(&self, _request: &LiveRequest) -> Result<Reply, MpuError> {
        unreachable!("request-building tests make no calls")
    }
}

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(costream_alibaba::vector_path("mpu_requests.json"))
        .expect("read testdata/vectors/mpu_requests.json");
    serde_json::from_str(&text).expect("vector json")
}

/// The inputs of the captured flow, expressed as costream configuration.
fn adapter(
    max_idle_time: Option<u32>,
    region: Option<MpuRegion>,
) -> AlibabaMpu<NoApi, ManualClock> {
    let decision = DecisionConfig {
        canvas: Canvas::LANDSCAPE_720P,
        background_image: Some(
            ImageUrl::parse("https://static.example.com/bg-1280x720-0x1E1E1E.png").expect("url"),
        ),
        pane_placeholder: Some(
            ImageUrl::parse("https://static.example.com/pane-bg.png").expect("url"),
        ),
        max_idle_time,
        encode: EncodeSettings {
            fps: 25,
            bitrate_kbps: 1500,
            ..EncodeSettings::default()
        },
        ..DecisionConfig::default()
    };
    AlibabaMpu::new(
        NoApi,
        ManualClock::at_ms(1_704_164_645_000),
        MpuSettings {
            app_id: AppId::parse("9qb1abcd").expect("app"),
            ingest: IngestSettings {
                push_domain: "push.example.com".into(),
                app_name: "live".into(),
                push_auth_key: Some(SecretString::from("ingestkey")),
                url_validity: Duration::ZERO,
            },
            decision,
            region,
            stream_url_wait: Duration::ZERO,
        },
    )
}

fn room() -> RoomKey {
    RoomKey {
        app: AppId::parse("9qb1abcd").expect("app"),
        channel: ChannelId::parse("room-1001").expect("channel"),
    }
}

fn two_panes(a: &AlibabaMpu<NoApi, ManualClock>) -> Shape {
    let cfg = &a.settings().decision;
    let spec = LayoutSpec {
        canvas: cfg.canvas,
        style: LayoutStyle::Grid,
        render_mode: cfg.render_mode,
        placeholder: cfg.pane_placeholder.as_ref(),
    };
    let users = [
        UserId::parse("host_u1").expect("user"),
        UserId::parse("guest_u2").expect("user"),
    ];
    let mut layout = layout(&spec, &users);
    layout.background = cfg.background_image.clone();
    // The official SDK capture was made with a placeholder on the co-streamer's pane only (the
    // layout engine now gives the host's pane one too); the capture checks the wire format.
    layout.panes[0].placeholder = None;
    Shape::Mixed { layout }
}

fn single() -> Shape {
    Shape::Single {
        user: UserId::parse("host_u1").expect("user"),
    }
}

/// Signs `request` with the capture's fixed inputs and compares the whole parameter map.
fn assert_matches_capture(request: &LiveRequest, capture: &serde_json::Value) {
    let fixed = &vectors()["fixed"];
    let timestamp = time::OffsetDateTime::parse(
        fixed["Timestamp"].as_str().expect("ts"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("timestamp");
    let common = CommonParams {
        access_key_id: fixed["AccessKeyId"].as_str().expect("id"),
        timestamp,
        signature_nonce: fixed["SignatureNonce"].as_str().expect("nonce"),
        security_token: None,
        format: "json",
    };
    let signed = sign_request(
        request,
        &common,
        fixed["AccessKeySecret"].as_str().expect("secret"),
    )
    .expect("sign");
    let want: BTreeMap<String, String> =
        serde_json::from_value(capture["query_params"].clone()).expect("params");
    assert_eq!(signed.params, want);
}

#[test]
fn the_seed_flow_from_core_commands_matches_the_official_sdk_byte_for_byte() {
    let v = vectors();
    let flow = &v["flow"];
    let a = adapter(None, None);
    let task = TaskId::parse("room-1001_main").expect("task");
    let task = task.as_str();
    let start = a
        .start_request(&room(), task, &single(), &Outputs::NONE)
        .expect("start");
    assert_matches_capture(&start, &flow["a_start_mixmode0_single_stream"]);
    let update = a
        .update_request(&room(), task, &two_panes(&a))
        .expect("update");
    assert_matches_capture(&update, &flow["b_update_mixmode1_two_panes"]);
    let back = a.update_request(&room(), task, &single()).expect("update");
    assert_matches_capture(&back, &flow["c_update_back_to_mixmode0"]);
    assert_matches_capture(&a.stop_request(task), &flow["d_stop"]);
}

#[test]
fn start_in_mixing_mode_with_idle_time_and_region_matches() {
    let a = adapter(
        Some(120),
        Some("CN-Shanghai".parse::<MpuRegion>().expect("region")),
    );
    let start = a
        .start_request(&room(), "room-1001_main", &two_panes(&a), &Outputs::NONE)
        .expect("start");
    assert_matches_capture(
        &start,
        &vectors()["other_operations"]["start_mixmode1_with_maxidletime_region"],
    );
}

fn rejected(code: &str, message: &str) -> MpuError {
    MpuError::Rejected {
        action: "StartLiveMPUTask",
        http_status: 400,
        code: code.into(),
        message: message.into(),
        request_id: Some("R".into()),
        recommend: None,
    }
}

#[test]
fn only_a_parameter_rejection_naming_the_stream_url_is_a_busy_url() {
    let held = "The StreamURL is in use or was released less than 10 seconds ago.";
    assert!(stream_url_busy(&rejected("InvalidParam", held)));
    assert!(stream_url_busy(&rejected(
        "InvalidParam",
        "stream url occupied"
    )));
    assert!(!stream_url_busy(&rejected(
        "InvalidParam",
        "Parameter invalid."
    )));
    assert!(!stream_url_busy(&rejected("Forbidden.RAM", held)));
    assert!(!stream_url_busy(&rejected("InternalError", held)));
}

/// A Live API whose every Start is refused because the StreamURL is held, after `latency`.
struct BusyApi {
    latency: Duration,
    calls: std::sync::atomic::AtomicU32,
}
impl LiveApi for BusyApi {
    async fn call(&self, _request: &LiveRequest) -> Result<Reply, MpuError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        Err(rejected(
            "InvalidParam",
            "The StreamURL is in use or was released less than 10 seconds ago.",
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_waits_for_a_held_stream_url_at_most_the_wait_plus_one_call() {
    let mut settings = adapter(None, None).settings().clone();
    settings.stream_url_wait = Duration::from_secs(12);
    let latency = Duration::from_secs(3);
    let mpu = AlibabaMpu::new(
        BusyApi {
            latency,
            calls: 0.into(),
        },
        ManualClock::at_ms(1_704_164_645_000),
        settings,
    );
    let begun = tokio::time::Instant::now();
    let start = Command::Start {
        task: TaskId::parse("room-1001_1").expect("task"),
        shape: single(),
        outputs: Outputs::NONE,
    };
    let err = mpu
        .execute(&room(), &start, Version::NONE)
        .await
        .expect_err("the URL stays held");
    assert!(
        err.is_definite() && err.reason.to_ascii_lowercase().contains("streamurl"),
        "{err}"
    );
    // Start at 0 s (busy after 3 s), one search for unrecorded tasks of the room (3 s), then
    // Starts at 7 and 11 s (each answering 3 s later, then a 1 s pause): the last answer comes
    // within the wait plus one call.
    assert!(
        begun.elapsed() <= Duration::from_secs(12) + latency,
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(mpu.api().calls.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[test]
fn stream_names_map_back_to_their_room() {
    let ch = ChannelId::parse("room_main-7").expect("channel");
    assert_eq!(stream_name(&ch), "room_main-7_main");
    assert_eq!(channel_of_stream(&stream_name(&ch)), Some(ch));
    assert_eq!(channel_of_stream("other-stream"), None);
    assert_eq!(channel_of_stream("bad id_main"), None);
}

/// The adapter's idempotency and retry rules against the simulated Live API.
mod against_the_simulator {
    use std::sync::Arc;

    use costream_sim::SimulatedLive;
    use secrecy::SecretString;

    use super::*;

    const APP: &str = "9qb1abcd";
    const CHANNEL: &str = "room-1001";
    const TASK: &str = "room-1001_main";
    const T0: u64 = 1_704_164_645_000;

    /// A clock that follows tokio's (paused) time, so the adapter's real `sleep`s move the
    /// simulator's clock.
    struct TokioClock {
        base_ms: u64,
        origin: tokio::time::Instant,
    }

    impl Clock for TokioClock {
        fn now_ms(&self) -> u64 {
            self.base_ms + u64::try_from(self.origin.elapsed().as_millis()).expect("fits u64")
        }
    }

    fn adapter(
        sim: Arc<SimulatedLive>,
        clock: impl Clock,
    ) -> AlibabaMpu<Arc<SimulatedLive>, impl Clock> {
        AlibabaMpu::new(
            sim,
            clock,
            MpuSettings {
                app_id: AppId::parse(APP).expect("app"),
                ingest: IngestSettings {
                    push_domain: "push.example.com".into(),
                    app_name: "live".into(),
                    push_auth_key: Some(SecretString::from("ingestkey")),
                    url_validity: Duration::from_secs(3600),
                },
                decision: DecisionConfig::default(),
                region: None,
                stream_url_wait: Duration::from_secs(15),
            },
        )
    }

    fn room() -> RoomKey {
        RoomKey {
            app: AppId::parse(APP).expect("app"),
            channel: ChannelId::parse(CHANNEL).expect("channel"),
        }
    }

    fn task_id(s: &str) -> TaskId {
        TaskId::parse(s).expect("task id")
    }

    fn host() -> Shape {
        Shape::Single {
            user: UserId::parse("host_u1").expect("user"),
        }
    }

    /// A re-asserted Start (after an Update in doubt) that finds the task running sends the
    /// complete outputs: a restream target the target no longer has is removed, not left on.
    #[tokio::test(start_paused = true)]
    async fn a_start_that_finds_its_task_sends_the_complete_outputs() {
        let origin = tokio::time::Instant::now();
        let clock = || TokioClock {
            base_ms: T0,
            origin,
        };
        let sim = Arc::new(SimulatedLive::new(clock()));
        let mpu = adapter(sim.clone(), clock());
        let restream = Outputs::new(vec![costream_core::OutputUrl::parse(
            "rtmp://r.example/live/key",
        )
        .expect("url")])
        .expect("outputs");
        let start = |outputs: Outputs| Command::Start {
            task: task_id("room-1001_1"),
            shape: host(),
            outputs,
        };
        mpu.execute(&room(), &start(restream), Version::NONE)
            .await
            .expect("start");
        assert!(sim.tasks()[0].multi_stream_url.is_some());
        mpu.execute(&room(), &start(Outputs::NONE), Version::NONE)
            .await
            .expect("re-asserted");
        let task = &sim.tasks()[0];
        assert!(task.multi_stream_url.is_none(), "{task:?}");
        assert!(task.stream_url.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_adapter_waits_out_the_stream_url_hold_after_a_stop() {
        let origin = tokio::time::Instant::now();
        let sim = Arc::new(SimulatedLive::new(TokioClock {
            base_ms: T0,
            origin,
        }));
        let mpu = adapter(
            sim.clone(),
            TokioClock {
                base_ms: T0,
                origin,
            },
        );
        let room = room();
        let first = Command::Start {
            task: task_id("room-1001_1"),
            shape: host(),
            outputs: Outputs::NONE,
        };
        let done = mpu
            .execute(&room, &first, Version::NONE)
            .await
            .expect("start");
        assert!(matches!(done, MpuDone::Done { .. }));
        let stop = Command::Stop {
            task: task_id("room-1001_1"),
        };
        mpu.execute(&room, &stop, Version::NONE)
            .await
            .expect("stop");

        // A new broadcast of the same room: new TaskId, same stream URL.
        let second = Command::Start {
            task: task_id("room-1001_2"),
            shape: host(),
            outputs: Outputs::NONE,
        };
        let done = mpu
            .execute(&room, &second, Version::NONE)
            .await
            .expect("start after the hold");
        assert!(matches!(done, MpuDone::Done { .. }));
        assert_eq!(origin.elapsed(), Duration::from_secs(10));
        let busy = sim
            .calls()
            .iter()
            .filter(|c| c.task_id.as_deref() == Some("room-1001_2") && c.code == "InvalidParam")
            .count();
        assert_eq!(busy, 10, "retried every second until the hold ended");
        assert_eq!(
            sim.tasks()
                .iter()
                .map(|t| t.task_id.as_str())
                .collect::<Vec<_>>(),
            ["room-1001_2"]
        );
    }

    #[tokio::test]
    async fn the_adapter_turns_already_exists_into_an_update_and_reports_a_vanished_task() {
        let sim = Arc::new(SimulatedLive::new(ManualClock::at_ms(T0)));
        let mpu = adapter(sim.clone(), ManualClock::at_ms(T0));
        let room = room();
        let task = task_id(TASK);
        mpu.execute(
            &room,
            &Command::Start {
                task: task.clone(),
                shape: host(),
                outputs: Outputs::NONE,
            },
            Version::NONE,
        )
        .await
        .expect("start");
        let guest = Shape::Single {
            user: UserId::parse("guest_u2").expect("user"),
        };
        // A retried Start with another target: already exists → the adapter updates it.
        let done = mpu
            .execute(
                &room,
                &Command::Start {
                    task: task.clone(),
                    shape: guest.clone(),
                    outputs: Outputs::NONE,
                },
                Version::NONE,
            )
            .await
            .expect("start again");
        assert!(matches!(done, MpuDone::Done { .. }));
        let running = sim.task(APP, TASK).expect("task");
        assert_eq!(running.users, ["guest_u2"]);
        assert_eq!(running.updates, 1);

        sim.end_task(APP, TASK).expect("ended by the service");
        let done = mpu
            .execute(
                &room,
                &Command::Update {
                    task: task.clone(),
                    shape: host(),
                    outputs: Outputs::NONE,
                    set_outputs: false,
                },
                Version::NONE,
            )
            .await
            .expect("update");
        assert_eq!(done, MpuDone::TaskMissing);
        let done = mpu
            .execute(&room, &Command::Stop { task }, Version::NONE)
            .await
            .expect("stop of a gone task");
        assert!(matches!(done, MpuDone::Done { .. }));
    }
}

/// A Live API whose Update answers "task not found" and whose ListRtcMPUTaskDetail answers from
/// a script: `by_task` for a TaskId query (`None`: the query fails), `page` for a page.
struct Scripted {
    by_task: Option<serde_json::Value>,
    page: serde_json::Value,
}
impl LiveApi for Scripted {
    async fn call(&self, request: &LiveRequest) -> Result<Reply, MpuError> {
        let reply = |outcome, body| Reply {
            outcome,
            request_id: None,
            body,
        };
        match request {
            LiveRequest::Update(_) => Ok(reply(
                Outcome::TaskNotFound {
                    code: "InvalidParam".into(),
                    message: "The task does not exist.".into(),
                },
                serde_json::Value::Null,
            )),
            LiveRequest::ListTasks(ListRtcMpuTaskDetail {
                selector: TaskSelector::Task(_),
                ..
            }) => match &self.by_task {
                Some(body) => Ok(reply(Outcome::Applied, body.clone())),
                None => Err(rejected("InternalError", "list failed")),
            },
            LiveRequest::ListTasks(_) => Ok(reply(Outcome::Applied, self.page.clone())),
            _ => unreachable!("only Update and ListRtcMPUTaskDetail here"),
        }
    }
}

fn scripted(
    by_task: Option<serde_json::Value>,
    page: serde_json::Value,
) -> AlibabaMpu<Scripted, ManualClock> {
    AlibabaMpu::new(
        Scripted { by_task, page },
        ManualClock::at_ms(1_704_164_645_000),
        adapter(None, None).settings().clone(),
    )
}

#[tokio::test]
async fn task_not_found_is_confirmed_by_task_id_before_it_is_believed() {
    let update = Command::Update {
        task: TaskId::parse("room-1001_1").expect("task"),
        shape: single(),
        outputs: Outputs::NONE,
        set_outputs: false,
    };
    let empty = serde_json::json!({"MPUTasks": []});
    // Confirmed: the list by TaskId has no such task.
    let mpu = scripted(Some(empty.clone()), empty.clone());
    assert_eq!(
        mpu.execute(&room(), &update, Version::NONE)
            .await
            .expect("confirmed"),
        MpuDone::TaskMissing
    );
    // The list still shows it: unclear, so a (retryable) refusal that marks the room.
    let listed =
        serde_json::json!({"MPUTasks": [{"TaskId": "room-1001_1", "ChannelId": "room-1001"}]});
    let err = scripted(Some(listed), empty.clone())
        .execute(&room(), &update, Version::NONE)
        .await
        .expect_err("unclear");
    assert!(
        err.is_definite() && err.is_retryable() && err.reason.contains("lists it"),
        "{err}"
    );
    // The confirmation fails: unclear as well.
    let err = scripted(None, empty)
        .execute(&room(), &update, Version::NONE)
        .await
        .expect_err("unclear");
    assert!(
        err.is_definite() && err.is_retryable() && err.reason.contains("confirmation failed"),
        "{err}"
    );
}

#[tokio::test]
async fn the_task_list_skips_and_counts_foreign_and_malformed_entries() {
    let page = serde_json::json!({"MPUTasks": [
        {"TaskId": "room-1001_1700000000", "ChannelId": "room-1001", "MixMode": "1",
         "TranscodeParams": {"UserInfos": [{"UserId": "host_u1"}, {"UserId": "guest"}]}},
        {"TaskId": "room-9_1700000000", "ChannelId": "room-9", "MixMode": "0",
         "SingleSubParams": {"UserId": "host_9"},
         "MultiStreamURL": [{"IsAliCdn": true, "URL": "rtmp://push.example.com/live/room-9_main"},
                            {"IsAliCdn": false, "URL": "rtmp://r.example/live/k"}]},
        {"TaskId": "recording-main", "ChannelId": "room-1001", "MixMode": "0"},
        {"TaskId": "room-1001_1700000000", "ChannelId": "room-2"},
        {"TaskId": 5, "ChannelId": "room-1001"},
        {"ChannelId": "room-1001"},
        {"TaskId": "bad id!_1", "ChannelId": "bad id!"},
        "not an object",
    ]});
    let listing = scripted(None, page).list_tasks().await.expect("listed");
    assert!(listing.complete, "a short page ends the list");
    assert_eq!((listing.foreign, listing.malformed), (2, 4), "{listing:?}");
    let ours: Vec<(&str, Option<MixMode>, Vec<&str>)> = listing
        .tasks
        .iter()
        .map(|t| {
            (
                t.task.as_str(),
                t.mix_mode,
                t.users.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            (
                "room-1001_1700000000",
                Some(MixMode::Mixed),
                vec!["host_u1", "guest"]
            ),
            ("room-9_1700000000", Some(MixMode::Single), vec!["host_9"]),
        ]
    );
    let host_9 = Shape::Single {
        user: UserId::parse("host_9").expect("user"),
    };
    let restream = Outputs::new(vec![costream_core::OutputUrl::parse(
        "rtmp://r.example/live/k",
    )
    .expect("url")])
    .expect("outputs");
    assert!(listing.tasks[1].matches(&host_9, &restream));
    assert!(!listing.tasks[1].matches(&single(), &restream));
    // A task that lost (or never got) its restreaming target differs from the record.
    assert!(!listing.tasks[1].matches(&host_9, &Outputs::NONE));
    // The listing showed no output at all for the first: outputs are not judged.
    assert_eq!(listing.tasks[0].extra_outputs, None);
    // Our own stream is never taken for a restream target, however the flag is spelled, and
    // a list given as a JSON string is read the same.
    let own = "rtmp://push.example.com/live/room-9_main?auth_key=1-0-0-x";
    for multi in [
        serde_json::json!([{"IsAliCdn": "true", "URL": own}, {"URL": "rtmp://r.example/live/k"}]),
        serde_json::json!([{"URL": own}, {"IsAliCdn": false, "URL": "rtmp://r.example/live/k"}]),
        serde_json::Value::String(
            serde_json::json!([{"IsAliCdn": true, "URL": own}, {"URL": "rtmp://r.example/live/k"}])
                .to_string(),
        ),
    ] {
        let page = serde_json::json!({"MPUTasks": [
            {"TaskId": "room-9_1700000000", "ChannelId": "room-9", "MixMode": "0",
             "SingleSubParams": {"UserId": "host_9"}, "MultiStreamURL": multi}]});
        let listing = scripted(None, page).list_tasks().await.expect("listed");
        assert_eq!(
            listing.tasks[0].extra_outputs,
            Some(vec!["rtmp://r.example/live/k".to_owned()]),
            "{multi}"
        );
    }
}

fn params(request: &LiveRequest) -> BTreeMap<String, String> {
    request.action_params().expect("params")
}

fn json_param(request: &LiveRequest, name: &str) -> serde_json::Value {
    serde_json::from_str(&params(request)[name]).expect("json param")
}

/// Restreaming: with extra outputs, Start and the output-changing Update carry `MultiStreamURL`
/// (ours first, `IsAliCdn` true, freshly signed; the others false) and never `StreamURL`; with
/// none, `StreamURL` as before. An Update that leaves the outputs alone carries neither.
#[test]
fn extra_outputs_go_out_as_multi_stream_url() {
    let a = adapter(None, None);
    let outputs = costream_core::Outputs::new(vec![
        costream_core::OutputUrl::parse("rtmp://a.rtmp.youtube.com/live2/yt-key").expect("url"),
        costream_core::OutputUrl::parse("rtmp://live.twitch.tv/app/tw-key").expect("url"),
    ])
    .expect("outputs");
    let start = a
        .start_request(&room(), "room-1001_1", &single(), &outputs)
        .expect("start");
    assert!(!params(&start).contains_key("StreamURL"));
    let multi = json_param(&start, "MultiStreamURL");
    assert_eq!(
        multi,
        serde_json::json!([
            {"IsAliCdn": true, "URL": "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3"},
            {"IsAliCdn": false, "URL": "rtmp://a.rtmp.youtube.com/live2/yt-key"},
            {"IsAliCdn": false, "URL": "rtmp://live.twitch.tv/app/tw-key"},
        ])
    );
    let set = a
        .refresh_request(&room(), "room-1001_1", &single(), &outputs)
        .expect("update");
    assert_eq!(json_param(&set, "MultiStreamURL"), multi);
    assert_eq!(params(&set)["MixMode"], "0");
    let removed = a
        .refresh_request(
            &room(),
            "room-1001_1",
            &single(),
            &costream_core::Outputs::NONE,
        )
        .expect("update");
    assert!(!params(&removed).contains_key("MultiStreamURL"));
    assert!(params(&removed)["StreamURL"]
        .starts_with("rtmp://push.example.com/live/room-1001_main?auth_key="));
    let plain = a
        .update_request(&room(), "room-1001_1", &two_panes(&a))
        .expect("update");
    assert!(!params(&plain).contains_key("StreamURL"));
    assert!(!params(&plain).contains_key("MultiStreamURL"));
}

/// Screen share and hidden cameras in `UserInfos`: the screen as a video track (`StreamType`
/// 2, shareScreen), cameras with audio (0), and the audio (1) of everyone heard without a
/// camera pane.
#[test]
fn screen_and_audio_only_users_are_subscribed_by_track() {
    let a = adapter(None, None);
    let cfg = &a.settings().decision;
    let spec = LayoutSpec {
        canvas: cfg.canvas,
        style: LayoutStyle::Grid,
        render_mode: cfg.render_mode,
        placeholder: None,
    };
    let u = |s: &str| UserId::parse(s).expect("user");
    let alone = costream_core::screen_layout(&spec, &u("host_u1"), &[]);
    let start = a
        .start_request(
            &room(),
            "room-1001_1",
            &Shape::Mixed { layout: alone },
            &Outputs::NONE,
        )
        .expect("start");
    let tp = json_param(&start, "TranscodeParams");
    assert_eq!(
        tp["UserInfos"],
        serde_json::json!([
            {"SourceType": "shareScreen", "StreamType": "2", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"},
        ])
    );
    assert_eq!(
        tp["Layout"]["UserPanes"],
        serde_json::json!([{"Height": "1", "RenderMode": "0", "UserInfo": {"SourceType": "shareScreen", "UserId": "host_u1"}, "Width": "1", "X": "0", "Y": "0", "ZOrder": "0"}])
    );
    let mut both =
        costream_core::screen_layout(&spec, &u("guest_u2"), &[u("host_u1"), u("guest_u2")]);
    both.audio = vec![u("quiet_u3")];
    let update = a
        .update_request(&room(), "room-1001_1", &Shape::Mixed { layout: both })
        .expect("update");
    let tp = json_param(&update, "TranscodeParams");
    assert_eq!(
        tp["UserInfos"],
        serde_json::json!([
            {"SourceType": "shareScreen", "StreamType": "2", "UserId": "guest_u2"},
            {"SourceType": "camera", "StreamType": "0", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "0", "UserId": "guest_u2"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "quiet_u3"},
        ])
    );
    let panes = tp["Layout"]["UserPanes"].as_array().expect("panes");
    assert_eq!(panes.len(), 3);
    assert_eq!(panes[0]["UserInfo"]["SourceType"], "shareScreen");
    assert_eq!(
        (&panes[1]["ZOrder"], &panes[2]["ZOrder"]),
        (&serde_json::json!("1"), &serde_json::json!("1"))
    );
}
