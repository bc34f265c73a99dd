//! Runs the built `costream` binary against the shared vectors, so the command line a person
//! types is tested end to end (argument parsing, env lookup, output format).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_costream");

fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read vector file");
    serde_json::from_str(&text).expect("parse vector file")
}

/// Runs `costream args…` with `env` set (and the Alibaba variables cleared) and `stdin` piped in.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .env_remove("COSTREAM_PUSH_AUTH_KEY")
        .env_remove("COSTREAM_PLAY_AUTH_KEY")
        .env_remove("COSTREAM_ARTC_APP_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn costream");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("costream finishes")
}

fn json_stdout(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "costream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn sign_reproduces_every_signature_vector() {
    let doc = vectors("signature_v1.json");
    let cases = doc["vectors"].as_array().expect("vectors");
    assert_eq!(cases.len(), 10);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let params = serde_json::to_string(&case["params"]).expect("params");
        let secret = case["access_key_secret"].as_str().expect("secret");
        let method = case["http_method"].as_str().expect("method");
        let out = run(
            &["sign", "--method", method, "--secret-env", "VECTOR_SECRET"],
            &[("VECTOR_SECRET", secret)],
            &params,
        );
        let got = json_stdout(&out);
        for field in ["canonicalized_query_string", "string_to_sign", "signature"] {
            assert_eq!(got[field], case[field], "{name}: {field}");
        }
    }
}

#[test]
fn sign_reads_a_file_and_the_default_secret_variable() {
    let doc = vectors("signature_v1.json");
    let case = &doc["vectors"][1];
    let dir = std::env::temp_dir().join(format!("costream-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("params.json");
    std::fs::write(&file, serde_json::to_string(&case["params"]).expect("json")).expect("write");
    let out = run(
        &[
            "sign",
            "--method",
            "get",
            "--params",
            file.to_str().expect("utf-8 path"),
        ],
        &[(
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            case["access_key_secret"].as_str().expect("secret"),
        )],
        "",
    );
    assert_eq!(json_stdout(&out)["signature"], case["signature"]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn sign_without_the_secret_names_the_variable() {
    let out = run(&["sign", "--method", "POST"], &[], "{}");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        "{stderr}"
    );
    let out = run(
        &["sign", "--method", "POST", "--secret-env", "MY_SECRET"],
        &[],
        "{}",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("MY_SECRET"));
}

#[test]
fn sign_refuses_non_string_values() {
    let out = run(
        &["sign", "--method", "POST"],
        &[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s")],
        r#"{"Action":"StartLiveMPUTask","MixMode":0}"#,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MixMode") && stderr.contains("string"),
        "{stderr}"
    );
}

#[test]
fn url_ingest_and_play_match_the_vectors() {
    let doc = vectors("url_signing_and_tokens.json");
    let signed = |url: &str| -> serde_json::Value {
        doc["url_signing_type_a"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["url"] == url)
            .map(|c| c["signed_url"].clone())
            .expect("vector present")
    };
    let common = [
        "--app-name",
        "live",
        "--stream",
        "room-1001_main",
        "--expires-at",
        "1704164645",
    ];
    let mut ingest = vec!["url", "ingest", "--domain", "push.example.com"];
    ingest.extend(common);
    let out = run(&ingest, &[("COSTREAM_PUSH_AUTH_KEY", "ingestkey")], "");
    assert_eq!(
        json_stdout(&out)["ingest"],
        signed("rtmp://push.example.com/live/room-1001_main")
    );

    let mut play = vec![
        "url",
        "play",
        "--domain",
        "pull.example.com",
        "--key-env",
        "PLAY_KEY",
    ];
    play.extend(common);
    let out = run(&play, &[("PLAY_KEY", "playkey")], "");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let urls = json_stdout(&out);
    assert_eq!(
        urls["flv"],
        signed("https://pull.example.com/live/room-1001_main.flv")
    );
    assert_eq!(
        urls["rtmp"],
        signed("rtmp://pull.example.com/live/room-1001_main")
    );
    assert_eq!(
        urls["hls"],
        signed("https://pull.example.com/live/room-1001_main.m3u8")
    );
    let order: Vec<usize> = ["\"flv\"", "\"rtmp\"", "\"hls\""]
        .iter()
        .map(|k| text.find(k).expect("key printed"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn url_and_token_read_the_deployment_variables_by_default() {
    for (args, var) in [
        (
            vec!["url", "ingest", "--domain", "push.example.com"],
            "COSTREAM_PUSH_AUTH_KEY",
        ),
        (
            vec!["url", "play", "--domain", "play.example.com"],
            "COSTREAM_PLAY_AUTH_KEY",
        ),
    ] {
        let mut args = args;
        args.extend(["--stream", "s"]);
        let out = run(&args, &[], "");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{args:?}: {stderr}");
    }
    let out = run(
        &["token", "--app-id", "a", "--channel", "c", "--user", "u"],
        &[],
        "",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COSTREAM_ARTC_APP_KEY"), "{stderr}");
}

#[test]
fn token_matches_the_documented_example() {
    let doc = vectors("url_signing_and_tokens.json");
    let case = &doc["artc_token"][0];
    let single = &doc["artc_single_parameter_token"][0];
    let expires = case["Timestamp"].to_string();
    let out = run(
        &[
            "token",
            "--app-id",
            case["AppID"].as_str().expect("AppID"),
            "--channel",
            case["ChannelID"].as_str().expect("ChannelID"),
            "--user",
            case["UserID"].as_str().expect("UserID"),
            "--expires-at",
            &expires,
        ],
        &[(
            "COSTREAM_ARTC_APP_KEY",
            case["AppKey"].as_str().expect("AppKey"),
        )],
        "",
    );
    let got = json_stdout(&out);
    assert_eq!(got["token"], case["token_sha256_hex"]);
    assert_eq!(got["timestamp"], case["Timestamp"]);
    assert_eq!(got["single_parameter_token"], single["base64"]);
}

#[test]
fn token_ttl_is_capped_and_ids_are_checked() {
    let env = [("COSTREAM_ARTC_APP_KEY", "k")];
    let base = ["token", "--app-id", "a", "--channel", "c"];
    let mut too_long = base.to_vec();
    too_long.extend(["--user", "u", "--ttl", "90000"]);
    assert!(!run(&too_long, &env, "").status.success());
    let mut bad_user = base.to_vec();
    bad_user.extend(["--user", "not ok"]);
    let out = run(&bad_user, &env, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user"));
    let mut fine = base.to_vec();
    fine.extend(["--user", "u_1"]);
    let got = json_stdout(&run(&fine, &env, ""));
    assert_eq!(got["nonce"], "");
    assert_eq!(got["token"].as_str().map(str::len), Some(64));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["sign", "--help"],
        vec!["url", "--help"],
        vec!["url", "ingest", "--help"],
        vec!["url", "play", "--help"],
        vec!["token", "--help"],
    ] {
        let out = run(&args, &[], "");
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// `costream viewer-token`: `<exp>.<sig>` with sig = hex(hmac_sha256(secret, "view." + channel +
/// "." + exp)), exp about --ttl from now; bad input says what is wrong.
#[test]
fn viewer_token_is_the_documented_hmac() {
    let out = run(
        &["viewer-token", "room-7", "--ttl", "120"],
        &[("COSTREAM_NOTIFY_SECRET", "view-secret")],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf8");
    let (exp, sig) = token.trim().split_once('.').expect("exp.sig");
    let exp: u64 = exp.parse().expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!((now + 100..=now + 140).contains(&exp), "{exp} vs {now}");
    // The algorithm's vector is checked in costream-app (viewer.rs); here, that the command
    // uses it with the named secret.
    assert_eq!(
        sig,
        costream_app::handlers::viewer::viewer_signature("view-secret", "room-7", exp)
    );

    let bad = run(
        &["viewer-token", "bad room", "--ttl", "60"],
        &[("COSTREAM_NOTIFY_SECRET", "s")],
        "",
    );
    assert!(!bad.status.success());
    let too_long = run(
        &["viewer-token", "room-7", "--ttl", "90000"],
        &[("COSTREAM_NOTIFY_SECRET", "s")],
        "",
    );
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("--ttl"));
    let no_secret = run(&["viewer-token", "room-7"], &[], "");
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("COSTREAM_NOTIFY_SECRET"));
}

/// `serve --mpu alibaba` never runs on the (public) local default secrets.
#[test]
fn serve_with_the_real_live_api_refuses_local_default_secrets() {
    let out = run(
        &["serve", "--mpu", "alibaba", "--listen", "127.0.0.1:0"],
        &[("COSTREAM_PUSH_AUTH_KEY", "a-real-key")],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("COSTREAM_PLAY_AUTH_KEY")
            && err.contains("COSTREAM_ARTC_CALLBACK_SECRET")
            && err.contains("COSTREAM_NOTIFY_SECRET")
            && !err.contains("COSTREAM_PUSH_AUTH_KEY,"),
        "{err}"
    );
}
