//! The swarm vocabulary: every type that crosses a boundary between the crates, the actors or
//! the HTTP API.
//!
//! # Layout
//! - [`ids`]: typed identifiers ([`ObjectiveId`], [`TaskId`], [`AgentId`]) and the validated
//!   names ([`Capability`], [`TaskKey`]).
//! - [`objective`]: what a user submits ([`Objective`]) and its [`Limits`].
//! - [`task`]: a task's declaration ([`TaskSpec`]), its kanban [`TaskStatus`], and the [`Task`]
//!   an agent receives.
//! - [`outcome`]: what an agent reports back ([`TaskOutcome`]).
//! - [`cost`]: a model's [`Price`] and amounts of US dollars ([`Usd`]).
//! - [`bounds`]: ceilings on outside input (durations, JSON depth and sizes) that keep every
//!   accepted value safe to run and to store.
//! - [`graph`]: validation of a task graph (duplicates, unknown dependencies, cycles, limits).
//! - [`agent`]: the discovery descriptor of an agent and its [`Health`].
//! - [`event`]: the [`Event`] that records every state change: the audit trail and, once the
//!   store is durable, the recovery source.
//! - [`schedule`]: a cron schedule that submits an objective at each slot ([`ScheduleSpec`]).
//! - [`trace`]: a caller's W3C [`TraceContext`], kept with the objective it submitted.
//! - [`messages`]: the message enums of the actors that other crates talk to.
//! - [`view`]: read models of objectives and tasks, as the scheduler answers queries, and of
//!   what an agent says about itself ([`AgentStatus`]).
//! - [`remote`]: the messages of the remote-agent protocol, which workers in any language speak
//!   over NATS JetStream, with their JSON Schemas (`REMOTE.md` documents it).
//!
//! # Invariants
//! This crate does no I/O and spawns nothing. Its JSON forms are the HTTP API's wire format, so
//! every input type rejects unknown fields and names the offending field in its error.

pub mod agent;
pub mod bounds;
pub mod cost;
pub mod event;
pub mod fingerprint;
pub mod graph;
pub mod ids;
pub mod messages;
pub mod objective;
pub mod outcome;
pub mod remote;
#[cfg(any(test, feature = "test-support"))]
pub mod samples;
pub mod schedule;
pub mod task;
pub mod trace;
pub mod view;

pub use agent::{AgentDescriptor, Health};
pub use cost::{Price, Usd};
pub use event::{DecidedBy, Event, EventRecord};
pub use graph::GraphError;
pub use ids::{AgentId, Capability, IdError, ObjectiveId, TaskId, TaskKey};
pub use messages::{
    AgentMsg, Assignment, AttemptPanic, FencedResult, Report, ReviewDecision, SchedulerError,
    SchedulerMsg,
};
pub use objective::{
    BudgetChoice, BudgetDecision, BudgetLimit, BudgetPause, Budgets, Limits, Objective,
    ObjectiveStatus, OnBudget, PausedObjective,
};
pub use outcome::{FailureKind, OutcomeSummary, TaskOutcome, Usage};
pub use schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
pub use task::{
    Compensation, OnTimeout, OutputError, RetryPolicy, ReviewDeadline, Task, TaskKind, TaskSpec,
    TaskStatus,
};
pub use trace::TraceContext;
pub use view::{
    AgentStatus, BreakerStatus, EventConsumer, ExternalEvent, LatencyHistogram, LimiterStatus,
    NewExternalEvent, ObjectiveSummary, ObjectiveView, QuotaUse, RemoteAgentStatus, SchedulerStats,
    Spent, TaskItem, TaskPage, TaskQuery, TaskView,
};
