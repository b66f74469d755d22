//! Fairness through the real scheduler, registry and agent actors: priority, then age, among
//! competing objectives, and the per-objective concurrency cap (`Limits::max_concurrency`),
//! which keeps one large objective from holding every agent slot. Running attempts are
//! counted from the events; tests await events and objectives' ends, never sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde_json::json;
use swarm_agents::{AgentFactory, EchoAgent, FnAgent};
use swarm_protocol::{
    Event, EventRecord, Objective, ObjectiveId, ObjectiveStatus, TaskId, TaskOutcome, TaskSpec,
};
use swarm_testkit::{Events, PATIENCE, cap, finish, key, reg, start};
use tokio::sync::Semaphore;

/// An agent whose attempts hold their slot until the test adds a permit.
fn gated(gate: Arc<Semaphore>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            TaskOutcome::success(json!(task.key))
        }
    }))
}

fn tasks(prefix: &str, n: usize) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| TaskSpec::new(key(&format!("{prefix}{i}")), cap("x")))
        .collect()
}

fn capped(goal: &str, tasks: Vec<TaskSpec>, cap: u32) -> Objective {
    let mut objective = Objective::with_tasks(goal, tasks);
    objective.limits.max_concurrency = NonZeroU32::new(cap);
    objective
}

/// The most attempts of each objective running at once, replayed from the events.
fn peak_running(events: &[EventRecord]) -> HashMap<ObjectiveId, u32> {
    let mut running: HashMap<ObjectiveId, u32> = HashMap::new();
    let mut peak: HashMap<ObjectiveId, u32> = HashMap::new();
    let mut live: HashMap<TaskId, ObjectiveId> = HashMap::new();
    for record in events {
        match &record.event {
            Event::TaskStarted {
                objective, task, ..
            } => {
                live.insert(*task, *objective);
                let n = running.entry(*objective).or_default();
                *n += 1;
                let p = peak.entry(*objective).or_default();
                *p = (*p).max(*n);
            }
            Event::TaskSucceeded { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskInReview { task, .. }
            | Event::AttemptLost { task, .. }
            | Event::TaskCancelled { task, .. } => {
                if let Some(objective) = live.remove(task) {
                    *running.entry(objective).or_default() -= 1;
                }
            }
            _ => {}
        }
    }
    peak
}

fn started_by(events: &[EventRecord], objective: ObjectiveId) -> Vec<TaskId> {
    events
        .iter()
        .filter_map(|r| match r.event {
            Event::TaskStarted {
                objective: o, task, ..
            } if o == objective => Some(task),
            _ => None,
        })
        .collect()
}

async fn started_of(events: &mut Events, objective: ObjectiveId) {
    events
        .until(
            "an attempt of the objective",
            |e| matches!(e, Event::TaskStarted { objective: o, .. } if *o == objective),
        )
        .await;
}

#[tokio::test]
async fn the_higher_priority_objective_goes_first_and_the_lower_still_finishes() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    swarm
        .register_agent(reg("one", &["x"], 1), gated(gate.clone()))
        .await
        .unwrap();
    // The low-priority objective comes first and takes the only slot; the rest of it queues.
    let low = swarm
        .submit(Objective::with_tasks("low", tasks("low", 4)))
        .await
        .unwrap();
    started_of(&mut events, low).await;
    let mut high = Objective::with_tasks("high", tasks("high", 3));
    high.priority = 5;
    let high = swarm.submit(high).await.unwrap();
    gate.add_permits(100);
    for id in [low, high] {
        let view = swarm.wait(id, PATIENCE).await.unwrap();
        assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    }
    let order: Vec<ObjectiveId> = events
        .drain()
        .iter()
        .filter_map(|r| match r.event {
            Event::TaskStarted { objective, .. } => Some(objective),
            _ => None,
        })
        .collect();
    assert_eq!(order, [low, high, high, high, low, low, low]);
    // Among equals, age: the low tasks ran in the order they became ready.
    let low_started = started_by(&events.seen, low);
    let mut sorted = low_started.clone();
    sorted.sort();
    assert_eq!(low_started, sorted);
    finish(swarm).await;
}

#[tokio::test]
async fn a_capped_objective_never_runs_more_than_its_cap_and_others_still_get_slots() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    swarm
        .register_agent(reg("four", &["x"], 4), gated(gate.clone()))
        .await
        .unwrap();
    // A large objective, first and with a higher priority, capped at one attempt at a time.
    let mut big = capped("big", tasks("big", 8), 1);
    big.priority = 10;
    let big = swarm.submit(big).await.unwrap();
    started_of(&mut events, big).await;
    let small = swarm
        .submit(Objective::with_tasks("small", tasks("small", 3)))
        .await
        .unwrap();
    // The other three slots go to the small objective while the big one's attempt holds its
    // one: nothing is released until all three have started.
    for _ in 0..3 {
        started_of(&mut events, small).await;
    }
    let stats = swarm.stats().await.unwrap();
    assert_eq!(stats.tasks_running, 4);
    assert_eq!(
        stats.tasks_queued, 7,
        "the big objective's other tasks wait (parked)"
    );
    gate.add_permits(1_000);
    for id in [big, small] {
        let view = swarm.wait(id, PATIENCE).await.unwrap();
        assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    }
    let seen = events.drain();
    let peak = peak_running(seen);
    assert_eq!(peak[&big], 1, "the cap was exceeded");
    assert_eq!(peak[&small], 3);
    // Parked tasks keep their place: the big objective's tasks ran in age order.
    let big_started = started_by(seen, big);
    assert_eq!(big_started.len(), 8);
    let mut sorted = big_started.clone();
    sorted.sort();
    assert_eq!(big_started, sorted);
    let stats = swarm.stats().await.unwrap();
    assert_eq!((stats.tasks_running, stats.tasks_queued), (0, 0));
    finish(swarm).await;
}

#[tokio::test]
async fn a_cap_of_two_over_several_agents_and_a_parked_task_reaches_an_idle_agent() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let busy = swarm
        .register_agent(reg("gated", &["x"], 2), gated(gate.clone()))
        .await
        .unwrap();
    let id = swarm.submit(capped("two", tasks("t", 6), 2)).await.unwrap();
    started_of(&mut events, id).await;
    started_of(&mut events, id).await;
    // An idle agent joins: the objective is at its cap, so it gets nothing yet.
    let idle = swarm
        .register_agent(reg("idle", &["x"], 4), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    assert_eq!(swarm.stats().await.unwrap().tasks_running, 2);
    // The gated agent goes away: its two attempts are lost, which makes room, and the
    // parked tasks go to the idle agent at once (no report from it is needed to pull them).
    swarm.deregister_agent(busy.id).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert!(view.tasks.iter().all(|t| t.agent == Some(idle.id)));
    let peak = peak_running(events.drain());
    assert_eq!(peak[&id], 2);
    gate.add_permits(10);
    finish(swarm).await;
}
