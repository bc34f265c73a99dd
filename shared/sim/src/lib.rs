//! A simulated ApsaraVideo Live API: the MPU task semantics of `StartLiveMPUTask`,
//! `UpdateLiveMPUTask`, `StopLiveMPUTask` and `ListRtcMPUTaskDetail` (plus the event
//! subscriptions and the CDN ingest callback registration), so costream can run end to end
//! without Alibaba — in-process behind the [`LiveApi`] port, or over HTTP behind a real
//! [`LiveClient`](costream_alibaba::LiveClient).
//!
//! # Layout
//! - [`SimulatedLive`]: the core. It works on the *parameter map* as it travels on the wire
//!   (`BTreeMap<String, String>`, nested parameters as JSON strings), so both fronts share it:
//!   what the simulator accepts over HTTP is exactly what it accepts in-process. It answers with
//!   the HTTP status and JSON body the real service would give ([`SimResponse`]), records every
//!   call ([`SimCall`]) and logs it (one `info!` per call: `action`, `task_id`, `mix_mode`,
//!   `code`), which is how `costream serve` shows what the MPU API received.
//! - `validate`: the parameter checks the real service does cheaply (spec §3.1–§3.3).
//! - [`http`]: the gateway — an axum router that verifies every request's RPC V1 signature,
//!   timestamp and nonce like the real gateway, then hands the parameters to the core.
//!
//! In-process, the answer goes through `response::read_answer`, the very reading the real
//! client applies to an HTTP answer, so an in-process caller sees the same [`Reply`] /
//! [`MpuError`] it would get from [`LiveClient`](costream_alibaba::LiveClient) — only without
//! retries, which the in-process simulator never needs (it never throttles or fails).
//!
//! # Semantics (spec §3.6, and what the real service is known to do)
//! - Tasks are keyed by `(AppId, TaskId)`; the caller chooses the `TaskId`.
//! - Start of an existing task: 400 `InvalidParam` "The task already exists."
//! - Start (or an Update that moves the output) to a stream URL that another task is using, or
//!   that a Stop released less than 10 s ago by the injected clock: 400 `InvalidParam`
//!   mentioning `StreamURL`. A URL's identity is scheme, host and path: a re-signed `auth_key`
//!   does not make it a different stream.
//! - Update or Stop of an unknown task: 400 `InvalidParam` "The task does not exist." (the
//!   client reads it as `TaskNotFound` for Update, `AlreadyStopped` for Stop).
//! - Update replaces the mix completely (the spec advises sending the full parameters).
//! - Success: 200 `{"RequestId":"SIM-<n>"}`, `n` counting every call the simulator answered.

pub mod http;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{json, Map, Value};

use costream_alibaba::response::read_answer;
use costream_alibaba::{Clock, SystemClock};
use costream_alibaba::{LiveApi, LiveRequest, MpuError, Reply};
use validate::{optional, Mix, Output, Params, MAX_ID, MAX_TASK_ID};

/// `HostId` of every error body, as the real service sends it.
pub const HOST_ID: &str = "live.aliyuncs.com";
/// How long a stopped task's stream URL stays unusable for another Start.
pub const STREAM_URL_HOLD_MS: u64 = 10_000;
/// The most recent calls kept for [`SimulatedLive::calls`]; older ones are dropped, so a
/// long-running `costream serve` does not grow without bound.
pub const MAX_RECORDED_CALLS: usize = 10_000;
/// Event subscriptions per AppId (spec §4.1).
const MAX_SUBSCRIPTIONS_PER_APP: usize = 20;

const START: &str = "StartLiveMPUTask";
const UPDATE: &str = "UpdateLiveMPUTask";
const STOP: &str = "StopLiveMPUTask";
const LIST_TASKS: &str = "ListRtcMPUTaskDetail";
const CREATE_EVENT_SUB: &str = "CreateEventSub";
const DELETE_EVENT_SUB: &str = "DeleteEventSub";
const LIST_EVENT_SUB: &str = "ListEventSub";
const SET_NOTIFY_URL: &str = "SetLiveStreamsNotifyUrlConfig";

/// An error answer: HTTP status, `Code`, `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    status: u16,
    code: String,
    message: String,
}

impl Fault {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Fault {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// `MissingParam`, worded like the gateway's `Missing{Name}` errors.
    fn missing(name: &str) -> Self {
        Fault::new(
            400,
            "MissingParam",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    fn invalid(message: impl Into<String>) -> Self {
        Fault::new(400, "InvalidParam", message)
    }

    fn task_absent() -> Self {
        Fault::invalid("The task does not exist.")
    }

    fn api_not_found() -> Self {
        Fault::new(
            404,
            "InvalidApi.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }
}

/// How a call reached the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Through the [`LiveApi`] port in the same process (no signature involved).
    InProcess,
    /// Over HTTP through [`http::router`]; the signature was checked before anything else.
    Http,
}

/// The answer to one call: what the real service would send (always `application/json`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimResponse {
    pub status: u16,
    pub body: Value,
}

impl SimResponse {
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

/// One call as the simulator received and answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimCall {
    /// 1-based, over every call the simulator answered (also the `n` of `SIM-<n>`).
    pub seq: u64,
    /// The simulator's clock when the call was answered.
    pub at_ms: u64,
    pub transport: Transport,
    /// `Action` as received (`""` if missing).
    pub action: String,
    pub app_id: Option<String>,
    pub task_id: Option<String>,
    /// `MixMode` as received.
    pub mix_mode: Option<String>,
    /// What the call asked for, e.g. `single host_u1` or `mix host_u1,guest_u2`.
    pub summary: String,
    pub http_status: u16,
    /// `OK` for a success, else the error `Code`.
    pub code: String,
    pub request_id: String,
}

/// A running task as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimTask {
    pub app_id: String,
    pub channel_id: String,
    pub task_id: String,
    /// 0: relay one user (`single_sub_params`); 1: mix (`transcode_params`).
    pub mix_mode: u8,
    pub single_sub_params: Option<Value>,
    pub transcode_params: Option<Value>,
    /// The users shown, in pane order (see [`SimCall::summary`]); for MixMode 0 the one user.
    pub users: Vec<String>,
    /// As received, `auth_key` included.
    pub stream_url: Option<String>,
    pub multi_stream_url: Option<Value>,
    /// Identities (`rtmp://host/path`) of the output URLs.
    pub outputs: Vec<String>,
    pub sei_params: Option<Value>,
    pub max_idle_time: Option<u32>,
    pub region: Option<String>,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
    /// Successful Updates since the Start.
    pub updates: u32,
}

impl SimTask {
    fn set_mix(&mut self, mix: Mix) {
        self.mix_mode = mix.mix_mode();
        match mix {
            Mix::Single(params) => {
                self.users = params
                    .get("UserId")
                    .and_then(validate::text)
                    .into_iter()
                    .collect();
                self.single_sub_params = Some(params);
                self.transcode_params = None;
            }
            Mix::Transcode(params) => {
                self.users = validate::mix_users(&params);
                self.transcode_params = Some(params);
                self.single_sub_params = None;
            }
        }
    }

    fn set_output(&mut self, output: Output) {
        self.stream_url = output.stream_url;
        self.multi_stream_url = output.multi_stream_url;
        self.outputs = output.identities;
    }

    /// The task as `ListRtcMPUTaskDetail` returns it: nested parameters as objects.
    fn to_mpu_task(&self) -> Value {
        let mut task = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                task.insert(key.to_owned(), value);
            }
        };
        put("AppId", Some(json!(self.app_id)));
        put("ChannelId", Some(json!(self.channel_id)));
        put("TaskId", Some(json!(self.task_id)));
        put("MixMode", Some(json!(self.mix_mode.to_string())));
        put("StreamURL", self.stream_url.as_ref().map(|u| json!(u)));
        put("MultiStreamURL", self.multi_stream_url.clone());
        put("SingleSubParams", self.single_sub_params.clone());
        put("TranscodeParams", self.transcode_params.clone());
        put("SeiParams", self.sei_params.clone());
        put("MaxIdleTime", self.max_idle_time.map(|s| json!(s)));
        put("Region", self.region.as_ref().map(|r| json!(r)));
        Value::Object(task)
    }
}

/// A push domain's ingest callback registration (`SetLiveStreamsNotifyUrlConfig`). The
/// `NotifyAuthKey` is checked but not kept: nothing here may hand a secret to `/_sim/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimNotifyConfig {
    pub domain_name: String,
    pub notify_url: String,
    /// `NotifyReqAuth=yes`: callbacks are signed with the (checked, not recorded) key.
    pub notify_req_auth: bool,
    pub updated_at_ms: u64,
}

/// An ARTC event subscription (`CreateEventSub`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSubscription {
    pub subscribe_id: String,
    pub app_id: String,
    /// `None`: all channels.
    pub channel_id: Option<String>,
    pub callback_url: String,
    pub events: Vec<String>,
    pub users: Vec<String>,
    pub created_at_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    next_subscription: u64,
    tasks: BTreeMap<(String, String), SimTask>,
    /// Output identity → when a Stop (or an Update moving away) released it.
    released: HashMap<String, u64>,
    subscriptions: BTreeMap<String, SimSubscription>,
    /// Domain → its ingest callback registration.
    notify_configs: BTreeMap<String, SimNotifyConfig>,
    calls: VecDeque<SimCall>,
}

type Answer = Result<Map<String, Value>, Fault>;

/// The simulated Live API. Share it behind an `Arc` between the router, the adapter and the
/// code that inspects it; every method takes `&self`.
pub struct SimulatedLive {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl fmt::Debug for SimulatedLive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimulatedLive")
            .field("tasks", &state.tasks.len())
            .field("calls", &state.seq)
            .finish_non_exhaustive()
    }
}

impl Default for SimulatedLive {
    fn default() -> Self {
        SimulatedLive::new(SystemClock)
    }
}

impl SimulatedLive {
    /// A simulator with no tasks, reading time (the 10 s stream URL rule, the gateway's
    /// timestamp window, the recorded times) from `clock`.
    pub fn new(clock: impl Clock + 'static) -> Self {
        SimulatedLive {
            clock: Arc::new(clock),
            state: Mutex::new(State::default()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one call given as its wire parameters (`Action` included; common parameters such
    /// as `AccessKeyId` or `Signature` are ignored here — the HTTP gateway checks them first).
    pub fn handle(&self, params: &BTreeMap<String, String>, transport: Transport) -> SimResponse {
        let now = self.now_ms();
        let mut state = self.lock();
        let answer = match params.get("Action").map(String::as_str) {
            Some(START) => state.start(params, now),
            Some(UPDATE) => state.update(params, now),
            Some(STOP) => state.stop(params, now),
            Some(LIST_TASKS) => state.list_tasks(params),
            Some(CREATE_EVENT_SUB) => state.create_event_sub(params, now),
            Some(DELETE_EVENT_SUB) => state.delete_event_sub(params),
            Some(LIST_EVENT_SUB) => state.list_event_sub(params),
            Some(SET_NOTIFY_URL) => state.set_notify_url(params, now),
            None | Some("") => Err(Fault::missing("Action")),
            Some(_) => Err(Fault::api_not_found()),
        };
        let (response, call) = state.finish(transport, now, params, answer);
        drop(state);
        log(&call);
        response
    }

    /// Answers a call that the gateway refused before it reached the core (bad signature, …),
    /// recording and logging it like any other.
    fn reject(&self, params: &Params, transport: Transport, fault: Fault) -> SimResponse {
        let now = self.now_ms();
        let (response, call) = self.lock().finish(transport, now, params, Err(fault));
        log(&call);
        response
    }

    /// Answers `request` in-process and reads the answer exactly as [`LiveClient`] reads an HTTP
    /// answer (`response::read_answer`): the same [`Reply`] outcomes and [`MpuError`]s.
    ///
    /// [`LiveClient`]: costream_alibaba::LiveClient
    pub fn answer(&self, request: &LiveRequest) -> Result<Reply, MpuError> {
        let params = request.action_params()?;
        let response = self.handle(&params, Transport::InProcess);
        read_answer(request, response.status, None, &response.body_bytes())
    }

    /// Every running task, ordered by `(AppId, TaskId)`.
    pub fn tasks(&self) -> Vec<SimTask> {
        self.lock().tasks.values().cloned().collect()
    }

    pub fn task(&self, app_id: &str, task_id: &str) -> Option<SimTask> {
        self.lock()
            .tasks
            .get(&(app_id.to_owned(), task_id.to_owned()))
            .cloned()
    }

    /// The recorded calls, oldest first (at most [`MAX_RECORDED_CALLS`]).
    pub fn calls(&self) -> Vec<SimCall> {
        self.lock().calls.iter().cloned().collect()
    }

    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        self.lock().subscriptions.values().cloned().collect()
    }

    /// The ingest callback registrations, ordered by domain.
    pub fn notify_configs(&self) -> Vec<SimNotifyConfig> {
        self.lock().notify_configs.values().cloned().collect()
    }

    /// Ends a task the way the service does on its own (2 minutes after everyone left, or after
    /// `MaxIdleTime`): the task is gone and its stream URL is released, without any call. A
    /// later Update then finds no task. Returns the task that ended.
    pub fn end_task(&self, app_id: &str, task_id: &str) -> Option<SimTask> {
        let now = self.now_ms();
        let mut state = self.lock();
        let task = state
            .tasks
            .remove(&(app_id.to_owned(), task_id.to_owned()))?;
        for identity in &task.outputs {
            state.released.insert(identity.clone(), now);
        }
        tracing::info!(
            task_id,
            app_id,
            "simulated Live API ended a task on its own"
        );
        Some(task)
    }
}

impl LiveApi for SimulatedLive {
    fn call(&self, request: &LiveRequest) -> impl Future<Output = Result<Reply, MpuError>> + Send {
        std::future::ready(self.answer(request))
    }
}

fn log(call: &SimCall) {
    tracing::info!(
        action = %call.action,
        task_id = call.task_id.as_deref(),
        mix_mode = call.mix_mode.as_deref(),
        code = %call.code,
        http_status = call.http_status,
        summary = %call.summary,
        mpu_request_id = %call.request_id,
        transport = ?call.transport,
        "simulated Live API call"
    );
}

impl State {
    /// Numbers the answer, builds its body, and records the call.
    fn finish(
        &mut self,
        transport: Transport,
        now: u64,
        params: &Params,
        answer: Answer,
    ) -> (SimResponse, SimCall) {
        self.seq += 1;
        let request_id = format!("SIM-{}", self.seq);
        let (status, code, body) = match answer {
            Ok(mut fields) => {
                fields.insert("RequestId".into(), json!(request_id));
                (200, "OK".to_owned(), Value::Object(fields))
            }
            Err(fault) => {
                let body = json!({
                    "RequestId": request_id,
                    "HostId": HOST_ID,
                    "Code": fault.code,
                    "Message": fault.message,
                    "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}", fault.code),
                });
                (fault.status, fault.code, body)
            }
        };
        let action = params.get("Action").cloned().unwrap_or_default();
        let call = SimCall {
            seq: self.seq,
            at_ms: now,
            transport,
            summary: summary(&action, params),
            action,
            app_id: optional(params, "AppId").map(str::to_owned),
            task_id: optional(params, "TaskId").map(str::to_owned),
            mix_mode: optional(params, "MixMode").map(str::to_owned),
            http_status: status,
            code,
            request_id,
        };
        if self.calls.len() >= MAX_RECORDED_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back(call.clone());
        (SimResponse { status, body }, call)
    }

    fn start(&mut self, p: &Params, now: u64) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let channel_id = validate::id(p, "ChannelId", MAX_ID)?;
        let task_id = validate::id(p, "TaskId", MAX_TASK_ID)?;
        let mix = validate::mix(p)?;
        let output = validate::output(p)?.ok_or_else(|| {
            Fault::new(
                400,
                "MissingParam",
                "An output is mandatory: give a single output URL or a URL list.",
            )
        })?;
        let max_idle_time = validate::max_idle_time(p)?;
        let region = validate::region(p)?;
        let sei_params = validate::sei_params(p)?;
        let key = (app_id.to_owned(), task_id.to_owned());
        if self.tasks.contains_key(&key) {
            return Err(Fault::invalid("The task already exists."));
        }
        self.check_outputs_free(&output.identities, None, now)?;
        let mut task = SimTask {
            app_id: app_id.to_owned(),
            channel_id: channel_id.to_owned(),
            task_id: task_id.to_owned(),
            mix_mode: 0,
            single_sub_params: None,
            transcode_params: None,
            users: Vec::new(),
            stream_url: None,
            multi_stream_url: None,
            outputs: Vec::new(),
            sei_params,
            max_idle_time,
            region,
            started_at_ms: now,
            updated_at_ms: now,
            updates: 0,
        };
        task.set_mix(mix);
        task.set_output(output);
        self.tasks.insert(key, task);
        Ok(Map::new())
    }

    fn update(&mut self, p: &Params, now: u64) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let channel_id = validate::id(p, "ChannelId", MAX_ID)?;
        let task_id = validate::id(p, "TaskId", MAX_TASK_ID)?;
        let mix = validate::mix(p)?;
        let output = validate::output(p)?;
        let sei_params = validate::sei_params(p)?;
        let key = (app_id.to_owned(), task_id.to_owned());
        let task = self.tasks.get(&key).ok_or_else(Fault::task_absent)?;
        if task.channel_id != channel_id {
            return Err(Fault::invalid(format!(
                "ChannelId {channel_id} differs from the channel of the task ({}).",
                task.channel_id
            )));
        }
        if let Some(output) = &output {
            self.check_outputs_free(&output.identities, Some(&key), now)?;
        }
        let State {
            tasks, released, ..
        } = self;
        let task = tasks.get_mut(&key).ok_or_else(Fault::task_absent)?;
        if let Some(output) = output {
            for old in task
                .outputs
                .iter()
                .filter(|o| !output.identities.contains(o))
            {
                released.insert(old.clone(), now);
            }
            task.set_output(output);
        }
        task.set_mix(mix);
        if sei_params.is_some() {
            task.sei_params = sei_params;
        }
        task.updated_at_ms = now;
        task.updates += 1;
        Ok(Map::new())
    }

    fn stop(&mut self, p: &Params, now: u64) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let task_id = validate::id(p, "TaskId", MAX_TASK_ID)?;
        let task = self
            .tasks
            .remove(&(app_id.to_owned(), task_id.to_owned()))
            .ok_or_else(Fault::task_absent)?;
        for identity in task.outputs {
            self.released.insert(identity, now);
        }
        Ok(Map::new())
    }

    /// Fails if another task outputs to one of `identities`, or a Stop released one of them less
    /// than [`STREAM_URL_HOLD_MS`] ago.
    fn check_outputs_free(
        &mut self,
        identities: &[String],
        except: Option<&(String, String)>,
        now: u64,
    ) -> Result<(), Fault> {
        self.released
            .retain(|_, at| now.saturating_sub(*at) < STREAM_URL_HOLD_MS);
        for identity in identities {
            let in_use = self
                .tasks
                .iter()
                .any(|(key, task)| Some(key) != except && task.outputs.contains(identity));
            if in_use || self.released.contains_key(identity) {
                return Err(Fault::invalid(
                    "The StreamURL is in use or was released less than 10 seconds ago.",
                ));
            }
        }
        Ok(())
    }

    fn list_tasks(&self, p: &Params) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let tasks: Vec<Value> = match optional(p, "TaskId") {
            Some(task_id) => self
                .tasks
                .get(&(app_id.to_owned(), task_id.to_owned()))
                .map(SimTask::to_mpu_task)
                .into_iter()
                .collect(),
            None => {
                let page_no = page_number(p, "PageNo", u32::MAX)?;
                let page_size = page_number(p, "PageSize", 100)?;
                let mut of_app: Vec<&SimTask> =
                    self.tasks.values().filter(|t| t.app_id == app_id).collect();
                // Newest update first (spec §3.2); ties in a stable order.
                of_app.sort_by(|a, b| {
                    b.updated_at_ms
                        .cmp(&a.updated_at_ms)
                        .then_with(|| a.task_id.cmp(&b.task_id))
                });
                let skip = usize::try_from((u64::from(page_no) - 1) * u64::from(page_size))
                    .unwrap_or(usize::MAX);
                of_app
                    .into_iter()
                    .skip(skip)
                    .take(usize::try_from(page_size).unwrap_or(usize::MAX))
                    .map(SimTask::to_mpu_task)
                    .collect()
            }
        };
        let mut fields = Map::new();
        fields.insert("MPUTasks".into(), Value::Array(tasks));
        Ok(fields)
    }

    fn create_event_sub(&mut self, p: &Params, now: u64) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let callback_url = validate::required(p, "CallbackUrl")?;
        if !(callback_url.starts_with("http://") || callback_url.starts_with("https://")) {
            return Err(Fault::invalid("CallbackUrl must be an http(s) URL."));
        }
        let events = validate::flat_list(p, "Events");
        if events.is_empty() {
            return Err(Fault::missing("Events.1"));
        }
        if events.len() > 5
            || events
                .iter()
                .any(|e| !matches!(e.as_str(), "ChannelEvent" | "UserEvent"))
        {
            return Err(Fault::invalid(
                "Events takes at most 5 items, each ChannelEvent or UserEvent.",
            ));
        }
        let users = validate::flat_list(p, "Users");
        let channel_id = optional(p, "ChannelId")
            .filter(|c| *c != "*")
            .map(str::to_owned);
        if users.len() > 30 {
            return Err(Fault::invalid("Users takes at most 30 items."));
        }
        if !users.is_empty() && channel_id.is_none() {
            return Err(Fault::invalid(
                "ChannelId is mandatory when Users is given.",
            ));
        }
        let of_app: Vec<&SimSubscription> = self
            .subscriptions
            .values()
            .filter(|s| s.app_id == app_id)
            .collect();
        if of_app.len() >= MAX_SUBSCRIPTIONS_PER_APP {
            return Err(Fault::invalid(format!(
                "An AppId can have at most {MAX_SUBSCRIPTIONS_PER_APP} subscriptions."
            )));
        }
        if channel_id.is_none() && of_app.iter().any(|s| s.channel_id.is_none()) {
            return Err(Fault::invalid(
                "An AppId can have only one subscription to all channels.",
            ));
        }
        self.next_subscription += 1;
        let subscribe_id = format!("sim-sub-{}", self.next_subscription);
        self.subscriptions.insert(
            subscribe_id.clone(),
            SimSubscription {
                subscribe_id: subscribe_id.clone(),
                app_id: app_id.to_owned(),
                channel_id,
                callback_url: callback_url.to_owned(),
                events,
                users,
                created_at_ms: now,
            },
        );
        let mut fields = Map::new();
        fields.insert("SubscribeId".into(), json!(subscribe_id));
        Ok(fields)
    }

    fn delete_event_sub(&mut self, p: &Params) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let subscribe_id = validate::required(p, "SubscribeId")?;
        match self.subscriptions.get(subscribe_id) {
            Some(s) if s.app_id == app_id => {
                self.subscriptions.remove(subscribe_id);
                Ok(Map::new())
            }
            Some(_) | None => Err(Fault::invalid("The subscription does not exist.")),
        }
    }

    fn list_event_sub(&self, p: &Params) -> Answer {
        let app_id = validate::id(p, "AppId", MAX_ID)?;
        let subscribers: Vec<Value> = self
            .subscriptions
            .values()
            .filter(|s| s.app_id == app_id)
            .map(|s| {
                json!({
                    "SubId": s.subscribe_id,
                    "ChannelId": s.channel_id.as_deref().unwrap_or("*"),
                    "CallbackUrl": s.callback_url,
                    "Events": s.events,
                    "Users": s.users,
                    "CreateTime": beijing_time(s.created_at_ms),
                    "ModifyTime": beijing_time(s.created_at_ms),
                })
            })
            .collect();
        let mut fields = Map::new();
        fields.insert("Subscribers".into(), Value::Array(subscribers));
        Ok(fields)
    }
}

impl State {
    /// `SetLiveStreamsNotifyUrlConfig` (spec §5.1): a later call for the same domain replaces
    /// the registration. `NotifyReqAuth` is `yes` or `no` (default `no`); with `yes` the
    /// `NotifyAuthKey` must be 16 to 64 letters and digits.
    fn set_notify_url(&mut self, p: &Params, now: u64) -> Answer {
        let domain_name = validate::required(p, "DomainName")?;
        let notify_url = validate::required(p, "NotifyUrl")?;
        if !(notify_url.starts_with("http://") || notify_url.starts_with("https://")) {
            return Err(Fault::invalid("NotifyUrl must be an http(s) URL."));
        }
        let notify_req_auth = match optional(p, "NotifyReqAuth") {
            None | Some("no") => false,
            Some("yes") => true,
            Some(_) => return Err(Fault::invalid("NotifyReqAuth must be yes or no.")),
        };
        if notify_req_auth {
            let key = validate::required(p, "NotifyAuthKey")?;
            let well_formed =
                (16..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric());
            if !well_formed {
                return Err(Fault::invalid(
                    "NotifyAuthKey must be 16 to 64 letters and digits.",
                ));
            }
        }
        self.notify_configs.insert(
            domain_name.to_owned(),
            SimNotifyConfig {
                domain_name: domain_name.to_owned(),
                notify_url: notify_url.to_owned(),
                notify_req_auth,
                updated_at_ms: now,
            },
        );
        Ok(Map::new())
    }
}

/// `PageNo` / `PageSize`: required, in `1..=max`.
fn page_number(p: &Params, name: &str, max: u32) -> Result<u32, Fault> {
    validate::required(p, name)?
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| Fault::invalid(format!("{name} must be an integer in [1, {max}].")))
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8, the time format of `ListEventSub` (spec §4.1).
fn beijing_time(ms: u64) -> String {
    let utc = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = utc.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A one-line description of what a call asked for, read leniently from the raw parameters (so
/// a rejected call still shows what was sent).
fn summary(action: &str, p: &Params) -> String {
    let json = |name: &str| optional(p, name).and_then(|t| serde_json::from_str::<Value>(t).ok());
    match action {
        START | UPDATE => {
            let mix = match optional(p, "MixMode") {
                Some("0") => {
                    let user = json("SingleSubParams")
                        .and_then(|v| v.get("UserId").and_then(validate::text))
                        .unwrap_or_else(|| "?".to_owned());
                    format!("single {user}")
                }
                Some("1") => {
                    let users = json("TranscodeParams")
                        .map(|v| validate::mix_users(&v))
                        .unwrap_or_default();
                    if users.is_empty() {
                        "mix (all users)".to_owned()
                    } else {
                        format!("mix {}", users.join(","))
                    }
                }
                Some(other) => format!("MixMode {other}"),
                None => "no MixMode".to_owned(),
            };
            let output = optional(p, "StreamURL")
                .map(|u| validate::rtmp_identity(u).unwrap_or_else(|_| u.to_owned()));
            match output {
                Some(url) => format!("{mix} -> {url}"),
                None => mix,
            }
        }
        STOP => "stop".to_owned(),
        LIST_TASKS => match optional(p, "TaskId") {
            Some(task) => format!("task {task}"),
            None => format!(
                "page {} size {}",
                optional(p, "PageNo").unwrap_or("?"),
                optional(p, "PageSize").unwrap_or("?")
            ),
        },
        CREATE_EVENT_SUB => format!(
            "{} {} -> {}",
            optional(p, "ChannelId").unwrap_or("*"),
            validate::flat_list(p, "Events").join(","),
            optional(p, "CallbackUrl").unwrap_or("?")
        ),
        DELETE_EVENT_SUB => format!("delete {}", optional(p, "SubscribeId").unwrap_or("?")),
        // Never the NotifyAuthKey.
        SET_NOTIFY_URL => format!(
            "{} -> {} (auth {})",
            optional(p, "DomainName").unwrap_or("?"),
            optional(p, "NotifyUrl").unwrap_or("?"),
            optional(p, "NotifyReqAuth").unwrap_or("no")
        ),
        _ => String::new(),
    }
}
