//! Results that do not commit: a report or a result for an attempt that is not current.
//!
//! A result commits only for its task's current attempt, running on the agent that sends it.
//! Any other (its attempt timed out or was cancelled and the task moved on, was run again after
//! a lost lease or a coordinator restart, or its task ended) is *fenced*: dropped, and recorded
//! in the objective's chain of work as a [`Event::ResultFenced`] that says why, from the task's
//! record as it stands. The event changes no task (the fold of [`TaskRecord::apply`] skips it)
//! and nothing is kept in memory per fenced result, so an agent that keeps sending stale
//! results costs log space, never scheduler memory.
//!
//! Results reach here two ways: a local agent's report that `outcomes.rs` finds is not current
//! (that check stays the only cost for a current one), and a result the transport holds with
//! nobody waiting for it ([`SchedulerMsg::Fence`](swarm_protocol::SchedulerMsg::Fence)), which
//! the scheduler refuses to fence while its attempt is the one running.

use swarm_protocol::{
    AgentId, Event, FencedResult, ObjectiveId, OutcomeSummary, Report, SchedulerError, TaskId,
    TaskStatus,
};

use super::record::TaskRecord;
use super::state::SchedulerState;

impl SchedulerState {
    /// A report from `agent` that `on_report` found is not for the task's current attempt on
    /// it: recorded as fenced when the scheduler still holds the task (and so knows its
    /// objective), only counted otherwise.
    #[cold]
    pub(super) fn fence_report(&mut self, agent: AgentId, report: &Report) {
        self.stats.fenced_results += 1;
        let Some(node) = self.graph.tasks.get(report.task) else {
            return;
        };
        let Some(reason) = fence_reason(&node.record, report.attempt, agent) else {
            return;
        };
        let objective = node.objective;
        self.journal.record(Event::ResultFenced {
            objective,
            task: report.task,
            attempt: report.attempt,
            agent,
            outcome: OutcomeSummary::from(&report.outcome),
            reason,
        });
    }

    /// A result that arrived with nobody waiting for it: recorded as fenced, unless its attempt
    /// is current ([`SchedulerError::AttemptCurrent`]: the scheduler still waits for it) or
    /// the scheduler does not hold its task ([`SchedulerError::UnknownTask`]: nothing
    /// recorded; its objective ended and was dropped from memory, or never existed).
    pub(crate) fn fence(&mut self, result: FencedResult) -> Result<(), SchedulerError> {
        let Some(node) = self.graph.tasks.get(result.task) else {
            self.stats.fenced_results += 1;
            return Err(SchedulerError::UnknownTask(result.task));
        };
        let reason = if node.objective != result.objective {
            Some(foreign_reason(
                result.task,
                result.objective,
                node.objective,
            ))
        } else {
            fence_reason(&node.record, result.attempt, result.agent)
        };
        let Some(reason) = reason else {
            return Err(SchedulerError::AttemptCurrent {
                task: result.task,
                attempt: result.attempt,
                agent: result.agent,
            });
        };
        // Recorded in the chain of the objective the task belongs to, where a reader of the
        // task looks.
        let objective = node.objective;
        self.stats.fenced_results += 1;
        self.journal.record(Event::ResultFenced {
            objective,
            task: result.task,
            attempt: result.attempt,
            agent: result.agent,
            outcome: result.outcome,
            reason,
        });
        Ok(())
    }
}

/// Why a result for `attempt` from `agent` does not commit, given its task's record; `None`
/// when the attempt is current (running on `agent`). The reason is built from numbers and
/// names alone, so it is short whatever the result held.
pub(super) fn fence_reason(record: &TaskRecord, attempt: u32, agent: AgentId) -> Option<String> {
    let running = record.status == TaskStatus::Running;
    if running && record.attempt == attempt {
        return match record.agent {
            Some(runner) if runner == agent => None,
            Some(runner) => Some(format!(
                "attempt {attempt} runs on agent {runner}, not on {agent}"
            )),
            None => Some(format!("attempt {attempt} runs on no agent")),
        };
    }
    let current = record.attempt;
    Some(if attempt > current {
        format!(
            "attempt {attempt} was never started: the task is {} at attempt {current}",
            status_words(record.status)
        )
    } else if attempt < current && running {
        format!("attempt {attempt} is not current: the task runs attempt {current}")
    } else if attempt < current {
        format!(
            "attempt {attempt} is not current: the task is {} after attempt {current}",
            status_words(record.status)
        )
    } else {
        format!(
            "attempt {attempt} is not running: the task is {}",
            status_words(record.status)
        )
    })
}

/// The reason for a result whose attempt names another objective than its task's.
fn foreign_reason(task: TaskId, named: ObjectiveId, actual: ObjectiveId) -> String {
    format!("the result names objective {named}, but task {task} belongs to objective {actual}")
}

/// A task's status as the reason of a fenced result says it, after "the task is".
fn status_words(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Backlog => "waiting for its dependencies",
        TaskStatus::Ready => "ready",
        TaskStatus::Running => "running",
        TaskStatus::Waiting => "waiting for its event",
        TaskStatus::Review => "in review",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use swarm_protocol::{Capability, FailureKind, TaskKey, TaskSpec};

    use super::*;

    fn record() -> TaskRecord {
        let spec = TaskSpec::new(TaskKey::new("a").unwrap(), Capability::new("echo").unwrap());
        TaskRecord::declared(TaskId(7), &spec, ObjectiveId::new(), None, Vec::new())
    }

    /// A record whose attempt `attempt` runs on `agent` since `at_ms`.
    fn running(attempt: u32, agent: AgentId) -> TaskRecord {
        let mut record = record();
        record.ready();
        record.started(attempt, agent, 1_000);
        record
    }

    #[test]
    fn only_the_running_attempt_on_its_agent_is_current() {
        let record = running(3, AgentId(2));
        assert_eq!(fence_reason(&record, 3, AgentId(2)), None);
        assert_eq!(
            fence_reason(&record, 2, AgentId(2)).unwrap(),
            "attempt 2 is not current: the task runs attempt 3"
        );
        assert_eq!(
            fence_reason(&record, 3, AgentId(5)).unwrap(),
            "attempt 3 runs on agent A2, not on A5"
        );
        assert_eq!(
            fence_reason(&record, 4, AgentId(2)).unwrap(),
            "attempt 4 was never started: the task is running at attempt 3"
        );
    }

    #[test]
    fn an_attempt_lost_or_ended_is_not_current_even_on_its_own_agent() {
        let mut lost = running(3, AgentId(2));
        lost.apply(
            &Event::AttemptLost {
                objective: ObjectiveId::new(),
                task: TaskId(7),
                attempt: 3,
                agent: Some(AgentId(2)),
                reason: "lease lost".into(),
                declined: false,
            },
            2_000,
        );
        assert_eq!(
            fence_reason(&lost, 3, AgentId(2)).unwrap(),
            "attempt 3 is not running: the task is ready"
        );
        assert_eq!(
            fence_reason(&lost, 1, AgentId(2)).unwrap(),
            "attempt 1 is not current: the task is ready after attempt 3"
        );
        let mut done = running(1, AgentId(2));
        done.succeeded(&json!("ok"), None, std::time::Duration::from_millis(5));
        assert_eq!(
            fence_reason(&done, 1, AgentId(2)).unwrap(),
            "attempt 1 is not running: the task is succeeded"
        );
        assert_eq!(
            fence_reason(&record(), 1, AgentId(2)).unwrap(),
            "attempt 1 was never started: the task is waiting for its dependencies at attempt 0"
        );
    }

    /// The fold that builds every view skips a fenced result: the record stays as it was,
    /// whatever the result said.
    #[test]
    fn a_fenced_result_changes_no_task_record() {
        let before = running(2, AgentId(4));
        let mut after = before.clone();
        for outcome in [
            OutcomeSummary::Succeeded,
            OutcomeSummary::Failed {
                kind: FailureKind::Permanent,
            },
            OutcomeSummary::Spawned { tasks: 3 },
        ] {
            let event = Event::ResultFenced {
                objective: ObjectiveId::new(),
                task: TaskId(7),
                attempt: 1,
                agent: AgentId(4),
                outcome,
                reason: fence_reason(&before, 1, AgentId(4)).unwrap(),
            };
            after.apply(&event, 9_000);
        }
        assert_eq!(after, before);
        assert_eq!(after.view(), before.view());
    }

    #[test]
    fn a_result_naming_another_objective_says_both() {
        let (named, actual) = (ObjectiveId::new(), ObjectiveId::new());
        let reason = foreign_reason(TaskId(7), named, actual);
        assert!(reason.contains(&named.to_string()) && reason.contains(&actual.to_string()));
        assert!(reason.contains("T7"), "{reason}");
    }
}
