//! Who hosts and who is on stage, derived from the room's facts.
//!
//! The host rule ("the registered host if set, else the first user to publish in an idle room;
//! the streamer leaving ends the broadcast") is history-dependent, so it is evaluated as a replay:
//! every session's last publish interval `[start, end)` is laid out on the time line and walked in
//! time order. An interval that starts while no broadcast is live starts one, hosted by its user;
//! intervals that start during a broadcast are co-streamers; the broadcast ends when its host's
//! publishing ends (a reconnect that overlaps or touches the old session continues it). Because the
//! replay sorts by time, the result is the same whatever order the events arrived in.

use super::ids::{Timestamp, UserId};
use super::state::RoomState;

/// A live broadcast: the host publishes and the room's stream should be on the CDN.
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
    /// The host first, then co-streamers by the time they started publishing (ties by user id).
    /// At most `max_panes` users.
    pub on_stage: Vec<UserId>,
    /// Publishing co-streamers beyond `max_panes`, in the same order: promoted as slots free.
    pub waiting: Vec<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval<'a> {
    start: Timestamp,
    /// `None` while the user still publishes.
    end: Option<Timestamp>,
    user: &'a UserId,
}

impl RoomState {
    /// Each session's last publish interval. A session ends at its last non-publishing event, at a
    /// channel close, or when the user's next session begins (a kicked session may never send its
    /// Leave).
    fn intervals(&self) -> Vec<Interval<'_>> {
        let mut out = Vec::new();
        for (user, member) in self.members() {
            // Newest first: `newer_first` is the start of the session after this one.
            let mut newer_first: Option<Timestamp> = None;
            for s in &member.sessions {
                if let Some(start) = s.last_publish {
                    let mut end = if s.latest.action.publishes() {
                        None
                    } else {
                        Some(s.latest.at)
                    };
                    if let Some(closed) = self.closed_at().filter(|_| self.closed_after(s)) {
                        end = Some(end.map_or(closed, |e| e.min(closed)));
                    }
                    if let Some(next) = newer_first {
                        end = Some(end.map_or(next, |e| e.min(next)));
                    }
                    out.push(Interval {
                        start,
                        end: end.map(|e| e.max(start)),
                        user,
                    });
                }
                newer_first = Some(s.first);
            }
        }
        out.sort_by(|a, b| (a.start, a.user).cmp(&(b.start, b.user)));
        out
    }

    /// The live broadcast, if any.
    pub fn broadcast(&self) -> Option<Broadcast> {
        struct Current<'a> {
            host: &'a UserId,
            started: Timestamp,
            end: Option<Timestamp>,
        }
        let mut current: Option<Current<'_>> = None;
        for iv in self.intervals() {
            match current.as_mut() {
                Some(c) if c.end.is_none_or(|e| iv.start <= e) => {
                    if iv.user == c.host {
                        c.end = match (c.end, iv.end) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            _ => None,
                        };
                    }
                }
                _ => {
                    if self.registered_host().is_none_or(|h| h == iv.user) {
                        current = Some(Current {
                            host: iv.user,
                            started: iv.start,
                            end: iv.end,
                        });
                    }
                }
            }
        }
        current.filter(|c| c.end.is_none()).map(|c| Broadcast {
            host: c.host.clone(),
            started: c.started,
        })
    }

    /// The stage of the live broadcast, with at most `max_panes` users on it (at least the host).
    pub fn stage(&self, max_panes: usize) -> Option<Stage> {
        let broadcast = self.broadcast()?;
        let mut co: Vec<(Timestamp, &UserId)> = self
            .members()
            .keys()
            .filter(|u| **u != broadcast.host && self.is_publishing(u))
            .filter_map(|u| {
                let since = self.current_session(u)?.last_publish?;
                Some((since, u))
            })
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
