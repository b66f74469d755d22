//! The messages of the actors that other crates talk to: the scheduler (which agents report to)
//! and the agent actors (which the scheduler assigns work to).
//!
//! The agent supervisor's messages carry agent plug-ins, a type of the `agents` crate, so they
//! live beside the supervisor in `coordinator`.

use std::time::{Duration, Instant};

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::graph::GraphError;
use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::{BudgetDecision, Objective, PausedObjective};
use crate::outcome::{OutcomeSummary, TaskOutcome};
use crate::task::{OutputError, Task};
use crate::trace::TraceContext;
use crate::view::{
    ExternalEvent, NewExternalEvent, ObjectiveSummary, ObjectiveView, SchedulerStats, TaskPage,
    TaskQuery,
};

/// One attempt handed to an agent.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The task attempt.
    pub task: Task,
    /// When the task became ready (for allocation latency).
    pub ready_at: Instant,
    /// The objective's span (its workflow span), parent of the attempt's span: `None` unless
    /// traces are exported. Boxed, so that without traces an assignment grows by one word
    /// that is never allocated (assignments are copied on the allocation path).
    pub parent_span: Option<Box<tracing::Span>>,
}

/// Messages to an agent actor.
#[derive(Debug)]
pub enum AgentMsg {
    /// Run these attempts (the scheduler batches assignments to one agent).
    Run(Vec<Assignment>),
    /// Stop this attempt if it is still running; its outcome is no longer wanted.
    Cancel {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
    },
    /// Sent by the actor's own attempt runner when an attempt that ran off the mailbox ended.
    /// The actor forwards the report to the scheduler, after freeing the attempt's slot; on a
    /// panic (`Err`) the actor fails, so its supervisor restarts it and the scheduler re-queues
    /// its in-flight attempts.
    AttemptEnded(Result<Report, AttemptPanic>),
    /// How many attempts are running now.
    InFlight(RpcReplyPort<usize>),
    /// Answer once no attempt runs here any more (at once if none does). Sent by the
    /// supervisor to an agent the scheduler no longer gives work (it is `Draining`), after a
    /// [`SchedulerMsg::Flush`], so every batch sent before the agent was marked is already
    /// in this mailbox: the answer means the agent finished everything it was given.
    Drain(RpcReplyPort<()>),
}

/// An attempt whose agent plug-in panicked.
#[derive(Debug, Clone)]
pub struct AttemptPanic {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// The panic message.
    pub message: String,
}

/// The end of one attempt, as an agent reports it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// How long it ran on the agent.
    pub duration: Duration,
}

/// A result that reached the coordinator with nobody waiting for it (from a remote worker,
/// after a coordinator restart, say): the scheduler records it as fenced
/// ([`Event::ResultFenced`]) unless its attempt is current. It carries how the attempt ended in
/// short, never its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FencedResult {
    /// The objective the attempt names.
    pub objective: ObjectiveId,
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// The agent that sent it.
    pub agent: AgentId,
    /// How the attempt ended.
    pub outcome: OutcomeSummary,
}

/// A person's decision on a task in review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReviewDecision {
    /// Accept the output, or an edited one.
    Approve {
        /// Replaces the reviewed output when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    /// The task fails with this reason.
    Reject {
        /// Why.
        reason: String,
    },
    /// Run the task again (a new attempt).
    Retry,
}

/// Why the scheduler refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    /// The task graph is not valid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A task needs a capability that no agent has ever declared.
    #[error("task `{task}` needs capability `{capability}`, which no registered agent has")]
    UnknownCapability {
        /// The task.
        task: TaskKey,
        /// The capability.
        capability: Capability,
    },
    /// A `$from` reference in a task's input is not valid.
    #[error("task `{task}`: {reason}")]
    BadInput {
        /// The task.
        task: TaskKey,
        /// What is wrong.
        reason: String,
    },
    /// A task's `output_schema` is not a JSON Schema that can be used: it is not valid, or it
    /// refers to a document elsewhere (remote references are never fetched).
    #[error("task `{task}`: `output_schema` is not usable: {reason}")]
    BadSchema {
        /// The task.
        task: TaskKey,
        /// What is wrong.
        reason: String,
    },
    /// A task's `compensation` is not valid (an unknown capability, a bad `$from`).
    #[error("task `{task}`: `compensation.{field}`: {reason}")]
    BadCompensation {
        /// The task.
        task: TaskKey,
        /// The field of the compensation at fault (`capability`, `input`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An approval's edited output does not match the task's `output_schema`; the task stays
    /// in review.
    #[error("task {task}: the edited output does not match the task's `output_schema`: {}",
            list(.errors))]
    InvalidOutput {
        /// The task.
        task: TaskId,
        /// Where it does not match.
        errors: Vec<OutputError>,
    },
    /// The objective has no tasks, and no agent with capability `plan` has ever registered to
    /// decompose its goal.
    #[error(
        "the objective has no `tasks`, and no planner (an agent with capability `plan`) has \
         registered to decompose its goal: give `tasks`, or register a planner"
    )]
    NoPlanner,
    /// No objective has that id.
    #[error("objective {0} not found")]
    UnknownObjective(ObjectiveId),
    /// No task has that id.
    #[error("task {0} not found")]
    UnknownTask(TaskId),
    /// The request does not fit the task's current state.
    #[error("task {task} is {status}, not in review")]
    NotInReview {
        /// The task.
        task: TaskId,
        /// Its status.
        status: String,
    },
    /// A result given to be fenced is for the attempt that is running now, on that agent:
    /// it is not fenced (nothing is recorded), since the scheduler still waits for it.
    #[error(
        "attempt {attempt} of task {task} is current on agent {agent}: its result is not fenced"
    )]
    AttemptCurrent {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// The agent running it.
        agent: AgentId,
    },
    /// The objective is not paused at a spending limit (it is not running, or has not
    /// passed a budget with `on_budget: approve`).
    #[error("objective {0} is not paused at a budget")]
    NotPausedAtBudget(ObjectiveId),
    /// The scheduler holds as many unfinished objectives as it may.
    #[error("the scheduler is at its limit of {0} unfinished objectives; try again later")]
    Overloaded(usize),
    /// The scheduler reached the submit only after its deadline (it was busy for longer
    /// than the caller's patience): nothing was accepted.
    #[error("the scheduler did not take the submit in time; nothing was accepted, try again later")]
    NotTaken,
    /// The scheduler no longer holds every idempotency key in memory, and the caller's read
    /// of the log's objective index (if any) is older than a key it dropped: nothing was
    /// accepted; submitting again reads the index again.
    #[error(
        "idempotency key `{0}` could not be checked against the event log in time; nothing was \
         accepted, try again"
    )]
    KeyNotChecked(String),
    /// The idempotency key was used before, for a different objective.
    #[error("idempotency key `{key}` was already used for a different objective ({existing})")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The objective it was first used for.
        existing: ObjectiveId,
    },
    /// The idempotency key is not acceptable.
    #[error("idempotency key: {0}")]
    BadIdempotencyKey(String),
    /// The idempotency key of a posted event was used before, for a different event.
    #[error(
        "idempotency key `{key}` was already used for a different event ({existing}, key `{event}`)"
    )]
    EventConflict {
        /// The idempotency key.
        key: String,
        /// The event it was first used for.
        existing: uuid::Uuid,
        /// That event's key.
        event: String,
    },
    /// The change could not be made durable; it was not accepted.
    #[error("the event log could not record the change: {0}")]
    Storage(String),
}

fn list(errors: &[OutputError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Messages to the scheduler.
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Accept an objective.
    Submit {
        /// The objective.
        objective: Objective,
        /// The client's idempotency key: a submit with a key already used returns the
        /// objective first submitted with it.
        idempotency_key: Option<String>,
        /// The caller's W3C trace context, which the objective's spans continue.
        trace: Option<TraceContext>,
        /// The commit as of which the caller read the log's objective index and did not find
        /// `idempotency_key` there (`None`: not read). The scheduler holds only the newest
        /// keys; a key it does not hold is new if it dropped none, or if the read covered every
        /// key it dropped, and otherwise the submit is refused with
        /// [`SchedulerError::KeyNotChecked`].
        key_index_as_of: Option<u64>,
        /// A submit the scheduler reaches after this instant is refused
        /// ([`SchedulerError::NotTaken`]) and nothing is recorded: the caller waits for the
        /// answer instead of giving up on its own, so a submit it was told failed is never
        /// accepted afterwards.
        accept_by: std::time::Instant,
        /// Answered with its id once accepted.
        reply: RpcReplyPort<Result<ObjectiveId, SchedulerError>>,
    },
    /// Attempts ended on an agent.
    Reports {
        /// The agent.
        agent: AgentId,
        /// What ended.
        reports: Vec<Report>,
    },
    /// Reports wait in the report queue (a doorbell: one per batch, however many reports).
    ReportsReady,
    /// An objective's `Limits::deadline` passed (a timer set at submission).
    DeadlinePassed {
        /// The objective.
        objective: ObjectiveId,
    },
    /// A task's retry backoff is over.
    RetryDue {
        /// The task.
        task: TaskId,
        /// The attempt that is due.
        attempt: u32,
    },
    /// An agent has room for work now (it registered, recovered, or its capacity grew).
    AgentAvailable {
        /// The agent.
        agent: AgentId,
    },
    /// An agent's actor died: its in-flight attempts are lost and are queued again.
    AgentLost {
        /// The agent.
        agent: AgentId,
        /// What happened.
        reason: String,
    },
    /// Cancel an objective.
    Cancel {
        /// The objective.
        objective: ObjectiveId,
        /// Answered once cancelled.
        reply: RpcReplyPort<Result<(), SchedulerError>>,
    },
    /// A person's decision on an objective paused at a spending limit.
    Budget {
        /// The objective.
        objective: ObjectiveId,
        /// The decision.
        decision: BudgetDecision,
        /// Answered once applied.
        reply: RpcReplyPort<Result<(), SchedulerError>>,
    },
    /// The objectives paused at a spending limit, waiting for a person's decision, oldest
    /// first.
    BudgetPauses(RpcReplyPort<Vec<PausedObjective>>),
    /// A person's decision on a task in review.
    Review {
        /// The task.
        task: TaskId,
        /// The decision.
        decision: ReviewDecision,
        /// Answered once applied.
        reply: RpcReplyPort<Result<(), SchedulerError>>,
    },
    /// The current state of an objective.
    Get {
        /// The objective.
        objective: ObjectiveId,
        /// `None` when unknown.
        reply: RpcReplyPort<Option<ObjectiveView>>,
    },
    /// How an objective ended, once it has (answered at once if it already has).
    AwaitEnd {
        /// The objective.
        objective: ObjectiveId,
        /// `None` when unknown.
        reply: RpcReplyPort<Option<ObjectiveSummary>>,
    },
    /// Counters.
    Stats(RpcReplyPort<SchedulerStats>),
    /// Tasks waiting for an agent, per capability (every capability that ever had a queue),
    /// ordered by capability.
    QueueDepths(RpcReplyPort<Vec<(Capability, u64)>>),
    /// One page of the tasks the scheduler holds, across objectives.
    Tasks {
        /// Which tasks, and which page.
        query: TaskQuery,
        /// The page.
        reply: RpcReplyPort<TaskPage>,
    },
    /// An event posted from outside (`POST /v1/events`): the first `wait` task waiting for its
    /// key consumes it, or it is kept until one does or it expires.
    PostEvent {
        /// The event.
        event: NewExternalEvent,
        /// Answered once it is durable (and delivered, if a task was waiting).
        reply: RpcReplyPort<Result<ExternalEvent, SchedulerError>>,
    },
    /// The events posted and not yet consumed nor expired, oldest first.
    PendingEvents(RpcReplyPort<Vec<ExternalEvent>>),
    /// A `wait` task's `timeout` passed (a timer set when it started waiting).
    WaitExpired {
        /// The task.
        task: TaskId,
        /// The attempt (the wait) the timer is for.
        attempt: u32,
    },
    /// A review's deadline passed (a timer set when the task went to review, or was
    /// escalated).
    ReviewExpired {
        /// The task.
        task: TaskId,
        /// The deadline the timer is for, ms since the Unix epoch: a timer of an earlier
        /// review (or of one escalated since) finds another and does nothing.
        until_ms: u64,
    },
    /// A posted event's time to live passed.
    EventExpired {
        /// The event.
        id: uuid::Uuid,
        /// Its key.
        key: String,
    },
    /// A result that arrived with nobody waiting for it: recorded as fenced
    /// ([`Event::ResultFenced`], with the reason the scheduler finds in its state), changing
    /// nothing else. Refused with [`SchedulerError::AttemptCurrent`] when its attempt is the
    /// one running, and with [`SchedulerError::UnknownTask`] (nothing recorded) when the
    /// scheduler does not hold its task.
    Fence {
        /// The result.
        result: FencedResult,
        /// Answered once the event is durable.
        reply: RpcReplyPort<Result<(), SchedulerError>>,
    },
    /// Record an event that happened outside the scheduler (agent lifecycle), so the log keeps
    /// one order.
    Record(Event),
    /// A barrier: answered once every event recorded before it is durable and the messages of
    /// earlier turns (assignments, cancellations) have been sent to the agents. A caller that
    /// sent `Record`s first learns they are in the log.
    Flush(RpcReplyPort<Result<(), SchedulerError>>),
}
