//! Cron expressions as schedules read them: checking a [`ScheduleSpec`] and computing its
//! slots.
//!
//! [`Schedule::new`] parses the spec's cron expression with croner (five fields, or six with
//! a leading seconds field; no year field) and its IANA time zone with chrono-tz, and names
//! the field at fault when one is wrong. [`Schedule::next_slots`] is pure: it takes the time
//! to count from, so the trigger owner can drive it from an injected clock and tests need no
//! real time. Slots are milliseconds since the Unix epoch, whole seconds, as `ScheduleFired`
//! records them.
//!
//! Daylight-saving changes are handled as croner defines them: a fixed-time job (`0 30 2 * *
//! *`) whose time falls into a spring-forward gap runs at the first valid time after the gap,
//! and only once in a fall-back overlap; a job with a wildcard or step in its seconds, minutes
//! or hours skips the slots in the gap and runs in both copies of the overlap.

use std::fmt;

use chrono::{DateTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use swarm_protocol::ScheduleSpec;
use swarm_protocol::schedule::{CatchUpPolicy, check_schedule_name};

/// More than any daylight-saving shift (one hour almost everywhere; at most two in history).
const DST_MARGIN_MS: u64 = 3 * 3_600_000;

/// A part of a [`ScheduleSpec`] that is not valid, with the name of its field (as the HTTP
/// API's problem `field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field at fault: `name`, `cron`, `time_zone` or `catch_up.window`.
    pub field: &'static str,
    /// What is wrong with it (for `cron`, the field of the expression, the value and the
    /// allowed range).
    pub message: String,
}

impl SpecError {
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
/// field. The error names the field at fault, the value given and the values it allows
/// (`hour "25" is out of range: 0-23`), as [`explain_cron_error`] finds them.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    cron_parser()
        .parse(expression)
        .map_err(|e| explain_cron_error(expression, &e.to_string()))
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// One field of a cron expression: its name for people and the values it allows.
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    /// What else it allows besides numbers, `*`, ranges, lists and steps.
    also: &'static str,
}

const SECOND: CronField = CronField {
    name: "second",
    min: 0,
    max: 59,
    also: "",
};
/// The five fields every expression has, in order.
const FIELDS: [CronField; 5] = [
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        also: "",
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        also: "",
    },
    CronField {
        name: "day of month",
        min: 1,
        max: 31,
        also: " (or ?, L, W)",
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        also: " (or JAN-DEC)",
    },
    CronField {
        name: "day of week",
        min: 0,
        max: 7,
        also: " (0 and 7 are Sunday; or SUN-SAT, ?, L, #)",
    },
];

/// Says what is wrong with `expression`, which croner refused with `croner_message`: the
/// number of fields, or the first field croner refuses on its own (every other field `*`) with
/// the value given and the allowed range. Falls back to croner's message when no single field
/// is at fault.
fn explain_cron_error(expression: &str, croner_message: &str) -> String {
    let parts: Vec<&str> = expression.split_whitespace().collect();
    let fields: Vec<&CronField> = match parts.len() {
        5 => FIELDS.iter().collect(),
        6 => std::iter::once(&SECOND).chain(FIELDS.iter()).collect(),
        0 => {
            return "is empty: give five fields (minute hour day-of-month month day-of-week), \
                     or six with a leading second"
                .to_owned();
        }
        n if parts[0].starts_with('@') && n == 1 => {
            return format!(
                "`{expression}` is not a known nickname (@yearly, @annually, @monthly, @weekly, \
                 @daily, @hourly)"
            );
        }
        n => {
            return format!(
                "`{expression}` has {n} fields: give five (minute hour day-of-month month \
                 day-of-week), or six with a leading second"
            );
        }
    };
    let parser = cron_parser();
    for (i, (field, value)) in fields.iter().zip(&parts).enumerate() {
        let alone: Vec<&str> = (0..parts.len())
            .map(|j| if j == i { *value } else { "*" })
            .collect();
        let Err(refused) = parser.parse(&alone.join(" ")) else {
            continue;
        };
        let allowed = format!("{}-{}{}", field.min, field.max, field.also);
        if let Some(number) = out_of_range(value, field) {
            return format!("{} \"{number}\" is out of range: {allowed}", field.name);
        }
        if let Some(step) = zero_step(value) {
            return format!(
                "{} \"{value}\" has a step of {step}: a step is at least 1",
                field.name
            );
        }
        return format!(
            "{} \"{value}\" is not valid ({refused}); allowed: {allowed}",
            field.name
        );
    }
    croner_message.to_owned()
}

/// The first number in `value` outside the field's range (steps are not values).
fn out_of_range(value: &str, field: &CronField) -> Option<u64> {
    value.split(',').find_map(|item| {
        let range = item.split('/').next().unwrap_or(item);
        range
            .split('-')
            .map(|end| end.split('#').next().unwrap_or(end))
            .map(|end| end.trim_end_matches(['L', 'W']))
            .filter_map(|end| end.parse::<u64>().ok())
            .find(|n| *n < u64::from(field.min) || *n > u64::from(field.max))
    })
}

/// A step of zero (`*/0`), which croner refuses.
fn zero_step(value: &str) -> Option<&str> {
    value
        .split(',')
        .filter_map(|item| item.split_once('/').map(|(_, step)| step))
        .find(|step| step.parse::<u64>().is_ok_and(|n| n == 0))
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
    pub fn new(spec: ScheduleSpec) -> Result<Self, SpecError> {
        check_schedule_name(&spec.name).map_err(|e| SpecError::new("name", e))?;
        let cron = parse_cron(&spec.cron).map_err(|e| SpecError::new("cron", e))?;
        let zone = parse_time_zone(&spec.time_zone).map_err(|e| SpecError::new("time_zone", e))?;
        if let CatchUpPolicy::RunLatest { window } = spec.catch_up
            && window.is_zero()
        {
            return Err(SpecError::new(
                "catch_up.window",
                "must be longer than zero (use the `skip` policy to catch nothing up)",
            ));
        }
        let schedule = Self { spec, cron, zone };
        if schedule.next_slots(0, 1).is_empty() {
            return Err(SpecError::new(
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

    /// Pauses or resumes it (the spec's `paused`).
    pub fn set_paused(&mut self, paused: bool) {
        self.spec.paused = paused;
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
pub fn next_slots(spec: &ScheduleSpec, after_ms: u64, n: usize) -> Result<Vec<u64>, SpecError> {
    Ok(Schedule::new(spec.clone())?.next_slots(after_ms, n))
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

    fn err(spec: ScheduleSpec) -> SpecError {
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
    #[test]
    fn a_bad_cron_expression_names_the_field_the_value_and_the_range() {
        for (bad, said) in [
            ("0 25 * * *", "hour \"25\" is out of range: 0-23"),
            ("61 * * * *", "minute \"61\" is out of range: 0-59"),
            ("0 0 32 * *", "day of month \"32\" is out of range: 1-31"),
            ("0 0 1 0 *", "month \"0\" is out of range: 1-12"),
            ("0 0 1 1-13 *", "month \"13\" is out of range: 1-12"),
            ("0 0 * * 8", "day of week \"8\" is out of range: 0-7"),
            ("60 0 0 * * *", "second \"60\" is out of range: 0-59"),
            ("0 0,5,99 * * *", "hour \"99\" is out of range: 0-23"),
            ("*/0 * * * *", "minute \"*/0\" has a step of 0"),
            ("x * * * *", "minute \"x\" is not valid ("),
            ("* * *", "has 3 fields: give five"),
            ("* * * * * * *", "has 7 fields"),
            ("", "is empty"),
            ("@often", "not a known nickname"),
        ] {
            let e = err(spec(bad, "UTC"));
            assert_eq!(e.field, "cron", "{bad}: {e}");
            assert!(e.message.contains(said), "{bad:?} said {:?}", e.message);
            assert_eq!(e.message, parse_cron(bad).err().unwrap(), "{bad}");
        }
        let e = err(spec("0 25 * * *", "UTC"));
        assert_eq!(e.to_string(), "cron: hour \"25\" is out of range: 0-23");
        // The range ends themselves are accepted.
        for good in ["59 23 31 12 7", "0 0 1 1 0", "59 59 23 31 12 7", "@daily"] {
            assert!(parse_cron(good).is_ok(), "{good}");
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
