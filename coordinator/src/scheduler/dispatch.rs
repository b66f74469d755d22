//! Ready tasks on their way to agents: the ready queues, the objectives' concurrency caps with
//! their parked tasks, the turn's bursts and outbox, and the attempts each agent runs.
//!
//! Allocation invariant: while a capability's ready queue holds a task, every agent with that
//! capability was full (or unhealthy) when the task was queued. Every event that frees room on
//! an agent (a report, a registration, a recovery) pulls from that agent's queues
//! ([`Dispatch::next_for`]), so a queued task never waits while a capable agent has room, and a
//! newly ready task only asks the registry to select an agent when its queue is empty
//! ([`Dispatch::place`]).
//!
//! A task an agent refused for good (a permanent failure that fails over) must not run there
//! again, so it never waits in its capability's queue, where it would stand between that
//! agent and the tasks behind it: it waits apart, with its capability's other *refused*
//! tasks, for any other agent ([`Dispatch::place`] tries one at once; [`Dispatch::next_for`]
//! offers it to every agent that frees room, except the one it avoids).
//!
//! A task whose last attempt failed with a retryable error (a 429, a 5xx, a timeout) prefers
//! another agent: when it is placed again, another agent of the capability with room takes it
//! first, and the agent it failed on only when no other has room. Once queued it is an
//! ordinary entry: by the invariant above, whoever frees room first is the only agent that
//! can take it.
//!
//! Fairness: queues order tasks by priority, then age. A task of an objective at its
//! `max_concurrency` is *parked* with its objective (its queue entry, so its place, is kept)
//! instead of being allocated; when one of the objective's attempts ends
//! ([`Dispatch::attempt_ended`]), as many parked entries as there is room go back into their
//! queues, and those queues are offered to their agents at the end of the turn
//! ([`Dispatch::next_kicked`]), which keeps the invariant above. Objectives without a cap pay
//! one flag test per allocation. An objective that may pause at a spending limit has a cap
//! too (with no maximum unless it set one): while it is paused ([`Dispatch::pause`]) it is
//! always full, so its ready tasks park, and [`Dispatch::resume`] puts them back.
//!
//! [`Dispatch`] decides where a ready task goes and holds what the turn sends; the scheduler
//! starts the attempt and records it. It is generic over the agents' handle, as the registry
//! is, so its rules are tested on plain values.

use std::collections::BinaryHeap;
use std::num::NonZeroU32;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use swarm_protocol::{AgentId, AgentMsg, Assignment, Capability, ObjectiveId, TaskId, TaskStatus};
use swarm_registry::{Lease, Registry};

use super::graph::TaskNode;
use super::queue::{Entry, ReadyQueue};
use super::slab::Slab;

/// The ready queues, parking, the turn's outbox and who runs what.
#[derive(Debug)]
pub(super) struct Dispatch<H> {
    /// `SchedulerConfig::burst_divisor`.
    burst_divisor: u32,
    queues: FxHashMap<Capability, ReadyQueue>,
    /// Per capability, tasks refused for good by an agent and waiting for another, oldest
    /// first (each with the agent it avoids on its node). Short: failures path only.
    refused: FxHashMap<Capability, Vec<Entry>>,
    /// The next queue entry's sequence number (its age).
    next_seq: u64,
    /// Objectives with a `max_concurrency`, by id.
    caps: FxHashMap<ObjectiveId, Cap>,
    /// Tasks parked, over all objectives.
    parked: u64,
    /// Capabilities whose queues got parked tasks back this turn: offered to their agents
    /// when the turn ends.
    kicks: Vec<Capability>,
    /// Per capability, the agent taking this turn's burst and how many more it may take.
    burst: FxHashMap<Capability, (AgentId, u32)>,
    /// Assignments made this turn, sent as one batch per agent when it ends.
    outbox: FxHashMap<AgentId, (H, Vec<Assignment>)>,
    /// Cancellations made this turn, sent after its assignments.
    cancels: Vec<(AgentId, H, AgentMsg)>,
    /// The tasks each agent runs an attempt of.
    in_flight: FxHashMap<AgentId, FxHashSet<TaskId>>,
    /// The capabilities of agents that took work, read once from the registry.
    agent_caps: FxHashMap<AgentId, Arc<[Capability]>>,
}

/// An objective's `max_concurrency` and the attempts it runs.
#[derive(Debug)]
struct Cap {
    max: u32,
    running: u32,
    /// Ready tasks held back while the objective is at its cap, best first; each keeps the
    /// queue entry (so the place) it had.
    parked: BinaryHeap<Entry>,
    /// False once the objective stopped running: nothing parked goes back.
    open: bool,
    /// True while the objective is paused at a spending limit: it takes no slot.
    paused: bool,
}

impl Cap {
    fn full(&self) -> bool {
        self.paused || self.running >= self.max
    }
}

/// Which agents a task should not go to: one that refused it for good (never), and one its
/// last attempt failed on (only when no other can take it).
#[derive(Debug, Clone, Copy)]
struct Avoiding {
    never: Option<AgentId>,
    prefer_not: Option<AgentId>,
}

impl Avoiding {
    fn of(node: &TaskNode) -> Self {
        Self {
            never: node.avoid,
            prefer_not: node.prefer_not,
        }
    }

    /// A slot for the task on an agent of `capability`, as [`Registry::select`] chooses one
    /// but honouring what the task avoids.
    fn select<H: Clone + Send + Sync + 'static>(
        self,
        registry: &Registry<H>,
        capability: &Capability,
    ) -> Option<Lease<H>> {
        match (self.never, self.prefer_not) {
            (Some(agent), _) => registry.select_other(capability, agent),
            (None, Some(agent)) => registry
                .select_other(capability, agent)
                .or_else(|| registry.select(capability)),
            (None, None) => registry.select(capability),
        }
    }
}

/// The first live entry of `queue` that may run now, with the agents it avoids. Entries of
/// objectives at their cap met on the way are parked (they keep their entry, so their place).
fn head(
    queue: &mut ReadyQueue,
    caps: &mut FxHashMap<ObjectiveId, Cap>,
    parked: &mut u64,
    tasks: &mut Slab<TaskNode>,
) -> Option<(Entry, Avoiding)> {
    loop {
        let head = queue.peek(|e| tasks.get(e.task).is_some_and(|n| n.queued == Some(e.seq)))?;
        let node = tasks.get_mut(head.task)?;
        if !node.capped {
            return Some((head, Avoiding::of(node)));
        }
        let Some(cap) = caps.get_mut(&node.objective).filter(|cap| cap.full()) else {
            return Some((head, Avoiding::of(node)));
        };
        queue.pop();
        cap.parked.push(head);
        *parked += 1;
        node.queued = None;
    }
}

impl<H: Clone + Send + Sync + 'static> Dispatch<H> {
    pub(super) fn new(burst_divisor: u32) -> Self {
        Self {
            burst_divisor: burst_divisor.max(1),
            queues: FxHashMap::default(),
            refused: FxHashMap::default(),
            next_seq: 0,
            caps: FxHashMap::default(),
            parked: 0,
            kicks: Vec::new(),
            burst: FxHashMap::default(),
            outbox: FxHashMap::default(),
            cancels: Vec::new(),
            in_flight: FxHashMap::default(),
            agent_caps: FxHashMap::default(),
        }
    }

    /// A running objective's `max_concurrency`, if it has one, or no maximum if it may be
    /// paused (`pausable`): its attempts are counted from now on.
    pub(super) fn limit(
        &mut self,
        objective: ObjectiveId,
        max_concurrency: Option<NonZeroU32>,
        pausable: bool,
    ) {
        let max = match max_concurrency {
            Some(max) => max.get(),
            None if pausable => u32::MAX,
            None => return,
        };
        self.caps.insert(
            objective,
            Cap {
                max,
                running: 0,
                parked: BinaryHeap::new(),
                open: true,
                paused: false,
            },
        );
    }

    /// The objective starts no attempt until [`Dispatch::resume`]: its ready tasks park (the
    /// objective must have been limited as `pausable`).
    pub(super) fn pause(&mut self, objective: ObjectiveId) {
        if let Some(cap) = self.caps.get_mut(&objective) {
            cap.paused = true;
        }
    }

    /// The objective may start attempts again: as many parked tasks as its cap has room for go
    /// back to their queues, offered to their agents when the turn ends.
    pub(super) fn resume(&mut self, tasks: &mut Slab<TaskNode>, objective: ObjectiveId) {
        if let Some(cap) = self.caps.get_mut(&objective) {
            cap.paused = false;
        }
        self.unpark(tasks, objective);
    }

    /// The objective stopped running: its parked tasks are dropped and none go back.
    pub(super) fn close(&mut self, objective: ObjectiveId) {
        if let Some(cap) = self.caps.get_mut(&objective) {
            self.parked = self.parked.saturating_sub(cap.parked.len() as u64);
            cap.parked.clear();
            cap.open = false;
        }
    }

    /// The objective is dropped from memory.
    pub(super) fn forget(&mut self, objective: ObjectiveId) {
        self.close(objective);
        self.caps.remove(&objective);
    }

    /// Where a newly ready task goes. With a lease, an agent takes it now and the caller
    /// starts the attempt. Otherwise it is parked (its objective is at its cap), waits apart
    /// (an agent refused it for good and no other has room) or is queued (its queue is not
    /// empty, or no agent has room).
    pub(super) fn place(
        &mut self,
        tasks: &mut Slab<TaskNode>,
        registry: &Registry<H>,
        id: TaskId,
    ) -> Option<Lease<H>> {
        let node = tasks.get_mut(id)?;
        if node.capped
            && let Some(cap) = self.caps.get_mut(&node.objective)
            && cap.full()
        {
            cap.parked.push(Entry {
                priority: node.priority,
                seq: self.next_seq,
                task: id,
            });
            self.next_seq += 1;
            self.parked += 1;
            return None;
        }
        let capability = &node.record.capability;
        if let Some(avoid) = node.avoid {
            // Refused for good by `avoid`: another agent now, or wait apart for one.
            if let Some(lease) = registry.select_other(capability, avoid) {
                return Some(lease);
            }
            let entry = self.entry_for(id, node.priority);
            node.queued = Some(entry.seq);
            self.refused
                .entry(capability.clone())
                .or_default()
                .push(entry);
            return None;
        }
        let queue_empty = self.queues.get(capability).is_none_or(ReadyQueue::is_empty);
        if queue_empty {
            // A retry after a retryable failure tries the other agents first.
            if let Some(agent) = node.prefer_not
                && let Some(lease) = registry.select_other(capability, agent)
            {
                return Some(lease);
            }
            if let Some(lease) = self.lease_for_burst(registry, capability) {
                return Some(lease);
            }
        }
        let entry = self.entry_for(id, node.priority);
        node.queued = Some(entry.seq);
        match self.queues.get_mut(capability) {
            Some(queue) => queue.push(entry),
            None => self
                .queues
                .entry(capability.clone())
                .or_default()
                .push(entry),
        }
        None
    }

    /// A new place in line for task `id`.
    fn entry_for(&mut self, id: TaskId, priority: i32) -> Entry {
        let entry = Entry {
            priority,
            seq: self.next_seq,
            task: id,
        };
        self.next_seq += 1;
        entry
    }

    /// A slot for a newly ready task. Within one handler turn, the least-loaded agent the
    /// registry chose for a capability keeps taking that capability's new tasks until it has
    /// taken `capacity / burst_divisor` of them (at least one), so a burst reaches it in one
    /// message; then the registry chooses again. Agents of small capacity, as model agents
    /// are, therefore get one task per choice.
    fn lease_for_burst(
        &mut self,
        registry: &Registry<H>,
        capability: &Capability,
    ) -> Option<Lease<H>> {
        if let Some((agent, left)) = self.burst.get_mut(capability)
            && *left > 0
        {
            if let Some(lease) = registry.try_acquire(*agent) {
                *left -= 1;
                return Some(lease);
            }
            *left = 0;
        }
        let lease = registry.select(capability)?;
        let share = (lease.capacity / self.burst_divisor).max(1);
        match self.burst.get_mut(capability) {
            Some(entry) => *entry = (lease.agent, share - 1),
            None => {
                self.burst
                    .insert(capability.clone(), (lease.agent, share - 1));
            }
        }
        Some(lease)
    }

    /// An attempt starts on the leased agent: it goes out with the turn's batch for that
    /// agent. `capped` is the task's objective when the objective has a cap.
    pub(super) fn assigned(
        &mut self,
        lease: Lease<H>,
        assignment: Assignment,
        capped: Option<ObjectiveId>,
    ) {
        if let Some(cap) = capped.and_then(|o| self.caps.get_mut(&o)) {
            cap.running += 1;
        }
        self.in_flight
            .entry(lease.agent)
            .or_default()
            .insert(assignment.task.id);
        self.outbox
            .entry(lease.agent)
            .or_insert_with(|| (lease.handle, Vec::new()))
            .1
            .push(assignment);
    }

    /// The capabilities `agent` takes work of (read from the registry once, until
    /// [`Dispatch::agent_changed`]).
    pub(super) fn capabilities_of(
        &mut self,
        registry: &Registry<H>,
        agent: AgentId,
    ) -> Option<Arc<[Capability]>> {
        if let Some(caps) = self.agent_caps.get(&agent) {
            return Some(caps.clone());
        }
        let caps: Arc<[Capability]> = registry.capabilities(agent)?.into();
        self.agent_caps.insert(agent, caps.clone());
        Some(caps)
    }

    /// The agent registered again, recovered or grew: its capabilities are read again.
    pub(super) fn agent_changed(&mut self, agent: AgentId) {
        self.agent_caps.remove(&agent);
    }

    /// The next task for `agent` (of capabilities `caps`), with a slot taken on it: a task
    /// another agent refused for good first (the oldest), else the best head of its queues.
    /// `None` when nothing waits for it, or it has no room.
    pub(super) fn next_for(
        &mut self,
        tasks: &mut Slab<TaskNode>,
        registry: &Registry<H>,
        agent: AgentId,
        caps: &[Capability],
    ) -> Option<(TaskId, Lease<H>)> {
        if let Some(taken) = self.next_refused_for(tasks, registry, agent, caps) {
            return Some(taken);
        }
        let mut best: Option<(Entry, usize)> = None;
        for (i, cap) in caps.iter().enumerate() {
            let Some(queue) = self.queues.get_mut(cap) else {
                continue;
            };
            let Some((entry, _)) = head(queue, &mut self.caps, &mut self.parked, tasks) else {
                continue;
            };
            if best.is_none_or(|(b, _)| entry > b) {
                best = Some((entry, i));
            }
        }
        let (entry, i) = best?;
        let lease = registry.try_acquire(agent)?;
        if let Some(queue) = self.queues.get_mut(&caps[i]) {
            queue.pop();
        }
        Some((entry.task, lease))
    }

    /// The oldest task of `caps` refused for good by an agent other than `agent`, with a slot
    /// taken on `agent`. Entries no longer live (the task left the list) are dropped.
    fn next_refused_for(
        &mut self,
        tasks: &Slab<TaskNode>,
        registry: &Registry<H>,
        agent: AgentId,
        caps: &[Capability],
    ) -> Option<(TaskId, Lease<H>)> {
        if self.refused.is_empty() {
            return None;
        }
        for cap in caps {
            let Some(waiting) = self.refused.get_mut(cap) else {
                continue;
            };
            waiting.retain(|e| tasks.get(e.task).is_some_and(|n| n.queued == Some(e.seq)));
            let found = waiting
                .iter()
                .position(|e| tasks.get(e.task).is_some_and(|n| n.avoid != Some(agent)));
            if waiting.is_empty() {
                self.refused.remove(cap);
                continue;
            }
            let Some(at) = found else {
                continue;
            };
            let lease = registry.try_acquire(agent)?;
            let entry = waiting.remove(at);
            if waiting.is_empty() {
                self.refused.remove(cap);
            }
            return Some((entry.task, lease));
        }
        None
    }

    /// An attempt of a capped objective ended: as many parked tasks as there is room for go
    /// back to their queues, at the place their entries had, and those queues are offered to
    /// their agents when the turn ends.
    pub(super) fn attempt_ended(&mut self, tasks: &mut Slab<TaskNode>, objective: ObjectiveId) {
        let Some(cap) = self.caps.get_mut(&objective) else {
            return;
        };
        cap.running = cap.running.saturating_sub(1);
        self.unpark(tasks, objective);
    }

    /// As many parked tasks of the objective as its cap has room for go back to their queues.
    fn unpark(&mut self, tasks: &mut Slab<TaskNode>, objective: ObjectiveId) {
        let Some(cap) = self.caps.get_mut(&objective) else {
            return;
        };
        if !cap.open || cap.paused {
            return;
        }
        let mut room = cap.max.saturating_sub(cap.running);
        while room > 0 {
            let Some(entry) = cap.parked.pop() else {
                break;
            };
            self.parked = self.parked.saturating_sub(1);
            let Some(node) = tasks.get_mut(entry.task) else {
                continue;
            };
            if node.record.status != TaskStatus::Ready || node.queued.is_some() || node.retry_due {
                continue;
            }
            node.queued = Some(entry.seq);
            let capability = &node.record.capability;
            if node.avoid.is_some() {
                self.refused
                    .entry(capability.clone())
                    .or_default()
                    .push(entry);
            } else {
                self.queues
                    .entry(capability.clone())
                    .or_default()
                    .push(entry);
            }
            if !self.kicks.contains(capability) {
                self.kicks.push(capability.clone());
            }
            room -= 1;
        }
    }

    /// The next task of a queue that got parked tasks back this turn, with a slot taken on an
    /// agent. `None` once each such queue is empty or no agent of its capability has room
    /// (which keeps the allocation invariant).
    pub(super) fn next_kicked(
        &mut self,
        tasks: &mut Slab<TaskNode>,
        registry: &Registry<H>,
    ) -> Option<(TaskId, Lease<H>)> {
        while let Some(capability) = self.kicks.last() {
            if let Some(waiting) = self.refused.get_mut(capability) {
                waiting.retain(|e| tasks.get(e.task).is_some_and(|n| n.queued == Some(e.seq)));
                for at in 0..waiting.len() {
                    let entry = waiting[at];
                    let Some(avoid) = tasks.get(entry.task).and_then(|n| n.avoid) else {
                        continue;
                    };
                    if let Some(lease) = registry.select_other(capability, avoid) {
                        waiting.remove(at);
                        return Some((entry.task, lease));
                    }
                }
            }
            if let Some(queue) = self.queues.get_mut(capability)
                && let Some((entry, avoiding)) =
                    head(queue, &mut self.caps, &mut self.parked, tasks)
                && let Some(lease) = avoiding.select(registry, capability)
            {
                queue.pop();
                return Some((entry.task, lease));
            }
            self.kicks.pop();
        }
        None
    }

    /// A queued task left its queue without being taken (it was cancelled).
    pub(super) fn unqueued(&mut self, capability: &Capability, task: TaskId) {
        if let Some(waiting) = self.refused.get_mut(capability)
            && let Some(at) = waiting.iter().position(|e| e.task == task)
        {
            waiting.remove(at);
            return;
        }
        if let Some(queue) = self.queues.get_mut(capability) {
            queue.forget_one();
        }
    }

    /// An attempt ended or was taken back: its agent's slot is free.
    pub(super) fn released(&mut self, registry: &Registry<H>, agent: AgentId, task: TaskId) {
        registry.release(agent);
        if let Some(set) = self.in_flight.get_mut(&agent) {
            set.remove(&task);
        }
    }

    /// A running attempt is cancelled: one assigned this turn is simply not sent; one sent
    /// before is told to stop.
    pub(super) fn withdraw(
        &mut self,
        registry: &Registry<H>,
        agent: AgentId,
        task: TaskId,
        attempt: u32,
    ) {
        let unsent = self.outbox.get_mut(&agent).is_some_and(|(_, batch)| {
            let before = batch.len();
            batch.retain(|a| a.task.id != task);
            batch.len() != before
        });
        if !unsent && let Some(handle) = registry.handle(agent) {
            self.cancels
                .push((agent, handle, AgentMsg::Cancel { task, attempt }));
        }
    }

    /// The tasks `agent` runs an attempt of.
    pub(super) fn running_on(&self, agent: AgentId) -> Vec<TaskId> {
        self.in_flight
            .get(&agent)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    /// True when queues got parked tasks back this turn.
    pub(super) fn has_kicks(&self) -> bool {
        !self.kicks.is_empty()
    }

    /// The assignments made this turn.
    pub(super) fn outgoing(&self) -> impl Iterator<Item = &Assignment> {
        self.outbox.values().flat_map(|(_, batch)| batch)
    }

    /// Ends a turn: its assignments (one batch per agent), then its cancellations, go into
    /// `sends`, and its bursts end.
    pub(super) fn end_turn(&mut self, sends: &mut Vec<(AgentId, H, AgentMsg)>) {
        self.burst.clear();
        sends.reserve(self.outbox.len() + self.cancels.len());
        for (agent, (handle, batch)) in self.outbox.drain() {
            if !batch.is_empty() {
                sends.push((agent, handle, AgentMsg::Run(batch)));
            }
        }
        sends.append(&mut self.cancels);
    }

    /// Tasks waiting for an agent: queued or parked.
    pub(super) fn waiting(&self) -> u64 {
        self.queues.values().map(|q| q.len() as u64).sum::<u64>()
            + self.refused.values().map(|r| r.len() as u64).sum::<u64>()
            + self.parked
    }

    /// Tasks waiting for an agent, per capability, ordered by capability.
    pub(super) fn depths(&self) -> Vec<(Capability, u64)> {
        let mut depths: FxHashMap<Capability, u64> = self
            .queues
            .iter()
            .map(|(capability, queue)| (capability.clone(), queue.len() as u64))
            .collect();
        for (capability, waiting) in &self.refused {
            *depths.entry(capability.clone()).or_default() += waiting.len() as u64;
        }
        let mut depths: Vec<_> = depths.into_iter().collect();
        depths.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        depths
    }
}

#[cfg(test)]
mod tests;
