//! Cross-room PK: the link written to both rooms in one transaction, or to neither.
//!
//! Every write that touches a PK link writes both rooms with [`StateStore::save_pair`], each
//! conditional on the version read, so no reader ever sees one room in a PK and the other out
//! of it: the backend's link and unlink here, and the end of the PK when either host's broadcast
//! ends (in the shell's commit, see [`Shell::end_void_pk`]). Each room then converges its own
//! task through the usual lease (one Update each); both are marked due in the same write, so the
//! repair loop finishes the job if this process stops first.

use costream_core::{apply, PkLink, RoomEvent, Timestamp};

use super::commit::MAX_WRITE_ATTEMPTS;
use super::{plan, AppError, Shell};
use crate::metrics;
use crate::ports::{Clock, MpuPort, RoomKey, StateStore, StoreError};
use crate::store::StoredRoom;

/// What a PK request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkOutcome {
    /// Both rooms are linked (now, or already with each other).
    Linked,
    /// The PK ended in both rooms.
    Unlinked,
    /// Nothing was written.
    Refused(PkRefusal),
}

/// Why a PK request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkRefusal {
    #[error("room {0} has never been seen")]
    UnknownRoom(String),
    #[error("room {0} has no live broadcast (its host is not publishing)")]
    NotLive(String),
    #[error("room {room} is already in a PK with {peer}")]
    AlreadyInPk { room: String, peer: String },
    #[error("room {0} is not in a PK")]
    NotInPk(String),
    #[error("room {0} is a voice room (audio_only): a PK shows pictures")]
    VoiceRoom(String),
}

impl<S: StateStore, M: MpuPort, C: Clock> Shell<S, M, C> {
    /// Links rooms `a` and `b` into a PK: both must have a live broadcast and neither may be
    /// in a PK. Written to both rooms at once; then each converges (one Update each).
    pub async fn link_pk(
        &self,
        a: &RoomKey,
        b: &RoomKey,
        owner: &str,
    ) -> Result<PkOutcome, AppError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let (stored_a, stored_b) = (self.read(a).await?, self.read(b).await?);
            let now_ms = self.clock.now_ms();
            let (Some(before_a), Some(before_b)) = (stored_a, stored_b) else {
                let missing = if self.read(a).await?.is_none() { a } else { b };
                return Ok(PkOutcome::Refused(PkRefusal::UnknownRoom(
                    missing.channel.to_string(),
                )));
            };
            // The rooms as decisions see them (their inboxes folded, due held events merged).
            let (mut ra, mut rb) = (
                before_a.folded(now_ms, &self.rules()),
                before_b.folded(now_ms, &self.rules()),
            );
            let grace = self.decision.end_grace_secs;
            for (key, room) in [(a, &ra), (b, &rb)] {
                if room
                    .facts
                    .settings()
                    .is_some_and(|s| s.settings.audio_only())
                {
                    return Ok(PkOutcome::Refused(PkRefusal::VoiceRoom(
                        key.channel.to_string(),
                    )));
                }
            }
            let (Some(host_a), Some(host_b)) =
                (ra.facts.broadcast(grace), rb.facts.broadcast(grace))
            else {
                let not_live = if ra.facts.broadcast(grace).is_none() {
                    a
                } else {
                    b
                };
                return Ok(PkOutcome::Refused(PkRefusal::NotLive(
                    not_live.channel.to_string(),
                )));
            };
            let linked_to = |room: &StoredRoom, other: &RoomKey| {
                room.facts
                    .pk(grace)
                    .is_some_and(|l| l.peer == other.channel)
            };
            if linked_to(&ra, b) && linked_to(&rb, a) {
                return Ok(PkOutcome::Linked);
            }
            for (key, room) in [(a, &ra), (b, &rb)] {
                if let Some(link) = room.facts.pk_link() {
                    return Ok(PkOutcome::Refused(PkRefusal::AlreadyInPk {
                        room: key.channel.to_string(),
                        peer: link.peer.to_string(),
                    }));
                }
            }
            let at = self.pk_time(&ra, &rb);
            let link_a = PkLink {
                peer: b.channel.clone(),
                peer_host: host_b.host.clone(),
                host: host_a.host.clone(),
                started: host_a.started,
            };
            let link_b = PkLink {
                peer: a.channel.clone(),
                peer_host: host_a.host,
                host: host_b.host,
                started: host_b.started,
            };
            let wid = self.config.writes.next();
            self.write_pk(&mut ra, Some(link_a), at);
            self.write_pk(&mut rb, Some(link_b), at);
            self.finish_write(&before_a, &mut ra, &wid);
            self.finish_write(&before_b, &mut rb, &wid);
            match self
                .store
                .save_pair((a, &ra, ra.version), (b, &rb, rb.version))
                .await
            {
                Ok(()) => {}
                Err(StoreError::VersionConflict { current, .. })
                    if current.as_ref().is_some_and(|c| c.carries(&wid)) => {}
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(room = %a, peer = %b, "pk linked");
            self.converge_both(a, b, owner).await;
            return Ok(PkOutcome::Linked);
        }
        Err(AppError::Contention {
            room: a.to_string(),
            conflicts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Ends room `a`'s PK in both rooms at once; then each converges back to its own picture.
    pub async fn unlink_pk(&self, a: &RoomKey, owner: &str) -> Result<PkOutcome, AppError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(before_a) = self.read(a).await? else {
                return Ok(PkOutcome::Refused(PkRefusal::UnknownRoom(
                    a.channel.to_string(),
                )));
            };
            let now_ms = self.clock.now_ms();
            let mut ra = before_a.folded(now_ms, &self.rules());
            let Some(link) = ra.facts.pk_link().cloned() else {
                return Ok(PkOutcome::Refused(PkRefusal::NotInPk(
                    a.channel.to_string(),
                )));
            };
            let b = RoomKey {
                app: a.app.clone(),
                channel: link.peer.clone(),
            };
            let wid = self.config.writes.next();
            let rb = self.end_pk(a, &mut ra, &b, &wid).await?;
            self.finish_write(&before_a, &mut ra, &wid);
            let saved = match &rb {
                Some(rb) => {
                    self.store
                        .save_pair((a, &ra, ra.version), (&b, rb, rb.version))
                        .await
                }
                None => self.store.save(a, &ra, ra.version).await,
            };
            match saved {
                Ok(()) => {
                    tracing::info!(room = %a, peer = %b, "pk ended by the backend");
                    self.converge_both(a, &b, owner).await;
                    return Ok(PkOutcome::Unlinked);
                }
                Err(StoreError::VersionConflict { current, .. })
                    if current.as_ref().is_some_and(|c| c.carries(&wid)) =>
                {
                    self.converge_both(a, &b, owner).await;
                    return Ok(PkOutcome::Unlinked);
                }
                Err(StoreError::VersionConflict { .. }) => {
                    metrics::count("version_conflicts");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::Contention {
            room: a.to_string(),
            conflicts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Writes the end of `a`'s PK into `ra` (as planned, with whatever else the caller changed)
    /// and, when its link still names `a`, into the peer `b`, which it returns (stamped with
    /// the write `wid`, its webhooks queued) for the caller to save with `ra` in one
    /// transaction.
    pub(super) async fn end_pk(
        &self,
        a: &RoomKey,
        ra: &mut StoredRoom,
        b: &RoomKey,
        wid: &str,
    ) -> Result<Option<StoredRoom>, StoreError> {
        let rb = match self.read(b).await {
            Ok(rb) => rb,
            // A peer nobody can read: nobody sees its half either. End this room's side alone
            // rather than never commit this room's events again; the peer stays as stored.
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(room = %a, peer = %b, error = %e, "pk peer unreadable; ending this room's side only");
                None
            }
            Err(e) => return Err(e),
        };
        let peer_links_back = rb
            .as_ref()
            .and_then(|r| r.facts.pk_link())
            .is_some_and(|l| l.peer == a.channel);
        match rb {
            Some(before_b) if peer_links_back => {
                // The peer as it is (its inbox folded, ending events kept held for its own
                // commit).
                let mut rb = before_b.clone();
                rb.fold_keeping_ends(self.clock.now_ms(), &self.rules());
                let at = self.pk_time(ra, &rb);
                self.write_pk(ra, None, at);
                self.write_pk(&mut rb, None, at);
                self.finish_write(&before_b, &mut rb, wid);
                Ok(Some(rb))
            }
            _ => {
                let at = self.pk_time(ra, ra);
                self.write_pk(ra, None, at);
                Ok(None)
            }
        }
    }

    /// Converges both rooms of a PK write, one after the other; a failure leaves the room
    /// marked for the repair loop (the write marked both due).
    async fn converge_both(&self, a: &RoomKey, b: &RoomKey, owner: &str) {
        for key in [a, b] {
            if let Err(e) = self.repair(key, owner).await {
                tracing::warn!(room = %key, error = %e, "pk: room left to the repair loop");
            }
        }
    }

    /// A PK write's time: now, and after every PK write either room has seen (the newest write
    /// wins, and writes to a room are serialised by its version, so this keeps them in order).
    fn pk_time(&self, a: &StoredRoom, b: &StoredRoom) -> Timestamp {
        let now = Timestamp::from_secs(self.clock.now_ms() / 1000);
        [a, b]
            .iter()
            .filter_map(|r| r.facts.pk_write().map(|w| w.at.saturating_add(1)))
            .fold(now, Timestamp::max)
    }

    /// Applies a PK write to the room and marks it for the repair loop from what it now needs
    /// (its task changes, unless the lease holder's call is already about it).
    fn write_pk(&self, room: &mut StoredRoom, link: Option<PkLink>, at: Timestamp) {
        apply(
            &mut room.facts,
            &mut room.record,
            &RoomEvent::Pk { link, at },
            &self.decision,
        );
        let pending = costream_core::decide(&room.facts, &room.record, &self.decision)
            .command
            .is_some();
        let now_ms = self.clock.now_ms();
        plan::mark_due(room, pending, now_ms, self.config.resign_after_ms);
    }

    /// Stamps a write of `room` made from `before` (the item as stored) with `wid`, and queues
    /// the webhooks it means.
    fn finish_write(&self, before: &StoredRoom, room: &mut StoredRoom, wid: &str) {
        let now_ms = self.clock.now_ms();
        plan::stamp(room, before, wid, now_ms, &self.config);
        if self.config.webhooks {
            plan::queue_hooks(before, room, now_ms, &self.decision);
        }
    }
}
