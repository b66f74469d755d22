//! The agent supervision tree: crashed agents are restarted and their in-flight work is not
//! lost; an agent that keeps crashing is marked down and its work moves to another agent.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{PATIENCE, cap, finish, key, reg, start};
use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_protocol::{Event, Health, Objective, ObjectiveStatus, TaskOutcome, TaskSpec};

#[tokio::test]
async fn an_agent_that_panics_is_restarted_and_its_task_completes_on_a_retry() {
    let (swarm, mut events) = start().await;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let once = FnAgent::new(move |task, _ctx| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            // Suspend first, so the panic happens off the mailbox, in the attempt's own task.
            tokio::task::yield_now().await;
            assert!(n > 0, "crash on the first run");
            TaskOutcome::success(json!({ "attempt": task.attempt }))
        }
    });
    let agent = swarm
        .register_agent(reg("once", &["x"], 2), AgentFactory::shared(once))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "crash",
            vec![TaskSpec::new(key("t"), cap("x"))],
        ))
        .await
        .unwrap();
    let restarted = events
        .until("restart", |e| matches!(e, Event::AgentRestarted { .. }))
        .await;
    assert!(matches!(restarted, Event::AgentRestarted { agent: a, .. } if a == agent.id));
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let task = view.task("t").unwrap();
    assert_eq!(task.attempts, 2);
    assert_eq!(task.output, Some(json!({ "attempt": 2 })));
    assert_eq!(task.agent, Some(agent.id));
    assert_eq!(
        swarm.registry().snapshot(agent.id).unwrap().health,
        Health::Up
    );
    finish(swarm).await;
}

#[tokio::test]
async fn an_agent_that_keeps_panicking_is_marked_down_and_its_task_moves_to_another_agent() {
    let (swarm, mut events) = start().await;
    // Panics on its first poll, inside the actor's handler.
    let broken = || FnAgent::new(|_task, _ctx| async move { panic!("always broken") });
    let bad = swarm
        .register_agent(reg("bad", &["x"], 1), AgentFactory::new(broken))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "poison",
            vec![TaskSpec::new(key("t"), cap("x"))],
        ))
        .await
        .unwrap();
    // The policy allows 2 restarts; the third failure marks it down for good.
    let down = events
        .until("given up", |e| matches!(e, Event::AgentHealthChanged { reason, .. } if reason.contains("not restarted")))
        .await;
    assert!(
        matches!(down, Event::AgentHealthChanged { agent, health: Health::Down, .. } if agent == bad.id)
    );
    let restarts = events
        .seen
        .iter()
        .filter(|r| matches!(r.event, Event::AgentRestarted { .. }))
        .count();
    assert_eq!(restarts, 2);
    assert_eq!(
        swarm.registry().snapshot(bad.id).unwrap().health,
        Health::Down
    );
    // The task is not lost: it waits, and a capable agent that joins takes it.
    let good = swarm
        .register_agent(
            reg("good", &["x"], 1),
            AgentFactory::shared(FnAgent::new(|_t, _c| async {
                TaskOutcome::success(json!("ok"))
            })),
        )
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let task = view.task("t").unwrap();
    assert_eq!(task.agent, Some(good.id));
    assert_eq!(
        task.attempts, 4,
        "three lost attempts on the bad agent, then one on the good one"
    );
    finish(swarm).await;
}
