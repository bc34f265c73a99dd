//! `PUT /rooms/{channelId}/pk` and `DELETE /rooms/{channelId}/pk`: the app's backend links two
//! live rooms into a PK, or ends it. Signed like every backend request; the link is written to
//! both rooms in one transaction or not at all (see `shell::pk`).

use serde::Serialize;

use super::{HandlerError, HostRequest, Services};
use crate::inbound::InboundError;
use crate::ports::{Clock, MpuPort, StateStore};
use crate::shell::{PkOutcome, PkRefusal};
use costream_core::ChannelId;

/// A PK request body is one small field.
const MAX_PK_BODY: usize = 16 * 1024;

/// What a PK request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PkRequestOutcome {
    pub channel_id: String,
    /// The other room of the PK (linked or ended).
    pub peer_channel_id: String,
    /// `linked` or `unlinked`.
    pub result: &'static str,
}

fn channel_of(field: &'static str, value: &str) -> Result<ChannelId, HandlerError> {
    ChannelId::parse(value)
        .map_err(|source| HandlerError::BadInput(InboundError::BadId { field, source }))
}

fn refused(r: PkRefusal) -> HandlerError {
    match r {
        PkRefusal::UnknownRoom(_) => HandlerError::NotFound(r.to_string()),
        _ => HandlerError::Conflict(r.to_string()),
    }
}

impl<S: StateStore, M: MpuPort, C: Clock> Services<S, M, C> {
    /// `PUT /rooms/{channelId}/pk` with `{"peer_channel_id": "c2"}`: both rooms must be known
    /// and broadcasting, and neither in a PK (else 409, or 404 for an unknown room).
    pub async fn link_pk(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
        invocation: &str,
    ) -> Result<PkRequestOutcome, HandlerError> {
        if req.body.len() > MAX_PK_BODY {
            return Err(InboundError::BodyTooLarge {
                size: req.body.len(),
                limit: MAX_PK_BODY,
            }
            .into());
        }
        self.verify_backend("PUT", &format!("/rooms/{channel}/pk"), req)?;
        let own = channel_of("channelId", channel)?;
        let value: serde_json::Value =
            serde_json::from_slice(req.body).map_err(|e| InboundError::NotJson(e.to_string()))?;
        let obj = value.as_object().ok_or(InboundError::NotObject("body"))?;
        if let Some(unknown) = obj.keys().find(|k| k.as_str() != "peer_channel_id") {
            return Err(InboundError::UnknownField(unknown.clone()).into());
        }
        let peer = match obj.get("peer_channel_id") {
            None => return Err(InboundError::Missing("peer_channel_id").into()),
            Some(serde_json::Value::String(p)) => channel_of("peer_channel_id", p)?,
            Some(_) => {
                return Err(InboundError::WrongType {
                    field: "peer_channel_id",
                    expected: "string",
                }
                .into())
            }
        };
        if peer == own {
            return Err(InboundError::BadField {
                field: "peer_channel_id",
                reason: "a room cannot PK with itself".into(),
            }
            .into());
        }
        let (own_key, peer_key) = (self.key(own.clone()), self.key(peer.clone()));
        let outcome = self.shell.link_pk(&own_key, &peer_key, invocation).await?;
        if outcome == PkOutcome::Linked {
            self.deliver_webhooks(&own_key).await;
            self.deliver_webhooks(&peer_key).await;
        }
        match outcome {
            PkOutcome::Linked => Ok(PkRequestOutcome {
                channel_id: own.to_string(),
                peer_channel_id: peer.to_string(),
                result: "linked",
            }),
            PkOutcome::Unlinked => Err(HandlerError::Conflict("unexpected unlink".into())),
            PkOutcome::Refused(r) => Err(refused(r)),
        }
    }

    /// `DELETE /rooms/{channelId}/pk` (signed over an empty body): ends the room's PK in both
    /// rooms (409 when it is in none).
    pub async fn unlink_pk(
        &self,
        channel: &str,
        req: &HostRequest<'_>,
        invocation: &str,
    ) -> Result<PkRequestOutcome, HandlerError> {
        self.verify_backend("DELETE", &format!("/rooms/{channel}/pk"), req)?;
        let own = channel_of("channelId", channel)?;
        let key = self.key(own.clone());
        // The peer, for the answer: the link as written before it ends.
        let peer = self
            .shell
            .store
            .load(&key)
            .await
            .map_err(|e| HandlerError::App(e.into()))?
            .and_then(|r| r.facts.pk_link().map(|l| l.peer.to_string()));
        let outcome = self.shell.unlink_pk(&key, invocation).await?;
        if outcome == PkOutcome::Unlinked {
            self.deliver_webhooks(&key).await;
            if let Some(peer) = peer.as_deref().and_then(|p| ChannelId::parse(p).ok()) {
                self.deliver_webhooks(&self.key(peer)).await;
            }
        }
        match outcome {
            PkOutcome::Unlinked => Ok(PkRequestOutcome {
                channel_id: own.to_string(),
                peer_channel_id: peer.unwrap_or_default(),
                result: "unlinked",
            }),
            PkOutcome::Linked => Err(HandlerError::Conflict("unexpected link".into())),
            PkOutcome::Refused(r) => Err(refused(r)),
        }
    }
}
