//! How an agent presents itself to the discovery registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, Capability};

/// What the registry knows about an agent: who it is, what it can do and how much at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentDescriptor {
    /// Given by the registry on registration.
    pub id: AgentId,
    /// A unique, human-chosen name, e.g. `gpt-4o-mini-1`.
    pub name: String,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// How many tasks it runs at once.
    pub max_concurrency: u32,
    /// Free-form labels (region, model family, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Relative cost of one task on this agent (e.g. dollars per 1k tokens); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_hint: Option<f64>,
    /// What the agent is good at, in a sentence, for people and for the planner (whose prompt
    /// lists every capability with the descriptions of the agents that offer it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Whether an agent may be given work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Health {
    /// Working normally.
    Up = 0,
    /// Working, but failing or throttled (e.g. its circuit breaker is half-open): chosen only
    /// when no agent that is up has room.
    Degraded = 1,
    /// Not working (crashed past its restart budget, breaker open): given no work.
    Down = 2,
    /// Finishing its in-flight work before it leaves: given no new work.
    Draining = 3,
}

impl Health {
    /// True when the agent may be given new work.
    pub fn accepts_work(self) -> bool {
        matches!(self, Self::Up | Self::Degraded)
    }

    /// The inverse of `as u8`, for storage in an atomic.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Up,
            1 => Self::Degraded,
            2 => Self::Down,
            _ => Self::Draining,
        }
    }
}
