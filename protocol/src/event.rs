//! Every state change of the swarm, as a value.
//!
//! The scheduler emits one [`Event`] per change, in the order the changes happen. The sequence
//! is the audit trail of an objective (its "chain of work") and, replayed in order, rebuilds the
//! scheduler's state: so each event carries what replay needs, and nothing is derived from
//! anything outside the log.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{AgentDescriptor, Health};
use crate::ids::{AgentId, ObjectiveId, TaskId};
use crate::objective::{BudgetLimit, Budgets, Objective};
use crate::outcome::{FailureKind, OutcomeSummary, Usage};
use crate::schedule::ScheduleSpec;
use crate::task::{OutputError, TaskSpec};
use crate::trace::TraceContext;

/// An event with its place in the log and the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// Who took a review's decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// A person, through the API (the default, left out of the JSON).
    #[default]
    Person,
    /// The review's deadline passed with no decision, and the task's `on_timeout` decided.
    Deadline,
}

impl DecidedBy {
    /// True for [`DecidedBy::Person`] (left out of the JSON).
    pub fn is_person(&self) -> bool {
        *self == Self::Person
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An objective was accepted. Its tasks got consecutive ids from `first_task`, in the order
    /// of `spec.tasks`; an objective without tasks is planned, and `first_task` is the id of
    /// its planning task (added by the `PlanRequested` that follows).
    ObjectiveSubmitted {
        /// The objective.
        objective: ObjectiveId,
        /// As submitted.
        spec: Objective,
        /// The id of `spec.tasks[0]` (or of the planning task).
        first_task: TaskId,
        /// The client's idempotency key, if it gave one: a later submit with the same key
        /// returns this objective.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// The caller's W3C trace context (`traceparent` on the submit): the objective's
        /// spans continue that trace, after a restart too.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceContext>,
    },
    /// A task's dependencies all succeeded; it waits for an agent.
    TaskReady {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
    },
    /// An attempt was given to an agent.
    TaskStarted {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt, from 1.
        attempt: u32,
        /// The agent running it.
        agent: AgentId,
        /// The input, when the scheduler built it for this attempt rather than taking it from
        /// the graph: a planning task's prompt, which lists the capabilities registered at the
        /// moment it starts. Absent for every other task (their input is in the graph).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
    },
    /// An attempt succeeded.
    TaskSucceeded {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// The agent that ran it.
        agent: AgentId,
        /// The output.
        output: Value,
        /// Tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// How long the attempt ran.
        #[serde(with = "humantime_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s 500ms"))]
        duration: Duration,
    },
    /// An attempt failed. `retry_in` says whether another attempt follows.
    TaskFailed {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// The agent that ran it, if it reached one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentId>,
        /// How it failed.
        kind: FailureKind,
        /// What went wrong.
        message: String,
        /// Output produced before the failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial_output: Option<Value>,
        /// Tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// How long the attempt ran, when it reached an agent.
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1s 500ms"))]
        duration: Option<Duration>,
        /// The delay before the next attempt; `None` when the task failed for good.
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1s 500ms"))]
        retry_in: Option<Duration>,
    },
    /// An attempt was lost without an outcome: its agent crashed or went away, or the
    /// coordinator stopped while it ran, or the agent declined it (it could not take work
    /// then: its breaker was open, its account out of quota). The task runs again with the
    /// next attempt; lost attempts do not use up its retry policy.
    AttemptLost {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt that was lost.
        attempt: u32,
        /// The agent that had it, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentId>,
        /// What happened.
        reason: String,
        /// True when the agent declined the attempt (nothing ran): such attempts count
        /// against the scheduler's `max_declined_attempts`, not `max_lost_attempts`.
        #[serde(default, skip_serializing_if = "is_false")]
        declined: bool,
    },
    /// A result came for an attempt that is not current (it timed out or was cancelled and
    /// its task moved on, it was run again after a lost lease or a coordinator restart, or its
    /// task ended or is not held any more): it was dropped, and changed nothing. The event
    /// keeps how the attempt ended in short, never its output.
    ResultFenced {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt the result is for.
        attempt: u32,
        /// The agent that sent it.
        agent: AgentId,
        /// How the attempt ended, as the result says.
        outcome: OutcomeSummary,
        /// Why it was not committed, from the scheduler's state when it arrived (e.g.
        /// `attempt 2 is not current: the task runs attempt 3`).
        reason: String,
    },
    /// A task's output awaits a person's decision.
    TaskInReview {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt whose output is reviewed.
        attempt: u32,
        /// The output in question, if the attempt produced any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// Why it needs review.
        reason: String,
        /// Where the output does not match the task's `output_schema`, when that is why.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<OutputError>,
        /// Tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// How long the attempt ran.
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1s 500ms"))]
        duration: Option<Duration>,
        /// When the task's review deadline decides, if it has one: ms since the Unix epoch.
        /// A restart arms the deadline again from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
    },
    /// A `wait` task started waiting for the event posted under `event` (its key, with
    /// `{objective}` replaced); it fails with a timeout at `until_ms` if none comes.
    TaskWaiting {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The event key it waits for.
        event: String,
        /// When it stops waiting, ms since the Unix epoch.
        until_ms: u64,
    },
    /// A `wait` task's event arrived (or was waiting for it): the task consumed it, and the
    /// payload is its output. (If the payload does not match the task's `output_schema`, a
    /// `TaskInReview` follows.)
    WaitSatisfied {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The event it consumed (its `EventReceived::id`).
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        event: uuid::Uuid,
        /// The event's key.
        key: String,
        /// The event's payload: the task's output.
        payload: Value,
    },
    /// A person approved a task in review; dependents use `output`.
    TaskApproved {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The output dependents receive (possibly edited).
        output: Value,
        /// Who decided: a person, or the review's deadline (`on_timeout: approve`).
        #[serde(default, skip_serializing_if = "DecidedBy::is_person")]
        decided_by: DecidedBy,
    },
    /// A person (or the review's deadline) rejected a task in review; it failed.
    TaskRejected {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
        /// Who decided: a person, or the review's deadline.
        #[serde(default, skip_serializing_if = "DecidedBy::is_person")]
        decided_by: DecidedBy,
    },
    /// Nobody decided on a task in review by its deadline, and its `on_timeout` is
    /// `escalate`: it stays in review, marked escalated, until a new deadline. The edge that
    /// follows the log notifies whoever is configured to hear of it.
    TaskEscalated {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
        /// The attempt under review.
        attempt: u32,
        /// How many times this review has been escalated, this one included (from 1).
        escalation: u32,
        /// When the new deadline decides, ms since the Unix epoch.
        until_ms: u64,
    },
    /// A task succeeded and added tasks to the graph, with consecutive ids from `first_task`.
    TasksSpawned {
        /// The objective.
        objective: ObjectiveId,
        /// The task that spawned them.
        parent: TaskId,
        /// The id of `tasks[0]`.
        first_task: TaskId,
        /// The new tasks; each depends on `parent` in addition to its own dependencies.
        tasks: Vec<TaskSpec>,
    },
    /// A planning task joined the graph: `plan` when an objective without tasks was accepted
    /// (right after its `ObjectiveSubmitted`), or `replan-N` after a task failed for good. Its
    /// input is built when it starts (`TaskStarted::input`); the tasks of the plan it returns
    /// join the graph as its `TasksSpawned`.
    PlanRequested {
        /// The objective.
        objective: ObjectiveId,
        /// The planning task's id.
        task: TaskId,
        /// The planning task (capability `plan`).
        spec: Box<TaskSpec>,
        /// 0 for the first plan, N for the N-th re-plan.
        replan: u32,
        /// The task whose failure asked for the re-plan.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<TaskId>,
    },
    /// A planning task's output was not a valid plan. With `repair`, the planner is asked once
    /// more, with `errors` and the rejected plan in its prompt; without, the task fails.
    PlanRejected {
        /// The objective.
        objective: ObjectiveId,
        /// The planning task.
        task: TaskId,
        /// The attempt whose plan was rejected.
        attempt: u32,
        /// The agent that produced it.
        agent: AgentId,
        /// The plan as the planner gave it.
        plan: Value,
        /// What is wrong with it, each naming the field or task at fault.
        errors: Vec<String>,
        /// True when a repair attempt follows.
        repair: bool,
        /// Tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// How long the attempt ran.
        #[serde(with = "humantime_serde")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s 500ms"))]
        duration: Duration,
    },
    /// The objective failed (`reason`) after some of its tasks with a compensation had
    /// succeeded: their compensations run now, one after another, in the order of
    /// `compensates` (newest success first). The compensation of `compensates[i]` is task
    /// `first_task + i`, built from that task's `TaskSpec::compensation`, and goes through the
    /// task events like any task. `ObjectiveFailed` follows once every compensation ended.
    CompensationStarted {
        /// The objective.
        objective: ObjectiveId,
        /// Why the objective failed.
        reason: String,
        /// The id of the first compensation task; the others follow consecutively.
        first_task: TaskId,
        /// The succeeded tasks to compensate, in the order their compensations run.
        compensates: Vec<TaskId>,
    },
    /// A task will not run.
    TaskCancelled {
        /// The objective.
        objective: ObjectiveId,
        /// The task.
        task: TaskId,
    },
    /// Every task of the objective succeeded.
    ObjectiveSucceeded {
        /// The objective.
        objective: ObjectiveId,
    },
    /// The objective failed.
    ObjectiveFailed {
        /// The objective.
        objective: ObjectiveId,
        /// Why, naming the task or limit at fault.
        reason: String,
    },
    /// A user cancelled the objective.
    ObjectiveCancelled {
        /// The objective.
        objective: ObjectiveId,
    },
    /// The objective passed a spending limit with `on_budget: approve`: it starts no new
    /// attempt until a person decides (`BudgetRaised`, or `ObjectiveFailed` naming the limit).
    BudgetReached {
        /// The objective.
        objective: ObjectiveId,
        /// The limit it passed.
        limit: BudgetLimit,
        /// What it spent against which budget, naming the limit.
        reason: String,
    },
    /// A person let an objective paused at a spending limit continue, with these budgets.
    BudgetRaised {
        /// The objective.
        objective: ObjectiveId,
        /// Its budgets from now on.
        budgets: Budgets,
        /// Who decided.
        decided_by: String,
    },
    /// An agent joined the registry.
    AgentRegistered {
        /// Its descriptor.
        descriptor: AgentDescriptor,
    },
    /// An agent's health changed.
    AgentHealthChanged {
        /// The agent.
        agent: AgentId,
        /// Its new health.
        health: Health,
        /// Why.
        reason: String,
    },
    /// An agent's actor failed and was started again by its supervisor.
    AgentRestarted {
        /// The agent.
        agent: AgentId,
        /// Restarts within the current window.
        restarts: u32,
        /// What the failure was.
        reason: String,
    },
    /// An agent left the registry.
    AgentDeregistered {
        /// The agent.
        agent: AgentId,
    },
    /// An agent was registered through the API (`POST /v1/agents`), so a restart registers it
    /// again from `config`, until it is undeclared. Recorded, after its `AgentRegistered`,
    /// each time it is registered: at a restart it gets a new id.
    AgentDeclared {
        /// The id it has now.
        agent: AgentId,
        /// Its name, unique among registered agents.
        name: String,
        /// The fields of its `swarm.toml` `[[agents]]` entry, as the coordinator reads them
        /// (this crate does not know the model agent's configuration). An API key is only
        /// named there (`api_key_env`), never stored.
        config: Value,
    },
    /// An agent registered through the API is forgotten: its removal was asked for, so a
    /// restart does not register it again (even if the coordinator stops before the agent
    /// finished draining).
    AgentUndeclared {
        /// The id it had.
        agent: AgentId,
        /// Its name.
        name: String,
    },
    /// An event was posted (`POST /v1/events`) under `key`. The first `wait` task waiting for
    /// that key consumes it (`WaitSatisfied`); until one does, it is kept, until `expires_at_ms`.
    EventReceived {
        /// Its id.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        id: uuid::Uuid,
        /// Its key.
        key: String,
        /// What it carries (a `wait` task's output).
        #[serde(default)]
        payload: Value,
        /// When it is dropped if no task consumed it, ms since the Unix epoch.
        expires_at_ms: u64,
        /// The sender's idempotency key: posting again with it returns this event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// A schedule was created (`POST /v1/schedules`), its cron expression and time zone
    /// already checked. It fires from the first slot after this event's time.
    ScheduleCreated {
        /// The schedule, named by `spec.name`.
        spec: Box<ScheduleSpec>,
    },
    /// A schedule stopped firing until it is resumed; the slots that pass meanwhile are not
    /// fired, nor caught up.
    SchedulePaused {
        /// Its name.
        schedule: String,
    },
    /// A paused schedule fires again, from the first slot after this event's time.
    ScheduleResumed {
        /// Its name.
        schedule: String,
    },
    /// A schedule was deleted; the objectives it submitted are not touched.
    ScheduleDeleted {
        /// Its name.
        schedule: String,
    },
    /// A schedule's slot came but was not fired: its overlap policy is `skip` and the previous
    /// fire's objective still ran, or it is `queue_one` and a later slot took the queued
    /// place.
    ScheduleSkipped {
        /// The schedule's name.
        schedule: String,
        /// The slot's time, ms since the Unix epoch.
        slot_ms: u64,
        /// Why.
        reason: String,
    },
    /// A schedule's slot could not submit its objective (e.g. no agent has a capability the
    /// template needs now); the slot is not tried again.
    ScheduleFireFailed {
        /// The schedule's name.
        schedule: String,
        /// The slot's time, ms since the Unix epoch.
        slot_ms: u64,
        /// What went wrong.
        reason: String,
    },
    /// A schedule fired for the slot at `slot_ms`: it submitted `objective` from its template
    /// under the idempotency key `schedule:<name>:<slot_ms>`, so the slot submits at most one
    /// objective even if the coordinator is killed while firing. Recorded after that
    /// objective's `ObjectiveSubmitted`.
    ScheduleFired {
        /// The schedule's name.
        schedule: String,
        /// The slot's time, ms since the Unix epoch.
        slot_ms: u64,
        /// The objective it submitted.
        objective: ObjectiveId,
    },
    /// A webhook was declared through the API (`POST /v1/hooks`), so a restart serves it
    /// again from `config`, until it is deleted. Its secret is read from the environment
    /// variable `config` names, at the declaration and at every start: it is never recorded.
    HookDeclared {
        /// Its name (the route's `{name}`).
        name: String,
        /// The fields of its `swarm.toml` `[[hooks]]` entry, as the coordinator reads them
        /// (`name`, `secret_env`, `template`, `tolerance`).
        config: Value,
    },
    /// A webhook declared through the API was deleted: deliveries to it are refused from now
    /// on; the objectives it submitted are not touched.
    HookDeleted {
        /// Its name.
        name: String,
    },
}

impl Event {
    /// The objective this event belongs to, if any (agent, schedule and hook events belong to
    /// none:
    /// a `ScheduleFired` names the objective it submitted, but that objective's history
    /// starts with its own `ObjectiveSubmitted`).
    pub fn objective(&self) -> Option<ObjectiveId> {
        match self {
            Self::ObjectiveSubmitted { objective, .. }
            | Self::TaskReady { objective, .. }
            | Self::TaskStarted { objective, .. }
            | Self::TaskSucceeded { objective, .. }
            | Self::TaskFailed { objective, .. }
            | Self::AttemptLost { objective, .. }
            | Self::ResultFenced { objective, .. }
            | Self::TaskInReview { objective, .. }
            | Self::TaskWaiting { objective, .. }
            | Self::WaitSatisfied { objective, .. }
            | Self::TaskApproved { objective, .. }
            | Self::TaskRejected { objective, .. }
            | Self::TaskEscalated { objective, .. }
            | Self::TasksSpawned { objective, .. }
            | Self::PlanRequested { objective, .. }
            | Self::PlanRejected { objective, .. }
            | Self::CompensationStarted { objective, .. }
            | Self::TaskCancelled { objective, .. }
            | Self::ObjectiveSucceeded { objective }
            | Self::ObjectiveFailed { objective, .. }
            | Self::ObjectiveCancelled { objective }
            | Self::BudgetReached { objective, .. }
            | Self::BudgetRaised { objective, .. } => Some(*objective),
            Self::AgentRegistered { .. }
            | Self::AgentHealthChanged { .. }
            | Self::AgentRestarted { .. }
            | Self::AgentDeregistered { .. }
            | Self::AgentDeclared { .. }
            | Self::AgentUndeclared { .. }
            | Self::EventReceived { .. }
            | Self::ScheduleCreated { .. }
            | Self::SchedulePaused { .. }
            | Self::ScheduleResumed { .. }
            | Self::ScheduleDeleted { .. }
            | Self::ScheduleSkipped { .. }
            | Self::ScheduleFireFailed { .. }
            | Self::ScheduleFired { .. }
            | Self::HookDeclared { .. }
            | Self::HookDeleted { .. } => None,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Event> {
        crate::samples::every_event_kind()
    }

    #[test]
    fn every_event_round_trips_through_json() {
        for (seq, event) in every_kind().into_iter().enumerate() {
            let record = EventRecord {
                seq: seq as u64 + 1,
                at_ms: 1_700_000_000_000,
                event,
            };
            let text = serde_json::to_string(&record).unwrap_or_default();
            let back: EventRecord =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(back, record);
        }
    }

    #[test]
    fn events_name_their_objective() {
        let events = every_kind();
        let with = events.iter().filter(|e| e.objective().is_some()).count();
        assert_eq!(with, 23);
    }
}
