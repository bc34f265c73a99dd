//! `costream url ingest|play`: signed RTMP ingest and playback URLs (URL signing type A).

use clap::{Args, Subcommand};
use costream_alibaba::urls::StreamLocation;
use secrecy::ExposeSecret as _;
use serde::Serialize;

/// Print URLs signed with Alibaba CDN URL signing "type A" (auth_key).
///
/// The auth_key carries a unix timestamp; the CDN accepts the URL until that timestamp plus the
/// validity period configured on the domain. So --ttl 0 gives exactly the domain's validity
/// period, and --ttl 3600 (the default) one hour more.
#[derive(Debug, Args)]
pub struct UrlArgs {
    #[command(subcommand)]
    pub kind: UrlKind,
}

#[derive(Debug, Subcommand)]
pub enum UrlKind {
    /// The RTMP ingest URL (rtmp://DOMAIN/APP/STREAM?auth_key=...), e.g. the StreamURL of a
    /// mixing task. Signed with the ingest domain's key.
    Ingest(IngestArgs),
    /// Viewer URLs in order of preference: HTTP-FLV, RTMP, HLS (.m3u8). Signed with the
    /// streaming (play) domain's key.
    Play(PlayArgs),
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Domain, e.g. push.example.com (ingest) or play.example.com (playback).
    #[arg(long)]
    pub domain: String,
    /// AppName, the first path segment.
    #[arg(long, default_value = "live")]
    pub app_name: String,
    /// StreamName, the second path segment.
    #[arg(long)]
    pub stream: String,
    /// Unix timestamp to put into auth_key.
    #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "ttl")]
    pub expires_at: Option<i64>,
    /// Seconds from now for the auth_key timestamp (ignored with --expires-at).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub ttl: u64,
    /// The rand part of auth_key: 0 or a UUID without hyphens.
    #[arg(long, default_value = "0")]
    pub rand: String,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Environment variable holding the ingest domain's URL-signing key (the deployment's
    /// name for it by default).
    #[arg(long, value_name = "VAR", default_value = "COSTREAM_PUSH_AUTH_KEY")]
    pub key_env: String,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Environment variable holding the streaming domain's URL-signing key (the deployment's
    /// name for it by default).
    #[arg(long, value_name = "VAR", default_value = "COSTREAM_PLAY_AUTH_KEY")]
    pub key_env: String,
}

#[derive(Debug, Serialize)]
struct IngestOut {
    ingest: String,
}

pub fn run(args: &UrlArgs) -> anyhow::Result<()> {
    match &args.kind {
        UrlKind::Ingest(a) => {
            let (loc, key, ts) =
                prepare(&a.stream, &a.key_env, "the ingest domain's URL-signing key")?;
            let url = costream_alibaba::urls::sign_url(
                &loc.ingest_url(),
                key.expose_secret(),
                ts,
                &a.stream.rand,
                "0",
            )?;
            super::print_json(&IngestOut { ingest: url })
        }
        UrlKind::Play(a) => {
            let (loc, key, ts) = prepare(
                &a.stream,
                &a.key_env,
                "the streaming domain's URL-signing key",
            )?;
            let sign = |url: &str| {
                costream_alibaba::urls::sign_url(url, key.expose_secret(), ts, &a.stream.rand, "0")
            };
            let urls = loc.playback_urls();
            let signed = costream_alibaba::urls::PlaybackUrls {
                flv: sign(&urls.flv)?,
                rtmp: sign(&urls.rtmp)?,
                hls: sign(&urls.hls)?,
            };
            super::print_json(&signed)
        }
    }
}

fn prepare<'a>(
    s: &'a StreamArgs,
    key_env: &str,
    what: &str,
) -> anyhow::Result<(StreamLocation<'a>, secrecy::SecretString, u64)> {
    let key = super::secret_from_env(key_env, what)?;
    let ts = super::timestamp(s.expires_at, s.ttl)?;
    let ts = u64::try_from(ts).map_err(|_| anyhow::anyhow!("timestamp {ts} is before 1970"))?;
    let loc = StreamLocation {
        domain: &s.domain,
        app_name: &s.app_name,
        stream_name: &s.stream,
    };
    Ok((loc, key, ts))
}
