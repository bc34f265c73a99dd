//! `costream subscribe`: ARTC room callbacks (CreateEventSub), and `subscribe list|delete`
//! (ListEventSub / DeleteEventSub), spec §4.1.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use costream_alibaba::request::{CreateEventSub, DeleteEventSub, EventKind, ListEventSub};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use serde_json::Value;

use super::live::{check_http_url, check_id, mask_url, AppIdArg, Live};

/// Most users one subscription may name (spec §4.1).
pub const MAX_USERS: usize = 30;
/// Most event families one subscription may name (spec §4.1).
pub const MAX_EVENTS: usize = 5;

/// Subscribe to ARTC room callbacks (CreateEventSub), or list / delete subscriptions
///
/// Without a subcommand, creates a subscription: Alibaba then POSTs the room's ChannelEvent and
/// UserEvent callbacks (join, publish, leave, ...) to --callback-url, and this prints
/// {"subscribe_id": "..."}. Without --channel it covers every channel of the app (one such
/// subscription per AppId); --users narrows it to those users of one --channel.
///
/// Signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (and
/// ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials); ALIBABA_CLOUD_LIVE_ENDPOINT overrides the
/// endpoint (https://live.aliyuncs.com/). The AppId is --app-id or COSTREAM_APP_ID.
///
/// costream's callback URL carries its secret in the last path segment: it is never printed,
/// and `subscribe list` shows callback URLs with that segment and any query masked.
///
/// Examples:
///   costream subscribe --callback-url https://abc.execute-api.eu-west-1.amazonaws.com/artc/SECRET
///   costream subscribe --callback-url URL --channel room-1001 --users host_u1,guest_u2
///   costream subscribe list
///   costream subscribe delete SUBSCRIBE_ID
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, subcommand_negates_reqs = true)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub app: AppIdArg,
    #[command(flatten)]
    pub create: CreateArgs,
    #[command(subcommand)]
    pub action: Option<SubscribeAction>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where Alibaba POSTs the callbacks (http:// or https://). It holds the callback secret, and
    /// a command line is visible in `ps` and shell history: prefer --callback-url-env, or `-` to
    /// read it from stdin.
    #[arg(
        long,
        value_name = "URL|-",
        required_unless_present = "callback_url_env",
        conflicts_with = "callback_url_env"
    )]
    pub callback_url: Option<String>,
    /// Environment variable holding the callback URL.
    #[arg(long, value_name = "VAR")]
    pub callback_url_env: Option<String>,
    /// Only this channel (ChannelId). Without it: every channel of the app.
    #[arg(long, value_name = "CHANNEL_ID")]
    pub channel: Option<String>,
    /// Only these users (at most 30; needs --channel). Comma-separated or repeated.
    #[arg(long, value_name = "USER_ID", value_delimiter = ',')]
    pub users: Vec<String>,
    /// Event families to receive (at most 5). Comma-separated or repeated
    /// [default: ChannelEvent,UserEvent].
    #[arg(
        long,
        value_name = "EVENT",
        value_enum,
        value_delimiter = ',',
        ignore_case = true
    )]
    pub events: Vec<EventArg>,
}

#[derive(Debug, Subcommand)]
pub enum SubscribeAction {
    /// List the app's subscriptions (ListEventSub) as {"subscribers": [...]}, callback URLs
    /// masked.
    List,
    /// Delete a subscription (DeleteEventSub).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The SubscribeId printed by `costream subscribe` (SubId in `subscribe list`).
    #[arg(value_name = "SUBSCRIBE_ID")]
    pub subscribe_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventArg {
    /// Channel opened / closed.
    #[value(name = "ChannelEvent")]
    ChannelEvent,
    /// A user joined, published, unpublished, left, changed role.
    #[value(name = "UserEvent")]
    UserEvent,
}

impl From<EventArg> for EventKind {
    fn from(e: EventArg) -> Self {
        match e {
            EventArg::ChannelEvent => EventKind::ChannelEvent,
            EventArg::UserEvent => EventKind::UserEvent,
        }
    }
}

#[derive(Debug, Serialize)]
struct Created {
    subscribe_id: String,
}

#[derive(Debug, Serialize)]
struct Deleted {
    deleted: String,
}

#[derive(Debug, Serialize)]
struct Listed {
    subscribers: Vec<Value>,
}

/// Both event families, as the deployment needs them.
pub const DEFAULT_EVENTS: [EventArg; 2] = [EventArg::ChannelEvent, EventArg::UserEvent];

impl CreateArgs {
    fn given(&self) -> Option<&'static str> {
        if self.callback_url.is_some() {
            Some("--callback-url")
        } else if self.callback_url_env.is_some() {
            Some("--callback-url-env")
        } else if self.channel.is_some() {
            Some("--channel")
        } else if !self.users.is_empty() {
            Some("--users")
        } else if !self.events.is_empty() {
            Some("--events")
        } else {
            None
        }
    }
}

pub fn run(args: &SubscribeArgs) -> anyhow::Result<()> {
    if let (Some(action), Some(flag)) = (&args.action, args.create.given()) {
        let name = match action {
            SubscribeAction::List => "list",
            SubscribeAction::Delete(_) => "delete",
        };
        bail!("{flag} is for creating a subscription; `subscribe {name}` does not take it");
    }
    let app_id = args.app.resolve()?;
    match &args.action {
        None => create(app_id, &args.create),
        Some(SubscribeAction::List) => list(app_id),
        Some(SubscribeAction::Delete(d)) => delete(app_id, &d.subscribe_id),
    }
}

/// The callback URL: from the variable --callback-url-env names, from stdin (`--callback-url -`),
/// or, with a warning, from the command line.
fn callback_url(args: &CreateArgs) -> anyhow::Result<String> {
    if let Some(var) = &args.callback_url_env {
        return Ok(super::secret_from_env(var, "the ARTC callback URL")?
            .expose_secret()
            .trim()
            .to_owned());
    }
    match args.callback_url.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| anyhow::anyhow!("cannot read the callback URL from stdin: {e}"))?;
            Ok(line.trim().to_owned())
        }
        Some(url) => {
            eprintln!(
                "warning: the callback URL carries its secret, and a command line is visible in ps and shell history; prefer --callback-url-env VAR or --callback-url -"
            );
            Ok(url.to_owned())
        }
        None => bail!("--callback-url or --callback-url-env is required"),
    }
}

/// Checks the arguments against the service's rules and builds the request.
pub fn create_request(app_id: String, args: &CreateArgs) -> anyhow::Result<CreateEventSub> {
    let callback_url = &callback_url(args)?;
    check_http_url("--callback-url", callback_url)?;
    let channel_id = match args.channel.as_deref() {
        None | Some("*") => None,
        Some(channel) => {
            check_id("--channel", channel, 64)?;
            Some(channel.to_owned())
        }
    };
    if !args.users.is_empty() && channel_id.is_none() {
        bail!("--users needs --channel: Alibaba accepts a user list only for one channel");
    }
    if args.users.len() > MAX_USERS {
        bail!(
            "--users names {} users; one subscription takes at most {MAX_USERS}",
            args.users.len()
        );
    }
    for (i, user) in args.users.iter().enumerate() {
        check_id("--users entry", user, 64)?;
        if args.users[..i].contains(user) {
            bail!("--users names {user:?} twice");
        }
    }
    let events: &[EventArg] = if args.events.is_empty() {
        &DEFAULT_EVENTS
    } else {
        &args.events
    };
    if events.len() > MAX_EVENTS {
        bail!("--events takes at most {MAX_EVENTS} event families");
    }
    for (i, event) in events.iter().enumerate() {
        if events[..i].contains(event) {
            bail!("--events names {} twice", EventKind::from(*event).as_str());
        }
    }
    Ok(CreateEventSub {
        app_id,
        callback_url: callback_url.clone(),
        events: events.iter().map(|e| EventKind::from(*e)).collect(),
        channel_id,
        users: args.users.clone(),
    })
}

fn create(app_id: String, args: &CreateArgs) -> anyhow::Result<()> {
    let request = create_request(app_id, args)?;
    let mut live = Live::from_env()?;
    live.redactor
        .replace(&request.callback_url, &mask_url(&request.callback_url));
    let reply = live.call(&request.into())?;
    let subscribe_id = reply
        .body
        .get("SubscribeId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .context("CreateEventSub answered without a SubscribeId")?
        .to_owned();
    super::print_json(&Created { subscribe_id })
}

fn list(app_id: String) -> anyhow::Result<()> {
    let live = Live::from_env()?;
    let reply = live.call(&ListEventSub { app_id }.into())?;
    let subscribers = match reply.body.get("Subscribers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(mask_subscriber).collect(),
        Some(_) => bail!("ListEventSub answered with Subscribers that is not a list"),
    };
    super::print_json(&Listed { subscribers })
}

/// A subscriber as Alibaba lists it, with its `CallbackUrl` masked (see [`mask_url`]).
fn mask_subscriber(subscriber: &Value) -> Value {
    let mut subscriber = subscriber.clone();
    if let Some(url) = subscriber.get_mut("CallbackUrl") {
        if let Some(text) = url.as_str() {
            *url = Value::String(mask_url(text));
        }
    }
    subscriber
}

fn delete(app_id: String, subscribe_id: &str) -> anyhow::Result<()> {
    if subscribe_id.is_empty() {
        bail!("SUBSCRIBE_ID must not be empty");
    }
    let live = Live::from_env()?;
    live.call(
        &DeleteEventSub {
            app_id,
            subscribe_id: subscribe_id.to_owned(),
        }
        .into(),
    )?;
    super::print_json(&Deleted {
        deleted: subscribe_id.to_owned(),
    })
}
