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
