//! The counters a store keeps beside the log, so that [`crate::EventStore::info`] reads four
//! numbers instead of scanning it: the last sequence number, the events kept, and the next task
//! and agent ids.
//!
//! The next ids are one past the highest id any committed event allocated, and they only grow:
//! a batch that allocates lower ids (a re-registration of an old agent) leaves them, and pruning
//! the events that allocated them does not lower them, so a restarted coordinator never hands out
//! an id that an event in the log (or a pruned one) already names.

use swarm_protocol::{Event, EventRecord};

use crate::StoreInfo;

/// What a batch does to the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CounterChanges {
    /// The batch's last sequence number.
    pub(crate) last_seq: u64,
    /// The events the batch appends.
    pub(crate) events: u64,
    /// One past the highest task id the batch allocates (0 if it allocates none).
    pub(crate) next_task: u64,
    /// One past the highest agent id the batch registers (0 if it registers none).
    pub(crate) next_agent: u64,
}

impl CounterChanges {
    /// Folds one record into the changes.
    pub(super) fn observe(&mut self, record: &EventRecord) {
        self.last_seq = record.seq;
        self.events += 1;
        let allocated = |first: u64, count: usize| first.saturating_add(count as u64);
        match &record.event {
            Event::ObjectiveSubmitted {
                spec, first_task, ..
            } => self.raise_next_task(allocated(first_task.0, spec.tasks.len())),
            Event::TasksSpawned {
                first_task, tasks, ..
            } => self.raise_next_task(allocated(first_task.0, tasks.len())),
            Event::PlanRequested { task, .. } => self.raise_next_task(allocated(task.0, 1)),
            Event::CompensationStarted {
                first_task,
                compensates,
                ..
            } => self.raise_next_task(allocated(first_task.0, compensates.len())),
            Event::AgentRegistered { descriptor } => {
                self.next_agent = self.next_agent.max(allocated(descriptor.id.0, 1));
            }
            _ => {}
        }
    }

    fn raise_next_task(&mut self, next: u64) {
        self.next_task = self.next_task.max(next);
    }

    /// The counters after the batch, given those before it.
    pub(crate) fn applied_to(&self, before: StoreInfo) -> StoreInfo {
        StoreInfo {
            last_seq: self.last_seq,
            next_task: before.next_task.max(self.next_task),
            next_agent: before.next_agent.max(self.next_agent),
            events: before.events.saturating_add(self.events),
        }
    }
}

#[cfg(test)]
mod tests {
    use swarm_protocol::samples::every_event_kind;
    use swarm_protocol::{ObjectiveId, TaskId};

    use super::*;
    use crate::conformance::fixtures::{agent_event, records, registered, submitted};

    fn fold(records: &[EventRecord]) -> CounterChanges {
        let mut changes = CounterChanges::default();
        for record in records {
            changes.observe(record);
        }
        changes
    }

    #[test]
    fn every_allocating_kind_raises_the_next_ids() {
        // The submit allocates T3 (one task); the spawn T9 and T10; the re-plan T11; the
        // compensations T11 and T12; the registration A1.
        let batch = records(1, 5, every_event_kind());
        assert_eq!(
            fold(&batch),
            CounterChanges {
                last_seq: batch.len() as u64,
                events: batch.len() as u64,
                next_task: 13,
                next_agent: 2,
            }
        );
    }

    #[test]
    fn the_next_ids_only_grow() {
        let batch = records(
            8,
            5,
            vec![
                registered(4),
                registered(2),
                agent_event(9),
                submitted(ObjectiveId::new(), 5, None),
                Event::PlanRequested {
                    objective: ObjectiveId::new(),
                    task: TaskId(3),
                    spec: Box::new(plan_spec()),
                    replan: 1,
                    failed: None,
                },
            ],
        );
        let changes = fold(&batch);
        // A health change names A9 but registers nothing; the re-plan's T3 is below the
        // submit's T5 and T6.
        assert_eq!((changes.next_agent, changes.next_task), (5, 7));
        assert_eq!((changes.last_seq, changes.events), (12, 5));
        let before = StoreInfo {
            last_seq: 7,
            next_task: 20,
            next_agent: 3,
            events: 4,
        };
        assert_eq!(
            changes.applied_to(before),
            StoreInfo {
                last_seq: 12,
                next_task: 20,
                next_agent: 5,
                events: 9,
            }
        );
    }

    #[test]
    fn a_batch_that_allocates_nothing_keeps_the_next_ids() {
        let changes = fold(&records(1, 5, vec![agent_event(1)]));
        assert_eq!((changes.next_task, changes.next_agent), (0, 0));
        let after = changes.applied_to(StoreInfo {
            last_seq: 0,
            next_task: 1,
            next_agent: 1,
            events: 0,
        });
        assert_eq!((after.next_task, after.next_agent), (1, 1));
    }

    fn plan_spec() -> swarm_protocol::TaskSpec {
        let plan = swarm_protocol::Capability::new("plan").unwrap_or_else(|e| panic!("{e}"));
        let key = swarm_protocol::TaskKey::new("replan").unwrap_or_else(|e| panic!("{e}"));
        swarm_protocol::TaskSpec::new(key, plan)
    }
}
