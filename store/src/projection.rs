//! The store's indexes, backend-neutral: what a batch of events changes in each of them.
//!
//! Beside the log, a store keeps indexes that the coordinator reads when it starts and that the
//! API lists: the objective index (status, idempotency key and fingerprint), the counters, the
//! declared agents, the schedules, the external events (posted for `wait` tasks) and the declared hooks. They are written in
//! the same transaction as the append that carries their events, so they are never behind or
//! ahead of the log, and they outlive the events that pruning removes.
//!
//! [`IndexChanges::of`] folds a batch into the changes each index needs, one module per index.
//! The changes are plain rows in the form the shared schema stores them (`store/migrations/`):
//! integers as signed 64-bit, ids as hyphenated lowercase UUIDs, configurations and specs as
//! JSON text. A backend applies them in its own SQL, each list in the order given (a later change
//! to the same name wins), after the log's rows and before the counters. This module knows no SQL
//! and does no I/O, so the rules that say which event changes what are unit tested here, once,
//! for every backend.

mod agents;
mod counters;
mod external_events;
mod hooks;
mod objectives;
mod schedules;

use swarm_protocol::EventRecord;

pub(crate) use agents::DeclaredAgentChange;
pub(crate) use counters::CounterChanges;
pub(crate) use external_events::ExternalEventChange;
pub(crate) use hooks::DeclaredHookChange;
pub(crate) use objectives::{ObjectiveChanges, status_from_name, status_name};
pub(crate) use schedules::ScheduleChange;

use crate::log::{BatchError, to_sql_int};

/// Everything one append changes in the indexes.
#[derive(Debug, Default)]
pub(crate) struct IndexChanges {
    /// Objectives submitted and ended.
    pub(crate) objectives: ObjectiveChanges,
    /// The counters (`last_seq`, `next_task`, `next_agent`, `events`).
    pub(crate) counters: CounterChanges,
    /// Agents declared and undeclared through the API, in log order.
    pub(crate) declared_agents: Vec<DeclaredAgentChange>,
    /// Schedules created, paused, resumed, deleted and fired, in log order.
    pub(crate) schedules: Vec<ScheduleChange>,
    /// Events posted, consumed and expired, in log order.
    pub(crate) posted_events: Vec<ExternalEventChange>,
    /// Hooks declared and deleted through the API, in log order.
    pub(crate) declared_hooks: Vec<DeclaredHookChange>,
}

/// Where an event sits in the log, in the log's integers: what index rows record of it.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    seq: i64,
    at_ms: i64,
}

impl IndexChanges {
    /// The changes `records` make, in order. The batch's order is [`crate::log::LogBatch`]'s to
    /// check; this only refuses numbers beyond the log's integers and values serde cannot write.
    pub(crate) fn of(records: &[EventRecord]) -> Result<Self, BatchError> {
        let mut changes = Self::default();
        for record in records {
            let stamp = Stamp {
                seq: to_sql_int("seq", record.seq)?,
                at_ms: to_sql_int("event time", record.at_ms)?,
            };
            changes.counters.observe(record);
            changes.objectives.observe(&record.event, stamp);
            agents::observe(&mut changes.declared_agents, &record.event, stamp)?;
            schedules::observe(&mut changes.schedules, record, stamp)?;
            external_events::observe(&mut changes.posted_events, &record.event, stamp)?;
            hooks::observe(&mut changes.declared_hooks, &record.event, stamp);
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use swarm_protocol::samples::every_event_kind;

    use super::*;
    use crate::conformance::fixtures::{agent_event, records};

    #[test]
    fn every_kind_changes_each_index_it_names() {
        let batch = records(1, 5, every_event_kind());
        let changes = IndexChanges::of(&batch).unwrap();
        // The sample submits one objective and ends it three ways (the last end wins), declares
        // and undeclares an agent, receives and consumes an event (the receipt expires older
        // ones first), creates, pauses, resumes, fires and deletes a schedule (skipped and
        // failed slots change no index), and declares and deletes a hook.
        assert_eq!(changes.objectives.submitted.len(), 1);
        assert_eq!(
            changes.objectives.submitted[0].status,
            swarm_protocol::ObjectiveStatus::Cancelled
        );
        assert!(changes.objectives.ended.is_empty());
        assert_eq!(changes.counters.events, batch.len() as u64);
        assert_eq!(changes.declared_agents.len(), 2);
        assert_eq!(changes.posted_events.len(), 3);
        assert_eq!(changes.schedules.len(), 5);
        assert_eq!(changes.declared_hooks.len(), 2);
    }

    #[test]
    fn events_that_name_no_index_change_only_the_counters() {
        let changes = IndexChanges::of(&records(3, 5, vec![agent_event(1)])).unwrap();
        assert!(changes.objectives.submitted.is_empty() && changes.objectives.ended.is_empty());
        assert!(changes.declared_agents.is_empty() && changes.schedules.is_empty());
        assert!(changes.posted_events.is_empty() && changes.declared_hooks.is_empty());
        assert_eq!((changes.counters.last_seq, changes.counters.events), (3, 1));
    }

    #[test]
    fn a_time_beyond_63_bits_is_refused() {
        let mut batch = records(1, 5, vec![agent_event(1)]);
        batch[0].at_ms = u64::MAX;
        assert!(matches!(
            IndexChanges::of(&batch),
            Err(BatchError::BeyondSqlInt {
                what: "event time",
                ..
            })
        ));
    }
}
