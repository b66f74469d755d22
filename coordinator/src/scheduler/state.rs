//! The scheduler's state and every transition of it. The actor in `scheduler.rs` only routes
//! messages here, so this logic can be read (and tested) without the mailbox around it.
//!
//! The allocation invariant and fairness (ready queues, parking, bursts) live in
//! [`Dispatch`], which decides where a ready task goes; this state starts the attempt.
//!
//! Sagas: when an objective fails, the compensations of its succeeded tasks run one at a time,
//! newest success first, as tasks of the objective (`start_compensation`,
//! `next_compensation`); it ends `Failed` after the last.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use swarm_agents::ReportInbox;
use swarm_protocol::graph::{self, ExistingTasks, GraphError, NoTasks};
use swarm_protocol::task::{Compensation, resolve_input};
use swarm_protocol::task::{check_compensation_references, check_references, has_references};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, Event, FailureKind, Limits, Objective, ObjectiveId,
    ObjectiveStatus, ObjectiveSummary, ObjectiveView, OutputError, Report, RetryPolicy,
    ReviewDecision, SchedulerError, SchedulerMsg, SchedulerStats, Task, TaskId, TaskItem, TaskKey,
    TaskKind, TaskOutcome, TaskPage, TaskQuery, TaskSpec, TaskStatus, Usage,
    objective::check_idempotency_key,
};
use swarm_registry::{Lease, Registry};

use super::SchedulerConfig;
use super::dispatch::Dispatch;
use super::planner::{self, PLAN_CAPABILITY, PLAN_KEY};
use super::record::{TaskRecord, link, objective_view, task_of};
use super::schema::{OutputSchema, review_reason};
use super::slab::Slab;
use super::spawn;
use super::waits::Waits;
use crate::journal::{Delivery, Effects, Journal, now_ms};
use crate::replay::{ObjectiveModel, Recovered};

/// The registry as the coordinator uses it: agents are reached through their actor refs.
pub type AgentRegistry = Registry<ActorRef<AgentMsg>>;

/// Per task of a batch, its [`TaskExtra`]; empty when no task of the batch has one.
pub(super) type Extras = Vec<Option<Box<TaskExtra>>>;

/// What an attempt cost, carried into its event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Spent {
    pub(super) usage: Option<Usage>,
    pub(super) duration: Option<Duration>,
}

/// A plan that passed every check.
pub(super) struct CheckedPlan {
    /// Its tasks as the planner declared them (as `TasksSpawned` records them).
    pub(super) specs: Vec<TaskSpec>,
    /// The same, each also depending on the planning task, as validated.
    pub(super) with_parent: Vec<TaskSpec>,
    /// The depth of each.
    pub(super) depths: Vec<u32>,
    /// Their compiled schemas and compensations.
    pub(super) extras: Extras,
}

/// A successful attempt's result, on its way into the graph.
pub(super) struct Answer {
    pub(super) agent: AgentId,
    pub(super) output: Value,
    pub(super) usage: Option<Usage>,
    pub(super) duration: Duration,
}

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
}

/// An objective's compensations in progress.
pub(super) struct Saga {
    /// Why the objective failed; its `ObjectiveFailed` says so once the saga is over.
    pub(super) reason: String,
    /// Compensation tasks not yet started, in the order they run.
    pub(super) pending: VecDeque<TaskId>,
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
        }
    }

    pub(super) fn over_budget(&self) -> bool {
        self.limits
            .token_budget
            .is_some_and(|budget| self.tokens > budget)
    }
}

/// Lets graph validation see an objective's existing tasks (for spawned tasks).
pub(super) struct Existing<'a> {
    pub(super) run: &'a ObjectiveRun,
    pub(super) tasks: &'a Slab<TaskNode>,
}

impl ExistingTasks for Existing<'_> {
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

/// Everything the scheduler owns.
pub struct SchedulerState {
    pub(super) registry: AgentRegistry,
    pub(super) myself: ActorRef<SchedulerMsg>,
    pub(super) config: SchedulerConfig,
    pub(super) journal: Box<dyn Journal>,
    pub(super) delivery: Arc<Delivery>,
    /// What the current turn does once its events are durable.
    pub(super) effects: Effects,
    /// Idempotency keys of submitted objectives: the objective and its fingerprint.
    pub(super) idempotency: FxHashMap<String, (ObjectiveId, u64)>,
    pub(super) objectives: FxHashMap<ObjectiveId, ObjectiveRun>,
    /// Finished objectives still in memory, oldest first, with the sequence number of the
    /// event that ended them (only kept track of with a durable log, which holds them once
    /// they are dropped).
    pub(super) finished: VecDeque<(ObjectiveId, u64)>,
    pub(super) tasks: Slab<TaskNode>,
    /// The ready queues, parking and what the turn sends to agents.
    pub(super) dispatch: Dispatch<ActorRef<AgentMsg>>,
    pub(super) waiters: FxHashMap<ObjectiveId, Vec<RpcReplyPort<Option<ObjectiveSummary>>>>,
    pub(super) reports: ReportInbox,
    pub(super) next_task: u64,
    pub(super) rng: fastrand::Rng,
    pub(super) stats: SchedulerStats,
    /// The wall clock when the current handler turn began (ms since the Unix epoch): attempts
    /// started in the turn are stamped with it, so an assignment reads no clock.
    pub(super) turn_ms: u64,
    /// Posted events and the `wait` tasks waiting for them.
    pub(super) waits: Waits,
}

impl SchedulerState {
    pub(crate) fn new(
        registry: AgentRegistry,
        myself: ActorRef<SchedulerMsg>,
        journal: Box<dyn Journal>,
        config: SchedulerConfig,
        reports: ReportInbox,
    ) -> Self {
        let delivery = Arc::new(Delivery::new(registry.clone(), myself.clone()));
        Self {
            registry,
            myself,
            config,
            journal,
            effects: Effects::new(delivery.clone()),
            delivery,
            idempotency: FxHashMap::default(),
            objectives: FxHashMap::default(),
            finished: VecDeque::new(),
            tasks: Slab::default(),
            dispatch: Dispatch::new(config.burst_divisor),
            waiters: FxHashMap::default(),
            reports,
            next_task: 1,
            rng: fastrand::Rng::new(),
            stats: SchedulerStats::default(),
            turn_ms: now_ms(),
            waits: Waits::default(),
        }
    }

    // ---- Submission -------------------------------------------------------------------------

    /// Validates and accepts an objective; its tasks without dependencies become ready. A key
    /// used before returns the objective first submitted with it (if the objective is the
    /// same).
    pub(crate) fn submit(
        &mut self,
        mut objective: Objective,
        idempotency_key: Option<String>,
    ) -> Result<ObjectiveId, SchedulerError> {
        objective.limits.max_tasks = objective.limits.max_tasks.min(Limits::MAX_TASKS_CEILING);
        let fingerprint = match &idempotency_key {
            Some(key) => {
                check_idempotency_key(key).map_err(SchedulerError::BadIdempotencyKey)?;
                let fingerprint = objective.fingerprint();
                if let Some(&(existing, first)) = self.idempotency.get(key) {
                    return if first == fingerprint {
                        Ok(existing)
                    } else {
                        Err(SchedulerError::IdempotencyConflict {
                            key: key.clone(),
                            existing,
                        })
                    };
                }
                fingerprint
            }
            None => 0,
        };
        if self.stats.objectives_running as usize >= self.config.max_objectives_running {
            return Err(SchedulerError::Overloaded(
                self.config.max_objectives_running,
            ));
        }
        let planned = objective.tasks.is_empty();
        let (depths, extras) = if planned {
            // The goal alone: a planning task decomposes it, on an agent with capability `plan`.
            let plan = Self::planning_spec(PLAN_KEY).ok_or(SchedulerError::NoPlanner)?;
            if !self.registry.knows_capability(&plan.capability) {
                return Err(SchedulerError::NoPlanner);
            }
            // The planning task counts against the limits like any task.
            graph::validate(std::slice::from_ref(&plan), &NoTasks, &objective.limits)?;
            (Vec::new(), Extras::new())
        } else {
            let depths = graph::validate(&objective.tasks, &NoTasks, &objective.limits)?;
            let extras = self.check_tasks(&objective.tasks)?;
            (depths, extras)
        };

        let id = ObjectiveId::new();
        let first = TaskId(self.next_task);
        let mut run = ObjectiveRun::new(
            objective.goal.clone(),
            objective.priority,
            objective.limits,
            objective.tasks.len().max(1),
        );
        run.planned = planned;
        let new_ids = self.add_tasks(id, &mut run, &objective.tasks, &depths, None, extras);
        self.objectives.insert(id, run);
        self.dispatch.limit(id, objective.limits.max_concurrency);
        self.arm_deadline(id, objective.limits.deadline);
        self.stats.objectives_running += 1;
        if let Some(key) = &idempotency_key {
            self.idempotency.insert(key.clone(), (id, fingerprint));
        }
        self.emit(Event::ObjectiveSubmitted {
            objective: id,
            spec: objective,
            first_task: first,
            idempotency_key,
        });
        if planned {
            if self.request_plan(id, 0, None).is_none() {
                // Validated above, so this does not happen; but an objective must not be left
                // running with nothing to run.
                let reason = "the planning task could not be added".to_owned();
                self.end_objective(id, ObjectiveStatus::Failed, Some(reason));
            }
            return Ok(id);
        }
        for task in new_ids {
            if self.tasks.get(task).is_some_and(|n| n.waiting_on == 0) {
                self.make_ready(task);
            }
        }
        Ok(id)
    }

    /// A planning task's declaration: capability `plan`, no input (it is built when the task
    /// starts).
    pub(super) fn planning_spec(key: &str) -> Option<TaskSpec> {
        let key = TaskKey::new(key).ok()?;
        let capability = Capability::new(PLAN_CAPABILITY).ok()?;
        Some(TaskSpec::new(key, capability))
    }

    /// Adds a planning task to a running objective (`plan`, or `replan-N` after `failed`
    /// failed for good) and makes it ready. `None` when the objective's limits leave no room.
    pub(super) fn request_plan(
        &mut self,
        objective: ObjectiveId,
        replan: u32,
        failed: Option<TaskId>,
    ) -> Option<TaskId> {
        let mut run = self.objectives.remove(&objective)?;
        let base = if replan == 0 {
            PLAN_KEY.to_owned()
        } else {
            format!("replan-{replan}")
        };
        // A user's graph may already use the name.
        let spec = (1..=100u32)
            .map(|n| match n {
                1 => base.clone(),
                n => format!("{base}-{n}"),
            })
            .filter_map(|key| Self::planning_spec(&key))
            .find(|spec| !run.keys.contains_key(&spec.id));
        let checked = spec.and_then(|spec| {
            let existing = Existing {
                run: &run,
                tasks: &self.tasks,
            };
            graph::validate(std::slice::from_ref(&spec), &existing, &run.limits)
                .ok()
                .map(|depths| (spec, depths))
        });
        let Some((spec, depths)) = checked else {
            self.objectives.insert(objective, run);
            return None;
        };
        let ids = self.add_tasks(
            objective,
            &mut run,
            std::slice::from_ref(&spec),
            &depths,
            None,
            Extras::new(),
        );
        run.replans = run.replans.max(replan);
        self.objectives.insert(objective, run);
        let task = *ids.first()?;
        self.emit(Event::PlanRequested {
            objective,
            task,
            spec: Box::new(spec),
            replan,
            failed,
        });
        self.make_ready(task);
        Some(task)
    }

    /// Checks what graph validation cannot: capabilities, `$from` references, output schemas
    /// and compensations. Returns each task's [`TaskExtra`] (schemas compiled here, once), or
    /// an empty list when no task has one.
    pub(super) fn check_tasks(&self, specs: &[TaskSpec]) -> Result<Extras, SchedulerError> {
        let mut known: Option<&Capability> = None;
        let mut extras = Extras::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.kind == TaskKind::Agent && known != Some(&spec.capability) {
                if !self.registry.knows_capability(&spec.capability) {
                    return Err(SchedulerError::UnknownCapability {
                        task: spec.id.clone(),
                        capability: spec.capability.clone(),
                    });
                }
                known = Some(&spec.capability);
            }
            check_references(spec).map_err(|e| SchedulerError::BadInput {
                task: spec.id.clone(),
                reason: e.to_string(),
            })?;
            if spec.output_schema.is_none() && spec.compensation.is_none() {
                continue;
            }
            if let Some(compensation) = &spec.compensation {
                if !self.registry.knows_capability(&compensation.capability) {
                    return Err(SchedulerError::BadCompensation {
                        task: spec.id.clone(),
                        field: "capability",
                        reason: format!(
                            "no registered agent has capability `{}`",
                            compensation.capability
                        ),
                    });
                }
                check_compensation_references(spec).map_err(|e| {
                    SchedulerError::BadCompensation {
                        task: spec.id.clone(),
                        field: "input",
                        reason: e.to_string(),
                    }
                })?;
            }
            let schema = match &spec.output_schema {
                Some(schema) => Some(OutputSchema::compile(schema).map_err(|reason| {
                    SchedulerError::BadSchema {
                        task: spec.id.clone(),
                        reason,
                    }
                })?),
                None => None,
            };
            if extras.is_empty() {
                extras.resize_with(specs.len(), || None);
            }
            extras[i] = Some(Box::new(TaskExtra {
                schema,
                compensation: spec.compensation.clone(),
                ..TaskExtra::default()
            }));
        }
        Ok(extras)
    }

    /// The extras of tasks accepted before a restart: they were checked then, so a schema that
    /// no longer compiles (a newer validator) is dropped with a warning rather than losing the
    /// objective.
    pub(super) fn restored_extras(specs: &[TaskSpec]) -> Extras {
        let mut extras = Extras::new();
        for (i, spec) in specs.iter().enumerate() {
            if spec.output_schema.is_none() && spec.compensation.is_none() {
                continue;
            }
            let schema = spec.output_schema.as_ref().and_then(|schema| {
                OutputSchema::compile(schema)
                    .map_err(|err| {
                        tracing::warn!(task = %spec.id, %err, "output_schema no longer compiles");
                    })
                    .ok()
            });
            if extras.is_empty() {
                extras.resize_with(specs.len(), || None);
            }
            extras[i] = Some(Box::new(TaskExtra {
                schema,
                compensation: spec.compensation.clone(),
                ..TaskExtra::default()
            }));
        }
        extras
    }

    /// Sets the timer of an objective's deadline.
    pub(super) fn arm_deadline(&self, objective: ObjectiveId, deadline: Option<Duration>) {
        if let Some(deadline) = deadline {
            self.myself
                .send_after(deadline, move || SchedulerMsg::DeadlinePassed { objective });
        }
    }

    /// Adds validated tasks to an objective and returns their ids (consecutive, in order).
    /// `extras` is what `check_tasks` returned for them.
    pub(super) fn add_tasks(
        &mut self,
        objective: ObjectiveId,
        run: &mut ObjectiveRun,
        specs: &[TaskSpec],
        depths: &[u32],
        parent: Option<TaskId>,
        mut extras: Extras,
    ) -> Vec<TaskId> {
        let capped = run.limits.max_concurrency.is_some();
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

    // ---- Recovery ---------------------------------------------------------------------------

    /// Rebuilds every unfinished objective from the log. Tasks recorded as succeeded keep their
    /// output and never run again; an attempt that was running when the coordinator stopped is
    /// recorded as lost and the task runs again with the next attempt (and so the next
    /// idempotency key); a pending retry waits out the rest of its backoff.
    pub(crate) fn restore(&mut self, recovered: Recovered) {
        for (key, id, fingerprint) in recovered.keys {
            self.idempotency.insert(key, (id, fingerprint));
        }
        let now = now_ms();
        // Events first, so a task that was waiting finds one posted before the restart.
        for stored in recovered.posted {
            self.keep(stored.event, stored.idempotency_key, now);
        }
        for model in recovered.replay.unfinished() {
            self.restore_objective(model, now);
        }
        self.next_task = self.next_task.max(recovered.next_task);
    }

    pub(super) fn restore_objective(&mut self, model: &ObjectiveModel, now: u64) {
        let id = model.id;
        let mut run = ObjectiveRun::new(
            model.goal.clone(),
            model.priority,
            model.limits,
            model.tasks.len(),
        );
        run.planned = model.planned;
        run.replans = model.replans;
        for batch in &model.batches {
            let mut specs = batch.specs.clone();
            if let Some(parent) = batch.parent.and_then(|p| model.task(p)) {
                for spec in &mut specs {
                    if !spec.depends_on.contains(&parent.key) {
                        spec.depends_on.push(parent.key.clone());
                    }
                }
            }
            let depths = {
                let existing = Existing {
                    run: &run,
                    tasks: &self.tasks,
                };
                // Accepted once, so valid; depths only bound later spawns.
                graph::validate(&specs, &existing, &run.limits)
                    .unwrap_or_else(|_| vec![1; specs.len()])
            };
            self.next_task = batch.first_task.0;
            let extras = Self::restored_extras(&specs);
            self.add_tasks(id, &mut run, &specs, &depths, batch.parent, extras);
        }
        run.compensable = model.compensable.clone();
        run.tokens = model
            .tasks
            .iter()
            .map(|t| t.usage.input_tokens + t.usage.output_tokens)
            .sum();
        let compensating = model.status == ObjectiveStatus::Compensating;
        if compensating {
            run.status = ObjectiveStatus::Compensating;
            run.failure = model.failure.clone();
            run.saga = Some(Saga {
                reason: model.failure.clone().unwrap_or_default(),
                pending: VecDeque::new(),
            });
        }
        self.objectives.insert(id, run);
        if !compensating {
            self.dispatch.limit(id, model.limits.max_concurrency);
        }
        self.stats.objectives_running += 1;
        // Compensation tasks are not in any batch: they are built again from the specs of the
        // tasks they compensate.
        for t in &model.tasks {
            if let Some(original) = t.compensates {
                self.add_compensation(id, original, t.id);
            }
        }
        // Outcomes first, so dependents count only unfinished dependencies.
        for t in &model.tasks {
            let Some(node) = self.tasks.get_mut(t.id) else {
                continue;
            };
            // The record as the log tells it, but with the graph's own links (made again
            // from the batches above; a snapshot written before records kept them has none).
            // A task that was on its way (ready, running, waiting) is taken up again below;
            // until then it is in the backlog, holding no slot.
            let mut record = t.clone();
            record.deps = std::mem::take(&mut node.record.deps);
            if !matches!(
                t.status,
                TaskStatus::Succeeded
                    | TaskStatus::Review
                    | TaskStatus::Failed
                    | TaskStatus::Cancelled
            ) {
                record.status = TaskStatus::Backlog;
            }
            node.record = record;
            match t.status {
                TaskStatus::Succeeded => {
                    if t.compensates.is_some() {
                        continue;
                    }
                    let dependents = node.dependents.clone();
                    for d in dependents {
                        if let Some(dep) = self.tasks.get_mut(d) {
                            dep.waiting_on = dep.waiting_on.saturating_sub(1);
                        }
                    }
                    if let Some(run) = self.objectives.get_mut(&id) {
                        run.unfinished = run.unfinished.saturating_sub(1);
                    }
                }
                TaskStatus::Review => self.stats.tasks_in_review += 1,
                _ => {}
            }
        }
        if compensating {
            self.resume_saga(model, now);
            return;
        }
        for t in &model.tasks {
            match t.status {
                TaskStatus::Running => self.restore_running(id, t.id, t.attempt, t.agent, now),
                TaskStatus::Ready => self.restore_ready(t.id, t.retry_at_ms, now),
                TaskStatus::Waiting => self.restore_wait(t.id, t.wait_until_ms, now),
                TaskStatus::Backlog
                    if self.tasks.get(t.id).is_some_and(|n| {
                        n.record.status == TaskStatus::Backlog && n.waiting_on == 0
                    }) =>
                {
                    self.make_ready(t.id);
                }
                _ => {}
            }
            if self
                .objectives
                .get(&id)
                .is_none_or(|run| run.status != ObjectiveStatus::Running)
            {
                return;
            }
        }
        if self
            .objectives
            .get(&id)
            .is_some_and(|run| run.unfinished == 0)
        {
            self.end_objective(id, ObjectiveStatus::Succeeded, None);
            return;
        }
        if let Some(deadline) = model.limits.deadline {
            let due = model
                .submitted_at_ms
                .saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
            if due <= now {
                self.on_deadline(id);
            } else {
                self.arm_deadline(id, Some(Duration::from_millis(due - now)));
            }
        }
    }

    /// An attempt that was running when the coordinator stopped: recorded as lost, and the
    /// task runs again (or fails, past `max_lost_attempts`).
    pub(super) fn restore_running(
        &mut self,
        objective: ObjectiveId,
        id: TaskId,
        attempt: u32,
        agent: Option<AgentId>,
        now: u64,
    ) {
        let reason = "the coordinator stopped while the attempt ran";
        self.emit(Event::AttemptLost {
            objective,
            task: id,
            attempt,
            agent,
            reason: reason.into(),
        });
        let lost = self.tasks.get(id).map_or(0, |n| n.record.lost);
        if lost > self.config.max_lost_attempts {
            let message = format!("{reason} (the task's attempts were lost {lost} times)");
            self.fail_task(
                id,
                agent,
                FailureKind::Transient,
                message,
                None,
                Spent::default(),
            );
        } else {
            self.restore_ready(id, None, now);
        }
    }

    /// A recovered objective that was compensating: the compensation that had started goes
    /// on (a running attempt is lost and runs again), the rest follow.
    pub(super) fn resume_saga(&mut self, model: &ObjectiveModel, now: u64) {
        let id = model.id;
        let mut current = None;
        let mut pending = VecDeque::new();
        for t in model.tasks.iter().filter(|t| t.compensates.is_some()) {
            match t.status {
                TaskStatus::Running | TaskStatus::Ready if current.is_none() => current = Some(t),
                TaskStatus::Backlog => pending.push_back(t.id),
                _ => {}
            }
        }
        if let Some(saga) = self.objectives.get_mut(&id).and_then(|r| r.saga.as_mut()) {
            saga.pending = pending;
        }
        match current {
            Some(t) if t.status == TaskStatus::Running => {
                self.restore_running(id, t.id, t.attempt, t.agent, now);
            }
            Some(t) => self.restore_ready(t.id, t.retry_at_ms, now),
            None => self.next_compensation(id),
        }
    }

    /// A recovered task that was ready: queue it now, or when its retry backoff ends.
    pub(super) fn restore_ready(&mut self, id: TaskId, retry_at_ms: Option<u64>, now: u64) {
        if self.resolve(id).is_none() {
            return;
        }
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        node.record.status = TaskStatus::Ready;
        node.ready_at = Instant::now();
        match retry_at_ms {
            Some(at) if at > now => {
                node.retry_due = true;
                let attempt = node.record.attempt;
                self.myself
                    .send_after(Duration::from_millis(at - now), move || {
                        SchedulerMsg::RetryDue { task: id, attempt }
                    });
            }
            _ => self.dispatch_ready(id),
        }
    }

    /// A recovered `wait` task that was waiting: it waits on for the rest of its time (and
    /// takes an event posted meanwhile), or fails now if its time is up.
    pub(super) fn restore_wait(&mut self, id: TaskId, until_ms: Option<u64>, now: u64) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        // The record as the log left it (no event: the wait goes on).
        node.record.status = TaskStatus::Waiting;
        node.record.started_at_ms = Some(now);
        let attempt = node.record.attempt;
        let Some((key, _)) = node.wait_for() else {
            return;
        };
        let key = key.to_owned();
        let until = until_ms.unwrap_or(now);
        node.record.wait_until_ms = Some(until);
        self.myself.send_after(
            Duration::from_millis(until.saturating_sub(now)),
            move || SchedulerMsg::WaitExpired { task: id, attempt },
        );
        self.take_or_wait(id, key);
    }

    // ---- Readiness and allocation ----------------------------------------------------------

    /// All dependencies succeeded: resolve the input and queue or dispatch the task.
    pub(super) fn make_ready(&mut self, id: TaskId) {
        if let Some(objective) = self.resolve(id) {
            self.mark_ready(objective, id);
        }
    }

    /// Builds the task's input from its dependencies' outputs; a task whose input cannot be
    /// built fails. Returns the objective when the input is ready.
    pub(super) fn resolve(&mut self, id: TaskId) -> Option<ObjectiveId> {
        match self.build_input(id)? {
            Ok(objective) => Some(objective),
            Err(message) => {
                self.fail_task(
                    id,
                    None,
                    FailureKind::Permanent,
                    message,
                    None,
                    Spent::default(),
                );
                None
            }
        }
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

    /// The task is ready from now on: record it and queue or dispatch it.
    pub(super) fn mark_ready(&mut self, objective: ObjectiveId, id: TaskId) {
        if let Some(node) = self.tasks.get_mut(id) {
            node.ready_at = Instant::now();
            // The fold's step for the event recorded next (see `TaskRecord::apply`).
            node.record.ready();
        }
        self.journal.record(Event::TaskReady {
            objective,
            task: id,
        });
        self.dispatch_ready(id);
    }

    /// A ready task goes to an agent, or, for the kinds the coordinator runs, starts waiting
    /// for its event or for a person.
    #[inline(always)]
    pub(super) fn dispatch_ready(&mut self, id: TaskId) {
        match self.tasks.get(id).map(|n| n.record.kind) {
            Some(TaskKind::Agent) => self.enqueue_or_dispatch(id),
            Some(TaskKind::Wait) => self.start_wait(id),
            Some(TaskKind::Approval) => self.request_approval(id),
            None => {}
        }
    }

    /// An `approval` task is ready: it goes to review with its input (what the person
    /// approves, and what its dependents get unless they edit it).
    pub(super) fn request_approval(&mut self, id: TaskId) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let input = Value::clone(&node.input);
        self.send_to_review(
            id,
            Some(input),
            "awaiting approval".into(),
            Vec::new(),
            Spent::default(),
            true,
        );
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

    /// Gives a ready task to an agent now if its queue is empty and an agent has room;
    /// otherwise queues it, or parks it while its objective is at its cap (see [`Dispatch`]).
    pub(super) fn enqueue_or_dispatch(&mut self, id: TaskId) {
        if let Some(lease) = self.dispatch.place(&mut self.tasks, &self.registry, id) {
            self.assign(id, lease);
        }
    }

    /// Starts the task's next attempt on the leased agent (sent when the handler ends).
    pub(super) fn assign(&mut self, id: TaskId, lease: Lease<ActorRef<AgentMsg>>) {
        // A planning task's prompt is built now, from the agents registered now.
        let built = self.plan_input(id);
        let Some(node) = self.tasks.get_mut(id) else {
            self.registry.release(lease.agent);
            return;
        };
        if let Some(input) = &built {
            node.input = Arc::new(input.clone());
        }
        node.queued = None;
        let (objective, attempt) = (node.objective, node.record.attempt + 1);
        // The fold's step for the `TaskStarted` recorded below (see `TaskRecord::apply`).
        node.record.started(attempt, lease.agent, self.turn_ms);
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let upstream = if node.record.deps.is_empty() {
            BTreeMap::new()
        } else {
            self.upstream(node)
        };
        let task = Task {
            id,
            objective,
            key: node.record.key.clone(),
            capability: node.record.capability.clone(),
            attempt,
            input: node.input.clone(),
            upstream,
            idle_timeout: node.idle_timeout,
            hard_timeout: node.hard_timeout,
        };
        let (ready_at, capped) = (node.ready_at, node.capped.then_some(objective));
        self.journal.record(Event::TaskStarted {
            objective,
            task: id,
            attempt,
            agent: lease.agent,
            input: built,
        });
        self.dispatch
            .assigned(lease, Assignment { task, ready_at }, capped);
        self.stats.allocations += 1;
        self.stats.tasks_running += 1;
    }

    /// A planning task's input: the goal, the capabilities registered now with their agents'
    /// descriptions, the room the limits leave, for a re-plan the work so far, and after a
    /// rejection the rejected plan and why. `None` for any other task.
    pub(super) fn plan_input(&self, id: TaskId) -> Option<Value> {
        let node = self.tasks.get(id)?;
        let planning = node.record.planning.as_deref()?;
        let run = self.objectives.get(&node.objective)?;
        let capabilities = planner::capabilities(&self.registry.snapshots());
        let room = planner::Room {
            tasks: u64::from(run.limits.max_tasks).saturating_sub(run.tasks.len() as u64),
            depth: run.limits.max_depth.saturating_sub(node.depth),
            fanout: run.limits.max_fanout,
        };
        let progress = (planning.replan > 0).then(|| self.progress(run, planning.failed));
        Some(planner::input(&planner::Request {
            goal: &run.goal,
            capabilities: &capabilities,
            room,
            progress,
            rejected: planning
                .rejected
                .as_ref()
                .map(|r| (&r.plan, r.errors.as_slice())),
        }))
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

    /// The agent has room: give it queued tasks of its capabilities, best first.
    pub(crate) fn pull_for(&mut self, agent: AgentId) {
        let Some(caps) = self.dispatch.capabilities_of(&self.registry, agent) else {
            return;
        };
        while let Some((task, lease)) =
            self.dispatch
                .next_for(&mut self.tasks, &self.registry, agent, &caps)
        {
            self.assign(task, lease);
        }
    }

    /// Offers the queues that got parked tasks back to their agents, until each is empty or
    /// no agent of its capability has room (which keeps the allocation invariant).
    pub(super) fn kick(&mut self) {
        while let Some((task, lease)) = self.dispatch.next_kicked(&mut self.tasks, &self.registry) {
            self.assign(task, lease);
        }
    }

    /// Ends a handler turn: the assignments made while handling the message (one batch per
    /// agent), then its cancellations and answers, go to the journal, which carries them out
    /// once the turn's events are durable. An agent whose actor turns out to be gone is marked
    /// down and its attempts are taken back (`AgentLost`).
    pub(crate) fn flush(&mut self) {
        if self.dispatch.has_kicks() {
            self.kick();
        }
        // The turn's batches are handed over now, so their allocation latency ends now: one
        // clock read per turn, not per assignment, into a fixed-bucket histogram (no lock, no
        // allocation). Assignments cancelled within the turn were never sent and are not counted.
        if let Some(now) = self.dispatch.outgoing().next().map(|_| Instant::now()) {
            for assignment in self.dispatch.outgoing() {
                self.stats
                    .allocation_latency
                    .record(now.saturating_duration_since(assignment.ready_at));
            }
        }
        let mut effects = std::mem::replace(&mut self.effects, Effects::new(self.delivery.clone()));
        self.dispatch.end_turn(&mut effects.sends);
        self.journal.commit(effects);
    }

    /// Answers a request once the current turn is durable (or at once when it failed and so
    /// changed nothing).
    pub(crate) fn reply_after_commit<T: Send + 'static>(
        &mut self,
        reply: RpcReplyPort<Result<T, SchedulerError>>,
        result: Result<T, SchedulerError>,
    ) {
        match result {
            Ok(value) => self.effects.replies.push(Box::new(move |durable| {
                let _ = reply.send(durable.map(|()| value).map_err(SchedulerError::Storage));
            })),
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    // ---- Outcomes ---------------------------------------------------------------------------

    /// Starts a handler turn: reads the wall clock once for the attempts it starts.
    pub(crate) fn begin_turn(&mut self) {
        self.turn_ms = now_ms();
    }

    /// Handles every report waiting in the report queue.
    pub(crate) fn drain_reports(&mut self) {
        while let Some((agent, reports)) = self.reports.try_next() {
            self.on_reports(agent, reports);
        }
    }

    /// Re-arms the report doorbell (before draining on `ReportsReady`).
    pub(crate) fn rearm_reports(&self) {
        self.reports.rearm();
    }

    /// Attempts ended on an agent.
    pub(crate) fn on_reports(&mut self, agent: AgentId, reports: Vec<Report>) {
        for report in reports {
            self.on_report(agent, report);
        }
        self.pull_for(agent);
    }

    pub(super) fn on_report(&mut self, agent: AgentId, report: Report) {
        let Some(node) = self.tasks.get(report.task) else {
            return;
        };
        // A report for an attempt that is no longer current (cancelled, or taken back when its
        // agent crashed) changes nothing: a late result never commits.
        if node.record.status != TaskStatus::Running
            || node.record.attempt != report.attempt
            || node.record.agent != Some(agent)
        {
            return;
        }
        if let TaskOutcome::Failed {
            kind: FailureKind::Declined,
            message,
            ..
        } = &report.outcome
        {
            // Nothing ran: back to the queue, as an attempt the agent lost.
            let reason = format!("declined: {message}");
            self.requeue_lost(agent, report.task, &reason);
            return;
        }
        // The attempt's run time and tokens join the task's record with the event of its
        // outcome, whichever it turns out to be.
        let tokens = report
            .outcome
            .usage()
            .map_or(0, |u| u.input_tokens.saturating_add(u.output_tokens));
        let planning = node.record.planning.is_some();
        // Read once here, so a task without extras costs no further lookup on this path.
        let (objective, capped) = (node.objective, node.capped);
        let compensation = node.record.compensates.is_some();
        let checked = node.extra.as_ref().is_some_and(|e| e.schema.is_some());
        // The attempt's tokens count before its outcome is applied, so a success that goes
        // over the budget wakes no dependent (`task_done`).
        let over_budget = tokens > 0 && self.charge(objective, tokens);
        self.release_slot(agent, report.task);
        if capped {
            self.dispatch.attempt_ended(&mut self.tasks, objective);
        }
        let duration = report.duration;
        let spent = |usage| Spent {
            usage,
            duration: Some(duration),
        };
        let answer = |output, usage| Answer {
            agent,
            output,
            usage,
            duration,
        };
        match report.outcome {
            // A planning task's answer is a plan, whatever form it came in: text, JSON, the
            // text of a JSON answer that did not parse, or tasks spawned directly.
            TaskOutcome::Succeeded { output, usage } if planning => {
                self.plan_answered(report.task, answer(output, usage), None);
            }
            // A compensation's output is neither checked nor read for follow-ups: its objective
            // has failed.
            TaskOutcome::Succeeded { output, usage } if compensation => {
                self.succeed(report.task, agent, output, usage, report.duration);
            }
            TaskOutcome::Spawned { output, usage, .. } if compensation => {
                self.succeed(report.task, agent, output, usage, report.duration);
            }
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } if planning => {
                self.plan_answered(report.task, answer(output, usage), Some(tasks));
            }
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                partial_output,
                usage,
                ..
            } if planning => {
                let output = partial_output.unwrap_or(Value::Null);
                self.plan_answered(report.task, answer(output, usage), None);
            }
            TaskOutcome::Succeeded { output, usage } => match spawn::split(output) {
                Ok(spawn::Split {
                    output,
                    spawn: None,
                }) if checked => {
                    self.on_output(report.task, agent, output, usage, report.duration);
                }
                Ok(spawn::Split {
                    output,
                    spawn: None,
                }) => {
                    self.succeed(report.task, agent, output, usage, report.duration);
                }
                Ok(spawn::Split {
                    output,
                    spawn: Some(tasks),
                }) => {
                    self.spawn(report.task, answer(output, usage), tasks);
                }
                Err(spawn::Malformed { message, output }) => self.fail_task(
                    report.task,
                    Some(agent),
                    FailureKind::Permanent,
                    message,
                    Some(output),
                    spent(usage),
                ),
            },
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } => self.spawn(report.task, answer(output, usage), tasks),
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                message,
                partial_output,
                usage,
                ..
            } => {
                let spent = Spent {
                    usage,
                    duration: Some(report.duration),
                };
                if compensation {
                    // Nobody reviews a failed objective's compensations: it failed.
                    self.fail_task(
                        report.task,
                        Some(agent),
                        FailureKind::InvalidOutput,
                        message,
                        partial_output,
                        spent,
                    );
                } else {
                    self.send_to_review(
                        report.task,
                        partial_output,
                        message,
                        Vec::new(),
                        spent,
                        false,
                    );
                }
            }
            TaskOutcome::Failed {
                kind,
                message,
                partial_output,
                retry_after,
                usage,
            } => {
                let retry_after = retry_after.unwrap_or(Duration::ZERO);
                let spent = Spent {
                    usage,
                    duration: Some(report.duration),
                };
                self.attempt_failed(
                    report.task,
                    Some(agent),
                    kind,
                    message,
                    partial_output,
                    retry_after,
                    spent,
                );
            }
        }
        if over_budget {
            let reason = self.objectives.get(&objective).map(|run| {
                format!(
                    "the objective spent {} model tokens, over its `token_budget` of {}",
                    run.tokens,
                    run.limits.token_budget.unwrap_or_default()
                )
            });
            self.end_objective(objective, ObjectiveStatus::Failed, reason);
        }
    }

    /// Adds an attempt's tokens to its objective; true when that takes a running objective
    /// over its `token_budget`.
    pub(super) fn charge(&mut self, objective: ObjectiveId, tokens: u64) -> bool {
        let Some(run) = self.objectives.get_mut(&objective) else {
            return false;
        };
        run.tokens = run.tokens.saturating_add(tokens);
        run.status == ObjectiveStatus::Running && run.over_budget()
    }

    /// An objective's deadline passed: a running objective fails.
    pub(crate) fn on_deadline(&mut self, objective: ObjectiveId) {
        let Some(run) = self.objectives.get(&objective) else {
            return;
        };
        if run.status != ObjectiveStatus::Running {
            return;
        }
        let deadline = run.limits.deadline.unwrap_or_default();
        let reason = format!(
            "the objective passed its `deadline` of {} after submission",
            humantime::format_duration(deadline)
        );
        self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
    }

    /// An attempt ended or was taken back: its agent slot is free, and its objective may
    /// start another if it has a cap.
    pub(super) fn release(&mut self, agent: AgentId, task: TaskId) {
        self.release_slot(agent, task);
        if let Some(node) = self.tasks.get(task)
            && node.capped
        {
            let objective = node.objective;
            self.dispatch.attempt_ended(&mut self.tasks, objective);
        }
    }

    /// Frees the agent slot of an attempt (`release` without the objective's cap).
    pub(super) fn release_slot(&mut self, agent: AgentId, task: TaskId) {
        self.dispatch.released(&self.registry, agent, task);
        self.stats.tasks_running = self.stats.tasks_running.saturating_sub(1);
    }

    /// A successful attempt's output: checked against the task's `output_schema`; output
    /// that does not match goes to review with the errors, the rest succeeds.
    pub(super) fn on_output(
        &mut self,
        id: TaskId,
        agent: AgentId,
        output: Value,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        let checked = match self.tasks.get(id).and_then(TaskNode::schema) {
            Some(schema) => schema.check(&output),
            None => Ok(()),
        };
        match checked {
            Ok(()) => self.succeed(id, agent, output, usage, duration),
            Err(errors) => {
                let spent = Spent {
                    usage,
                    duration: Some(duration),
                };
                let reason = review_reason(&errors);
                self.send_to_review(id, Some(output), reason, errors, spent, false);
            }
        }
    }

    pub(super) fn succeed(
        &mut self,
        id: TaskId,
        agent: AgentId,
        output: Value,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        let (objective, attempt) = (node.objective, node.record.attempt);
        // The fold's step for the event recorded next (see `TaskRecord::apply`).
        node.record.succeeded(&output, usage, duration);
        let compensable = node.has_compensation();
        self.journal.record(Event::TaskSucceeded {
            objective,
            task: id,
            attempt,
            agent,
            output,
            usage,
            duration,
        });
        if compensable && let Some(run) = self.objectives.get_mut(&objective) {
            run.compensable.push(id);
        }
        self.stats.tasks_succeeded += 1;
        self.task_done(id);
    }

    /// A task reached a terminal success: wake its dependents and maybe end the objective
    /// (unless the objective went over its token budget: it is about to fail). A finished
    /// compensation lets the next one start.
    pub(super) fn task_done(&mut self, id: TaskId) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let objective = node.objective;
        if node.record.compensates.is_some() {
            self.next_compensation(objective);
            return;
        }
        let dependents = node.dependents.clone();
        let (halted, done) = match self.objectives.get_mut(&objective) {
            Some(run) => {
                run.unfinished = run.unfinished.saturating_sub(1);
                let halted = run.status != ObjectiveStatus::Running || run.over_budget();
                (halted, !halted && run.unfinished == 0)
            }
            None => (true, false),
        };
        if done {
            // Every task finished: no dependent is waiting.
            self.end_objective(objective, ObjectiveStatus::Succeeded, None);
            return;
        }
        if halted {
            return;
        }
        for dep in dependents {
            let ready = match self.tasks.get_mut(dep) {
                Some(d) if d.record.status == TaskStatus::Backlog => {
                    d.waiting_on = d.waiting_on.saturating_sub(1);
                    d.waiting_on == 0
                }
                _ => false,
            };
            if ready {
                self.make_ready(dep);
            }
        }
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

    /// A task succeeded and asks for follow-up tasks: they are checked as a submitted graph
    /// is, then join the graph; if refused, the task fails (a breached limit fails the
    /// objective outright: re-planning would only grow it again).
    pub(super) fn spawn(&mut self, id: TaskId, answer: Answer, specs: Vec<TaskSpec>) {
        let Some(objective) = self.tasks.get(id).map(|n| n.objective) else {
            return;
        };
        let with_parent = self.with_parent(id, &specs);
        let checked = {
            let Some(run) = self.objectives.get(&objective) else {
                return;
            };
            let existing = Existing {
                run,
                tasks: &self.tasks,
            };
            graph::validate(&with_parent, &existing, &run.limits)
                .map_err(SchedulerError::from)
                .and_then(|depths| {
                    self.check_tasks(&with_parent)
                        .map(|extras| (depths, extras))
                })
        };
        match checked {
            Ok((depths, extras)) => self.grow(id, answer, specs, &with_parent, &depths, extras),
            Err(err) => {
                let limit = matches!(
                    err,
                    SchedulerError::Graph(
                        GraphError::TooManyTasks { .. }
                            | GraphError::TooDeep { .. }
                            | GraphError::TooWide { .. }
                    )
                );
                let message = format!("spawned tasks refused: {err}");
                let spent = Spent {
                    usage: answer.usage,
                    duration: Some(answer.duration),
                };
                self.fail_task_with(
                    id,
                    Some(answer.agent),
                    FailureKind::Permanent,
                    message,
                    Some(answer.output),
                    spent,
                    !limit,
                );
            }
        }
    }

    /// Adds checked tasks (`specs` as declared, `with_parent` as validated, at `depths`) as
    /// children of `parent`, which succeeds with its answer; those with nothing left to wait
    /// for become ready.
    pub(super) fn grow(
        &mut self,
        parent: TaskId,
        answer: Answer,
        specs: Vec<TaskSpec>,
        with_parent: &[TaskSpec],
        depths: &[u32],
        extras: Extras,
    ) {
        let Some(objective) = self.tasks.get(parent).map(|n| n.objective) else {
            return;
        };
        let Some(mut run) = self.objectives.remove(&objective) else {
            return;
        };
        let first = TaskId(self.next_task);
        let new_ids = self.add_tasks(
            objective,
            &mut run,
            with_parent,
            depths,
            Some(parent),
            extras,
        );
        self.objectives.insert(objective, run);
        if !specs.is_empty() {
            self.emit(Event::TasksSpawned {
                objective,
                parent,
                first_task: first,
                tasks: specs,
            });
        }
        self.succeed(
            parent,
            answer.agent,
            answer.output,
            answer.usage,
            answer.duration,
        );
        // Follow-ups that depend only on the parent became ready in `succeed`; any whose
        // other dependencies had already succeeded are ready too.
        for t in new_ids {
            if self
                .tasks
                .get(t)
                .is_some_and(|n| n.record.status == TaskStatus::Backlog && n.waiting_on == 0)
            {
                self.make_ready(t);
            }
        }
    }

    // ---- Planning ---------------------------------------------------------------------------

    /// A planning task answered: a valid plan's tasks join the graph as its children; an
    /// invalid one goes back to the planner once, with what is wrong with it.
    pub(super) fn plan_answered(
        &mut self,
        id: TaskId,
        answer: Answer,
        given: Option<Vec<TaskSpec>>,
    ) {
        let specs = match given {
            Some(tasks) => Ok(tasks),
            None => planner::parse_plan(&answer.output).map_err(|e| vec![e]),
        };
        match specs.and_then(|specs| self.check_plan(id, specs)) {
            Ok(plan) => self.grow(
                id,
                answer,
                plan.specs,
                &plan.with_parent,
                &plan.depths,
                plan.extras,
            ),
            Err(errors) => self.reject_plan(id, answer, errors),
        }
    }

    /// Checks a plan as a submitted graph is checked (the graph first, then each task's
    /// capability, `$from` references, and dependencies on tasks that failed or were
    /// dropped), collecting every error.
    pub(super) fn check_plan(
        &self,
        id: TaskId,
        specs: Vec<TaskSpec>,
    ) -> Result<CheckedPlan, Vec<String>> {
        let node = self
            .tasks
            .get(id)
            .ok_or_else(|| vec!["the task is gone".to_owned()])?;
        let run = self
            .objectives
            .get(&node.objective)
            .ok_or_else(|| vec!["the objective is gone".to_owned()])?;
        let replan = node.record.planning.as_ref().map_or(0, |p| p.replan);
        let mut errors = Vec::new();
        if specs.is_empty() && replan == 0 {
            errors.push("the plan has no tasks: list at least one in `tasks`".to_owned());
        }
        let mut known: Option<&Capability> = None;
        for (i, spec) in specs.iter().enumerate() {
            if spec.capability.as_str() == PLAN_CAPABILITY {
                errors.push(format!(
                    "tasks[{i}] (`{}`): capability `{PLAN_CAPABILITY}` is the planner's own; \
                     use one of the capabilities listed",
                    spec.id
                ));
            } else if known != Some(&spec.capability) {
                if self.registry.knows_capability(&spec.capability) {
                    known = Some(&spec.capability);
                } else {
                    let err = SchedulerError::UnknownCapability {
                        task: spec.id.clone(),
                        capability: spec.capability.clone(),
                    };
                    errors.push(err.to_string());
                }
            }
            // Against the plan's own dependencies: the planning task's output is no input.
            let references = if spec.depends_on.contains(&node.record.key) {
                let mut own = spec.clone();
                own.depends_on.retain(|d| *d != node.record.key);
                check_references(&own)
            } else {
                check_references(spec)
            };
            if let Err(err) = references {
                errors.push(format!("task `{}`: {err}", spec.id));
            }
            for dep in &spec.depends_on {
                // (Naming the planning task itself only repeats the implicit edge.)
                let existing = run.keys.get(dep).filter(|t| **t != id);
                let Some(existing) = existing.and_then(|t| self.tasks.get(*t)) else {
                    continue;
                };
                let why = match existing.record.status {
                    _ if existing.record.planning.is_some() => {
                        "is a planning task (its plan is no input)"
                    }
                    TaskStatus::Failed => "failed and will never succeed",
                    TaskStatus::Cancelled => "was dropped and will never run",
                    _ => continue,
                };
                errors.push(format!(
                    "task `{}` depends on `{dep}`, which {why}",
                    spec.id
                ));
            }
        }
        let with_parent = self.with_parent(id, &specs);
        let existing = Existing {
            run,
            tasks: &self.tasks,
        };
        match graph::validate(&with_parent, &existing, &run.limits) {
            // Schemas and compensations last: the plan is otherwise sound.
            Ok(depths) if errors.is_empty() => match self.check_tasks(&with_parent) {
                Ok(extras) => Ok(CheckedPlan {
                    specs,
                    with_parent,
                    depths,
                    extras,
                }),
                Err(err) => Err(vec![err.to_string()]),
            },
            Ok(_) => Err(errors),
            Err(err) => {
                errors.insert(0, err.to_string());
                Err(errors)
            }
        }
    }

    /// A plan was invalid. The first time, the planning task runs again at once (a repair
    /// attempt, its prompt holding the errors and the rejected plan); the second time it
    /// fails, and with it the objective, naming the errors.
    pub(super) fn reject_plan(&mut self, id: TaskId, answer: Answer, errors: Vec<String>) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let Some(planning) = node.record.planning.as_deref() else {
            return;
        };
        let repair = planning.rejections == 0;
        let summary = errors.join("; ");
        let (objective, attempt) = (node.objective, node.record.attempt);
        self.emit(Event::PlanRejected {
            objective,
            task: id,
            attempt,
            agent: answer.agent,
            plan: answer.output,
            errors,
            repair,
            usage: answer.usage,
            duration: answer.duration,
        });
        self.stats.attempts_failed += 1;
        if repair {
            self.mark_ready(objective, id);
        } else {
            self.fail_task_with(
                id,
                Some(answer.agent),
                FailureKind::Permanent,
                format!("its plan was rejected again: {summary}"),
                None,
                Spent::default(),
                false,
            );
        }
    }

    /// A task of the objective failed for good: if re-planning is allowed and left, the tasks
    /// that depended on it (which can never run) are dropped and a `replan-N` task asks the
    /// planner for the rest of the work. False when the objective must fail instead.
    pub(super) fn replan(&mut self, objective: ObjectiveId, failed: TaskId) -> bool {
        if self
            .tasks
            .get(failed)
            .is_none_or(|n| n.record.planning.is_some())
        {
            return false;
        }
        let Some(run) = self.objectives.get(&objective) else {
            return false;
        };
        let allowed = run.limits.replans(run.planned);
        let room = (run.tasks.len() as u64) < u64::from(run.limits.max_tasks);
        let planner_known = Self::planning_spec(PLAN_KEY)
            .is_some_and(|spec| self.registry.knows_capability(&spec.capability));
        if run.status.is_terminal() || run.replans >= allowed || !room || !planner_known {
            return false;
        }
        let replan = run.replans + 1;
        let mut freed = Vec::new();
        for task in self.dependents_of(failed) {
            if self
                .tasks
                .get(task)
                .is_some_and(|n| !n.record.status.is_terminal())
            {
                freed.extend(self.cancel_task(task));
                if let Some(run) = self.objectives.get_mut(&objective) {
                    run.unfinished = run.unfinished.saturating_sub(1);
                }
            }
        }
        let requested = self.request_plan(objective, replan, Some(failed)).is_some();
        for agent in freed {
            self.pull_for(agent);
        }
        requested
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

    /// The task waits for a person; `errors` says where its output does not match its
    /// schema, when that is why.
    /// `approval` says the review is an approval's request, which is its next attempt.
    pub(super) fn send_to_review(
        &mut self,
        id: TaskId,
        output: Option<Value>,
        reason: String,
        errors: Vec<OutputError>,
        spent: Spent,
        approval: bool,
    ) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let (objective, attempt) = (node.objective, node.record.attempt + u32::from(approval));
        self.stats.tasks_in_review += 1;
        self.emit(Event::TaskInReview {
            objective,
            task: id,
            attempt,
            output,
            reason,
            errors,
            usage: spent.usage,
            duration: spent.duration,
        });
    }

    /// An attempt failed: retry it after a backoff, or fail the task for good.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one field of the failure's event"
    )]
    pub(super) fn attempt_failed(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        retry_after: Duration,
        spent: Spent,
    ) {
        self.stats.attempts_failed += 1;
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        // Attempts lost to crashing agents are not the task's failures, nor are a planner's
        // repair attempts: they do not count here.
        let repairs = node.record.planning.as_ref().map_or(0, |p| p.rejections);
        let failed_attempts = node
            .record
            .attempt
            .saturating_sub(node.record.lost)
            .saturating_sub(repairs);
        let budget_left = failed_attempts
            < node
                .retry
                .max_attempts
                .min(RetryPolicy::MAX_ATTEMPTS_CEILING);
        // A permanent failure is permanent on that agent (a rejected key, an unknown model, a
        // request that model refuses): the task fails over to another agent with the
        // capability if one can take work now, and fails otherwise.
        let fail_over = kind == FailureKind::Permanent
            && agent.is_some_and(|a| {
                self.registry
                    .has_other_available(&node.record.capability, a)
            });
        let retry = (kind.is_retryable() || fail_over) && budget_left;
        if !retry {
            self.fail_task(id, agent, kind, message, partial, spent);
            return;
        }
        let delay = if fail_over {
            node.avoid = agent;
            Duration::ZERO
        } else {
            let ceiling = node.retry.backoff_ceiling(node.record.attempt + 1);
            let jitter = Duration::from_nanos(
                self.rng
                    .u64(0..=u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX)),
            );
            jitter.max(retry_after)
        };
        node.retry_due = true;
        let (objective, attempt) = (node.objective, node.record.attempt);
        self.emit(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message,
            partial_output: partial,
            usage: spent.usage,
            duration: spent.duration,
            retry_in: Some(delay),
        });
        // The timer's message carries the attempt it is for, so a stale timer does nothing.
        self.myself
            .send_after(delay, move || SchedulerMsg::RetryDue { task: id, attempt });
    }

    /// A retry backoff passed.
    pub(crate) fn on_retry_due(&mut self, id: TaskId, attempt: u32) {
        let due = self.tasks.get_mut(id).is_some_and(|n| {
            let due =
                n.retry_due && n.record.attempt == attempt && n.record.status == TaskStatus::Ready;
            if due {
                n.retry_due = false;
                n.ready_at = Instant::now();
            }
            due
        });
        if due {
            self.enqueue_or_dispatch(id);
        }
    }

    /// A task failed for good: the planner is asked to re-plan if the objective allows it,
    /// else its objective fails and the rest of it is cancelled (a failed compensation is
    /// recorded, and the next compensation runs).
    pub(super) fn fail_task(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        spent: Spent,
    ) {
        self.fail_task_with(id, agent, kind, message, partial, spent, true);
    }

    /// [`Self::fail_task`], re-planning only when `may_replan`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one field of the failure's event, plus whether to re-plan"
    )]
    pub(super) fn fail_task_with(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        spent: Spent,
        may_replan: bool,
    ) {
        let Some((objective, key)) = self.record_failure(id, agent, kind, &message, partial, spent)
        else {
            return;
        };
        if self
            .tasks
            .get(id)
            .is_some_and(|n| n.record.compensates.is_some())
        {
            self.next_compensation(objective);
            return;
        }
        if let Some(run) = self.objectives.get_mut(&objective) {
            run.unfinished = run.unfinished.saturating_sub(1);
        }
        if may_replan && self.replan(objective, id) {
            return;
        }
        let reason = format!("task `{key}` ({id}) failed: {message}");
        self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
    }

    /// Marks a task failed for good and records it; returns its objective and name.
    pub(super) fn record_failure(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: &str,
        partial: Option<Value>,
        spent: Spent,
    ) -> Option<(ObjectiveId, TaskKey)> {
        let node = self.tasks.get_mut(id)?;
        node.retry_due = false;
        self.stats.tasks_failed += 1;
        let (objective, attempt, key) =
            (node.objective, node.record.attempt, node.record.key.clone());
        self.emit(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message: message.to_owned(),
            partial_output: partial,
            usage: spent.usage,
            duration: spent.duration,
            retry_in: None,
        });
        Some((objective, key))
    }

    // ---- Agents -----------------------------------------------------------------------------

    /// An agent registered, recovered or grew: it may take queued work.
    pub(crate) fn on_agent_available(&mut self, agent: AgentId) {
        self.dispatch.agent_changed(agent);
        self.pull_for(agent);
    }

    /// An agent's actor died: every attempt it had goes back to the queue.
    pub(crate) fn on_agent_lost(&mut self, agent: AgentId, reason: &str) {
        for task in self.dispatch.running_on(agent) {
            self.requeue_lost(agent, task, reason);
        }
    }

    /// Takes back an attempt that its agent lost (crash, or gone before it got the work).
    pub(super) fn requeue_lost(&mut self, agent: AgentId, id: TaskId, reason: &str) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        if node.record.status != TaskStatus::Running || node.record.agent != Some(agent) {
            return;
        }
        // Counted in the record by its `AttemptLost`; a loss past the limit fails the task.
        let (objective, attempt, lost) =
            (node.objective, node.record.attempt, node.record.lost + 1);
        self.release(agent, id);
        let message = format!("agent {agent} lost the attempt: {reason}");
        if lost > self.config.max_lost_attempts {
            let message = format!(
                "{message} (the task's attempts were lost {lost} times, to crashing, gone or \
                 declining agents)"
            );
            self.fail_task(
                id,
                Some(agent),
                FailureKind::Transient,
                message,
                None,
                Spent::default(),
            );
            return;
        }
        self.emit(Event::AttemptLost {
            objective,
            task: id,
            attempt,
            agent: Some(agent),
            reason: message,
        });
        if let Some(node) = self.tasks.get_mut(id) {
            node.ready_at = Instant::now();
        }
        self.stats.attempts_failed += 1;
        self.enqueue_or_dispatch(id);
    }

    // ---- Objective end, cancel, review ------------------------------------------------------

    /// Ends a running objective: every unfinished task is cancelled (running attempts too).
    /// A failure first runs the compensations of the tasks that succeeded, if any have one;
    /// the objective then ends when the last compensation has (`next_compensation`).
    pub(super) fn end_objective(
        &mut self,
        id: ObjectiveId,
        status: ObjectiveStatus,
        reason: Option<String>,
    ) {
        let Some(run) = self.objectives.get_mut(&id) else {
            return;
        };
        if run.status != ObjectiveStatus::Running {
            return;
        }
        run.status = status;
        run.failure = reason.clone();
        let tasks = run.tasks.clone();
        self.dispatch.close(id);
        // Slots freed by cancelled attempts go to other objectives' queued tasks, once every
        // task of this one is marked (so none of its own is handed out again).
        let freed: Vec<AgentId> = tasks
            .into_iter()
            .filter_map(|t| self.cancel_task(t))
            .collect();
        for agent in freed {
            self.pull_for(agent);
        }
        if status == ObjectiveStatus::Failed
            && let Some(reason) = &reason
            && self.start_compensation(id, reason)
        {
            return;
        }
        self.finish_objective(id, status, reason);
    }

    /// Records the end of an objective and answers whoever waits for it.
    pub(super) fn finish_objective(
        &mut self,
        id: ObjectiveId,
        status: ObjectiveStatus,
        reason: Option<String>,
    ) {
        if let Some(run) = self.objectives.get_mut(&id) {
            run.status = status;
            run.failure = reason.clone();
            run.saga = None;
        }
        self.emit(match status {
            ObjectiveStatus::Succeeded => Event::ObjectiveSucceeded { objective: id },
            ObjectiveStatus::Cancelled => Event::ObjectiveCancelled { objective: id },
            _ => Event::ObjectiveFailed {
                objective: id,
                reason: reason.unwrap_or_default(),
            },
        });
        self.stats.objectives_running = self.stats.objectives_running.saturating_sub(1);
        self.stats.objectives_ended += 1;
        if let Some(waiters) = self.waiters.remove(&id) {
            let summary = self.summary(id);
            for reply in waiters {
                let summary = summary.clone();
                self.effects.replies.push(Box::new(move |_durable| {
                    let _ = reply.send(summary);
                }));
            }
        }
        if let Some((recorded, durable)) = self.journal.progress() {
            self.finished.push_back((id, recorded));
            // Only an objective whose end is durable may be dropped: until then the log would
            // still show it running.
            while self.finished.len() > self.config.keep_finished
                && self
                    .finished
                    .front()
                    .is_some_and(|&(_, end)| end <= durable)
            {
                if let Some((old, _)) = self.finished.pop_front() {
                    self.forget(old);
                }
            }
        }
    }

    // ---- Compensation ------------------------------------------------------------------------

    /// The objective failed: if tasks with a compensation had succeeded, their compensations
    /// are added as tasks (newest success first), recorded, and the first one starts; true
    /// when there is a saga to run.
    pub(super) fn start_compensation(&mut self, id: ObjectiveId, reason: &str) -> bool {
        let Some(run) = self.objectives.get(&id) else {
            return false;
        };
        let tasks = &self.tasks;
        let compensates: Vec<TaskId> = run
            .compensable
            .iter()
            .rev()
            .copied()
            .filter(|t| {
                tasks.get(*t).is_some_and(|n| {
                    n.record.status == TaskStatus::Succeeded && n.has_compensation()
                })
            })
            .collect();
        if compensates.is_empty() {
            return false;
        }
        let first = TaskId(self.next_task);
        self.next_task += compensates.len() as u64;
        let mut pending = VecDeque::with_capacity(compensates.len());
        for (i, &original) in compensates.iter().enumerate() {
            let task = TaskId(first.0 + i as u64);
            self.add_compensation(id, original, task);
            pending.push_back(task);
        }
        if let Some(run) = self.objectives.get_mut(&id) {
            run.status = ObjectiveStatus::Compensating;
            run.saga = Some(Saga {
                reason: reason.to_owned(),
                pending,
            });
        }
        self.emit(Event::CompensationStarted {
            objective: id,
            reason: reason.to_owned(),
            first_task: first,
            compensates,
        });
        self.next_compensation(id);
        true
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

    /// The previous compensation ended (or none ran yet): the next one becomes ready; after
    /// the last, the objective ends failed. A compensation whose input cannot be built fails
    /// at once and the next one follows.
    pub(super) fn next_compensation(&mut self, objective: ObjectiveId) {
        loop {
            let Some(run) = self.objectives.get_mut(&objective) else {
                return;
            };
            if run.status != ObjectiveStatus::Compensating {
                return;
            }
            let Some(saga) = run.saga.as_mut() else {
                return;
            };
            let Some(task) = saga.pending.pop_front() else {
                let reason = saga.reason.clone();
                self.finish_objective(objective, ObjectiveStatus::Failed, Some(reason));
                return;
            };
            match self.build_input(task) {
                Some(Ok(_)) => {
                    self.mark_ready(objective, task);
                    return;
                }
                Some(Err(message)) => {
                    self.record_failure(
                        task,
                        None,
                        FailureKind::Permanent,
                        &message,
                        None,
                        Spent::default(),
                    );
                }
                None => {}
            }
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
        self.dispatch.forget(id);
    }

    /// Marks a task cancelled; returns the agent whose slot its running attempt freed.
    pub(super) fn cancel_task(&mut self, id: TaskId) -> Option<AgentId> {
        let node = self.tasks.get_mut(id)?;
        if node.record.status.is_terminal() {
            return None;
        }
        let was = node.record.status;
        node.retry_due = false;
        let (objective, attempt, agent, queued) = (
            node.objective,
            node.record.attempt,
            node.record.agent,
            node.queued.take(),
        );
        self.emit(Event::TaskCancelled {
            objective,
            task: id,
        });
        let node = self.tasks.get(id)?;
        if was == TaskStatus::Review {
            self.stats.tasks_in_review = self.stats.tasks_in_review.saturating_sub(1);
        }
        if was == TaskStatus::Waiting
            && let Some((key, _)) = node.wait_for()
        {
            self.waits.stop_waiting(key, id);
        }
        if queued.is_some() {
            self.dispatch.unqueued(&node.record.capability);
        }
        let mut freed = None;
        if was == TaskStatus::Running
            && let Some(agent) = agent
        {
            self.release(agent, id);
            self.dispatch.withdraw(&self.registry, agent, id, attempt);
            freed = Some(agent);
        }
        freed
    }

    /// A user cancels an objective.
    pub(crate) fn cancel(&mut self, id: ObjectiveId) -> Result<(), SchedulerError> {
        let run = self
            .objectives
            .get(&id)
            .ok_or(SchedulerError::UnknownObjective(id))?;
        match run.status {
            ObjectiveStatus::Running => self.end_objective(id, ObjectiveStatus::Cancelled, None),
            // It failed already: the compensations left are cancelled, and it ends failed.
            ObjectiveStatus::Compensating => {
                let reason = run
                    .saga
                    .as_ref()
                    .map_or_else(String::new, |s| s.reason.clone());
                let tasks = run.tasks.clone();
                let freed: Vec<AgentId> = tasks
                    .into_iter()
                    .filter_map(|t| self.cancel_task(t))
                    .collect();
                for agent in freed {
                    self.pull_for(agent);
                }
                let reason = format!("{reason}; its remaining compensations were cancelled");
                self.finish_objective(id, ObjectiveStatus::Failed, Some(reason));
            }
            _ => {}
        }
        Ok(())
    }

    /// A person decides on a task in review.
    pub(crate) fn review(
        &mut self,
        id: TaskId,
        decision: ReviewDecision,
    ) -> Result<(), SchedulerError> {
        let node = self
            .tasks
            .get_mut(id)
            .ok_or(SchedulerError::UnknownTask(id))?;
        if node.record.status != TaskStatus::Review {
            return Err(SchedulerError::NotInReview {
                task: id,
                status: format!("{:?}", node.record.status).to_lowercase(),
            });
        }
        let objective = node.objective;
        // Every decision takes the task out of review.
        self.stats.tasks_in_review = self.stats.tasks_in_review.saturating_sub(1);
        match decision {
            ReviewDecision::Approve { output } => {
                // An edited output must match the schema; approving the reviewed output as it
                // is overrides the schema (that is what review is for).
                if let Some(edited) = &output
                    && let Some(schema) = node.schema()
                {
                    schema
                        .check(edited)
                        .map_err(|errors| SchedulerError::InvalidOutput { task: id, errors })?;
                }
                let output = output
                    .or_else(|| node.record.output.take())
                    .unwrap_or(Value::Null);
                let compensable = node.has_compensation();
                self.emit(Event::TaskApproved {
                    objective,
                    task: id,
                    output,
                });
                if compensable && let Some(run) = self.objectives.get_mut(&objective) {
                    run.compensable.push(id);
                }
                self.stats.tasks_succeeded += 1;
                self.task_done(id);
            }
            ReviewDecision::Reject { reason } => {
                // A person said no to an approval: no planner is asked to get round that.
                let approval = node.record.kind == TaskKind::Approval;
                self.emit(Event::TaskRejected {
                    objective,
                    task: id,
                    reason: reason.clone(),
                });
                let message = if approval {
                    format!("not approved: {reason}")
                } else {
                    format!("rejected in review: {reason}")
                };
                self.fail_task_with(
                    id,
                    None,
                    FailureKind::Permanent,
                    message,
                    None,
                    Spent::default(),
                    !approval,
                );
            }
            ReviewDecision::Retry => self.mark_ready(objective, id),
        }
        Ok(())
    }

    // ---- Queries ----------------------------------------------------------------------------

    /// The state of an objective and its tasks.
    pub(crate) fn view(&self, id: ObjectiveId) -> Option<ObjectiveView> {
        let run = self.objectives.get(&id)?;
        let tasks = run.tasks.iter().filter_map(|t| self.tasks.get(*t));
        Some(objective_view(
            id,
            &run.goal,
            run.status,
            run.failure.as_deref(),
            tasks.map(|n| &n.record),
        ))
    }

    /// One page of the tasks held in memory (every unfinished objective's, and the finished
    /// ones not yet dropped), across objectives, by task id. Linear in the tasks held (one
    /// objective's, with that filter), since `total` counts every match: for people looking,
    /// not for the hot path.
    pub(crate) fn task_page(&self, query: &TaskQuery) -> TaskPage {
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
    pub(crate) fn summary(&self, id: ObjectiveId) -> Option<ObjectiveSummary> {
        self.objectives.get(&id).map(|run| ObjectiveSummary {
            id,
            status: run.status,
            failure: run.failure.clone(),
            tasks: run.tasks.len() as u64,
        })
    }

    /// Answers now if the objective ended (or is unknown), else when it ends.
    pub(crate) fn await_end(
        &mut self,
        id: ObjectiveId,
        reply: RpcReplyPort<Option<ObjectiveSummary>>,
    ) {
        match self.objectives.get(&id) {
            Some(run) if !run.status.is_terminal() => {
                self.waiters.entry(id).or_default().push(reply)
            }
            _ => {
                // The end may have been recorded in a turn not yet durable.
                let summary = self.summary(id);
                self.effects.replies.push(Box::new(move |_durable| {
                    let _ = reply.send(summary);
                }));
            }
        }
    }

    /// Records an event that happened outside the scheduler.
    pub(crate) fn record(&mut self, event: Event) {
        self.journal.record(event);
    }

    /// Records an event of this turn. An event about a task is first folded into the task's
    /// record, by the fold the replay of the log runs: the record changes only so, which is
    /// what makes a replayed view equal the live one.
    pub(super) fn emit(&mut self, event: Event) {
        if let Some(task) = task_of(&event)
            && let Some(node) = self.tasks.get_mut(task)
        {
            node.record.apply(&event, self.turn_ms);
        }
        self.journal.record(event);
    }

    /// Counters.
    pub(crate) fn stats(&self) -> SchedulerStats {
        let mut stats = self.stats;
        stats.tasks_queued = self.dispatch.waiting();
        stats.events_kept = self.waits.kept();
        stats.tasks_waiting = self.waits.waiting();
        stats
    }

    /// Tasks waiting for an agent, per capability, ordered by capability.
    pub(crate) fn queue_depths(&self) -> Vec<(Capability, u64)> {
        self.dispatch.depths()
    }
}
