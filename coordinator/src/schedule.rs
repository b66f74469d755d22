//! Cron schedules: checking a [`ScheduleSpec`] and computing its slots.
//!
//! [`Schedule::new`] parses the spec's cron expression with croner (five fields, or six with
//! a leading seconds field; no year field) and its IANA time zone with chrono-tz, and names
//! the field at fault when one is wrong. [`Schedule::next_slots`] is pure: it takes the time
//! to count from, so the firing loop can drive it from the injectable clock and tests need no
//! real time. Slots are milliseconds since the Unix epoch, whole seconds, as `ScheduleFired`
//! records them.
//!
//! Daylight-saving changes are handled as croner defines them: a fixed-time job (`0 30 2 * *
//! *`) whose time falls into a spring-forward gap runs at the first valid time after the gap,
//! and only once in a fall-back overlap; a job with a wildcard or step in its seconds, minutes
//! or hours skips the slots in the gap and runs in both copies of the overlap.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use ractor::call_t;
use serde::Serialize;
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::schedule::{
    CatchUpPolicy, OverlapPolicy, check_schedule_name, fire_idempotency_key,
};
use swarm_protocol::{Event, ObjectiveId, ScheduleSpec, SchedulerError, SchedulerMsg};

use swarm_store::StoredSchedule;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use swarm_agents::clock::{Clock, TokioClock};

use crate::journal::now_ms;
use crate::{Error, Swarm};

/// More than any daylight-saving shift (one hour almost everywhere; at most two in history).
const DST_MARGIN_MS: u64 = 3 * 3_600_000;

/// A part of a [`ScheduleSpec`] that is not valid, with the name of its field (as the HTTP
/// API's problem `field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    /// The field at fault: `name`, `cron`, `time_zone` or `catch_up.window`.
    pub field: &'static str,
    /// What is wrong with it (for `cron`, croner's message).
    pub message: String,
}

impl ScheduleError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A checked schedule: its spec with the parsed cron expression and time zone.
#[derive(Clone)]
pub struct Schedule {
    spec: ScheduleSpec,
    cron: Cron,
    zone: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("spec", &self.spec)
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

/// Parses a cron expression as schedules read it: an optional leading seconds field, no year
/// field. The error is croner's message.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone name (e.g. `Europe/Berlin`)"))
}

impl Schedule {
    /// Checks `spec`: its name, its cron expression (which must match at least one time), its
    /// time zone and its catch-up window. The template is checked as any objective is, when a
    /// fire submits it.
    pub fn new(spec: ScheduleSpec) -> Result<Self, ScheduleError> {
        check_schedule_name(&spec.name).map_err(|e| ScheduleError::new("name", e))?;
        let cron = parse_cron(&spec.cron).map_err(|e| ScheduleError::new("cron", e))?;
        let zone =
            parse_time_zone(&spec.time_zone).map_err(|e| ScheduleError::new("time_zone", e))?;
        if let CatchUpPolicy::RunLatest { window } = spec.catch_up
            && window.is_zero()
        {
            return Err(ScheduleError::new(
                "catch_up.window",
                "must be longer than zero (use the `skip` policy to catch nothing up)",
            ));
        }
        let schedule = Self { spec, cron, zone };
        if schedule.next_slots(0, 1).is_empty() {
            return Err(ScheduleError::new(
                "cron",
                format!("`{}` never matches a date", schedule.spec.cron),
            ));
        }
        Ok(schedule)
    }

    /// The spec, as given.
    pub fn spec(&self) -> &ScheduleSpec {
        &self.spec
    }

    /// The time zone the expression is read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Up to `n` slots strictly after `after_ms` (ms since the Unix epoch), in order. Fewer
    /// when the expression has no more matches before the year 5000 (croner's search limit).
    /// Does not look at `paused`: whether to fire is the caller's decision.
    pub fn next_slots(&self, after_ms: u64, n: usize) -> Vec<u64> {
        let mut slots = Vec::new();
        if n == 0 {
            return slots;
        }
        // croner searches in local (wall-clock) time and yields both copies of a time in a
        // fall-back overlap one after the other, so near a daylight-saving change its order
        // is not the order of real time, and a search from inside the overlap's first copy
        // misses the second copy's earlier slots. Near a change, the search starts
        // `DST_MARGIN` earlier and goes on until it passed the n-th slot by as much; the
        // slots are then sorted. Elsewhere it is one croner step per slot.
        let near_change = |ms: u64| self.near_change(ms);
        // Slots are whole seconds: count from the second `after_ms` falls in (exclusive; a
        // slot within that second but after `after_ms` cannot exist).
        let from_ms = if near_change(after_ms) {
            after_ms.saturating_sub(DST_MARGIN_MS)
        } else {
            after_ms
        };
        let Some(start) = i64::try_from(from_ms / 1000)
            .ok()
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        else {
            return slots;
        };
        let start = self.zone.from_utc_datetime(&start.naive_utc());
        let mut until: Option<u64> = None;
        for next in self.cron.iter_after(start) {
            let Ok(ms) = u64::try_from(next.timestamp_millis()) else {
                break;
            };
            if until.is_some_and(|until| ms > until) {
                break;
            }
            if ms > after_ms {
                slots.push(ms);
            }
            if until.is_none() && slots.len() >= n {
                slots.sort_unstable();
                slots.dedup();
                if slots.len() >= n {
                    let nth = slots[n - 1];
                    if !near_change(nth) {
                        break;
                    }
                    until = Some(nth.saturating_add(DST_MARGIN_MS));
                }
            }
        }
        slots.sort_unstable();
        slots.dedup();
        slots.truncate(n);
        slots
    }

    /// True when the zone's UTC offset changes within `DST_MARGIN_MS` of `ms`.
    fn near_change(&self, ms: u64) -> bool {
        let offset = |ms: u64| {
            let at = DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)?;
            Some(self.zone.offset_from_utc_datetime(&at.naive_utc()).fix())
        };
        offset(ms.saturating_sub(DST_MARGIN_MS)) != offset(ms.saturating_add(DST_MARGIN_MS))
    }

    /// The latest slot at or before `at_ms` and strictly after `after_ms`, if any: the one
    /// slot `CatchUpPolicy::RunLatest` fires after downtime.
    pub fn latest_slot_between(&self, after_ms: u64, at_ms: u64) -> Option<u64> {
        if after_ms >= at_ms {
            return None;
        }
        if self.near_change(at_ms) {
            // croner's backward search has the forward one's trouble with a fall-back overlap:
            // walk forward over the last few hours instead.
            let from = after_ms.max(at_ms.saturating_sub(DST_MARGIN_MS));
            let mut latest = None;
            let mut cursor = from;
            loop {
                let batch = self.next_slots(cursor, 256);
                let before: Vec<u64> = batch.iter().copied().filter(|&s| s <= at_ms).collect();
                if let Some(&last) = before.last() {
                    latest = Some(last);
                    cursor = last;
                }
                if before.len() < batch.len() || batch.len() < 256 {
                    return latest;
                }
            }
        }
        let Ok(secs) = i64::try_from(at_ms / 1000 + 1) else {
            return None;
        };
        let end = DateTime::<Utc>::from_timestamp(secs, 0)?;
        let end = self.zone.from_utc_datetime(&end.naive_utc());
        let prev = self.cron.find_previous_occurrence(&end, false).ok()?;
        let ms = u64::try_from(prev.timestamp_millis()).ok()?;
        (ms > after_ms && ms <= at_ms).then_some(ms)
    }
}

/// Up to `n` slots of `spec` strictly after `after_ms`; the spec is checked first.
pub fn next_slots(spec: &ScheduleSpec, after_ms: u64, n: usize) -> Result<Vec<u64>, ScheduleError> {
    Ok(Schedule::new(spec.clone())?.next_slots(after_ms, n))
}

/// How long the firing loop sleeps when no schedule has a next slot (a change wakes it).
const IDLE_SLEEP: Duration = Duration::from_secs(3_600);

/// How often the firing loop looks whether a `queue_one` slot may fire.
const QUEUE_POLL_MS: u64 = 1_000;

/// The firing loop started by [`Swarm::start_schedule_loop`].
#[derive(Debug)]
pub struct ScheduleLoop {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
    turns: watch::Receiver<u64>,
}

impl ScheduleLoop {
    /// Waits until the loop has finished at least `turns` turns since it started (each turn
    /// fires what was due, the first one catching up), so a test can look at what a turn
    /// did without sleeping.
    pub async fn turned(&mut self, turns: u64) {
        let _ = self.turns.wait_for(|done| *done >= turns).await;
    }

    /// Stops the loop and waits for it (a fire under way completes first).
    pub async fn stop(mut self) {
        drop(self.stop.take());
        let _ = self.handle.await;
    }
}

/// How many fires of each schedule [`ScheduleView::recent_fires`] keeps.
pub const RECENT_FIRES: usize = 10;

/// How many next fire times [`ScheduleView::next_fires_ms`] shows.
pub const NEXT_FIRES: usize = 5;

/// One fire of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScheduleFire {
    /// The slot, ms since the Unix epoch.
    pub slot_ms: u64,
    /// The objective it submitted.
    pub objective: ObjectiveId,
}

/// A slot a schedule did not fire, or could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MissedSlot {
    /// The slot, ms since the Unix epoch.
    pub slot_ms: u64,
    /// Why it was skipped, or what went wrong.
    pub reason: String,
}

/// Why a slot was not fired.
#[derive(Debug, Clone, Copy)]
enum Missed {
    /// The overlap policy left it out.
    Skipped,
    /// Its objective could not be submitted.
    Failed,
}

/// A schedule as `GET /v1/schedules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// The schedule as created (with `paused` as it is now).
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    /// When it was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Its next slots, ms since the Unix epoch (none while it is paused).
    pub next_fires_ms: Vec<u64>,
    /// Its latest fires, newest first.
    pub recent_fires: Vec<ScheduleFire>,
    /// The slots it skipped lately under its overlap policy, newest first (since this process
    /// started; each is a `ScheduleSkipped` event in the log).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_skips: Vec<MissedSlot>,
    /// Its latest slot that could not submit its objective, if the latest fire attempt
    /// failed (since this process started; each is a `ScheduleFireFailed` event in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<MissedSlot>,
}

/// The schedules a swarm holds, by name, with the clock their times are read on and the bell
/// that wakes the firing loop when one changes.
#[derive(Debug)]
pub(crate) struct ScheduleBook {
    entries: BTreeMap<String, Entry>,
    clock: Arc<dyn Clock>,
    changed: Arc<Notify>,
}

impl Default for ScheduleBook {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            clock: Arc::new(TokioClock::new()),
            changed: Arc::new(Notify::new()),
        }
    }
}

impl ScheduleBook {
    /// [`Self::restore_with`] without keyed objectives.
    #[cfg(test)]
    fn restore(stored: Vec<StoredSchedule>) -> Self {
        Self::restore_with(stored, &[]).0
    }

    /// The schedules the store's index holds (see `Swarm::open`). One whose spec no longer
    /// checks (a croner or time zone database change) is left out with a warning; it stays in
    /// the index until it is deleted.
    ///
    /// Reconciled with the objectives submitted under schedule keys
    /// (`schedule:<name>:<slot_ms>`, from the objective index): a fire that the coordinator
    /// stopped between its `ObjectiveSubmitted` and its `ScheduleFired` counts as that slot's
    /// fire (it is not caught up again), and is returned so that its `ScheduleFired` can be
    /// recorded now.
    pub(crate) fn restore_with(
        stored: Vec<StoredSchedule>,
        keyed: &[(String, ObjectiveId)],
    ) -> (Self, Vec<(String, u64, ObjectiveId)>) {
        // Per schedule, its newest keyed fire.
        let mut newest: BTreeMap<&str, (u64, ObjectiveId)> = BTreeMap::new();
        for (key, objective) in keyed {
            let Some((name, slot)) = key
                .strip_prefix("schedule:")
                .and_then(|rest| rest.rsplit_once(':'))
            else {
                continue;
            };
            let Ok(slot) = slot.parse::<u64>() else {
                continue;
            };
            let best = newest.entry(name).or_insert((slot, *objective));
            if slot > best.0 {
                *best = (slot, *objective);
            }
        }
        let mut unrecorded = Vec::new();
        let mut entries = BTreeMap::new();
        for stored in stored {
            let name = stored.spec.name.clone();
            match Schedule::new(stored.spec) {
                Ok(schedule) => {
                    let mut last_fire = stored.last_fire;
                    if let Some(&(slot, objective)) = newest.get(name.as_str())
                        && last_fire.is_none_or(|(last, _)| slot > last)
                        && slot >= stored.created_at_ms
                    {
                        unrecorded.push((name.clone(), slot, objective));
                        last_fire = Some((slot, objective));
                    }
                    let fires = last_fire
                        .map(|(slot_ms, objective)| ScheduleFire { slot_ms, objective })
                        .into_iter()
                        .collect();
                    let last_slot = last_fire.map_or(0, |(slot, _)| slot);
                    entries.insert(
                        name,
                        Entry {
                            schedule,
                            created_at_ms: stored.created_at_ms,
                            fires,
                            cursor_ms: last_slot.max(stored.changed_at_ms),
                            catching_up: true,
                            queued: None,
                            skips: VecDeque::new(),
                            last_failure: None,
                        },
                    );
                }
                Err(err) => tracing::warn!(schedule = %name, %err, "schedule left out"),
            }
        }
        (
            Self {
                entries,
                ..Self::default()
            },
            unrecorded,
        )
    }

    /// What the firing loop does at `now_ms`: the slots to fire (after applying catch-up, so
    /// each schedule has at most one) and when to look again.
    fn due(&mut self, now_ms: u64) -> (Vec<(String, u64)>, Option<u64>) {
        let mut due = Vec::new();
        let mut wake: Option<u64> = None;
        for (name, entry) in &mut self.entries {
            if entry.schedule.spec().paused {
                continue;
            }
            if let Some(latest) = entry.schedule.latest_slot_between(entry.cursor_ms, now_ms) {
                let fire = if entry.catching_up {
                    // Slots that passed while the coordinator was down.
                    match entry.schedule.spec().catch_up {
                        CatchUpPolicy::Skip => false,
                        CatchUpPolicy::RunLatest { window } => {
                            u128::from(now_ms - latest) <= window.as_millis()
                        }
                    }
                } else {
                    // A late wake fires the latest due slot once, not every slot it passed.
                    true
                };
                if fire {
                    due.push((name.clone(), latest));
                }
            }
            entry.catching_up = false;
            entry.cursor_ms = entry.cursor_ms.max(now_ms);
            let next = entry
                .schedule
                .next_slots(entry.cursor_ms, 1)
                .first()
                .copied();
            if entry.queued.is_some() {
                let poll = now_ms.saturating_add(QUEUE_POLL_MS);
                wake = Some(wake.map_or(poll, |w| w.min(poll)));
            }
            if let Some(next) = next {
                wake = Some(wake.map_or(next, |w| w.min(next)));
            }
        }
        (due, wake)
    }
}

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    created_at_ms: u64,
    /// Newest first, at most `RECENT_FIRES`.
    fires: VecDeque<ScheduleFire>,
    /// Slots at or before this are done (fired, skipped, or before the creation or the last
    /// resume).
    cursor_ms: u64,
    /// True after a restart until the firing loop applied the catch-up policy to the slots
    /// missed while the coordinator was down.
    catching_up: bool,
    /// A slot that waits for the previous fire's objective to end (`queue_one`).
    queued: Option<u64>,
    /// Newest first, at most `RECENT_FIRES`.
    skips: VecDeque<MissedSlot>,
    /// Set when a fire fails, cleared by the next fire that succeeds.
    last_failure: Option<MissedSlot>,
}

impl Entry {
    fn view(&self, now_ms: u64) -> ScheduleView {
        let spec = self.schedule.spec().clone();
        let next_fires_ms = if spec.paused {
            Vec::new()
        } else {
            self.schedule.next_slots(now_ms, NEXT_FIRES)
        };
        ScheduleView {
            spec,
            created_at_ms: self.created_at_ms,
            next_fires_ms,
            recent_fires: self.fires.iter().copied().collect(),
            recent_skips: self.skips.iter().cloned().collect(),
            last_failure: self.last_failure.clone(),
        }
    }
}

impl Swarm {
    /// Creates a schedule: checks `spec` (a bad field is [`Error::Schedule`], naming it; a
    /// template whose task graph is not valid is [`Error::Scheduler`] with
    /// [`SchedulerError::Graph`]; a name in use is [`Error::ScheduleExists`]), records `ScheduleCreated` and returns once
    /// it is durable (with a durable log).
    ///
    /// With a durable log a restart restores the schedule (from the store's index of the
    /// schedule events).
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<ScheduleView, Error> {
        let schedule = Schedule::new(spec)?;
        // The template's graph is checked as a submit checks it; whether its capabilities (or
        // a planner) are registered is left to each fire, as agents come and go.
        let template = &schedule.spec().template;
        if !template.tasks.is_empty() {
            graph::validate(&template.tasks, &NoTasks, &template.limits)
                .map_err(|e| Error::Scheduler(SchedulerError::Graph(e)))?;
        }
        let name = schedule.spec().name.clone();
        let mut book = self.schedules.lock().await;
        if book.entries.contains_key(&name) {
            return Err(Error::ScheduleExists(name));
        }
        self.record_durably(Event::ScheduleCreated {
            spec: Box::new(schedule.spec().clone()),
        })
        .await?;
        let now = now_ms();
        // The time the log gave the event, so a restart shows the same. The event is durable
        // by now: a failed read must not fail the creation, so it falls back to the clock.
        let mut created_at_ms = now;
        if let Some(store) = &self.store
            && let Ok(stored) = store.schedules().await
            && let Some(stored) = stored.into_iter().find(|s| s.spec.name == name)
        {
            created_at_ms = stored.created_at_ms;
        }
        let entry = Entry {
            schedule,
            created_at_ms,
            fires: VecDeque::new(),
            cursor_ms: book.clock.now_ms(),
            catching_up: false,
            queued: None,
            skips: VecDeque::new(),
            last_failure: None,
        };
        let view = entry.view(book.clock.now_ms());
        book.entries.insert(name, entry);
        book.changed.notify_one();
        Ok(view)
    }

    /// Every schedule, by name, with its next fire times as of now and its recent fires.
    pub async fn schedules(&self) -> Vec<ScheduleView> {
        let book = self.schedules.lock().await;
        let now = book.clock.now_ms();
        book.entries.values().map(|e| e.view(now)).collect()
    }

    /// Pauses (`paused`) or resumes a schedule, recording `SchedulePaused` or
    /// `ScheduleResumed` (durable before it returns); asking for the state it is in records
    /// nothing.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleView, Error> {
        let mut book = self.schedules.lock().await;
        let Some(entry) = book.entries.get(name) else {
            return Err(Error::UnknownSchedule(name.to_owned()));
        };
        if entry.schedule.spec().paused != paused {
            let schedule = name.to_owned();
            self.record_durably(if paused {
                Event::SchedulePaused { schedule }
            } else {
                Event::ScheduleResumed { schedule }
            })
            .await?;
        }
        let now = book.clock.now_ms();
        let entry = book
            .entries
            .get_mut(name)
            .ok_or_else(|| Error::UnknownSchedule(name.to_owned()))?;
        if entry.schedule.spec.paused && !paused {
            // The slots of the pause are never fired nor caught up.
            entry.cursor_ms = entry.cursor_ms.max(now);
            entry.queued = None;
        }
        entry.schedule.spec.paused = paused;
        let view = entry.view(now);
        book.changed.notify_one();
        Ok(view)
    }

    /// Deletes a schedule, recording `ScheduleDeleted` (durable before it returns). The
    /// objectives it submitted are not touched.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let mut book = self.schedules.lock().await;
        if !book.entries.contains_key(name) {
            return Err(Error::UnknownSchedule(name.to_owned()));
        }
        self.record_durably(Event::ScheduleDeleted {
            schedule: name.to_owned(),
        })
        .await?;
        book.entries.remove(name);
        book.changed.notify_one();
        Ok(())
    }

    /// Fires `name` for the slot at `slot_ms`: submits its template under the idempotency key
    /// `schedule:<name>:<slot_ms>`, then records `ScheduleFired` (durable before it returns),
    /// and returns the objective. Firing a slot again returns the objective of its first fire
    /// and submits nothing (the key), which is what makes a fire that a crash interrupted
    /// safe to repeat: the objective may be in the log without its `ScheduleFired`.
    ///
    /// Whether the slot is due, and the overlap and catch-up policies, are the firing loop's
    /// business (`start_schedule_loop`); this fires even a paused schedule.
    pub async fn fire_schedule(&self, name: &str, slot_ms: u64) -> Result<ObjectiveId, Error> {
        let mut book = self.schedules.lock().await;
        let Some(entry) = book.entries.get(name) else {
            return Err(Error::UnknownSchedule(name.to_owned()));
        };
        let template = entry.schedule.spec().template.clone();
        let key = fire_idempotency_key(name, slot_ms);
        let objective = self.submit_with_key(template, Some(key)).await?;
        let recorded = entry
            .fires
            .iter()
            .any(|f| f.slot_ms == slot_ms && f.objective == objective);
        if !recorded {
            self.record_durably(Event::ScheduleFired {
                schedule: name.to_owned(),
                slot_ms,
                objective,
            })
            .await?;
        }
        let entry = book
            .entries
            .get_mut(name)
            .ok_or_else(|| Error::UnknownSchedule(name.to_owned()))?;
        entry.cursor_ms = entry.cursor_ms.max(slot_ms);
        entry.last_failure = None;
        if !recorded {
            let at = entry
                .fires
                .iter()
                .position(|f| f.slot_ms < slot_ms)
                .unwrap_or(entry.fires.len());
            entry.fires.insert(at, ScheduleFire { slot_ms, objective });
            entry.fires.truncate(RECENT_FIRES);
        }
        Ok(objective)
    }

    /// Starts the loop that fires the schedules at their slots on `clock` (which from now on
    /// is also the clock of creations, resumes and the next fire times shown). Stop it with
    /// [`ScheduleLoop::stop`] before the swarm is shut down. It holds the swarm only while
    /// it fires, never across a sleep.
    ///
    /// At its first turn, the slots missed while the coordinator was down (after a schedule's
    /// latest fire, creation or resume, up to now) are caught up as the schedule's
    /// `catch_up` says. Afterwards each due slot fires under the `overlap` policy; a turn
    /// that woke late fires the latest due slot once.
    pub async fn start_schedule_loop(self: &Arc<Self>, clock: Arc<dyn Clock>) -> ScheduleLoop {
        let changed = {
            let mut book = self.schedules.lock().await;
            book.clock = clock.clone();
            book.changed.clone()
        };
        let swarm = Arc::downgrade(self);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (turned, turns) = watch::channel(0u64);
        let handle = tokio::spawn(async move {
            loop {
                let wake = {
                    let Some(swarm) = swarm.upgrade() else {
                        return;
                    };
                    swarm.schedule_turn().await
                };
                turned.send_modify(|n| *n += 1);
                let sleep = wake.map_or(IDLE_SLEEP, |at| {
                    Duration::from_millis(at.saturating_sub(clock.now_ms()))
                });
                tokio::select! {
                    _ = &mut stopped => return,
                    () = changed.notified() => {}
                    () = tokio::time::sleep(sleep) => {}
                }
            }
        });
        ScheduleLoop {
            stop: Some(stop),
            handle,
            turns,
        }
    }

    /// One turn of the firing loop: fires what is due and returns when to look again.
    async fn schedule_turn(&self) -> Option<u64> {
        let (due, queued, wake) = {
            let mut book = self.schedules.lock().await;
            let now = book.clock.now_ms();
            let (due, wake) = book.due(now);
            let queued: Vec<(String, u64, Option<ObjectiveId>)> = book
                .entries
                .iter()
                .filter_map(|(name, e)| {
                    let slot = e.queued?;
                    Some((name.clone(), slot, e.fires.front().map(|f| f.objective)))
                })
                .collect();
            (due, queued, wake)
        };
        // A queued slot fires once the objective it waited for has ended.
        for (name, slot, previous) in queued {
            if let Some(previous) = previous
                && self.still_running(previous).await
            {
                continue;
            }
            if let Some(entry) = self.schedules.lock().await.entries.get_mut(&name) {
                entry.queued = None;
            }
            if let Err(err) = self.fire_schedule(&name, slot).await {
                self.missed(&name, slot, Missed::Failed, err.to_string())
                    .await;
            }
        }
        for (name, slot) in due {
            if let Err(err) = self.fire_with_overlap(&name, slot).await {
                self.missed(&name, slot, Missed::Failed, err.to_string())
                    .await;
            }
        }
        wake
    }

    /// A slot that was not fired, recorded and shown: skipped under the overlap policy
    /// (`ScheduleSkipped`, in the schedule's `recent_skips`), or unable to submit its
    /// objective (`ScheduleFireFailed`, its `last_failure`; the slot is not tried again).
    async fn missed(&self, name: &str, slot_ms: u64, how: Missed, reason: String) {
        match how {
            // The policy at work: not something to alert on.
            Missed::Skipped => tracing::debug!(schedule = %name, slot_ms, %reason, "slot skipped"),
            Missed::Failed => tracing::warn!(schedule = %name, slot_ms, %reason, "fire failed"),
        }
        let missed = MissedSlot {
            slot_ms,
            reason: reason.clone(),
        };
        if let Some(entry) = self.schedules.lock().await.entries.get_mut(name) {
            match how {
                Missed::Skipped => {
                    entry.skips.push_front(missed);
                    entry.skips.truncate(RECENT_FIRES);
                }
                Missed::Failed => entry.last_failure = Some(missed),
            }
        }
        let schedule = name.to_owned();
        let event = match how {
            Missed::Skipped => Event::ScheduleSkipped {
                schedule,
                slot_ms,
                reason,
            },
            Missed::Failed => Event::ScheduleFireFailed {
                schedule,
                slot_ms,
                reason,
            },
        };
        if let Err(err) = self.record_durably(event).await {
            tracing::warn!(schedule = %name, slot_ms, %err, "the missed slot was not recorded");
        }
    }

    /// Fires `slot` of `name` as its overlap policy says, given its previous fire.
    async fn fire_with_overlap(&self, name: &str, slot: u64) -> Result<(), Error> {
        let (overlap, previous) = {
            let book = self.schedules.lock().await;
            let Some(entry) = book.entries.get(name) else {
                return Ok(());
            };
            (
                entry.schedule.spec().overlap,
                entry.fires.front().map(|f| f.objective),
            )
        };
        if let Some(previous) = previous
            && self.still_running(previous).await
        {
            match overlap {
                OverlapPolicy::Skip => {
                    let reason = format!("the previous fire's objective {previous} still runs");
                    self.missed(name, slot, Missed::Skipped, reason).await;
                    return Ok(());
                }
                OverlapPolicy::QueueOne => {
                    let replaced = self
                        .schedules
                        .lock()
                        .await
                        .entries
                        .get_mut(name)
                        .and_then(|entry| entry.queued.replace(slot));
                    if let Some(replaced) = replaced {
                        let reason = format!(
                            "queued behind objective {previous}, and the slot at {slot} took \
                             its place"
                        );
                        self.missed(name, replaced, Missed::Skipped, reason).await;
                    }
                    return Ok(());
                }
                OverlapPolicy::CancelPrevious => {
                    // Already ended meanwhile is as good as cancelled.
                    let _ = self.cancel(previous).await;
                }
            }
        }
        self.fire_schedule(name, slot).await.map(|_| ())
    }

    /// True while `objective` has not ended (an objective that cannot be read counts as
    /// ended, so a schedule is never blocked for good).
    async fn still_running(&self, objective: ObjectiveId) -> bool {
        self.objective(objective)
            .await
            .is_ok_and(|view| !view.status.is_terminal())
    }

    /// Records `event` through the scheduler's journal, so the log keeps one order, and
    /// waits until it is durable.
    pub(crate) async fn record_durably(&self, event: Event) -> Result<(), Error> {
        self.scheduler
            .cast(SchedulerMsg::Record(event))
            .map_err(|e| self.explain(e.into()))?;
        call_t!(self.scheduler, SchedulerMsg::Flush, self.ms())
            .map_err(|e| self.explain(e.into()))
            .and_then(|flushed| flushed.map_err(Error::from))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use chrono::NaiveDate;
    use swarm_protocol::Objective;
    use swarm_protocol::schedule::OverlapPolicy;

    use super::*;

    fn spec(cron: &str, time_zone: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            cron: cron.into(),
            time_zone: time_zone.into(),
            template: Objective::with_tasks("g", Vec::new()),
            overlap: OverlapPolicy::Skip,
            catch_up: CatchUpPolicy::Skip,
            paused: false,
        }
    }

    /// Milliseconds since the epoch of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
        let t = NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .unwrap();
        u64::try_from(t.and_utc().timestamp_millis()).unwrap()
    }

    fn err(spec: ScheduleSpec) -> ScheduleError {
        Schedule::new(spec).err().unwrap()
    }

    #[test]
    fn every_five_seconds_with_the_optional_seconds_field() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let slots = next_slots(&spec("*/5 * * * * *", "UTC"), t0, 4).unwrap();
        assert_eq!(
            slots,
            vec![t0 + 5_000, t0 + 10_000, t0 + 15_000, t0 + 20_000]
        );
    }

    #[test]
    fn slots_are_strictly_after_and_whole_seconds() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let s = Schedule::new(spec("*/5 * * * * *", "UTC")).unwrap();
        // From inside a second: the next slot is not skipped.
        assert_eq!(s.next_slots(t0 + 4_999, 1), vec![t0 + 5_000]);
        // From a slot: that slot is not repeated.
        assert_eq!(s.next_slots(t0 + 5_000, 1), vec![t0 + 10_000]);
        assert_eq!(s.next_slots(t0 + 5_001, 1), vec![t0 + 10_000]);
        assert!(s.next_slots(t0, 0).is_empty());
    }

    #[test]
    fn five_fields_mean_minutes() {
        let t0 = utc(2026, 3, 2, 10, 7, 30);
        let slots = next_slots(&spec("0 * * * *", "UTC"), t0, 2).unwrap();
        assert_eq!(
            slots,
            vec![utc(2026, 3, 2, 11, 0, 0), utc(2026, 3, 2, 12, 0, 0)]
        );
    }

    #[test]
    fn the_time_zone_places_the_slots() {
        // 02:30 in Berlin is 01:30 UTC in winter (CET, UTC+1).
        let t0 = utc(2026, 1, 10, 0, 0, 0);
        let slots = next_slots(&spec("0 30 2 * * *", "Europe/Berlin"), t0, 2).unwrap();
        assert_eq!(
            slots,
            vec![utc(2026, 1, 10, 1, 30, 0), utc(2026, 1, 11, 1, 30, 0)]
        );
    }

    #[test]
    fn a_fixed_time_in_the_spring_forward_gap_runs_right_after_it() {
        // Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not
        // exist that day; croner runs the job at the first valid time after the gap, 03:00
        // CEST = 01:00 UTC. The days around it keep their 02:30.
        let t0 = utc(2026, 3, 27, 12, 0, 0);
        let slots = next_slots(&spec("0 30 2 * * *", "Europe/Berlin"), t0, 3).unwrap();
        assert_eq!(
            slots,
            vec![
                utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
                utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, right after the gap
                utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_fall_back_overlap_runs_once() {
        // Berlin, 25 October 2026: 03:00 CEST falls back to 02:00 CET (01:00 UTC), so 02:30
        // happens twice (00:30 and 01:30 UTC). A fixed-time job runs at the first only.
        let t0 = utc(2026, 10, 24, 12, 0, 0);
        let slots = next_slots(&spec("0 30 2 * * *", "Europe/Berlin"), t0, 2).unwrap();
        assert_eq!(
            slots,
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
        );
    }

    #[test]
    fn an_interval_job_skips_the_gap_and_runs_in_both_copies_of_the_overlap() {
        // Every 30 minutes, Berlin, across the spring-forward gap: 01:30 CET (00:30 UTC),
        // then 03:00 CEST (01:00 UTC): 02:00 and 02:30 do not exist.
        let spring = Schedule::new(spec("0 */30 * * * *", "Europe/Berlin")).unwrap();
        let t0 = utc(2026, 3, 29, 0, 15, 0);
        assert_eq!(
            spring.next_slots(t0, 3),
            vec![
                utc(2026, 3, 29, 0, 30, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 1, 30, 0),
            ]
        );
        // Across the fall-back overlap the slots stay 30 minutes apart in real time, through
        // both copies of 02:00–03:00.
        let t0 = utc(2026, 10, 24, 23, 45, 0);
        let slots = spring.next_slots(t0, 5);
        assert_eq!(
            slots,
            vec![
                utc(2026, 10, 25, 0, 0, 0),  // 02:00 CEST
                utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST
                utc(2026, 10, 25, 1, 0, 0),  // 02:00 CET
                utc(2026, 10, 25, 1, 30, 0), // 02:30 CET
                utc(2026, 10, 25, 2, 0, 0),  // 03:00 CET
            ]
        );
    }

    #[test]
    fn a_search_from_inside_the_overlap_finds_the_slots_of_both_copies() {
        let s = Schedule::new(spec("0 */30 * * * *", "Europe/Berlin")).unwrap();
        // 00:10 UTC is 02:10 CEST, in the first copy of 02:00–03:00.
        assert_eq!(
            s.next_slots(utc(2026, 10, 25, 0, 10, 0), 4),
            vec![
                utc(2026, 10, 25, 0, 30, 0),
                utc(2026, 10, 25, 1, 0, 0),
                utc(2026, 10, 25, 1, 30, 0),
                utc(2026, 10, 25, 2, 0, 0),
            ]
        );
        // 01:10 UTC is 02:10 CET, in the second copy.
        assert_eq!(
            s.next_slots(utc(2026, 10, 25, 1, 10, 0), 2),
            vec![utc(2026, 10, 25, 1, 30, 0), utc(2026, 10, 25, 2, 0, 0)]
        );
        // The latest slot at or before 01:15 UTC is 02:00 CET (01:00 UTC).
        assert_eq!(
            s.latest_slot_between(utc(2026, 10, 24, 0, 0, 0), utc(2026, 10, 25, 1, 15, 0)),
            Some(utc(2026, 10, 25, 1, 0, 0))
        );
    }

    fn stored(catch_up: CatchUpPolicy, last_slot: u64, paused: bool) -> StoredSchedule {
        let mut spec = spec("*/5 * * * * *", "UTC");
        spec.catch_up = catch_up;
        spec.paused = paused;
        StoredSchedule {
            spec,
            created_at_ms: last_slot - 60_000,
            changed_at_ms: last_slot - 60_000,
            last_fire: Some((last_slot, ObjectiveId::new())),
        }
    }

    #[test]
    fn after_an_hour_down_skip_fires_nothing_and_run_latest_fires_the_latest_once() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let hour = 3_600_000;
        // Restarted 2 s after the slot at t0 + 1 h.
        let now = t0 + hour + 2_000;
        let mut book = ScheduleBook::restore(vec![stored(CatchUpPolicy::Skip, t0, false)]);
        let (due, wake) = book.due(now);
        assert!(due.is_empty());
        assert_eq!(wake, Some(t0 + hour + 5_000));
        // From then on it fires as usual.
        let (due, _) = book.due(t0 + hour + 5_000);
        assert_eq!(due, [("s".to_owned(), t0 + hour + 5_000)]);

        let run_latest = |window| CatchUpPolicy::RunLatest {
            window: Duration::from_millis(window),
        };
        let mut book = ScheduleBook::restore(vec![stored(run_latest(60_000), t0, false)]);
        let (due, _) = book.due(now);
        assert_eq!(due, [("s".to_owned(), t0 + hour)]);
        assert!(book.due(now).0.is_empty(), "caught up once");
        // The latest missed slot is older than the window: nothing.
        let mut book = ScheduleBook::restore(vec![stored(run_latest(1_000), t0, false)]);
        assert!(book.due(now).0.is_empty());
        // A paused schedule catches nothing up, and has no wake time.
        let mut book = ScheduleBook::restore(vec![stored(run_latest(60_000), t0, true)]);
        assert_eq!(book.due(now), (Vec::new(), None));
        // The slots before the last resume are never caught up.
        let mut resumed = stored(run_latest(2 * hour), t0, false);
        resumed.changed_at_ms = now - 1_000;
        let mut book = ScheduleBook::restore(vec![resumed]);
        assert!(book.due(now).0.is_empty());
    }

    #[test]
    fn a_fire_cut_off_before_its_record_counts_as_fired_at_a_restart() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let hour = 3_600_000;
        let now = t0 + hour + 2_000;
        let run_latest = CatchUpPolicy::RunLatest {
            window: Duration::from_millis(2 * hour),
        };
        // The index's latest fire is t0; the slot at t0 + 1 h submitted its objective but the
        // coordinator stopped before its `ScheduleFired`. Keys of other schedules, older
        // slots and malformed keys are left alone.
        let cut_off = ObjectiveId::new();
        let keyed = vec![
            (format!("schedule:s:{}", t0 + hour), cut_off),
            (format!("schedule:s:{}", t0 - hour), ObjectiveId::new()),
            (
                format!("schedule:other:{}", t0 + 2 * hour),
                ObjectiveId::new(),
            ),
            ("schedule:s:soon".to_owned(), ObjectiveId::new()),
            ("client-key".to_owned(), ObjectiveId::new()),
        ];
        let (mut book, unrecorded) =
            ScheduleBook::restore_with(vec![stored(run_latest, t0, false)], &keyed);
        assert_eq!(unrecorded, [("s".to_owned(), t0 + hour, cut_off)]);
        assert!(
            book.due(now).0.is_empty(),
            "the slot is not caught up again"
        );
        let view = book.entries["s"].view(now);
        assert_eq!(view.recent_fires[0].slot_ms, t0 + hour);
        assert_eq!(view.recent_fires[0].objective, cut_off);
        // With the fire recorded, nothing is left to reconcile.
        let mut recorded = stored(run_latest, t0 + hour, false);
        recorded.last_fire = Some((t0 + hour, cut_off));
        let (_, unrecorded) = ScheduleBook::restore_with(vec![recorded], &keyed);
        assert!(unrecorded.is_empty());
    }

    #[test]
    fn a_bad_cron_expression_names_the_field_with_croners_message() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "*/x * * * *"] {
            let e = err(spec(bad, "UTC"));
            assert_eq!(e.field, "cron", "{bad}: {e}");
            assert_eq!(e.message, parse_cron(bad).err().unwrap(), "{bad}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn an_expression_that_never_matches_is_refused() {
        let e = err(spec("0 0 30 2 *", "UTC"));
        assert_eq!(e.field, "cron", "{e}");
        assert!(e.message.contains("never matches"), "{e}");
    }

    #[test]
    fn an_unknown_time_zone_names_the_field() {
        let e = err(spec("* * * * *", "Mars/Olympus_Mons"));
        assert_eq!(e.field, "time_zone");
        assert!(e.message.contains("Mars/Olympus_Mons"), "{e}");
        assert!(Schedule::new(spec("* * * * *", "America/New_York")).is_ok());
    }

    #[test]
    fn a_bad_name_or_window_names_the_field() {
        let mut bad = spec("* * * * *", "UTC");
        bad.name = "a:b".into();
        assert_eq!(err(bad).field, "name");
        let mut bad = spec("* * * * *", "UTC");
        bad.catch_up = CatchUpPolicy::RunLatest {
            window: Duration::ZERO,
        };
        assert_eq!(err(bad).field, "catch_up.window");
    }

    #[test]
    fn the_latest_missed_slot() {
        let s = Schedule::new(spec("*/5 * * * * *", "UTC")).unwrap();
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        // Down from t0 to t0 + 1 h: the latest slot is t0 + 1 h itself.
        assert_eq!(
            s.latest_slot_between(t0, t0 + 3_600_000),
            Some(t0 + 3_600_000)
        );
        assert_eq!(
            s.latest_slot_between(t0, t0 + 3_602_000),
            Some(t0 + 3_600_000)
        );
        // No slot in (t0, t0 + 4 s].
        assert_eq!(s.latest_slot_between(t0, t0 + 4_000), None);
        // The bound is exclusive at the start.
        assert_eq!(s.latest_slot_between(t0 + 5_000, t0 + 9_999), None);
    }
}
