//! `costream token`: issue an ARTC join token, in both forms clients accept.

use anyhow::bail;
use clap::Args;
use costream_alibaba::token::JoinToken;
use secrecy::ExposeSecret as _;
use serde::Serialize;

/// The longest validity ARTC accepts for a join token.
const MAX_TTL_SECS: i64 = 24 * 3600;

/// Issue an ARTC join token for one user in one channel.
///
/// Prints the multi-parameter form (appid, channelid, userid, nonce, timestamp, token: pass each
/// to the SDK's join call) and single_parameter_token (base64 JSON of the same, for SDKs that
/// take one token string). timestamp is the token's expiry, at most 24 h ahead.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// ARTC AppID.
    #[arg(long)]
    pub app_id: String,
    /// Environment variable holding the ARTC AppKey.
    #[arg(long, value_name = "VAR", default_value = "COSTREAM_ARTC_APP_KEY")]
    pub app_key_env: String,
    /// ChannelID: letters, digits, '_' and '-', at most 64.
    #[arg(long)]
    pub channel: String,
    /// UserID: letters, digits, '_' and '-', at most 64.
    #[arg(long)]
    pub user: String,
    /// Expiry as a unix timestamp (ARTC rejects tokens valid for more than 24 h).
    #[arg(long, value_name = "UNIX_SECONDS", conflicts_with = "ttl")]
    pub expires_at: Option<i64>,
    /// Validity in seconds from now (ignored with --expires-at).
    #[arg(long, value_name = "SECONDS", default_value_t = 86400)]
    pub ttl: u64,
    /// Nonce; leave empty (the default): the official sample helpers hash without it, so only an
    /// empty nonce works with every SDK.
    #[arg(long, default_value = "")]
    pub nonce: String,
}

#[derive(Debug, Serialize)]
struct TokenOut {
    #[serde(flatten)]
    token: JoinToken,
    single_parameter_token: String,
}

fn check_id(what: &str, value: &str) -> anyhow::Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        bail!("{what} {value:?} must be 1-64 characters of A-Z a-z 0-9 _ -");
    }
    Ok(())
}

pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    check_id("--channel", &args.channel)?;
    check_id("--user", &args.user)?;
    let app_key = super::secret_from_env(&args.app_key_env, "the ARTC AppKey")?;
    let expires_at = super::timestamp(args.expires_at, args.ttl)?;
    if args.expires_at.is_none() && args.ttl > MAX_TTL_SECS.unsigned_abs() {
        bail!(
            "--ttl {} exceeds 24 h, the longest validity ARTC accepts",
            args.ttl
        );
    }
    let token = JoinToken::issue_with_nonce(
        &args.app_id,
        app_key.expose_secret(),
        &args.channel,
        &args.user,
        &args.nonce,
        expires_at,
    );
    let single_parameter_token = token.single_parameter()?;
    super::print_json(&TokenOut {
        token,
        single_parameter_token,
    })
}
