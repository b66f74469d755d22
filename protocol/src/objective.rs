//! What a user submits: a goal and, optionally, an explicit task graph.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cost::Usd;
use crate::fingerprint::Fingerprint;
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

    /// The fingerprint to store with an idempotency key: stable across processes, builds and
    /// versions (see [`crate::fingerprint`]).
    pub fn fingerprint(&self) -> u64 {
        crate::fingerprint::current(self)
    }

    /// What a stored fingerprint is compared with: this objective's fingerprint in every
    /// version that may have written one, so a retry matches an objective recorded by an
    /// earlier release.
    pub fn fingerprints(&self) -> Fingerprint {
        Fingerprint::of(self)
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

/// Bounds on an objective: how far its graph may grow (checked on submit and whenever tasks
/// are spawned), how many of its attempts may run at once, and what it may spend.
///
/// ```json
/// { "max_tasks": 500, "max_concurrency": 4, "token_budget": 200000, "cost_budget": 2.5,
///   "deadline": "15m" }
/// ```
///
/// The optional limits are left out of the JSON when unset, so an objective written before
/// they existed reads (and fingerprints) as it did.
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
    /// The most attempts of this objective that may run at once, over all agents (at least 1;
    /// unset: no cap). A ready task of an objective at its cap keeps its place in the queue
    /// and is taken when one of the objective's attempts ends, so one large objective cannot
    /// hold every agent slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1))]
    pub max_concurrency: Option<NonZeroU32>,
    /// The most model tokens (input plus output, over every attempt of every task) the
    /// objective may spend; past it the objective fails naming `token_budget` (or pauses, see
    /// `on_budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// The most US dollars (`0.25`) the objective's model calls may cost, at the prices of
    /// the coordinator's price table; past it the objective fails naming `cost_budget` (or
    /// pauses, see `on_budget`). A call to a model without a price adds nothing to it (its
    /// cost is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0, example = 0.25))]
    pub cost_budget: Option<Usd>,
    /// What passing `token_budget` or `cost_budget` does: `fail` the objective (the default),
    /// or pause it (`approve`) until a person decides to continue with a larger budget or to
    /// stop (`POST /v1/objectives/{id}/budget`).
    #[serde(default, skip_serializing_if = "OnBudget::is_fail")]
    pub on_budget: OnBudget,
    /// How long after submission the objective may run (a humantime duration such as `15m`);
    /// past it the objective fails naming `deadline`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "15m"))]
    pub deadline: Option<Duration>,
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
            max_concurrency: None,
            token_budget: None,
            cost_budget: None,
            on_budget: OnBudget::Fail,
            deadline: None,
        }
    }
}

/// What an objective does when it passes its `token_budget` or `cost_budget`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnBudget {
    /// It fails, naming the limit.
    #[default]
    Fail,
    /// It starts no new attempt (running ones finish and are charged) and waits for a
    /// person's [`BudgetDecision`]; its `deadline` still applies while it waits.
    Approve,
}

impl OnBudget {
    fn is_fail(&self) -> bool {
        *self == Self::Fail
    }
}

/// Which spending limit an objective reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    /// `token_budget`.
    TokenBudget,
    /// `cost_budget`.
    CostBudget,
}

/// An objective paused at a spending limit, waiting for a person's [`BudgetDecision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetPause {
    /// The limit it passed.
    pub limit: BudgetLimit,
    /// What it spent against which budget, naming the limit (the text a `fail` would give).
    pub reason: String,
}

/// An objective paused at a spending limit, as the list of pending decisions shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PausedObjective {
    /// The objective.
    pub id: crate::ids::ObjectiveId,
    /// Its goal.
    pub goal: String,
    /// The limit it passed and what it spent.
    pub pause: BudgetPause,
}

/// An objective's spending limits as they stand (after any raise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budgets {
    /// Its `token_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// Its `cost_budget`, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0))]
    pub cost_budget: Option<Usd>,
}

/// Continue or stop an objective paused at a spending limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BudgetChoice {
    /// Raise the budget it passed and start attempts again.
    Continue,
    /// Fail it, naming the limit.
    Stop,
}

/// A person's decision on an objective paused at a spending limit (the body of
/// `POST /v1/objectives/{id}/budget`).
///
/// `continue` raises each budget the objective has passed by `add_tokens` or `add_cost`, or,
/// when that is absent, by the amount it was submitted with (so a budget of 1,000 tokens
/// becomes 2,000, then 3,000); a raise that still leaves it over a budget pauses it again at
/// once. `stop` fails it with the text a `fail` would have given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetDecision {
    /// Continue or stop.
    pub decision: BudgetChoice,
    /// Who decided (recorded with the raise).
    pub by: String,
    /// Tokens to add to `token_budget`, if it was passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_tokens: Option<u64>,
    /// US dollars to add to `cost_budget`, if it was passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0))]
    pub add_cost: Option<Usd>,
}

/// Where an objective is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveStatus {
    /// Accepted; some tasks have not finished.
    Running,
    /// A task failed for good (or a limit was passed) and the compensations of the tasks that
    /// had succeeded run, newest success first; the objective then ends `Failed`.
    Compensating,
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
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unset_limits_leave_the_json_and_the_fingerprint_as_they_were() {
        let objective = Objective::with_tasks("g", Vec::new());
        let text = serde_json::to_value(&objective).unwrap_or_default();
        assert_eq!(
            text["limits"],
            json!({"max_tasks": 10_000, "max_depth": 64, "max_fanout": 10_000})
        );
        // A log written before these limits existed reads with them unset.
        let old: Limits =
            serde_json::from_value(json!({"max_tasks": 5})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.max_concurrency, None);
        assert_eq!(old.token_budget, None);
        assert_eq!(old.cost_budget, None);
        assert_eq!(old.deadline, None);
    }

    #[test]
    fn limits_read_from_json_with_a_humantime_deadline() {
        let limits: Limits = serde_json::from_value(json!({
            "max_concurrency": 4, "token_budget": 200_000, "cost_budget": 1.5, "deadline": "15m"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(limits.max_concurrency, NonZeroU32::new(4));
        assert_eq!(limits.token_budget, Some(200_000));
        assert_eq!(limits.cost_budget, Some(Usd(1_500_000)));
        assert_eq!(limits.deadline, Some(Duration::from_secs(900)));
        let back: Limits = serde_json::from_value(serde_json::to_value(limits).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, limits);
        let zero = serde_json::from_value::<Limits>(json!({"max_concurrency": 0}))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(zero.is_err_and(|e| e.contains("nonzero")));
    }

    #[test]
    fn compensating_is_not_an_end() {
        assert!(!ObjectiveStatus::Compensating.is_terminal());
        assert!(!ObjectiveStatus::Running.is_terminal());
        assert!(ObjectiveStatus::Failed.is_terminal());
    }
}
