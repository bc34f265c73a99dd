//! Who hosts and who is on stage, derived from the room's facts.
//!
//! The host rule — the registered host if set, else the first user to publish in an idle room;
//! the host *leaving* ends the broadcast — depends on history, so it is evaluated as a replay over
//! the time line: every publish start is a candidate; a candidate while no broadcast is live
//! starts one, hosted by its user, and that broadcast lasts as long as the host stays in the
//! channel (a camera toggle or a reconnect that overlaps the old connection doesn't end it; a
//! Leave, a channel close or a gap between connections does). Candidates during a live broadcast
//! are co-streamers. Because the replay sorts by time, the result is the same whatever order the
//! events arrived in.

use crate::event::{Role, UserAction};
use crate::facts::{Facts, Member};
use crate::ids::{Timestamp, UserId};

/// A live broadcast: the host is in the channel and the room's stream should be on the CDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub host: UserId,
    /// When the host's publishing that started it began: names the task (see `TaskId`).
    pub started: Timestamp,
}

/// The ordered stage of a live broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub broadcast: Broadcast,
    /// The host first (publishing or not: their pane stays while they are in the channel), then
    /// publishing co-streamers by the time they started publishing (ties by user id). At most
    /// `max_panes` users.
    pub on_stage: Vec<UserId>,
    /// Publishing co-streamers beyond `max_panes`, in the same order: promoted as slots free.
    pub waiting: Vec<UserId>,
}

/// A registration at `at` naming `registered` ends a live broadcast hosted by someone else.
fn end_for(
    current: &mut Option<(Timestamp, &UserId, Option<Timestamp>)>,
    at: Timestamp,
    registered: Option<&UserId>,
) {
    if let (Some(host), Some(c)) = (registered, current.as_mut()) {
        if c.1 != host && c.2.is_none_or(|e| at < e) {
            c.2 = Some(at);
        }
    }
}

impl Facts {
    /// When a session stopped holding the channel: its Leave (or switch to viewer), a channel close
    /// after its last event, or the start of the user's next session — whichever comes first.
    /// `None` while it holds.
    fn session_end(&self, member: &Member, index: usize) -> Option<Timestamp> {
        let s = &member.sessions[index];
        let latest = s.latest();
        let mut end = match latest.action {
            UserAction::Leave | UserAction::RoleUpdate(Role::Live) => Some(latest.at),
            _ => None,
        };
        if self.closed_after(s) {
            let closed = self.closed_at().unwrap_or(latest.at);
            end = Some(end.map_or(closed, |e| e.min(closed)));
        }
        // Begun sessions are newest first: the next session is the one before this index. A
        // session known only by its Leave comes after them and supersedes none (its Join is
        // late: it may be the old connection ARTC kicked).
        if let Some(next) = index
            .checked_sub(1)
            .map(|i| &member.sessions[i])
            .filter(|_| s.has_begun())
        {
            end = Some(end.map_or(next.first, |e| e.min(next.first)));
        }
        end
    }

    /// The user's continuous presence periods as an interactive member, oldest first (`None`
    /// end: still present). A switch to the viewer role is a gap until the user is interactive
    /// again in the same connection; consecutive sessions that touch form one period, and so do
    /// periods at most `grace` seconds apart (a host back within the end grace: a reconnect
    /// whose old connection ARTC reported gone first).
    fn presence_periods(&self, member: &Member, grace: u64) -> Vec<(Timestamp, Option<Timestamp>)> {
        // What dropped sessions left: presence from their broadcast's start (see `carried`).
        let mut periods: Vec<(Timestamp, Option<Timestamp>)> = member
            .carried
            .map(|(publish, until)| (publish, Some(until)))
            .into_iter()
            .collect();
        for i in (0..member.sessions.len()).rev() {
            let session = &member.sessions[i];
            let end = self.session_end(member, i).map(|e| e.max(session.first));
            let before_end = |t: Timestamp| end.is_none_or(|e| t < e);
            let mut pieces: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
            let mut open = Some(session.first);
            for m in &session.marks {
                match m.action {
                    UserAction::RoleUpdate(Role::Live) => {
                        if let Some(start) = open.take() {
                            pieces.push((start, Some(m.at.max(start))));
                        }
                    }
                    UserAction::RoleUpdate(Role::Interactive)
                    | UserAction::Join
                    | UserAction::Publish => {
                        if open.is_none() && before_end(m.at) {
                            open = Some(m.at);
                        }
                    }
                    UserAction::Unpublish | UserAction::Leave => {}
                }
            }
            if let Some(start) = open.filter(|s| before_end(*s)) {
                pieces.push((start, end));
            }
            for (start, piece_end) in pieces {
                let piece_end = match (piece_end, end) {
                    (Some(p), Some(e)) => Some(p.min(e)),
                    (p, e) => p.or(e),
                };
                if let Some(last) = periods.last_mut() {
                    if last.1.is_some_and(|e| start <= e.saturating_add(grace)) {
                        last.1 = piece_end;
                        continue;
                    }
                }
                periods.push((start, piece_end));
            }
        }
        periods
    }

    /// The end of the user's continuous presence that contains `at` (inner `None`: still
    /// present), or `None` if the user was not present at `at` (a late event of a superseded
    /// session).
    fn presence_end(
        &self,
        member: &Member,
        at: Timestamp,
        grace: u64,
    ) -> Option<Option<Timestamp>> {
        self.presence_periods(member, grace)
            .into_iter()
            .find(|(start, end)| *start <= at && end.is_none_or(|e| at < e))
            .map(|(_, end)| end)
    }

    /// Whether `host` has been in the channel without a break since `since`, and no registration
    /// since then named someone else — i.e. a broadcast they started at `since` would still be
    /// live. When `since` predates every session still kept (older ones were dropped), an unbroken
    /// chain of the kept ones counts as continuous.
    pub(crate) fn host_continuously_since(
        &self,
        host: &UserId,
        since: Timestamp,
        grace: u64,
    ) -> bool {
        let Some(member) = self.members().get(host) else {
            return false;
        };
        let displaced = self
            .registrations()
            .iter()
            .any(|(r, reg)| *r > since && reg.as_ref().is_some_and(|h| h != host));
        if displaced {
            return false;
        }
        let periods = self.presence_periods(member, grace);
        match self.presence_end(member, since, grace) {
            Some(end) => end.is_none(),
            None => {
                !member.pruned.is_empty()
                    && periods.len() == 1
                    && periods[0].1.is_none()
                    && since < periods[0].0
            }
        }
    }

    /// The live broadcast, if any, with a host's absences of at most `grace` seconds bridged
    /// (`DecisionConfig::end_grace_secs`).
    pub fn broadcast(&self, grace: u64) -> Option<Broadcast> {
        let mut starts: Vec<(Timestamp, &UserId, &Member)> = Vec::new();
        for (user, member) in self.members() {
            if let Some((publish, _)) = member.carried {
                starts.push((publish, user, member));
            }
            for s in &member.sessions {
                let from_marks = s.publish_intervals().into_iter().map(|(start, _)| start);
                for start in s.first_publish.into_iter().chain(from_marks) {
                    starts.push((start, user, member));
                }
            }
        }
        starts.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        starts.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);

        let regs = self.registrations();
        // The host registered at `at`, if any (the latest registration not after `at`).
        let registered_at = |at: Timestamp| {
            regs.iter()
                .rev()
                .find(|(r, _)| *r <= at)
                .and_then(|(_, u)| u.as_ref())
        };
        let mut current: Option<(Timestamp, &UserId, Option<Timestamp>)> = None;
        let mut next_reg = 0;
        for (at, user, member) in starts {
            // Registrations up to this start: one naming someone else ends their broadcast.
            while let Some((r, reg)) = regs.get(next_reg).filter(|(r, _)| *r <= at) {
                end_for(&mut current, *r, reg.as_ref());
                next_reg += 1;
            }
            let live = current.is_some_and(|(_, _, end)| end.is_none_or(|e| at < e));
            if live || registered_at(at).is_some_and(|h| h != user) {
                continue;
            }
            if let Some(end) = self.presence_end(member, at, grace) {
                current = Some((at, user, end));
            }
        }
        // Registrations after the last start.
        for (r, reg) in regs.iter().skip(next_reg) {
            end_for(&mut current, *r, reg.as_ref());
        }
        current
            .filter(|(_, _, end)| end.is_none())
            .map(|(started, host, _)| Broadcast {
                host: host.clone(),
                started,
            })
    }

    /// Whether merging `event` would end the live broadcast (`grace` as for
    /// [`Facts::broadcast`]): an event of the host (a Leave, a switch to the viewer role, the
    /// late Join of a session whose Leave came first) or a channel close after which the
    /// broadcast is over, or another one has begun. A late event that only moves the
    /// broadcast's start earlier does not end it. The shell holds such an event back for the end
    /// grace before it merges it, so a reconnect whose Leave it processes first never stops the
    /// broadcast (its new session's events arrive meanwhile).
    pub fn ends_broadcast(&self, event: &crate::event::RoomEvent, grace: u64) -> bool {
        use crate::event::RoomEvent;
        // Any event of the host may: a session that begins supersedes the one before it,
        // and its Leave may be known already.
        if !matches!(event, RoomEvent::User(_) | RoomEvent::ChannelClosed { .. }) {
            return false;
        }
        let Some(before) = self.broadcast(grace) else {
            return false;
        };
        // Only the host's own events can end their broadcast (another user's Leave changes
        // nothing of it; had that user hosted an earlier broadcast that this one depends on,
        // they would be the host the facts name).
        if let RoomEvent::User(u) = event {
            if u.user != before.host {
                return false;
            }
        }
        let mut after = self.clone();
        if after.apply(event) != crate::facts::Merge::Changed {
            return false;
        }
        !after
            .broadcast(grace)
            .is_some_and(|b| b.host == before.host && b.started <= before.started)
    }

    /// When the user's current publishing began, if they publish now.
    pub(crate) fn publishing_since(&self, user: &UserId) -> Option<Timestamp> {
        if !self.is_publishing(user) {
            return None;
        }
        let s = self.current_session(user)?;
        s.publish_intervals().last().map(|(start, _)| *start)
    }

    /// The stage of the live broadcast, with at most `max_panes` users on it (at least the host);
    /// `grace` as for [`Facts::broadcast`].
    pub fn stage(&self, max_panes: usize, grace: u64) -> Option<Stage> {
        let broadcast = self.broadcast(grace)?;
        let mut co: Vec<(Timestamp, &UserId)> = self
            .members()
            .keys()
            .filter(|u| **u != broadcast.host)
            .filter_map(|u| Some((self.publishing_since(u)?, u)))
            .collect();
        co.sort();
        let slots = max_panes.max(1) - 1;
        let mut on_stage = vec![broadcast.host.clone()];
        on_stage.extend(co.iter().take(slots).map(|(_, u)| (*u).clone()));
        let waiting = co.iter().skip(slots).map(|(_, u)| (*u).clone()).collect();
        Some(Stage {
            broadcast,
            on_stage,
            waiting,
        })
    }
}
