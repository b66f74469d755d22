//! The coordinator's error type.

use swarm_protocol::{AgentId, SchedulerError};

/// What can go wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scheduler refused the request.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The registry refused the agent.
    #[error(transparent)]
    Registry(#[from] swarm_registry::Error),
    /// No agent has that id.
    #[error("agent {0} not found")]
    UnknownAgent(AgentId),
    /// An actor could not be started or did not answer.
    #[error("actor error: {0}")]
    Actor(String),
    /// The event log failed (the message names the file and the cause).
    #[error("event log: {0}")]
    Store(#[from] swarm_store::StoreError),
    /// Input from a file or the command line is not valid (the message names it).
    #[error("{0}")]
    Input(String),
    /// The request needs the durable event log, and this swarm runs without one.
    #[error("this swarm keeps no event log (start it with a data directory)")]
    NoStore,
    /// A schedule's spec is not valid (the error names the field).
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// No schedule has that name.
    #[error("schedule `{0}` not found")]
    UnknownSchedule(String),
    /// A schedule with that name exists already.
    #[error("a schedule named `{0}` exists already; delete it first")]
    ScheduleExists(String),
    /// A hook's declaration is not valid (the error names the field).
    #[error(transparent)]
    Hook(#[from] crate::hooks::DeclarationError),
    /// No hook has that name.
    #[error("hook `{0}` not found")]
    UnknownHook(String),
    /// A hook declared through the API has that name already.
    #[error("a hook named `{0}` exists already; delete it first")]
    HookExists(String),
    /// The hook is declared in `swarm.toml`, which the API does not change.
    #[error(
        "hook `{0}` is declared in swarm.toml; the API can neither replace nor delete it \
         (change the file and restart)"
    )]
    HookConfigured(String),
    /// The coordinator stopped because a part of it failed.
    #[error("the coordinator stopped: {0}")]
    Stopped(String),
}

impl<T> From<ractor::RactorErr<T>> for Error {
    fn from(err: ractor::RactorErr<T>) -> Self {
        Self::Actor(err.to_string())
    }
}

impl<T> From<ractor::MessagingErr<T>> for Error {
    fn from(err: ractor::MessagingErr<T>) -> Self {
        Self::Actor(err.to_string())
    }
}
