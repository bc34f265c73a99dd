//! The gateway's authentication, driven with requests signed by the client's own `sign_request`
//! and placed on the wire as `LiveClient` (form body) and the Tea SDK (query) place them. The
//! real HTTP round trip is in `tests/it/sim_http.rs`.

use secrecy::SecretString;
use time::OffsetDateTime;

use super::*;
use crate::STREAM_URL_HOLD_MS;
use costream_alibaba::request::{
    sign_request, CommonParams, ListEventSub, LiveRequest, Mix, SignedRequest, SingleSubParams,
    StartLiveMpuTask, StopLiveMpuTask, StreamOutput,
};
use costream_alibaba::ManualClock;

const ID: &str = "testid";
const SECRET: &str = "testsecret";
const T0_SECS: i64 = 1_704_164_645;

fn gateway_with(credentials: Credentials) -> (Arc<ManualClock>, Gateway) {
    let clock = Arc::new(ManualClock::at_ms(1000 * T0_SECS as u64));
    let gateway = Gateway {
        sim: Arc::new(SimulatedLive::new(clock.clone())),
        credentials,
        nonces: Mutex::new(HashMap::new()),
    };
    (clock, gateway)
}

fn gateway() -> (Arc<ManualClock>, Gateway) {
    gateway_with(Credentials::new(ID, SecretString::from(SECRET)))
}

fn start() -> LiveRequest {
    StartLiveMpuTask {
        app_id: "9qb1abcd".into(),
        channel_id: "room-1001".into(),
        task_id: "room-1001_main".into(),
        mix: Mix::Single(SingleSubParams::camera("host_u1")),
        output: StreamOutput::Url("rtmp://push.example.com/live/room-1001_main".into()),
        max_idle_time: None,
        region: None,
        sei: None,
    }
    .into()
}

fn stop() -> LiveRequest {
    StopLiveMpuTask {
        app_id: "9qb1abcd".into(),
        task_id: "room-1001_main".into(),
    }
    .into()
}

struct Signing<'a> {
    id: &'a str,
    secret: &'a str,
    nonce: &'a str,
    at_secs: i64,
    token: Option<&'a str>,
}

impl Default for Signing<'_> {
    fn default() -> Self {
        Signing {
            id: ID,
            secret: SECRET,
            nonce: "nonce-1",
            at_secs: T0_SECS,
            token: None,
        }
    }
}

fn signed(request: &LiveRequest, s: Signing<'_>) -> SignedRequest {
    let common = CommonParams {
        access_key_id: s.id,
        timestamp: OffsetDateTime::from_unix_timestamp(s.at_secs).expect("time"),
        signature_nonce: s.nonce,
        security_token: s.token,
        format: "JSON",
    };
    sign_request(request, &common, s.secret).expect("sign")
}

/// Sends it as `LiveClient` does: form body for POST, query for GET.
fn send(gateway: &Gateway, request: &SignedRequest) -> SimResponse {
    let encoded = request.encoded_params();
    match request.method {
        Method::Post => gateway.receive(Method::Post, "", encoded.as_bytes()),
        Method::Get => gateway.receive(Method::Get, &encoded, &[]),
    }
}

fn code(answer: &SimResponse) -> &str {
    answer.body["Code"].as_str().unwrap_or("OK")
}

#[test]
fn a_correctly_signed_request_reaches_the_core_in_either_placement() {
    let (clock, gw) = gateway();
    let answer = send(&gw, &signed(&start(), Signing::default()));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(gw.sim.task("9qb1abcd", "room-1001_main").is_some());

    // The Tea SDK's layout: everything in the query of a POST, empty body.
    let stop = signed(
        &stop(),
        Signing {
            nonce: "nonce-2",
            ..Signing::default()
        },
    );
    let answer = gw.receive(Method::Post, &stop.encoded_params(), &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(gw.sim.tasks().is_empty());

    // Split between query and body: the signature covers the union.
    clock.advance_ms(STREAM_URL_HOLD_MS);
    let again = signed(
        &start(),
        Signing {
            nonce: "nonce-3",
            ..Signing::default()
        },
    );
    let (query, body): (Vec<_>, Vec<_>) = again
        .params
        .iter()
        .partition(|(k, _)| k.starts_with('S') || k.starts_with('A'));
    let encode = |pairs: Vec<(&String, &String)>| {
        pairs
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    costream_alibaba::sign::percent_encode(k),
                    costream_alibaba::sign::percent_encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let answer = gw.receive(Method::Post, &encode(query), encode(body).as_bytes());
    assert_eq!(answer.status, 200, "{}", answer.body);

    // ListEventSub is a GET, and signed as one.
    let list = signed(
        &ListEventSub {
            app_id: "9qb1abcd".into(),
        }
        .into(),
        Signing {
            nonce: "nonce-4",
            ..Signing::default()
        },
    );
    assert_eq!(list.method, Method::Get);
    let answer = send(&gw, &list);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["Subscribers"], serde_json::json!([]));
    assert!(gw
        .sim
        .calls()
        .iter()
        .all(|c| c.transport == Transport::Http && c.code == "OK"));
}

#[test]
fn a_wrong_secret_is_signature_does_not_match_and_changes_nothing() {
    let (_, gw) = gateway();
    let answer = send(
        &gw,
        &signed(
            &start(),
            Signing {
                secret: "not-the-secret",
                ..Signing::default()
            },
        ),
    );
    assert_eq!(answer.status, 400);
    assert_eq!(code(&answer), "SignatureDoesNotMatch");
    let message = answer.body["Message"].as_str().expect("message");
    assert!(
        message.contains(
            "server string to sign is:POST&%2F&AccessKeyId%3Dtestid%26Action%3DStartLiveMPUTask"
        ),
        "{message}"
    );
    assert!(gw.sim.tasks().is_empty());
    let calls = gw.sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].code, "SignatureDoesNotMatch");
    assert_eq!(calls[0].action, "StartLiveMPUTask");

    // The method is part of the signature: signed for GET, sent as POST.
    let mut get_signed = signed(
        &stop(),
        Signing {
            nonce: "nonce-2",
            ..Signing::default()
        },
    );
    get_signed.method = Method::Get;
    let resigned = sign(
        Method::Get,
        &{
            let mut p = get_signed.params.clone();
            p.remove("Signature");
            p
        },
        SECRET,
    );
    get_signed
        .params
        .insert("Signature".into(), resigned.signature.clone());
    get_signed.signed = resigned;
    let answer = gw.receive(Method::Post, "", get_signed.encoded_params().as_bytes());
    assert_eq!(code(&answer), "SignatureDoesNotMatch");

    // A tampered parameter breaks the signature too.
    let tampered = signed(
        &stop(),
        Signing {
            nonce: "nonce-3",
            ..Signing::default()
        },
    )
    .encoded_params()
    .replace("room-1001_main", "room-1002_main");
    assert_eq!(
        code(&gw.receive(Method::Post, "", tampered.as_bytes())),
        "SignatureDoesNotMatch"
    );
}

#[test]
fn an_unknown_access_key_is_not_found() {
    let (_, gw) = gateway();
    let answer = send(
        &gw,
        &signed(
            &start(),
            Signing {
                id: "someone-else",
                ..Signing::default()
            },
        ),
    );
    assert_eq!(answer.status, 404);
    assert_eq!(code(&answer), "InvalidAccessKeyId.NotFound");
}

#[test]
fn a_nonce_is_accepted_once() {
    let (clock, gw) = gateway();
    let first = signed(&stop(), Signing::default());
    assert_eq!(code(&send(&gw, &first)), "InvalidParam", "reached the core");
    let answer = send(&gw, &first);
    assert_eq!(code(&answer), "SignatureNonceUsed");
    // Same nonce, a later timestamp: still used.
    clock.advance_ms(60_000);
    let later = signed(
        &stop(),
        Signing {
            at_secs: T0_SECS + 60,
            ..Signing::default()
        },
    );
    assert_eq!(code(&send(&gw, &later)), "SignatureNonceUsed");
    // A nonce burnt by a forged request? No: forged requests never reach the nonce check.
    let forged = signed(
        &stop(),
        Signing {
            nonce: "nonce-x",
            secret: "forged",
            at_secs: T0_SECS + 60,
            ..Signing::default()
        },
    );
    assert_eq!(code(&send(&gw, &forged)), "SignatureDoesNotMatch");
    let genuine = signed(
        &stop(),
        Signing {
            nonce: "nonce-x",
            at_secs: T0_SECS + 60,
            ..Signing::default()
        },
    );
    assert_eq!(code(&send(&gw, &genuine)), "InvalidParam");
}

#[test]
fn a_doubled_or_missing_common_parameter_is_refused() {
    let (_, gw) = gateway();
    let request = signed(&stop(), Signing::default());
    let doubled = format!("{}&SignatureNonce=nonce-1", request.encoded_params());
    assert_eq!(
        code(&gw.receive(Method::Post, "", doubled.as_bytes())),
        "SignatureNonceUsed"
    );
    let in_both = request.encoded_params();
    assert_eq!(
        code(&gw.receive(Method::Post, "AppId=9qb1abcd", in_both.as_bytes())),
        "InvalidParam"
    );
    for name in [
        "SignatureNonce",
        "Timestamp",
        "AccessKeyId",
        "Signature",
        "Version",
    ] {
        let mut params = request.params.clone();
        params.remove(name);
        let body = costream_alibaba::sign::canonicalize(&params);
        let answer = gw.receive(Method::Post, "", body.as_bytes());
        assert_eq!(code(&answer), format!("Missing{name}"), "{name}");
        assert_eq!(answer.status, 400);
    }
}

#[test]
fn the_timestamp_must_be_well_formed_and_within_15_minutes() {
    let (_, gw) = gateway();
    for (offset, nonce, want) in [
        (-14 * 60, "n1", "InvalidParam"),
        (14 * 60, "n2", "InvalidParam"),
        (-15 * 60 - 1, "n3", "InvalidTimeStamp.Expired"),
        (16 * 60, "n4", "InvalidTimeStamp.Expired"),
    ] {
        let request = signed(
            &stop(),
            Signing {
                nonce,
                at_secs: T0_SECS + offset,
                ..Signing::default()
            },
        );
        assert_eq!(code(&send(&gw, &request)), want, "offset {offset}s");
    }
    let mut params = signed(&stop(), Signing::default()).params;
    params.insert("Timestamp".into(), "2024-01-02T03:04:05.000Z".into());
    params.remove("Signature");
    let resigned = sign(Method::Post, &params, SECRET);
    params.insert("Signature".into(), resigned.signature);
    let body = costream_alibaba::sign::canonicalize(&params);
    assert_eq!(
        code(&gw.receive(Method::Post, "", body.as_bytes())),
        "InvalidTimeStamp.Format"
    );
}

#[test]
fn timestamps_parse_only_in_the_gateway_format() {
    assert_eq!(
        parse_timestamp("2024-01-02T03:04:05Z"),
        Some(1_704_164_645_000)
    );
    for bad in [
        "2024-01-02T03:04:05",
        "2024-01-02 03:04:05Z",
        "2024-13-02T03:04:05Z",
        "2024-02-30T03:04:05Z",
        "2024-01-02T24:04:05Z",
        "2024-01-02T03:04:05+08:00",
        "+024-01-02T03:04:05Z",
        "",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
}

#[test]
fn sts_credentials_need_their_token_and_the_version_must_match() {
    let (_, gw) = gateway_with(
        Credentials::new(ID, SecretString::from(SECRET))
            .with_security_token(SecretString::from("sts-token")),
    );
    let without = signed(&stop(), Signing::default());
    assert_eq!(code(&send(&gw, &without)), "InvalidSecurityToken.Mismatch");
    let with = signed(
        &stop(),
        Signing {
            nonce: "n2",
            token: Some("sts-token"),
            ..Signing::default()
        },
    );
    assert_eq!(code(&send(&gw, &with)), "InvalidParam", "reached the core");

    let mut params = signed(
        &stop(),
        Signing {
            nonce: "n3",
            token: Some("sts-token"),
            ..Signing::default()
        },
    )
    .params;
    params.insert("Version".into(), "2018-01-11".into());
    params.remove("Signature");
    let resigned = sign(Method::Post, &params, SECRET);
    params.insert("Signature".into(), resigned.signature);
    let answer = gw.receive(
        Method::Post,
        "",
        costream_alibaba::sign::canonicalize(&params).as_bytes(),
    );
    assert_eq!(answer.status, 404);
    assert_eq!(code(&answer), "InvalidApi.NotFound");
}
