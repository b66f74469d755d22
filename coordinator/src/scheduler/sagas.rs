//! Sagas: when an objective fails, the compensations of its succeeded tasks run one at a
//! time, newest success first, as tasks of the objective; it ends `Failed` after the last.
//!
//! [`Saga`] is one objective's saga in progress: why the objective failed and the
//! compensations not yet started, in the order they run. It decides that order, and where a
//! saga interrupted by a restart goes on. The scheduler's part (below [`Saga`]) adds the
//! compensation tasks, starts the next one when one ends (a compensation that fails does not
//! stop the others) and ends the objective after the last. Compensations are not checked
//! against a schema, not reviewed and not re-planned: their objective has failed.

use std::collections::VecDeque;

use swarm_protocol::{Event, FailureKind, ObjectiveId, ObjectiveStatus, TaskId, TaskStatus};

use super::failures::AttemptCost;
use super::record::TaskRecord;
use super::state::SchedulerState;
use crate::replay::ObjectiveModel;

/// An objective's compensations in progress.
#[derive(Debug)]
pub(super) struct Saga {
    /// Why the objective failed; its `ObjectiveFailed` says so once the saga is over.
    reason: String,
    /// Compensation tasks not yet started, in the order they run.
    pending: VecDeque<TaskId>,
}

impl Saga {
    /// A saga that runs the compensation tasks `pending`, in order.
    pub(super) fn new(reason: String, pending: VecDeque<TaskId>) -> Self {
        Self { reason, pending }
    }

    /// The tasks a failed objective compensates: of `compensable` (its tasks that have a
    /// compensation, in the order they succeeded), those that `still_succeeded`, newest
    /// success first.
    pub(super) fn compensations(
        compensable: &[TaskId],
        still_succeeded: impl Fn(TaskId) -> bool,
    ) -> Vec<TaskId> {
        compensable
            .iter()
            .rev()
            .copied()
            .filter(|t| still_succeeded(*t))
            .collect()
    }

    /// Where a saga goes on after a restart, from its objective's task records: the
    /// compensation that had started (ready or running), if any, and those not started yet, in
    /// order.
    pub(super) fn resumed(tasks: &[TaskRecord]) -> (Option<&TaskRecord>, VecDeque<TaskId>) {
        let mut current = None;
        let mut pending = VecDeque::new();
        for t in tasks.iter().filter(|t| t.compensates.is_some()) {
            match t.status {
                TaskStatus::Running | TaskStatus::Ready if current.is_none() => current = Some(t),
                TaskStatus::Backlog => pending.push_back(t.id),
                _ => {}
            }
        }
        (current, pending)
    }

    /// The next compensation to start; `None` once the last has.
    pub(super) fn next(&mut self) -> Option<TaskId> {
        self.pending.pop_front()
    }

    /// Why the objective failed.
    pub(super) fn reason(&self) -> &str {
        &self.reason
    }
}

impl SchedulerState {
    /// The objective failed: if tasks with a compensation had succeeded, their compensations
    /// are added as tasks (newest success first), recorded, and the first one starts; true
    /// when there is a saga to run.
    pub(super) fn start_compensation(&mut self, id: ObjectiveId, reason: &str) -> bool {
        let Some(run) = self.graph.objectives.get(&id) else {
            return false;
        };
        let tasks = &self.graph.tasks;
        let compensates = Saga::compensations(&run.compensable, |t| {
            tasks
                .get(t)
                .is_some_and(|n| n.record.status == TaskStatus::Succeeded && n.has_compensation())
        });
        if compensates.is_empty() {
            return false;
        }
        let first = TaskId(self.graph.next_task);
        self.graph.next_task += compensates.len() as u64;
        let mut pending = VecDeque::with_capacity(compensates.len());
        for (i, &original) in compensates.iter().enumerate() {
            let task = TaskId(first.0 + i as u64);
            self.graph.add_compensation(id, original, task);
            pending.push_back(task);
        }
        if let Some(run) = self.graph.objectives.get_mut(&id) {
            run.status = ObjectiveStatus::Compensating;
            run.saga = Some(Saga::new(reason.to_owned(), pending));
        }
        self.emit(Event::CompensationStarted {
            objective: id,
            reason: reason.to_owned(),
            first_task: first,
            compensates,
        });
        self.next_compensation(id);
        true
    }

    /// The previous compensation ended (or none ran yet): the next one becomes ready; after
    /// the last, the objective ends failed. A compensation whose input cannot be built fails
    /// at once and the next one follows.
    pub(super) fn next_compensation(&mut self, objective: ObjectiveId) {
        loop {
            let Some(run) = self.graph.objectives.get_mut(&objective) else {
                return;
            };
            if run.status != ObjectiveStatus::Compensating {
                return;
            }
            let Some(saga) = run.saga.as_mut() else {
                return;
            };
            let Some(task) = saga.next() else {
                let reason = saga.reason.clone();
                self.finish_objective(objective, ObjectiveStatus::Failed, Some(reason));
                return;
            };
            match self.graph.build_input(task) {
                Some(Ok(_)) => {
                    self.mark_ready(objective, task);
                    return;
                }
                Some(Err(message)) => {
                    self.record_failure(
                        task,
                        None,
                        FailureKind::Permanent,
                        &message,
                        None,
                        AttemptCost::default(),
                    );
                }
                None => {}
            }
        }
    }

    /// A recovered objective that was compensating: the compensation that had started goes
    /// on (a running attempt is lost and runs again), the rest follow.
    pub(super) fn resume_saga(&mut self, model: &ObjectiveModel, now: u64) {
        let id = model.id;
        let (current, pending) = Saga::resumed(&model.tasks);
        if let Some(saga) = self
            .graph
            .objectives
            .get_mut(&id)
            .and_then(|r| r.saga.as_mut())
        {
            saga.pending = pending;
        }
        match current {
            Some(t) if t.status == TaskStatus::Running => {
                self.restore_running(id, t.id, t.attempt, t.agent, now);
            }
            Some(t) => self.restore_ready(t.id, t.retry_at_ms, now),
            None => self.next_compensation(id),
        }
    }
}

#[cfg(test)]
mod tests;
