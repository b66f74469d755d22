//! The posted events: events sent from outside (`EventReceived`) for `wait` tasks, kept until
//! they expire, so that one posted before its task starts survives a restart.
//!
//! A row is inserted when the event is received and marked consumed by the `WaitSatisfied` that
//! hands it to a task. A consumed row is kept until it expires too, so that the sender's
//! idempotency key keeps answering the same event until then. Each receipt first deletes the rows
//! that expired by its time, so the index stays as small as the events still live, without a
//! sweeper of its own.

use swarm_protocol::Event;

use super::Stamp;
use crate::log::{BatchError, to_sql_int};

/// A change to the posted events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExternalEventChange {
    /// Delete the rows that expire at or before `now_ms`.
    Expire {
        /// The receiving event's time.
        now_ms: i64,
    },
    /// Insert the event, unless one of the same id is already there.
    Receive {
        /// Its id, as a hyphenated lowercase UUID (the key).
        id: String,
        /// The key `wait` tasks match.
        key: String,
        /// Its payload, as JSON text.
        payload: String,
        /// This event's seq: the order events are listed in.
        received_seq: i64,
        /// This event's time.
        received_at_ms: i64,
        /// When it expires.
        expires_at_ms: i64,
        /// The sender's idempotency key, if it gave one.
        idempotency_key: Option<String>,
    },
    /// Mark the event consumed by a task.
    Consume {
        /// Its id, as a hyphenated lowercase UUID.
        id: String,
        /// The consuming task's objective, as a hyphenated lowercase UUID.
        objective: String,
        /// The consuming task.
        task: i64,
    },
}

/// Appends the changes `event` makes, if any, to `changes`.
pub(super) fn observe(
    changes: &mut Vec<ExternalEventChange>,
    event: &Event,
    stamp: Stamp,
) -> Result<(), BatchError> {
    match event {
        Event::EventReceived {
            id,
            key,
            payload,
            expires_at_ms,
            idempotency_key,
        } => {
            let receive = ExternalEventChange::Receive {
                id: id.to_string(),
                key: key.clone(),
                payload: payload.to_string(),
                received_seq: stamp.seq,
                received_at_ms: stamp.at_ms,
                expires_at_ms: to_sql_int("expiry time", *expires_at_ms)?,
                idempotency_key: idempotency_key.clone(),
            };
            changes.push(ExternalEventChange::Expire {
                now_ms: stamp.at_ms,
            });
            changes.push(receive);
        }
        Event::WaitSatisfied {
            objective,
            task,
            event,
            ..
        } => changes.push(ExternalEventChange::Consume {
            id: event.to_string(),
            objective: objective.to_string(),
            task: to_sql_int("task id", task.0)?,
        }),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use swarm_protocol::{ObjectiveId, TaskId};

    use super::*;
    use crate::conformance::fixtures::received;

    #[test]
    fn a_receipt_expires_older_events_first_and_a_wait_consumes_one() {
        let id = uuid::Uuid::now_v7();
        let objective = ObjectiveId::new();
        let mut changes = Vec::new();
        let stamp = Stamp {
            seq: 4,
            at_ms: 1_000,
        };
        observe(
            &mut changes,
            &received(id, "build", 9_000, Some("ci")),
            stamp,
        )
        .unwrap();
        let consumed = Event::WaitSatisfied {
            objective,
            task: TaskId(6),
            event: id,
            key: "build".into(),
            payload: serde_json::json!({"key": "build"}),
        };
        observe(
            &mut changes,
            &consumed,
            Stamp {
                seq: 5,
                at_ms: 1_001,
            },
        )
        .unwrap();
        assert_eq!(
            changes,
            [
                ExternalEventChange::Expire { now_ms: 1_000 },
                ExternalEventChange::Receive {
                    id: id.to_string(),
                    key: "build".into(),
                    payload: r#"{"key":"build"}"#.into(),
                    received_seq: 4,
                    received_at_ms: 1_000,
                    expires_at_ms: 9_000,
                    idempotency_key: Some("ci".into()),
                },
                ExternalEventChange::Consume {
                    id: id.to_string(),
                    objective: objective.to_string(),
                    task: 6,
                },
            ]
        );
    }

    #[test]
    fn an_expiry_beyond_63_bits_is_refused_and_changes_nothing() {
        let mut changes = Vec::new();
        let event = received(uuid::Uuid::now_v7(), "k", u64::MAX, None);
        let err = observe(&mut changes, &event, Stamp { seq: 1, at_ms: 1 }).unwrap_err();
        assert!(matches!(
            err,
            BatchError::BeyondSqlInt {
                what: "expiry time",
                ..
            }
        ));
        assert!(changes.is_empty());
    }
}
