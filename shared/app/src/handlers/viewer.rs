//! `GET /rooms/{channelId}` in two tiers. Without a token, only the public state — the same
//! shape and status (200) for rooms that exist and rooms that don't, so channel ids can't be
//! enumerated, and cacheable by a CDN. With a viewer token from the app's backend, everything:
//! signed playback URLs, host, stage, waiting list, settings, PK, repair state.
//!
//! A viewer token is `<exp>.<sig>`: `exp` unix seconds (at most 24 h ahead) and
//! `sig = hex(hmac_sha256(COSTREAM_NOTIFY_SECRET, "view." + channelId + "." + exp))`.

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::Sha256;

use super::{HandlerError, RoomStatus, Services};
use crate::inbound::InboundError;
use crate::ports::{Clock, MpuPort, StateStore};
use costream_core::ChannelId;

/// The longest a viewer token may be valid.
pub const MAX_VIEWER_TOKEN_SECS: u64 = 86_400;
/// `Cache-Control` of the public answer: a CDN may serve it for a few seconds.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=2, stale-while-revalidate=5";
/// `Cache-Control` of the answer to a viewer token: never cached.
pub const PRIVATE_CACHE_CONTROL: &str = "private, no-store";

/// What anyone may know of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicStatus {
    pub channel_id: String,
    pub live: bool,
    pub cdn_live: bool,
    pub mix_mode: Option<u8>,
}

/// The answer to `GET /rooms/{channelId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StatusAnswer {
    Public(PublicStatus),
    Full(Box<RoomStatus>),
}

impl StatusAnswer {
    /// The `Cache-Control` header to answer with.
    pub fn cache_control(&self) -> &'static str {
        match self {
            StatusAnswer::Public(_) => PUBLIC_CACHE_CONTROL,
            StatusAnswer::Full(_) => PRIVATE_CACHE_CONTROL,
        }
    }
}

/// The signature of a viewer token for `channel` expiring at `exp`.
pub fn viewer_signature(secret: &str, channel: &str, exp: u64) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(format!("view.{channel}.{exp}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A viewer token for `channel` valid until `exp` (what the app's backend mints).
pub fn viewer_token(secret: &str, channel: &str, exp: u64) -> String {
    format!("{exp}.{}", viewer_signature(secret, channel, exp))
}

impl<S: StateStore, M: MpuPort, C: Clock> Services<S, M, C> {
    /// `GET /rooms/{channelId}[?viewer_token=<exp>.<sig>]`.
    pub async fn room_status_for(
        &self,
        channel: &str,
        viewer_token: Option<&str>,
    ) -> Result<StatusAnswer, HandlerError> {
        let id = ChannelId::parse(channel).map_err(|source| {
            HandlerError::BadInput(InboundError::BadId {
                field: "channelId",
                source,
            })
        })?;
        match viewer_token {
            Some(token) => {
                self.check_viewer_token(id.as_str(), token)?;
                Ok(StatusAnswer::Full(Box::new(
                    self.room_status(channel).await?,
                )))
            }
            None => {
                let status = match self.room_status(channel).await {
                    Ok(status) => PublicStatus {
                        channel_id: status.channel_id,
                        live: status.live,
                        cdn_live: status.cdn_live,
                        mix_mode: status.mix_mode,
                    },
                    // Unknown rooms look like idle ones.
                    Err(HandlerError::NotFound(_)) => PublicStatus {
                        channel_id: id.to_string(),
                        live: false,
                        cdn_live: false,
                        mix_mode: None,
                    },
                    Err(e) => return Err(e),
                };
                Ok(StatusAnswer::Public(status))
            }
        }
    }

    fn check_viewer_token(&self, channel: &str, token: &str) -> Result<(), HandlerError> {
        let secret = self
            .config
            .backend_secret
            .as_ref()
            .ok_or(HandlerError::NotConfigured(
                "viewer tokens need COSTREAM_NOTIFY_SECRET",
            ))?;
        let bad = |why: &str| HandlerError::Unauthenticated(format!("viewer_token {why}"));
        let (exp, sig) = token
            .split_once('.')
            .ok_or_else(|| bad("is not <exp>.<sig>"))?;
        let exp: u64 = exp.parse().map_err(|_| bad("expiry is not unix seconds"))?;
        let now = self.shell.clock.now_ms() / 1000;
        if exp <= now {
            return Err(bad("has expired"));
        }
        if exp > now + MAX_VIEWER_TOKEN_SECS {
            return Err(bad("expires more than 24 h ahead"));
        }
        let want = viewer_signature(secret.expose_secret(), channel, exp);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            sig.to_ascii_lowercase().as_bytes(),
        )) {
            return Err(bad("signature does not match"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented algorithm, against a vector computed independently (Python:
    /// `hmac.new(b"view-secret", b"view.room-7.1700000000", hashlib.sha256).hexdigest()`).
    #[test]
    fn a_viewer_token_is_the_documented_hmac() {
        assert_eq!(
            viewer_token("view-secret", "room-7", 1_700_000_000),
            "1700000000.0bfedb795bc126dd93b1c4cc770744e592483f07aaf86c1527ba0df068c97615"
        );
    }
}
