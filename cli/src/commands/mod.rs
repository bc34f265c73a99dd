//! The subcommands, plus the few things they share: reading a secret from a named environment
//! variable, turning `--expires-at`/`--ttl` into a timestamp, and printing JSON.

pub mod cdn_notify;
pub mod demo;
pub mod live;
pub mod repair;
pub mod serve;
pub mod sign;
pub mod subscribe;
pub mod tasks;
pub mod token;
pub mod url;
pub mod viewer_token;

use anyhow::{bail, Context as _};
use secrecy::SecretString;
use serde::Serialize;

/// Reads a secret from the environment variable `var`; what it is for goes into the error.
pub fn secret_from_env(var: &str, what: &str) -> anyhow::Result<SecretString> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        Ok(_) => bail!("environment variable {var} is empty; it must hold {what}"),
        Err(std::env::VarError::NotPresent) => {
            bail!("environment variable {var} is not set; it must hold {what}")
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("environment variable {var} is not valid UTF-8; it must hold {what}")
        }
    }
}

/// `--expires-at` wins; otherwise now + `ttl` seconds.
pub fn timestamp(expires_at: Option<i64>, ttl: u64) -> anyhow::Result<i64> {
    if let Some(at) = expires_at {
        return Ok(at);
    }
    let ttl = i64::try_from(ttl).context("--ttl is too large")?;
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .checked_add(ttl)
        .context("--ttl is too large")
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
