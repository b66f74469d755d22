//! The scheduler's state: the parts it is made of, and the turn they run in. The actor in
//! `scheduler.rs` only routes messages here, so this logic can be read (and tested) without
//! the mailbox around it.
//!
//! Each part owns its data and keeps its own rules, and is tested on plain values: the task
//! graph ([`Graph`]), dispatch ([`Dispatch`], where the allocation invariant and fairness
//! live), the posted events and waiting tasks ([`Waits`]), and each failed objective's saga
//! (`Saga`, where the order of compensations lives). [`SchedulerState`] holds them with what a
//! turn needs (the registry, the journal, the effects carried out once the turn is durable)
//! and makes the calls between them. This file has the steps every path goes through: a task
//! becomes ready and goes to dispatch (`make_ready`), an attempt starts (`assign`), an event
//! is recorded (`emit`) and a turn ends (`flush`). The transitions of each concern are in a
//! file of their own: `objectives.rs`, `outcomes.rs`, `failures.rs`, `plans.rs`, `sagas.rs`,
//! `recovery.rs` and `waits.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ractor::{ActorRef, RpcReplyPort};
use rustc_hash::FxHashMap;
use serde_json::Value;
use swarm_agents::ReportInbox;
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, Event, FailureKind, ObjectiveId, ObjectiveSummary,
    SchedulerError, SchedulerMsg, SchedulerStats, Task, TaskId, TaskKind,
};
use swarm_registry::{Lease, Registry};

use super::SchedulerConfig;
use super::dispatch::Dispatch;
use super::failures::AttemptCost;
use super::graph::Graph;
use super::idempotency::Keys;
use super::record::task_of;
use super::waits::Waits;
use crate::journal::{Delivery, Effects, Journal, now_ms};

/// The registry as the coordinator uses it: agents are reached through their actor refs.
pub type AgentRegistry = Registry<ActorRef<AgentMsg>>;

/// Everything the scheduler owns.
pub struct SchedulerState {
    /// The agents, shared with the supervisor: slots are taken and given back through it.
    pub(super) registry: AgentRegistry,
    /// The actor's own ref, for the timers that send a message back (retries, deadlines,
    /// waits, expiries).
    pub(super) myself: ActorRef<SchedulerMsg>,
    pub(super) config: SchedulerConfig,
    /// Where the turn's events go; it carries out the turn's effects once they are durable.
    pub(super) journal: Box<dyn Journal>,
    /// How effects reach agents and callers.
    pub(super) delivery: Arc<Delivery>,
    /// What the current turn does once its events are durable.
    pub(super) effects: Effects,
    /// The newest idempotency keys of submitted objectives (older ones are in the log's
    /// index).
    pub(super) keys: Keys,
    /// Finished objectives still in memory, oldest first, with the sequence number of the
    /// event that ended them (only kept track of with a durable log, which holds them once
    /// they are dropped).
    pub(super) finished: VecDeque<(ObjectiveId, u64)>,
    /// The objectives held in memory and their tasks.
    pub(super) graph: Graph,
    /// The ready queues, parking and what the turn sends to agents.
    pub(super) dispatch: Dispatch<ActorRef<AgentMsg>>,
    /// Callers waiting for an objective to end.
    pub(super) waiters: FxHashMap<ObjectiveId, Vec<RpcReplyPort<Option<ObjectiveSummary>>>>,
    /// Where agents' reports arrive.
    pub(super) reports: ReportInbox,
    /// For the jitter of retry backoffs.
    pub(super) rng: fastrand::Rng,
    /// Counters; the depths of queues and waits are read from their owners when asked.
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
            keys: Keys::new(config.idempotency_keys_in_memory),
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
            priority: node.priority,
        };
        let (ready_at, capped) = (node.ready_at, node.capped.then_some(objective));
        // Looked up only when traces are exported, so the allocation path does no more work.
        let parent_span = if swarm_agents::trace::enabled() {
            self.graph
                .objectives
                .get(&objective)
                .map(|run| Box::new(run.span.clone()))
        } else {
            None
        };
        self.journal.record(Event::TaskStarted {
            objective,
            task: id,
            attempt,
            agent: lease.agent,
            input: built,
        });
        self.dispatch.assigned(
            lease,
            Assignment {
                task,
                ready_at,
                parent_span,
            },
            capped,
        );
        self.stats.allocations += 1;
        self.stats.tasks_running += 1;
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
        stats.events_unwritten = self
            .journal
            .progress()
            .map_or(0, |(recorded, durable)| recorded.saturating_sub(durable));
        stats
    }

    /// Tasks waiting for an agent, per capability, ordered by capability.
    pub(crate) fn queue_depths(&self) -> Vec<(Capability, u64)> {
        self.dispatch.depths()
    }
}
