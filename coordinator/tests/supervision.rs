//! The agent supervision tree: crashed agents are restarted and their in-flight work is not
//! lost; an agent that keeps crashing is marked down and its work moves to another agent.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_protocol::{Event, Health, Objective, ObjectiveStatus, TaskOutcome, TaskSpec};
use swarm_testkit::{PATIENCE, cap, finish, key, reg, start};
use tokio::sync::Semaphore;

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

#[tokio::test]
async fn an_agent_that_crashes_while_draining_is_removed_not_restarted() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let crashing = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            panic!("plug-in bug");
        }
    });
    let agent = swarm
        .register_agent(reg("crashy", &["x"], 1), AgentFactory::shared(crashing))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "drain",
            vec![TaskSpec::new(key("t"), cap("x"))],
        ))
        .await
        .unwrap();
    events
        .until(
            "the attempt",
            |e| matches!(e, Event::TaskStarted { agent: a, .. } if *a == agent.id),
        )
        .await;
    swarm
        .remove_agent(agent.id, Duration::from_secs(60))
        .await
        .unwrap();
    events
        .until("draining", |e| {
            matches!(e, Event::AgentHealthChanged { agent: a, health: Health::Draining, .. } if *a == agent.id)
        })
        .await;
    assert_eq!(
        swarm.registry().snapshot(agent.id).unwrap().health,
        Health::Draining
    );

    // The running attempt crashes the agent: it leaves at once, and its attempt is re-queued.
    gate.add_permits(1);
    events
        .until(
            "the removal",
            |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent.id),
        )
        .await;
    assert!(
        !events
            .seen
            .iter()
            .any(|r| matches!(r.event, Event::AgentRestarted { .. })),
        "a draining agent was restarted"
    );
    assert!(events.seen.iter().any(|r| matches!(
        &r.event,
        Event::AttemptLost { attempt: 1, reason, .. }
            if reason.contains("failed while draining") && reason.contains("plug-in bug")
    )));
    assert!(swarm.registry().snapshot(agent.id).is_none());
    assert!(swarm.live_agents().get(agent.id).is_none());

    // Another agent with the capability runs it as its second attempt.
    swarm
        .register_agent(
            reg("steady", &["x"], 1),
            AgentFactory::shared(FnAgent::new(|_t, _c| async {
                TaskOutcome::success(json!("ok"))
            })),
        )
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    assert_eq!(view.task("t").unwrap().attempts, 2);
    finish(swarm).await;
}
