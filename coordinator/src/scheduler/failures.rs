//! Failed attempts and tasks: retries, fail-over, review, and failing for good.
//!
//! An attempt that fails with a retryable error runs again after a jittered backoff, while the
//! task's retry policy has attempts left, on another agent of the capability when one has room
//! then (the failing agent gets it back only when no other can take it); a permanent failure
//! fails over to another agent of the capability if one can take work now, and never returns
//! to the agent that refused it. Attempts lost to crashing agents, or declined by agents that
//! cannot take work now, are not the task's failures and do not use up its policy, but past
//! `max_lost_attempts` losses (or `max_declined_attempts` declines) the task fails. A declined
//! task goes back to the queue at once, to another agent of the capability first: the
//! declining agent reported itself down before it declined (see `FailureKind::Declined`). A task that fails for good is re-planned if its objective allows it, and otherwise
//! fails its objective.

use std::time::{Duration, Instant};

use serde_json::Value;
use swarm_protocol::{
    AgentId, Event, FailureKind, ObjectiveId, ObjectiveStatus, OutputError, RetryPolicy,
    SchedulerMsg, TaskId, TaskKey, TaskStatus, Usage,
};

use super::state::SchedulerState;

/// What an attempt cost, carried into its event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AttemptCost {
    pub(super) usage: Option<Usage>,
    pub(super) duration: Option<Duration>,
}

impl SchedulerState {
    /// The task waits for a person (until its review deadline, if it has one); `errors` says
    /// where its output does not match its schema, when that is why.
    /// `approval` says the review is an approval's request, which is its next attempt.
    pub(super) fn send_to_review(
        &mut self,
        id: TaskId,
        output: Option<Value>,
        reason: String,
        errors: Vec<OutputError>,
        spent: AttemptCost,
        approval: bool,
    ) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let (objective, attempt) = (node.objective, node.record.attempt + u32::from(approval));
        self.stats.tasks_in_review += 1;
        let until_ms = self.arm_review_deadline(id);
        self.emit(Event::TaskInReview {
            objective,
            task: id,
            attempt,
            output,
            reason,
            errors,
            usage: spent.usage,
            duration: spent.duration,
            until_ms,
        });
    }

    /// An attempt failed: retry it after a backoff, or fail the task for good.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one field of the failure's event"
    )]
    pub(super) fn attempt_failed(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        retry_after: Duration,
        spent: AttemptCost,
    ) {
        self.stats.attempts_failed += 1;
        let Some(node) = self.graph.tasks.get_mut(id) else {
            return;
        };
        // Attempts lost to crashing agents are not the task's failures, nor are a planner's
        // repair attempts: they do not count here.
        let repairs = node.record.planning.as_ref().map_or(0, |p| p.rejections);
        let failed_attempts = node
            .record
            .attempt
            .saturating_sub(node.record.lost)
            .saturating_sub(node.record.declined)
            .saturating_sub(repairs);
        let budget_left = failed_attempts
            < node
                .retry
                .max_attempts
                .min(RetryPolicy::MAX_ATTEMPTS_CEILING);
        // A permanent failure is permanent on that agent (a rejected key, an unknown model, a
        // request that model refuses): the task fails over to another agent with the
        // capability if one can take work now, and fails otherwise.
        let fail_over = kind == FailureKind::Permanent
            && agent.is_some_and(|a| {
                self.registry
                    .has_other_available(&node.record.capability, a)
            });
        let retry = (kind.is_retryable() || fail_over) && budget_left;
        if !retry {
            self.fail_task(id, agent, kind, message, partial, spent);
            return;
        }
        let delay = if fail_over {
            node.avoid = agent;
            Duration::ZERO
        } else {
            // A retryable failure says something about that agent (its quota, its server, its
            // path): the retry goes to another agent of the capability if one has room then.
            // The server's `Retry-After` is that agent's to keep, and its limiter keeps it if
            // the retry comes back to it, so it does not hold the retry back while another
            // agent could take it.
            node.prefer_not = agent;
            let elsewhere = agent.is_some_and(|a| {
                node.avoid.is_none()
                    && self
                        .registry
                        .has_other_available(&node.record.capability, a)
            });
            let ceiling = node.retry.backoff_ceiling(node.record.attempt + 1);
            let jitter = Duration::from_nanos(
                self.rng
                    .u64(0..=u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX)),
            );
            if elsewhere {
                jitter
            } else {
                jitter.max(retry_after)
            }
        };
        node.retry_due = true;
        let (objective, attempt) = (node.objective, node.record.attempt);
        self.emit(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message,
            partial_output: partial,
            usage: spent.usage,
            duration: spent.duration,
            retry_in: Some(delay),
        });
        // The timer's message carries the attempt it is for, so a stale timer does nothing.
        self.myself
            .send_after(delay, move || SchedulerMsg::RetryDue { task: id, attempt });
    }

    /// A retry backoff passed.
    pub(crate) fn on_retry_due(&mut self, id: TaskId, attempt: u32) {
        let due = self.graph.tasks.get_mut(id).is_some_and(|n| {
            let due =
                n.retry_due && n.record.attempt == attempt && n.record.status == TaskStatus::Ready;
            if due {
                n.retry_due = false;
                n.ready_at = Instant::now();
            }
            due
        });
        if due {
            self.enqueue_or_dispatch(id);
        }
    }

    /// A task failed for good: the planner is asked to re-plan if the objective allows it,
    /// else its objective fails and the rest of it is cancelled (a failed compensation is
    /// recorded, and the next compensation runs).
    pub(super) fn fail_task(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        spent: AttemptCost,
    ) {
        self.fail_task_with(id, agent, kind, message, partial, spent, true);
    }

    /// [`Self::fail_task`], re-planning only when `may_replan`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one field of the failure's event, plus whether to re-plan"
    )]
    pub(super) fn fail_task_with(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        spent: AttemptCost,
        may_replan: bool,
    ) {
        let Some((objective, key)) = self.record_failure(id, agent, kind, &message, partial, spent)
        else {
            return;
        };
        if self
            .graph
            .tasks
            .get(id)
            .is_some_and(|n| n.record.compensates.is_some())
        {
            self.next_compensation(objective);
            return;
        }
        if let Some(run) = self.graph.objectives.get_mut(&objective) {
            run.unfinished = run.unfinished.saturating_sub(1);
        }
        if may_replan && self.replan(objective, id) {
            return;
        }
        let reason = format!("task `{key}` ({id}) failed: {message}");
        self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
    }

    /// Marks a task failed for good and records it; returns its objective and name.
    pub(super) fn record_failure(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: &str,
        partial: Option<Value>,
        spent: AttemptCost,
    ) -> Option<(ObjectiveId, TaskKey)> {
        let node = self.graph.tasks.get_mut(id)?;
        node.retry_due = false;
        self.stats.tasks_failed += 1;
        let (objective, attempt, key) =
            (node.objective, node.record.attempt, node.record.key.clone());
        self.emit(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message: message.to_owned(),
            partial_output: partial,
            usage: spent.usage,
            duration: spent.duration,
            retry_in: None,
        });
        Some((objective, key))
    }

    /// Takes back an attempt that its agent lost (crash, or gone before it got the work).
    pub(super) fn requeue_lost(&mut self, agent: AgentId, id: TaskId, reason: &str) {
        self.requeue(agent, id, reason, false);
    }

    /// An attempt `agent` declined: nothing ran, so the task goes back to the queue, another
    /// agent of the capability first; past `max_declined_attempts` declines it fails.
    pub(super) fn requeue_declined(&mut self, agent: AgentId, id: TaskId, reason: &str) {
        if let Some(node) = self.graph.tasks.get_mut(id)
            && node.avoid.is_none()
        {
            node.prefer_not = Some(agent);
        }
        self.requeue(agent, id, reason, true);
    }

    fn requeue(&mut self, agent: AgentId, id: TaskId, reason: &str, declined: bool) {
        let Some(node) = self.graph.tasks.get_mut(id) else {
            return;
        };
        if node.record.status != TaskStatus::Running || node.record.agent != Some(agent) {
            return;
        }
        // Counted in the record by its `AttemptLost`; past the limit the task fails.
        let (objective, attempt) = (node.objective, node.record.attempt);
        let (count, limit) = if declined {
            (node.record.declined + 1, self.config.max_declined_attempts)
        } else {
            (node.record.lost + 1, self.config.max_lost_attempts)
        };
        self.release(agent, id);
        let message = format!("agent {agent} lost the attempt: {reason}");
        if count > limit {
            let how = if declined {
                "declined"
            } else {
                "lost, to crashing or gone agents,"
            };
            let message = format!("{message} (the task's attempts were {how} {count} times)");
            self.fail_task(
                id,
                Some(agent),
                FailureKind::Transient,
                message,
                None,
                AttemptCost::default(),
            );
            return;
        }
        self.emit(Event::AttemptLost {
            objective,
            task: id,
            attempt,
            agent: Some(agent),
            reason: message,
            declined,
        });
        if let Some(node) = self.graph.tasks.get_mut(id) {
            node.ready_at = Instant::now();
        }
        self.stats.attempts_failed += 1;
        self.enqueue_or_dispatch(id);
    }
}
