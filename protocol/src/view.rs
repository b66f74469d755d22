//! Read models: what the scheduler answers about objectives and tasks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::{BudgetPause, ObjectiveStatus};
use crate::outcome::Usage;
use crate::task::{OutputError, TaskKind, TaskStatus};

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
    /// Tokens spent over all its tasks, and their cost: `cost_usd_micros` is absent when any
    /// task's is unknown (tokens spent on a model without a price).
    #[serde(default)]
    pub usage: Usage,
    /// Set while it is paused at a spending limit (`on_budget: approve`), waiting for a
    /// person's decision (`POST /v1/objectives/{id}/budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_pause: Option<BudgetPause>,
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
    /// What it needs (`wait` or `approval` for those kinds).
    pub capability: Capability,
    /// Who runs it, when not an agent.
    #[serde(default, skip_serializing_if = "TaskKind::is_agent")]
    pub kind: TaskKind,
    /// For a `wait` task: the key of the event it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// While a `wait` task waits: when it stops waiting, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_until_ms: Option<u64>,
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
    /// The tasks it waits for (a spawned task also waits for the task that spawned it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// While an attempt runs: when it started, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since_ms: Option<u64>,
    /// While in review because its output does not match its `output_schema`: where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review_errors: Vec<OutputError>,
    /// While in review with a deadline: when the deadline decides, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_until_ms: Option<u64>,
    /// How many times its current (or latest) review was escalated by its deadline.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalations: u32,
    /// Tokens spent over all attempts, and their cost: `cost_usd_micros` is absent when any
    /// attempt's is unknown, and 0 when no token was spent.
    #[serde(default)]
    pub usage: Usage,
    /// Time spent running over all attempts.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "1s 500ms"))]
    pub run_time: Duration,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
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
    /// Tasks waiting for a person's decision now.
    #[serde(default)]
    pub tasks_in_review: u64,
    /// Tasks that failed for good since start.
    #[serde(default)]
    pub tasks_failed: u64,
    /// `wait` tasks waiting for their event now.
    #[serde(default)]
    pub tasks_waiting: u64,
    /// Posted events kept because no task consumed them yet.
    #[serde(default)]
    pub events_kept: u64,
    /// Events recorded and not yet committed to the durable log (0 without one): the
    /// writer's queue.
    #[serde(default)]
    pub events_unwritten: u64,
    /// Results dropped since start because their attempt was not current (each recorded as
    /// a `ResultFenced`, but for those whose task the scheduler no longer held).
    #[serde(default)]
    pub fenced_results: u64,
    /// For every attempt handed to an agent since start, how long its task had been ready
    /// (queued, or waiting for a slot) until then.
    #[serde(default)]
    pub allocation_latency: LatencyHistogram,
}

/// The upper bounds of [`LatencyHistogram`]'s buckets, in nanoseconds: from 10 µs (an idle
/// agent taking a task in the same turn) to 5 minutes (a task queued behind rate-limited model
/// agents). Latencies above the last bound fall in one more bucket.
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; 16] = [
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    300_000_000_000,
];

/// Latencies counted in fixed buckets: recording one is a search of 16 bounds and three
/// additions, with no allocation, so the scheduler can record every allocation on its hot path.
/// The buckets are those a Prometheus histogram exposes (`le` = each bound, then `+Inf`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// `counts[i]` holds the latencies at most `LATENCY_BUCKET_BOUNDS_NS[i]` (and above the
    /// bound before it); the last entry holds those above every bound.
    pub counts: [u64; LATENCY_BUCKET_BOUNDS_NS.len() + 1],
    /// The sum of every latency recorded, in nanoseconds (saturating).
    pub sum_ns: u64,
    /// Latencies recorded.
    pub count: u64,
}

impl LatencyHistogram {
    /// Counts one latency.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns);
        // `bucket` is at most the number of bounds, the last index of `counts`.
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.count += 1;
    }

    /// Each bucket's upper bound (`None` for the last, unbounded one) with the number of
    /// latencies at most that bound: the cumulative form a Prometheus histogram exposes.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = LATENCY_BUCKET_BOUNDS_NS
            .iter()
            .map(|&ns| Some(Duration::from_nanos(ns)))
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().scan(0_u64, |total, &count| {
            *total += count;
            Some(*total)
        }))
    }
}

/// What an agent says about itself beyond its health: its circuit breaker and rate limiter,
/// for the agents that have them (model agents). Read at the time of asking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentStatus {
    /// Its circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStatus>,
    /// Its rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limiter: Option<LimiterStatus>,
    /// The provider account whose breaker and limiter it shares (those shown above), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// What its model calls spent since the coordinator started (model agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<Spent>,
    /// Where a remote agent runs (an agent of a worker process, over NATS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteAgentStatus>,
}

/// A remote agent's worker, as the coordinator last heard from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteAgentStatus {
    /// The host the worker runs on, as it announced it.
    pub host: String,
    /// The worker's session (new at each start of the worker).
    pub session: String,
    /// When its latest heartbeat arrived, in milliseconds since the Unix epoch.
    pub last_heartbeat_unix_ms: u64,
}

/// What an agent's model calls spent: the priced part in dollars, the rest in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Spent {
    /// The cost of the calls to priced models, in millionths of a US dollar.
    pub cost_usd_micros: u64,
    /// Tokens of calls to models without a price (their cost is unknown).
    pub unpriced_tokens: u64,
}

/// Where an agent's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerStatus {
    /// Calls go through.
    Closed,
    /// Calls are refused; one probe is let through after `probe_in_ms` milliseconds.
    Open {
        /// Milliseconds until the breaker turns half-open and lets a probe through.
        probe_in_ms: u64,
    },
    /// One probe call at a time is let through.
    HalfOpen,
}

/// An agent's rate limiter: its quotas, what it used of them, and how often callers waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimiterStatus {
    /// The request quota and its use (absent without a request quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<QuotaUse>,
    /// The token quota and its use (absent without a token quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<QuotaUse>,
    /// Calls granted since the agent was built.
    pub granted: u64,
    /// Granted calls that had to wait (behind other calls, for a quota, or for a pause the
    /// server asked for).
    pub waits: u64,
    /// The sum of those waits, in milliseconds.
    pub waited_ms: u64,
    /// Calls waiting now.
    pub waiting: u64,
    /// Milliseconds left of a pause the server asked for, if one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_for_ms: Option<u64>,
}

/// One quota: its size and what the last 60 seconds used of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaUse {
    /// The quota, per minute.
    pub per_minute: u32,
    /// Used within the last 60 seconds: granted, corrected by the usage the provider reported
    /// (above `per_minute` only by what calls used beyond their estimates).
    pub used: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut histogram = LatencyHistogram::default();
        // On a bound, just above it, above every bound.
        histogram.record(Duration::from_micros(10));
        histogram.record(Duration::from_nanos(10_001));
        histogram.record(Duration::from_secs(3600));
        histogram.record(Duration::ZERO);
        assert_eq!(histogram.counts[0], 2);
        assert_eq!(histogram.counts[1], 1);
        assert_eq!(histogram.counts[LATENCY_BUCKET_BOUNDS_NS.len()], 1);
        assert_eq!(histogram.count, 4);
        assert_eq!(histogram.sum_ns, 10_000 + 10_001 + 3_600_000_000_000);

        let cumulative: Vec<(Option<Duration>, u64)> = histogram.cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_BUCKET_BOUNDS_NS.len() + 1);
        assert_eq!(cumulative[0], (Some(Duration::from_micros(10)), 2));
        assert_eq!(cumulative[1], (Some(Duration::from_micros(50)), 3));
        assert_eq!(cumulative[LATENCY_BUCKET_BOUNDS_NS.len() - 1].1, 3);
        assert_eq!(cumulative[LATENCY_BUCKET_BOUNDS_NS.len()], (None, 4));
    }

    #[test]
    fn bounds_grow() {
        assert!(LATENCY_BUCKET_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn breaker_status_is_tagged_by_state() {
        let open = BreakerStatus::Open { probe_in_ms: 1500 };
        assert_eq!(
            serde_json::to_value(open).unwrap_or_default(),
            serde_json::json!({ "state": "open", "probe_in_ms": 1500 })
        );
        assert_eq!(
            serde_json::to_value(BreakerStatus::HalfOpen).unwrap_or_default(),
            serde_json::json!({ "state": "half_open" })
        );
    }
}

/// An event to post (`POST /v1/events`), as the scheduler takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExternalEvent {
    /// Its key (checked with [`crate::task::check_event_key`]).
    pub key: String,
    /// What it carries.
    pub payload: Value,
    /// How long it is kept if no task consumes it.
    pub ttl: Duration,
    /// The sender's idempotency key.
    pub idempotency_key: Option<String>,
}

/// A posted event, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExternalEvent {
    /// Its id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: uuid::Uuid,
    /// Its key.
    pub key: String,
    /// What it carries.
    #[serde(default)]
    pub payload: Value,
    /// When it was received, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// When it is dropped if no task consumes it, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// The `wait` task that consumed it, if one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_by: Option<EventConsumer>,
}

/// The task that consumed an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventConsumer {
    /// Its objective.
    pub objective: ObjectiveId,
    /// The task.
    pub task: TaskId,
}
