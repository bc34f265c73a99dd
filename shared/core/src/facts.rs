//! The room's facts: what the callbacks told us, merged so that the result depends only on
//! *which* events arrived, never on their order or on how often each arrived.
//!
//! Per user we keep a few recent sessions, each summarised by lattice values: the earliest event
//! time (`first`, a min), the earliest Publish (`first_publish`, a min) and the most recent
//! events (`marks`: the union of events, keeping the newest [`MAX_MARKS`] by time and
//! [`UserAction::rank`]). Min and "newest K of a union" are commutative, associative and
//! idempotent, so merging events in any order, with any duplicates, gives the same summary.
//! Everything else — who hosts, who is on stage, what the task should be — is *derived* from these
//! facts (`stage.rs`, `decide.rs`), never stored, so it cannot drift.
//!
//! Why sessions: a user who reconnects gets a new session, and the old session's `Leave` can
//! arrive late *with a later timestamp* (ARTC kicks the old connection when the new one logs in).
//! Comparing only timestamps would let that Leave remove the user; comparing sessions by when they
//! began keeps the newer session authoritative. A session known only by its Leave (its Join is
//! late too) is older than every session known to have begun.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{CdnAction, Role, RoomEvent, UserAction, UserEvent};
use crate::ids::{ChannelId, SessionId, Timestamp, UserId};

/// Sessions kept per user. Older ones are only needed to recognise their late events as stale.
pub(crate) const MAX_SESSIONS: usize = 3;
/// Sessions known only by their Leave (their Join late) kept per user, besides the
/// [`MAX_SESSIONS`]: each waits for its Join.
pub(crate) const MAX_UNBEGUN: usize = 3;
/// Ids of dropped sessions remembered per user.
pub(crate) const MAX_PRUNED: usize = 8;
/// Host registrations kept per room.
pub(crate) const MAX_REGISTRATIONS: usize = 4;
/// Events kept per session: enough to rebuild its recent publish intervals (camera toggles).
pub(crate) const MAX_MARKS: usize = 8;
/// Users kept per room. Beyond this, users who have left are forgotten, oldest first.
pub const MAX_MEMBERS: usize = 64;
/// The hard bound of a room's facts as JSON, whatever the event stream: [`MAX_MEMBERS`] users,
/// each with [`MAX_SESSIONS`] sessions of [`MAX_MARKS`] events, [`MAX_UNBEGUN`] of one event
/// and [`MAX_PRUNED`] dropped session ids, at the longest ids (user 64, session 128 characters),
/// plus [`MAX_REGISTRATIONS`] registrations — under 3 KB per user. With the record (≤ 16 panes) and the dedupe keys the
/// DynamoDB item stays below half of its 400 KB limit. Tested with 10,000 random users.
pub const MAX_FACTS_JSON_BYTES: usize = 200 * 1024;

/// The latest thing a session did, ordered by time and then by [`UserAction::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub(crate) at: Timestamp,
    pub(crate) action: UserAction,
}

impl Mark {
    pub(crate) fn key(self) -> (Timestamp, u8) {
        (self.at, self.action.rank())
    }
}

/// Stored compactly, as `[id, first, first_publish - first, "J0 P1 U7"]` (each mark its action's
/// letter and its time after `first`): the facts are rewritten with every room write, and the
/// named form was 2–3 times longer. The named form is still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SessionRepr", try_from = "SessionRepr")]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    /// Earliest event of the session: when it began, as far as we know.
    pub(crate) first: Timestamp,
    /// Earliest Publish: never pruned, so a long broadcast keeps its start (and its task id).
    pub(crate) first_publish: Option<Timestamp>,
    /// The newest events, ascending by key, never empty.
    pub(crate) marks: Vec<Mark>,
}

/// How a [`Session`] is stored: compact (written) or named (rooms written before).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SessionRepr {
    Compact(SessionId, u64, Option<i64>, String),
    Named {
        id: SessionId,
        first: Timestamp,
        first_publish: Option<Timestamp>,
        marks: Vec<Mark>,
    },
}

fn action_letter(action: UserAction) -> char {
    match action {
        UserAction::Join => 'J',
        UserAction::Leave => 'L',
        UserAction::Publish => 'P',
        UserAction::Unpublish => 'U',
        UserAction::RoleUpdate(Role::Interactive) => 'I',
        UserAction::RoleUpdate(Role::Live) => 'V',
    }
}

fn offset(at: Timestamp, first: Timestamp) -> i64 {
    i64::try_from(at.secs()).unwrap_or(i64::MAX) - i64::try_from(first.secs()).unwrap_or(i64::MAX)
}

impl From<Session> for SessionRepr {
    fn from(s: Session) -> SessionRepr {
        let marks: Vec<String> = s
            .marks
            .iter()
            .map(|m| format!("{}{}", action_letter(m.action), offset(m.at, s.first)))
            .collect();
        SessionRepr::Compact(
            s.id,
            s.first.secs(),
            s.first_publish.map(|p| offset(p, s.first)),
            marks.join(" "),
        )
    }
}

impl TryFrom<SessionRepr> for Session {
    type Error = String;

    fn try_from(repr: SessionRepr) -> Result<Session, String> {
        let (id, first, first_publish, marks) = match repr {
            SessionRepr::Named {
                id,
                first,
                first_publish,
                marks,
            } => (id, first, first_publish, marks),
            SessionRepr::Compact(id, first, first_publish, marks) => {
                let at = |off: i64| {
                    first
                        .checked_add_signed(off)
                        .map(Timestamp::from_secs)
                        .ok_or_else(|| format!("session {id}: time offset {off} out of range"))
                };
                let mut parsed = Vec::new();
                for m in marks.split_whitespace() {
                    let mut chars = m.chars();
                    let action = match chars.next() {
                        Some('J') => UserAction::Join,
                        Some('L') => UserAction::Leave,
                        Some('P') => UserAction::Publish,
                        Some('U') => UserAction::Unpublish,
                        Some('I') => UserAction::RoleUpdate(Role::Interactive),
                        Some('V') => UserAction::RoleUpdate(Role::Live),
                        _ => return Err(format!("session {id}: bad mark {m:?}")),
                    };
                    let off: i64 = chars
                        .as_str()
                        .parse()
                        .map_err(|_| format!("session {id}: bad mark {m:?}"))?;
                    parsed.push(Mark {
                        at: at(off)?,
                        action,
                    });
                }
                let first_publish = first_publish.map(at).transpose()?;
                (id, Timestamp::from_secs(first), first_publish, parsed)
            }
        };
        if marks.is_empty() {
            return Err(format!("session {id} has no events"));
        }
        Ok(Session {
            id,
            first,
            first_publish,
            marks,
        })
    }
}

/// When `session` stopped holding the channel, its next session having begun at `next_first`:
/// its Leave (or switch to viewer), a close after its last event, or `next_first`, whichever
/// comes first (as [`Facts::session_end`](crate::facts::Facts) reads it), never before it began.
fn session_end_before(
    session: &Session,
    next_first: Timestamp,
    closed_at: Option<Timestamp>,
) -> Timestamp {
    let latest = session.latest();
    let mut end = next_first;
    if matches!(
        latest.action,
        UserAction::Leave | UserAction::RoleUpdate(Role::Live)
    ) {
        end = end.min(latest.at);
    }
    if let Some(closed) = closed_at {
        if latest.at < closed || (latest.at == closed && session.first < closed) {
            end = end.min(closed);
        }
    }
    end.max(session.first)
}

impl Session {
    /// The session's latest event.
    pub(crate) fn latest(&self) -> Mark {
        // `marks` is never empty: a session is created with its first event.
        self.marks[self.marks.len() - 1]
    }

    /// Merges one event; returns whether anything changed.
    fn merge(&mut self, mark: Mark) -> bool {
        let before = self.clone();
        self.first = self.first.min(mark.at);
        if mark.action.publishes() {
            self.first_publish = Some(self.first_publish.map_or(mark.at, |p| p.min(mark.at)));
        }
        if !self.marks.contains(&mark) {
            self.marks.push(mark);
            // Different actions never share a key (rank is per action): the order is total.
            self.marks.sort_by_key(|m| m.key());
            if self.marks.len() > MAX_MARKS {
                self.marks.remove(0);
            }
        }
        *self != before
    }

    /// The session's publish intervals that its retained events show, as `(start, end)`.
    pub(crate) fn publish_intervals(&self) -> Vec<(Timestamp, Option<Timestamp>)> {
        let mut out = Vec::new();
        let mut open: Option<Timestamp> = None;
        let mut saw_end = false;
        for m in &self.marks {
            match m.action {
                UserAction::Publish => {
                    open.get_or_insert(m.at);
                }
                UserAction::Unpublish | UserAction::Leave | UserAction::RoleUpdate(Role::Live) => {
                    saw_end = true;
                    if let Some(start) = open.take() {
                        out.push((start, Some(m.at)));
                    }
                }
                UserAction::Join | UserAction::RoleUpdate(Role::Interactive) => {}
            }
        }
        if let Some(start) = open {
            // Nothing ended before this interval among the retained events: it may have begun
            // before them, at the earliest Publish.
            let start = match self.first_publish {
                Some(p) if !saw_end => p.min(start),
                _ => start,
            };
            out.push((start, None));
        }
        out
    }

    /// Sessions are ordered by when they began (ties by id): the greatest is the current one.
    /// A session known only by its Leave never is: its beginning is unknown (its Join is late),
    /// and a connection that left is no newer one that superseded the user's others — ordering
    /// it by its Leave would let the late Leave of an old connection end a user who is in the
    /// channel on a newer one.
    fn order_key(&self) -> (bool, Timestamp, &SessionId) {
        (self.has_begun(), self.first, &self.id)
    }

    /// Whether an event other than its Leave is known (else its beginning is not).
    pub(crate) fn has_begun(&self) -> bool {
        self.marks.iter().any(|m| m.action != UserAction::Leave)
    }
}

/// One user's sessions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Member {
    #[serde(rename = "s", alias = "sessions")]
    pub(crate) sessions: Vec<Session>,
    /// Ids of sessions dropped from `sessions` (bounded): their late events are ignored instead of
    /// bringing them back as if they were new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) pruned: Vec<SessionId>,
    /// The user's latest camera event (`CameraOpen`/`CameraClose`), of whichever session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) camera: Option<CameraMark>,
    /// What dropped sessions leave for a long broadcast: `(publish, until)`, the earliest Publish
    /// of the dropped sessions whose presence ran on into the kept ones (gaps of at most
    /// [`MAX_END_GRACE_SECS`](crate::config::MAX_END_GRACE_SECS)), and when that presence ended.
    /// Read as a presence period from `publish` to `until`: a broadcast begun in a dropped
    /// session keeps its start (and its task) while the host is still there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) carried: Option<(Timestamp, Timestamp)>,
}

/// A camera event: the greatest by (time, on, session) wins, so merging is order-insensitive
/// (within one second, "on" wins, as a Publish wins over an Unpublish).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct CameraMark {
    pub(crate) at: Timestamp,
    pub(crate) on: bool,
    pub(crate) session: SessionId,
}

/// The latest CDN ingest callback for the room's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdnStatus {
    pub action: CdnAction,
    pub at: Timestamp,
}

impl CdnStatus {
    fn key(self) -> (Timestamp, u8) {
        // Within one second the stream counts as live (a reconnect), like a camera toggle.
        let rank = match self.action {
            CdnAction::PublishDone => 0,
            CdnAction::Publish => 1,
        };
        (self.at, rank)
    }
}

/// What [`Facts::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The facts changed (the decision may or may not change).
    Changed,
    /// Nothing new: an exact duplicate, or an event every fact already supersedes.
    Unchanged,
    /// Join of a viewer: viewers never take the stage, so they are not tracked.
    IgnoredViewer,
    /// An event of a user the room has forgotten, no newer than the newest event of anyone it
    /// forgot: the room can no longer judge it (it could bring back someone long gone), so it
    /// is ignored — and counted by the shell.
    BeyondHorizon,
}

/// Everything the callbacks told costream about one ARTC channel: facts only, merged in any
/// order. What the shell did about them is the [`Record`](crate::Record), kept apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    channel: ChannelId,
    /// The app's latest host registrations (time, host or cleared), oldest first, at most
    /// [`MAX_REGISTRATIONS`]. From a registration's time on, only its host can start the
    /// broadcast (and a broadcast by someone else ends); cleared, the first publisher hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    registrations: Vec<(Timestamp, Option<UserId>)>,
    members: BTreeMap<UserId, Member>,
    /// Latest `ChannelEvent` close: every session that did nothing after it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cdn: Option<CdnStatus>,
    /// The newest event time of any user forgotten by pruning: events of unknown users up to this
    /// time are beyond what the room can judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    horizon: Option<Timestamp>,
    /// The newest settings the app's backend set for the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<crate::settings::StampedSettings>,
    /// The newest PK write (a link, or the end of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pk: Option<crate::pk::StampedPk>,
}

impl Facts {
    /// A room nobody has been seen in.
    pub fn new(channel: ChannelId) -> Self {
        Facts {
            channel,
            registrations: Vec::new(),
            members: BTreeMap::new(),
            closed_at: None,
            cdn: None,
            horizon: None,
            settings: None,
            pk: None,
        }
    }

    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    /// The host registered most recently, if any.
    pub fn registered_host(&self) -> Option<&UserId> {
        self.registrations
            .last()
            .and_then(|(_, user)| user.as_ref())
    }

    pub(crate) fn registrations(&self) -> &[(Timestamp, Option<UserId>)] {
        &self.registrations
    }

    pub fn cdn(&self) -> Option<CdnStatus> {
        self.cdn
    }

    /// The room's newest settings, if the backend set any.
    pub fn settings(&self) -> Option<&crate::settings::StampedSettings> {
        self.settings.as_ref()
    }

    /// The newest PK write, if any (linked or ended).
    pub fn pk_write(&self) -> Option<&crate::pk::StampedPk> {
        self.pk.as_ref()
    }

    /// The room's PK link as written, whether or not it still holds.
    pub fn pk_link(&self) -> Option<&crate::pk::PkLink> {
        self.pk.as_ref().and_then(|p| p.link.as_ref())
    }

    /// The PK in force: the link, while the broadcast it was made with goes on here (the same
    /// host, started no later) and the room shows pictures (a voice room is in no PK).
    pub fn pk(&self, grace: u64) -> Option<&crate::pk::PkLink> {
        let link = self.pk_link()?;
        let broadcast = self.broadcast(grace)?;
        let voice = self.settings().is_some_and(|s| s.settings.audio_only());
        (broadcast.host == link.host && broadcast.started <= link.started && !voice).then_some(link)
    }

    /// The decision configuration of this room: the deployment's, with the room's settings.
    pub fn config(&self, cfg: &crate::config::DecisionConfig) -> crate::config::DecisionConfig {
        match &self.settings {
            Some(s) => s.settings.apply_to(cfg),
            None => cfg.clone(),
        }
    }

    pub fn closed_at(&self) -> Option<Timestamp> {
        self.closed_at
    }

    /// Number of users tracked (for size accounting and tests).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn members(&self) -> &BTreeMap<UserId, Member> {
        &self.members
    }

    /// Merges one event into the facts. Total: never fails, never panics; validation of the
    /// event's content happened when it was parsed.
    pub fn apply(&mut self, event: &RoomEvent) -> Merge {
        let merge = match event {
            RoomEvent::User(ev) => self.apply_user(ev),
            RoomEvent::ChannelClosed { at } => {
                if self.closed_at.is_some_and(|c| c >= *at) {
                    Merge::Unchanged
                } else {
                    self.closed_at = Some(*at);
                    Merge::Changed
                }
            }
            RoomEvent::Settings { settings, at } => {
                let new = crate::settings::StampedSettings {
                    at: *at,
                    settings: (**settings).clone(),
                };
                if self.settings.as_ref().is_none_or(|old| new.wins_over(old)) {
                    self.settings = Some(new);
                    Merge::Changed
                } else {
                    Merge::Unchanged
                }
            }
            RoomEvent::HostRegistered { user, at } => {
                // A bounded union ordered by (time, value): arrival order doesn't matter.
                let new = (*at, user.clone());
                let older_than_all_kept = self.registrations.len() >= MAX_REGISTRATIONS
                    && self.registrations.first().is_some_and(|first| new < *first);
                if self.registrations.contains(&new) || older_than_all_kept {
                    // Known, or older than every registration kept: it would be dropped at once.
                    Merge::Unchanged
                } else {
                    self.registrations.push(new);
                    self.registrations.sort();
                    if self.registrations.len() > MAX_REGISTRATIONS {
                        self.registrations.remove(0);
                    }
                    Merge::Changed
                }
            }
            RoomEvent::Cdn { action, at } => self.apply_cdn(CdnStatus {
                action: *action,
                at: *at,
            }),
            RoomEvent::Pk { link, at } => {
                let new = crate::pk::StampedPk {
                    at: *at,
                    link: link.clone(),
                };
                if self.pk.as_ref().is_none_or(|old| new > *old) {
                    self.pk = Some(new);
                    Merge::Changed
                } else {
                    Merge::Unchanged
                }
            }
            RoomEvent::Camera {
                user,
                session,
                on,
                at,
            } => self.apply_camera(
                user,
                CameraMark {
                    at: *at,
                    on: *on,
                    session: session.clone(),
                },
            ),
        };
        if merge == Merge::Changed {
            self.prune_members();
        }
        merge
    }

    fn apply_user(&mut self, ev: &UserEvent) -> Merge {
        // A viewer joining is not tracked; a Leave always ends presence, whatever the role (a
        // demoted co-streamer leaves with Role=2).
        if ev.action == UserAction::Join && ev.role == Some(Role::Live) {
            return Merge::IgnoredViewer;
        }
        if !self.members.contains_key(&ev.user) && self.horizon.is_some_and(|h| ev.at <= h) {
            return Merge::BeyondHorizon;
        }
        let mark = Mark {
            at: ev.at,
            action: ev.action,
        };
        let member = self.members.entry(ev.user.clone()).or_default();
        if member.pruned.contains(&ev.session) {
            return Merge::Unchanged;
        }
        if let Some(s) = member.sessions.iter_mut().find(|s| s.id == ev.session) {
            if !s.merge(mark) {
                return Merge::Unchanged;
            }
        } else {
            member.sessions.push(Session {
                id: ev.session.clone(),
                first: ev.at,
                first_publish: ev.action.publishes().then_some(ev.at),
                marks: vec![mark],
            });
        }
        // `first` may have moved: keep the order (begun sessions newest first, then those known
        // only by their Leave), then the newest few of each kind. A session known only by its
        // Leave is never current and never displaces a begun one (the oldest may hold the
        // broadcast's start), but is kept on its own: its Join, still to come, must find the
        // Leave (pruned, the Join alone would make the user present for good).
        member
            .sessions
            .sort_by(|a, b| b.order_key().cmp(&a.order_key()));
        let mut dropped = Vec::new();
        // Begun sessions beyond the few: the oldest goes, its broadcast start carried over.
        loop {
            let begun = member.sessions.iter().filter(|s| s.has_begun()).count();
            if begun <= MAX_SESSIONS {
                break;
            }
            let oldest = member.sessions.remove(begun - 1);
            let next_first = member.sessions[begun - 2].first;
            let end = session_end_before(&oldest, next_first, self.closed_at);
            let chained = |from: Timestamp| {
                from <= end && next_first <= end.saturating_add(crate::config::MAX_END_GRACE_SECS)
            };
            // The chain into `oldest` (an earlier carry whose presence reached it), else its own.
            let earlier = member
                .carried
                .filter(|(_, until)| {
                    oldest.first <= until.saturating_add(crate::config::MAX_END_GRACE_SECS)
                })
                .map(|(publish, _)| publish);
            member.carried = earlier
                .into_iter()
                .chain(oldest.first_publish)
                .min()
                .filter(|publish| chained(*publish))
                .map(|publish| (publish, end));
            dropped.push(oldest.id);
        }
        // Sessions known only by their Leave beyond as many: the oldest go.
        let mut unbegun = 0;
        member.sessions.retain(|s| {
            if s.has_begun() {
                return true;
            }
            unbegun += 1;
            if unbegun > MAX_UNBEGUN {
                dropped.push(s.id.clone());
            }
            unbegun <= MAX_UNBEGUN
        });
        for id in dropped {
            if !member.pruned.contains(&id) {
                member.pruned.push(id);
            }
        }
        let kept_new = member.sessions.iter().any(|s| s.id == ev.session);
        member.pruned.sort();
        if member.pruned.len() > MAX_PRUNED {
            member.pruned.remove(0);
        }
        if kept_new {
            Merge::Changed
        } else {
            // A late event of a session older than every kept one: already superseded.
            Merge::Unchanged
        }
    }

    fn apply_camera(&mut self, user: &UserId, mark: CameraMark) -> Merge {
        if !self.members.contains_key(user) && self.horizon.is_some_and(|h| mark.at <= h) {
            return Merge::BeyondHorizon;
        }
        let member = self.members.entry(user.clone()).or_default();
        if member.pruned.contains(&mark.session) || member.camera.as_ref() >= Some(&mark) {
            return Merge::Unchanged;
        }
        member.camera = Some(mark);
        Merge::Changed
    }

    /// Whether the user's camera is off in their current session, as far as `CameraClose`
    /// callbacks tell (no camera event: on).
    pub fn camera_off(&self, user: &UserId) -> bool {
        let Some(member) = self.members.get(user) else {
            return false;
        };
        match (&member.camera, member.sessions.first()) {
            (Some(c), Some(current)) => !c.on && c.session == current.id,
            _ => false,
        }
    }

    fn apply_cdn(&mut self, status: CdnStatus) -> Merge {
        if self.cdn.is_some_and(|c| c.key() >= status.key()) {
            return Merge::Unchanged;
        }
        self.cdn = Some(status);
        Merge::Changed
    }

    /// Keeps the room bounded at [`MAX_MEMBERS`] users, forgetting first users who are gone
    /// (oldest last event first; the horizon moves up to what they last did), then present users
    /// who do not publish (oldest first), then publishing co-streamers who started last (they are
    /// waiting beyond the 16 panes anyway). The host is never forgotten.
    fn prune_members(&mut self) {
        if self.members.len() <= MAX_MEMBERS {
            return;
        }
        // The host under any end grace the configuration allows (`facts` know no configuration),
        // and the host the backend registered: the only one who can begin a broadcast, though
        // their Publish may still be on its way.
        let hosts: Vec<UserId> = [0, crate::config::MAX_END_GRACE_SECS]
            .into_iter()
            .filter_map(|grace| self.broadcast(grace).map(|b| b.host))
            .chain(self.registered_host().cloned())
            .collect();
        // (order, whether forgetting the user moves the horizon, user)
        let mut candidates: Vec<((u8, Timestamp, u8), bool, UserId)> = Vec::new();
        for (user, m) in &self.members {
            if hosts.contains(user) {
                continue;
            }
            let Some(latest) = m.sessions.first().map(Session::latest) else {
                candidates.push(((0, Timestamp::from_secs(0), 0), false, user.clone()));
                continue;
            };
            // A member known only by Leaves (a viewer leaving, Role=2): its late events cannot
            // make anyone host or take a pane, so forgetting it must not move the horizon —
            // viewer churn would otherwise push it up to the present and drop the delayed
            // events of real newcomers.
            let leaves_only = m
                .sessions
                .iter()
                .all(|s| s.marks.iter().all(|mark| mark.action == UserAction::Leave));
            let order = if !self.is_present(user) {
                (0, latest.at, latest.action.rank())
            } else if !self.is_publishing(user) {
                (1, latest.at, latest.action.rank())
            } else {
                // Latest starter first: invert the time so it sorts first.
                let since = self.publishing_since(user).unwrap_or(latest.at);
                (2, Timestamp::from_secs(u64::MAX - since.secs()), 0)
            };
            candidates.push((order, !leaves_only, user.clone()));
        }
        // Within a class, oldest first; publishing co-streamers latest starter first, and of
        // those who started in the same second the one the stage orders last first (the stage
        // orders by start, then user id) — so forgetting never drops someone the stage shows
        // while someone it would not show is kept.
        candidates.sort_by(|(a, a_horizon, a_user), (b, b_horizon, b_user)| {
            let by_user = if a.0 == 2 {
                b_user.cmp(a_user)
            } else {
                a_user.cmp(b_user)
            };
            a.cmp(b).then(a_horizon.cmp(b_horizon)).then(by_user)
        });
        let excess = self.members.len() - MAX_MEMBERS;
        for ((class, at, _), moves_horizon, user) in candidates.into_iter().take(excess) {
            if class == 0 && moves_horizon {
                self.horizon = Some(self.horizon.map_or(at, |h| h.max(at)));
            }
            self.members.remove(&user);
        }
    }

    /// Whether a session's last event is at or before the latest channel close.
    ///
    /// A session that began in the very second of the close (all its events at that second) is
    /// counted as after it: it is a new connection to the reopened channel.
    pub(crate) fn closed_after(&self, s: &Session) -> bool {
        self.closed_at.is_some_and(|c| {
            let latest = s.latest().at;
            latest < c || (latest == c && s.first < c)
        })
    }

    /// Whether the user is in the channel now (current session neither left nor closed).
    pub fn is_present(&self, user: &UserId) -> bool {
        self.current_session(user).is_some_and(|s| {
            !self.closed_after(s) && !matches!(s.latest().action, UserAction::Leave)
        })
    }

    /// Whether the user publishes now.
    pub fn is_publishing(&self, user: &UserId) -> bool {
        self.current_session(user)
            .is_some_and(|s| !self.closed_after(s) && s.latest().action.publishes())
    }

    pub(crate) fn current_session(&self, user: &UserId) -> Option<&Session> {
        self.members.get(user).and_then(|m| m.sessions.first())
    }
}
