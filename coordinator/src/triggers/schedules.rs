//! The book of cron schedules: what each has fired, skipped and failed, where its clock
//! cursor stands, and which of its slots are due at a given time.
//!
//! Pure data, owned by the trigger actor (`triggers::actor`), which records each change in
//! the log before it applies it here. Nothing in here reads a clock or waits: times come in as
//! arguments, so the catch-up and overlap decisions are tested without a runtime.
//!
//! **At most one fire per slot.** Each schedule has a cursor: slots at or before it are done
//! (fired, skipped, or before the schedule's creation or last resume). `Schedules::due`
//! yields a slot only after the cursor and moves the cursor to the time it was asked at, so
//! no slot is yielded twice; the actor starts at most one fire per schedule at a time (and
//! asks for nothing of a schedule while one is under way), and a fire is submitted under the
//! slot's idempotency key, so even a repeated fire submits nothing new.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use swarm_protocol::schedule::{CatchUpPolicy, OverlapPolicy};
use swarm_protocol::{Objective, ObjectiveId, ScheduleSpec};
use swarm_store::StoredSchedule;

use crate::triggers::cron::Schedule;

/// How many fires (and skips) of each schedule [`ScheduleView`] keeps.
pub const RECENT_FIRES: usize = 10;

/// How many next fire times [`ScheduleView::next_fires_ms`] shows.
pub const NEXT_FIRES: usize = 5;

/// How often a `queue_one` slot that waits for the previous fire is looked at, in ms.
pub(crate) const QUEUE_POLL_MS: u64 = 1_000;

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

/// What became of a slot, as a fire reports it back to be applied to the book (each recorded
/// in the log first, as its event says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotOutcome {
    /// Its objective was submitted (`ScheduleFired`; `recorded_now` is false when the slot's
    /// fire was in the book already, so nothing new was recorded).
    Fired {
        /// The slot.
        slot_ms: u64,
        /// The objective.
        objective: ObjectiveId,
        /// Whether this fire recorded its `ScheduleFired` (rather than finding it done).
        recorded_now: bool,
    },
    /// The overlap policy left it out (`ScheduleSkipped`).
    Skipped {
        /// The slot.
        slot_ms: u64,
        /// Why.
        reason: String,
    },
    /// Its objective could not be submitted (`ScheduleFireFailed`); it is not tried again.
    Failed {
        /// The slot.
        slot_ms: u64,
        /// What went wrong.
        reason: String,
    },
    /// It waits for the previous fire's objective to end (`queue_one`), in place of any slot
    /// that waited before (which is reported `Skipped` just before).
    Queued {
        /// The slot.
        slot_ms: u64,
    },
    /// The slot that waited is taken up (and reported as fired or failed next).
    Dequeued,
}

/// What to do for one schedule at a turn of the firing loop.
#[derive(Debug, Clone)]
pub(crate) struct DueWork {
    /// The schedule.
    pub(crate) name: String,
    /// Its slot that is due now (after the catch-up policy), if any.
    pub(crate) due_ms: Option<u64>,
    /// Its slot that waits for the previous fire to end (`queue_one`), if any.
    pub(crate) queued_ms: Option<u64>,
    /// Its overlap policy.
    pub(crate) overlap: OverlapPolicy,
    /// The objective of its latest fire, if any.
    pub(crate) previous: Option<ObjectiveId>,
    /// The objective each fire submits.
    pub(crate) template: Objective,
    /// Its recent fires (to tell whether a repeated fire was recorded already).
    pub(crate) fires: Vec<ScheduleFire>,
}

/// What one turn of the firing loop found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Due {
    /// The schedules with something to do, by name.
    pub(crate) work: Vec<DueWork>,
    /// When to look again (ms since the Unix epoch), if any schedule has a next slot.
    pub(crate) wake_ms: Option<u64>,
    /// True when a schedule was left out because it was busy.
    pub(crate) left_out: bool,
}

/// The schedules, by name.
#[derive(Debug, Default)]
pub(crate) struct Schedules {
    entries: BTreeMap<String, Entry>,
}

/// A fire that a crash cut off between its objective's `ObjectiveSubmitted` and its
/// `ScheduleFired`: the schedule, the slot and the objective.
pub(crate) type UnrecordedFire = (String, u64, ObjectiveId);

impl Schedules {
    /// [`Self::restore_with`] without keyed objectives.
    #[cfg(test)]
    fn restore(stored: Vec<StoredSchedule>) -> Self {
        Self::restore_with(stored, &[]).0
    }

    /// The schedules the store's index holds. One whose spec no longer checks (a croner or
    /// time zone database change) is left out with a warning; it stays in the index until it
    /// is deleted.
    ///
    /// Reconciled with the objectives submitted under schedule keys
    /// (`schedule:<name>:<slot_ms>`, from the objective index): a fire that the coordinator
    /// stopped between its `ObjectiveSubmitted` and its `ScheduleFired` counts as that slot's
    /// fire (it is not caught up again), and is returned so that its `ScheduleFired` can be
    /// recorded now.
    pub(crate) fn restore_with(
        stored: Vec<StoredSchedule>,
        keyed: &[(String, ObjectiveId)],
    ) -> (Self, Vec<UnrecordedFire>) {
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
                    let mut entry = Entry::new(
                        schedule,
                        stored.created_at_ms,
                        last_slot.max(stored.changed_at_ms),
                    );
                    entry.fires = fires;
                    entry.catching_up = true;
                    entries.insert(name, entry);
                }
                Err(err) => tracing::warn!(schedule = %name, %err, "schedule left out"),
            }
        }
        (Self { entries }, unrecorded)
    }

    /// True when a schedule has that name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The schedule named `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&Schedule> {
        self.entries.get(name).map(|entry| &entry.schedule)
    }

    /// Its recent fires, newest first (none for an unknown name).
    pub(crate) fn fires(&self, name: &str) -> Vec<ScheduleFire> {
        self.entries
            .get(name)
            .map(|entry| entry.fires.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Adds a schedule created at `created_at_ms` whose slots count from `now_ms`, and returns
    /// its view at `now_ms`.
    pub(crate) fn insert(
        &mut self,
        schedule: Schedule,
        created_at_ms: u64,
        now_ms: u64,
    ) -> ScheduleView {
        let name = schedule.spec().name.clone();
        let entry = Entry::new(schedule, created_at_ms, now_ms);
        let view = entry.view(now_ms);
        self.entries.insert(name, entry);
        view
    }

    /// Pauses or resumes `name` at `now_ms`: a resumed schedule fires nothing of its pause,
    /// not even a slot that waited. Returns its view, or `None` for an unknown name.
    pub(crate) fn set_paused(
        &mut self,
        name: &str,
        paused: bool,
        now_ms: u64,
    ) -> Option<ScheduleView> {
        let entry = self.entries.get_mut(name)?;
        if entry.schedule.spec().paused && !paused {
            // The slots of the pause are never fired nor caught up.
            entry.cursor_ms = entry.cursor_ms.max(now_ms);
            entry.queued = None;
        }
        entry.schedule.set_paused(paused);
        Some(entry.view(now_ms))
    }

    /// Removes `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// Every schedule's view at `now_ms`, by name.
    pub(crate) fn views(&self, now_ms: u64) -> Vec<ScheduleView> {
        self.entries.values().map(|e| e.view(now_ms)).collect()
    }

    /// Applies what became of a slot of `name` (an unknown name is left alone).
    pub(crate) fn apply(&mut self, name: &str, outcome: SlotOutcome) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        match outcome {
            SlotOutcome::Fired {
                slot_ms,
                objective,
                recorded_now,
            } => {
                entry.cursor_ms = entry.cursor_ms.max(slot_ms);
                entry.last_failure = None;
                if recorded_now {
                    let at = entry
                        .fires
                        .iter()
                        .position(|f| f.slot_ms < slot_ms)
                        .unwrap_or(entry.fires.len());
                    entry.fires.insert(at, ScheduleFire { slot_ms, objective });
                    entry.fires.truncate(RECENT_FIRES);
                }
            }
            SlotOutcome::Skipped { slot_ms, reason } => {
                entry.skips.push_front(MissedSlot { slot_ms, reason });
                entry.skips.truncate(RECENT_FIRES);
            }
            SlotOutcome::Failed { slot_ms, reason } => {
                entry.last_failure = Some(MissedSlot { slot_ms, reason });
            }
            SlotOutcome::Queued { slot_ms } => entry.queued = Some(slot_ms),
            SlotOutcome::Dequeued => entry.queued = None,
        }
    }

    /// What the firing loop does at `now_ms`: per schedule, the slot to fire (after applying
    /// catch-up, so each schedule has at most one) and the slot that waits, and when to look
    /// again. A schedule for which `busy` is true (a change or a fire of it is under way) is
    /// left out, as if this turn had not looked at it.
    pub(crate) fn due(&mut self, now_ms: u64, busy: impl Fn(&str) -> bool) -> Due {
        let mut due = Due::default();
        for (name, entry) in &mut self.entries {
            if busy(name) {
                due.left_out = true;
                continue;
            }
            // A slot that waits for the previous fire is looked at even while paused; only a
            // resume drops it.
            let queued_ms = entry.queued;
            let mut due_ms = None;
            if !entry.schedule.spec().paused {
                due_ms = entry.take_due(now_ms);
                if entry.queued.is_some() {
                    let poll = now_ms.saturating_add(QUEUE_POLL_MS);
                    due.wake_ms = Some(due.wake_ms.map_or(poll, |w| w.min(poll)));
                }
                if let Some(next) = entry.schedule.next_slots(entry.cursor_ms, 1).first() {
                    due.wake_ms = Some(due.wake_ms.map_or(*next, |w| w.min(*next)));
                }
            }
            if due_ms.is_some() || queued_ms.is_some() {
                due.work.push(DueWork {
                    name: name.clone(),
                    due_ms,
                    queued_ms,
                    overlap: entry.schedule.spec().overlap,
                    previous: entry.fires.front().map(|f| f.objective),
                    template: entry.schedule.spec().template.clone(),
                    fires: entry.fires.iter().copied().collect(),
                });
            }
        }
        due
    }
}

/// One schedule of the book.
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
    fn new(schedule: Schedule, created_at_ms: u64, cursor_ms: u64) -> Self {
        Self {
            schedule,
            created_at_ms,
            fires: VecDeque::new(),
            cursor_ms,
            catching_up: false,
            queued: None,
            skips: VecDeque::new(),
            last_failure: None,
        }
    }

    /// The slot due at `now_ms`, if any, after the catch-up policy; moves the cursor to
    /// `now_ms`, so the slots before it are never due again.
    fn take_due(&mut self, now_ms: u64) -> Option<u64> {
        let mut due = None;
        if let Some(latest) = self.schedule.latest_slot_between(self.cursor_ms, now_ms) {
            let fire = if self.catching_up {
                // Slots that passed while the coordinator was down.
                match self.schedule.spec().catch_up {
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
                due = Some(latest);
            }
        }
        self.catching_up = false;
        self.cursor_ms = self.cursor_ms.max(now_ms);
        due
    }

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use chrono::NaiveDate;

    use super::*;

    fn spec(cron: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            cron: cron.into(),
            time_zone: "UTC".into(),
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

    /// The slots due at `now_ms` (by schedule) and the wake time, as the loop would see them
    /// with nothing busy.
    fn due(book: &mut Schedules, now_ms: u64) -> (Vec<(String, u64)>, Option<u64>) {
        let due = book.due(now_ms, |_| false);
        let slots = due
            .work
            .into_iter()
            .filter_map(|w| Some((w.name, w.due_ms?)))
            .collect();
        (slots, due.wake_ms)
    }

    fn stored(catch_up: CatchUpPolicy, last_slot: u64, paused: bool) -> StoredSchedule {
        let mut spec = spec("*/5 * * * * *");
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
        let mut book = Schedules::restore(vec![stored(CatchUpPolicy::Skip, t0, false)]);
        let (slots, wake) = due(&mut book, now);
        assert!(slots.is_empty());
        assert_eq!(wake, Some(t0 + hour + 5_000));
        // From then on it fires as usual.
        let (slots, _) = due(&mut book, t0 + hour + 5_000);
        assert_eq!(slots, [("s".to_owned(), t0 + hour + 5_000)]);

        let run_latest = |window| CatchUpPolicy::RunLatest {
            window: Duration::from_millis(window),
        };
        let mut book = Schedules::restore(vec![stored(run_latest(60_000), t0, false)]);
        let (slots, _) = due(&mut book, now);
        assert_eq!(slots, [("s".to_owned(), t0 + hour)]);
        assert!(due(&mut book, now).0.is_empty(), "caught up once");
        // The latest missed slot is older than the window: nothing.
        let mut book = Schedules::restore(vec![stored(run_latest(1_000), t0, false)]);
        assert!(due(&mut book, now).0.is_empty());
        // A paused schedule catches nothing up, and has no wake time.
        let mut book = Schedules::restore(vec![stored(run_latest(60_000), t0, true)]);
        assert_eq!(due(&mut book, now), (Vec::new(), None));
        // The slots before the last resume are never caught up.
        let mut resumed = stored(run_latest(2 * hour), t0, false);
        resumed.changed_at_ms = now - 1_000;
        let mut book = Schedules::restore(vec![resumed]);
        assert!(due(&mut book, now).0.is_empty());
    }

    #[test]
    fn a_busy_schedule_is_left_out_and_keeps_its_slot_for_the_next_turn() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut book = Schedules::default();
        book.insert(Schedule::new(spec("*/5 * * * * *")).unwrap(), t0, t0);
        let busy = book.due(t0 + 5_000, |name| name == "s");
        assert!(busy.work.is_empty() && busy.left_out);
        assert_eq!(busy.wake_ms, None);
        // Not busy any more, later: the slot it missed fires then (the latest one, once).
        let (slots, wake) = due(&mut book, t0 + 7_000);
        assert_eq!(slots, [("s".to_owned(), t0 + 5_000)]);
        assert_eq!(wake, Some(t0 + 10_000));
        assert!(due(&mut book, t0 + 7_000).0.is_empty());
    }

    #[test]
    fn fires_skips_and_failures_are_kept_newest_first() {
        let t0 = utc(2026, 1, 1, 0, 0, 0);
        let mut book = Schedules::default();
        book.insert(Schedule::new(spec("*/5 * * * * *")).unwrap(), t0, t0);
        let first = ObjectiveId::new();
        let fired = |slot_ms, objective| SlotOutcome::Fired {
            slot_ms,
            objective,
            recorded_now: true,
        };
        book.apply("s", fired(t0 + 5_000, first));
        book.apply(
            "s",
            SlotOutcome::Failed {
                slot_ms: t0 + 10_000,
                reason: "no agent".into(),
            },
        );
        book.apply(
            "s",
            SlotOutcome::Skipped {
                slot_ms: t0 + 15_000,
                reason: "still runs".into(),
            },
        );
        let view = &book.views(t0 + 16_000)[0];
        assert_eq!(view.recent_fires[0].objective, first);
        assert_eq!(view.last_failure.as_ref().unwrap().slot_ms, t0 + 10_000);
        assert_eq!(view.recent_skips[0].slot_ms, t0 + 15_000);
        assert_eq!(view.next_fires_ms[0], t0 + 20_000);
        // A fire found in the book already adds nothing; any fire clears the failure.
        book.apply(
            "s",
            SlotOutcome::Fired {
                slot_ms: t0 + 5_000,
                objective: first,
                recorded_now: false,
            },
        );
        let second = ObjectiveId::new();
        book.apply("s", fired(t0 + 20_000, second));
        let view = &book.views(t0 + 21_000)[0];
        let slots: Vec<u64> = view.recent_fires.iter().map(|f| f.slot_ms).collect();
        assert_eq!(slots, [t0 + 20_000, t0 + 5_000]);
        assert_eq!(view.last_failure, None);
        // Paused: no next fires; resumed: nothing of the pause is due.
        assert!(
            book.set_paused("s", true, t0 + 21_000)
                .unwrap()
                .next_fires_ms
                .is_empty()
        );
        book.set_paused("s", false, t0 + 41_000).unwrap();
        assert!(due(&mut book, t0 + 41_000).0.is_empty());
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
            Schedules::restore_with(vec![stored(run_latest, t0, false)], &keyed);
        assert_eq!(unrecorded, [("s".to_owned(), t0 + hour, cut_off)]);
        assert!(
            due(&mut book, now).0.is_empty(),
            "the slot is not caught up again"
        );
        let view = book.entries["s"].view(now);
        assert_eq!(view.recent_fires[0].slot_ms, t0 + hour);
        assert_eq!(view.recent_fires[0].objective, cut_off);
        // With the fire recorded, nothing is left to reconcile.
        let mut recorded = stored(run_latest, t0 + hour, false);
        recorded.last_fire = Some((t0 + hour, cut_off));
        let (_, unrecorded) = Schedules::restore_with(vec![recorded], &keyed);
        assert!(unrecorded.is_empty());
    }
}
