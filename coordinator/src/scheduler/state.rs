//! The scheduler's state and every transition of it. The actor in `scheduler.rs` only routes
//! messages here, so this logic can be read (and tested) without the mailbox around it.
//!
//! Allocation invariant: while a capability's ready queue holds a task, every agent with that
//! capability was full (or unhealthy) when the task was queued. Every event that frees room on
//! an agent (a report, a registration, a recovery) pulls from that agent's queues, so a queued
//! task never waits while a capable agent has room, and a newly ready task only asks the
//! registry to select an agent when its queue is empty.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use swarm_agents::ReportInbox;
use swarm_protocol::graph::{self, ExistingTasks, NoTasks};
use swarm_protocol::task::{check_references, has_references, resolve_input};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, Event, FailureKind, Health, Limits, Objective,
    ObjectiveId, ObjectiveStatus, ObjectiveSummary, ObjectiveView, Report, RetryPolicy,
    ReviewDecision, SchedulerError, SchedulerMsg, SchedulerStats, Task, TaskId, TaskKey,
    TaskOutcome, TaskSpec, TaskStatus, TaskView, Usage,
};
use swarm_registry::{Lease, Registry};

use super::SchedulerConfig;
use super::queue::{Entry, ReadyQueue};
use super::slab::Slab;
use crate::journal::Journal;

/// The registry as the coordinator uses it: agents are reached through their actor refs.
pub type AgentRegistry = Registry<ActorRef<AgentMsg>>;

/// One task of an objective.
struct TaskNode {
    objective: ObjectiveId,
    key: TaskKey,
    capability: Capability,
    priority: i32,
    retry: RetryPolicy,
    idle_timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
    /// The input as declared; `$from` references are resolved when the task becomes ready.
    declared_input: Arc<Value>,
    /// The input an agent receives (set when ready).
    input: Arc<Value>,
    deps: Vec<TaskId>,
    dependents: Vec<TaskId>,
    /// Dependencies not yet succeeded.
    waiting_on: u32,
    depth: u32,
    status: TaskStatus,
    /// Attempts started so far; the running or next attempt is `attempt`.
    attempt: u32,
    /// Attempts lost to agent crashes (they do not count against the retry policy, but are
    /// bounded so a task that crashes every agent fails).
    lost: u32,
    agent: Option<AgentId>,
    output: Option<Value>,
    error: Option<String>,
    partial: Option<Value>,
    usage: Usage,
    run_time: Duration,
    spawned_by: Option<TaskId>,
    /// `Some(seq)` while the task sits in its capability's ready queue.
    queued: Option<u64>,
    /// True while the task waits for a retry backoff to pass.
    retry_due: bool,
    ready_at: Instant,
}

/// One objective.
struct ObjectiveRun {
    goal: String,
    priority: i32,
    limits: Limits,
    status: ObjectiveStatus,
    failure: Option<String>,
    tasks: Vec<TaskId>,
    keys: FxHashMap<TaskKey, TaskId>,
    unfinished: usize,
}

/// Lets graph validation see an objective's existing tasks (for spawned tasks).
struct Existing<'a> {
    run: &'a ObjectiveRun,
    tasks: &'a Slab<TaskNode>,
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
    registry: AgentRegistry,
    myself: ActorRef<SchedulerMsg>,
    config: SchedulerConfig,
    journal: Box<dyn Journal>,
    objectives: FxHashMap<ObjectiveId, ObjectiveRun>,
    tasks: Slab<TaskNode>,
    queues: FxHashMap<Capability, ReadyQueue>,
    in_flight: FxHashMap<AgentId, FxHashSet<TaskId>>,
    agent_caps: FxHashMap<AgentId, Arc<[Capability]>>,
    /// Assignments made while handling the current message, sent as one batch per agent.
    outbox: FxHashMap<AgentId, (ActorRef<AgentMsg>, Vec<Assignment>)>,
    /// Per capability, the agent taking this turn's burst and how many more it may take.
    burst: FxHashMap<Capability, (AgentId, u32)>,
    waiters: FxHashMap<ObjectiveId, Vec<RpcReplyPort<Option<ObjectiveSummary>>>>,
    reports: ReportInbox,
    next_task: u64,
    next_seq: u64,
    rng: fastrand::Rng,
    stats: SchedulerStats,
}

impl SchedulerState {
    pub(crate) fn new(
        registry: AgentRegistry,
        myself: ActorRef<SchedulerMsg>,
        journal: Box<dyn Journal>,
        config: SchedulerConfig,
        reports: ReportInbox,
    ) -> Self {
        Self {
            registry,
            myself,
            config,
            journal,
            objectives: FxHashMap::default(),
            tasks: Slab::default(),
            queues: FxHashMap::default(),
            in_flight: FxHashMap::default(),
            agent_caps: FxHashMap::default(),
            outbox: FxHashMap::default(),
            burst: FxHashMap::default(),
            waiters: FxHashMap::default(),
            reports,
            next_task: 1,
            next_seq: 0,
            rng: fastrand::Rng::new(),
            stats: SchedulerStats::default(),
        }
    }

    // ---- Submission -------------------------------------------------------------------------

    /// Validates and accepts an objective; its tasks without dependencies become ready.
    pub(crate) fn submit(
        &mut self,
        mut objective: Objective,
    ) -> Result<ObjectiveId, SchedulerError> {
        if self.stats.objectives_running as usize >= self.config.max_objectives_running {
            return Err(SchedulerError::Overloaded(
                self.config.max_objectives_running,
            ));
        }
        if objective.tasks.is_empty() {
            return Err(SchedulerError::NoPlanner);
        }
        objective.limits.max_tasks = objective.limits.max_tasks.min(Limits::MAX_TASKS_CEILING);
        let depths = graph::validate(&objective.tasks, &NoTasks, &objective.limits)?;
        self.check_tasks(&objective.tasks)?;

        let id = ObjectiveId::new();
        let first = TaskId(self.next_task);
        let mut run = ObjectiveRun {
            goal: objective.goal.clone(),
            priority: objective.priority,
            limits: objective.limits,
            status: ObjectiveStatus::Running,
            failure: None,
            tasks: Vec::with_capacity(objective.tasks.len()),
            keys: FxHashMap::default(),
            unfinished: 0,
        };
        let new_ids = self.add_tasks(id, &mut run, &objective.tasks, &depths, None);
        self.objectives.insert(id, run);
        self.stats.objectives_running += 1;
        self.journal.record(Event::ObjectiveSubmitted {
            objective: id,
            spec: objective,
            first_task: first,
        });
        for task in new_ids {
            if self.tasks.get(task).is_some_and(|n| n.waiting_on == 0) {
                self.make_ready(task);
            }
        }
        Ok(id)
    }

    /// Checks what graph validation cannot: capabilities and `$from` references.
    fn check_tasks(&self, specs: &[TaskSpec]) -> Result<(), SchedulerError> {
        let mut known: Option<&Capability> = None;
        for spec in specs {
            if known != Some(&spec.capability) {
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
        }
        Ok(())
    }

    /// Adds validated tasks to an objective and returns their ids (consecutive, in order).
    fn add_tasks(
        &mut self,
        objective: ObjectiveId,
        run: &mut ObjectiveRun,
        specs: &[TaskSpec],
        depths: &[u32],
        parent: Option<TaskId>,
    ) -> Vec<TaskId> {
        let first = self.next_task;
        self.next_task += specs.len() as u64;
        let ids: Vec<TaskId> = (0..specs.len() as u64).map(|i| TaskId(first + i)).collect();
        run.keys.reserve(specs.len());
        for (spec, &id) in specs.iter().zip(&ids) {
            run.keys.insert(spec.id.clone(), id);
        }
        for ((spec, &id), &depth) in specs.iter().zip(&ids).zip(depths) {
            let mut deps: Vec<TaskId> = spec
                .depends_on
                .iter()
                .filter_map(|k| run.keys.get(k).copied())
                .collect();
            if let Some(p) = parent
                && !deps.contains(&p)
            {
                deps.push(p);
            }
            let mut waiting_on = 0;
            for dep in &deps {
                match self.tasks.get_mut(*dep) {
                    Some(d) => {
                        d.dependents.push(id);
                        if d.status != TaskStatus::Succeeded {
                            waiting_on += 1;
                        }
                    }
                    // A dependency added in this same batch (later in the order).
                    None => waiting_on += 1,
                }
            }
            let input = Arc::new(spec.input.clone());
            self.tasks.insert(
                id,
                TaskNode {
                    objective,
                    key: spec.id.clone(),
                    capability: spec.capability.clone(),
                    priority: run.priority,
                    retry: spec.retry,
                    idle_timeout: spec.idle_timeout,
                    hard_timeout: spec.hard_timeout,
                    input: input.clone(),
                    declared_input: input,
                    deps,
                    dependents: Vec::new(),
                    waiting_on,
                    depth,
                    status: TaskStatus::Backlog,
                    attempt: 0,
                    lost: 0,
                    agent: None,
                    output: None,
                    error: None,
                    partial: None,
                    usage: Usage::default(),
                    run_time: Duration::ZERO,
                    spawned_by: parent,
                    queued: None,
                    retry_due: false,
                    ready_at: Instant::now(),
                },
            );
        }
        // Second pass: edges from tasks of this batch to later tasks of this batch.
        for &id in &ids {
            let deps = match self.tasks.get(id) {
                Some(n) => n.deps.clone(),
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

    // ---- Readiness and allocation ----------------------------------------------------------

    /// All dependencies succeeded: resolve the input and queue or dispatch the task.
    fn make_ready(&mut self, id: TaskId) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        // Dependency outputs are only gathered here when the input refers to them; the agent's
        // `upstream` map is built at dispatch.
        let resolved = if node.deps.is_empty() || !has_references(&node.declared_input) {
            Ok(None)
        } else {
            resolve_input(&node.declared_input, &self.upstream(node)).map(|v| Some(Arc::new(v)))
        };
        let objective = node.objective;
        match resolved {
            Ok(input) => {
                if let Some(input) = input
                    && let Some(node) = self.tasks.get_mut(id)
                {
                    node.input = input;
                }
                self.mark_ready(objective, id);
            }
            Err(err) => {
                let message = format!("input could not be built: {err}");
                self.fail_task(id, None, FailureKind::Permanent, message, None);
            }
        }
    }

    /// The task is ready from now on: record it and queue or dispatch it.
    fn mark_ready(&mut self, objective: ObjectiveId, id: TaskId) {
        if let Some(node) = self.tasks.get_mut(id) {
            node.status = TaskStatus::Ready;
            node.ready_at = Instant::now();
        }
        self.journal.record(Event::TaskReady {
            objective,
            task: id,
        });
        self.enqueue_or_dispatch(id);
    }

    fn upstream(&self, node: &TaskNode) -> BTreeMap<TaskKey, Value> {
        node.deps
            .iter()
            .filter_map(|d| self.tasks.get(*d))
            .map(|d| (d.key.clone(), d.output.clone().unwrap_or(Value::Null)))
            .collect()
    }

    /// Gives a ready task to an agent now if its queue is empty and an agent has room;
    /// otherwise queues it.
    fn enqueue_or_dispatch(&mut self, id: TaskId) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let (priority, capability) = (node.priority, node.capability.clone());
        let queue_empty = self
            .queues
            .get(&capability)
            .is_none_or(ReadyQueue::is_empty);
        if queue_empty && let Some(lease) = self.lease_for_burst(&capability) {
            self.assign(id, lease);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(node) = self.tasks.get_mut(id) {
            node.queued = Some(seq);
        }
        self.queues.entry(capability).or_default().push(Entry {
            priority,
            seq,
            task: id,
        });
    }

    /// A slot for a newly ready task. Within one handler turn, the least-loaded agent the
    /// registry chose for a capability keeps taking that capability's new tasks until it has
    /// taken `capacity / burst_divisor` of them (at least one), so a burst reaches it in one
    /// message; then the registry chooses again. Agents of small capacity, as model agents are,
    /// therefore get one task per choice.
    fn lease_for_burst(&mut self, capability: &Capability) -> Option<Lease<ActorRef<AgentMsg>>> {
        if let Some((agent, left)) = self.burst.get_mut(capability)
            && *left > 0
        {
            if let Some(lease) = self.registry.try_acquire(*agent) {
                *left -= 1;
                return Some(lease);
            }
            *left = 0;
        }
        let lease = self.registry.select(capability)?;
        let share = (lease.capacity / self.config.burst_divisor.max(1)).max(1);
        match self.burst.get_mut(capability) {
            Some(entry) => *entry = (lease.agent, share - 1),
            None => {
                self.burst
                    .insert(capability.clone(), (lease.agent, share - 1));
            }
        }
        Some(lease)
    }

    /// Starts the task's next attempt on the leased agent (sent when the handler ends).
    fn assign(&mut self, id: TaskId, lease: Lease<ActorRef<AgentMsg>>) {
        let Some(node) = self.tasks.get_mut(id) else {
            self.registry.release(lease.agent);
            return;
        };
        node.attempt += 1;
        node.status = TaskStatus::Running;
        node.agent = Some(lease.agent);
        node.queued = None;
        let upstream = if node.deps.is_empty() {
            BTreeMap::new()
        } else {
            self.tasks
                .get(id)
                .map(|node| self.upstream(node))
                .unwrap_or_default()
        };
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let task = Task {
            id,
            objective: node.objective,
            key: node.key.clone(),
            capability: node.capability.clone(),
            attempt: node.attempt,
            input: node.input.clone(),
            upstream,
            idle_timeout: node.idle_timeout,
            hard_timeout: node.hard_timeout,
        };
        let ready_at = node.ready_at;
        self.journal.record(Event::TaskStarted {
            objective: node.objective,
            task: id,
            attempt: node.attempt,
            agent: lease.agent,
        });
        self.in_flight.entry(lease.agent).or_default().insert(id);
        self.outbox
            .entry(lease.agent)
            .or_insert_with(|| (lease.handle, Vec::new()))
            .1
            .push(Assignment { task, ready_at });
        self.stats.allocations += 1;
        self.stats.tasks_running += 1;
    }

    /// The agent has room: give it queued tasks of its capabilities, best first.
    pub(crate) fn pull_for(&mut self, agent: AgentId) {
        let caps = match self.agent_caps.get(&agent) {
            Some(caps) => caps.clone(),
            None => match self.registry.capabilities(agent) {
                Some(caps) => {
                    let caps: Arc<[Capability]> = caps.into();
                    self.agent_caps.insert(agent, caps.clone());
                    caps
                }
                None => return,
            },
        };
        loop {
            let mut best: Option<(Entry, usize)> = None;
            for (i, cap) in caps.iter().enumerate() {
                let Some(queue) = self.queues.get_mut(cap) else {
                    continue;
                };
                let tasks = &self.tasks;
                let head =
                    queue.peek(|e| tasks.get(e.task).is_some_and(|n| n.queued == Some(e.seq)));
                if let Some(head) = head
                    && best.is_none_or(|(b, _)| head > b)
                {
                    best = Some((head, i));
                }
            }
            let Some((entry, i)) = best else { return };
            let Some(lease) = self.registry.try_acquire(agent) else {
                return;
            };
            if let Some(queue) = self.queues.get_mut(&caps[i]) {
                queue.pop();
            }
            self.assign(entry.task, lease);
        }
    }

    /// Sends the assignments made while handling one message, one batch per agent. An agent
    /// whose actor is gone gets its batch taken back at once.
    pub(crate) fn flush(&mut self) {
        self.burst.clear();
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        for (agent, (actor, batch)) in outbox {
            if let Err(err) = actor.cast(AgentMsg::Run(batch)) {
                let ractor::MessagingErr::SendErr(AgentMsg::Run(batch)) = err else {
                    continue;
                };
                // Down first, so the requeued tasks cannot be handed to the same dead actor
                // again (its supervisor brings it back up when it restarts it).
                let _ = self.registry.set_health(agent, Health::Down);
                for a in batch {
                    self.requeue_lost(agent, a.task.id, "the agent's actor was gone");
                }
            }
        }
        // Requeued tasks may have been assigned again (to a live agent).
        if !self.outbox.is_empty() {
            self.flush();
        }
    }

    // ---- Outcomes ---------------------------------------------------------------------------

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

    fn on_report(&mut self, agent: AgentId, report: Report) {
        let Some(node) = self.tasks.get_mut(report.task) else {
            return;
        };
        // A report for an attempt that is no longer current (cancelled, or taken back when its
        // agent crashed) changes nothing: a late result never commits.
        if node.status != TaskStatus::Running
            || node.attempt != report.attempt
            || node.agent != Some(agent)
        {
            return;
        }
        node.run_time += report.duration;
        if let Some(u) = report.outcome.usage() {
            node.usage.input_tokens += u.input_tokens;
            node.usage.output_tokens += u.output_tokens;
        }
        self.release(agent, report.task);
        match report.outcome {
            TaskOutcome::Succeeded { output, usage } => {
                self.succeed(report.task, agent, output, usage, report.duration);
            }
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } => self.spawn(report.task, agent, output, tasks, usage, report.duration),
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                message,
                partial_output,
                ..
            } => self.send_to_review(report.task, partial_output, message),
            TaskOutcome::Failed {
                kind,
                message,
                partial_output,
                retry_after,
                ..
            } => {
                let retry_after = retry_after.unwrap_or(Duration::ZERO);
                self.attempt_failed(
                    report.task,
                    Some(agent),
                    kind,
                    message,
                    partial_output,
                    retry_after,
                );
            }
        }
    }

    fn release(&mut self, agent: AgentId, task: TaskId) {
        self.registry.release(agent);
        if let Some(set) = self.in_flight.get_mut(&agent) {
            set.remove(&task);
        }
        self.stats.tasks_running = self.stats.tasks_running.saturating_sub(1);
    }

    fn succeed(
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
        node.status = TaskStatus::Succeeded;
        node.error = None;
        let (objective, attempt) = (node.objective, node.attempt);
        self.journal.record(Event::TaskSucceeded {
            objective,
            task: id,
            attempt,
            agent,
            output: output.clone(),
            usage,
            duration,
        });
        node.output = Some(output);
        self.stats.tasks_succeeded += 1;
        self.task_done(id);
    }

    /// A task reached a terminal success: wake its dependents and maybe end the objective.
    fn task_done(&mut self, id: TaskId) {
        let Some(node) = self.tasks.get(id) else {
            return;
        };
        let objective = node.objective;
        let dependents = node.dependents.clone();
        for dep in dependents {
            let ready = match self.tasks.get_mut(dep) {
                Some(d) if d.status == TaskStatus::Backlog => {
                    d.waiting_on = d.waiting_on.saturating_sub(1);
                    d.waiting_on == 0
                }
                _ => false,
            };
            if ready {
                self.make_ready(dep);
            }
        }
        if let Some(run) = self.objectives.get_mut(&objective) {
            run.unfinished = run.unfinished.saturating_sub(1);
            if run.unfinished == 0 && run.status == ObjectiveStatus::Running {
                self.end_objective(objective, ObjectiveStatus::Succeeded, None);
            }
        }
    }

    fn spawn(
        &mut self,
        id: TaskId,
        agent: AgentId,
        output: Value,
        specs: Vec<TaskSpec>,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        let Some(objective) = self.tasks.get(id).map(|n| n.objective) else {
            return;
        };
        let Some(mut run) = self.objectives.remove(&objective) else {
            return;
        };
        let checked = {
            // Follow-ups depend on their parent implicitly; validate them with that edge.
            let parent_key = self.tasks.get(id).map(|n| n.key.clone());
            let specs_with_parent: Vec<TaskSpec> = specs
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
                .collect();
            let existing = Existing {
                run: &run,
                tasks: &self.tasks,
            };
            graph::validate(&specs_with_parent, &existing, &run.limits)
                .map_err(SchedulerError::from)
                .and_then(|depths| {
                    self.check_tasks(&specs_with_parent)
                        .map(|()| (depths, specs_with_parent))
                })
        };
        match checked {
            Ok((depths, specs_with_parent)) => {
                let first = TaskId(self.next_task);
                let new_ids =
                    self.add_tasks(objective, &mut run, &specs_with_parent, &depths, Some(id));
                self.objectives.insert(objective, run);
                self.journal.record(Event::TasksSpawned {
                    objective,
                    parent: id,
                    first_task: first,
                    tasks: specs,
                });
                self.succeed(id, agent, output, usage, duration);
                // Follow-ups that depend only on the parent became ready in `succeed`; any whose
                // other dependencies had already succeeded are ready too.
                for t in new_ids {
                    if self
                        .tasks
                        .get(t)
                        .is_some_and(|n| n.status == TaskStatus::Backlog && n.waiting_on == 0)
                    {
                        self.make_ready(t);
                    }
                }
            }
            Err(err) => {
                self.objectives.insert(objective, run);
                let message = format!("spawned tasks refused: {err}");
                self.fail_task(
                    id,
                    Some(agent),
                    FailureKind::Permanent,
                    message,
                    Some(output),
                );
            }
        }
    }

    fn send_to_review(&mut self, id: TaskId, output: Option<Value>, reason: String) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        node.status = TaskStatus::Review;
        node.output = output.clone();
        node.error = Some(reason.clone());
        self.journal.record(Event::TaskInReview {
            objective: node.objective,
            task: id,
            attempt: node.attempt,
            output: output.unwrap_or(Value::Null),
            reason,
        });
    }

    /// An attempt failed: retry it after a backoff, or fail the task for good.
    fn attempt_failed(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
        retry_after: Duration,
    ) {
        self.stats.attempts_failed += 1;
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        // Attempts lost to crashing agents are not the task's failures: they do not count here.
        let failed_attempts = node.attempt.saturating_sub(node.lost);
        let retry = kind.is_retryable()
            && failed_attempts
                < node
                    .retry
                    .max_attempts
                    .min(RetryPolicy::MAX_ATTEMPTS_CEILING);
        if !retry {
            self.fail_task(id, agent, kind, message, partial);
            return;
        }
        let ceiling = node.retry.backoff_ceiling(node.attempt + 1);
        let jitter = Duration::from_nanos(
            self.rng
                .u64(0..=u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX)),
        );
        let delay = jitter.max(retry_after);
        node.status = TaskStatus::Ready;
        node.retry_due = true;
        node.error = Some(message.clone());
        if partial.is_some() {
            node.partial = partial.clone();
        }
        let (objective, attempt) = (node.objective, node.attempt);
        self.journal.record(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message,
            partial_output: partial,
            usage: None,
            retry_in: Some(delay),
        });
        // The timer's message carries the attempt it is for, so a stale timer does nothing.
        self.myself
            .send_after(delay, move || SchedulerMsg::RetryDue { task: id, attempt });
    }

    /// A retry backoff passed.
    pub(crate) fn on_retry_due(&mut self, id: TaskId, attempt: u32) {
        let due = self.tasks.get_mut(id).is_some_and(|n| {
            let due = n.retry_due && n.attempt == attempt && n.status == TaskStatus::Ready;
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

    /// A task failed for good: its objective fails and the rest of it is cancelled.
    fn fail_task(
        &mut self,
        id: TaskId,
        agent: Option<AgentId>,
        kind: FailureKind,
        message: String,
        partial: Option<Value>,
    ) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        node.status = TaskStatus::Failed;
        node.retry_due = false;
        node.error = Some(message.clone());
        if partial.is_some() {
            node.partial = partial.clone();
        }
        let (objective, attempt, key) = (node.objective, node.attempt, node.key.clone());
        self.journal.record(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent,
            kind,
            message: message.clone(),
            partial_output: partial,
            usage: None,
            retry_in: None,
        });
        if let Some(run) = self.objectives.get_mut(&objective) {
            run.unfinished = run.unfinished.saturating_sub(1);
        }
        let reason = format!("task `{key}` ({id}) failed: {message}");
        self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
    }

    // ---- Agents -----------------------------------------------------------------------------

    /// An agent registered, recovered or grew: it may take queued work.
    pub(crate) fn on_agent_available(&mut self, agent: AgentId) {
        self.agent_caps.remove(&agent);
        self.pull_for(agent);
    }

    /// An agent's actor died: every attempt it had goes back to the queue.
    pub(crate) fn on_agent_lost(&mut self, agent: AgentId, reason: &str) {
        let lost: Vec<TaskId> = self
            .in_flight
            .get(&agent)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for task in lost {
            self.requeue_lost(agent, task, reason);
        }
    }

    /// Takes back an attempt that its agent lost (crash, or gone before it got the work).
    fn requeue_lost(&mut self, agent: AgentId, id: TaskId, reason: &str) {
        let Some(node) = self.tasks.get_mut(id) else {
            return;
        };
        if node.status != TaskStatus::Running || node.agent != Some(agent) {
            return;
        }
        node.lost += 1;
        let (objective, attempt, lost) = (node.objective, node.attempt, node.lost);
        self.release(agent, id);
        let message = format!("agent {agent} lost the attempt: {reason}");
        if lost > self.config.max_lost_attempts {
            let message = format!("{message} (the task was lost by crashing agents {lost} times)");
            self.fail_task(id, Some(agent), FailureKind::Transient, message, None);
            return;
        }
        self.journal.record(Event::TaskFailed {
            objective,
            task: id,
            attempt,
            agent: Some(agent),
            kind: FailureKind::Transient,
            message: message.clone(),
            partial_output: None,
            usage: None,
            retry_in: Some(Duration::ZERO),
        });
        if let Some(node) = self.tasks.get_mut(id) {
            node.status = TaskStatus::Ready;
            node.error = Some(message);
            node.ready_at = Instant::now();
        }
        self.stats.attempts_failed += 1;
        self.enqueue_or_dispatch(id);
    }

    // ---- Objective end, cancel, review ------------------------------------------------------

    fn end_objective(&mut self, id: ObjectiveId, status: ObjectiveStatus, reason: Option<String>) {
        let Some(run) = self.objectives.get_mut(&id) else {
            return;
        };
        if run.status.is_terminal() {
            return;
        }
        run.status = status;
        run.failure = reason.clone();
        let tasks = run.tasks.clone();
        // Slots freed by cancelled attempts go to other objectives' queued tasks, once every
        // task of this one is marked (so none of its own is handed out again).
        let freed: Vec<AgentId> = tasks
            .into_iter()
            .filter_map(|t| self.cancel_task(t))
            .collect();
        for agent in freed {
            self.pull_for(agent);
        }
        self.journal.record(match status {
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
                let _ = reply.send(summary.clone());
            }
        }
    }

    /// Marks a task cancelled; returns the agent whose slot its running attempt freed.
    fn cancel_task(&mut self, id: TaskId) -> Option<AgentId> {
        let node = self.tasks.get_mut(id)?;
        if node.status.is_terminal() {
            return None;
        }
        let was = node.status;
        node.status = TaskStatus::Cancelled;
        node.retry_due = false;
        let (objective, attempt, agent, queued) =
            (node.objective, node.attempt, node.agent, node.queued.take());
        if queued.is_some() {
            let capability = node.capability.clone();
            if let Some(q) = self.queues.get_mut(&capability) {
                q.forget_one();
            }
        }
        let mut freed = None;
        if was == TaskStatus::Running
            && let Some(agent) = agent
        {
            self.release(agent, id);
            if let Some(actor) = self.registry.handle(agent) {
                let _ = actor.cast(AgentMsg::Cancel { task: id, attempt });
            }
            freed = Some(agent);
        }
        self.journal.record(Event::TaskCancelled {
            objective,
            task: id,
        });
        freed
    }

    /// A user cancels an objective.
    pub(crate) fn cancel(&mut self, id: ObjectiveId) -> Result<(), SchedulerError> {
        let run = self
            .objectives
            .get(&id)
            .ok_or(SchedulerError::UnknownObjective(id))?;
        if run.status.is_terminal() {
            return Ok(());
        }
        self.end_objective(id, ObjectiveStatus::Cancelled, None);
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
        if node.status != TaskStatus::Review {
            return Err(SchedulerError::NotInReview {
                task: id,
                status: format!("{:?}", node.status).to_lowercase(),
            });
        }
        let objective = node.objective;
        match decision {
            ReviewDecision::Approve { output } => {
                let output = output.or_else(|| node.output.take()).unwrap_or(Value::Null);
                node.status = TaskStatus::Succeeded;
                node.error = None;
                node.output = Some(output.clone());
                self.journal.record(Event::TaskApproved {
                    objective,
                    task: id,
                    output,
                });
                self.stats.tasks_succeeded += 1;
                self.task_done(id);
            }
            ReviewDecision::Reject { reason } => {
                self.journal.record(Event::TaskRejected {
                    objective,
                    task: id,
                    reason: reason.clone(),
                });
                self.fail_task(
                    id,
                    None,
                    FailureKind::Permanent,
                    format!("rejected in review: {reason}"),
                    None,
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
        let tasks = run
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(*t).map(|n| (t, n)))
            .map(|(&t, n)| TaskView {
                id: t,
                key: n.key.clone(),
                capability: n.capability.clone(),
                status: n.status,
                attempts: n.attempt,
                agent: n.agent,
                output: n.output.clone(),
                error: n.error.clone(),
                partial_output: n.partial.clone(),
                spawned_by: n.spawned_by,
                usage: n.usage,
                run_time: n.run_time,
            })
            .collect();
        Some(ObjectiveView {
            id,
            goal: run.goal.clone(),
            status: run.status,
            failure: run.failure.clone(),
            tasks,
        })
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
                let _ = reply.send(self.summary(id));
            }
        }
    }

    /// Records an event that happened outside the scheduler.
    pub(crate) fn record(&mut self, event: Event) {
        self.journal.record(event);
    }

    /// Counters.
    pub(crate) fn stats(&self) -> SchedulerStats {
        let mut stats = self.stats;
        stats.tasks_queued = self.queues.values().map(|q| q.len() as u64).sum();
        stats
    }
}
