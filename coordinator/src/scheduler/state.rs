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
use swarm_protocol::graph::{self, GraphError, NoTasks};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, Event, FailureKind, Limits, Objective, ObjectiveId,
    ObjectiveStatus, ObjectiveSummary, OutputError, Report, RetryPolicy, ReviewDecision,
    SchedulerError, SchedulerMsg, SchedulerStats, Task, TaskId, TaskKey, TaskKind, TaskOutcome,
    TaskSpec, TaskStatus, Usage, objective::check_idempotency_key,
};
use swarm_registry::{Lease, Registry};

use super::SchedulerConfig;
use super::checks;
use super::dispatch::Dispatch;
use super::graph::{BatchExtras, Graph, ObjectiveRun, ObjectiveTasks, TaskNode};
use super::planner::{self, PLAN_KEY};
use super::record::task_of;
use super::sagas::Saga;
use super::schema::review_reason;
use super::spawn;
use super::waits::Waits;
use crate::journal::{Delivery, Effects, Journal, now_ms};

/// The registry as the coordinator uses it: agents are reached through their actor refs.
pub type AgentRegistry = Registry<ActorRef<AgentMsg>>;

/// What an attempt cost, carried into its event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AttemptCost {
    pub(super) usage: Option<Usage>,
    pub(super) duration: Option<Duration>,
}

/// A successful attempt's result, on its way into the graph.
pub(super) struct SuccessfulAttempt {
    pub(super) agent: AgentId,
    pub(super) output: Value,
    pub(super) usage: Option<Usage>,
    pub(super) duration: Duration,
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
        let Some(node) = self.graph.tasks.get(report.task) else {
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
            self.dispatch
                .attempt_ended(&mut self.graph.tasks, objective);
        }
        let duration = report.duration;
        let spent = |usage| AttemptCost {
            usage,
            duration: Some(duration),
        };
        let answer = |output, usage| SuccessfulAttempt {
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
                let spent = AttemptCost {
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
                let spent = AttemptCost {
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
            let reason = self.graph.objectives.get(&objective).map(|run| {
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
        let Some(run) = self.graph.objectives.get_mut(&objective) else {
            return false;
        };
        run.tokens = run.tokens.saturating_add(tokens);
        run.status == ObjectiveStatus::Running && run.over_budget()
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
        let checked = match self.graph.tasks.get(id).and_then(TaskNode::schema) {
            Some(schema) => schema.check(&output),
            None => Ok(()),
        };
        match checked {
            Ok(()) => self.succeed(id, agent, output, usage, duration),
            Err(errors) => {
                let spent = AttemptCost {
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
        let Some(node) = self.graph.tasks.get_mut(id) else {
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
        if compensable && let Some(run) = self.graph.objectives.get_mut(&objective) {
            run.compensable.push(id);
        }
        self.stats.tasks_succeeded += 1;
        self.task_done(id);
    }

    /// A task reached a terminal success: wake its dependents and maybe end the objective
    /// (unless the objective went over its token budget: it is about to fail). A finished
    /// compensation lets the next one start.
    pub(super) fn task_done(&mut self, id: TaskId) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let objective = node.objective;
        if node.record.compensates.is_some() {
            self.next_compensation(objective);
            return;
        }
        let dependents = node.dependents.clone();
        let (halted, done) = match self.graph.objectives.get_mut(&objective) {
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
            let ready = match self.graph.tasks.get_mut(dep) {
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

    /// A task succeeded and asks for follow-up tasks: they are checked as a submitted graph
    /// is, then join the graph; if refused, the task fails (a breached limit fails the
    /// objective outright: re-planning would only grow it again).
    pub(super) fn spawn(&mut self, id: TaskId, answer: SuccessfulAttempt, specs: Vec<TaskSpec>) {
        let Some(objective) = self.graph.tasks.get(id).map(|n| n.objective) else {
            return;
        };
        let with_parent = self.graph.with_parent(id, &specs);
        let checked = {
            let Some(run) = self.graph.objectives.get(&objective) else {
                return;
            };
            let existing = ObjectiveTasks {
                run,
                tasks: &self.graph.tasks,
            };
            graph::validate(&with_parent, &existing, &run.limits)
                .map_err(SchedulerError::from)
                .and_then(|depths| {
                    checks::check_tasks(&self.registry, &with_parent).map(|extras| (depths, extras))
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
                let spent = AttemptCost {
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
        answer: SuccessfulAttempt,
        specs: Vec<TaskSpec>,
        with_parent: &[TaskSpec],
        depths: &[u32],
        extras: BatchExtras,
    ) {
        let Some(objective) = self.graph.tasks.get(parent).map(|n| n.objective) else {
            return;
        };
        let Some(mut run) = self.graph.objectives.remove(&objective) else {
            return;
        };
        let first = TaskId(self.graph.next_task);
        let new_ids = self.graph.add_tasks(
            objective,
            &mut run,
            with_parent,
            depths,
            Some(parent),
            extras,
        );
        self.graph.objectives.insert(objective, run);
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
                .graph
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

    /// The task waits for a person; `errors` says where its output does not match its
    /// schema, when that is why.
    /// `approval` says the review is an approval's request, which is its next attempt.
    pub(super) fn send_to_review(
        &mut self,
        id: TaskId,
        output: Option<Value>,
        reason: String,
        errors: Vec<OutputError>,
        spent: AttemptCost,
        approval: bool,
    ) {
        let Some(node) = self.graph.tasks.get(id) else {
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
        spent: AttemptCost,
    ) {
        self.stats.attempts_failed += 1;
        let Some(node) = self.graph.tasks.get_mut(id) else {
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
        let due = self.graph.tasks.get_mut(id).is_some_and(|n| {
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
        spent: AttemptCost,
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
        spent: AttemptCost,
        may_replan: bool,
    ) {
        let Some((objective, key)) = self.record_failure(id, agent, kind, &message, partial, spent)
        else {
            return;
        };
        if self
            .graph
            .tasks
            .get(id)
            .is_some_and(|n| n.record.compensates.is_some())
        {
            self.next_compensation(objective);
            return;
        }
        if let Some(run) = self.graph.objectives.get_mut(&objective) {
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
        spent: AttemptCost,
    ) -> Option<(ObjectiveId, TaskKey)> {
        let node = self.graph.tasks.get_mut(id)?;
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
        let Some(node) = self.graph.tasks.get_mut(id) else {
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
                AttemptCost::default(),
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
        if let Some(node) = self.graph.tasks.get_mut(id) {
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
