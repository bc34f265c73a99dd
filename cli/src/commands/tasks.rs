//! `costream tasks` (ListRtcMPUTaskDetail) and `costream stop` (StopLiveMPUTask), spec §3.2.

use anyhow::bail;
use clap::Args;
use costream_alibaba::request::{ListRtcMpuTaskDetail, StopLiveMpuTask, TaskSelector};
use costream_alibaba::Outcome;
use serde::Serialize;
use serde_json::Value;

use super::live::{check_id, mask_auth_key, AppIdArg, Live};

/// Longest TaskId the Live API accepts.
pub const MAX_TASK_ID: usize = 55;
/// Largest page ListRtcMPUTaskDetail returns.
pub const MAX_PAGE_SIZE: u32 = 100;

/// List the app's bypass-streaming (MPU) tasks (ListRtcMPUTaskDetail)
///
/// Prints {"tasks": [...]}, each task as Alibaba describes it: ChannelId, TaskId, MixMode, the
/// layout (TranscodeParams or SingleSubParams), StreamURL, MaxIdleTime, Region. The answer has no
/// running/stopped status: a listed task exists. The auth_key hash of stream URLs is masked (the
/// expiry timestamp stays visible).
///
/// --task-id asks for one task; otherwise one page of all tasks, most recently updated first.
///
/// Signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (and
/// ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials); ALIBABA_CLOUD_LIVE_ENDPOINT overrides the
/// endpoint. The AppId is --app-id or COSTREAM_APP_ID.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TasksArgs {
    #[command(flatten)]
    pub app: AppIdArg,
    /// Only this task (TaskId).
    #[arg(long, value_name = "TASK_ID", conflicts_with_all = ["page", "page_size"])]
    pub task_id: Option<String>,
    /// Page number, from 1.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub page: u32,
    /// Tasks per page, 1-100.
    #[arg(long, value_name = "N", default_value_t = MAX_PAGE_SIZE)]
    pub page_size: u32,
}

/// Stop a bypass-streaming (MPU) task (StopLiveMPUTask)
///
/// The CDN stream of the task ends. Stopping a task that is not running is not an error: the
/// output says "already_stopped" instead of "stopped". Note that a room that is still live
/// starts its task again on its next callback.
///
/// Signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (and
/// ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials); ALIBABA_CLOUD_LIVE_ENDPOINT overrides the
/// endpoint. The AppId is --app-id or COSTREAM_APP_ID.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StopArgs {
    #[command(flatten)]
    pub app: AppIdArg,
    /// The task to stop (TaskId, as listed by `costream tasks`).
    #[arg(value_name = "TASK_ID")]
    pub task_id: String,
}

#[derive(Debug, Serialize)]
struct Listed {
    tasks: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct Stopped<'a> {
    task_id: &'a str,
    /// `stopped`, or `already_stopped` when the task did not exist.
    result: &'static str,
}

/// Builds the request from the arguments.
pub fn list_request(app_id: String, args: &TasksArgs) -> anyhow::Result<ListRtcMpuTaskDetail> {
    let selector = match &args.task_id {
        Some(task_id) => {
            check_id("--task-id", task_id, MAX_TASK_ID)?;
            TaskSelector::Task(task_id.clone())
        }
        None => {
            if args.page == 0 {
                bail!("--page counts from 1");
            }
            if !(1..=MAX_PAGE_SIZE).contains(&args.page_size) {
                bail!("--page-size must be between 1 and {MAX_PAGE_SIZE}");
            }
            TaskSelector::Page {
                page_no: args.page,
                page_size: args.page_size,
            }
        }
    };
    Ok(ListRtcMpuTaskDetail { app_id, selector })
}

pub fn run_tasks(args: &TasksArgs) -> anyhow::Result<()> {
    let request = list_request(args.app.resolve()?, args)?;
    let selector = request.selector.clone();
    let live = Live::from_env()?;
    let reply = live.call(&request.into())?;
    let tasks: Vec<Value> = match reply.body.get("MPUTasks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(mask_task).collect(),
        Some(_) => bail!("ListRtcMPUTaskDetail answered with MPUTasks that is not a list"),
    };
    if let TaskSelector::Page { page_no, page_size } = selector {
        if u32::try_from(tasks.len()).is_ok_and(|n| n >= page_size) {
            eprintln!(
                "note: the page is full; more tasks may follow: --page {}",
                page_no.saturating_add(1)
            );
        }
    }
    super::print_json(&Listed { tasks })
}

/// A task as Alibaba lists it, with the `auth_key` hash of its output URLs masked.
fn mask_task(task: &Value) -> Value {
    let mut task = task.clone();
    if let Some(url) = task.get_mut("StreamURL") {
        mask_string(url);
    }
    // The list may come as a JSON array or as a string holding one.
    if let Some(multi) = task.get_mut("MultiStreamURL") {
        if let Some(parsed) = multi
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        {
            *multi = parsed;
        }
        match multi {
            Value::Array(targets) => {
                for target in targets {
                    let ours = target["IsAliCdn"] == Value::Bool(true);
                    if let Some(url) = target.get_mut("URL") {
                        if ours {
                            mask_string(url);
                        } else {
                            mask_restream(url);
                        }
                    }
                }
            }
            // Unreadable: show nothing of it.
            other => *other = Value::String("***".into()),
        }
    }
    task
}

/// Another platform's ingest URL carries its stream key: only `rtmp://host/app/***`.
fn mask_restream(value: &mut Value) {
    let shown = value
        .as_str()
        .and_then(|u| costream_core::OutputUrl::parse(u).ok())
        .map_or_else(|| "***".to_owned(), |u| u.masked());
    *value = Value::String(shown);
}

fn mask_string(value: &mut Value) {
    if let Some(text) = value.as_str() {
        *value = Value::String(mask_auth_key(text));
    }
}

pub fn run_stop(args: &StopArgs) -> anyhow::Result<()> {
    let app_id = args.app.resolve()?;
    check_id("TASK_ID", &args.task_id, MAX_TASK_ID)?;
    let live = Live::from_env()?;
    let reply = live.call(
        &StopLiveMpuTask {
            app_id,
            task_id: args.task_id.clone(),
        }
        .into(),
    )?;
    let result = match reply.outcome {
        Outcome::AlreadyStopped => {
            eprintln!(
                "task {} was not running: already stopped, nothing to do",
                args.task_id
            );
            "already_stopped"
        }
        Outcome::Applied => "stopped",
        other => bail!("StopLiveMPUTask answered with an unexpected outcome: {other}"),
    };
    super::print_json(&Stopped {
        task_id: &args.task_id,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listed tasks never show a restream stream key or our signature, whichever form the
    /// MultiStreamURL comes in.
    #[test]
    fn listed_outputs_are_masked_in_both_forms() {
        let list = serde_json::json!([
            {"IsAliCdn": true, "URL": "rtmp://push.example.com/live/r_main?auth_key=1-0-0-abcdef"},
            {"IsAliCdn": false, "URL": "rtmp://a.rtmp.youtube.com/live2/yt-secret"},
        ]);
        for multi in [list.clone(), Value::String(list.to_string())] {
            let shown = mask_task(&serde_json::json!({"TaskId": "r_1", "MultiStreamURL": multi}))
                .to_string();
            assert!(!shown.contains("yt-secret"), "{shown}");
            assert!(!shown.contains("abcdef"), "{shown}");
            assert!(
                shown.contains("rtmp://a.rtmp.youtube.com/live2/***"),
                "{shown}"
            );
        }
        let odd = mask_task(&serde_json::json!({"MultiStreamURL": 5}));
        assert_eq!(odd["MultiStreamURL"], "***");
    }
}
