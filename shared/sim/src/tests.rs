//! The simulator's MPU semantics, driven in-process: through the `LiveApi` port (so every answer
//! is classified by the client's own `read_answer`), with raw parameter maps where the wire shape
//! matters, and through the real adapter (`AlibabaMpu`) for the idempotency and retry rules.

use std::sync::Arc;

use secrecy::SecretString;

use super::*;
use costream_alibaba::request::{
    EncodeParams, Fraction, ListRtcMpuTaskDetail, Mix as WireMix, MixLayout, PaneUserInfo,
    SingleSubParams, StartLiveMpuTask, StopLiveMpuTask, StreamOutput, TaskSelector,
    TranscodeParams, UpdateLiveMpuTask, UserInfo, UserPane, VideoCodec,
};
use costream_alibaba::Outcome;

use costream_alibaba::ManualClock;

const APP: &str = "9qb1abcd";
const CHANNEL: &str = "room-1001";
const TASK: &str = "room-1001_main";
const URL: &str = "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3";
const T0: u64 = 1_704_164_645_000;

fn sim() -> (Arc<ManualClock>, SimulatedLive) {
    let clock = Arc::new(ManualClock::at_ms(T0));
    (clock.clone(), SimulatedLive::new(clock))
}

fn single(user: &str) -> WireMix {
    WireMix::Single(SingleSubParams::camera(user))
}

fn encode() -> EncodeParams {
    EncodeParams {
        audio_bitrate: Some(64),
        audio_channels: Some(2),
        audio_only: Some(false),
        audio_sample_rate: Some(48_000),
        enhanced_param: None,
        video_bitrate: Some(1500),
        video_codec: Some(VideoCodec::H264),
        video_framerate: Some(25),
        video_gop: Some(2),
        video_height: Some(720),
        video_width: Some(1280),
    }
}

fn frac(f: f64) -> Fraction {
    Fraction::new(f).expect("a fraction in [0, 1]")
}

/// Side by side panes, one per user.
fn mixed(users: &[&str]) -> WireMix {
    let width = 1.0 / users.len() as f64;
    let user_panes = users
        .iter()
        .enumerate()
        .map(|(i, u)| UserPane {
            background_image_url: None,
            height: Fraction::ONE,
            render_mode: None,
            user_info: Some(PaneUserInfo::camera(*u)),
            width: frac(width),
            x: frac(width * i as f64),
            y: Fraction::ZERO,
            z_order: 0,
        })
        .collect();
    WireMix::Transcode(TranscodeParams {
        background: None,
        encode_params: encode(),
        layout: Some(MixLayout { user_panes }),
        user_infos: users.iter().map(|u| UserInfo::camera(*u)).collect(),
    })
}

fn start(task: &str, url: &str, mix: WireMix) -> LiveRequest {
    StartLiveMpuTask {
        app_id: APP.into(),
        channel_id: CHANNEL.into(),
        task_id: task.into(),
        mix,
        output: StreamOutput::Url(url.into()),
        max_idle_time: Some(120),
        region: None,
        sei: None,
    }
    .into()
}

fn update(task: &str, mix: WireMix) -> LiveRequest {
    UpdateLiveMpuTask {
        app_id: APP.into(),
        channel_id: CHANNEL.into(),
        task_id: task.into(),
        mix,
        output: None,
        sei: None,
    }
    .into()
}

fn stop(task: &str) -> LiveRequest {
    StopLiveMpuTask {
        app_id: APP.into(),
        task_id: task.into(),
    }
    .into()
}

fn applied(reply: Result<Reply, MpuError>) -> Reply {
    let reply = reply.expect("the simulator accepts the call");
    assert_eq!(reply.outcome, Outcome::Applied);
    reply
}

fn rejected(reply: Result<Reply, MpuError>) -> (String, String) {
    match reply {
        Err(MpuError::Rejected { code, message, .. }) => (code, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn start_update_stop_keeps_the_task_like_alibaba() {
    let (clock, sim) = sim();
    let reply = applied(sim.answer(&start(TASK, URL, single("host_u1"))));
    assert_eq!(reply.request_id.as_deref(), Some("SIM-1"));

    let task = sim.task(APP, TASK).expect("started");
    assert_eq!(task.mix_mode, 0);
    assert_eq!(task.users, ["host_u1"]);
    assert_eq!(task.channel_id, CHANNEL);
    assert_eq!(task.stream_url.as_deref(), Some(URL));
    assert_eq!(
        task.outputs,
        ["rtmp://push.example.com/live/room-1001_main"]
    );
    assert_eq!(task.max_idle_time, Some(120));
    assert_eq!(
        task.single_sub_params,
        Some(json!({"SourceType":"camera","StreamType":"0","UserId":"host_u1"}))
    );
    assert_eq!(task.started_at_ms, T0);

    clock.advance_ms(5_000);
    applied(sim.answer(&update(TASK, mixed(&["host_u1", "guest_u2"]))));
    let task = sim.task(APP, TASK).expect("still running");
    assert_eq!(task.mix_mode, 1);
    assert_eq!(task.users, ["host_u1", "guest_u2"]);
    assert_eq!(task.single_sub_params, None, "Update replaces the mix");
    assert_eq!(
        task.transcode_params
            .as_ref()
            .and_then(|t| t.pointer("/Layout/UserPanes/1/X"))
            .and_then(Value::as_str),
        Some("0.5")
    );
    assert_eq!(task.updates, 1);
    assert_eq!(task.updated_at_ms, T0 + 5_000);
    assert_eq!(
        task.stream_url.as_deref(),
        Some(URL),
        "Update kept the output"
    );

    applied(sim.answer(&update(TASK, single("host_u1"))));
    assert_eq!(sim.task(APP, TASK).expect("running").mix_mode, 0);

    applied(sim.answer(&stop(TASK)));
    assert!(sim.tasks().is_empty());

    let calls = sim.calls();
    let seen: Vec<(&str, &str, Option<&str>, &str)> = calls
        .iter()
        .map(|c| {
            (
                c.action.as_str(),
                c.code.as_str(),
                c.mix_mode.as_deref(),
                c.summary.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                START,
                "OK",
                Some("0"),
                "single host_u1 -> rtmp://push.example.com/live/room-1001_main"
            ),
            (UPDATE, "OK", Some("1"), "mix host_u1,guest_u2"),
            (UPDATE, "OK", Some("0"), "single host_u1"),
            (STOP, "OK", None, "stop"),
        ]
    );
    assert!(calls.iter().all(|c| c.transport == Transport::InProcess
        && c.task_id.as_deref() == Some(TASK)
        && c.http_status == 200));
    assert_eq!(
        calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

#[test]
fn start_of_an_existing_task_is_already_exists() {
    let (_, sim) = sim();
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));

    let reply = sim
        .answer(&start(TASK, URL, mixed(&["host_u1", "guest_u2"])))
        .expect("already exists is not an error");
    assert_eq!(reply.outcome, Outcome::AlreadyExists);
    assert_eq!(reply.request_id.as_deref(), Some("SIM-2"));
    assert_eq!(
        sim.task(APP, TASK).expect("task").mix_mode,
        0,
        "the rejected Start changed nothing"
    );

    let wire = start(TASK, URL, single("host_u1"))
        .action_params()
        .expect("params");
    let answer = sim.handle(&wire, Transport::InProcess);
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        json!({
            "RequestId": "SIM-3",
            "HostId": "live.aliyuncs.com",
            "Code": "InvalidParam",
            "Message": "The task already exists.",
            "Recommend": "https://api.aliyun.com/troubleshoot?q=InvalidParam",
        })
    );
}

#[test]
fn a_stream_url_is_held_while_used_and_for_10_seconds_after_a_stop() {
    let (clock, sim) = sim();
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));

    // Another task on the same stream, even with a freshly signed auth_key.
    let resigned = "rtmp://PUSH.example.com/live/room-1001_main?auth_key=1704168245-0-0-ffff";
    let (code, message) = rejected(sim.answer(&start("room-1001_2", resigned, single("host_u1"))));
    assert_eq!(code, "InvalidParam");
    assert!(message.contains("StreamURL"), "{message}");
    assert!(sim.task(APP, "room-1001_2").is_none());

    applied(sim.answer(&stop(TASK)));
    clock.advance_ms(STREAM_URL_HOLD_MS - 1);
    let (_, message) = rejected(sim.answer(&start("room-1001_2", resigned, single("host_u1"))));
    assert!(message.contains("StreamURL"), "{message}");

    // A different stream is not held.
    applied(sim.answer(&start(
        "other_main",
        "rtmp://push.example.com/live/other_main",
        single("u9"),
    )));

    clock.advance_ms(1);
    applied(sim.answer(&start("room-1001_2", resigned, single("host_u1"))));
    assert_eq!(
        sim.task(APP, "room-1001_2").expect("started").outputs,
        ["rtmp://push.example.com/live/room-1001_main"]
    );
}

#[test]
fn update_and_stop_of_an_unknown_task() {
    let (_, sim) = sim();
    let reply = sim
        .answer(&update(TASK, single("host_u1")))
        .expect("classified, not an error");
    assert_eq!(
        reply.outcome,
        Outcome::TaskNotFound {
            code: "InvalidParam".into(),
            message: "The task does not exist.".into()
        }
    );
    let reply = sim.answer(&stop(TASK)).expect("idempotent stop");
    assert_eq!(reply.outcome, Outcome::AlreadyStopped);
    assert_eq!(reply.request_id.as_deref(), Some("SIM-2"));

    // A task of another app is another task.
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));
    let other_app = StopLiveMpuTask {
        app_id: "otherapp".into(),
        task_id: TASK.into(),
    };
    assert_eq!(
        sim.answer(&other_app.into()).expect("stop").outcome,
        Outcome::AlreadyStopped
    );
    assert!(sim.task(APP, TASK).is_some());
    assert_eq!(
        sim.calls()
            .iter()
            .map(|c| c.code.as_str())
            .collect::<Vec<_>>(),
        ["InvalidParam", "InvalidParam", "OK", "InvalidParam"]
    );
}

#[test]
fn update_must_name_the_channel_of_the_task() {
    let (_, sim) = sim();
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));
    let mut params = update(TASK, single("guest_u2"))
        .action_params()
        .expect("params");
    params.insert("ChannelId".into(), "room-2".into());
    let answer = sim.handle(&params, Transport::InProcess);
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["Code"], "InvalidParam");
    assert_eq!(sim.task(APP, TASK).expect("task").users, ["host_u1"]);
}

#[test]
fn a_task_the_service_ended_is_gone_for_update_and_holds_its_url() {
    let (clock, sim) = sim();
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));
    assert!(sim.end_task(APP, TASK).is_some());
    assert!(sim.end_task(APP, TASK).is_none());
    assert!(matches!(
        sim.answer(&update(TASK, single("host_u1")))
            .expect("classified")
            .outcome,
        Outcome::TaskNotFound { .. }
    ));
    rejected(sim.answer(&start(TASK, URL, single("host_u1"))));
    clock.advance_ms(STREAM_URL_HOLD_MS);
    applied(sim.answer(&start(TASK, URL, single("host_u1"))));
}

/// A valid Start in mixing mode as wire parameters, to break one at a time.
fn valid_start_params() -> Params {
    start(TASK, URL, mixed(&["host_u1", "guest_u2"]))
        .action_params()
        .expect("params")
}

fn with_json(mut params: Params, name: &str, edit: impl FnOnce(&mut Value)) -> Params {
    let mut value: Value =
        serde_json::from_str(params.get(name).expect("param present")).expect("json");
    edit(&mut value);
    params.insert(name.to_owned(), value.to_string());
    params
}

fn without(mut params: Params, name: &str) -> Params {
    params.remove(name);
    params
}

fn with(mut params: Params, name: &str, value: &str) -> Params {
    params.insert(name.to_owned(), value.to_owned());
    params
}

#[test]
fn invalid_parameters_are_rejected_like_the_service_does() {
    let ok = valid_start_params();
    let single_params = start(TASK, URL, single("host_u1"))
        .action_params()
        .expect("params");
    let pane = |i: usize, key: &str, v: Value| {
        with_json(ok.clone(), "TranscodeParams", |t| {
            t["Layout"]["UserPanes"][i][key] = v;
        })
    };
    let cases: Vec<(&str, Params, &str)> = vec![
        ("no AppId", without(ok.clone(), "AppId"), "MissingParam"),
        (
            "no ChannelId",
            without(ok.clone(), "ChannelId"),
            "MissingParam",
        ),
        ("no TaskId", without(ok.clone(), "TaskId"), "MissingParam"),
        (
            "empty TaskId",
            with(ok.clone(), "TaskId", ""),
            "MissingParam",
        ),
        ("no MixMode", without(ok.clone(), "MixMode"), "MissingParam"),
        (
            "TaskId of 56 chars",
            with(ok.clone(), "TaskId", &"a".repeat(56)),
            "InvalidParam",
        ),
        (
            "TaskId with a dot",
            with(ok.clone(), "TaskId", "room.1"),
            "InvalidParam",
        ),
        (
            "AppId with a space",
            with(ok.clone(), "AppId", "my app"),
            "InvalidParam",
        ),
        (
            "MixMode 2",
            with(ok.clone(), "MixMode", "2"),
            "InvalidParam",
        ),
        (
            "MixMode 1 without TranscodeParams",
            without(ok.clone(), "TranscodeParams"),
            "MissingParam",
        ),
        (
            "MixMode 1 with SingleSubParams",
            with(ok.clone(), "SingleSubParams", r#"{"UserId":"u"}"#),
            "InvalidParam",
        ),
        (
            "MixMode 0 without SingleSubParams",
            without(single_params.clone(), "SingleSubParams"),
            "MissingParam",
        ),
        (
            "MixMode 0 with TranscodeParams",
            with(
                single_params.clone(),
                "TranscodeParams",
                &ok["TranscodeParams"],
            ),
            "InvalidParam",
        ),
        (
            "SingleSubParams not JSON",
            with(single_params.clone(), "SingleSubParams", "host_u1"),
            "InvalidParam",
        ),
        (
            "SingleSubParams without UserId",
            with(
                single_params.clone(),
                "SingleSubParams",
                r#"{"StreamType":"0"}"#,
            ),
            "MissingParam",
        ),
        (
            "StreamType 3",
            with(
                single_params.clone(),
                "SingleSubParams",
                r#"{"UserId":"u","StreamType":"3"}"#,
            ),
            "InvalidParam",
        ),
        (
            "no output",
            without(ok.clone(), "StreamURL"),
            "MissingParam",
        ),
        (
            "http output",
            with(ok.clone(), "StreamURL", "http://push.example.com/a/b"),
            "InvalidParam",
        ),
        (
            "both outputs",
            with(
                ok.clone(),
                "MultiStreamURL",
                r#"[{"URL":"rtmp://a/b/c","IsAliCdn":false}]"#,
            ),
            "InvalidParam",
        ),
        ("X above 1", pane(0, "X", json!("1.5")), "InvalidParam"),
        ("Y below 0", pane(1, "Y", json!("-0.1")), "InvalidParam"),
        (
            "Width not a number",
            pane(1, "Width", json!("half")),
            "InvalidParam",
        ),
        (
            "no Height",
            with_json(ok.clone(), "TranscodeParams", |t| {
                t["Layout"]["UserPanes"][0]
                    .as_object_mut()
                    .expect("pane")
                    .remove("Height");
            }),
            "MissingParam",
        ),
        (
            "ZOrder negative",
            pane(0, "ZOrder", json!("-1")),
            "InvalidParam",
        ),
        (
            "17 panes",
            with_json(ok.clone(), "TranscodeParams", |t| {
                let first = t["Layout"]["UserPanes"][0].clone();
                t["Layout"]["UserPanes"] = Value::Array(vec![first; 17]);
            }),
            "InvalidParam",
        ),
        (
            "pane user not in UserInfos",
            pane(1, "UserInfo", json!({"UserId": "stranger"})),
            "InvalidParam",
        ),
        (
            "no VideoWidth",
            with_json(ok.clone(), "TranscodeParams", |t| {
                t["EncodeParams"]
                    .as_object_mut()
                    .expect("encode")
                    .remove("VideoWidth");
            }),
            "MissingParam",
        ),
        (
            "VideoFramerate 61",
            with_json(ok.clone(), "TranscodeParams", |t| {
                t["EncodeParams"]["VideoFramerate"] = json!("61");
            }),
            "InvalidParam",
        ),
        (
            "layout for audio-only output",
            with_json(ok.clone(), "TranscodeParams", |t| {
                t["EncodeParams"]["AudioOnly"] = json!("true");
            }),
            "InvalidParam",
        ),
        (
            "MaxIdleTime 5",
            with(ok.clone(), "MaxIdleTime", "5"),
            "InvalidParam",
        ),
        (
            "unknown Region",
            with(ok.clone(), "Region", "Mars"),
            "InvalidParam",
        ),
    ];
    let (_, sim) = sim();
    let classifiers = [
        start(TASK, URL, single("u")),
        update(TASK, single("u")),
        stop(TASK),
    ];
    for (name, params, code) in cases {
        let answer = sim.handle(&params, Transport::InProcess);
        assert_eq!(answer.status, 400, "{name}");
        assert_eq!(answer.body["Code"], code, "{name}: {}", answer.body);
        let message = answer.body["Message"].as_str().expect("message");
        // Never mistaken for an idempotent outcome, nor for a busy stream URL.
        for request in &classifiers {
            assert!(
                read_answer(request, answer.status, None, &answer.body_bytes()).is_err(),
                "{name} read as idempotent for {}: {message}",
                request.action()
            );
        }
        assert!(
            !message.to_ascii_lowercase().contains("streamurl"),
            "{name}: {message}"
        );
    }
    assert!(sim.tasks().is_empty());

    // The baselines themselves are valid, and numbers may come as JSON numbers too.
    assert_eq!(sim.handle(&ok, Transport::InProcess).status, 200);
    let numeric = with_json(
        with(single_params, "TaskId", "other"),
        "SingleSubParams",
        |s| s["StreamType"] = json!(0),
    );
    let numeric = with(numeric, "StreamURL", "rtmp://push.example.com/live/other");
    assert_eq!(sim.handle(&numeric, Transport::InProcess).status, 200);
}

#[test]
fn unknown_or_missing_action() {
    let (_, sim) = sim();
    let answer = sim.handle(
        &Params::from([("Action".into(), "StartMPUTask".into())]),
        Transport::InProcess,
    );
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["Code"], "InvalidApi.NotFound");
    let answer = sim.handle(&Params::new(), Transport::InProcess);
    assert_eq!(answer.body["Code"], "MissingParam");
    assert_eq!(sim.calls()[1].action, "");
}

#[test]
fn the_official_sdk_capture_of_the_flow_is_accepted() {
    let text = std::fs::read_to_string(costream_alibaba::vector_path("mpu_requests.json"))
        .expect("read mpu_requests.json");
    let doc: Value = serde_json::from_str(&text).expect("json");
    let (clock, sim) = sim();
    for step in [
        "a_start_mixmode0_single_stream",
        "b_update_mixmode1_two_panes",
        "c_update_back_to_mixmode0",
        "d_stop",
    ] {
        let params: Params =
            serde_json::from_value(doc["flow"][step]["query_params"].clone()).expect("params");
        let answer = sim.handle(&params, Transport::InProcess);
        assert_eq!(answer.status, 200, "{step}: {}", answer.body);
        if step == "b_update_mixmode1_two_panes" {
            assert_eq!(
                sim.task(APP, TASK).expect("task").users,
                ["host_u1", "guest_u2"]
            );
        }
    }
    let mixing: Params = serde_json::from_value(
        doc["other_operations"]["start_mixmode1_with_maxidletime_region"]["query_params"].clone(),
    )
    .expect("params");
    // 10 s after the Stop the stream URL is free again.
    clock.advance_ms(STREAM_URL_HOLD_MS);
    assert_eq!(sim.handle(&mixing, Transport::InProcess).status, 200);
    let task = sim.task(APP, TASK).expect("task");
    assert_eq!(task.region.as_deref(), Some("CN-Shanghai"));
    assert_eq!(task.max_idle_time, Some(120));
}

#[test]
fn list_returns_tasks_as_objects_newest_update_first() {
    let (clock, sim) = sim();
    for (i, task) in ["a_main", "b_main", "c_main"].into_iter().enumerate() {
        clock.advance_ms(1000);
        let url = format!("rtmp://push.example.com/live/{task}");
        applied(sim.answer(&start(task, &url, mixed(&["u1", "u2"][..=i % 2]))));
    }
    clock.advance_ms(1000);
    applied(sim.answer(&update("a_main", single("u1"))));

    let list = |selector| {
        let request: LiveRequest = ListRtcMpuTaskDetail {
            app_id: APP.into(),
            selector,
        }
        .into();
        applied(sim.answer(&request)).body
    };
    let body = list(TaskSelector::Task("b_main".into()));
    let tasks = body["MPUTasks"].as_array().expect("MPUTasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["TaskId"], "b_main");
    assert_eq!(tasks[0]["MixMode"], "1");
    assert_eq!(tasks[0]["MaxIdleTime"], 120);
    assert_eq!(
        tasks[0]["TranscodeParams"]["Layout"]["UserPanes"][1]["UserInfo"]["UserId"], "u2",
        "nested parameters come back as objects"
    );
    assert_eq!(tasks[0]["StreamURL"], "rtmp://push.example.com/live/b_main");

    let ids = |body: &Value| -> Vec<String> {
        body["MPUTasks"]
            .as_array()
            .expect("MPUTasks")
            .iter()
            .map(|t| t["TaskId"].as_str().expect("TaskId").to_owned())
            .collect()
    };
    let page = |page_no, page_size| TaskSelector::Page { page_no, page_size };
    assert_eq!(ids(&list(page(1, 100))), ["a_main", "c_main", "b_main"]);
    assert_eq!(ids(&list(page(2, 2))), ["b_main"]);
    assert!(ids(&list(page(3, 2))).is_empty());
    assert!(ids(&list(TaskSelector::Task("nope".into()))).is_empty());

    for (name, params) in [
        (
            "PageSize 101",
            Params::from([
                ("PageNo".into(), "1".into()),
                ("PageSize".into(), "101".into()),
            ]),
        ),
        (
            "PageNo 0",
            Params::from([
                ("PageNo".into(), "0".into()),
                ("PageSize".into(), "10".into()),
            ]),
        ),
        ("no selector", Params::new()),
    ] {
        let mut params = params;
        params.insert("Action".into(), LIST_TASKS.into());
        params.insert("AppId".into(), APP.into());
        let answer = sim.handle(&params, Transport::InProcess);
        assert_eq!(answer.status, 400, "{name}");
    }
}

#[test]
fn event_subscriptions() {
    use costream_alibaba::request::{CreateEventSub, DeleteEventSub, EventKind, ListEventSub};
    let (_, sim) = sim();
    let create = |channel: Option<&str>, users: &[&str]| -> Result<Reply, MpuError> {
        sim.answer(
            &CreateEventSub {
                app_id: APP.into(),
                callback_url: "https://cb.example.com/artc".into(),
                events: vec![EventKind::ChannelEvent, EventKind::UserEvent],
                channel_id: channel.map(str::to_owned),
                users: users.iter().map(|u| (*u).to_owned()).collect(),
            }
            .into(),
        )
    };
    let all = applied(create(None, &[]));
    let id = all.body["SubscribeId"]
        .as_str()
        .expect("SubscribeId")
        .to_owned();
    rejected(create(Some("*"), &[]));
    rejected(create(None, &["u1"]));
    applied(create(Some(CHANNEL), &["u1", "u2"]));

    let listed = applied(sim.answer(&ListEventSub { app_id: APP.into() }.into())).body;
    let subs = listed["Subscribers"].as_array().expect("Subscribers");
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["SubId"], id.as_str());
    assert_eq!(subs[0]["ChannelId"], "*");
    assert_eq!(subs[0]["Events"], json!(["ChannelEvent", "UserEvent"]));
    assert_eq!(subs[1]["Users"], json!(["u1", "u2"]));
    // 2024-01-02T03:04:05Z in UTC+8.
    assert_eq!(subs[0]["CreateTime"], "2024-01-02 11:04:05");

    let delete = |subscribe_id: &str| {
        sim.answer(
            &DeleteEventSub {
                app_id: APP.into(),
                subscribe_id: subscribe_id.into(),
            }
            .into(),
        )
    };
    applied(delete(&id));
    rejected(delete(&id));
    assert_eq!(sim.subscriptions().len(), 1);
}

#[test]
fn cdn_notify_registration() {
    use costream_alibaba::request::{NotifyAuthKey, SetLiveStreamsNotifyUrlConfig};
    let (_, sim) = sim();
    let key = NotifyAuthKey::new(SecretString::from("NotifyKey0123456789")).expect("valid key");
    let set = |url: &str, key: Option<NotifyAuthKey>| {
        sim.answer(
            &SetLiveStreamsNotifyUrlConfig {
                domain_name: "push.example.com".into(),
                notify_url: url.into(),
                notify_auth_key: key,
            }
            .into(),
        )
    };
    applied(set("https://api.example.com/cdn/ingest", Some(key)));
    let configs = sim.notify_configs();
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0].notify_url, "https://api.example.com/cdn/ingest");
    assert!(configs[0].notify_req_auth);
    // The key is checked, never recorded or shown.
    let shown = format!(
        "{} {:?}",
        serde_json::to_string(&sim.notify_configs()).expect("json"),
        sim.calls()
    );
    assert!(!shown.contains("NotifyKey0123456789"), "{shown}");
    assert!(
        sim.calls()[0].summary.contains("push.example.com"),
        "{:?}",
        sim.calls()
    );

    applied(set("https://api.example.com/cdn/v2", None));
    let configs = sim.notify_configs();
    assert_eq!(configs.len(), 1, "the same domain is replaced");
    assert!(!configs[0].notify_req_auth);
    rejected(set("ftp://api.example.com/cdn", None));

    let raw = |pairs: &[(&str, &str)]| {
        let mut params: Params = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        params.insert("Action".into(), SET_NOTIFY_URL.into());
        params.insert("DomainName".into(), "push.example.com".into());
        params.insert("NotifyUrl".into(), "https://a.example.com/n".into());
        sim.handle(&params, Transport::InProcess)
    };
    assert_eq!(raw(&[]).status, 200, "NotifyReqAuth defaults to no");
    for bad in [
        vec![("NotifyReqAuth", "yes")],
        vec![("NotifyReqAuth", "yes"), ("NotifyAuthKey", "short")],
        vec![
            ("NotifyReqAuth", "yes"),
            ("NotifyAuthKey", "with-a-dash-0123456"),
        ],
        vec![("NotifyReqAuth", "maybe")],
    ] {
        let answer = raw(&bad);
        assert_eq!(answer.status, 400, "{bad:?}");
    }
}

#[test]
fn recorded_calls_are_bounded() {
    let (_, sim) = sim();
    for _ in 0..MAX_RECORDED_CALLS + 5 {
        sim.handle(&Params::new(), Transport::InProcess);
    }
    let calls = sim.calls();
    assert_eq!(calls.len(), MAX_RECORDED_CALLS);
    assert_eq!(calls[0].seq, 6);
}
