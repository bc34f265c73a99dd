//! `costream`: the operator and developer command line.
//!
//! `main` only parses arguments and dispatches; each subcommand lives in `commands/` with its own
//! `--help` text. Secrets are read from environment variables named on the command line (never
//! from arguments, which end up in shell history and `ps`).

mod commands;
mod local;

/// serve allocates per request (bodies, room copies, JSON): mimalloc takes 25 % less of its CPU
/// than the system allocator (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// costream: the ARTC co-streaming app server, locally, and its operator tools.
///
/// Run it: `serve` (the deployed routes on one local port), `demo` (the co-streaming flow, step by
/// step). Set up and operate a deployment: `subscribe` (ARTC room callbacks), `cdn-notify` (CDN
/// ingest callbacks), `tasks` and `stop` (bypass tasks), `repair` (the repair loop, `--once`
/// for one pass) and `history` (a room's decisions). Debug Alibaba calls: `sign`, `url`,
/// `token`. Viewer access: `viewer-token`.
#[derive(Debug, Parser)]
#[command(name = "costream", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(commands::serve::ServeArgs),
    Demo(commands::demo::DemoArgs),
    Sign(commands::sign::SignArgs),
    Url(commands::url::UrlArgs),
    Token(commands::token::TokenArgs),
    Subscribe(commands::subscribe::SubscribeArgs),
    CdnNotify(commands::cdn_notify::CdnNotifyArgs),
    Tasks(commands::tasks::TasksArgs),
    Stop(commands::tasks::StopArgs),
    Repair(commands::repair::RepairArgs),
    History(commands::repair::HistoryArgs),
    ViewerToken(commands::viewer_token::ViewerTokenArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => commands::serve::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Sign(args) => commands::sign::run(&args),
        Command::Url(args) => commands::url::run(&args),
        Command::Token(args) => commands::token::run(&args),
        Command::Subscribe(args) => commands::subscribe::run(&args),
        Command::CdnNotify(args) => commands::cdn_notify::run(&args),
        Command::Tasks(args) => commands::tasks::run_tasks(&args),
        Command::Stop(args) => commands::tasks::run_stop(&args),
        Command::Repair(args) => commands::repair::run_repair(&args),
        Command::History(args) => commands::repair::run_history(&args),
        Command::ViewerToken(args) => commands::viewer_token::run(&args),
    }
}
