//! The MPU port's real adapter: the core's [`Command`]s as Live API requests, with Alibaba's
//! idempotency rules applied (Start of an existing task → Update it to the target; Stop of a
//! missing task → done; Update of a missing task → [`MpuDone::TaskMissing`]), and the stream
//! naming rule that maps a CDN stream back to its room without a lookup table.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::ports::{
    Clock, ListedTask, Listing, MpuDone, MpuFailure, MpuFailureKind, MpuPort, RoomKey,
};
use costream_alibaba::request::{
    Background, EncodeParams, Fraction, ListRtcMpuTaskDetail, Mix, MixLayout, MpuRegion,
    MultiStreamUrl, PaneUserInfo, RenderMode as WireRenderMode, RequestError, SingleSubParams,
    SourceType, StartLiveMpuTask, StopLiveMpuTask, StreamOutput, StreamType, TaskSelector,
    TranscodeParams, UpdateLiveMpuTask, UserInfo, UserPane, VideoCodec as WireCodec,
};
use costream_alibaba::urls::StreamLocation;
use costream_alibaba::{LiveApi, LiveRequest, MpuError, Outcome};
use costream_core::{
    AppId, ChannelId, Command, DecisionConfig, Frac, Layout, MixMode, Outputs, RenderMode, Shape,
    Source, TaskId, Timestamp, Version, VideoCodec,
};

/// The suffix that turns a channel id into its CDN stream name.
pub const STREAM_SUFFIX: &str = "_main";

/// The CDN stream name of a room: `<ChannelId>_main`. One stream per room, so viewers' URLs stay
/// the same across MixMode switches, and [`channel_of_stream`] maps it back without a lookup.
pub fn stream_name(channel: &ChannelId) -> String {
    format!("{channel}{STREAM_SUFFIX}")
}

/// The room of a CDN stream name (the inverse of [`stream_name`]), or `None` if the name is not
/// one of ours.
pub fn channel_of_stream(stream: &str) -> Option<ChannelId> {
    let channel = stream.strip_suffix(STREAM_SUFFIX)?;
    ChannelId::parse(channel).ok()
}

/// Where the mixed stream goes: the ingest domain, app name and URL-signing key.
#[derive(Clone)]
pub struct IngestSettings {
    pub push_domain: String,
    pub app_name: String,
    /// Type-A auth key of the ingest domain (`None` if URL signing is off there).
    pub push_auth_key: Option<SecretString>,
    /// How far ahead the signed StreamURL's timestamp is set. The MPU service reconnects with the
    /// same URL for the task's life, so this is long.
    pub url_validity: Duration,
}

impl std::fmt::Debug for IngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSettings")
            .field("push_domain", &self.push_domain)
            .field("app_name", &self.app_name)
            .field(
                "push_auth_key",
                &self.push_auth_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("url_validity", &self.url_validity)
            .finish()
    }
}

impl IngestSettings {
    /// The StreamURL of a room, signed when a key is configured.
    pub fn stream_url(&self, channel: &ChannelId, now_secs: u64) -> Result<String, MpuError> {
        let stream = stream_name(channel);
        let loc = StreamLocation {
            domain: &self.push_domain,
            app_name: &self.app_name,
            stream_name: &stream,
        };
        match &self.push_auth_key {
            None => Ok(loc.ingest_url()),
            Some(key) => loc
                .signed_ingest_url(key.expose_secret(), now_secs + self.url_validity.as_secs())
                .map_err(|source| {
                    MpuError::Request(RequestError::StreamUrl {
                        action: "StartLiveMPUTask",
                        source,
                    })
                }),
        }
    }
}

/// Everything the adapter needs besides the client.
#[derive(Debug, Clone)]
pub struct MpuSettings {
    pub app_id: AppId,
    pub ingest: IngestSettings,
    pub decision: DecisionConfig,
    pub region: Option<MpuRegion>,
    /// A Start rejected because its StreamURL is still held (Alibaba forbids reusing it within
    /// 10 s of a Stop) is retried for up to this long.
    pub stream_url_wait: Duration,
}

/// The Live API behind the [`MpuPort`].
#[derive(Debug, Clone)]
pub struct AlibabaMpu<L, C> {
    api: L,
    clock: C,
    settings: Arc<MpuSettings>,
}

impl<L: LiveApi + Send + Sync, C: Clock> AlibabaMpu<L, C> {
    pub fn new(api: L, clock: C, settings: MpuSettings) -> Self {
        AlibabaMpu {
            api,
            clock,
            settings: Arc::new(settings),
        }
    }

    pub fn api(&self) -> &L {
        &self.api
    }

    pub fn settings(&self) -> &MpuSettings {
        &self.settings
    }

    /// The Start request for a room's task.
    pub fn start_request(
        &self,
        room: &RoomKey,
        task: &str,
        shape: &Shape,
        outputs: &Outputs,
    ) -> Result<LiveRequest, MpuError> {
        Ok(LiveRequest::Start(StartLiveMpuTask {
            app_id: self.settings.app_id.to_string(),
            channel_id: room.channel.to_string(),
            task_id: task.to_owned(),
            mix: mix(shape, &self.settings.decision),
            output: self.output(room, outputs)?,
            max_idle_time: self.settings.decision.max_idle_time,
            region: self.settings.region,
            sei: None,
        }))
    }

    /// The Update request: always the complete target parameters.
    pub fn update_request(
        &self,
        room: &RoomKey,
        task: &str,
        shape: &Shape,
    ) -> Result<LiveRequest, MpuError> {
        Ok(LiveRequest::Update(UpdateLiveMpuTask {
            app_id: self.settings.app_id.to_string(),
            channel_id: room.channel.to_string(),
            task_id: task.to_owned(),
            mix: mix(shape, &self.settings.decision),
            output: None,
            sei: None,
        }))
    }

    /// The re-signing Update, also the one that changes the task's outputs: the complete
    /// parameters of `shape` and the complete output list with a freshly signed own URL
    /// (Update accepts `StreamURL` and `MultiStreamURL`, spec §9.1; the mode is always sent with
    /// it so the Update can't be read as a switch to mixing).
    pub fn refresh_request(
        &self,
        room: &RoomKey,
        task: &str,
        shape: &Shape,
        outputs: &Outputs,
    ) -> Result<LiveRequest, MpuError> {
        Ok(LiveRequest::Update(UpdateLiveMpuTask {
            app_id: self.settings.app_id.to_string(),
            channel_id: room.channel.to_string(),
            task_id: task.to_owned(),
            mix: mix(shape, &self.settings.decision),
            output: Some(self.output(room, outputs)?),
            sei: None,
        }))
    }

    /// Where the task pushes: the room's own (freshly signed) CDN URL alone as `StreamURL`, or,
    /// with restreaming targets, `MultiStreamURL` — ours first with `IsAliCdn` true, then each
    /// extra one with `IsAliCdn` false (the two are mutually exclusive, spec §3.1).
    fn output(&self, room: &RoomKey, outputs: &Outputs) -> Result<StreamOutput, MpuError> {
        let own = self
            .settings
            .ingest
            .stream_url(&room.channel, self.clock.now_ms() / 1000)?;
        if outputs.is_empty() {
            return Ok(StreamOutput::Url(own));
        }
        Ok(StreamOutput::Multi(
            std::iter::once(MultiStreamUrl {
                is_ali_cdn: true,
                url: own,
            })
            .chain(outputs.urls().iter().map(|u| MultiStreamUrl {
                is_ali_cdn: false,
                url: u.expose().to_owned(),
            }))
            .collect(),
        ))
    }

    async fn start(
        &self,
        room: &RoomKey,
        task: &str,
        shape: &Shape,
        outputs: &Outputs,
    ) -> Result<MpuDone, MpuFailure> {
        let request = self
            .start_request(room, task, shape, outputs)
            .map_err(|e| failure("start", &e))?;
        // Bounded by wall time, not by the sleeps: each busy answer can itself take up to the
        // client's deadline, and the whole Start must stay within `stream_url_wait` plus one call
        // (the function Timeouts and the lease are sized for that).
        let wait = self.settings.stream_url_wait;
        let first = tokio::time::Instant::now();
        let mut looked_for_orphans = false;
        let reply = loop {
            let answer = self.api.call(&request).await;
            let elapsed = first.elapsed();
            match answer {
                Err(e) if stream_url_busy(&e) && elapsed < wait => {
                    if !looked_for_orphans {
                        // The room's one stream URL may be held by a task of this room that was
                        // never recorded (its Start landed, the record write did not: a crash or
                        // a store timeout). The target is `task`, so any other task of this room
                        // must go; its URL is then free after Alibaba's 10 s hold.
                        looked_for_orphans = true;
                        if let Err(e) = self.stop_other_tasks(room, task).await {
                            tracing::warn!(error = %e, "could not look for unrecorded tasks");
                        }
                    }
                    tracing::warn!(
                        task_id = task,
                        waited_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                        "stream URL still held after a stop; retrying"
                    );
                    tokio::time::sleep(STREAM_URL_RETRY.min(wait - elapsed)).await;
                }
                other => break other.map_err(|e| failure("start", &e))?,
            }
        };
        match reply.outcome {
            Outcome::AlreadyExists => {
                // A retried Start (or a task Alibaba has not cleared): make it match the target.
                // Like every Start (restarts and heals included), it carries a freshly signed
                // StreamURL: whatever URL the task had may be near its expiry. And the outputs:
                // whatever the task pushes to now may be an older list.
                tracing::info!(
                    task_id = task,
                    "task already exists; updating it to the target"
                );
                let resend = self.settings.ingest.push_auth_key.is_some() || !outputs.is_empty();
                self.update(room, task, shape, outputs, resend).await
            }
            Outcome::Applied => Ok(MpuDone::Done {
                request_id: reply.request_id,
                fresh_url: true,
            }),
            Outcome::AlreadyStopped => Ok(MpuDone::Done {
                request_id: reply.request_id,
                fresh_url: false,
            }),
            Outcome::TaskNotFound { .. } => Ok(MpuDone::TaskMissing),
        }
    }

    /// An Update (with a freshly signed StreamURL when `resign`). "Task not found" is confirmed by
    /// asking for the task by its TaskId before it is reported as missing: an answer that does
    /// not confirm it is a (retryable) refusal, so the room is marked for repair instead of
    /// recorded as having no task.
    async fn update(
        &self,
        room: &RoomKey,
        task: &str,
        shape: &Shape,
        outputs: &Outputs,
        resign: bool,
    ) -> Result<MpuDone, MpuFailure> {
        let request = if resign {
            self.refresh_request(room, task, shape, outputs)
        } else {
            self.update_request(room, task, shape)
        }
        .map_err(|e| failure("update", &e))?;
        let reply = self
            .api
            .call(&request)
            .await
            .map_err(|e| failure("update", &e))?;
        match reply.outcome {
            Outcome::TaskNotFound { .. } => self.confirm_missing(task).await,
            Outcome::Applied | Outcome::AlreadyExists | Outcome::AlreadyStopped => {
                Ok(MpuDone::Done {
                    request_id: reply.request_id,
                    fresh_url: resign,
                })
            }
        }
    }

    /// After an Update answered "task not found": [`MpuDone::TaskMissing`] only if
    /// `ListRtcMPUTaskDetail(TaskId)` agrees.
    async fn confirm_missing(&self, task: &str) -> Result<MpuDone, MpuFailure> {
        let unclear = |reason: String| MpuFailure {
            // The Update itself certainly did nothing (it found no task); only whether the task
            // exists is unclear, and the repair loop asks again.
            kind: MpuFailureKind::Refused { retryable: true },
            action: "update",
            reason,
        };
        match self.find(task).await {
            Ok(None) => Ok(MpuDone::TaskMissing),
            Ok(Some(_)) => Err(unclear(format!(
                "Update answered that task {task} does not exist, but ListRtcMPUTaskDetail lists it"
            ))),
            Err(e) => Err(unclear(format!(
                "Update answered that task {task} does not exist; the confirmation failed: {e}"
            ))),
        }
    }

    /// The task `task` as `ListRtcMPUTaskDetail(TaskId)` shows it, if it exists.
    async fn find(&self, task: &str) -> Result<Option<serde_json::Value>, MpuError> {
        let list = LiveRequest::ListTasks(ListRtcMpuTaskDetail {
            app_id: self.settings.app_id.to_string(),
            selector: TaskSelector::Task(task.to_owned()),
        });
        let reply = self.api.call(&list).await?;
        Ok(reply.body["MPUTasks"].as_array().and_then(|tasks| {
            tasks
                .iter()
                .find(|t| t["TaskId"].as_str() == Some(task))
                .cloned()
        }))
    }

    /// Every task of the app, page by page (newest update first), classified.
    async fn list_all(&self) -> Result<Listing, MpuError> {
        let mut listing = Listing::default();
        let mut seen = std::collections::HashSet::new();
        for page_no in 1..=MAX_LIST_PAGES {
            let list = LiveRequest::ListTasks(ListRtcMpuTaskDetail {
                app_id: self.settings.app_id.to_string(),
                selector: TaskSelector::Page {
                    page_no,
                    page_size: LIST_PAGE_SIZE,
                },
            });
            let reply = self.api.call(&list).await?;
            let tasks = reply.body["MPUTasks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for t in &tasks {
                match listed_task(t) {
                    // A task updated while we page moves to page 1 and may show up twice.
                    Listed::Ours(task) if seen.insert(task.task.clone()) => {
                        listing.tasks.push(task);
                    }
                    Listed::Ours(_) => {}
                    Listed::Foreign => listing.foreign += 1,
                    Listed::Malformed => listing.malformed += 1,
                }
            }
            if tasks.len() < LIST_PAGE_SIZE as usize {
                listing.complete = true;
                break;
            }
        }
        Ok(listing)
    }

    /// Stops every task of `room` except `keep` that the Live API lists for the app: tasks of
    /// this channel named the costream way (`<channel>_<secs>`, see `TaskId::for_broadcast`).
    /// Tasks of other channels, or not named by costream, are never touched. Returns how many
    /// were stopped.
    async fn stop_other_tasks(&self, room: &RoomKey, keep: &str) -> Result<usize, MpuError> {
        let listing = self.list_all().await?;
        let mut stopped = 0;
        for t in listing
            .tasks
            .iter()
            .filter(|t| t.channel == room.channel && t.task.as_str() != keep)
        {
            tracing::warn!(
                task_id = %t.task,
                kept = keep,
                "stopping a task of this room that was never recorded"
            );
            self.stop(t.task.as_str()).await?;
            stopped += 1;
        }
        Ok(stopped)
    }

    /// The Stop request.
    pub fn stop_request(&self, task: &str) -> LiveRequest {
        LiveRequest::Stop(StopLiveMpuTask {
            app_id: self.settings.app_id.to_string(),
            task_id: task.to_owned(),
        })
    }

    async fn stop(&self, task: &str) -> Result<MpuDone, MpuError> {
        let reply = self.api.call(&self.stop_request(task)).await?;
        Ok(MpuDone::Done {
            request_id: reply.request_id,
            fresh_url: false,
        })
    }
}

/// `ListRtcMPUTaskDetail` page size (the API's maximum) and how many pages one search reads.
const LIST_PAGE_SIZE: u32 = 100;
const MAX_LIST_PAGES: u32 = 10;

/// Whether `task_id` is the costream name of a task of `channel` (`<channel>_<secs>`).
fn is_task_of(channel: &ChannelId, task_id: &str) -> bool {
    task_id
        .rsplit_once('_')
        .and_then(|(_, secs)| secs.parse::<u64>().ok())
        .is_some_and(|secs| {
            TaskId::for_broadcast(channel, Timestamp::from_secs(secs)).as_str() == task_id
        })
}

enum Listed {
    Ours(ListedTask),
    Foreign,
    Malformed,
}

/// One entry of a `ListRtcMPUTaskDetail` answer: costream's (its `TaskId` is the costream name
/// for its `ChannelId`), someone else's, or unusable (no ids, ids that are not valid).
fn listed_task(t: &serde_json::Value) -> Listed {
    let (Some(channel), Some(task_id)) = (t["ChannelId"].as_str(), t["TaskId"].as_str()) else {
        return Listed::Malformed;
    };
    let (Ok(channel), Ok(task)) = (ChannelId::parse(channel), TaskId::parse(task_id)) else {
        return Listed::Malformed;
    };
    if !is_task_of(&channel, task_id) {
        return Listed::Foreign;
    }
    let mix_mode = match t["MixMode"].as_str() {
        Some("0") => Some(MixMode::Single),
        Some("1") => Some(MixMode::Mixed),
        _ => None,
    };
    let users = match mix_mode {
        Some(MixMode::Single) => t["SingleSubParams"]["UserId"]
            .as_str()
            .map(str::to_owned)
            .into_iter()
            .collect(),
        _ => t["TranscodeParams"]["UserInfos"]
            .as_array()
            .map(|infos| {
                infos
                    .iter()
                    .filter_map(|u| u["UserId"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let extra_outputs = match (t.get("MultiStreamURL"), t.get("StreamURL")) {
        (Some(multi), _) => listed_outputs(multi, &channel),
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => None,
    };
    Listed::Ours(ListedTask {
        channel,
        task,
        mix_mode,
        users,
        extra_outputs,
    })
}

/// The restreaming URLs of a listed `MultiStreamURL` (a JSON array, or a JSON string holding
/// one): every entry but the room's own CDN stream, known by `IsAliCdn` or by its stream name
/// (`<channel>_main`), however the flag is spelled. `None` if it can't be read, so nothing is
/// concluded from it.
fn listed_outputs(multi: &serde_json::Value, channel: &ChannelId) -> Option<Vec<String>> {
    let parsed;
    let list = match multi {
        serde_json::Value::String(text) => {
            parsed = serde_json::from_str::<serde_json::Value>(text).ok()?;
            parsed.as_array()?
        }
        other => other.as_array()?,
    };
    let own = format!("/{}", stream_name(channel));
    let ours = |t: &serde_json::Value| {
        let flag = match &t["IsAliCdn"] {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let path = t["URL"].as_str().unwrap_or_default().split('?').next();
        flag || path.is_some_and(|p| p.ends_with(&own))
    };
    list.iter()
        .filter(|t| !ours(t))
        .map(|t| t["URL"].as_str().map(str::to_owned))
        .collect()
}

/// How often a Start whose StreamURL is still held is retried.
const STREAM_URL_RETRY: Duration = Duration::from_secs(1);

/// Whether a Start failed because the StreamURL is still in use (another task, or within 10 s of
/// a Stop): a parameter rejection (`InvalidParam`) whose message names the StreamURL. The exact
/// wording is undocumented, so the message is matched loosely; the code keeps e.g. a permission
/// error that mentions the URL from being waited on.
fn stream_url_busy(e: &MpuError) -> bool {
    match e {
        MpuError::Rejected { code, message, .. }
            if code == "InvalidParam" || code.starts_with("InvalidParam.") =>
        {
            let m = message.to_ascii_lowercase();
            m.contains("streamurl") || m.contains("stream url")
        }
        _ => false,
    }
}

impl<L: LiveApi + Send + Sync, C: Clock> MpuPort for AlibabaMpu<L, C> {
    async fn execute(
        &self,
        room: &RoomKey,
        command: &Command,
        _version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        match command {
            Command::Start {
                task,
                shape,
                outputs,
            } => self.start(room, task.as_str(), shape, outputs).await,
            Command::Update {
                task,
                shape,
                outputs,
                set_outputs,
            } => {
                self.update(room, task.as_str(), shape, outputs, *set_outputs)
                    .await
            }
            Command::Stop { task } => self
                .stop(task.as_str())
                .await
                .map_err(|e| failure("stop", &e)),
        }
    }

    async fn list_tasks(&self) -> Result<Listing, MpuFailure> {
        self.list_all().await.map_err(|e| failure("list", &e))
    }

    async fn task_exists(&self, task: &TaskId) -> Result<bool, MpuFailure> {
        self.find(task.as_str())
            .await
            .map(|t| t.is_some())
            .map_err(|e| failure("list", &e))
    }

    async fn refresh_output(
        &self,
        room: &RoomKey,
        task: &TaskId,
        shape: &Shape,
        outputs: &Outputs,
        _version: Version,
    ) -> Result<MpuDone, MpuFailure> {
        self.update(room, task.as_str(), shape, outputs, true).await
    }
}

/// The port's view of a Live API error: may it still land, may a retry help. The reason is the
/// error's own (redacted) text and code, for logs.
pub fn failure(action: &'static str, e: &MpuError) -> MpuFailure {
    let kind = if e.is_definite() {
        MpuFailureKind::Refused {
            retryable: e.is_retryable(),
        }
    } else {
        MpuFailureKind::InDoubt
    };
    MpuFailure {
        kind,
        action,
        reason: e.to_string(),
    }
}

fn frac(f: Frac) -> Fraction {
    // units/10000 prints as the shortest decimal ("0.5", "0.3333"), like the SDK's callers.
    Fraction::new(f.as_f64()).expect("a Frac is within [0, 1] by construction")
}

fn render(mode: RenderMode) -> WireRenderMode {
    match mode {
        RenderMode::Fit => WireRenderMode::Fit,
        RenderMode::Crop => WireRenderMode::Crop,
    }
}

/// The MixMode and its parameters for a task shape.
pub fn mix(shape: &Shape, cfg: &DecisionConfig) -> Mix {
    match shape {
        Shape::Single { user } => Mix::Single(SingleSubParams::camera(user.as_str())),
        Shape::Mixed { layout } => Mix::Transcode(transcode(layout, cfg)),
        // Voice rooms (spec §9.2): the audio track only; an audio-only mix has no Layout and
        // only the audio encode parameters.
        Shape::Voice { user } => Mix::Single(SingleSubParams {
            stream_type: Some(StreamType::AudioOnly),
            ..SingleSubParams::camera(user.as_str())
        }),
        Shape::VoiceMix { users } => Mix::Transcode(TranscodeParams {
            background: None,
            encode_params: EncodeParams {
                audio_bitrate: Some(cfg.encode.audio_bitrate_kbps),
                audio_channels: Some(cfg.encode.audio_channels),
                audio_only: Some(true),
                audio_sample_rate: Some(cfg.encode.audio_sample_rate),
                ..EncodeParams::default()
            },
            layout: None,
            user_infos: users
                .iter()
                .map(|u| UserInfo {
                    stream_type: Some(StreamType::AudioOnly),
                    ..UserInfo::camera(u.as_str())
                })
                .collect(),
        }),
    }
}

fn transcode(layout: &Layout, cfg: &DecisionConfig) -> TranscodeParams {
    let enc = cfg.encode;
    let user_panes = layout
        .panes
        .iter()
        .map(|p| UserPane {
            background_image_url: p.placeholder.as_ref().map(|u| u.as_str().to_owned()),
            height: frac(p.height),
            render_mode: Some(render(p.render_mode)),
            user_info: Some(PaneUserInfo {
                channel_id: p.channel.as_ref().map(ToString::to_string),
                source_type: Some(match p.source {
                    Source::Camera => SourceType::Camera,
                    Source::Screen => SourceType::ShareScreen,
                }),
                user_id: p.user.as_str().to_owned(),
            }),
            width: frac(p.width),
            x: frac(p.x),
            y: frac(p.y),
            z_order: u32::from(p.z_order),
        })
        .collect();
    TranscodeParams {
        background: layout.background.as_ref().map(|u| Background {
            render_mode: Some(WireRenderMode::Crop),
            url: u.as_str().to_owned(),
        }),
        encode_params: EncodeParams {
            audio_bitrate: Some(enc.audio_bitrate_kbps),
            audio_channels: Some(enc.audio_channels),
            audio_only: Some(false),
            audio_sample_rate: Some(enc.audio_sample_rate),
            enhanced_param: None,
            video_bitrate: Some(enc.bitrate_kbps),
            video_codec: Some(match enc.codec {
                VideoCodec::H264 => WireCodec::H264,
                VideoCodec::H265 => WireCodec::H265,
            }),
            video_framerate: Some(enc.fps),
            video_gop: Some(enc.gop),
            video_height: Some(layout.canvas.height()),
            video_width: Some(layout.canvas.width()),
        },
        layout: Some(MixLayout { user_panes }),
        user_infos: user_infos(layout),
    }
}

/// Whom the mix subscribes to, and to which tracks:
/// - a camera pane's user: audio and video (`StreamType` 0);
/// - a shared screen: a video track (`StreamType` 2, `SourceType` shareScreen; `SourceType`
///   applies only to video tracks, spec §9.3);
/// - everyone heard without a camera pane (a sharer shown only by their screen, a co-host hidden
///   with the camera off): the audio (`StreamType` 1).
fn user_infos(layout: &Layout) -> Vec<UserInfo> {
    let mut infos: Vec<UserInfo> = Vec::new();
    // (user, channel) of the camera tracks subscribed: a PK peer's host may share a user id
    // with someone in this room.
    let mut with_camera: Vec<(&str, Option<&str>)> = Vec::new();
    for p in &layout.panes {
        let user = p.user.as_str();
        let channel = p.channel.as_ref().map(ChannelId::as_str);
        let info = |stream_type, source_type| UserInfo {
            channel_id: channel.map(str::to_owned),
            source_type: Some(source_type),
            stream_type: Some(stream_type),
            user_id: user.to_owned(),
        };
        match p.source {
            Source::Camera if !with_camera.contains(&(user, channel)) => {
                with_camera.push((user, channel));
                infos.push(info(StreamType::Original, SourceType::Camera));
            }
            Source::Camera => {}
            Source::Screen => infos.push(info(StreamType::VideoOnly, SourceType::ShareScreen)),
        }
    }
    // Everyone heard without a camera pane of their own: a sharer shown only by their screen,
    // co-hosts hidden with the camera off (all of this room).
    let screens = layout
        .panes
        .iter()
        .filter(|p| p.source == Source::Screen)
        .map(|p| (&p.user, p.channel.as_ref()));
    let heard = layout.audio.iter().map(|u| (u, None));
    let mut audio_only: Vec<(&str, Option<&str>)> = Vec::new();
    for (user, channel) in screens.chain(heard) {
        let key = (user.as_str(), channel.map(ChannelId::as_str));
        if !with_camera.contains(&key) && !audio_only.contains(&key) {
            audio_only.push(key);
            infos.push(UserInfo {
                channel_id: key.1.map(str::to_owned),
                stream_type: Some(StreamType::AudioOnly),
                ..UserInfo::camera(key.0)
            });
        }
    }
    infos
}

#[cfg(test)]
mod tests;
