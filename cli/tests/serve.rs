//! `costream serve` started as a real process: the seed flow over HTTP, the simulated MPU tasks
//! after each step, and the secret path.

mod common;

use common::{fixture, Server};
use serde_json::{json, Value};

/// Starts `costream serve` on a free loopback port (see `common::start_on`).
fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    common::start_on("127.0.0.1", args, env)
}

async fn tasks(http: &reqwest::Client, base: &str) -> Vec<Value> {
    http.get(format!("{base}/_sim/tasks"))
        .send()
        .await
        .expect("tasks")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn seed_flow_over_http() {
    let server = start(&[], &[]);
    let http = reqwest::Client::new();
    let post = |name: &str| {
        http.post(format!("{}/artc/s3cret-path", server.base))
            .header("content-type", "application/json")
            .body(fixture(name))
            .send()
    };
    let expect_mode = |tasks: &[Value], mode: u64, users: &[&str]| {
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0]["mix_mode"], mode, "{tasks:?}");
        let got: Vec<&str> = tasks[0]["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(got, users);
    };

    assert_eq!(
        post("01_host_publish.json").await.expect("post").status(),
        200
    );
    expect_mode(&tasks(&http, &server.base).await, 0, &["host_u1"]);
    assert_eq!(
        post("02_guest_publish.json").await.expect("post").status(),
        200
    );
    expect_mode(
        &tasks(&http, &server.base).await,
        1,
        &["host_u1", "guest_u2"],
    );

    // Without a viewer token: the public state only, cacheable, the same shape for any room.
    let public = http
        .get(format!("{}/rooms/room-1001", server.base))
        .send()
        .await
        .expect("status");
    assert_eq!(
        public.headers()["cache-control"],
        "public, max-age=2, stale-while-revalidate=5"
    );
    let public: Value = public.json().await.expect("json");
    assert_eq!(
        public,
        json!({"channel_id": "room-1001", "live": true, "cdn_live": false, "mix_mode": 1})
    );
    let unknown: Value = http
        .get(format!("{}/rooms/room-never-seen", server.base))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(
        unknown,
        json!({"channel_id": "room-never-seen", "live": false, "cdn_live": false, "mix_mode": null})
    );
    // A bad, expired or another room's token: 401.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let sign = |channel: &str, exp: u64| {
        costream_app::handlers::viewer::viewer_token("local-only-backend-secret", channel, exp)
    };
    for token in [
        "nonsense".to_owned(),
        sign("room-1001", exp - 1200),
        sign("room-other", exp),
        sign("room-1001", exp + 90_000),
    ] {
        let answer = http
            .get(format!(
                "{}/rooms/room-1001?viewer_token={token}",
                server.base
            ))
            .send()
            .await
            .expect("status");
        assert_eq!(answer.status(), 401, "{token}");
    }
    let full = http
        .get(format!(
            "{}/rooms/room-1001?viewer_token={}",
            server.base,
            sign("room-1001", exp)
        ))
        .send()
        .await
        .expect("status");
    assert_eq!(full.headers()["cache-control"], "private, no-store");
    let status: Value = full.json().await.expect("json");
    assert_eq!(status["on_stage"], json!(["host_u1", "guest_u2"]));
    assert!(status["playback"]["flv"]
        .as_str()
        .expect("flv")
        .contains("room-1001_main.flv?auth_key="));

    assert_eq!(
        post("03_guest_leave.json").await.expect("post").status(),
        200
    );
    expect_mode(&tasks(&http, &server.base).await, 0, &["host_u1"]);
    assert_eq!(
        post("04_host_leave.json").await.expect("post").status(),
        200
    );
    // The host's Leave ends the broadcast once the end grace (5 s) is over with nobody back.
    assert!(
        !tasks(&http, &server.base).await.is_empty(),
        "not during the grace"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !tasks(&http, &server.base).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "stopped after the grace"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A wrong secret path looks like no route at all, and changes nothing.
    let wrong = http
        .post(format!("{}/artc/guess", server.base))
        .body(fixture("01_host_publish.json"))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 404);
    assert!(tasks(&http, &server.base).await.is_empty());

    // Bad input is a 400 with a reason.
    let bad = post("wrong_app.json").await.expect("post");
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json");
    assert!(
        body["reason"]
            .as_str()
            .expect("reason")
            .contains("AppId otherapp"),
        "{body}"
    );
    // Host registration by the app's backend: signed with the shared secret (here the local
    // default), else refused.
    let body = r#"{"user_id":"host_u1"}"#;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let put = |signature: String| {
        http.put(format!("{}/rooms/room-1001/host", server.base))
            .header("x-costream-timestamp", ts.to_string())
            .header("x-costream-signature", signature)
            .body(body)
            .send()
    };
    assert_eq!(put("sha256=00".into()).await.expect("put").status(), 401);
    // Signed for another room: refused (the signature covers method and path).
    let elsewhere = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "PUT",
        "/rooms/room-2002/host",
        body.as_bytes(),
    );
    assert_eq!(put(elsewhere).await.expect("put").status(), 401);
    let signed = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "PUT",
        "/rooms/room-1001/host",
        body.as_bytes(),
    );
    let ok = put(signed).await.expect("put");
    assert_eq!(ok.status(), 200);
    let out: Value = ok.json().await.expect("json");
    assert_eq!(out["host"], "host_u1");
    // The room's decisions, for the backend: signed over GET and the history path.
    let get_history = |signature: String| {
        http.get(format!("{}/rooms/room-1001/history", server.base))
            .header("x-costream-timestamp", ts.to_string())
            .header("x-costream-signature", signature)
            .send()
    };
    assert_eq!(
        get_history("sha256=00".into()).await.expect("get").status(),
        401
    );
    let for_host_route = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "GET",
        "/rooms/room-1001/host",
        b"",
    );
    assert_eq!(
        get_history(for_host_route).await.expect("get").status(),
        401
    );
    let signed = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "GET",
        "/rooms/room-1001/history",
        b"",
    );
    let history: Value = get_history(signed)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let entries = history["entries"].as_array().expect("entries");
    assert!(entries.len() >= 4, "the seed flow's calls: {history}");
    let first = &entries[0];
    assert!(
        first["trigger"]
            .as_str()
            .expect("trigger")
            .contains("publish host_u1 @1704164645")
            && first["command"]
                .as_str()
                .expect("command")
                .starts_with("start room-1001_")
            && first["outcome"] == "ok",
        "{first}"
    );
    // Over 64 KB is refused before parsing.
    let big = http
        .post(format!("{}/artc/s3cret-path", server.base))
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .expect("post");
    assert!(big.status().is_client_error(), "{}", big.status());
}

/// `--store dynamodb --create-table` against the moto server `scripts/test-all.sh` starts.
#[tokio::test]
async fn serve_on_dynamodb_creates_its_table() {
    let endpoint = integration_tests::dynamodb_endpoint();
    let table = format!(
        "costream-serve-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let server = start(
        &["--store", "dynamodb", "--create-table"],
        &[
            ("COSTREAM_TABLE", &table),
            ("AWS_ENDPOINT_URL_DYNAMODB", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let http = reqwest::Client::new();
    let posted = http
        .post(format!("{}/artc/s3cret-path", server.base))
        .body(fixture("01_host_publish.json"))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let status: Value = http
        .get(format!("{}/rooms/room-1001", server.base))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["live"], true, "{status}");
    assert_eq!(tasks(&http, &server.base).await.len(), 1);
}

/// `POST /rooms/{channelId}/tokens`: a join token for the app's clients, signed by the backend;
/// the same algorithm as `costream token` (its vector is checked in the handler's tests).
#[tokio::test]
async fn join_tokens_over_http() {
    let server = start(&[], &[("COSTREAM_ARTC_APP_KEY", "abckey")]);
    let http = reqwest::Client::new();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let post = |body: &'static str, path: &'static str| {
        let signature = costream_app::handlers::Notifier::backend_signature(
            "local-only-backend-secret",
            ts,
            "POST",
            path,
            body.as_bytes(),
        );
        http.post(format!("{}/rooms/room-1001/tokens", server.base))
            .header("x-costream-timestamp", ts.to_string())
            .header("x-costream-signature", signature)
            .body(body)
            .send()
    };
    let body = r#"{"user_id":"guest_u2","ttl_secs":600}"#;
    let ok = post(body, "/rooms/room-1001/tokens").await.expect("post");
    assert_eq!(ok.status(), 200);
    let token: Value = ok.json().await.expect("json");
    let expires = token["timestamp"].as_i64().expect("timestamp");
    assert!((600..=602).contains(&(expires - ts as i64)), "{token}");
    assert_eq!(
        token["token"],
        costream_alibaba::token::artc_token(
            "9qb1abcd",
            "abckey",
            "room-1001",
            "guest_u2",
            "",
            expires
        )
    );
    assert_eq!(
        (
            &token["app_id"],
            &token["channel_id"],
            &token["user_id"],
            &token["nonce"]
        ),
        (
            &json!("9qb1abcd"),
            &json!("room-1001"),
            &json!("guest_u2"),
            &json!("")
        )
    );
    // Signed for another path: 401; an unknown field: 400.
    let replayed = post(body, "/rooms/room-2002/tokens").await.expect("post");
    assert_eq!(replayed.status(), 401);
    let reason: Value = replayed.json().await.expect("json");
    assert!(
        reason["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not match")),
        "{reason}"
    );
    let unknown = post(
        r#"{"user_id":"u1","admin":true}"#,
        "/rooms/room-1001/tokens",
    )
    .await
    .expect("post");
    assert_eq!(unknown.status(), 400);
}

/// `PUT /rooms/{channelId}/settings` on a live two-pane room: exactly one Update (no Stop, no
/// restart) with the room's canvas and layout; bad settings are a 400 naming the field and
/// change nothing; `GET /rooms/{channelId}` shows the settings.
#[tokio::test]
async fn room_settings_apply_to_a_live_room_with_one_update() {
    let server = start(&[], &[]);
    let http = reqwest::Client::new();
    for name in ["01_host_publish.json", "02_guest_publish.json"] {
        let posted = http
            .post(format!("{}/artc/s3cret-path", server.base))
            .body(fixture(name))
            .send()
            .await
            .expect("post");
        assert_eq!(posted.status(), 200);
    }
    let before = tasks(&http, &server.base).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0]["transcode_params"]["EncodeParams"]["VideoWidth"],
        "720"
    );
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let put = |body: &'static str, ts: u64| {
        let signature = costream_app::handlers::Notifier::backend_signature(
            "local-only-backend-secret",
            ts,
            "PUT",
            "/rooms/room-1001/settings",
            body.as_bytes(),
        );
        http.put(format!("{}/rooms/room-1001/settings", server.base))
            .header("x-costream-timestamp", ts.to_string())
            .header("x-costream-signature", signature)
            .body(body)
            .send()
    };

    // Bad settings: 400 naming the field, no call.
    for (body, field) in [
        (r#"{"canvas":"4000x720"}"#, "canvas"),
        (r#"{"max_panes":17}"#, "max_panes"),
        (r#"{"layout":"mosaic"}"#, "layout"),
        (
            r#"{"background_image_url":"http://plain.example.com/bg.png"}"#,
            "background_image_url",
        ),
        (r#"{"colour":"red"}"#, "colour"),
        (r#"{"screen_share":{"user_id":7}}"#, "screen_share"),
        (
            r#"{"extra_outputs":["http://a.example/live/k"]}"#,
            "extra_outputs",
        ),
        (r#"{"hide_camera_off":1}"#, "hide_camera_off"),
    ] {
        let answer = put(body, ts).await.expect("put");
        assert_eq!(answer.status(), 400, "{body}");
        let reason: Value = answer.json().await.expect("json");
        assert!(
            reason["reason"].as_str().expect("reason").contains(field),
            "{reason}"
        );
    }
    assert_eq!(tasks(&http, &server.base).await, before, "nothing changed");
    assert_eq!(
        put(r#"{"layout":"pip"}"#, ts - 400)
            .await
            .expect("put")
            .status(),
        401,
        "stale"
    );

    let ok = put(
        r#"{"layout":"pip","canvas":"1280x720","placeholder_url":null}"#,
        ts,
    )
    .await
    .expect("put");
    assert_eq!(ok.status(), 200);
    let after = tasks(&http, &server.base).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["task_id"], before[0]["task_id"], "the same task");
    assert_eq!(
        after[0]["started_at_ms"], before[0]["started_at_ms"],
        "no restart"
    );
    assert_eq!(
        after[0]["updates"].as_u64().expect("updates"),
        before[0]["updates"].as_u64().expect("updates") + 1,
        "exactly one Update"
    );
    let encode = &after[0]["transcode_params"]["EncodeParams"];
    assert_eq!(
        (&encode["VideoWidth"], &encode["VideoHeight"]),
        (&json!("1280"), &json!("720"))
    );
    let panes = after[0]["transcode_params"]["Layout"]["UserPanes"]
        .as_array()
        .expect("panes");
    // Picture-in-picture: the host full canvas, the guest a small tile above it.
    assert_eq!(
        (&panes[0]["Width"], &panes[0]["Height"]),
        (&json!("1"), &json!("1")),
        "{panes:?}"
    );
    assert!(
        panes[1]["Width"]
            .as_str()
            .expect("w")
            .parse::<f64>()
            .expect("f")
            < 0.5
    );
    let token = costream_app::handlers::viewer::viewer_token(
        "local-only-backend-secret",
        "room-1001",
        ts + 600,
    );
    let status: Value = http
        .get(format!(
            "{}/rooms/room-1001?viewer_token={token}",
            server.base
        ))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status["settings"],
        json!({"layout": "pip", "canvas": "1280x720", "placeholder_url": null}),
        "{status}"
    );
    // The same settings again: nothing to do.
    let again = put(
        r#"{"layout":"pip","canvas":"1280x720","placeholder_url":null}"#,
        ts,
    )
    .await
    .expect("put");
    assert_eq!(again.status(), 200);
    assert_eq!(tasks(&http, &server.base).await, after);
    // Older settings arriving late lose, and the answer says so and shows what is in force.
    let late: Value = put(r#"{"layout":"grid"}"#, ts - 10)
        .await
        .expect("put")
        .json()
        .await
        .expect("json");
    assert_eq!(late["result"], "superseded", "{late}");
    assert_eq!(late["settings"]["layout"], "pip", "{late}");
    assert_eq!(tasks(&http, &server.base).await, after);
}

/// A voice room (`audio_only: true`, set before the room's first callback): the host alone is a
/// MixMode 0 relay of the audio track; with a co-host, a MixMode 1 audio-only mix with no Layout
/// and every speaker's audio in UserInfos — as the simulated Live API, which checks the spec's
/// rules, received them.
#[tokio::test]
async fn a_voice_room_is_audio_only_from_its_first_task() {
    let server = start(&[], &[]);
    let http = reqwest::Client::new();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = r#"{"audio_only":true}"#;
    let signature = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "PUT",
        "/rooms/room-1001/settings",
        body.as_bytes(),
    );
    let set = http
        .put(format!("{}/rooms/room-1001/settings", server.base))
        .header("x-costream-timestamp", ts.to_string())
        .header("x-costream-signature", signature)
        .body(body)
        .send()
        .await
        .expect("put");
    assert_eq!(set.status(), 200);
    assert!(
        tasks(&http, &server.base).await.is_empty(),
        "nobody publishes yet"
    );
    let post = |name: &str| {
        http.post(format!("{}/artc/s3cret-path", server.base))
            .body(fixture(name))
            .send()
    };
    assert_eq!(
        post("01_host_publish.json").await.expect("post").status(),
        200
    );
    let host_alone = tasks(&http, &server.base).await;
    assert_eq!(host_alone.len(), 1);
    assert_eq!(host_alone[0]["mix_mode"], 0);
    assert_eq!(
        host_alone[0]["single_sub_params"],
        json!({"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"})
    );
    assert_eq!(
        post("02_guest_publish.json").await.expect("post").status(),
        200
    );
    let voices = tasks(&http, &server.base).await;
    assert_eq!(voices.len(), 1);
    assert_eq!(voices[0]["mix_mode"], 1);
    assert_eq!(voices[0]["updates"], 1, "one Update, the same task");
    let transcode = &voices[0]["transcode_params"];
    assert!(transcode.get("Layout").is_none(), "{transcode}");
    assert!(transcode.get("Background").is_none(), "{transcode}");
    assert_eq!(
        transcode["EncodeParams"],
        json!({"AudioBitrate": "64", "AudioChannels": "2", "AudioOnly": "true", "AudioSampleRate": "48000"})
    );
    assert_eq!(
        transcode["UserInfos"],
        json!([
            {"SourceType": "camera", "StreamType": "1", "UserId": "host_u1"},
            {"SourceType": "camera", "StreamType": "1", "UserId": "guest_u2"},
        ])
    );
}

/// Strict mode (`COSTREAM_REQUIRE_REGISTERED_HOST=true`): a publisher in a room with no
/// registered host starts nothing (no MPU call); once the backend registers that host, the
/// room goes live.
#[tokio::test]
async fn strict_mode_refuses_an_unregistered_publisher() {
    let server = start(&[], &[("COSTREAM_REQUIRE_REGISTERED_HOST", "true")]);
    let http = reqwest::Client::new();
    let posted = http
        .post(format!("{}/artc/s3cret-path", server.base))
        .body(fixture("01_host_publish.json"))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    assert!(tasks(&http, &server.base).await.is_empty(), "no MPU call");
    let public: Value = http
        .get(format!("{}/rooms/room-1001", server.base))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(public["live"], false, "{public}");

    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let body = r#"{"user_id":"host_u1"}"#;
    let signature = costream_app::handlers::Notifier::backend_signature(
        "local-only-backend-secret",
        ts,
        "PUT",
        "/rooms/room-1001/host",
        body.as_bytes(),
    );
    let registered = http
        .put(format!("{}/rooms/room-1001/host", server.base))
        .header("x-costream-timestamp", ts.to_string())
        .header("x-costream-signature", signature)
        .body(body)
        .send()
        .await
        .expect("put");
    assert_eq!(registered.status(), 200);
    let running = tasks(&http, &server.base).await;
    assert_eq!(
        running.len(),
        1,
        "the registered host broadcasts: {running:?}"
    );
    assert_eq!(running[0]["users"], json!(["host_u1"]));
}
