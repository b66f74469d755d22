//! The task graph: every objective held in memory, its tasks and the edges between them.
//!
//! [`Graph`] owns the objectives ([`ObjectiveRun`]) and the task nodes ([`TaskNode`]), and
//! hands out task ids. A node's record is what is shown of the task and changes only by
//! folding in the task's events (see `record.rs`); the rest of a node is what scheduling it
//! takes. Its rules:
//! - task ids are consecutive within a batch and never reused;
//! - a task waits on each dependency that has not succeeded (`waiting_on`), and is among the
//!   `dependents` of each, whichever of the two was added first;
//! - an objective's `tasks` lists its tasks by id, compensations included.
//!
//! What a graph shows (an objective's view, a page of tasks) is read here too, from the
//! records alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use swarm_protocol::graph::ExistingTasks;
use swarm_protocol::task::{Compensation, has_references, resolve_input};
use swarm_protocol::{
    AgentId, BudgetLimit, BudgetPause, Budgets, Limits, ObjectiveId, ObjectiveStatus,
    ObjectiveSummary, ObjectiveView, OnBudget, RetryPolicy, ReviewDeadline, TaskId, TaskItem,
    TaskKey, TaskKind, TaskPage, TaskQuery, TaskSpec, TaskStatus, Usd,
};

use super::planner;
use super::record::{TaskRecord, link, objective_view};
use super::sagas::Saga;
use super::schema::OutputSchema;
use super::slab::Slab;

/// Per task of a batch, its [`TaskExtra`]; empty when no task of the batch has one.
pub(super) type BatchExtras = Vec<Option<Box<TaskExtra>>>;

/// One task of an objective: its record (what is shown of it, changed only by folding in
/// the task's events) and what scheduling it takes.
pub(super) struct TaskNode {
    pub(super) record: TaskRecord,
    pub(super) objective: ObjectiveId,
    pub(super) priority: i32,
    pub(super) retry: RetryPolicy,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) hard_timeout: Option<Duration>,
    /// The input as declared; `$from` references are resolved when the task becomes ready.
    pub(super) declared_input: Arc<Value>,
    /// The input an agent receives (set when ready).
    pub(super) input: Arc<Value>,
    pub(super) dependents: Vec<TaskId>,
    /// Dependencies not yet succeeded.
    pub(super) waiting_on: u32,
    pub(super) depth: u32,
    /// `Some(seq)` while the task sits in its capability's ready queue.
    pub(super) queued: Option<u64>,
    /// True while the task waits for a retry backoff to pass.
    pub(super) retry_due: bool,
    /// An agent that refused the task for good; it is not given the task again.
    pub(super) avoid: Option<AgentId>,
    /// The agent its last attempt failed on with a retryable error (a 429, a 5xx, a timeout):
    /// another agent of the capability with room takes the retry first; this one gets it back
    /// only when no other can take it.
    pub(super) prefer_not: Option<AgentId>,
    pub(super) ready_at: Instant,
    /// True when the objective has a `max_concurrency`: its attempts are counted.
    pub(super) capped: bool,
    /// What only some tasks have (a schema, a compensation, a wait's timeout), boxed so the
    /// common node stays small and adding it allocates nothing.
    pub(super) extra: Option<Box<TaskExtra>>,
}

/// The rarer parts of a task.
#[derive(Debug, Default)]
pub(super) struct TaskExtra {
    /// Its `output_schema`, compiled when the task was added.
    pub(super) schema: Option<OutputSchema>,
    /// What undoes it if its objective fails after it succeeded.
    pub(super) compensation: Option<Compensation>,
    /// For a `wait` task: how long it waits for its event.
    pub(super) wait_timeout: Option<Duration>,
    /// The deadline of its reviews, if it has one.
    pub(super) review_deadline: Option<ReviewDeadline>,
}

impl TaskNode {
    pub(super) fn schema(&self) -> Option<&OutputSchema> {
        self.extra.as_ref()?.schema.as_ref()
    }

    pub(super) fn has_compensation(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|e| e.compensation.is_some())
    }

    /// The deadline of its reviews, if it has one.
    pub(super) fn review_deadline(&self) -> Option<ReviewDeadline> {
        self.extra.as_ref()?.review_deadline
    }

    /// For a `wait` task: the key of its event and how long it waits.
    pub(super) fn wait_for(&self) -> Option<(&str, Duration)> {
        let timeout = self.extra.as_ref()?.wait_timeout?;
        Some((self.record.event.as_deref().unwrap_or_default(), timeout))
    }
}

/// Output-less stand-in for a succeeded task's missing output in a re-planning prompt.
static NULL: Value = Value::Null;

/// One objective.
pub(super) struct ObjectiveRun {
    pub(super) goal: String,
    pub(super) priority: i32,
    pub(super) limits: Limits,
    pub(super) status: ObjectiveStatus,
    pub(super) failure: Option<String>,
    pub(super) tasks: Vec<TaskId>,
    pub(super) keys: FxHashMap<TaskKey, TaskId>,
    pub(super) unfinished: usize,
    /// Submitted without tasks: the planner decomposed it.
    pub(super) planned: bool,
    /// Re-plans asked for so far.
    pub(super) replans: u32,
    /// Succeeded tasks that have a compensation, in the order they succeeded.
    pub(super) compensable: Vec<TaskId>,
    /// While compensating: the compensations still to run, and why the objective failed.
    pub(super) saga: Option<Saga>,
    /// Model tokens (input and output) spent by every attempt so far.
    pub(super) tokens: u64,
    /// The known cost of its attempts, in micro-dollars (an attempt at an unknown price adds
    /// nothing).
    pub(super) cost_usd_micros: u64,
    /// Set while it is paused at a spending limit (`on_budget: approve`): it starts no attempt.
    pub(super) budget_pause: Option<BudgetPause>,
    /// Its budgets as a person last raised them (`None`: as submitted, in `limits`).
    pub(super) raised: Option<Budgets>,
    /// Its workflow span (`swarm_agents::trace`), held from submission (or recovery) to its
    /// end and given to each attempt as the parent of the attempt's span: the objective
    /// outlives any one handler turn, so the span is data, not an instrumented future.
    /// Disabled unless traces are exported.
    pub(super) span: tracing::Span,
}

impl ObjectiveRun {
    pub(super) fn new(goal: String, priority: i32, limits: Limits, tasks: usize) -> Self {
        Self {
            goal,
            priority,
            limits,
            status: ObjectiveStatus::Running,
            failure: None,
            tasks: Vec::with_capacity(tasks),
            keys: FxHashMap::default(),
            unfinished: 0,
            planned: false,
            replans: 0,
            compensable: Vec::new(),
            saga: None,
            tokens: 0,
            cost_usd_micros: 0,
            budget_pause: None,
            raised: None,
            span: tracing::Span::none(),
        }
    }

    /// Its spending limits as they stand: as submitted, or as a person last raised them.
    pub(super) fn budgets(&self) -> Budgets {
        self.raised.unwrap_or(Budgets {
            token_budget: self.limits.token_budget,
            cost_budget: self.limits.cost_budget,
        })
    }

    /// True when passing a budget fails the objective rather than pausing it.
    pub(super) fn fails_over_budget(&self) -> bool {
        self.limits.on_budget == OnBudget::Fail
    }

    /// The spending limit the objective is over, with the reason naming it, if it is.
    pub(super) fn over_budget(&self) -> Option<BudgetPause> {
        let budgets = self.budgets();
        if let Some(budget) = budgets.token_budget
            && self.tokens > budget
        {
            return Some(BudgetPause {
                limit: BudgetLimit::TokenBudget,
                reason: format!(
                    "the objective spent {} model tokens, over its `token_budget` of {budget}",
                    self.tokens
                ),
            });
        }
        if let Some(budget) = budgets.cost_budget
            && self.cost_usd_micros > budget.micros()
        {
            return Some(BudgetPause {
                limit: BudgetLimit::CostBudget,
                reason: format!(
                    "the objective spent {} on models, over its `cost_budget` of {budget}",
                    Usd(self.cost_usd_micros)
                ),
            });
        }
        None
    }
}

/// An objective's tasks as graph validation sees them (to check tasks added to it).
pub(super) struct ObjectiveTasks<'a> {
    pub(super) run: &'a ObjectiveRun,
    pub(super) tasks: &'a Slab<TaskNode>,
}

impl ExistingTasks for ObjectiveTasks<'_> {
    fn depth(&self, key: &TaskKey) -> Option<u32> {
        let id = self.run.keys.get(key)?;
        self.tasks.get(*id).map(|n| n.depth)
    }
    fn count(&self) -> usize {
        self.run.tasks.len()
    }
    fn dependents(&self, key: &TaskKey) -> usize {
        self.run
            .keys
            .get(key)
            .and_then(|id| self.tasks.get(*id))
            .map_or(0, |n| n.dependents.len())
    }
}

/// The objectives held in memory and their tasks.
pub(super) struct Graph {
    pub(super) tasks: Slab<TaskNode>,
    pub(super) objectives: FxHashMap<ObjectiveId, ObjectiveRun>,
    /// The id of the next task added.
    pub(super) next_task: u64,
}

impl Default for Graph {
    fn default() -> Self {
        Self {
            tasks: Slab::default(),
            objectives: FxHashMap::default(),
            next_task: 1,
        }
    }
}

impl Graph {
    /// Adds validated tasks to an objective and returns their ids (consecutive, in order).
    /// `extras` is what `check_tasks` returned for them.
    pub(super) fn add_tasks(
        &mut self,
        objective: ObjectiveId,
        run: &mut ObjectiveRun,
        specs: &[TaskSpec],
        depths: &[u32],
        parent: Option<TaskId>,
        mut extras: BatchExtras,
    ) -> Vec<TaskId> {
        // An objective that may pause at a budget counts its attempts too, so a pause can hold
        // its ready tasks back (see `Dispatch::pause`).
        let capped =
            run.limits.max_concurrency.is_some() || run.limits.on_budget == OnBudget::Approve;
        let first = self.next_task;
        self.next_task += specs.len() as u64;
        let ids: Vec<TaskId> = (0..specs.len() as u64).map(|i| TaskId(first + i)).collect();
        run.keys.reserve(specs.len());
        for (spec, &id) in specs.iter().zip(&ids) {
            run.keys.insert(spec.id.clone(), id);
        }
        for (i, ((spec, &id), &depth)) in specs.iter().zip(&ids).zip(depths).enumerate() {
            let deps = link(&spec.depends_on, parent, |k| run.keys.get(k).copied());
            let mut waiting_on = 0;
            for dep in &deps {
                match self.tasks.get_mut(*dep) {
                    Some(d) => {
                        d.dependents.push(id);
                        if d.record.status != TaskStatus::Succeeded {
                            waiting_on += 1;
                        }
                    }
                    // A dependency added in this same batch (later in the order).
                    None => waiting_on += 1,
                }
            }
            let input = Arc::new(spec.input.clone());
            let mut extra = extras.get_mut(i).and_then(Option::take);
            if spec.kind == TaskKind::Wait {
                extra.get_or_insert_default().wait_timeout = Some(spec.timeout.unwrap_or_default());
            }
            if let Some(deadline) = spec.review_deadline() {
                extra.get_or_insert_default().review_deadline = Some(deadline);
            }
            self.tasks.insert(
                id,
                TaskNode {
                    record: TaskRecord::declared(id, spec, objective, parent, deps),
                    objective,
                    priority: run.priority,
                    retry: spec.retry,
                    idle_timeout: spec.idle_timeout,
                    hard_timeout: spec.hard_timeout,
                    input: input.clone(),
                    declared_input: input,
                    dependents: Vec::new(),
                    waiting_on,
                    depth,
                    queued: None,
                    retry_due: false,
                    avoid: None,
                    prefer_not: None,
                    ready_at: Instant::now(),
                    capped,
                    extra,
                },
            );
        }
        // Second pass: edges from tasks of this batch to later tasks of this batch.
        for &id in &ids {
            let deps = match self.tasks.get(id) {
                Some(n) => n.record.deps.clone(),
                None => continue,
            };
            for dep in deps {
                if dep.0 >= first
                    && dep > id
                    && let Some(d) = self.tasks.get_mut(dep)
                {
                    d.dependents.push(id);
                }
            }
        }
        run.tasks.extend_from_slice(&ids);
        run.unfinished += ids.len();
        ids
    }

    /// The outputs of a task's dependencies, by name. A planning task's output (the plan its
    /// tasks came from) is not one of them: the edge only orders the plan's tasks after it.
    pub(super) fn upstream(&self, node: &TaskNode) -> BTreeMap<TaskKey, Value> {
        node.record
            .deps
            .iter()
            .filter_map(|d| self.tasks.get(*d))
            .filter(|d| d.record.planning.is_none())
            .map(|d| {
                (
                    d.record.key.clone(),
                    d.record.output.clone().unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Sets the task's input from its dependencies' outputs; `Err` says why it cannot be built.
    /// (Inlined: `resolve` runs for every task that becomes ready, and the call otherwise costs
    /// a measurable share of the allocation path.)
    #[inline(always)]
    pub(super) fn build_input(&mut self, id: TaskId) -> Option<Result<ObjectiveId, String>> {
        let node = self.tasks.get(id)?;
        // Dependency outputs are only gathered here when the input refers to them; the agent's
        // `upstream` map is built at dispatch.
        let resolved = if node.record.deps.is_empty() || !has_references(&node.declared_input) {
            Ok(None)
        } else {
            resolve_input(&node.declared_input, &self.upstream(node)).map(|v| Some(Arc::new(v)))
        };
        let objective = node.objective;
        Some(match resolved {
            Ok(input) => {
                if let Some(input) = input
                    && let Some(node) = self.tasks.get_mut(id)
                {
                    node.input = input;
                }
                Ok(objective)
            }
            Err(err) => Err(format!("input could not be built: {err}")),
        })
    }

    /// Where an objective's work stands, for a re-planning prompt (planning tasks left out).
    pub(super) fn progress<'a>(
        &'a self,
        run: &'a ObjectiveRun,
        failed_task: Option<TaskId>,
    ) -> planner::Progress<'a> {
        let mut progress = planner::Progress {
            failed_task: failed_task
                .and_then(|t| self.tasks.get(t))
                .map(|n| &n.record.key),
            ..planner::Progress::default()
        };
        for node in run.tasks.iter().filter_map(|t| self.tasks.get(*t)) {
            if node.record.planning.is_some() {
                continue;
            }
            match node.record.status {
                TaskStatus::Succeeded => progress.succeeded.push((
                    &node.record.key,
                    node.record.output.as_ref().unwrap_or(&NULL),
                )),
                TaskStatus::Failed => progress.failed.push((
                    &node.record.key,
                    node.record.error.as_deref().unwrap_or("failed"),
                )),
                TaskStatus::Cancelled => progress.dropped.push(&node.record.key),
                status => progress.pending.push((&node.record.key, status)),
            }
        }
        progress
    }

    /// `specs`, each also depending on `parent` (follow-ups and a plan's tasks run after the
    /// task that produced them).
    pub(super) fn with_parent(&self, parent: TaskId, specs: &[TaskSpec]) -> Vec<TaskSpec> {
        let parent_key = self.tasks.get(parent).map(|n| n.record.key.clone());
        specs
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(k) = &parent_key
                    && !s.depends_on.contains(k)
                {
                    s.depends_on.push(k.clone());
                }
                s
            })
            .collect()
    }

    /// Every task that depends on `id`, directly or not, by increasing id.
    pub(super) fn dependents_of(&self, id: TaskId) -> Vec<TaskId> {
        let mut seen = FxHashSet::default();
        let mut stack = vec![id];
        while let Some(t) = stack.pop() {
            if let Some(node) = self.tasks.get(t) {
                for &d in &node.dependents {
                    if seen.insert(d) {
                        stack.push(d);
                    }
                }
            }
        }
        let mut all: Vec<TaskId> = seen.into_iter().collect();
        all.sort_unstable();
        all
    }

    /// Adds the compensation of `original` to its objective as task `task` (not yet ready).
    pub(super) fn add_compensation(
        &mut self,
        objective: ObjectiveId,
        original: TaskId,
        task: TaskId,
    ) {
        let Some(node) = self.tasks.get(original) else {
            return;
        };
        let Some(compensation) = node.extra.as_ref().and_then(|e| e.compensation.as_ref()) else {
            return;
        };
        let spec = compensation.task_spec(&node.record.key);
        let input = Arc::new(spec.input);
        let compensation_node = TaskNode {
            // Its input and `upstream` come from the compensated task's output.
            record: TaskRecord::compensation(task, spec.id, spec.capability, original),
            objective,
            priority: node.priority,
            retry: spec.retry,
            idle_timeout: spec.idle_timeout,
            hard_timeout: spec.hard_timeout,
            input: input.clone(),
            declared_input: input,
            dependents: Vec::new(),
            waiting_on: 0,
            depth: node.depth,
            queued: None,
            retry_due: false,
            avoid: None,
            prefer_not: None,
            ready_at: Instant::now(),
            // One runs at a time: the cap is not theirs to count against.
            capped: false,
            extra: None,
        };
        self.tasks.insert(task, compensation_node);
        self.next_task = self.next_task.max(task.0 + 1);
        if let Some(run) = self.objectives.get_mut(&objective) {
            run.tasks.push(task);
        }
    }

    /// Drops a finished objective and its tasks from memory (the log still has them).
    pub(super) fn forget(&mut self, id: ObjectiveId) {
        let Some(run) = self.objectives.remove(&id) else {
            return;
        };
        for task in run.tasks {
            self.tasks.remove(task);
        }
    }

    /// The state of an objective and its tasks.
    pub(super) fn view(&self, id: ObjectiveId) -> Option<ObjectiveView> {
        let run = self.objectives.get(&id)?;
        let tasks = run.tasks.iter().filter_map(|t| self.tasks.get(*t));
        Some(objective_view(
            id,
            &run.goal,
            run.status,
            run.failure.as_deref(),
            run.budget_pause.as_ref(),
            tasks.map(|n| &n.record),
        ))
    }

    /// One page of the tasks held in memory (every unfinished objective's, and the finished
    /// ones not yet dropped), across objectives, by task id. Linear in the tasks held (one
    /// objective's, with that filter), since `total` counts every match: for people looking,
    /// not for the hot path.
    pub(super) fn task_page(&self, query: &TaskQuery) -> TaskPage {
        let matches = |node: &TaskNode| {
            query.status.is_none_or(|s| node.record.status == s)
                && query
                    .capability
                    .as_ref()
                    .is_none_or(|c| node.record.capability == *c)
                && query.agent.is_none_or(|a| node.record.agent == Some(a))
                && query.objective.is_none_or(|o| node.objective == o)
        };
        let beyond = |id: TaskId| match (query.after, query.newest_first) {
            (None, _) => true,
            (Some(after), false) => id > after,
            (Some(after), true) => id < after,
        };
        let in_run = |run: &'_ ObjectiveRun| -> Vec<TaskId> {
            if query.newest_first {
                run.tasks.iter().rev().copied().collect()
            } else {
                run.tasks.clone()
            }
        };
        let candidates: Box<dyn Iterator<Item = (TaskId, &TaskNode)> + '_> = match query.objective {
            // One objective's tasks are listed by id already.
            Some(o) => match self.objectives.get(&o) {
                Some(run) => Box::new(
                    in_run(run)
                        .into_iter()
                        .filter_map(|t| self.tasks.get(t).map(|n| (t, n))),
                ),
                None => Box::new(std::iter::empty()),
            },
            None if query.newest_first => Box::new(self.tasks.iter().rev()),
            None => Box::new(self.tasks.iter()),
        };
        let mut total = 0u64;
        let mut page: Vec<(TaskId, &TaskNode)> = Vec::new();
        let mut more = false;
        for (id, node) in candidates.filter(|(_, node)| matches(node)) {
            total += 1;
            if beyond(id) {
                if page.len() < query.limit {
                    page.push((id, node));
                } else {
                    more = true;
                }
            }
        }
        let next = if more {
            page.last().map(|(id, _)| *id)
        } else {
            None
        };
        let tasks = page
            .into_iter()
            .map(|(_, node)| TaskItem {
                objective: node.objective,
                goal: self
                    .objectives
                    .get(&node.objective)
                    .map(|run| run.goal.clone())
                    .unwrap_or_default(),
                task: node.record.view(),
            })
            .collect();
        TaskPage { tasks, next, total }
    }

    /// How an objective stands, without its tasks.
    pub(super) fn summary(&self, id: ObjectiveId) -> Option<ObjectiveSummary> {
        self.objectives.get(&id).map(|run| ObjectiveSummary {
            id,
            status: run.status,
            failure: run.failure.clone(),
            tasks: run.tasks.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests;
