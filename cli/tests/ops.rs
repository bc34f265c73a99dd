//! The operations commands (`subscribe`, `cdn-notify`, `tasks`, `stop`) run as the built binary
//! against the simulated Live API over HTTP on 127.0.0.1 (`ALIBABA_CLOUD_LIVE_ENDPOINT`).
//!
//! The simulator's gateway verifies every signature, timestamp and nonce like Alibaba's, so a
//! call it answers was signed correctly. A middleware in front of it records each request's
//! method and full parameter map (query and form body), which the tests compare with the
//! official SDK captures in `mpu_requests.json`, re-check the signature of, and search for
//! secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use costream_alibaba::request::{Mix, SingleSubParams, StartLiveMpuTask, StreamOutput};
use costream_alibaba::sign::{percent_encode, sign, Method};
use costream_alibaba::Credentials;
use costream_sim::SimulatedLive;
use secrecy::SecretString;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_costream");
/// The capture's fixed credentials (`mpu_requests.json` → `fixed`).
const AK_ID: &str = "testid";
const AK_SECRET: &str = "testsecret";
const APP: &str = "9qb1abcd";
const TASK: &str = "room-1001_main";
const STREAM_URL: &str = "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-0a68c57090ccc68fbfc28da544fedfc3";
const NOTIFY_KEY: &str = "NotifyKey0123456789abc";
/// Parameters that differ on every attempt.
const VOLATILE: [&str; 3] = ["Signature", "SignatureNonce", "Timestamp"];

fn captures() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors/mpu_requests.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read mpu_requests.json"))
        .expect("parse mpu_requests.json")
}

/// The capture's parameters without the volatile ones, and its HTTP method.
fn capture(group: &str, name: &str) -> (BTreeMap<String, String>, String) {
    let doc = captures();
    let case = &doc[group][name];
    let mut params: BTreeMap<String, String> =
        serde_json::from_value(case["query_params"].clone()).expect("query_params");
    for name in VOLATILE {
        params.remove(name);
    }
    let method = case["http_method"]
        .as_str()
        .expect("http_method")
        .to_owned();
    (params, method)
}

/// One request as it reached the server.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    params: BTreeMap<String, String>,
}

impl Received {
    fn without_volatile(&self) -> BTreeMap<String, String> {
        let mut params = self.params.clone();
        for name in VOLATILE {
            params.remove(name);
        }
        params
    }

    /// Re-signs the parameters with the test secret and the request's own method.
    fn assert_signature_verifies(&self) {
        let mut unsigned = self.params.clone();
        let received = unsigned.remove("Signature").expect("a Signature parameter");
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            other => panic!("unexpected method {other}"),
        };
        assert_eq!(sign(method, &unsigned, AK_SECRET).signature, received);
        assert_eq!(self.params["SignatureMethod"], "HMAC-SHA1");
        assert_eq!(self.params["SignatureNonce"].len(), 32);
    }
}

/// The simulated Live API on 127.0.0.1:<free port>, with a recorder in front of it.
struct FakeLive {
    endpoint: String,
    sim: Arc<SimulatedLive>,
    received: Arc<Mutex<Vec<Received>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeLive {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = Arc::new(SimulatedLive::default());
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorder = received.clone();
        let credentials = Credentials::new(AK_ID, SecretString::from(AK_SECRET));
        let router = costream_sim::http::router(sim.clone(), credentials).layer(
            axum::middleware::from_fn(move |request: Request, next: Next| {
                let recorder = recorder.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 1 << 20)
                        .await
                        .expect("read the request body");
                    let mut params = BTreeMap::new();
                    let query = parts.uri.query().unwrap_or("").as_bytes().to_vec();
                    for (k, v) in url::form_urlencoded::parse(&query)
                        .chain(url::form_urlencoded::parse(&bytes))
                    {
                        assert!(
                            params.insert(k.into_owned(), v.into_owned()).is_none(),
                            "a parameter sent twice"
                        );
                    }
                    if parts.uri.path() == "/" {
                        recorder.lock().expect("recorder").push(Received {
                            method: parts.method.to_string(),
                            params,
                        });
                    }
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
            }),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        runtime.spawn(costream_sim::http::serve(listener, router));
        FakeLive {
            endpoint: format!("http://{addr}/"),
            sim,
            received,
            _runtime: runtime,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("recorder").clone()
    }

    /// The one request the last command sent (and clears the record).
    fn take_one(&self) -> Received {
        let mut all = self.received.lock().expect("recorder");
        assert_eq!(all.len(), 1, "expected exactly one request: {all:?}");
        all.remove(0)
    }

    /// `costream args…` with the capture's credentials, this server as endpoint, and `env`.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full = vec![
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
            ("ALIBABA_CLOUD_LIVE_ENDPOINT", self.endpoint.as_str()),
        ];
        full.extend_from_slice(env);
        run(args, &full)
    }

    fn start_task(&self) {
        let request = StartLiveMpuTask {
            app_id: APP.into(),
            channel_id: "room-1001".into(),
            task_id: TASK.into(),
            mix: Mix::Single(SingleSubParams::camera("host_u1")),
            output: StreamOutput::Url(STREAM_URL.into()),
            max_idle_time: None,
            region: None,
            sei: None,
        };
        self.sim
            .answer(&request.into())
            .expect("the simulator starts the task");
    }
}

/// Runs `costream` with only `env` from the costream/Alibaba variables.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIBABA_") || name.starts_with("COSTREAM_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run costream")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_stdout(out: &Output) -> Value {
    assert!(out.status.success(), "costream failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "costream succeeded: {}", stdout(out));
    stderr(out)
}

/// The parameters every request carries besides its action's.
fn common() -> BTreeMap<String, String> {
    [
        ("AccessKeyId", AK_ID),
        ("Format", "json"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("Version", "2016-11-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn with_common(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut params = common();
    params.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    params
}

#[test]
fn subscribe_sends_the_sdk_capture_for_channel_users_in_both_list_spellings() {
    let live = FakeLive::start();
    let (expected, method) = capture("other_operations", "create_event_sub_channel_users");
    let base = [
        "subscribe",
        "--app-id",
        APP,
        "--callback-url",
        "https://api.example.com/artc/events",
        "--channel",
        "room-1001",
    ];
    let spellings: [&[&str]; 2] = [
        &["--users", "host_u1,guest_u2"],
        &[
            "--users",
            "host_u1",
            "--users",
            "guest_u2",
            "--events",
            "ChannelEvent,UserEvent",
        ],
    ];
    for (i, users) in spellings.into_iter().enumerate() {
        let mut args = base.to_vec();
        args.extend_from_slice(users);
        let out = live.run(&args, &[]);
        assert_eq!(
            json_stdout(&out),
            json!({ "subscribe_id": format!("sim-sub-{}", i + 1) })
        );
        let got = live.take_one();
        assert_eq!(got.method, method);
        assert_eq!(got.without_volatile(), expected);
        got.assert_signature_verifies();
    }
    assert_eq!(live.sim.subscriptions().len(), 2);
}

#[test]
fn subscribe_all_channels_takes_the_app_id_from_the_environment() {
    let live = FakeLive::start();
    let (expected, method) = capture("other_operations", "create_event_sub_all_channels");
    let out = live.run(
        &[
            "subscribe",
            "--callback-url",
            "https://api.example.com/artc/events",
        ],
        &[("COSTREAM_APP_ID", APP)],
    );
    assert_eq!(json_stdout(&out), json!({ "subscribe_id": "sim-sub-1" }));
    let got = live.take_one();
    assert_eq!(
        (got.method.as_str(), got.without_volatile()),
        (method.as_str(), expected)
    );
    got.assert_signature_verifies();

    // Alibaba allows one all-channel subscription per AppId: the second is its error.
    let out = live.run(
        &[
            "subscribe",
            "--callback-url",
            "https://api.example.com/artc/other",
        ],
        &[("COSTREAM_APP_ID", APP)],
    );
    let err = failed(&out);
    assert!(
        err.contains("CreateEventSub") && err.contains("InvalidParam"),
        "{err}"
    );
}

#[test]
fn subscribe_list_is_a_signed_get_and_masks_callback_urls() {
    let live = FakeLive::start();
    let secret_path = "s3cr3tCallbackPath42";
    let url = format!("https://cb.example.com/artc/{secret_path}");
    json_stdout(&live.run(&["subscribe", "--app-id", APP, "--callback-url", &url], &[]));
    live.received.lock().expect("recorder").clear();

    let (expected, method) = capture("other_operations", "list_event_sub");
    let out = live.run(&["subscribe", "list", "--app-id", APP], &[]);
    let listed = json_stdout(&out);
    let got = live.take_one();
    assert_eq!(method, "GET");
    assert_eq!(
        (got.method.as_str(), got.without_volatile()),
        (method.as_str(), expected)
    );
    got.assert_signature_verifies();

    let subscribers = listed["subscribers"].as_array().expect("subscribers");
    assert_eq!(subscribers.len(), 1);
    assert_eq!(subscribers[0]["SubId"], "sim-sub-1");
    assert_eq!(subscribers[0]["ChannelId"], "*");
    assert_eq!(
        subscribers[0]["Events"],
        json!(["ChannelEvent", "UserEvent"])
    );
    assert_eq!(
        subscribers[0]["CallbackUrl"],
        "https://cb.example.com/artc/***"
    );
    assert!(!stdout(&out).contains(secret_path));

    // --app-id before the subcommand works too.
    json_stdout(&live.run(&["subscribe", "--app-id", APP, "list"], &[]));
}

#[test]
fn subscribe_delete_sends_the_sdk_capture_and_reports_unknown_ids() {
    let live = FakeLive::start();
    let (expected, method) = capture("other_operations", "delete_event_sub");
    let out = live.run(&["subscribe", "delete", "sub-123", "--app-id", APP], &[]);
    let err = failed(&out);
    assert!(
        err.contains("DeleteEventSub") && err.contains("does not exist"),
        "{err}"
    );
    let got = live.take_one();
    assert_eq!(
        (got.method.as_str(), got.without_volatile()),
        (method.as_str(), expected)
    );
    got.assert_signature_verifies();

    json_stdout(&live.run(
        &[
            "subscribe",
            "--app-id",
            APP,
            "--callback-url",
            "https://api.example.com/a",
        ],
        &[],
    ));
    let out = live.run(&["subscribe", "delete", "sim-sub-1", "--app-id", APP], &[]);
    assert_eq!(json_stdout(&out), json!({ "deleted": "sim-sub-1" }));
    assert!(live.sim.subscriptions().is_empty());
}

#[test]
fn subscribe_checks_alibabas_rules_before_sending() {
    let live = FakeLive::start();
    let sub = |extra: &[&str]| {
        let mut args = vec![
            "subscribe",
            "--app-id",
            APP,
            "--callback-url",
            "https://api.example.com/a",
        ];
        args.extend_from_slice(extra);
        failed(&live.run(&args, &[]))
    };
    assert!(sub(&["--users", "u1"]).contains("--users needs --channel"));
    assert!(sub(&["--channel", "*", "--users", "u1"]).contains("--users needs --channel"));
    let users: Vec<String> = (0..31).map(|i| format!("u{i}")).collect();
    let too_many = users.join(",");
    assert!(sub(&["--channel", "c", "--users", &too_many]).contains("at most 30"));
    assert!(sub(&["--channel", "c", "--users", "u1,u1"]).contains("twice"));
    assert!(sub(&["--events", "UserEvent,UserEvent"]).contains("twice"));
    assert!(sub(&["--channel", "bad channel"]).contains("--channel"));
    assert!(failed(&live.run(
        &["subscribe", "--app-id", APP, "--callback-url", "ftp://x/y"],
        &[]
    ))
    .contains("--callback-url"));
    assert!(failed(&live.run(&["subscribe", "--events", "RoomEvent"], &[])).contains("RoomEvent"));
    let err = failed(&live.run(
        &["subscribe", "list", "--app-id", APP, "--channel", "c"],
        &[],
    ));
    assert!(err.contains("--channel"), "{err}");
    // 30 users are fine.
    let thirty = users[..30].join(",");
    json_stdout(&live.run(
        &[
            "subscribe",
            "--app-id",
            APP,
            "--callback-url",
            "https://api.example.com/a",
            "--channel",
            "c",
            "--users",
            &thirty,
        ],
        &[],
    ));
    let got = live.take_one();
    assert_eq!(got.params["Users.30"], "u29");
    assert!(!got.params.contains_key("Users.31"));
}

#[test]
fn cdn_notify_registers_a_signed_callback_with_the_key_from_the_environment() {
    let live = FakeLive::start();
    let url = "https://api.example.com/cdn/ingest";
    let out = live.run(
        &[
            "cdn-notify",
            "--domain",
            "push.example.com",
            "--url",
            url,
            "--auth-key-env",
            "MY_NOTIFY_KEY",
        ],
        &[("MY_NOTIFY_KEY", NOTIFY_KEY)],
    );
    assert_eq!(
        json_stdout(&out),
        json!({ "domain": "push.example.com", "notify_url": url, "notify_req_auth": "yes" })
    );
    assert!(!stdout(&out).contains(NOTIFY_KEY) && !stderr(&out).contains(NOTIFY_KEY));
    let got = live.take_one();
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.without_volatile(),
        with_common(&[
            ("Action", "SetLiveStreamsNotifyUrlConfig"),
            ("DomainName", "push.example.com"),
            ("NotifyUrl", url),
            ("NotifyReqAuth", "yes"),
            ("NotifyAuthKey", NOTIFY_KEY),
        ])
    );
    got.assert_signature_verifies();
    let configs = live.sim.notify_configs();
    assert_eq!((configs.len(), configs[0].notify_req_auth), (1, true));

    // The deployment's variable is the default; --no-auth sends no key and says no.
    let out = live.run(
        &["cdn-notify", "--domain", "push.example.com", "--url", url],
        &[("COSTREAM_CDN_NOTIFY_AUTH_KEY", NOTIFY_KEY)],
    );
    json_stdout(&out);
    assert_eq!(live.take_one().params["NotifyAuthKey"], NOTIFY_KEY);
    let out = live.run(
        &[
            "cdn-notify",
            "--domain",
            "push.example.com",
            "--url",
            url,
            "--no-auth",
        ],
        &[],
    );
    assert_eq!(json_stdout(&out)["notify_req_auth"], "no");
    let got = live.take_one();
    assert_eq!(
        got.without_volatile(),
        with_common(&[
            ("Action", "SetLiveStreamsNotifyUrlConfig"),
            ("DomainName", "push.example.com"),
            ("NotifyUrl", url),
            ("NotifyReqAuth", "no"),
        ])
    );
    got.assert_signature_verifies();
    assert!(!live.sim.notify_configs()[0].notify_req_auth);
}

#[test]
fn cdn_notify_names_a_missing_or_bad_key_variable_without_showing_the_key() {
    let live = FakeLive::start();
    let args = [
        "cdn-notify",
        "--domain",
        "push.example.com",
        "--url",
        "https://api.example.com/cdn/ingest",
        "--auth-key-env",
        "MY_NOTIFY_KEY",
    ];
    let err = failed(&live.run(&args, &[]));
    assert!(
        err.contains("MY_NOTIFY_KEY") && err.contains("not set"),
        "{err}"
    );
    for bad in ["tooShort123", "has-a-dash-0123456789", &"k".repeat(65)] {
        let err = failed(&live.run(&args, &[("MY_NOTIFY_KEY", bad)]));
        assert!(err.contains("MY_NOTIFY_KEY"), "{err}");
        assert!(!err.contains(bad), "{err}");
    }
    let err = failed(&live.run(&args[..5], &[]));
    assert!(err.contains("COSTREAM_CDN_NOTIFY_AUTH_KEY"), "{err}");
    let err = failed(&live.run(
        &[
            "cdn-notify",
            "--domain",
            "rtmp://push.example.com",
            "--url",
            "https://a/b",
            "--no-auth",
        ],
        &[],
    ));
    assert!(err.contains("--domain"), "{err}");
    assert!(live.received().is_empty(), "nothing is sent for bad input");
}

#[test]
fn tasks_by_id_sends_the_sdk_capture_and_masks_the_auth_key() {
    let live = FakeLive::start();
    live.start_task();
    let (expected, method) = capture("other_operations", "list_rtc_mputask_detail_by_taskid");
    let out = live.run(&["tasks", "--task-id", TASK, "--app-id", APP], &[]);
    let listed = json_stdout(&out);
    let got = live.take_one();
    assert_eq!(
        (got.method.as_str(), got.without_volatile()),
        (method.as_str(), expected)
    );
    got.assert_signature_verifies();

    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["TaskId"], TASK);
    assert_eq!(tasks[0]["ChannelId"], "room-1001");
    assert_eq!(tasks[0]["MixMode"], "0");
    assert_eq!(tasks[0]["SingleSubParams"]["UserId"], "host_u1");
    assert_eq!(
        tasks[0]["StreamURL"],
        "rtmp://push.example.com/live/room-1001_main?auth_key=1704164645-0-0-***"
    );
    assert!(!stdout(&out).contains("0a68c57090ccc68fbfc28da544fedfc3"));
}

#[test]
fn tasks_pages_by_default() {
    let live = FakeLive::start();
    let out = live.run(&["tasks"], &[("COSTREAM_APP_ID", APP)]);
    assert_eq!(json_stdout(&out), json!({ "tasks": [] }));
    let got = live.take_one();
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.without_volatile(),
        with_common(&[
            ("Action", "ListRtcMPUTaskDetail"),
            ("AppId", APP),
            ("PageNo", "1"),
            ("PageSize", "100"),
        ])
    );
    got.assert_signature_verifies();

    live.start_task();
    let out = live.run(
        &["tasks", "--app-id", APP, "--page", "1", "--page-size", "1"],
        &[],
    );
    assert_eq!(json_stdout(&out)["tasks"][0]["TaskId"], TASK);
    assert!(stderr(&out).contains("--page 2"), "{}", stderr(&out));
    assert_eq!(live.take_one().params["PageSize"], "1");

    for bad in [
        &["--page-size", "101"][..],
        &["--page", "0"],
        &["--task-id", "a b"],
    ] {
        let mut args = vec!["tasks", "--app-id", APP];
        args.extend_from_slice(bad);
        failed(&live.run(&args, &[]));
    }
    assert!(
        failed(&live.run(&["tasks", "--task-id", TASK, "--page", "2"], &[])).contains("--page")
    );
    assert!(live.received().is_empty());
}

#[test]
fn stop_sends_the_sdk_capture_and_an_already_stopped_task_is_success() {
    let live = FakeLive::start();
    live.start_task();
    let (expected, method) = capture("flow", "d_stop");
    let out = live.run(&["stop", TASK, "--app-id", APP], &[]);
    assert_eq!(
        json_stdout(&out),
        json!({ "task_id": TASK, "result": "stopped" })
    );
    let got = live.take_one();
    assert_eq!(
        (got.method.as_str(), got.without_volatile()),
        (method.as_str(), expected)
    );
    got.assert_signature_verifies();
    assert!(live.sim.tasks().is_empty());

    let out = live.run(&["stop", TASK, "--app-id", APP], &[]);
    assert_eq!(
        json_stdout(&out),
        json!({ "task_id": TASK, "result": "already_stopped" })
    );
    assert!(stderr(&out).contains("already stopped"), "{}", stderr(&out));
}

#[test]
fn missing_settings_are_named() {
    let live = FakeLive::start();
    let err = failed(&live.run(&["tasks"], &[]));
    assert!(
        err.contains("COSTREAM_APP_ID") && err.contains("--app-id"),
        "{err}"
    );
    let err = failed(&run(&["stop", TASK, "--app-id", APP], &[]));
    assert!(err.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"), "{err}");
    let err = failed(&run(
        &["stop", TASK, "--app-id", APP],
        &[("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID)],
    ));
    assert!(err.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "{err}");
    let err = failed(&run(
        &["stop", TASK, "--app-id", APP],
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", AK_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
            ("ALIBABA_CLOUD_LIVE_ENDPOINT", "not a url"),
        ],
    ));
    assert!(err.contains("ALIBABA_CLOUD_LIVE_ENDPOINT"), "{err}");
    assert!(live.received().is_empty());
}

/// A rejected signature makes the gateway quote its StringToSign, which holds the STS token and
/// the notify key (percent-encoded twice) — and the CLI prints the error. None of the secrets
/// may reach the terminal.
#[test]
fn no_secret_reaches_stdout_or_stderr_when_a_call_fails() {
    let live = FakeLive::start();
    let token = "CAIS+sts/Token==Value";
    let wrong_secret = "wrongAccessKeySecret";
    let env = [
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", wrong_secret),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", token),
        ("COSTREAM_CDN_NOTIFY_AUTH_KEY", NOTIFY_KEY),
    ];
    let secret_path = "callbackSecretPath77";
    let callback = format!("https://cb.example.com/artc/{secret_path}");
    let outs = [
        live.run(
            &[
                "cdn-notify",
                "--domain",
                "push.example.com",
                "--url",
                "https://a.example.com/n",
            ],
            &env,
        ),
        live.run(
            &["subscribe", "--app-id", APP, "--callback-url", &callback],
            &env,
        ),
    ];
    let once = percent_encode(token);
    let twice = percent_encode(&once);
    for out in &outs {
        let err = failed(out);
        assert!(err.contains("SignatureDoesNotMatch"), "{err}");
        // The echo of the string-to-sign (it holds the token and the key) is cut off.
        assert!(
            err.contains("string to sign [redacted]"),
            "the message did quote secrets: {err}"
        );
        let printed = format!("{}{err}", stdout(out));
        for secret in [
            NOTIFY_KEY,
            token,
            once.as_str(),
            twice.as_str(),
            wrong_secret,
            AK_SECRET,
            secret_path,
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
    }
    // The server did receive the secrets: the gateway quoted them back.
    let received = live.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].params["NotifyAuthKey"], NOTIFY_KEY);
    assert_eq!(received[0].params["SecurityToken"], token);
}

#[test]
fn every_operations_command_has_help_without_secret_values() {
    let env = [
        ("COSTREAM_CDN_NOTIFY_AUTH_KEY", NOTIFY_KEY),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET),
        ("COSTREAM_PUSH_AUTH_KEY", "pushKeyValue123"),
    ];
    for args in [
        vec!["subscribe", "--help"],
        vec!["subscribe", "list", "--help"],
        vec!["subscribe", "delete", "--help"],
        vec!["cdn-notify", "--help"],
        vec!["tasks", "--help"],
        vec!["stop", "--help"],
        vec!["url", "ingest", "--help"],
        vec!["--help"],
    ] {
        let out = run(&args, &env);
        let text = stdout(&out);
        assert!(out.status.success(), "{args:?}");
        assert!(text.contains("Usage"), "{args:?}");
        for secret in [NOTIFY_KEY, AK_SECRET, "pushKeyValue123"] {
            assert!(!text.contains(secret), "{args:?} shows {secret}");
        }
    }
    let help = stdout(&run(&["cdn-notify", "--help"], &[]));
    assert!(help.contains("COSTREAM_CDN_NOTIFY_AUTH_KEY") && help.contains("--no-auth"));
    let help = stdout(&run(&["subscribe", "--help"], &[]));
    assert!(help.contains("COSTREAM_APP_ID") && help.contains("subscribe list"));
}

/// The callback URL holds a secret: from a variable it creates the subscription without a
/// warning; on the command line it works but warns about `ps` and shell history.
#[test]
fn subscribe_takes_the_callback_url_from_a_variable() {
    let live = FakeLive::start();
    let url = "https://cb.example.com/artc/envSecretPath9";
    let from_env = live.run(
        &[
            "subscribe",
            "--app-id",
            APP,
            "--callback-url-env",
            "MY_CALLBACK",
        ],
        &[("MY_CALLBACK", url)],
    );
    let created = json_stdout(&from_env);
    assert!(created["subscribe_id"].is_string(), "{created}");
    assert!(!String::from_utf8_lossy(&from_env.stderr).contains("warning"));
    let sent = live.received.lock().expect("recorder").clone();
    assert!(
        sent.iter()
            .any(|r| r.params.get("CallbackUrl").map(String::as_str) == Some(url)),
        "the URL from the variable was sent"
    );
    let on_line = live.run(&["subscribe", "--app-id", APP, "--callback-url", url], &[]);
    assert!(String::from_utf8_lossy(&on_line.stderr).contains("--callback-url-env"));
    let missing = live.run(
        &[
            "subscribe",
            "--app-id",
            APP,
            "--callback-url-env",
            "UNSET_VAR_X",
        ],
        &[],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("UNSET_VAR_X"));
}
