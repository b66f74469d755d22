//! Schedules: objectives submitted on a cron calendar.
//!
//! A [`ScheduleSpec`] is what `POST /v1/schedules` takes. Its cron expression and time zone are
//! plain strings here (this crate parses nothing it would need a calendar for); the coordinator
//! parses and checks them (`swarm_coordinator::schedule`) before it records `ScheduleCreated`.
//!
//! In JSON:
//! ```json
//! { "name": "nightly-report",
//!   "cron": "0 30 2 * * *",
//!   "time_zone": "Europe/Berlin",
//!   "template": { "goal": "write the nightly report" },
//!   "overlap": "skip",
//!   "catch_up": { "policy": "run_latest", "window": "1h" } }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::objective::Objective;

/// The time zone a schedule uses when it names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// The longest schedule name accepted.
pub const MAX_SCHEDULE_NAME_LEN: usize = 64;

/// A named cron schedule that submits `template` at each of its slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique among schedules: 1 to 64 characters out of `A-Z a-z 0-9 _ - .`. It is part of
    /// each fire's idempotency key (`schedule:<name>:<slot_ms>`).
    pub name: String,
    /// A cron expression as croner reads it: five fields (minute, hour, day of month, month,
    /// day of week) or six with seconds first, e.g. `*/5 * * * * *`.
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`) in which the expression is read; `UTC` when
    /// absent. Daylight-saving changes are handled as croner defines: a fixed time in a
    /// spring-forward gap runs right after the gap, once in a fall-back overlap; wildcard and
    /// step fields skip the gap and run in both copies of the overlap.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The objective each fire submits.
    pub template: Objective,
    /// What a fire does while the previous fire's objective still runs.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What happens to slots missed while the coordinator was down.
    #[serde(default)]
    pub catch_up: CatchUpPolicy,
    /// A paused schedule keeps its definition but does not fire.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.into()
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// What a schedule does at a slot while the objective of its previous fire is still running
/// (as Temporal's schedules offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// The slot is skipped.
    #[default]
    Skip,
    /// The slot waits, and fires when the running objective ends; at most one slot waits (a
    /// later one replaces it).
    QueueOne,
    /// The running objective is cancelled and the slot fires.
    CancelPrevious,
}

/// What a schedule does about slots that passed while the coordinator was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatchUpPolicy {
    /// Missed slots are not fired.
    #[default]
    Skip,
    /// The latest missed slot fires once, if it is at most `window` old at the restart.
    RunLatest {
        /// How old a missed slot may be and still fire (`"1h"`).
        #[serde(with = "humantime_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1h"))]
        window: Duration,
    },
}

/// Checks a schedule name: 1 to 64 characters out of `A-Z a-z 0-9 _ - .`.
pub fn check_schedule_name(name: &str) -> Result<(), String> {
    check_name(name, MAX_SCHEDULE_NAME_LEN)
}

/// Checks the name of a schedule or a webhook: 1 to `max` characters out of
/// `A-Z a-z 0-9 _ - .` (a path segment, and a part of an idempotency key).
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > max {
        return Err(format!("is {} bytes long; the limit is {max}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "contains {c:?}; only A-Z, a-z, 0-9, `_`, `-` and `.` are allowed"
        ));
    }
    Ok(())
}

/// The idempotency key of a schedule's fire at `slot_ms` (ms since the Unix epoch): the same
/// slot submits at most one objective, also when the coordinator was killed while firing.
pub fn fire_idempotency_key(schedule: &str, slot_ms: u64) -> String {
    format!("schedule:{schedule}:{slot_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: ScheduleSpec = serde_json::from_value(json!({
            "name": "n", "cron": "* * * * *", "template": {"goal": "g"}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.time_zone, "UTC");
        assert_eq!(spec.overlap, OverlapPolicy::Skip);
        assert_eq!(spec.catch_up, CatchUpPolicy::Skip);
        assert!(!spec.paused);
    }

    #[test]
    fn policies_have_their_json_forms() {
        let spec: ScheduleSpec = serde_json::from_value(json!({
            "name": "n", "cron": "* * * * *", "template": {"goal": "g"},
            "overlap": "cancel_previous",
            "catch_up": {"policy": "run_latest", "window": "1h"},
            "paused": true
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.overlap, OverlapPolicy::CancelPrevious);
        assert_eq!(
            spec.catch_up,
            CatchUpPolicy::RunLatest {
                window: Duration::from_secs(3600)
            }
        );
        let back: ScheduleSpec =
            serde_json::from_value(serde_json::to_value(&spec).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<ScheduleSpec>(json!({
            "name": "n", "cron": "* * * * *", "template": {"goal": "g"}, "tz": "UTC"
        }))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("tz"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_schedule_name("nightly-report_1.v2").is_ok());
        assert!(check_schedule_name("").is_err());
        assert!(check_schedule_name("a:b").is_err());
        assert!(check_schedule_name("a b").is_err());
        assert!(check_schedule_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_fire_key_is_a_valid_idempotency_key() {
        let key = fire_idempotency_key(&"x".repeat(MAX_SCHEDULE_NAME_LEN), u64::MAX);
        assert_eq!(crate::objective::check_idempotency_key(&key), Ok(()));
        assert_eq!(fire_idempotency_key("n", 5_000), "schedule:n:5000");
    }
}
