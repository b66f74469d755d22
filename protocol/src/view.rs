//! Read models: what the scheduler answers about objectives and tasks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::ObjectiveStatus;
use crate::outcome::Usage;
use crate::task::{OutputError, TaskStatus};

/// An objective and all its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectiveView {
    /// The objective.
    pub id: ObjectiveId,
    /// Its goal.
    pub goal: String,
    /// Its status.
    pub status: ObjectiveStatus,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Its tasks in the order they were added.
    pub tasks: Vec<TaskView>,
}

impl ObjectiveView {
    /// The task with this name.
    pub fn task(&self, key: &str) -> Option<&TaskView> {
        self.tasks.iter().find(|t| t.key.as_str() == key)
    }
}

/// How an objective stands, without its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveSummary {
    /// The objective.
    pub id: ObjectiveId,
    /// Its status.
    pub status: ObjectiveStatus,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Tasks in its graph.
    pub tasks: u64,
}

/// One task of an objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    /// Its id.
    pub id: TaskId,
    /// Its name.
    pub key: TaskKey,
    /// What it needs.
    pub capability: Capability,
    /// Its kanban status.
    pub status: TaskStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The agent of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// Its output, once it succeeded (or is in review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The latest failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output kept from a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_output: Option<Value>,
    /// The task that spawned it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawned_by: Option<TaskId>,
    /// For a compensation (it carries the name of the task it undoes): that task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<TaskId>,
    /// Tokens spent over all attempts.
    #[serde(default)]
    pub usage: Usage,
    /// Time spent running over all attempts.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s 500ms"))]
    pub run_time: Duration,
}

/// A task waiting for a person's decision, with its objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewItem {
    /// The objective.
    pub objective: ObjectiveId,
    /// Its goal.
    pub goal: String,
    /// The task, with the output in question and why it needs review (`error`).
    pub task: TaskView,
    /// Where the output does not match the task's `output_schema`, when that is why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<OutputError>,
}

/// Scheduler counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerStats {
    /// Objectives not yet ended.
    pub objectives_running: u64,
    /// Objectives ended since start.
    pub objectives_ended: u64,
    /// Tasks waiting for an agent.
    pub tasks_queued: u64,
    /// Attempts running on agents.
    pub tasks_running: u64,
    /// Attempts handed to agents since start.
    pub allocations: u64,
    /// Tasks that succeeded since start.
    pub tasks_succeeded: u64,
    /// Attempts that failed since start.
    pub attempts_failed: u64,
}
