//! The log itself, backend-neutral: what an append checks of a batch before it touches the
//! store, and the row each event becomes in the `events` table.
//!
//! Every SQL backend stores the same row for an event (the schema is `store/migrations/`): its
//! `seq`, its `at_ms`, the objective it belongs to (so one objective's events can be read and
//! pruned), its `kind` (the event's serde tag, for queries that look at one kind) and the JSON of
//! the whole record as `body`, the only column reads decode. Integers are signed 64-bit, since
//! SQL has no unsigned one; a value beyond that is refused here, before anything is written.
//!
//! A batch must be consecutive within itself ([`LogBatch::encode`]) and start right after the
//! log's last event ([`LogBatch::check_follows`]), so a backend refuses gaps and duplicates the
//! same way, with the same message.

use std::path::Path;

use swarm_protocol::{Event, EventRecord};

use crate::StoreError;

/// Why a batch is refused before (or instead of) being written. A backend turns it into a
/// [`StoreError`] naming its own file with [`BatchError::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchError {
    /// The batch's sequence numbers are not consecutive, or do not follow the log's last one.
    OutOfOrder(String),
    /// A number the batch carries does not fit the log's signed 64-bit integers.
    BeyondSqlInt {
        /// What the number is (e.g. `seq`, `task id`).
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// An event (or a part of it stored on its own) could not be serialized.
    Unencodable {
        /// The event's sequence number.
        seq: u64,
        /// What serde said.
        cause: String,
    },
}

impl BatchError {
    /// The error as the store reports it, naming the store's file.
    pub(crate) fn at(self, path: &Path) -> StoreError {
        let cause = match self {
            Self::OutOfOrder(detail) => {
                format!("append out of order: {detail}; nothing was written")
            }
            Self::BeyondSqlInt { what, value } => {
                format!("{what} {value} is beyond the log's 63-bit integers")
            }
            Self::Unencodable { seq, cause } => {
                format!("event {seq} could not be encoded: {cause}")
            }
        };
        StoreError::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

/// `value` as the log's signed 64-bit integer, or why it does not fit.
pub(crate) fn to_sql_int(what: &'static str, value: u64) -> Result<i64, BatchError> {
    i64::try_from(value).map_err(|_| BatchError::BeyondSqlInt { what, value })
}

/// One event as the `events` table stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRow {
    /// Its sequence number (the table's key).
    pub(crate) seq: i64,
    /// When it was recorded (ms since the Unix epoch).
    pub(crate) at_ms: i64,
    /// The objective it belongs to, as a hyphenated lowercase UUID, if any.
    pub(crate) objective: Option<String>,
    /// Its kind, as [`event_kind_name`] names it.
    pub(crate) kind: &'static str,
    /// The JSON of the whole [`EventRecord`].
    pub(crate) body: String,
}

/// The rows of one append, encoded before the store is locked, with the range of sequence
/// numbers they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogBatch {
    /// The first record's sequence number.
    pub(crate) first_seq: u64,
    /// The last record's sequence number.
    pub(crate) last_seq: u64,
    /// One row per record, in order.
    pub(crate) rows: Vec<LogRow>,
}

impl LogBatch {
    /// Encodes `records` (not empty), refusing sequence numbers that are not consecutive.
    pub(crate) fn encode(records: &[EventRecord]) -> Result<Self, BatchError> {
        let mut rows = Vec::with_capacity(records.len());
        let mut previous: Option<u64> = None;
        for record in records {
            if let Some(previous) = previous
                && previous.checked_add(1) != Some(record.seq)
            {
                return Err(BatchError::OutOfOrder(format!(
                    "seq {} follows seq {previous} within the batch",
                    record.seq
                )));
            }
            previous = Some(record.seq);
            let body = serde_json::to_string(record).map_err(|e| BatchError::Unencodable {
                seq: record.seq,
                cause: e.to_string(),
            })?;
            rows.push(LogRow {
                seq: to_sql_int("seq", record.seq)?,
                at_ms: to_sql_int("event time", record.at_ms)?,
                objective: record.event.objective().map(|o| o.to_string()),
                kind: event_kind_name(&record.event),
                body,
            });
        }
        Ok(Self {
            first_seq: records.first().map_or(0, |r| r.seq),
            last_seq: previous.unwrap_or(0),
            rows,
        })
    }

    /// Refuses the batch unless it starts right after `last_seq`, the log's last event.
    pub(crate) fn check_follows(&self, last_seq: u64) -> Result<(), BatchError> {
        if last_seq.checked_add(1) == Some(self.first_seq) {
            Ok(())
        } else {
            Err(BatchError::OutOfOrder(format!(
                "the batch starts at seq {} but the log ends at seq {last_seq}",
                self.first_seq
            )))
        }
    }
}

/// The event's `type` tag, as serde writes it (a test checks that they agree): the `kind`
/// column.
pub(crate) fn event_kind_name(event: &Event) -> &'static str {
    match event {
        Event::ObjectiveSubmitted { .. } => "objective_submitted",
        Event::TaskReady { .. } => "task_ready",
        Event::TaskStarted { .. } => "task_started",
        Event::TaskSucceeded { .. } => "task_succeeded",
        Event::TaskFailed { .. } => "task_failed",
        Event::AttemptLost { .. } => "attempt_lost",
        Event::ResultFenced { .. } => "result_fenced",
        Event::TaskInReview { .. } => "task_in_review",
        Event::TaskApproved { .. } => "task_approved",
        Event::TaskRejected { .. } => "task_rejected",
        Event::TaskEscalated { .. } => "task_escalated",
        Event::TasksSpawned { .. } => "tasks_spawned",
        Event::PlanRequested { .. } => "plan_requested",
        Event::PlanRejected { .. } => "plan_rejected",
        Event::CompensationStarted { .. } => "compensation_started",
        Event::TaskCancelled { .. } => "task_cancelled",
        Event::ObjectiveSucceeded { .. } => "objective_succeeded",
        Event::ObjectiveFailed { .. } => "objective_failed",
        Event::ObjectiveCancelled { .. } => "objective_cancelled",
        Event::BudgetReached { .. } => "budget_reached",
        Event::BudgetRaised { .. } => "budget_raised",
        Event::AgentRegistered { .. } => "agent_registered",
        Event::AgentHealthChanged { .. } => "agent_health_changed",
        Event::AgentRestarted { .. } => "agent_restarted",
        Event::AgentDeregistered { .. } => "agent_deregistered",
        Event::AgentDeclared { .. } => "agent_declared",
        Event::AgentUndeclared { .. } => "agent_undeclared",
        Event::ScheduleCreated { .. } => "schedule_created",
        Event::SchedulePaused { .. } => "schedule_paused",
        Event::ScheduleResumed { .. } => "schedule_resumed",
        Event::ScheduleDeleted { .. } => "schedule_deleted",
        Event::ScheduleFired { .. } => "schedule_fired",
        Event::ScheduleSkipped { .. } => "schedule_skipped",
        Event::ScheduleFireFailed { .. } => "schedule_fire_failed",
        Event::TaskWaiting { .. } => "task_waiting",
        Event::WaitSatisfied { .. } => "wait_satisfied",
        Event::EventReceived { .. } => "event_received",
        Event::HookDeclared { .. } => "hook_declared",
        Event::HookDeleted { .. } => "hook_deleted",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use swarm_protocol::samples::every_event_kind;

    use super::*;
    use crate::conformance::fixtures::{agent_event, record, records};

    #[test]
    fn kinds_are_the_serde_names() {
        for event in every_event_kind() {
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(value["type"], event_kind_name(&event), "{value}");
        }
    }

    #[test]
    fn a_batch_becomes_one_row_per_event_with_its_body() {
        let batch = records(7, 1_000, every_event_kind());
        let log = LogBatch::encode(&batch).unwrap();
        assert_eq!((log.first_seq, log.last_seq), (7, 6 + batch.len() as u64));
        assert_eq!(log.rows.len(), batch.len());
        for (row, record) in log.rows.iter().zip(&batch) {
            assert_eq!((row.seq, row.at_ms), (record.seq as i64, 1_000));
            assert_eq!(row.kind, event_kind_name(&record.event));
            assert_eq!(
                row.objective,
                record.event.objective().map(|o| o.to_string())
            );
            let decoded: EventRecord = serde_json::from_str(&row.body).unwrap();
            assert_eq!(&decoded, record);
        }
    }

    #[test]
    fn gaps_and_repeats_are_refused() {
        let skips = [record(4, 1, agent_event(1)), record(6, 1, agent_event(1))];
        let repeats = [record(4, 1, agent_event(1)), record(4, 1, agent_event(1))];
        for batch in [&skips, &repeats] {
            let err = LogBatch::encode(batch).unwrap_err();
            assert!(matches!(&err, BatchError::OutOfOrder(d) if d.contains("within the batch")));
        }
        let log = LogBatch::encode(&records(4, 1, vec![agent_event(1)])).unwrap();
        assert!(log.check_follows(3).is_ok());
        for last_seq in [0, 2, 4, u64::MAX] {
            let err = log.check_follows(last_seq).unwrap_err();
            let StoreError::Io { cause, .. } = err.at(Path::new("x")) else {
                panic!("not an Io error");
            };
            assert!(cause.contains("out of order") && cause.contains("nothing was written"));
        }
    }

    #[test]
    fn numbers_beyond_63_bits_are_refused() {
        let err = LogBatch::encode(&[record(u64::MAX, 1, agent_event(1))]).unwrap_err();
        assert_eq!(
            err,
            BatchError::BeyondSqlInt {
                what: "seq",
                value: u64::MAX
            }
        );
        assert!(
            err.at(Path::new("x"))
                .to_string()
                .contains("beyond the log's 63-bit integers")
        );
    }
}
