//! Read models: what the scheduler answers about objectives and tasks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::ObjectiveStatus;
use crate::outcome::Usage;
use crate::task::TaskStatus;

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
    /// The tasks it waits for (a spawned task also waits for the task that spawned it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// While an attempt runs: when it started, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since_ms: Option<u64>,
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
}

/// One task of the listing across objectives (`GET /v1/tasks`, the dashboard's board): the
/// task with the objective it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskItem {
    /// The objective.
    pub objective: ObjectiveId,
    /// Its goal.
    pub goal: String,
    /// The task.
    pub task: TaskView,
}

/// Which tasks a listing wants: a status, optional filters, and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in this status (all statuses when `None`).
    pub status: Option<TaskStatus>,
    /// Only tasks of this objective.
    pub objective: Option<ObjectiveId>,
    /// Only tasks that need this capability.
    pub capability: Option<Capability>,
    /// Only tasks whose latest attempt ran on this agent.
    pub agent: Option<AgentId>,
    /// Only tasks after this one in the listing's order (the `next` of the previous page).
    pub after: Option<TaskId>,
    /// The most tasks in the page.
    pub limit: usize,
    /// Newest (highest id) first instead of oldest first.
    pub newest_first: bool,
}

impl TaskQuery {
    /// The first page of `limit` tasks in `status`, oldest first, unfiltered.
    pub fn status(status: TaskStatus, limit: usize) -> Self {
        Self {
            status: Some(status),
            objective: None,
            capability: None,
            agent: None,
            after: None,
            limit,
            newest_first: false,
        }
    }
}

/// One page of a task listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPage {
    /// The tasks of the page, in the listing's order.
    pub tasks: Vec<TaskItem>,
    /// The `after` of the next page; `None` on the last one.
    pub next: Option<TaskId>,
    /// How many tasks match the query over all pages.
    pub total: u64,
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
