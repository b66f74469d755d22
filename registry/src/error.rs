//! Why a registry operation was refused.
//!
//! Every variant is a caller mistake or a stale id, never an internal fault, so the caller can
//! match on it and answer (reject the registration, drop the stale health report).

use swarm_protocol::AgentId;

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another registered agent already uses this name.
    #[error("an agent named `{0}` is already registered")]
    DuplicateName(String),
    /// The registration lists no capabilities, so the agent could never be selected.
    #[error("agent `{name}` declares no capabilities; `capabilities` must not be empty")]
    NoCapabilities {
        /// The name of the agent that was refused.
        name: String,
    },
    /// The registration (or a capacity change) asks for a `max_concurrency` of 0.
    #[error("agent `{name}` has `max_concurrency` 0; it must be at least 1")]
    ZeroConcurrency {
        /// The name of the agent that was refused.
        name: String,
    },
    /// `register_as` was given an id that `reserve_id` did not hand out, or that has been
    /// registered already.
    #[error("agent id {0} was not reserved with `reserve_id`, or has been registered already")]
    UnreservedId(AgentId),
    /// No agent with this id is registered (it never was, or it has been deregistered).
    #[error("agent {0} is not registered")]
    UnknownAgent(AgentId),
}
