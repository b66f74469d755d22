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
use rustc_hash::FxHashMap;
use serde_json::Value;
use swarm_agents::ReportInbox;
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, Event, FailureKind, Limits, Objective, ObjectiveId,
    ObjectiveStatus, ObjectiveSummary, ReviewDecision, SchedulerError, SchedulerMsg,
    SchedulerStats, Task, TaskId, TaskKind, TaskSpec, TaskStatus, objective::check_idempotency_key,
};
use swarm_registry::{Lease, Registry};

use super::SchedulerConfig;
use super::checks;
use super::dispatch::Dispatch;
use super::failures::AttemptCost;
use super::graph::{BatchExtras, Graph, ObjectiveRun, ObjectiveTasks};
use super::outcomes::SuccessfulAttempt;
use super::planner::{self, PLAN_KEY};
use super::record::task_of;
use super::sagas::Saga;
use super::waits::Waits;
use crate::journal::{Delivery, Effects, Journal, now_ms};

/// The registry as the coordinator uses it: agents are reached through their actor refs.
pub type AgentRegistry = Registry<ActorRef<AgentMsg>>;

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
    /// Finished objectives still in memory, oldest first, with the sequence number of the
    /// event that ended them (only kept track of with a durable log, which holds them once
    /// they are dropped).
    pub(super) finished: VecDeque<(ObjectiveId, u64)>,
    /// The objectives held in memory and their tasks.
    pub(super) graph: Graph,
    /// The ready queues, parking and what the turn sends to agents.
    pub(super) dispatch: Dispatch<ActorRef<AgentMsg>>,
    pub(super) waiters: FxHashMap<ObjectiveId, Vec<RpcReplyPort<Option<ObjectiveSummary>>>>,
    pub(super) reports: ReportInbox,
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
            finished: VecDeque::new(),
            graph: Graph::default(),
            dispatch: Dispatch::new(config.burst_divisor),
            waiters: FxHashMap::default(),
            reports,
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
            let plan = checks::planning_spec(PLAN_KEY).ok_or(SchedulerError::NoPlanner)?;
            if !self.registry.knows_capability(&plan.capability) {
                return Err(SchedulerError::NoPlanner);
            }
            // The planning task counts against the limits like any task.
            graph::validate(std::slice::from_ref(&plan), &NoTasks, &objective.limits)?;
            (Vec::new(), BatchExtras::new())
        } else {
            let depths = graph::validate(&objective.tasks, &NoTasks, &objective.limits)?;
            let extras = checks::check_tasks(&self.registry, &objective.tasks)?;
            (depths, extras)
        };

        let id = ObjectiveId::new();
        let first = TaskId(self.graph.next_task);
        let mut run = ObjectiveRun::new(
            objective.goal.clone(),
            objective.priority,
            objective.limits,
            objective.tasks.len().max(1),
        );
        run.planned = planned;
        let new_ids = self
            .graph
            .add_tasks(id, &mut run, &objective.tasks, &depths, None, extras);
        self.graph.objectives.insert(id, run);
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
            if self
                .graph
                .tasks
                .get(task)
                .is_some_and(|n| n.waiting_on == 0)
            {
                self.make_ready(task);
            }
        }
        Ok(id)
    }

    /// Adds a planning task to a running objective (`plan`, or `replan-N` after `failed`
    /// failed for good) and makes it ready. `None` when the objective's limits leave no room.
    pub(super) fn request_plan(
        &mut self,
        objective: ObjectiveId,
        replan: u32,
        failed: Option<TaskId>,
    ) -> Option<TaskId> {
        let mut run = self.graph.objectives.remove(&objective)?;
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
            .filter_map(|key| checks::planning_spec(&key))
            .find(|spec| !run.keys.contains_key(&spec.id));
        let checked = spec.and_then(|spec| {
            let existing = ObjectiveTasks {
                run: &run,
                tasks: &self.graph.tasks,
            };
            graph::validate(std::slice::from_ref(&spec), &existing, &run.limits)
                .ok()
                .map(|depths| (spec, depths))
        });
        let Some((spec, depths)) = checked else {
            self.graph.objectives.insert(objective, run);
            return None;
        };
        let ids = self.graph.add_tasks(
            objective,
            &mut run,
            std::slice::from_ref(&spec),
            &depths,
            None,
            BatchExtras::new(),
        );
        run.replans = run.replans.max(replan);
        self.graph.objectives.insert(objective, run);
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

    /// Sets the timer of an objective's deadline.
    pub(super) fn arm_deadline(&self, objective: ObjectiveId, deadline: Option<Duration>) {
        if let Some(deadline) = deadline {
            self.myself
                .send_after(deadline, move || SchedulerMsg::DeadlinePassed { objective });
        }
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
        match self.graph.build_input(id)? {
            Ok(objective) => Some(objective),
            Err(message) => {
                self.fail_task(
                    id,
                    None,
                    FailureKind::Permanent,
                    message,
                    None,
                    AttemptCost::default(),
                );
                None
            }
        }
    }

    /// The task is ready from now on: record it and queue or dispatch it.
    pub(super) fn mark_ready(&mut self, objective: ObjectiveId, id: TaskId) {
        if let Some(node) = self.graph.tasks.get_mut(id) {
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
        match self.graph.tasks.get(id).map(|n| n.record.kind) {
            Some(TaskKind::Agent) => self.enqueue_or_dispatch(id),
            Some(TaskKind::Wait) => self.start_wait(id),
            Some(TaskKind::Approval) => self.request_approval(id),
            None => {}
        }
    }

    /// An `approval` task is ready: it goes to review with its input (what the person
    /// approves, and what its dependents get unless they edit it).
    pub(super) fn request_approval(&mut self, id: TaskId) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let input = Value::clone(&node.input);
        self.send_to_review(
            id,
            Some(input),
            "awaiting approval".into(),
            Vec::new(),
            AttemptCost::default(),
            true,
        );
    }

    /// Gives a ready task to an agent now if its queue is empty and an agent has room;
    /// otherwise queues it, or parks it while its objective is at its cap (see [`Dispatch`]).
    pub(super) fn enqueue_or_dispatch(&mut self, id: TaskId) {
        if let Some(lease) = self
            .dispatch
            .place(&mut self.graph.tasks, &self.registry, id)
        {
            self.assign(id, lease);
        }
    }

    /// Starts the task's next attempt on the leased agent (sent when the handler ends).
    pub(super) fn assign(&mut self, id: TaskId, lease: Lease<ActorRef<AgentMsg>>) {
        // A planning task's prompt is built now, from the agents registered now.
        let built = self.plan_input(id);
        let Some(node) = self.graph.tasks.get_mut(id) else {
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
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let upstream = if node.record.deps.is_empty() {
            BTreeMap::new()
        } else {
            self.graph.upstream(node)
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
        let node = self.graph.tasks.get(id)?;
        let planning = node.record.planning.as_deref()?;
        let run = self.graph.objectives.get(&node.objective)?;
        let capabilities = planner::capabilities(&self.registry.snapshots());
        let room = planner::Room {
            tasks: u64::from(run.limits.max_tasks).saturating_sub(run.tasks.len() as u64),
            depth: run.limits.max_depth.saturating_sub(node.depth),
            fanout: run.limits.max_fanout,
        };
        let progress = (planning.replan > 0).then(|| self.graph.progress(run, planning.failed));
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

    /// The agent has room: give it queued tasks of its capabilities, best first.
    pub(crate) fn pull_for(&mut self, agent: AgentId) {
        let Some(caps) = self.dispatch.capabilities_of(&self.registry, agent) else {
            return;
        };
        while let Some((task, lease)) =
            self.dispatch
                .next_for(&mut self.graph.tasks, &self.registry, agent, &caps)
        {
            self.assign(task, lease);
        }
    }

    /// Offers the queues that got parked tasks back to their agents, until each is empty or
    /// no agent of its capability has room (which keeps the allocation invariant).
    pub(super) fn kick(&mut self) {
        while let Some((task, lease)) = self
            .dispatch
            .next_kicked(&mut self.graph.tasks, &self.registry)
        {
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

    /// An objective's deadline passed: a running objective fails.
    pub(crate) fn on_deadline(&mut self, objective: ObjectiveId) {
        let Some(run) = self.graph.objectives.get(&objective) else {
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
        if let Some(node) = self.graph.tasks.get(task)
            && node.capped
        {
            let objective = node.objective;
            self.dispatch
                .attempt_ended(&mut self.graph.tasks, objective);
        }
    }

    /// Frees the agent slot of an attempt (`release` without the objective's cap).
    pub(super) fn release_slot(&mut self, agent: AgentId, task: TaskId) {
        self.dispatch.released(&self.registry, agent, task);
        self.stats.tasks_running = self.stats.tasks_running.saturating_sub(1);
    }

    /// A planning task answered: a valid plan's tasks join the graph as its children; an
    /// invalid one goes back to the planner once, with what is wrong with it.
    pub(super) fn plan_answered(
        &mut self,
        id: TaskId,
        answer: SuccessfulAttempt,
        given: Option<Vec<TaskSpec>>,
    ) {
        let specs = match given {
            Some(tasks) => Ok(tasks),
            None => planner::parse_plan(&answer.output).map_err(|e| vec![e]),
        };
        match specs.and_then(|specs| checks::check_plan(&self.graph, &self.registry, id, specs)) {
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

    /// A plan was invalid. The first time, the planning task runs again at once (a repair
    /// attempt, its prompt holding the errors and the rejected plan); the second time it
    /// fails, and with it the objective, naming the errors.
    pub(super) fn reject_plan(
        &mut self,
        id: TaskId,
        answer: SuccessfulAttempt,
        errors: Vec<String>,
    ) {
        let Some(node) = self.graph.tasks.get(id) else {
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
                AttemptCost::default(),
                false,
            );
        }
    }

    /// A task of the objective failed for good: if re-planning is allowed and left, the tasks
    /// that depended on it (which can never run) are dropped and a `replan-N` task asks the
    /// planner for the rest of the work. False when the objective must fail instead.
    pub(super) fn replan(&mut self, objective: ObjectiveId, failed: TaskId) -> bool {
        if self
            .graph
            .tasks
            .get(failed)
            .is_none_or(|n| n.record.planning.is_some())
        {
            return false;
        }
        let Some(run) = self.graph.objectives.get(&objective) else {
            return false;
        };
        let allowed = run.limits.replans(run.planned);
        let room = (run.tasks.len() as u64) < u64::from(run.limits.max_tasks);
        let planner_known = checks::planning_spec(PLAN_KEY)
            .is_some_and(|spec| self.registry.knows_capability(&spec.capability));
        if run.status.is_terminal() || run.replans >= allowed || !room || !planner_known {
            return false;
        }
        let replan = run.replans + 1;
        let mut freed = Vec::new();
        for task in self.graph.dependents_of(failed) {
            if self
                .graph
                .tasks
                .get(task)
                .is_some_and(|n| !n.record.status.is_terminal())
            {
                freed.extend(self.cancel_task(task));
                if let Some(run) = self.graph.objectives.get_mut(&objective) {
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
        let Some(run) = self.graph.objectives.get_mut(&id) else {
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
        if let Some(run) = self.graph.objectives.get_mut(&id) {
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
            let summary = self.graph.summary(id);
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
                    self.graph.forget(old);
                    self.dispatch.forget(old);
                }
            }
        }
    }

    /// Marks a task cancelled; returns the agent whose slot its running attempt freed.
    pub(super) fn cancel_task(&mut self, id: TaskId) -> Option<AgentId> {
        let node = self.graph.tasks.get_mut(id)?;
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
        let node = self.graph.tasks.get(id)?;
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
            .graph
            .objectives
            .get(&id)
            .ok_or(SchedulerError::UnknownObjective(id))?;
        match run.status {
            ObjectiveStatus::Running => self.end_objective(id, ObjectiveStatus::Cancelled, None),
            // It failed already: the compensations left are cancelled, and it ends failed.
            ObjectiveStatus::Compensating => {
                let reason = run.saga.as_ref().map_or("", Saga::reason).to_owned();
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
            .graph
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
                if compensable && let Some(run) = self.graph.objectives.get_mut(&objective) {
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
                    AttemptCost::default(),
                    !approval,
                );
            }
            ReviewDecision::Retry => self.mark_ready(objective, id),
        }
        Ok(())
    }

    // ---- Queries ----------------------------------------------------------------------------

    /// Answers now if the objective ended (or is unknown), else when it ends.
    pub(crate) fn await_end(
        &mut self,
        id: ObjectiveId,
        reply: RpcReplyPort<Option<ObjectiveSummary>>,
    ) {
        match self.graph.objectives.get(&id) {
            Some(run) if !run.status.is_terminal() => {
                self.waiters.entry(id).or_default().push(reply)
            }
            _ => {
                // The end may have been recorded in a turn not yet durable.
                let summary = self.graph.summary(id);
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
            && let Some(node) = self.graph.tasks.get_mut(task)
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
