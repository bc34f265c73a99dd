//! What one Live API answer means: success, a typed [`MpuError`], or an idempotent [`Outcome`].
//!
//! Owns the response contract of spec §1.4–§1.5 and the idempotency rules of §3.6 as pure
//! functions of (status, headers, body), so every branch is unit-tested without a server.
//! Nothing that comes over the wire is trusted: an empty body, an HTML error page or JSON without
//! `RequestId` is a [`MpuError::MalformedResponse`], never a success and never a panic.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::request::{LiveRequest, RequestError};

/// How much of an unparseable body goes into the error: enough to recognise an HTML page or a
/// proxy message, short enough for a log line.
const SNIPPET_CHARS: usize = 160;

/// What a successful call amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service did what was asked.
    Applied,
    /// Start: a task with this `TaskId` still exists (`InvalidParam`, "task already exists").
    /// Starting is therefore done; the caller makes it match the target with an Update.
    AlreadyExists,
    /// Stop: the task does not exist (any more). Stopping is idempotent, so this is success.
    AlreadyStopped,
    /// Update: the task does not exist (stopped by the service, e.g. 2 minutes after everyone
    /// left). Not success: the caller must Start it again with the full parameters.
    TaskNotFound { code: String, message: String },
}

/// The answer handed to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub outcome: Outcome,
    /// `RequestId` of the answer that decided the outcome (for Alibaba support tickets).
    pub request_id: Option<String>,
    /// The whole JSON body, e.g. `MPUTasks` of ListRtcMPUTaskDetail or `SubscribeId` of
    /// CreateEventSub (`Value::Null` for idempotent outcomes that came from an error body).
    pub body: serde_json::Value,
}

impl Reply {
    /// Reads the body as a typed response.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.body)
    }
}

fn or_none(request_id: &Option<String>) -> &str {
    request_id.as_deref().unwrap_or("none")
}

/// Failures of a Live API call. The secret never appears in any of them: they carry only what
/// the service answered (code, message, request id, a body snippet) and transport errors, whose
/// URL is the endpoint without query.
#[derive(Debug, thiserror::Error)]
pub enum MpuError {
    /// The service answered with an error `Code` (any HTTP status, including 200).
    #[error(
        "{action} rejected: {code}: {message} (HTTP {http_status}, request id {})",
        or_none(request_id)
    )]
    Rejected {
        action: &'static str,
        http_status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// The troubleshooting link some error bodies carry.
        recommend: Option<String>,
    },
    /// Flow control (`Throttling*` or an `x-acs-retry-after` header).
    #[error("{action} throttled: {code}: {message} (HTTP {http_status}, request id {}, retry after {retry_after:?})", or_none(request_id))]
    Throttled {
        action: &'static str,
        http_status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// From `x-acs-retry-after` (milliseconds on the wire).
        retry_after: Option<Duration>,
    },
    /// Connecting, sending or reading failed.
    #[error("{action}: transport error talking to the Live API")]
    Transport {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// An attempt ran out of time (connect or whole attempt).
    #[error("{action}: the Live API did not answer in time")]
    Timeout {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not the documented JSON (empty, HTML, no `RequestId`, error status without
    /// `Code`, …).
    #[error("{action}: malformed response: {reason} (HTTP {http_status}, request id {}); body starts with {snippet:?}", or_none(request_id))]
    MalformedResponse {
        action: &'static str,
        http_status: u16,
        request_id: Option<String>,
        reason: &'static str,
        snippet: String,
    },
    /// The request could not be built (a bug, not a service problem).
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Codes that are never retried even on a 5xx: retrying a bad signature, a skewed clock, a bad
/// parameter or missing permissions gives the same answer again.
fn is_permanent_code(code: &str) -> bool {
    code == "SignatureDoesNotMatch"
        || code.starts_with("InvalidTimeStamp")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidParam")
        || code.starts_with("InvalidAppId")
        || code.starts_with("InvalidApi")
        || code.starts_with("Missing")
        || code.starts_with("Forbidden")
        || code.starts_with("NoPermission")
        || code.starts_with("InvalidSecurityToken")
}

/// Codes worth another attempt (spec §1.5; the classic SDK's retry sets plus `SignatureNonceUsed`,
/// which is safe because every attempt is re-signed with a new nonce).
fn is_retryable_code(code: &str) -> bool {
    code.starts_with("Throttling")
        || matches!(
            code,
            "ServiceUnavailable" | "InternalError" | "UnknownError" | "SignatureNonceUsed"
        )
}

impl MpuError {
    pub fn action(&self) -> &'static str {
        match self {
            MpuError::Rejected { action, .. }
            | MpuError::Throttled { action, .. }
            | MpuError::Transport { action, .. }
            | MpuError::Timeout { action, .. }
            | MpuError::MalformedResponse { action, .. } => action,
            MpuError::Request(
                RequestError::Json { action, .. } | RequestError::StreamUrl { action, .. },
            ) => action,
        }
    }

    /// Whether the same call may succeed if tried again (by the retry loop, or later by the
    /// caller, e.g. a Lambda reporting the error as "Retryable").
    pub fn is_retryable(&self) -> bool {
        match self {
            MpuError::Rejected {
                code, http_status, ..
            } => !is_permanent_code(code) && (is_retryable_code(code) || *http_status >= 500),
            MpuError::Throttled { .. } | MpuError::Timeout { .. } => true,
            MpuError::Transport { source, .. } => !source.is_builder(),
            // A 5xx HTML page is a gateway/proxy failure; a malformed 2xx is not transient.
            MpuError::MalformedResponse { http_status, .. } => *http_status >= 500,
            MpuError::Request(_) => false,
        }
    }

    /// Whether the request certainly has no effect, now or later: the service answered and
    /// refused it (an error `Code`, throttling), or it was never sent (it could not be built).
    ///
    /// Not definite: a timeout, a broken connection or an unreadable answer (a gateway's 5xx
    /// page). The service may have received such a request and may still apply it after we gave
    /// up, so whoever made it must not let another call for the same task overlap it.
    ///
    /// Judged from this error alone: when it is the last of several attempts, an earlier attempt
    /// may have timed out.
    pub fn is_definite(&self) -> bool {
        match self {
            MpuError::Rejected { .. } | MpuError::Throttled { .. } | MpuError::Request(_) => true,
            // A builder error is raised before anything is sent.
            MpuError::Transport { source, .. } => source.is_builder(),
            MpuError::Timeout { .. } | MpuError::MalformedResponse { .. } => false,
        }
    }

    /// The service's error code, if the answer had one.
    pub fn code(&self) -> Option<&str> {
        match self {
            MpuError::Rejected { code, .. } | MpuError::Throttled { code, .. } => Some(code),
            MpuError::Transport { .. }
            | MpuError::Timeout { .. }
            | MpuError::MalformedResponse { .. }
            | MpuError::Request(_) => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            MpuError::Rejected { request_id, .. }
            | MpuError::Throttled { request_id, .. }
            | MpuError::MalformedResponse { request_id, .. } => request_id.as_deref(),
            MpuError::Transport { .. } | MpuError::Timeout { .. } | MpuError::Request(_) => None,
        }
    }

    /// How long the service asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MpuError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A 2xx answer with a `RequestId` and no `Code`.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub request_id: String,
    pub body: serde_json::Value,
}

/// Reads a field that the Tea SDK accepts in PascalCase or camelCase (`Code` | `code`).
fn field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    pascal: &str,
    camel: &str,
) -> Option<&'a str> {
    obj.get(pascal)
        .or_else(|| obj.get(camel))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A service message fit for logs and errors: `auth_key` values (signed stream URLs) are masked,
/// and a `SignatureDoesNotMatch` echo of the string-to-sign (which holds every request
/// parameter, a signed StreamURL included) is cut off.
pub fn redact(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let cut = ["string to sign", "stringtosign", "string-to-sign"]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min();
    let (kept, cut_off) = match cut {
        Some(i) => (&message[..i], true),
        None => (message, false),
    };
    // `auth_key=` in any case, and its URL-encoded forms (a StreamURL inside a parameter).
    const KEYS: [&str; 3] = ["auth_key=", "auth_key%3d", "auth_key%253d"];
    let mut out = String::with_capacity(kept.len());
    let mut rest = kept;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some((i, key)) = KEYS
            .iter()
            .filter_map(|k| lower.find(k).map(|i| (i, *k)))
            .min_by_key(|(i, _)| *i)
        else {
            break;
        };
        let value_start = i + key.len();
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let tail = &rest[value_start..];
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c == '%' || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    if cut_off {
        out.push_str("string to sign [redacted]");
    }
    out
}

fn snippet(body: &[u8]) -> String {
    redact(&snippet_raw(body))
}

fn snippet_raw(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(SNIPPET_CHARS)
        .collect()
}

/// Parses `x-acs-retry-after` (milliseconds). Garbage is ignored rather than failing the call.
pub fn parse_retry_after(header: Option<&str>) -> Option<Duration> {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Interprets one HTTP answer.
pub fn interpret(
    action: &'static str,
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Success, MpuError> {
    let malformed =
        |reason: &'static str, request_id: Option<String>| MpuError::MalformedResponse {
            action,
            http_status,
            request_id,
            reason,
            snippet: snippet(body),
        };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("empty body", None));
    }
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Err(malformed("body is not JSON", None)),
    };
    let Some(obj) = value.as_object() else {
        return Err(malformed("body is not a JSON object", None));
    };
    let request_id = field(obj, "RequestId", "requestId").map(str::to_owned);
    let code = field(obj, "Code", "code");
    let message = redact(field(obj, "Message", "message").unwrap_or_default());
    match code {
        Some(code) if code.starts_with("Throttling") || retry_after.is_some() => {
            Err(MpuError::Throttled {
                action,
                http_status,
                code: code.to_owned(),
                message,
                request_id,
                retry_after,
            })
        }
        Some(code) => Err(MpuError::Rejected {
            action,
            http_status,
            code: code.to_owned(),
            message,
            request_id,
            recommend: field(obj, "Recommend", "recommend").map(str::to_owned),
        }),
        None if !(200..300).contains(&http_status) => {
            Err(malformed("error status without Code", request_id))
        }
        None => match request_id {
            Some(request_id) => Ok(Success {
                request_id,
                body: value,
            }),
            None => Err(malformed("success without RequestId", None)),
        },
    }
}

/// Whether a text says something does not exist. Checked before "exists" so that e.g. "channel
/// does not exist" on Start is not mistaken for "task already exists".
fn mentions_absence(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "not exist",
        "notexist",
        "no exist",
        "noexist",
        "nonexist",
        "non-exist",
        "doesn't exist",
        "not found",
        "notfound",
        "no such",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}

/// Codes about the app, the account or the request itself: a "not found" in them is not about
/// the task.
fn is_about_app_or_access(code: &str) -> bool {
    code.starts_with("InvalidAppId")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidApi")
        || code.starts_with("Forbidden")
        || code.starts_with("NoPermission")
        || code.starts_with("InvalidSecurityToken")
        || code == "SignatureDoesNotMatch"
}

fn task_is_absent(code: &str, message: &str) -> bool {
    !is_about_app_or_access(code)
        && (mentions_absence(code)
            || (code.starts_with("InvalidParam") && mentions_absence(message)))
}

fn task_already_exists(code: &str, message: &str) -> bool {
    let code_says = code.to_ascii_lowercase().contains("alreadyexist");
    let message_says = code.starts_with("InvalidParam")
        && message.to_ascii_lowercase().contains("exist")
        && !mentions_absence(message);
    code_says || message_says
}

/// The idempotent reading of an error (spec §3.6), or `None` if it stays an error.
///
/// The exact codes and messages for these cases are not documented (spec §8.2), so matching is by
/// meaning: `InvalidParam` whose message says the task exists → [`Outcome::AlreadyExists`] (Start
/// only); a code such as `InvalidTask.NotFound`, or `InvalidParam` whose message says "does not
/// exist"/"not found" → [`Outcome::AlreadyStopped`] for Stop, [`Outcome::TaskNotFound`] for
/// Update.
pub fn idempotent_outcome(request: &LiveRequest, error: &MpuError) -> Option<Outcome> {
    let MpuError::Rejected { code, message, .. } = error else {
        return None;
    };
    match request {
        LiveRequest::Start(_) => {
            task_already_exists(code, message).then_some(Outcome::AlreadyExists)
        }
        LiveRequest::Stop(_) => task_is_absent(code, message).then_some(Outcome::AlreadyStopped),
        LiveRequest::Update(_) => task_is_absent(code, message).then(|| Outcome::TaskNotFound {
            code: code.clone(),
            message: message.clone(),
        }),
        LiveRequest::ListTasks(_) => None,
        #[cfg(feature = "ops")]
        LiveRequest::CreateEventSub(_)
        | LiveRequest::DeleteEventSub(_)
        | LiveRequest::ListEventSub(_)
        | LiveRequest::SetNotifyUrl(_) => None,
    }
}

/// What the caller makes of one interpreted answer: a success is [`Outcome::Applied`]; an error
/// that means the request's goal already holds is its idempotent [`Outcome`] (see
/// [`idempotent_outcome`]); any other error stays an error.
///
/// The one place where an answer becomes a [`Reply`], shared by [`LiveClient`](super::LiveClient)
/// (per attempt) and the in-process simulator (`costream-sim`), so both classify alike.
pub fn conclude(
    request: &LiveRequest,
    answer: Result<Success, MpuError>,
) -> Result<Reply, MpuError> {
    match answer {
        Ok(success) => Ok(Reply {
            outcome: Outcome::Applied,
            request_id: Some(success.request_id),
            body: success.body,
        }),
        Err(error) => match idempotent_outcome(request, &error) {
            Some(outcome) => Ok(Reply {
                outcome,
                request_id: error.request_id().map(str::to_owned),
                body: serde_json::Value::Null,
            }),
            None => Err(error),
        },
    }
}

/// Reads one complete HTTP answer to `request`: [`interpret`], then [`conclude`].
pub fn read_answer(
    request: &LiveRequest,
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Reply, MpuError> {
    conclude(
        request,
        interpret(request.action(), http_status, retry_after, body),
    )
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied => f.write_str("applied"),
            Outcome::AlreadyExists => f.write_str("already_exists"),
            Outcome::AlreadyStopped => f.write_str("already_stopped"),
            Outcome::TaskNotFound { .. } => f.write_str("task_not_found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logged service messages never carry a signed URL's key or the string-to-sign echo.
    #[test]
    fn service_messages_are_redacted() {
        let echo = "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&StreamURL%3Drtmp%253A%252F%252Fp%252Flive%252Fr_main%253Fauth_key%253D17-0-0-abc";
        assert_eq!(
            redact(echo),
            "Specified signature is not matched with our calculation. server string to sign [redacted]"
        );
        assert_eq!(
            redact("StreamURL rtmp://p/live/r_main?auth_key=1700-0-0-deadbeef&x=1 is in use"),
            "StreamURL rtmp://p/live/r_main?auth_key=***&x=1 is in use"
        );
        assert_eq!(redact("plain"), "plain");
        assert_eq!(
            redact("StreamURL=rtmp%3A%2F%2Fp%2Fr_main%3FAUTH_KEY%3D1700-0-0-beef%26x"),
            "StreamURL=rtmp%3A%2F%2Fp%2Fr_main%3FAUTH_KEY%3D***%26x"
        );
        // Through the parser: the error's text has neither.
        let body =
            format!(r#"{{"RequestId":"r","Code":"SignatureDoesNotMatch","Message":"{echo}"}}"#);
        let err = interpret("StartLiveMPUTask", 400, None, body.as_bytes()).expect_err("an error");
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("auth_key") && !shown.contains("POST&"),
            "{shown}"
        );
    }
    use crate::request::{
        Mix, SingleSubParams, StartLiveMpuTask, StopLiveMpuTask, StreamOutput, UpdateLiveMpuTask,
    };

    fn start() -> LiveRequest {
        StartLiveMpuTask {
            app_id: "a".into(),
            channel_id: "c".into(),
            task_id: "t".into(),
            mix: Mix::Single(SingleSubParams::camera("u")),
            output: StreamOutput::Url("rtmp://x/y/z".into()),
            max_idle_time: None,
            region: None,
            sei: None,
        }
        .into()
    }

    fn update() -> LiveRequest {
        UpdateLiveMpuTask {
            app_id: "a".into(),
            channel_id: "c".into(),
            task_id: "t".into(),
            mix: Mix::Single(SingleSubParams::camera("u")),
            output: None,
            sei: None,
        }
        .into()
    }

    fn stop() -> LiveRequest {
        StopLiveMpuTask {
            app_id: "a".into(),
            task_id: "t".into(),
        }
        .into()
    }

    fn rejected(code: &str, message: &str) -> MpuError {
        MpuError::Rejected {
            action: "X",
            http_status: 400,
            code: code.into(),
            message: message.into(),
            request_id: Some("R".into()),
            recommend: None,
        }
    }

    /// The three error answers the Tea SDK was driven with (`error_handling_tea_sdk`).
    #[test]
    fn sdk_error_captures_are_classified() {
        let text = std::fs::read_to_string(crate::vector_path("mpu_requests.json"))
            .expect("read mpu_requests.json");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("parse");
        let cases = doc["error_handling_tea_sdk"].as_object().expect("cases");
        for (name, case) in cases {
            let status = u16::try_from(case["http_status"].as_u64().expect("status"))
                .expect("status fits u16");
            let body = serde_json::to_vec(&case["response_body"]).expect("body");
            let retry_after =
                parse_retry_after(case["response_headers"]["x-acs-retry-after"].as_str());
            let err = interpret("StartLiveMPUTask", status, retry_after, &body)
                .expect_err("error answer");
            assert_eq!(err.code(), case["code"].as_str(), "{name}");
            assert_eq!(
                err.request_id(),
                case["response_body"]["RequestId"].as_str(),
                "{name}"
            );
            match name.as_str() {
                "http400_InvalidParam" => {
                    assert!(!err.is_retryable(), "{name}");
                    assert!(
                        matches!(&err, MpuError::Rejected { recommend: Some(r), .. } if r.contains("troubleshoot"))
                    );
                }
                "http503_ServiceUnavailable" => assert!(err.is_retryable(), "{name}"),
                "http400_Throttling_with_retry_after" => {
                    assert!(err.is_retryable(), "{name}");
                    assert_eq!(err.retry_after(), Some(Duration::from_millis(1000)));
                }
                other => panic!("unexpected case {other}"),
            }
        }
    }

    #[test]
    fn success_needs_a_request_id() {
        let ok =
            interpret("StopLiveMPUTask", 200, None, br#"{"RequestId":"REQ"}"#).expect("success");
        assert_eq!(ok.request_id, "REQ");
        let err = interpret("StopLiveMPUTask", 200, None, b"{}").expect_err("no RequestId");
        assert!(matches!(
            err,
            MpuError::MalformedResponse {
                reason: "success without RequestId",
                ..
            }
        ));
    }

    #[test]
    fn code_in_a_200_body_is_an_error() {
        let err = interpret(
            "StartLiveMPUTask",
            200,
            None,
            br#"{"RequestId":"R9","Code":"InternalError","Message":"oops"}"#,
        )
        .expect_err("code in 200");
        assert!(err.is_retryable());
        assert_eq!(err.request_id(), Some("R9"));
        assert!(err.to_string().contains("StartLiveMPUTask"));
    }

    #[test]
    fn garbage_answers_are_typed_errors_naming_the_action() {
        let cases: [(u16, &[u8], &str); 6] = [
            (200, b"", "empty body"),
            (200, b"  \n", "empty body"),
            (
                502,
                b"<html><body>Bad Gateway</body></html>",
                "body is not JSON",
            ),
            (200, b"[1,2]", "body is not a JSON object"),
            (200, b"{\"RequestId\":", "body is not JSON"),
            (500, br#"{"RequestId":"R5"}"#, "error status without Code"),
        ];
        for (status, body, reason) in cases {
            let err = interpret("UpdateLiveMPUTask", status, None, body).expect_err("garbage");
            match &err {
                MpuError::MalformedResponse {
                    action,
                    reason: r,
                    http_status,
                    ..
                } => {
                    assert_eq!(*action, "UpdateLiveMPUTask");
                    assert_eq!(*r, reason);
                    assert_eq!(*http_status, status);
                }
                other => panic!("expected MalformedResponse, got {other:?}"),
            }
            assert_eq!(err.is_retryable(), status >= 500);
            assert!(err.to_string().contains("UpdateLiveMPUTask"));
        }
        let err = interpret("X", 500, None, br#"{"RequestId":"R5"}"#).expect_err("500");
        assert_eq!(err.request_id(), Some("R5"));
        assert!(err.to_string().contains("R5"));
    }

    #[test]
    fn camel_case_fields_are_accepted() {
        let err = interpret(
            "X",
            400,
            None,
            br#"{"requestId":"r","code":"InvalidParam","message":"m"}"#,
        )
        .expect_err("error");
        assert_eq!(err.code(), Some("InvalidParam"));
        assert_eq!(err.request_id(), Some("r"));
    }

    #[test]
    fn retry_classification_follows_the_spec_table() {
        let retryable = [
            ("Throttling", 400),
            ("Throttling.User", 400),
            ("Throttling.Api", 503),
            ("ServiceUnavailable", 503),
            ("InternalError", 500),
            ("UnknownError", 500),
            ("SignatureNonceUsed", 400),
            ("SomethingNew", 502),
        ];
        for (code, status) in retryable {
            let body = format!(r#"{{"RequestId":"R","Code":"{code}","Message":"m"}}"#);
            let err = interpret("X", status, None, body.as_bytes()).expect_err("error");
            assert!(err.is_retryable(), "{code} {status}");
        }
        let permanent = [
            ("SignatureDoesNotMatch", 400),
            ("InvalidTimeStamp.Expired", 400),
            ("InvalidTimeStamp.Format", 400),
            ("InvalidAccessKeyId.NotFound", 404),
            ("InvalidAccessKeyId.Inactive", 400),
            ("InvalidParam", 400),
            ("InvalidParam", 500),
            ("MissingTaskId", 400),
            ("InvalidAppId", 400),
            ("Forbidden.RAM", 403),
            ("InvalidApi.NotFound", 404),
            ("SomethingNew", 400),
        ];
        for (code, status) in permanent {
            let body = format!(r#"{{"RequestId":"R","Code":"{code}","Message":"m"}}"#);
            let err = interpret("X", status, None, body.as_bytes()).expect_err("error");
            assert!(!err.is_retryable(), "{code} {status}");
        }
    }

    #[test]
    fn only_refusals_and_unsent_requests_are_definite() {
        // A reqwest error of each kind we can make without a network.
        let builder = || {
            reqwest::Client::new()
                .get("not a url")
                .build()
                .expect_err("a relative URL can't be built")
        };
        assert!(builder().is_builder());
        let throttled = interpret(
            "X",
            400,
            None,
            br#"{"RequestId":"R","Code":"Throttling.User","Message":"m"}"#,
        )
        .expect_err("throttled");
        let server_error = interpret(
            "X",
            500,
            None,
            br#"{"RequestId":"R","Code":"InternalError","Message":"m"}"#,
        )
        .expect_err("rejected");
        let gateway = interpret("X", 504, None, b"<html>Gateway Timeout</html>").expect_err("html");
        let garbled_success = interpret("X", 200, None, b"").expect_err("empty");
        let unbuildable = MpuError::Request(RequestError::StreamUrl {
            action: "StartLiveMPUTask",
            source: crate::urls::UrlSignError::NoPath("rtmp://x".into()),
        });
        for definite in [
            rejected("InvalidParam", "m"),
            throttled,
            server_error,
            unbuildable,
            MpuError::Transport {
                action: "X",
                source: builder(),
            },
        ] {
            assert!(definite.is_definite(), "{definite:?}");
        }
        for ambiguous in [
            gateway,
            garbled_success,
            MpuError::Timeout {
                action: "X",
                source: builder(),
            },
        ] {
            assert!(!ambiguous.is_definite(), "{ambiguous:?}");
        }
    }

    #[test]
    fn any_code_with_retry_after_header_is_throttling() {
        let err = interpret(
            "X",
            503,
            Some(Duration::from_millis(250)),
            br#"{"RequestId":"R","Code":"ServiceUnavailable"}"#,
        )
        .expect_err("error");
        assert!(matches!(err, MpuError::Throttled { .. }));
        assert_eq!(err.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_retry_after(Some(" 1500 ")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after(Some("soon")), None);
    }

    #[test]
    fn start_on_an_existing_task_is_already_exists() {
        for message in [
            "Task already exists.",
            "the task already exists",
            "TaskId EXISTS",
        ] {
            assert_eq!(
                idempotent_outcome(&start(), &rejected("InvalidParam", message)),
                Some(Outcome::AlreadyExists),
                "{message}"
            );
        }
        assert_eq!(
            idempotent_outcome(&start(), &rejected("TaskAlreadyExist", "")),
            Some(Outcome::AlreadyExists)
        );
    }

    #[test]
    fn start_errors_that_are_not_about_an_existing_task_stay_errors() {
        for (code, message) in [
            ("InvalidParam", "The channel does not exist."),
            ("InvalidParam", "Parameter invalid."),
            ("InvalidAppId", "app already exists?"),
            ("SignatureDoesNotMatch", "exists"),
        ] {
            assert_eq!(
                idempotent_outcome(&start(), &rejected(code, message)),
                None,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn stop_of_a_missing_task_is_already_stopped() {
        for (code, message) in [
            ("InvalidParam", "Task does not exist."),
            ("InvalidParam", "task not found"),
            ("InvalidTask.NotFound", "whatever"),
            ("TaskNotExist", ""),
        ] {
            assert_eq!(
                idempotent_outcome(&stop(), &rejected(code, message)),
                Some(Outcome::AlreadyStopped),
                "{code}: {message}"
            );
        }
        for (code, message) in [
            ("InvalidParam", "Parameter invalid."),
            ("InvalidAppId.NotFound", "app not found"),
            (
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ),
        ] {
            assert_eq!(
                idempotent_outcome(&stop(), &rejected(code, message)),
                None,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn read_answer_concludes_success_idempotent_outcomes_and_errors() {
        let ok =
            read_answer(&stop(), 200, None, br#"{"RequestId":"R1","Extra":1}"#).expect("success");
        assert_eq!(ok.outcome, Outcome::Applied);
        assert_eq!(ok.request_id.as_deref(), Some("R1"));
        assert_eq!(ok.body["Extra"], 1);

        let exists =
            br#"{"RequestId":"R2","Code":"InvalidParam","Message":"The task already exists."}"#;
        let reply = read_answer(&start(), 400, None, exists).expect("idempotent");
        assert_eq!(reply.outcome, Outcome::AlreadyExists);
        assert_eq!(reply.request_id.as_deref(), Some("R2"));
        assert_eq!(reply.body, serde_json::Value::Null);
        let err = read_answer(&update(), 400, None, exists).expect_err("not for Update");
        assert_eq!(err.code(), Some("InvalidParam"));
        assert_eq!(err.action(), "UpdateLiveMPUTask");
    }

    #[test]
    fn update_of_a_missing_task_is_task_not_found() {
        assert_eq!(
            idempotent_outcome(&update(), &rejected("InvalidParam", "Task does not exist")),
            Some(Outcome::TaskNotFound {
                code: "InvalidParam".into(),
                message: "Task does not exist".into()
            })
        );
        assert_eq!(
            idempotent_outcome(&update(), &rejected("InvalidParam", "Task already exists")),
            None,
            "exists is only meaningful for Start"
        );
    }
}
