//! What becomes of an attempt that ended: the agents' reports, taken in.
//!
//! A report counts only for the task's current attempt on the agent that ran it (a late result
//! never commits: it is recorded as fenced, see `fencing.rs`). Its tokens and cost are charged to the objective first, so a success that
//! takes the objective over its `token_budget` or `cost_budget` wakes no dependent. A success is checked against the
//! task's `output_schema` (output that does not match goes to review), may spawn follow-up
//! tasks (checked as a submitted graph is) and wakes the dependents; a planning task's answer
//! is a plan (see `plans.rs`); a failure goes to `failures.rs`.

use std::time::Duration;

use serde_json::Value;
use swarm_protocol::graph::{self, GraphError};
use swarm_protocol::{
    AgentId, Event, FailureKind, ObjectiveStatus, Report, SchedulerError, TaskId, TaskOutcome,
    TaskSpec, TaskStatus, Usage,
};

use super::checks;
use super::failures::AttemptCost;
use super::graph::{BatchExtras, ObjectiveTasks, TaskNode};
use super::schema::review_reason;
use super::spawn;
use super::state::SchedulerState;

/// A successful attempt's result, on its way into the graph.
pub(super) struct SuccessfulAttempt {
    pub(super) agent: AgentId,
    pub(super) output: Value,
    pub(super) usage: Option<Usage>,
    pub(super) duration: Duration,
}

impl SchedulerState {
    /// Attempts ended on an agent.
    pub(crate) fn on_reports(&mut self, agent: AgentId, reports: Vec<Report>) {
        for report in reports {
            self.on_report(agent, report);
        }
        self.pull_for(agent);
    }

    pub(super) fn on_report(&mut self, agent: AgentId, report: Report) {
        let Some(node) = self.graph.tasks.get(report.task) else {
            self.fence_report(agent, &report);
            return;
        };
        // A report for an attempt that is no longer current (cancelled, or taken back when its
        // agent crashed) changes nothing but the chain of work: a late result never commits
        // (see `fencing.rs`).
        if node.record.status != TaskStatus::Running
            || node.record.attempt != report.attempt
            || node.record.agent != Some(agent)
        {
            self.fence_report(agent, &report);
            return;
        }
        if let TaskOutcome::Failed {
            kind: FailureKind::Declined,
            message,
            ..
        } = &report.outcome
        {
            // Nothing ran: back to the queue, as an attempt the agent declined.
            let reason = format!("declined: {message}");
            self.requeue_declined(agent, report.task, &reason);
            return;
        }
        // The attempt's run time and tokens join the task's record with the event of its
        // outcome, whichever it turns out to be.
        let usage = report.outcome.usage();
        let planning = node.record.planning.is_some();
        // Read once here, so a task without extras costs no further lookup on this path.
        let (objective, capped) = (node.objective, node.capped);
        let compensation = node.record.compensates.is_some();
        let checked = node.extra.as_ref().is_some_and(|e| e.schema.is_some());
        // The attempt's tokens count before its outcome is applied, so a success that goes
        // over the budget wakes no dependent (`task_done`), or, when the objective pauses at
        // its budget instead, starts no attempt (see `budgets.rs`).
        let over_budget = usage
            .and_then(|usage| self.charge(objective, &usage))
            .and_then(|passed| self.budget_passed(objective, passed));
        self.release_slot(agent, report.task);
        if capped {
            self.dispatch
                .attempt_ended(&mut self.graph.tasks, objective);
        }
        let duration = report.duration;
        let spent = |usage| AttemptCost {
            usage,
            duration: Some(duration),
        };
        let answer = |output, usage| SuccessfulAttempt {
            agent,
            output,
            usage,
            duration,
        };
        match report.outcome {
            // A planning task's answer is a plan, whatever form it came in: text, JSON, the
            // text of a JSON answer that did not parse, or tasks spawned directly.
            TaskOutcome::Succeeded { output, usage } if planning => {
                self.plan_answered(report.task, answer(output, usage), None);
            }
            // A compensation's output is neither checked nor read for follow-ups: its objective
            // has failed.
            TaskOutcome::Succeeded { output, usage } if compensation => {
                self.succeed(report.task, agent, output, usage, report.duration);
            }
            TaskOutcome::Spawned { output, usage, .. } if compensation => {
                self.succeed(report.task, agent, output, usage, report.duration);
            }
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } if planning => {
                self.plan_answered(report.task, answer(output, usage), Some(tasks));
            }
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                partial_output,
                usage,
                ..
            } if planning => {
                let output = partial_output.unwrap_or(Value::Null);
                self.plan_answered(report.task, answer(output, usage), None);
            }
            TaskOutcome::Succeeded { output, usage } => match spawn::split(output) {
                Ok(spawn::Split {
                    output,
                    spawn: None,
                }) if checked => {
                    self.on_output(report.task, agent, output, usage, report.duration);
                }
                Ok(spawn::Split {
                    output,
                    spawn: None,
                }) => {
                    self.succeed(report.task, agent, output, usage, report.duration);
                }
                Ok(spawn::Split {
                    output,
                    spawn: Some(tasks),
                }) => {
                    self.spawn(report.task, answer(output, usage), tasks);
                }
                Err(spawn::Malformed { message, output }) => self.fail_task(
                    report.task,
                    Some(agent),
                    FailureKind::Permanent,
                    message,
                    Some(output),
                    spent(usage),
                ),
            },
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } => self.spawn(report.task, answer(output, usage), tasks),
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                message,
                partial_output,
                usage,
                ..
            } => {
                let spent = AttemptCost {
                    usage,
                    duration: Some(report.duration),
                };
                if compensation {
                    // Nobody reviews a failed objective's compensations: it failed.
                    self.fail_task(
                        report.task,
                        Some(agent),
                        FailureKind::InvalidOutput,
                        message,
                        partial_output,
                        spent,
                    );
                } else {
                    self.send_to_review(
                        report.task,
                        partial_output,
                        message,
                        Vec::new(),
                        spent,
                        false,
                    );
                }
            }
            TaskOutcome::Failed {
                kind,
                message,
                partial_output,
                retry_after,
                usage,
            } => {
                let retry_after = retry_after.unwrap_or(Duration::ZERO);
                let spent = AttemptCost {
                    usage,
                    duration: Some(report.duration),
                };
                self.attempt_failed(
                    report.task,
                    Some(agent),
                    kind,
                    message,
                    partial_output,
                    retry_after,
                    spent,
                );
            }
        }
        if let Some(reason) = over_budget {
            self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
        }
    }

    /// A successful attempt's output: checked against the task's `output_schema`; output
    /// that does not match goes to review with the errors, the rest succeeds.
    pub(super) fn on_output(
        &mut self,
        id: TaskId,
        agent: AgentId,
        output: Value,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        let checked = match self.graph.tasks.get(id).and_then(TaskNode::schema) {
            Some(schema) => schema.check(&output),
            None => Ok(()),
        };
        match checked {
            Ok(()) => self.succeed(id, agent, output, usage, duration),
            Err(errors) => {
                let spent = AttemptCost {
                    usage,
                    duration: Some(duration),
                };
                let reason = review_reason(&errors);
                self.send_to_review(id, Some(output), reason, errors, spent, false);
            }
        }
    }

    pub(super) fn succeed(
        &mut self,
        id: TaskId,
        agent: AgentId,
        output: Value,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        let Some(node) = self.graph.tasks.get_mut(id) else {
            return;
        };
        let (objective, attempt) = (node.objective, node.record.attempt);
        // The fold's step for the event recorded next (see `TaskRecord::apply`).
        node.record.succeeded(&output, usage, duration);
        let compensable = node.has_compensation();
        self.journal.record(Event::TaskSucceeded {
            objective,
            task: id,
            attempt,
            agent,
            output,
            usage,
            duration,
        });
        if compensable && let Some(run) = self.graph.objectives.get_mut(&objective) {
            run.compensable.push(id);
        }
        self.stats.tasks_succeeded += 1;
        self.task_done(id);
    }

    /// A task reached a terminal success: wake its dependents and maybe end the objective
    /// (unless the objective went over its token budget: it is about to fail). A finished
    /// compensation lets the next one start.
    pub(super) fn task_done(&mut self, id: TaskId) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let objective = node.objective;
        if node.record.compensates.is_some() {
            self.next_compensation(objective);
            return;
        }
        let dependents = node.dependents.clone();
        let (halted, done) = match self.graph.objectives.get_mut(&objective) {
            Some(run) => {
                run.unfinished = run.unfinished.saturating_sub(1);
                // Over a budget that fails it: it is about to fail. (One that pauses it lets
                // dependents become ready; they wait, parked, for the decision.)
                let failing = run.fails_over_budget() && run.over_budget().is_some();
                let halted = run.status != ObjectiveStatus::Running || failing;
                (halted, !halted && run.unfinished == 0)
            }
            None => (true, false),
        };
        if done {
            // Every task finished: no dependent is waiting.
            self.end_objective(objective, ObjectiveStatus::Succeeded, None);
            return;
        }
        if halted {
            return;
        }
        for dep in dependents {
            let ready = match self.graph.tasks.get_mut(dep) {
                Some(d) if d.record.status == TaskStatus::Backlog => {
                    d.waiting_on = d.waiting_on.saturating_sub(1);
                    d.waiting_on == 0
                }
                _ => false,
            };
            if ready {
                self.make_ready(dep);
            }
        }
    }

    /// A task succeeded and asks for follow-up tasks: they are checked as a submitted graph
    /// is, then join the graph; if refused, the task fails (a breached limit fails the
    /// objective outright: re-planning would only grow it again).
    pub(super) fn spawn(&mut self, id: TaskId, answer: SuccessfulAttempt, specs: Vec<TaskSpec>) {
        let Some(objective) = self.graph.tasks.get(id).map(|n| n.objective) else {
            return;
        };
        let with_parent = self.graph.with_parent(id, &specs);
        let checked = {
            let Some(run) = self.graph.objectives.get(&objective) else {
                return;
            };
            let existing = ObjectiveTasks {
                run,
                tasks: &self.graph.tasks,
            };
            graph::validate(&with_parent, &existing, &run.limits)
                .map_err(SchedulerError::from)
                .and_then(|depths| {
                    checks::check_tasks(&self.registry, &with_parent).map(|extras| (depths, extras))
                })
        };
        match checked {
            Ok((depths, extras)) => self.grow(id, answer, specs, &with_parent, &depths, extras),
            Err(err) => {
                let limit = matches!(
                    err,
                    SchedulerError::Graph(
                        GraphError::TooManyTasks { .. }
                            | GraphError::TooDeep { .. }
                            | GraphError::TooWide { .. }
                    )
                );
                let message = format!("spawned tasks refused: {err}");
                let spent = AttemptCost {
                    usage: answer.usage,
                    duration: Some(answer.duration),
                };
                self.fail_task_with(
                    id,
                    Some(answer.agent),
                    FailureKind::Permanent,
                    message,
                    Some(answer.output),
                    spent,
                    !limit,
                );
            }
        }
    }

    /// Adds checked tasks (`specs` as declared, `with_parent` as validated, at `depths`) as
    /// children of `parent`, which succeeds with its answer; those with nothing left to wait
    /// for become ready.
    pub(super) fn grow(
        &mut self,
        parent: TaskId,
        answer: SuccessfulAttempt,
        specs: Vec<TaskSpec>,
        with_parent: &[TaskSpec],
        depths: &[u32],
        extras: BatchExtras,
    ) {
        let Some(objective) = self.graph.tasks.get(parent).map(|n| n.objective) else {
            return;
        };
        let Some(mut run) = self.graph.objectives.remove(&objective) else {
            return;
        };
        let first = TaskId(self.graph.next_task);
        let new_ids = self.graph.add_tasks(
            objective,
            &mut run,
            with_parent,
            depths,
            Some(parent),
            extras,
        );
        self.graph.objectives.insert(objective, run);
        if !specs.is_empty() {
            self.emit(Event::TasksSpawned {
                objective,
                parent,
                first_task: first,
                tasks: specs,
            });
        }
        self.succeed(
            parent,
            answer.agent,
            answer.output,
            answer.usage,
            answer.duration,
        );
        // Follow-ups that depend only on the parent became ready in `succeed`; any whose
        // other dependencies had already succeeded are ready too.
        for t in new_ids {
            if self
                .graph
                .tasks
                .get(t)
                .is_some_and(|n| n.record.status == TaskStatus::Backlog && n.waiting_on == 0)
            {
                self.make_ready(t);
            }
        }
    }
}
