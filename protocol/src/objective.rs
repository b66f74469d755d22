//! What a user submits: a goal and, optionally, an explicit task graph.

use serde::{Deserialize, Serialize};

use crate::task::TaskSpec;

/// A unit of work a user asks the swarm to achieve.
///
/// In JSON (the body of `POST /v1/objectives`):
/// ```json
/// { "goal": "summarize the report",
///   "tasks": [ { "id": "fetch", "capability": "http" },
///              { "id": "sum", "capability": "summarize", "depends_on": ["fetch"] } ],
///   "priority": 5 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// What the user wants, in plain language.
    pub goal: String,
    /// An explicit task graph. When empty, the planner decomposes the goal: a task with key
    /// `plan` and capability `plan` runs on a planner agent, and the tasks of its plan join the
    /// graph.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSpec>,
    /// Higher runs first among ready tasks that compete for the same agents.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Bounds on how far the graph may grow.
    #[serde(default)]
    pub limits: Limits,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

impl Objective {
    /// An objective with an explicit graph and default priority and limits.
    pub fn with_tasks(goal: impl Into<String>, tasks: Vec<TaskSpec>) -> Self {
        Self {
            goal: goal.into(),
            tasks,
            priority: 0,
            limits: Limits::default(),
        }
    }

    /// A fingerprint of the whole objective, the same in every process and version that
    /// serializes it the same way: a repeated submit under one idempotency key must carry the
    /// same objective.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::Hasher;
        let mut hasher = rustc_hash::FxHasher::default();
        // Serializing plain data to a Vec cannot fail; an empty encoding would still compare
        // equal only to another objective that also failed to encode.
        hasher.write(&serde_json::to_vec(self).unwrap_or_default());
        hasher.finish()
    }
}

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks a client's idempotency key: 1 to 255 printable ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_IDEMPOTENCY_KEY_LEN}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic() && *c != ' ') {
        return Err(format!("contains {c:?}; only printable ASCII is allowed"));
    }
    Ok(())
}

/// Bounds on an objective's graph, checked on submit and whenever tasks are spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The most tasks the graph may hold, spawned ones included.
    pub max_tasks: u32,
    /// The longest dependency chain (a task with no dependencies has depth 1).
    pub max_depth: u32,
    /// The most tasks that may depend directly on one task, or that one task may spawn at once.
    pub max_fanout: u32,
    /// How many times the planner may be asked to re-plan after a task failed for good, before
    /// the objective fails. `0` turns re-planning off. When absent: 1 for an objective the
    /// planner decomposed (submitted without tasks), 0 for one with an explicit graph. Nothing
    /// is re-planned while no agent with capability `plan` has registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replans: Option<u32>,
}

impl Limits {
    /// The hard ceiling on `max_tasks` that no objective may raise.
    pub const MAX_TASKS_CEILING: u32 = 10_000_000;
    /// The hard ceiling on `max_replans` that no objective may raise.
    pub const MAX_REPLANS_CEILING: u32 = 10;

    /// The re-plans allowed: `max_replans`, or its default for an objective that was
    /// `planned` (1) or came with its own graph (0); never above the ceiling.
    pub fn replans(&self, planned: bool) -> u32 {
        self.max_replans
            .unwrap_or(u32::from(planned))
            .min(Self::MAX_REPLANS_CEILING)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tasks: 10_000,
            max_depth: 64,
            max_fanout: 10_000,
            max_replans: None,
        }
    }
}

/// Where an objective is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveStatus {
    /// Accepted; some tasks have not finished.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// A task failed for good; the rest were cancelled.
    Failed,
    /// A user cancelled it.
    Cancelled,
}

impl ObjectiveStatus {
    /// True once the objective will change no more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}
