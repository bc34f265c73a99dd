//! `costream viewer-token`: a viewer token for `GET /rooms/{channelId}?viewer_token=...`, as the
//! app's backend mints them (for tests and operators).

use clap::Args;
use secrecy::ExposeSecret as _;

/// Print a viewer token for one room: `<exp>.<sig>`, `sig` = hex(hmac_sha256(secret, "view." +
/// CHANNEL + "." + exp)). With it, `GET /rooms/CHANNEL?viewer_token=...` answers the full room
/// status (playback URLs, stage); without, only whether the room is live.
#[derive(Debug, Args)]
pub struct ViewerTokenArgs {
    /// The room's ChannelId.
    pub channel: String,
    /// Environment variable holding the secret shared with the backend.
    #[arg(long, value_name = "VAR", default_value = "COSTREAM_NOTIFY_SECRET")]
    pub secret_env: String,
    /// Validity in seconds from now (1-86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub ttl: u64,
}

pub fn run(args: &ViewerTokenArgs) -> anyhow::Result<()> {
    costream_core::ChannelId::parse(args.channel.as_str())
        .map_err(|e| anyhow::anyhow!("CHANNEL {:?}: {e}", args.channel))?;
    if !(1..=costream_app::handlers::viewer::MAX_VIEWER_TOKEN_SECS).contains(&args.ttl) {
        anyhow::bail!("--ttl must be 1 to 86400 seconds, got {}", args.ttl);
    }
    let secret = super::secret_from_env(&args.secret_env, "the backend secret")?;
    let exp = u64::try_from(super::timestamp(None, args.ttl)?)?;
    println!(
        "{}",
        costream_app::handlers::viewer::viewer_token(secret.expose_secret(), &args.channel, exp)
    );
    Ok(())
}
