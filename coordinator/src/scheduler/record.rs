//! One task's record: what is known and shown of a task, folded from the task's events.
//!
//! The live scheduler and the replay of the log hold the same [`TaskRecord`] and change it by
//! the same fold, [`TaskRecord::apply`]: the scheduler folds every event about a task into
//! the task's record as it hands the event to the journal, and the replay folds the events it
//! reads. Views are built from the record alone ([`TaskRecord::view`], [`objective_view`]),
//! so a replayed view equals the live one by construction. When and which events the
//! scheduler records is the scheduler's business; what each event does to a task is decided
//! here, once.
//!
//! A record also carries what only a restart needs (`retry_at_ms`, `lost`, a planning task's
//! rejected plans), since the replay hands the restarting scheduler exactly these records.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarm_protocol::{
    AgentId, BudgetPause, Capability, Event, ObjectiveId, ObjectiveStatus, ObjectiveView,
    OutputError, TaskId, TaskKey, TaskKind, TaskSpec, TaskStatus, TaskView, Usage,
};

/// One task as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub key: TaskKey,
    /// What it needs.
    pub capability: Capability,
    /// Its status.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempt: u32,
    /// Attempts lost to crashes (agents or the coordinator).
    pub lost: u32,
    /// Attempts their agents declined (nothing ran; see `FailureKind::Declined`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub declined: u32,
    /// The agent of the latest attempt.
    pub agent: Option<AgentId>,
    /// Its output (succeeded or in review).
    pub output: Option<Value>,
    /// The latest failure message.
    pub error: Option<String>,
    /// Output kept from a failed attempt.
    pub partial: Option<Value>,
    /// Tokens over all attempts.
    pub usage: Usage,
    /// What its attempts charged a `cost_budget` (the sum of [`Usage::budget_cost`]): the cost
    /// of those that had a price, in micro-dollars, known even when `usage`'s cost is not.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub budget_cost_usd_micros: u64,
    /// Run time over all attempts.
    pub run_time: Duration,
    /// The task that spawned it.
    pub spawned_by: Option<TaskId>,
    /// When a pending retry is due (ms since the Unix epoch).
    pub retry_at_ms: Option<u64>,
    /// For a compensation: the task it compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<TaskId>,
    /// While in review for not matching its schema: where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review_errors: Vec<OutputError>,
    /// While an attempt runs (or a `wait` task waits): when it started (ms since the Unix
    /// epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Set on planning tasks (`plan`, `replan-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning: Option<Box<Planning>>,
    /// Who runs it.
    #[serde(default, skip_serializing_if = "TaskKind::is_agent")]
    pub kind: TaskKind,
    /// For a `wait` task: the key of the event it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// While a `wait` task waits: when it stops waiting (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until_ms: Option<u64>,
    /// While in review with a deadline: when the deadline decides (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_until_ms: Option<u64>,
    /// How many times its latest review was escalated by its deadline.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalations: u32,
    /// The tasks it waits for, as [`link`] resolved them when it joined the graph (a
    /// compensation: the task it undoes). Empty in a snapshot written before records kept
    /// them; a restart links the graph again from the batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<TaskId>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_zero_u64(value: &u64) -> bool {
    *value == 0
}

/// What a planning task carries beyond a task's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Planning {
    /// 0 for `plan`, N for `replan-N`.
    pub replan: u32,
    /// The task whose failure asked for the re-plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<TaskId>,
    /// Plans rejected so far; only the first is sent back for repair.
    #[serde(default)]
    pub rejections: u32,
    /// The latest rejected plan and why (its repair prompt quotes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedPlan>,
}

/// A plan the scheduler refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedPlan {
    /// As the planner gave it.
    pub plan: Value,
    /// What was wrong with it.
    pub errors: Vec<String>,
}

/// A task's dependencies by id, as the graph links them: each name of `depends_on` that
/// `id_of` knows (names of the task's own batch included), then `parent` unless named already
/// (follow-ups and a plan's tasks run after the task that produced them).
pub(crate) fn link(
    depends_on: &[TaskKey],
    parent: Option<TaskId>,
    id_of: impl Fn(&TaskKey) -> Option<TaskId>,
) -> Vec<TaskId> {
    let mut deps: Vec<TaskId> = depends_on.iter().filter_map(id_of).collect();
    if let Some(p) = parent
        && !deps.contains(&p)
    {
        deps.push(p);
    }
    deps
}

/// The task an event is about, for the events [`TaskRecord::apply`] folds.
pub(crate) fn task_of(event: &Event) -> Option<TaskId> {
    match event {
        Event::TaskReady { task, .. }
        | Event::TaskStarted { task, .. }
        | Event::TaskSucceeded { task, .. }
        | Event::TaskFailed { task, .. }
        | Event::AttemptLost { task, .. }
        | Event::TaskInReview { task, .. }
        | Event::TaskWaiting { task, .. }
        | Event::WaitSatisfied { task, .. }
        | Event::TaskApproved { task, .. }
        | Event::TaskEscalated { task, .. }
        | Event::TaskCancelled { task, .. }
        | Event::PlanRequested { task, .. }
        | Event::PlanRejected { task, .. } => Some(*task),
        _ => None,
    }
}

impl TaskRecord {
    /// A task of a batch as declared (submitted, spawned, or a planning task), linked to
    /// `deps`: nothing has run yet. (Always inlined: built straight into the graph's node,
    /// it is not copied there.)
    #[inline(always)]
    pub(crate) fn declared(
        id: TaskId,
        spec: &TaskSpec,
        objective: ObjectiveId,
        spawned_by: Option<TaskId>,
        deps: Vec<TaskId>,
    ) -> Self {
        let event = match spec.kind {
            TaskKind::Wait => spec.event_key(objective),
            _ => None,
        };
        Self {
            id,
            key: spec.id.clone(),
            capability: spec.capability.clone(),
            status: TaskStatus::Backlog,
            attempt: 0,
            lost: 0,
            declined: 0,
            agent: None,
            output: None,
            error: None,
            partial: None,
            usage: Usage::default(),
            budget_cost_usd_micros: 0,
            run_time: Duration::ZERO,
            spawned_by,
            retry_at_ms: None,
            compensates: None,
            review_errors: Vec::new(),
            started_at_ms: None,
            planning: None,
            kind: spec.kind,
            event,
            wait_until_ms: None,
            review_until_ms: None,
            escalations: 0,
            deps,
        }
    }

    /// The compensation of `original`: it carries the compensated task's name, runs on an
    /// agent of `capability`, and takes its input from `original`'s output.
    pub(crate) fn compensation(
        id: TaskId,
        key: TaskKey,
        capability: Capability,
        original: TaskId,
    ) -> Self {
        Self {
            id,
            key,
            capability,
            status: TaskStatus::Backlog,
            attempt: 0,
            lost: 0,
            declined: 0,
            agent: None,
            output: None,
            error: None,
            partial: None,
            usage: Usage::default(),
            budget_cost_usd_micros: 0,
            run_time: Duration::ZERO,
            spawned_by: None,
            retry_at_ms: None,
            compensates: Some(original),
            review_errors: Vec::new(),
            started_at_ms: None,
            planning: None,
            kind: TaskKind::Agent,
            event: None,
            wait_until_ms: None,
            review_until_ms: None,
            escalations: 0,
            deps: vec![original],
        }
    }

    /// Folds in one event about this task, recorded at `at_ms`; events about other things
    /// change nothing. Each event kind has its step below; the scheduler's hot path (a task
    /// made ready, started, succeeded) calls the step itself with the values it puts in the
    /// event, which it then builds in place, so no event is moved twice.
    pub fn apply(&mut self, event: &Event, at_ms: u64) {
        match event {
            Event::TaskReady { .. } => self.ready(),
            Event::TaskStarted { attempt, agent, .. } => self.started(*attempt, *agent, at_ms),
            Event::TaskSucceeded {
                output,
                usage,
                duration,
                ..
            } => self.succeeded(output, *usage, *duration),
            Event::TaskFailed {
                message,
                partial_output,
                usage,
                duration,
                retry_in,
                ..
            } => {
                let retry_at_ms = retry_in.map(|delay| {
                    at_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
                });
                self.failed(message, partial_output, *usage, *duration, retry_at_ms);
            }
            Event::AttemptLost {
                reason, declined, ..
            } => self.lost(reason, *declined),
            Event::TaskInReview {
                attempt,
                output,
                reason,
                errors,
                usage,
                duration,
                until_ms,
                ..
            } => {
                self.in_review(*attempt, output, reason, errors, *usage, *duration);
                self.review_until_ms = *until_ms;
            }
            Event::TaskEscalated {
                escalation,
                until_ms,
                ..
            } => self.escalated(*escalation, *until_ms),
            Event::TaskWaiting {
                event, until_ms, ..
            } => self.waiting(event, *until_ms, at_ms),
            Event::WaitSatisfied { payload, .. } => self.satisfied(payload),
            Event::TaskApproved { output, .. } => self.approved(output),
            Event::TaskCancelled { .. } => self.cancelled(),
            Event::PlanRequested { replan, failed, .. } => self.plan_requested(*replan, *failed),
            Event::PlanRejected {
                plan,
                errors,
                repair,
                usage,
                duration,
                ..
            } => self.plan_rejected(plan, errors, *repair, *usage, *duration),
            _ => {}
        }
    }

    /// `TaskReady`: its dependencies succeeded (or it is retried, or sent back by a review).
    #[inline]
    pub(crate) fn ready(&mut self) {
        self.status = TaskStatus::Ready;
        self.retry_at_ms = None;
        self.review_errors.clear();
        self.review_until_ms = None;
    }

    /// `TaskStarted`: attempt `attempt` runs on `agent` from `at_ms`.
    #[inline]
    pub(crate) fn started(&mut self, attempt: u32, agent: AgentId, at_ms: u64) {
        self.status = TaskStatus::Running;
        self.attempt = attempt;
        self.agent = Some(agent);
        self.retry_at_ms = None;
        self.started_at_ms = Some(at_ms);
    }

    /// `TaskSucceeded`: the attempt's output, and what it cost.
    #[inline]
    pub(crate) fn succeeded(&mut self, output: &Value, usage: Option<Usage>, duration: Duration) {
        self.started_at_ms = None;
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(output.clone());
        self.spend(usage);
        self.run_time += duration;
    }

    /// `TaskFailed`: retried at `retry_at_ms` if set, else failed for good.
    fn failed(
        &mut self,
        message: &str,
        partial: &Option<Value>,
        usage: Option<Usage>,
        duration: Option<Duration>,
        retry_at_ms: Option<u64>,
    ) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        self.review_until_ms = None;
        self.spend(usage);
        self.run_time += duration.unwrap_or_default();
        self.error = Some(message.to_owned());
        self.review_errors.clear();
        if partial.is_some() {
            self.partial.clone_from(partial);
        }
        self.status = match retry_at_ms {
            Some(_) => TaskStatus::Ready,
            None => TaskStatus::Failed,
        };
        self.retry_at_ms = retry_at_ms;
    }

    /// An attempt's usage joins the task's.
    fn spend(&mut self, usage: Option<Usage>) {
        if let Some(usage) = usage {
            self.usage.add(&usage);
            self.budget_cost_usd_micros = self
                .budget_cost_usd_micros
                .saturating_add(usage.budget_cost());
        }
    }

    /// `AttemptLost`: its agent (or the coordinator) went away while it ran, or its agent
    /// declined it; it runs again.
    fn lost(&mut self, reason: &str, declined: bool) {
        self.started_at_ms = None;
        self.status = TaskStatus::Ready;
        if declined {
            self.declined += 1;
        } else {
            self.lost += 1;
        }
        self.error = Some(reason.to_owned());
        self.retry_at_ms = None;
    }

    /// `TaskInReview`: it waits for a person, with `output` to decide on.
    fn in_review(
        &mut self,
        attempt: u32,
        output: &Option<Value>,
        reason: &str,
        errors: &[OutputError],
        usage: Option<Usage>,
        duration: Option<Duration>,
    ) {
        // An approval's request is its attempt (no `TaskStarted` precedes it).
        self.attempt = self.attempt.max(attempt);
        self.started_at_ms = None;
        self.status = TaskStatus::Review;
        self.output.clone_from(output);
        self.error = Some(reason.to_owned());
        self.review_errors = errors.to_vec();
        self.escalations = 0;
        self.spend(usage);
        self.run_time += duration.unwrap_or_default();
    }

    /// `TaskEscalated`: nobody decided by the deadline; the review goes on until `until_ms`.
    fn escalated(&mut self, escalation: u32, until_ms: u64) {
        self.escalations = escalation;
        self.review_until_ms = Some(until_ms);
    }

    /// `TaskWaiting`: a `wait` task waits for `event` until `until_ms`.
    fn waiting(&mut self, event: &str, until_ms: u64, at_ms: u64) {
        // Each wait is an attempt: a wait sent back by a review waits again as the next one,
        // so a timer of the earlier wait is recognised as stale.
        self.status = TaskStatus::Waiting;
        self.attempt += 1;
        if self.event.as_deref() != Some(event) {
            self.event = Some(event.to_owned());
        }
        self.wait_until_ms = Some(until_ms);
        self.started_at_ms = Some(at_ms);
    }

    /// `WaitSatisfied`: the event's payload is its output.
    fn satisfied(&mut self, payload: &Value) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(payload.clone());
    }

    /// `TaskApproved`: a person approved it, with this output.
    fn approved(&mut self, output: &Value) {
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(output.clone());
        self.review_errors.clear();
        self.review_until_ms = None;
    }

    /// `TaskCancelled`.
    fn cancelled(&mut self) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        self.review_until_ms = None;
        self.status = TaskStatus::Cancelled;
        self.review_errors.clear();
    }

    /// `PlanRequested`: it is the planning task `plan` (`replan` 0) or `replan-N`.
    fn plan_requested(&mut self, replan: u32, failed: Option<TaskId>) {
        self.planning = Some(Box::new(Planning {
            replan,
            failed,
            ..Planning::default()
        }));
    }

    /// `PlanRejected`: its plan did not pass the checks; `repair` runs it again at once.
    fn plan_rejected(
        &mut self,
        plan: &Value,
        errors: &[String],
        repair: bool,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        self.started_at_ms = None;
        self.spend(usage);
        self.run_time += duration;
        self.error = Some(format!("plan rejected: {}", errors.join("; ")));
        self.partial = Some(plan.clone());
        if repair {
            self.status = TaskStatus::Ready;
            self.retry_at_ms = None;
        }
        let planning = self.planning.get_or_insert_default();
        planning.rejections += 1;
        planning.rejected = Some(RejectedPlan {
            plan: plan.clone(),
            errors: errors.to_vec(),
        });
    }

    /// The task as the scheduler shows it.
    pub fn view(&self) -> TaskView {
        TaskView {
            id: self.id,
            key: self.key.clone(),
            capability: self.capability.clone(),
            kind: self.kind,
            event: self.event.clone(),
            waiting_until_ms: self
                .wait_until_ms
                .filter(|_| self.status == TaskStatus::Waiting),
            status: self.status,
            attempts: self.attempt,
            agent: self.agent,
            output: self.output.clone(),
            error: self.error.clone(),
            partial_output: self.partial.clone(),
            spawned_by: self.spawned_by,
            compensates: self.compensates,
            depends_on: self.deps.clone(),
            running_since_ms: self
                .started_at_ms
                .filter(|_| self.status == TaskStatus::Running),
            review_errors: self.review_errors.clone(),
            review_until_ms: self
                .review_until_ms
                .filter(|_| self.status == TaskStatus::Review),
            escalations: self.escalations,
            usage: self.usage.shown(),
            run_time: self.run_time,
        }
    }
}

/// An objective as the scheduler shows it: its own fields and its tasks' records, in order.
pub fn objective_view<'a>(
    id: ObjectiveId,
    goal: &str,
    status: ObjectiveStatus,
    failure: Option<&str>,
    budget_pause: Option<&BudgetPause>,
    tasks: impl IntoIterator<Item = &'a TaskRecord>,
) -> ObjectiveView {
    let tasks: Vec<TaskView> = tasks.into_iter().map(TaskRecord::view).collect();
    let mut usage = Usage::default();
    for task in &tasks {
        usage.add(&task.usage);
    }
    ObjectiveView {
        id,
        goal: goal.to_owned(),
        status,
        failure: failure.map(str::to_owned),
        tasks,
        usage: usage.shown(),
        budget_pause: budget_pause.cloned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
