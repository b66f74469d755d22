//! The objective index: one row per submitted objective with its idempotency key, the
//! fingerprint of what was submitted under that key, and where it stands.
//!
//! A submit inserts a row; an `Objective{Succeeded,Failed,Cancelled}` ends it. The index keeps a
//! compensating objective as running until it ends. Within one batch the changes are folded so
//! each objective is written once: one submitted and ended in the same batch is inserted ended,
//! and one ended twice (a failure, then the cancel that a client sent meanwhile) is updated once,
//! with its last end, as replaying the log in order would leave it.

use std::collections::HashMap;

use swarm_protocol::{Event, ObjectiveId, ObjectiveStatus};

use super::Stamp;

/// A row to insert into the objective index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectiveRow {
    /// The objective, as a hyphenated lowercase UUID.
    pub(crate) id: String,
    /// The client's idempotency key, if it gave one.
    pub(crate) idempotency_key: Option<String>,
    /// [`swarm_protocol::Objective::fingerprint`] stored bit for bit (SQL has no unsigned 64-bit
    /// integer) when the objective was submitted under a key; 0 otherwise, since only a keyed
    /// submit is ever compared with it and computing it costs a serialization.
    pub(crate) fingerprint: i64,
    /// [`ObjectiveStatus::Running`], or how it ended when the batch also ends it.
    pub(crate) status: ObjectiveStatus,
    /// When it was submitted.
    pub(crate) submitted_at_ms: i64,
    /// When it ended, if the batch also ends it.
    pub(crate) ended_at_ms: Option<i64>,
}

/// An update of an objective submitted before the batch and ended in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectiveEnd {
    /// The objective, as a hyphenated lowercase UUID.
    pub(crate) id: String,
    /// How it ended.
    pub(crate) status: ObjectiveStatus,
    /// When.
    pub(crate) ended_at_ms: i64,
}

/// What a batch changes in the objective index.
#[derive(Debug, Default)]
pub(crate) struct ObjectiveChanges {
    /// Rows to insert, in submission order.
    pub(crate) submitted: Vec<ObjectiveRow>,
    /// Rows to update, one per objective, in the order they first ended in the batch.
    pub(crate) ended: Vec<ObjectiveEnd>,
    /// Where each objective's row is in `submitted`, so a later end in the batch lands in it.
    submitted_rows: HashMap<ObjectiveId, usize>,
    /// Where each objective's update is in `ended`, so a second end replaces the first.
    ended_rows: HashMap<ObjectiveId, usize>,
}

impl ObjectiveChanges {
    /// Folds one event into the changes.
    pub(super) fn observe(&mut self, event: &Event, stamp: Stamp) {
        let (objective, status) = match event {
            Event::ObjectiveSubmitted {
                objective,
                spec,
                idempotency_key,
                ..
            } => {
                self.submitted_rows.insert(*objective, self.submitted.len());
                self.submitted.push(ObjectiveRow {
                    id: objective.to_string(),
                    idempotency_key: idempotency_key.clone(),
                    // Bit for bit: the cast is the storage format, not a conversion.
                    fingerprint: if idempotency_key.is_some() {
                        spec.fingerprint() as i64
                    } else {
                        0
                    },
                    status: ObjectiveStatus::Running,
                    submitted_at_ms: stamp.at_ms,
                    ended_at_ms: None,
                });
                return;
            }
            Event::ObjectiveSucceeded { objective } => (*objective, ObjectiveStatus::Succeeded),
            Event::ObjectiveFailed { objective, .. } => (*objective, ObjectiveStatus::Failed),
            Event::ObjectiveCancelled { objective } => (*objective, ObjectiveStatus::Cancelled),
            _ => return,
        };
        if let Some(&i) = self.submitted_rows.get(&objective) {
            self.submitted[i].status = status;
            self.submitted[i].ended_at_ms = Some(stamp.at_ms);
            return;
        }
        let end = ObjectiveEnd {
            id: objective.to_string(),
            status,
            ended_at_ms: stamp.at_ms,
        };
        if let Some(&i) = self.ended_rows.get(&objective) {
            self.ended[i] = end;
        } else {
            self.ended_rows.insert(objective, self.ended.len());
            self.ended.push(end);
        }
    }
}

/// The stored form of a status, as serde writes it (a test checks that they agree).
pub(crate) fn status_name(status: ObjectiveStatus) -> &'static str {
    match status {
        ObjectiveStatus::Running => "running",
        // Never stored: the index keeps a compensating objective as running until it ends.
        ObjectiveStatus::Compensating => "compensating",
        ObjectiveStatus::Succeeded => "succeeded",
        ObjectiveStatus::Failed => "failed",
        ObjectiveStatus::Cancelled => "cancelled",
    }
}

/// The status a stored name stands for (`None` for a name the index never stores).
pub(crate) fn status_from_name(name: &str) -> Option<ObjectiveStatus> {
    [
        ObjectiveStatus::Running,
        ObjectiveStatus::Succeeded,
        ObjectiveStatus::Failed,
        ObjectiveStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::conformance::fixtures::{objective_spec, submitted};

    fn fold(events: &[(i64, Event)]) -> ObjectiveChanges {
        let mut changes = ObjectiveChanges::default();
        for (seq, (at_ms, event)) in (1..).zip(events) {
            changes.observe(event, Stamp { seq, at_ms: *at_ms });
        }
        changes
    }

    #[test]
    fn statuses_are_the_serde_names() {
        for status in [
            ObjectiveStatus::Running,
            ObjectiveStatus::Succeeded,
            ObjectiveStatus::Failed,
            ObjectiveStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status_name(status));
            assert_eq!(status_from_name(status_name(status)), Some(status));
        }
        assert_eq!(status_from_name("compensating"), None);
    }

    #[test]
    fn a_keyed_submit_records_its_fingerprint_and_an_unkeyed_one_zero() {
        let (a, b) = (ObjectiveId::new(), ObjectiveId::new());
        let changes = fold(&[
            (100, submitted(a, 1, Some("key-a"))),
            (200, submitted(b, 3, None)),
        ]);
        assert_eq!(
            changes.submitted,
            [
                ObjectiveRow {
                    id: a.to_string(),
                    idempotency_key: Some("key-a".into()),
                    fingerprint: objective_spec(2).fingerprint() as i64,
                    status: ObjectiveStatus::Running,
                    submitted_at_ms: 100,
                    ended_at_ms: None,
                },
                ObjectiveRow {
                    id: b.to_string(),
                    idempotency_key: None,
                    fingerprint: 0,
                    status: ObjectiveStatus::Running,
                    submitted_at_ms: 200,
                    ended_at_ms: None,
                },
            ]
        );
        assert!(changes.ended.is_empty());
    }

    #[test]
    fn an_objective_submitted_and_ended_in_one_batch_is_inserted_ended() {
        let a = ObjectiveId::new();
        let changes = fold(&[
            (100, submitted(a, 1, None)),
            (150, Event::ObjectiveCancelled { objective: a }),
        ]);
        assert_eq!(changes.submitted.len(), 1);
        assert_eq!(changes.submitted[0].status, ObjectiveStatus::Cancelled);
        assert_eq!(changes.submitted[0].ended_at_ms, Some(150));
        assert!(changes.ended.is_empty());
    }

    #[test]
    fn an_objective_ended_twice_is_updated_once_with_its_last_end() {
        let (a, b) = (ObjectiveId::new(), ObjectiveId::new());
        let changes = fold(&[
            (
                100,
                Event::ObjectiveFailed {
                    objective: a,
                    reason: "r".into(),
                },
            ),
            (110, Event::ObjectiveSucceeded { objective: b }),
            (120, Event::ObjectiveCancelled { objective: a }),
        ]);
        assert!(changes.submitted.is_empty());
        assert_eq!(
            changes.ended,
            [
                ObjectiveEnd {
                    id: a.to_string(),
                    status: ObjectiveStatus::Cancelled,
                    ended_at_ms: 120,
                },
                ObjectiveEnd {
                    id: b.to_string(),
                    status: ObjectiveStatus::Succeeded,
                    ended_at_ms: 110,
                },
            ]
        );
    }
}
