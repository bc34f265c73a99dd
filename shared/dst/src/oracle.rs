//! The checks of a run, and the driver's bookkeeping they read. Every expectation comes from the
//! model ([`crate::model`]) applied to the true history and to what the driver saw — which
//! callbacks it handed to an invocation and when one completed, the PK requests the backend made
//! and how they ended, the webhooks the backend received, the tasks and calls of the Live API —
//! never from the system's stored state.
//!
//! **The views costream may have had at a time `s`** ([`in_every_view`]): it surely knew the
//! callbacks an invocation completed a second before `s` (committed by then, each whole), and may
//! have known any combination of those handed to an invocation by `s` but not surely done (each
//! committed whole or not yet). A broadcast goes on at `s` in a view when it has not ended, or
//! its host left (or the channel closed) less than the end grace before `s` — the host may be
//! back, so nothing may act on that end yet. When the model says a broadcast goes on in every such view,
//! stopping its task (or ending its PK) at `s` was a defect, not a missing callback; a stop that
//! some view explains is not judged further (the end state is, by the final check).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use costream_app::handlers::HandlerError;
use costream_app::ports::{Clock, RoomKey};
use costream_app::store::memory::InMemoryStore;
use costream_app::webhooks::{Budget, Webhook};
use costream_core::{RoomEvent, Setting, Timestamp, UserId};
use costream_sim::SimulatedLive;
use rand::Rng;

use crate::model::{self, Expect, Truth};
use crate::ports::{lock, Shared, EPOCH_MS};
use crate::workload::{Backend, Room};
use crate::{Delivery, Payload, Seen, Stats, Svc};

/// The deployment's rules the model needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_panes: usize,
    pub grace: u64,
}

/// Every webhook delivery attempt the app's backend saw.
#[derive(Debug, Default)]
pub struct Hooks {
    /// (room index, the event, whether the backend took it — its answer may still be lost).
    pub attempts: Vec<(usize, Webhook, bool)>,
}

/// The history indices a delivery carries.
pub(crate) fn events_of<'a>(rooms: &'a [Room], d: &Delivery) -> &'a [usize] {
    let room = &rooms[d.room];
    match &d.payload {
        Payload::Artc { callback, .. } => &room.callbacks[*callback].events,
        Payload::Backend { request } => std::slice::from_ref(&room.backend[*request].2),
        Payload::Cdn { .. } | Payload::Pk { .. } => &[],
    }
}

/// A delivery was handed to an invocation at `now` (sim ms).
pub(crate) fn started(seen: &Arc<Mutex<Seen>>, rooms: &[Room], d: &Delivery, now: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for i in events_of(rooms, d) {
        seen.started[d.room].entry(*i).or_insert(now);
    }
}

/// An invocation of a delivery completed with success at `now` (sim ms).
pub(crate) fn completed(seen: &Arc<Mutex<Seen>>, rooms: &[Room], d: &Delivery, now: u64) {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for i in events_of(rooms, d) {
        seen.completed[d.room].entry(*i).or_insert(now);
    }
}

/// The sim time (ms since the run began) of a true event.
fn sim_ms(truth: &Truth) -> u64 {
    (truth.at() * 1000).saturating_sub(EPOCH_MS)
}

/// The most callbacks in flight at once whose combinations [`in_every_view`] enumerates; a
/// moment with more is not judged.
const MAX_IN_FLIGHT: usize = 10;

/// The units of knowledge of room `r` (a callback, committed whole; a backend request): their
/// event indices.
fn units(rooms: &[Room], r: usize) -> impl Iterator<Item = &[usize]> {
    let room = &rooms[r];
    room.callbacks
        .iter()
        .map(|c| c.events.as_slice())
        .chain(room.backend.iter().map(|b| std::slice::from_ref(&b.2)))
}

/// Whether `holds` is true of every view costream may have had of room `r` at sim time `s` (see
/// the module docs): what it surely knew plus any combination of the units in flight. `None`
/// when too many were in flight to tell.
fn in_every_view(
    seen: &Seen,
    rooms: &[Room],
    r: usize,
    s: u64,
    holds: impl Fn(&[Truth]) -> bool,
) -> Option<bool> {
    let history = &rooms[r].history;
    let mut sure: BTreeSet<usize> = BTreeSet::new();
    let mut maybe: Vec<&[usize]> = Vec::new();
    for unit in units(rooms, r) {
        let done = unit.iter().all(|i| {
            seen.completed[r]
                .get(i)
                .is_some_and(|done| *done + 1_000 < s)
        });
        let handed = unit
            .iter()
            .all(|i| seen.started[r].get(i).is_some_and(|start| *start <= s));
        if done {
            sure.extend(unit.iter().copied());
        } else if handed {
            maybe.push(unit);
        }
    }
    if maybe.len() > MAX_IN_FLIGHT {
        return None;
    }
    for mask in 0u32..(1 << maybe.len()) {
        let mut known = sure.clone();
        for (bit, unit) in maybe.iter().enumerate() {
            if mask & (1 << bit) != 0 {
                known.extend(unit.iter().copied());
            }
        }
        let view: Vec<Truth> = known.into_iter().map(|i| history[i].clone()).collect();
        if !holds(&view) {
            return Some(false);
        }
    }
    Some(true)
}

/// Whether a PK request may go at sim time `now`: every stage-relevant event of rooms 0 and 1
/// was committed (an invocation of it completed), and none that could end a broadcast happened
/// or was committed within the end grace (plus two seconds) before now — so costream's view of
/// both rooms is the truth's, and the link binds the broadcasts the model says were live.
/// (Every event, not only those that happened by now: a reconnect whose new session arrives
/// later than the grace ends the PK in costream's view, rightly, and the model's PK, made from
/// the truth, would not know it.)
pub(crate) fn settled(seen: &Seen, rooms: &[Room], now: u64, grace: u64) -> bool {
    rooms.iter().take(2).enumerate().all(|(r, room)| {
        room.history.iter().enumerate().all(|(i, truth)| {
            let at = sim_ms(truth);
            if matches!(truth, Truth::Cdn { .. }) {
                return true;
            }
            let Some(done) = seen.completed[r].get(&i).copied().filter(|d| *d <= now) else {
                return false;
            };
            // costream holds such an event for the grace from when it received it (at the
            // latest, when its invocation completed), not from when it happened.
            let recent_end = truth.may_end() && at.max(done) + (grace + 2) * 1000 > now;
            !recent_end
        })
    })
}

/// The PK room `r` is in at the end, per the backend's accepted requests applied to the true
/// state at request time: the last request wins; a link holds while both broadcasts it was made
/// with go on (and neither room became a voice room).
fn pk_of(
    rooms: &[Room],
    pk: &[(u64, usize, Option<usize>)],
    r: usize,
    grace: u64,
) -> Option<model::Pk> {
    if r > 1 || rooms.len() < 2 {
        return None;
    }
    let (at_ms, _, Some(_)) = pk.last()? else {
        return None;
    };
    let at = (EPOCH_MS + at_ms) / 1000;
    let own = model::broadcast_at(&rooms[r].history, grace, at)?;
    let peer = model::broadcast_at(&rooms[1 - r].history, grace, at)?;
    let holds = own.end.is_none()
        && peer.end.is_none()
        && !model::voice(&rooms[r].history)
        && !model::voice(&rooms[1 - r].history);
    holds.then_some(model::Pk {
        peer_host: peer.host,
    })
}

/// What room `r`'s task should be in the end.
pub(crate) fn wanted(
    rooms: &[Room],
    r: usize,
    pk: &[(u64, usize, Option<usize>)],
    rules: Rules,
) -> Expect {
    let pk = pk_of(rooms, pk, r, rules.grace);
    model::expected(&rooms[r].history, rules.max_panes, rules.grace, pk.as_ref())
}

/// What the Live API runs for `channel`, as the model states it.
pub(crate) fn tasks_of(sim: &SimulatedLive, channel: &str) -> Vec<Expect> {
    sim.tasks()
        .into_iter()
        .filter(|t| t.channel_id == channel)
        .map(|t| {
            if t.mix_mode == 0 {
                Expect::Single(t.users.first().cloned().unwrap_or_default())
            } else {
                Expect::Mixed(t.users.clone())
            }
        })
        .collect()
}

/// Whether every room's task is what the model says.
pub(crate) fn all_right(
    rooms: &[Room],
    sim: &SimulatedLive,
    pk: &[(u64, usize, Option<usize>)],
    rules: Rules,
) -> bool {
    rooms.iter().enumerate().all(|(r, room)| {
        let want = wanted(rooms, r, pk, rules);
        let have = tasks_of(sim, &room.channel);
        match &want {
            Expect::Off => have.is_empty(),
            w => have.len() == 1 && &have[0] == w,
        }
    })
}

/// The running tasks of the rooms whose signed StreamURL has expired.
pub(crate) fn expired_urls(sim: &SimulatedLive, rooms: &[Room]) -> Vec<String> {
    let now_secs = sim.now_ms() / 1000;
    sim.tasks()
        .into_iter()
        .filter(|t| rooms.iter().any(|r| r.channel == t.channel_id))
        .filter_map(|t| {
            let exp = t
                .stream_url
                .as_deref()
                .and_then(|u| u.split("auth_key=").nth(1))
                .and_then(|a| a.split('-').next())
                .and_then(|e| e.parse::<u64>().ok());
            exp.is_none_or(|e| e <= now_secs).then(|| {
                format!(
                    "{}: the StreamURL's signature expired (expires {exp:?}, now {now_secs})",
                    t.task_id
                )
            })
        })
        .collect()
}

/// The room event of a backend request made at `at`.
pub(crate) fn backend_event(request: &Backend, at: Timestamp) -> Result<RoomEvent, HandlerError> {
    let user = |u: &str| {
        UserId::parse(u).map_err(|e| HandlerError::Unauthorized(format!("bad user id {u}: {e}")))
    };
    Ok(match request {
        Backend::Host(who) => RoomEvent::HostRegistered {
            user: who.as_deref().map(user).transpose()?,
            at,
        },
        Backend::Settings(s) => {
            let settings = costream_core::RoomSettings {
                max_panes: match s.max_panes {
                    Some(n) => Setting::Set(u8::try_from(n).unwrap_or(16)),
                    None => Setting::Default,
                },
                audio_only: if s.audio_only {
                    Setting::Set(true)
                } else {
                    Setting::Default
                },
                hide_camera_off: if s.hide_camera_off {
                    Setting::Set(true)
                } else {
                    Setting::Default
                },
                screen_share: match &s.screen_share {
                    Some(u) => Setting::Set(costream_core::ScreenShare { user_id: user(u)? }),
                    None => Setting::Default,
                },
                ..costream_core::RoomSettings::default()
            };
            RoomEvent::Settings {
                settings: Box::new(settings),
                at,
            }
        }
    })
}

/// Delivers the room's due webhooks to the app's backend, which takes each, refuses it (5xx) or
/// takes it and loses its answer (the sender sees a failure and sends it again), by the seed's
/// fates — the shell's own delivery code, with the sink as its transport.
pub(crate) async fn deliver_hooks(
    svc: &Svc,
    key: &RoomKey,
    world: &Shared,
    seen: &Arc<Mutex<Seen>>,
) {
    let Some(r) = key
        .channel
        .as_str()
        .strip_prefix("room-")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let now_ms = svc.shell.clock.now_ms();
    let send = |hook: Webhook| {
        let (world, seen) = (world.clone(), seen.clone());
        async move {
            let fate = {
                let mut w = lock(&world);
                let (refused, lost) = (w.knobs.hook_refused, w.knobs.hook_lost);
                let on = w.faults;
                if on && refused > 0.0 && w.rng.random_bool(refused.min(1.0)) {
                    w.fired.hooks_refused += 1;
                    1
                } else if on && lost > 0.0 && w.rng.random_bool(lost.min(1.0)) {
                    w.fired.hooks_lost += 1;
                    2
                } else {
                    w.fired.hooks_accepted += 1;
                    0
                }
            };
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            s.hooks.attempts.push((r, hook, fate != 1));
            match fate {
                0 => Ok(()),
                1 => Err("503 from the backend".to_owned()),
                _ => Err("timed out (the backend took it)".to_owned()),
            }
        }
    };
    let _ = costream_app::webhooks::deliver(
        &svc.shell.store,
        key,
        now_ms,
        Budget {
            events: 8,
            time: std::time::Duration::from_secs(4),
        },
        16,
        send,
    )
    .await;
}

/// An idle room's item expires (TTL: still readable, treated as absent) or is deleted — only one
/// whose record names no task (an item with a task has no expiry).
pub(crate) fn expire(
    store: &crate::ports::GatedStore,
    svc: &Svc,
    channel: &str,
    delete: bool,
    now: u64,
    world: &Shared,
) {
    let inner: &InMemoryStore = &store.inner;
    let Some((key, room)) = inner
        .rooms()
        .into_iter()
        .find(|(k, _)| k.channel.as_str() == channel)
    else {
        return;
    };
    if room.record.running().task().is_some() || room.lease.is_some() {
        return;
    }
    let _ = svc;
    let mut w = lock(world);
    w.lives_ended.push((channel.to_owned(), EPOCH_MS + now));
    if delete {
        inner.delete(&key);
        w.fired.items_deleted += 1;
    } else {
        inner.set_expiry(&key, Some(EPOCH_MS + now));
        w.fired.items_expired += 1;
    }
}

/// The creation time (sim ms) of a webhook, from its id `<room>:<version>:<ms>:<type>`.
fn created_ms(hook: &Webhook) -> Option<u64> {
    let mut parts = hook.id.rsplitn(3, ':');
    let _kind = parts.next()?;
    let ms = parts.next()?.parse::<u64>().ok()?;
    Some(ms.saturating_sub(EPOCH_MS))
}

/// Every check of the run; `Err` with every problem found.
pub(crate) fn check(
    rooms: &[Room],
    sim: &SimulatedLive,
    world: &Shared,
    seen: &Seen,
    rules: Rules,
    leaks: Vec<String>,
) -> Result<Stats, String> {
    let mut problems = leaks;
    let w = lock(world);
    problems.extend(w.violations.iter().cloned());
    // No stale layout applied after a newer one (within a life of the room's item: the
    // versions of a new life start over).
    for room in rooms {
        let mut last: Option<(costream_core::Version, &'static str)> = None;
        let ends: Vec<u64> = w
            .lives_ended
            .iter()
            .filter(|(c, _)| *c == room.channel)
            .map(|(_, at)| *at)
            .collect();
        let mut life = 0;
        for a in w.applied.iter().filter(|a| a.channel == room.channel) {
            let now_life = ends.iter().filter(|e| **e <= a.at_ms).count();
            if now_life != life {
                life = now_life;
                last = None;
            }
            if let Some((v, action)) = last {
                if a.version < v {
                    problems.push(format!(
                        "{}: {} from version {} applied at {} ms after {action} from version {v}",
                        room.channel, a.action, a.version, a.at_ms
                    ));
                }
            }
            last = Some((a.version, a.action));
        }
    }
    let mut fired = w.fired.clone();
    let begun = w.begun.clone();
    drop(w);
    fired.held_stops_checked += stops(rooms, seen, &begun, rules, &mut problems);
    pk_ends(rooms, seen, rules, &mut problems);
    webhooks(rooms, seen, rules, &mut problems);
    for (r, room) in rooms.iter().enumerate() {
        let want = wanted(rooms, r, &seen.pk, rules);
        let have = tasks_of(sim, &room.channel);
        if have.len() > 1 {
            problems.push(format!("{}: {} tasks", room.channel, have.len()));
        }
        let right = match &want {
            Expect::Off => have.is_empty(),
            w => have.len() == 1 && &have[0] == w,
        };
        if !right {
            problems.push(format!(
                "{}: model says {want:?}, the Live API runs {have:?}\n  history: {:?}\n  pk requests: {:?}",
                room.channel, room.history, seen.pk
            ));
        }
    }
    if !problems.is_empty() {
        return Err(format!("{}\n{:?}", problems.join("\n"), lock(world).knobs));
    }
    Ok(Stats {
        fired,
        ..Stats::default()
    })
}

/// The transient invariant: a task whose broadcast goes on, in what costream surely knew when it
/// began the Stop, is never stopped (a Stop and a Start is ≥ 10 s of black for every viewer; a
/// reordered reconnect must never cause one). Returns how many Stops it judged.
fn stops(
    rooms: &[Room],
    seen: &Seen,
    begun: &[crate::ports::Begun],
    rules: Rules,
    problems: &mut Vec<String>,
) -> u64 {
    let mut judged = 0;
    for stop in begun.iter().filter(|b| b.action == "stop") {
        let Some(r) = rooms.iter().position(|room| room.channel == stop.channel) else {
            continue;
        };
        let Some(task_secs) = stop
            .task
            .rsplit_once('_')
            .and_then(|(_, s)| s.parse::<u64>().ok())
        else {
            continue;
        };
        if stop.other_tasks > 0 {
            // One of several tasks of the channel (a leak the sweep stops): any may go.
            continue;
        }
        let s = stop.at_ms.saturating_sub(EPOCH_MS);
        let goes_on = |view: &[Truth]| {
            model::goes_on_at(view, rules.grace, stop.at_ms).is_some_and(|b| b.start <= task_secs)
        };
        let Some(defect) = in_every_view(seen, rooms, r, s, goes_on) else {
            continue;
        };
        judged += 1;
        if defect {
            if crate::trace() {
                eprintln!("stop of {} at {s} ms; the room's history, with when each event was handed over / completed:", stop.task);
                for (i, t) in rooms[r].history.iter().enumerate() {
                    eprintln!(
                        "  {i:3} {:?} started {:?} completed {:?}",
                        t,
                        seen.started[r].get(&i),
                        seen.completed[r].get(&i)
                    );
                }
            }
            let b = model::broadcast(&rooms[r].history, rules.grace);
            problems.push(format!(
                "{}: task {} stopped at {s} ms while its broadcast went on in every view costream may have had (at the end: {b:?})",
                stop.channel, stop.task
            ));
        }
    }
    judged
}

/// The transient invariant of a PK: ended (a `pk.ended` webhook) only by the backend or when one
/// of its two broadcasts ended (or its room became a voice room) in what costream knew.
fn pk_ends(rooms: &[Room], seen: &Seen, rules: Rules, problems: &mut Vec<String>) {
    let mut judged = BTreeSet::new();
    for (r, hook, _) in &seen.hooks.attempts {
        if hook.kind != "pk.ended" || !judged.insert(hook.id.clone()) || *r > 1 {
            continue;
        }
        let Some(c) = created_ms(hook) else { continue };
        // The backend's last accepted request before the end.
        let Some((at_ms, _, Some(_))) = seen.pk.iter().rfind(|p| p.0 <= c) else {
            continue;
        };
        // An unlink tried since the link (its answer may have been lost) explains the end.
        if seen.unlink_tries.iter().any(|t| at_ms <= t && *t <= c) {
            continue;
        }
        let at = (EPOCH_MS + at_ms) / 1000;
        let same = |room: usize| {
            let Some(linked) = model::broadcast_at(&rooms[room].history, rules.grace, at) else {
                return false;
            };
            let goes_on = |view: &[Truth]| {
                !model::voice(view)
                    && model::goes_on_at(view, rules.grace, EPOCH_MS + c)
                        .is_some_and(|b| b.host == linked.host && b.start <= at)
            };
            in_every_view(seen, rooms, room, c, goes_on) == Some(true)
        };
        if same(0) && same(1) {
            problems.push(format!(
                "room-{r}: the PK made at {at_ms} ms was ended at {c} ms while both its broadcasts went on in what costream surely knew ({})",
                hook.id
            ));
        }
    }
}

/// The webhooks as the backend saw them: an id is always the same event; a room's events arrive
/// in the order they were committed; and in the end the backend's picture of each room (live or
/// ended, and who is on stage) is the model's.
fn webhooks(rooms: &[Room], seen: &Seen, rules: Rules, problems: &mut Vec<String>) {
    let mut by_id: BTreeMap<&str, &Webhook> = BTreeMap::new();
    for (_, hook, _) in &seen.hooks.attempts {
        match by_id.get(hook.id.as_str()) {
            Some(first) if *first != hook => problems.push(format!(
                "webhook {} sent twice with different content: {first:?} / {hook:?}",
                hook.id
            )),
            Some(_) => {}
            None => {
                by_id.insert(&hook.id, hook);
            }
        }
    }
    for (r, room) in rooms.iter().enumerate() {
        // The first time the backend took each of the room's events, in the order it did.
        let mut taken: Vec<&Webhook> = Vec::new();
        let mut ids = BTreeSet::new();
        for (hr, hook, took) in &seen.hooks.attempts {
            if *hr == r && *took && ids.insert(hook.id.as_str()) {
                taken.push(hook);
            }
        }
        let mut last_ms = 0;
        for hook in &taken {
            let ms = created_ms(hook).unwrap_or(0);
            if ms < last_ms {
                problems.push(format!(
                    "{}: webhook {} arrived after a later one ({last_ms} ms)",
                    room.channel, hook.id
                ));
            }
            last_ms = last_ms.max(ms);
        }
        let last = taken
            .iter()
            .rev()
            .find(|h| h.kind == "stage.changed" || h.kind == "room.ended");
        let stage = model_stage(&room.history, rules);
        match (stage, last) {
            (None, None) => {}
            (None, Some(h)) if h.kind == "room.ended" => {}
            (Some(stage), Some(h)) if h.kind == "stage.changed" => {
                let on_stage: Vec<String> = h.data["on_stage"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                if on_stage != stage {
                    problems.push(format!(
                        "{}: the backend was last told the stage is {on_stage:?}, the model says {stage:?}",
                        room.channel
                    ));
                }
            }
            (stage, last) => problems.push(format!(
                "{}: the backend's last word is {:?}, the model says the stage is {stage:?}",
                room.channel,
                last.map(|h| (&h.kind, &h.data))
            )),
        }
    }
}

/// Who is on stage at the end (host first), per the model: the picture without PK, screen or
/// hidden cameras — what `stage.changed` reports.
fn model_stage(history: &[Truth], rules: Rules) -> Option<Vec<String>> {
    let b = model::broadcast(history, rules.grace)?;
    // The stage is the plain picture's users: settings that reshape the picture aside.
    let plain: Vec<Truth> = history
        .iter()
        .map(|t| match t {
            Truth::Settings { at, settings } => Truth::Settings {
                at: *at,
                settings: model::Settings {
                    hide_camera_off: false,
                    screen_share: None,
                    ..settings.clone()
                },
            },
            other => other.clone(),
        })
        .collect();
    match model::expected(&plain, rules.max_panes, rules.grace, None) {
        Expect::Off => None,
        Expect::Single(h) => Some(vec![h]),
        Expect::Mixed(users) => Some(users),
    }
    .filter(|users| users.first() == Some(&b.host))
}
