//! Reviews: a task's output (or an `approval` task's input) waits for a person, who approves
//! it (as it is or edited), rejects it, or sends the task back to run again; and the review's
//! deadline, which decides for a person who did not decide in time.
//!
//! The deadline rule: a task whose spec has a review deadline ([`ReviewDeadline`]: an
//! `approval` task's `timeout`, another task's `review_timeout`) records in its `TaskInReview`
//! when the deadline decides (`until_ms`), and a timer names that instant. When it fires and
//! the task is still in that same review, the task's `on_timeout` decides: `approve` and
//! `reject` are the decisions a person could take, recorded with `decided_by: deadline`;
//! `escalate` records a `TaskEscalated` with a new deadline one `timeout` later, at most
//! [`ESCALATIONS_MAX`] times, after which the deadline rejects. A restart arms the deadline
//! again from the logged `until_ms` (or decides at once if it passed meanwhile), so a review
//! with a deadline always ends.

use std::time::Duration;

use humantime::format_duration;
use serde_json::Value;
use swarm_protocol::task::ESCALATIONS_MAX;
use swarm_protocol::{
    DecidedBy, Event, FailureKind, OnTimeout, ReviewDecision, SchedulerError, SchedulerMsg, TaskId,
    TaskKind, TaskStatus,
};

use super::failures::AttemptCost;
use super::state::SchedulerState;

impl SchedulerState {
    /// A person decides on a task in review.
    pub(crate) fn review(
        &mut self,
        id: TaskId,
        decision: ReviewDecision,
    ) -> Result<(), SchedulerError> {
        self.decide(id, decision, DecidedBy::Person)
    }

    /// Takes a decision on a task in review, by a person or by its deadline.
    fn decide(
        &mut self,
        id: TaskId,
        decision: ReviewDecision,
        decided_by: DecidedBy,
    ) -> Result<(), SchedulerError> {
        let node = self
            .graph
            .tasks
            .get_mut(id)
            .ok_or(SchedulerError::UnknownTask(id))?;
        if node.record.status != TaskStatus::Review {
            return Err(SchedulerError::NotInReview {
                task: id,
                status: format!("{:?}", node.record.status).to_lowercase(),
            });
        }
        let objective = node.objective;
        match decision {
            ReviewDecision::Approve { output } => {
                // An edited output must match the schema; approving the reviewed output as it
                // is overrides the schema (that is what review is for).
                if let Some(edited) = &output
                    && let Some(schema) = node.schema()
                {
                    schema
                        .check(edited)
                        .map_err(|errors| SchedulerError::InvalidOutput { task: id, errors })?;
                }
                let output = output
                    .or_else(|| node.record.output.clone())
                    .unwrap_or(Value::Null);
                let compensable = node.has_compensation();
                self.left_review();
                self.emit(Event::TaskApproved {
                    objective,
                    task: id,
                    output,
                    decided_by,
                });
                if compensable && let Some(run) = self.graph.objectives.get_mut(&objective) {
                    run.compensable.push(id);
                }
                self.stats.tasks_succeeded += 1;
                self.task_done(id);
            }
            ReviewDecision::Reject { reason } => {
                // A person said no to an approval: no planner is asked to get round that.
                let approval = node.record.kind == TaskKind::Approval;
                self.left_review();
                self.emit(Event::TaskRejected {
                    objective,
                    task: id,
                    reason: reason.clone(),
                    decided_by,
                });
                let message = if approval {
                    format!("not approved: {reason}")
                } else {
                    format!("rejected in review: {reason}")
                };
                self.fail_task_with(
                    id,
                    None,
                    FailureKind::Permanent,
                    message,
                    None,
                    AttemptCost::default(),
                    !approval,
                );
            }
            ReviewDecision::Retry => {
                self.left_review();
                self.mark_ready(objective, id);
            }
        }
        Ok(())
    }

    /// A decision took a task out of review.
    fn left_review(&mut self) {
        self.stats.tasks_in_review = self.stats.tasks_in_review.saturating_sub(1);
    }

    /// When a review that starts now ends by its deadline (ms since the Unix epoch), if the
    /// task has one. Arms the deadline's timer.
    pub(super) fn arm_review_deadline(&mut self, id: TaskId) -> Option<u64> {
        let deadline = self.graph.tasks.get(id)?.review_deadline()?;
        let until_ms = self.turn_ms.saturating_add(millis(deadline.after));
        self.arm_review_timer(id, until_ms, deadline.after);
        Some(until_ms)
    }

    fn arm_review_timer(&self, task: TaskId, until_ms: u64, after: Duration) {
        self.myself
            .send_after(after, move || SchedulerMsg::ReviewExpired {
                task,
                until_ms,
            });
    }

    /// A review's deadline passed: if the task is still in that review, its `on_timeout`
    /// decides (see the module docs).
    pub(crate) fn on_review_expired(&mut self, id: TaskId, until_ms: u64) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        if node.record.status != TaskStatus::Review || node.record.review_until_ms != Some(until_ms)
        {
            return;
        }
        let Some(deadline) = node.review_deadline() else {
            return;
        };
        let (objective, attempt, escalations) =
            (node.objective, node.record.attempt, node.record.escalations);
        let waited = format_duration(deadline.after);
        let decision = match deadline.then {
            OnTimeout::Approve => ReviewDecision::Approve { output: None },
            OnTimeout::Reject => ReviewDecision::Reject {
                reason: format!("no decision within {waited}"),
            },
            OnTimeout::Escalate if escalations < ESCALATIONS_MAX => {
                let until_ms = self.turn_ms.saturating_add(millis(deadline.after));
                self.emit(Event::TaskEscalated {
                    objective,
                    task: id,
                    attempt,
                    escalation: escalations + 1,
                    until_ms,
                });
                self.arm_review_timer(id, until_ms, deadline.after);
                return;
            }
            OnTimeout::Escalate => ReviewDecision::Reject {
                reason: format!("no decision within {waited} after {escalations} escalations"),
            },
        };
        // The task is in review (checked above), and a deadline's approval edits nothing, so
        // no decision here can be refused.
        let _ = self.decide(id, decision, DecidedBy::Deadline);
    }

    /// A recovered task that was in review: its deadline is armed again for the time left,
    /// or decides now if it passed while the coordinator was down.
    pub(super) fn restore_review(&mut self, id: TaskId, until_ms: Option<u64>, now: u64) {
        let Some(until_ms) = until_ms else {
            return;
        };
        if self
            .graph
            .tasks
            .get(id)
            .and_then(|n| n.review_deadline())
            .is_none()
        {
            return;
        }
        if until_ms <= now {
            self.on_review_expired(id, until_ms);
        } else {
            self.arm_review_timer(id, until_ms, Duration::from_millis(until_ms - now));
        }
    }
}

/// A duration in whole milliseconds, saturating (durations are at most a year).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
