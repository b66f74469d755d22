//! The schedules created through the API, as their events leave them, so that a restart
//! restores them.
//!
//! An index and not a read of the log because pruning removes old events that belong to no
//! objective. Each row keeps the spec as created (its `paused` flag is a column of its own), the
//! time it was created or last resumed (no slot before it is fired or caught up: a pause keeps
//! that time, only a resume moves it), and its latest fire. Skipped and failed slots are in the
//! log only: the scheduler folds them from there, and no index needs them.

use swarm_protocol::{Event, EventRecord};

use super::Stamp;
use crate::log::{BatchError, to_sql_int};

/// A change to the schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScheduleChange {
    /// Insert the schedule, or replace every column of one of the same name (its latest fire
    /// too: a schedule created again starts afresh).
    Create {
        /// Its name (the key).
        name: String,
        /// The JSON of its spec, with `paused` false: the `paused` column is the truth.
        spec: String,
        /// Whether it was created paused.
        paused: bool,
        /// This event's seq.
        created_seq: i64,
        /// This event's time: when it was created and, until a resume, the time slots count
        /// from.
        created_at_ms: i64,
    },
    /// Mark it paused; the time slots count from stays.
    Pause {
        /// Its name.
        name: String,
    },
    /// Mark it running again, counting slots from this event's time.
    Resume {
        /// Its name.
        name: String,
        /// This event's time.
        at_ms: i64,
    },
    /// Delete it.
    Delete {
        /// Its name.
        name: String,
    },
    /// Record a fire as its latest, unless this slot or a later one is already recorded: the
    /// index keeps the latest slot fired, whatever order the fires are logged in.
    Fire {
        /// Its name.
        name: String,
        /// The slot fired.
        slot_ms: i64,
        /// The objective it submitted, as a hyphenated lowercase UUID.
        objective: String,
    },
}

/// Appends the change `record` makes, if any, to `changes`.
pub(super) fn observe(
    changes: &mut Vec<ScheduleChange>,
    record: &EventRecord,
    stamp: Stamp,
) -> Result<(), BatchError> {
    let change = match &record.event {
        Event::ScheduleCreated { spec } => {
            let mut stored = spec.as_ref().clone();
            stored.paused = false;
            ScheduleChange::Create {
                name: spec.name.clone(),
                spec: serde_json::to_string(&stored).map_err(|e| BatchError::Unencodable {
                    seq: record.seq,
                    cause: e.to_string(),
                })?,
                paused: spec.paused,
                created_seq: stamp.seq,
                created_at_ms: stamp.at_ms,
            }
        }
        Event::SchedulePaused { schedule } => ScheduleChange::Pause {
            name: schedule.clone(),
        },
        Event::ScheduleResumed { schedule } => ScheduleChange::Resume {
            name: schedule.clone(),
            at_ms: stamp.at_ms,
        },
        Event::ScheduleDeleted { schedule } => ScheduleChange::Delete {
            name: schedule.clone(),
        },
        Event::ScheduleFired {
            schedule,
            slot_ms,
            objective,
        } => ScheduleChange::Fire {
            name: schedule.clone(),
            slot_ms: to_sql_int("slot time", *slot_ms)?,
            objective: objective.to_string(),
        },
        _ => return Ok(()),
    };
    changes.push(change);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use swarm_protocol::{ObjectiveId, ScheduleSpec};

    use super::*;
    use crate::conformance::fixtures::{record, schedule_spec};

    fn fold(events: Vec<Event>) -> Vec<ScheduleChange> {
        let mut changes = Vec::new();
        for (seq, event) in (10..).zip(events) {
            let stamp = Stamp {
                seq: seq as i64,
                at_ms: seq as i64 * 100,
            };
            observe(&mut changes, &record(seq, 0, event), stamp).unwrap();
        }
        changes
    }

    #[test]
    fn a_paused_creation_stores_its_spec_unpaused_and_the_flag_apart() {
        let changes = fold(vec![Event::ScheduleCreated {
            spec: Box::new(schedule_spec("a", true)),
        }]);
        let [
            ScheduleChange::Create {
                name,
                spec,
                paused,
                created_seq,
                created_at_ms,
            },
        ] = changes.as_slice()
        else {
            panic!("{changes:?}");
        };
        assert_eq!((name.as_str(), *paused), ("a", true));
        assert_eq!((*created_seq, *created_at_ms), (10, 1_000));
        let spec: ScheduleSpec = serde_json::from_str(spec).unwrap();
        assert_eq!(spec, schedule_spec("a", false));
    }

    #[test]
    fn a_resume_moves_the_time_slots_count_from_and_a_pause_does_not() {
        let objective = ObjectiveId::new();
        let changes = fold(vec![
            Event::SchedulePaused {
                schedule: "a".into(),
            },
            Event::ScheduleResumed {
                schedule: "a".into(),
            },
            Event::ScheduleSkipped {
                schedule: "a".into(),
                slot_ms: 5,
                reason: "overlap".into(),
            },
            Event::ScheduleFireFailed {
                schedule: "a".into(),
                slot_ms: 6,
                reason: "no agent".into(),
            },
            Event::ScheduleFired {
                schedule: "a".into(),
                slot_ms: 7,
                objective,
            },
            Event::ScheduleDeleted {
                schedule: "a".into(),
            },
        ]);
        assert_eq!(
            changes,
            [
                ScheduleChange::Pause { name: "a".into() },
                ScheduleChange::Resume {
                    name: "a".into(),
                    at_ms: 1_100,
                },
                ScheduleChange::Fire {
                    name: "a".into(),
                    slot_ms: 7,
                    objective: objective.to_string(),
                },
                ScheduleChange::Delete { name: "a".into() },
            ]
        );
    }
}
