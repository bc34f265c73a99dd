//! `costream cdn-notify`: register the ingest callback URL of a push domain
//! (SetLiveStreamsNotifyUrlConfig, spec §5.1).

use anyhow::{anyhow, bail};
use clap::Args;
use costream_alibaba::request::{NotifyAuthKey, SetLiveStreamsNotifyUrlConfig};
use serde::Serialize;

use super::live::{check_http_url, Live};

/// The deployment's name for the key (a field of the stack's secret, see docs/deploy.md).
pub const DEFAULT_AUTH_KEY_VAR: &str = "COSTREAM_CDN_NOTIFY_AUTH_KEY";

/// Register where Alibaba sends a push domain's ingest callbacks (SetLiveStreamsNotifyUrlConfig)
///
/// Alibaba then calls --url (GET, action=publish / publish_done) whenever a stream starts or
/// stops arriving on --domain. By default the callbacks are signed (NotifyReqAuth=yes):
/// Alibaba adds ALI-LIVE-TIMESTAMP and ALI-LIVE-SIGNATURE headers computed with the key read
/// from the environment variable --auth-key-env (16-64 letters and digits), which the
/// cdn-ingest function must hold too. --no-auth registers the URL without signing
/// (NotifyReqAuth=no) and turns signing off if it was on.
///
/// Signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (and
/// ALIBABA_CLOUD_SECURITY_TOKEN for STS credentials); ALIBABA_CLOUD_LIVE_ENDPOINT overrides the
/// endpoint. The key is never printed.
///
/// Example:
///   costream cdn-notify --domain push.example.com \
///     --url https://abc.execute-api.eu-west-1.amazonaws.com/cdn/ingest \
///     --auth-key-env COSTREAM_CDN_NOTIFY_AUTH_KEY
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CdnNotifyArgs {
    /// The ingest (push) domain, e.g. push.example.com.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// The callback URL (http:// or https://), the stack's CdnNotifyUrl output.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Environment variable holding the notify signing key (NotifyAuthKey).
    #[arg(
        long,
        value_name = "VAR",
        default_value = DEFAULT_AUTH_KEY_VAR,
        conflicts_with = "no_auth"
    )]
    pub auth_key_env: String,
    /// Register without signed callbacks (NotifyReqAuth=no, no key).
    #[arg(long)]
    pub no_auth: bool,
}

#[derive(Debug, Serialize)]
struct Registered<'a> {
    domain: &'a str,
    notify_url: &'a str,
    notify_req_auth: &'static str,
}

/// Reads and checks the key from `var`; every error names the variable, none quotes the value.
pub fn auth_key_from_env(var: &str) -> anyhow::Result<NotifyAuthKey> {
    let key = super::secret_from_env(var, "the CDN notify auth key (NotifyAuthKey)")?;
    NotifyAuthKey::new(key).map_err(|e| anyhow!("environment variable {var}: {e}"))
}

/// Checks the domain the way a host name is checked (no scheme, no path, no port).
fn check_domain(domain: &str) -> anyhow::Result<()> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-']);
    if !ok {
        bail!("--domain {domain:?} must be a bare domain name such as push.example.com");
    }
    Ok(())
}

pub fn run(args: &CdnNotifyArgs) -> anyhow::Result<()> {
    check_domain(&args.domain)?;
    check_http_url("--url", &args.url)?;
    let notify_auth_key = if args.no_auth {
        None
    } else {
        Some(auth_key_from_env(&args.auth_key_env)?)
    };
    let mut live = Live::from_env()?;
    if let Some(key) = &notify_auth_key {
        live.redactor.secret(key.expose_secret());
    }
    let request = SetLiveStreamsNotifyUrlConfig {
        domain_name: args.domain.clone(),
        notify_url: args.url.clone(),
        notify_auth_key,
    };
    let notify_req_auth = if request.notify_req_auth() {
        "yes"
    } else {
        "no"
    };
    live.call(&request.into())?;
    super::print_json(&Registered {
        domain: &args.domain,
        notify_url: &args.url,
        notify_req_auth,
    })
}
