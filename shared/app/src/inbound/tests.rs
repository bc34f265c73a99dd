use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../tests/fixtures/artc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn app() -> AppId {
    AppId::parse("9qb1abcd").expect("app")
}

const NOW: Timestamp = Timestamp::from_secs(1_704_164_700);

fn tags(cb: &ArtcCallback) -> Vec<String> {
    cb.events
        .iter()
        .map(|e| match e {
            RoomEvent::User(u) => format!("{}:{:?}", u.user, u.action),
            RoomEvent::ChannelClosed { .. } => "close".into(),
            RoomEvent::Cdn { .. } => "cdn".into(),
            RoomEvent::HostRegistered { .. } => "host".into(),
            RoomEvent::Settings { .. } => "settings".into(),
            RoomEvent::Pk { .. } => "pk".into(),
            RoomEvent::Camera { user, on, .. } => format!("{user}:camera {on}"),
        })
        .collect()
}

#[test]
fn seed_flow_fixtures_parse() {
    let cb = parse_artc(&fixture("01_host_publish.json"), &app(), NOW).expect("ok");
    assert_eq!(cb.channel.as_str(), "room-1001");
    assert_eq!(cb.msg_id.as_ref().map(MsgId::as_str), Some("msg-0001"));
    assert_eq!(tags(&cb), ["host_u1:Join", "host_u1:Publish"]);

    // Lower-case-`d` field names of the older doc version.
    let cb = parse_artc(&fixture("03_guest_leave.json"), &app(), NOW).expect("ok");
    assert_eq!(tags(&cb), ["guest_u2:Unpublish", "guest_u2:Leave"]);

    let cb = parse_artc(&fixture("channel_close.json"), &app(), NOW).expect("ok");
    assert_eq!(tags(&cb), ["close"]);
}

/// Whichever function EventBridge invokes applies every item of the callback (issue 21): a
/// reconnect reported in one callback — a Publish and a Leave — is never half-applied.
#[test]
fn every_item_of_a_callback_is_kept_whichever_function_receives_it() {
    let body = fixture("publish_and_leave.json");
    let cb = parse_artc(&body, &app(), NOW).expect("ok");
    assert_eq!(tags(&cb), ["guest_u2:Publish", "guest_u3:Leave"]);
    let cb = parse_artc(&fixture("roleupdate_to_viewer.json"), &app(), NOW).expect("ok");
    assert_eq!(tags(&cb), ["guest_u2:RoleUpdate(Live)"]);
}

#[test]
fn bad_input_is_rejected_with_a_reason() {
    let err = |body: &[u8]| {
        parse_artc(body, &app(), NOW)
            .expect_err("rejected")
            .to_string()
    };
    assert_eq!(
        err(&fixture("wrong_app.json")),
        "callback is for AppId otherapp, this deployment serves 9qb1abcd"
    );
    assert_eq!(
        err(&fixture("unknown_tag.json")),
        "no content of the callback could be read (unknown: UserEvent/ScreenShareStart)"
    );
    // Timestamp 0 (or any absurd past) names the field.
    let ancient = br#"{"AppId":"9qb1abcd","ChannelId":"r","Contents":[{"Event":"UserEvent","UserEvent":{"UserId":"u","SessionId":"s","EventTag":"Publish","Timestamp":0}}]}"#;
    assert_eq!(
        err(ancient),
        "content 0: Timestamp 0 is before 1577836800: no ARTC event is that old"
    );
    assert!(err(b"{not json").starts_with("body is not JSON"));
    assert_eq!(err(b"[1,2]"), "callback must be a JSON object");
    assert_eq!(
        err(b"{\"AppId\":\"9qb1abcd\",\"ChannelId\":\"r\"}"),
        "missing field Contents"
    );
    assert_eq!(
        err(b"{\"AppId\":\"9qb1abcd\",\"ChannelId\":\"r\",\"Contents\":[]}"),
        "callback has no Contents"
    );
    assert!(
        err(b"{\"AppId\":\"9qb1abcd\",\"ChannelId\":\"bad channel\",\"Contents\":[]}")
            .starts_with("invalid ChannelId")
    );
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(
        err(&big),
        format!("body is {} bytes, the limit is 65536", MAX_BODY_BYTES + 1)
    );
    let future = String::from_utf8(fixture("02_guest_publish.json"))
        .expect("utf8")
        .replace("1704164660", "1704200000");
    assert!(
        err(future.as_bytes()).contains("after now"),
        "{}",
        err(future.as_bytes())
    );
}

#[test]
fn an_eventbridge_detail_has_the_same_size_limit_as_a_body() {
    // A valid callback padded with an unknown field to exactly `size` bytes of compact JSON.
    let padded = |size: usize| {
        let mut detail: Value =
            serde_json::from_slice(&fixture("01_host_publish.json")).expect("fixture");
        detail["Padding"] = Value::String(String::new());
        let base = serde_json::to_vec(&detail).expect("json").len();
        detail["Padding"] = Value::String("x".repeat(size - base));
        assert_eq!(serde_json::to_vec(&detail).expect("json").len(), size);
        detail
    };
    let at_limit = parse_artc_value(&padded(MAX_BODY_BYTES), &app(), NOW).expect("at the limit");
    assert_eq!(tags(&at_limit), ["host_u1:Join", "host_u1:Publish"]);
    assert_eq!(
        parse_artc_value(&padded(MAX_BODY_BYTES + 1), &app(), NOW),
        Err(InboundError::TooLarge(MAX_BODY_BYTES + 1))
    );
}

#[test]
fn viewers_and_channel_open_are_valid_and_harmless() {
    let cb = parse_artc(&fixture("viewer_join.json"), &app(), NOW).expect("ok");
    assert!(matches!(
        &cb.events[..],
        [RoomEvent::User(UserEvent {
            role: Some(Role::Live),
            ..
        })]
    ));
    let open = br#"{"AppId":"9qb1abcd","ChannelId":"r","Contents":[{"Event":"ChannelEvent","ChannelEvent":{"EventTag":"Open","Timestamp":1}}]}"#;
    assert!(parse_artc(open, &app(), NOW).expect("ok").events.is_empty());
}

#[test]
fn cdn_query_parses_and_validates() {
    let q = [
        ("action", "publish"),
        ("app", "push.example.com"),
        ("appname", "live"),
        ("id", "room-1001_main"),
        ("ip", "42.120.0.1"),
        ("node", "cdnvideocenter01.cm3"),
        ("time", "1704164690"),
        ("usrargs", "vhost%3Dx%26auth_key%3D1"),
    ];
    let cb = parse_cdn(q, NOW).expect("ok");
    assert_eq!(cb.action, CdnAction::Publish);
    assert_eq!(cb.stream, "room-1001_main");
    assert_eq!(
        cb.dedupe_key(),
        "cdn:push.example.com:live:room-1001_main:publish:1704164690"
    );

    let missing_id: Vec<_> = q.iter().copied().filter(|(k, _)| *k != "id").collect();
    assert_eq!(
        parse_cdn(missing_id, NOW).expect_err("no id").to_string(),
        "invalid query parameter id: missing"
    );
    let bad_action = [
        ("action", "record"),
        ("id", "s"),
        ("appname", "live"),
        ("time", "1"),
    ];
    assert!(parse_cdn(bad_action, NOW).is_err());
    let future = [
        ("action", "publish"),
        ("id", "s"),
        ("appname", "live"),
        ("time", "1804164690"),
    ];
    assert!(parse_cdn(future, NOW).is_err());
}

/// Camera state (the 2021 tags): camera facts.
#[test]
fn camera_tags_are_camera_facts() {
    let body = br#"{"AppId":"9qb1abcd","ChannelId":"room-1001","MsgId":"m","Contents":[
        {"Event":"UserEvent","UserEvent":{"UserId":"u1","SessionId":"s1","EventTag":"CameraClose","Timestamp":1704164661}},
        {"Event":"UserEvent","UserEvent":{"UserId":"u2","SessionId":"s2","EventTag":"cameraopen","Timestamp":1704164662,"Role":1}}
    ]}"#;
    let both = parse_artc(body, &app(), NOW).expect("ok");
    assert_eq!(tags(&both), ["u1:camera false", "u2:camera true"]);
    assert!(both.skipped.is_empty());
}

/// Defect 5: one unknown item (a tag Alibaba added later) no longer loses the callback's known
/// events; the unknown ones are skipped and named.
#[test]
fn unknown_items_are_skipped_and_the_known_ones_kept() {
    let body = br#"{"AppId":"9qb1abcd","ChannelId":"room-1001","MsgId":"m","Contents":[
        {"Event":"UserEvent","UserEvent":{"UserId":"u1","SessionId":"s1","EventTag":"ScreenShareStart","Timestamp":1704164661,"Role":1}},
        {"Event":"UserEvent","UserEvent":{"UserId":"u1","SessionId":"s1","EventTag":"Publish","Timestamp":1704164662,"Role":1}},
        {"Event":"UserEvent","UserEvent":{"UserId":"u2","SessionId":"s2","EventTag":"Join","Timestamp":1704164663,"Role":7}},
        {"Event":"ChannelEvent","ChannelEvent":{"EventTag":"Pause","Timestamp":1704164664}},
        {"Event":"StreamEvent","StreamEvent":{"Foo":1}}
    ]}"#;
    let cb = parse_artc(body, &app(), NOW).expect("the known event is kept");
    assert_eq!(tags(&cb), ["u1:Publish"]);
    assert_eq!(
        cb.skipped,
        [
            "UserEvent/ScreenShareStart",
            "UserEvent/Join/Role=7",
            "ChannelEvent/Pause",
            "StreamEvent"
        ]
    );
    // A malformed item is still bad input for the whole callback.
    let malformed = br#"{"AppId":"9qb1abcd","ChannelId":"room-1001","Contents":[
        {"Event":"UserEvent","UserEvent":{"UserId":"u1","SessionId":"s1","EventTag":"CameraOpen","Timestamp":1704164661}},
        {"Event":"UserEvent","UserEvent":{"EventTag":"Publish"}}
    ]}"#;
    assert_eq!(
        parse_artc(malformed, &app(), NOW)
            .expect_err("malformed")
            .to_string(),
        "missing field UserId"
    );
}

#[test]
fn a_cdn_time_before_the_floor_names_the_parameter() {
    let err = parse_cdn(
        [
            ("action", "publish"),
            ("id", "room-1001_main"),
            ("app", "push.example.com"),
            ("appname", "live"),
            ("time", "0"),
        ],
        NOW,
    )
    .expect_err("too old");
    assert_eq!(
        err.to_string(),
        "invalid query parameter time: 0 is before 1577836800 (2020-01-01)"
    );
}
