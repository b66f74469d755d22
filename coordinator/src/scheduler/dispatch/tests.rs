//! [`Dispatch`] on plain values: a registry whose agents' handles are numbers, and task nodes
//! without a graph around them.

use std::time::Instant;

use swarm_protocol::{Health, RetryPolicy, Task, TaskKey, TaskSpec};
use swarm_registry::Registration;

use super::*;
use crate::scheduler::record::TaskRecord;

/// A dispatch, its registry and its tasks.
struct World {
    registry: Registry<u32>,
    dispatch: Dispatch<u32>,
    tasks: Slab<TaskNode>,
}

fn capability(name: &str) -> Capability {
    Capability::new(name).expect("a valid capability")
}

impl World {
    fn new(burst_divisor: u32) -> Self {
        Self {
            registry: Registry::new(),
            dispatch: Dispatch::new(burst_divisor),
            tasks: Slab::default(),
        }
    }

    /// Registers an agent of `capabilities` with room for `slots` attempts.
    fn agent(&self, capabilities: &[&str], slots: u32) -> AgentId {
        let caps = capabilities.iter().map(|c| capability(c)).collect();
        let name = format!("agent-{}", self.registry.len());
        self.registry
            .register(Registration::new(name, caps, slots), 0)
            .expect("a valid registration")
            .id
    }

    /// Adds a ready task of `objective`.
    fn task(&mut self, id: u64, objective: ObjectiveId, cap: &str, priority: i32, capped: bool) {
        let id = TaskId(id);
        let key = TaskKey::new(format!("t{}", id.0)).expect("a valid key");
        let spec = TaskSpec::new(key, capability(cap));
        let mut record = TaskRecord::declared(id, &spec, objective, None, Vec::new());
        record.ready();
        let input = Arc::new(spec.input);
        self.tasks.insert(
            id,
            TaskNode {
                record,
                objective,
                priority,
                retry: RetryPolicy::default(),
                idle_timeout: None,
                hard_timeout: None,
                declared_input: input.clone(),
                input,
                dependents: Vec::new(),
                waiting_on: 0,
                depth: 1,
                queued: None,
                retry_due: false,
                avoid: None,
                prefer_not: None,
                ready_at: Instant::now(),
                capped,
                extra: None,
            },
        );
    }

    /// Places a ready task; with a lease, its attempt starts (as the scheduler's `assign`
    /// does). Returns the agent it went to.
    fn place(&mut self, id: u64) -> Option<AgentId> {
        let lease = self
            .dispatch
            .place(&mut self.tasks, &self.registry, TaskId(id))?;
        Some(self.start(TaskId(id), lease))
    }

    fn start(&mut self, id: TaskId, lease: Lease<u32>) -> AgentId {
        let node = self.tasks.get_mut(id).expect("a known task");
        node.queued = None;
        node.record.started(node.record.attempt + 1, lease.agent, 0);
        let capped = node.capped.then_some(node.objective);
        let task = Task {
            id,
            objective: node.objective,
            key: node.record.key.clone(),
            capability: node.record.capability.clone(),
            attempt: node.record.attempt,
            input: node.input.clone(),
            upstream: Default::default(),
            idle_timeout: None,
            hard_timeout: None,
            priority: node.priority,
        };
        let agent = lease.agent;
        self.dispatch.assigned(
            lease,
            Assignment {
                task,
                ready_at: Instant::now(),
                parent_span: None,
            },
            capped,
        );
        agent
    }

    /// Every task queued for `agent`, started on it while it has room, in the order given.
    fn pull(&mut self, agent: AgentId) -> Vec<u64> {
        let caps = self
            .dispatch
            .capabilities_of(&self.registry, agent)
            .expect("a registered agent");
        let mut started = Vec::new();
        while let Some((task, lease)) =
            self.dispatch
                .next_for(&mut self.tasks, &self.registry, agent, &caps)
        {
            self.start(task, lease);
            started.push(task.0);
        }
        started
    }

    /// The attempt of `task` on `agent` ended.
    fn end(&mut self, agent: AgentId, task: u64) {
        self.dispatch.released(&self.registry, agent, TaskId(task));
        let node = self.tasks.get_mut(TaskId(task)).expect("a known task");
        node.record.status = TaskStatus::Succeeded;
        if node.capped {
            let objective = node.objective;
            self.dispatch.attempt_ended(&mut self.tasks, objective);
        }
    }

    /// What the turn sends, per agent: the tasks of its batch, or `cancel` and the task.
    fn sends(&mut self) -> Vec<(AgentId, Vec<u64>)> {
        let mut sends = Vec::new();
        self.dispatch.end_turn(&mut sends);
        let mut batches: Vec<(AgentId, Vec<u64>)> = sends
            .into_iter()
            .map(|(agent, _, msg)| match msg {
                AgentMsg::Run(batch) => (agent, batch.iter().map(|a| a.task.id.0).collect()),
                AgentMsg::Cancel { task, .. } => (agent, vec![u64::MAX, task.0]),
                _ => (agent, Vec::new()),
            })
            .collect();
        batches.sort();
        batches
    }
}

#[test]
fn a_ready_task_asks_the_registry_only_while_its_queue_is_empty() {
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    let agent = w.agent(&["code"], 1);
    for id in 1..=3 {
        w.task(id, objective, "code", 0, false);
    }
    assert_eq!(
        w.place(1),
        Some(agent),
        "an agent with room takes it at once"
    );
    assert_eq!(w.place(2), None, "the agent is full: queued");
    assert_eq!(w.dispatch.waiting(), 1);
    // A second agent registers: a new task still queues behind the first, which waits for the
    // room that the registration offers (`next_for`), never overtaken.
    let other = w.agent(&["code"], 1);
    assert_eq!(w.place(3), None, "the queue is not empty");
    assert_eq!(w.pull(other), vec![2]);
    w.end(agent, 1);
    assert_eq!(w.pull(agent), vec![3]);
    assert_eq!(w.dispatch.waiting(), 0);
    assert_eq!(
        w.sends(),
        vec![(agent, vec![1, 3]), (other, vec![2])],
        "one batch per agent"
    );
}

#[test]
fn an_agent_takes_the_best_head_of_its_capabilities_priority_then_age() {
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    let busy = w.agent(&["a", "b"], 4);
    for (id, cap, priority) in [
        (1, "a", 0),
        (2, "b", 0),
        (3, "a", 5),
        (4, "b", 0),
        (5, "a", 5),
    ] {
        w.task(id, objective, cap, priority, false);
    }
    // Fill the agent so every task queues.
    for id in 10..14 {
        w.task(id, objective, "a", 0, false);
        assert_eq!(w.place(id), Some(busy));
    }
    for id in 1..=5 {
        assert_eq!(w.place(id), None);
    }
    assert_eq!(
        w.dispatch.depths(),
        vec![(capability("a"), 3), (capability("b"), 2)]
    );
    for id in 10..14 {
        w.end(busy, id);
    }
    assert_eq!(
        w.pull(busy),
        vec![3, 5, 1, 2],
        "priority, then age; four slots"
    );
}

#[test]
fn an_objective_at_its_cap_parks_its_tasks_and_gets_them_back_in_order() {
    let mut w = World::new(u32::MAX);
    let capped = ObjectiveId::new();
    let other = ObjectiveId::new();
    w.dispatch.limit(capped, NonZeroU32::new(1), false);
    let agent = w.agent(&["code"], 4);
    w.task(1, capped, "code", 0, true);
    w.task(2, capped, "code", 0, true);
    w.task(3, capped, "code", 9, true);
    w.task(4, other, "code", 0, false);
    assert_eq!(w.place(1), Some(agent));
    assert_eq!(w.place(2), None, "parked: the objective is at its cap");
    assert_eq!(w.place(3), None, "parked");
    assert_eq!(
        w.place(4),
        Some(agent),
        "another objective's task is not held back"
    );
    assert_eq!(w.dispatch.waiting(), 2, "parked tasks count as waiting");
    assert!(w.pull(agent).is_empty(), "parked tasks are not in a queue");
    w.end(agent, 1);
    assert!(w.dispatch.has_kicks(), "the best parked task went back");
    let kicked = w.dispatch.next_kicked(&mut w.tasks, &w.registry);
    let (task, lease) = kicked.expect("an agent has room");
    assert_eq!(task, TaskId(3), "the higher priority first");
    w.start(task, lease);
    assert!(
        w.dispatch.next_kicked(&mut w.tasks, &w.registry).is_none(),
        "one back per attempt ended"
    );
    assert!(!w.dispatch.has_kicks());
    assert_eq!(w.dispatch.waiting(), 1);
}

#[test]
fn a_queued_task_whose_objective_reached_its_cap_is_parked_when_it_comes_up() {
    let mut w = World::new(u32::MAX);
    let capped = ObjectiveId::new();
    w.dispatch.limit(capped, NonZeroU32::new(1), false);
    let agent = w.agent(&["code"], 1);
    w.task(1, ObjectiveId::new(), "code", 0, false);
    w.task(2, capped, "code", 0, true);
    w.task(3, capped, "code", 0, true);
    assert_eq!(w.place(1), Some(agent));
    assert_eq!(w.place(2), None, "queued: the agent is full");
    assert_eq!(w.place(3), None, "queued");
    w.end(agent, 1);
    assert_eq!(w.pull(agent), vec![2]);
    w.end(agent, 2);
    assert_eq!(w.pull(agent), vec![3], "back in its queue when room came");
}

#[test]
fn a_paused_objective_parks_every_task_and_resume_gives_them_back() {
    let mut w = World::new(u32::MAX);
    let pausable = ObjectiveId::new();
    w.dispatch.limit(pausable, None, true);
    let agent = w.agent(&["code"], 4);
    for id in 1..=3 {
        w.task(id, pausable, "code", 0, true);
    }
    assert_eq!(w.place(1), Some(agent), "no maximum while it runs");
    w.dispatch.pause(pausable);
    assert_eq!(w.place(2), None, "parked: paused");
    assert_eq!(w.place(3), None, "parked: paused");
    w.end(agent, 1);
    assert!(
        !w.dispatch.has_kicks(),
        "an attempt ending frees nothing while paused"
    );
    assert!(w.pull(agent).is_empty());
    w.dispatch.resume(&mut w.tasks, pausable);
    let mut back = Vec::new();
    while let Some((task, lease)) = w.dispatch.next_kicked(&mut w.tasks, &w.registry) {
        w.start(task, lease);
        back.push(task.0);
    }
    assert_eq!(back, vec![2, 3], "every parked task, oldest first");
    assert_eq!(w.dispatch.waiting(), 0);
}

#[test]
fn a_closed_objective_drops_its_parked_tasks() {
    let mut w = World::new(u32::MAX);
    let capped = ObjectiveId::new();
    w.dispatch.limit(capped, NonZeroU32::new(1), false);
    let agent = w.agent(&["code"], 2);
    w.task(1, capped, "code", 0, true);
    w.task(2, capped, "code", 0, true);
    assert_eq!(w.place(1), Some(agent));
    assert_eq!(w.place(2), None);
    w.dispatch.close(capped);
    assert_eq!(w.dispatch.waiting(), 0);
    w.end(agent, 1);
    assert!(!w.dispatch.has_kicks(), "nothing goes back");
}

#[test]
fn a_burst_goes_to_one_agent_up_to_its_share() {
    let mut w = World::new(4);
    let objective = ObjectiveId::new();
    w.agent(&["code"], 8);
    w.agent(&["code"], 8);
    for id in 1..=4 {
        w.task(id, objective, "code", 0, false);
    }
    let agents: Vec<_> = (1..=4).filter_map(|id| w.place(id)).collect();
    // A share is 8 / 4 = 2 tasks per choice; the registry then picks the least loaded.
    assert_eq!(agents.len(), 4);
    assert_eq!(agents[0], agents[1], "the first choice takes its share");
    assert_eq!(agents[2], agents[3]);
    assert_ne!(agents[1], agents[2], "then the other, less loaded, agent");
    let batches: Vec<Vec<u64>> = w.sends().into_iter().map(|(_, batch)| batch).collect();
    assert_eq!(batches.len(), 2, "one message per agent");
}

#[test]
fn a_withdrawn_attempt_is_not_sent_or_is_cancelled() {
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    let agent = w.agent(&["code"], 2);
    w.task(1, objective, "code", 0, false);
    w.task(2, objective, "code", 0, false);
    assert_eq!(w.place(1), Some(agent));
    assert_eq!(w.sends(), vec![(agent, vec![1])], "sent with its turn");
    assert_eq!(w.place(2), Some(agent));
    assert_eq!(w.dispatch.running_on(agent).len(), 2);
    w.dispatch.withdraw(&w.registry, agent, TaskId(2), 1);
    w.dispatch.withdraw(&w.registry, agent, TaskId(1), 1);
    assert_eq!(
        w.sends(),
        vec![(agent, vec![u64::MAX, 1])],
        "the unsent one is dropped, the sent one cancelled"
    );
}

#[test]
fn a_task_refused_for_good_waits_for_another_agent_without_holding_up_the_queue() {
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    let refuser = w.agent(&["code"], 2);
    let other = w.agent(&["code"], 1);
    // `other` is full.
    w.task(9, objective, "code", 0, false);
    w.registry
        .set_health(refuser, Health::Down)
        .expect("registered");
    assert_eq!(w.place(9), Some(other));
    w.registry
        .set_health(refuser, Health::Up)
        .expect("registered");
    w.task(2, objective, "code", 5, false);
    w.task(3, objective, "code", 0, false);
    if let Some(node) = w.tasks.get_mut(TaskId(2)) {
        node.avoid = Some(refuser);
    }
    assert_eq!(
        w.place(2),
        None,
        "only the agent it avoids has room: it waits"
    );
    assert_eq!(
        w.place(3),
        Some(refuser),
        "the refused task does not stand between the refuser and the next task"
    );
    assert!(
        w.pull(refuser).is_empty(),
        "never given to the agent it avoids"
    );
    assert_eq!(w.dispatch.waiting(), 1);
    assert_eq!(w.dispatch.depths(), vec![(capability("code"), 1)]);
    w.end(other, 9);
    assert_eq!(w.pull(other), vec![2], "the next agent with room takes it");
    assert_eq!(w.dispatch.waiting(), 0);
}

#[test]
fn a_refused_task_cancelled_while_it_waits_leaves_the_queue_counts_alone() {
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    let refuser = w.agent(&["code"], 1);
    w.task(1, objective, "code", 0, false);
    w.task(2, objective, "code", 0, false);
    assert_eq!(w.place(1), Some(refuser));
    assert_eq!(w.place(2), None, "queued behind the running one");
    w.task(3, objective, "code", 0, false);
    if let Some(node) = w.tasks.get_mut(TaskId(3)) {
        node.avoid = Some(refuser);
    }
    assert_eq!(w.place(3), None, "no other agent: it waits apart");
    assert_eq!(w.dispatch.waiting(), 2);
    if let Some(node) = w.tasks.get_mut(TaskId(3)) {
        node.queued = None;
    }
    w.dispatch.unqueued(&capability("code"), TaskId(3));
    assert_eq!(w.dispatch.waiting(), 1, "the queue still holds task 2");
    w.end(refuser, 1);
    assert_eq!(w.pull(refuser), vec![2]);
}

#[test]
fn a_retry_after_a_retryable_failure_prefers_another_agent_and_comes_back_only_when_none_has_room()
{
    let mut w = World::new(u32::MAX);
    let objective = ObjectiveId::new();
    // Declared first, so it wins every tie of the registry's choice.
    let failing = w.agent(&["write"], 2);
    let other = w.agent(&["write"], 1);
    w.task(1, objective, "write", 0, false);
    if let Some(node) = w.tasks.get_mut(TaskId(1)) {
        node.prefer_not = Some(failing);
    }
    assert_eq!(
        w.place(1),
        Some(other),
        "another agent has room: it goes there"
    );
    // `other` is full now: the agent it failed on takes the next one back.
    w.task(2, objective, "write", 0, false);
    if let Some(node) = w.tasks.get_mut(TaskId(2)) {
        node.prefer_not = Some(failing);
    }
    assert_eq!(
        w.place(2),
        Some(failing),
        "no other has room: it comes back"
    );
}
