//! Agents: the plug-in trait every kind of agent implements, and the one generic actor that
//! runs any of them.
//!
//! # Layout
//! - [`agent`]: the [`Agent`] trait a plug-in implements, its type-erased form [`DynAgent`],
//!   and [`AgentFactory`], which makes a fresh plug-in each time the actor (re)starts.
//! - [`context`]: the [`TaskContext`] an attempt uses to report heartbeats and partial output.
//! - [`actor`]: [`AgentActor`], which runs a plug-in's attempts up to its concurrency limit,
//!   off its mailbox, enforcing idle and hard timeouts, and reports outcomes to the scheduler.
//! - [`sink`]: the queue agent actors put reports in, with one doorbell message to the
//!   scheduler per batch.
//! - [`clock`]: the one clock of the workspace ([`clock::TokioClock`]): tokio's instant for
//!   deadlines and wall time for stamps and cron slots, moved by hand in tests.
//! - [`trace`]: the spans of an objective's work (OpenTelemetry GenAI conventions) and the
//!   W3C trace context that links them to a caller and carries them on to model APIs.
//! - [`builtin`]: agents that ship with swarm ([`NoopAgent`], [`EchoAgent`], [`FnAgent`],
//!   [`WorkAgent`]).
//! - [`model`]: [`model::LlmAgent`], which calls OpenAI-compatible or Anthropic APIs behind its
//!   own circuit breaker and rate limiter.
//! - [`sim`]: a simulated model server speaking the OpenAI and Anthropic wire formats over
//!   real HTTP, with scripted latency, errors, 429s and stalls, for the demo, tests and load
//!   runs.
//!
//! # Invariants
//! This crate does not know the registry or the scheduler's internals: it talks to the
//! scheduler only through the report queue in [`sink`]. Agents never message each other.

pub mod actor;
pub mod agent;
pub mod builtin;
pub mod clock;
pub mod context;
pub mod model;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sink;
pub mod trace;

pub use actor::{AgentActor, AgentArgs};
pub use agent::{Agent, AgentFactory, AgentFuture, DynAgent, HealthFeed, HealthReport};
pub use builtin::{EchoAgent, FnAgent, NoopAgent, WorkAgent};
pub use context::TaskContext;
pub use sink::{ReportInbox, ReportSink, report_queue};
