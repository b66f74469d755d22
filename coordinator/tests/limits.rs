//! An objective's spending limits through the real actors: going over `token_budget` or past
//! `deadline` fails the objective with a reason naming the limit and cancels its running
//! attempts. The deadline runs on paused tokio time; a deadline also holds across a restart.
//! Tests await the objective's end or events, never sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{Event, Objective, ObjectiveStatus, TaskOutcome, TaskSpec, TaskStatus, Usage};
use swarm_testkit::{PATIENCE, cap, finish, key, reg, start};

/// Spends 600 input and 500 output tokens per attempt.
fn spender() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|task, _ctx| async move {
        TaskOutcome::Succeeded {
            output: json!(task.key),
            usage: Some(Usage {
                input_tokens: 600,
                output_tokens: 500,
                ..Usage::default()
            }),
        }
    }))
}

/// Never answers.
fn hold() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|_task, _ctx| {
        std::future::pending::<TaskOutcome>()
    }))
}

#[tokio::test]
async fn going_over_the_token_budget_fails_the_objective_and_cancels_its_attempts() {
    let (swarm, mut events) = start().await;
    swarm
        .register_agent(reg("spend", &["spend"], 1), spender())
        .await
        .unwrap();
    swarm
        .register_agent(reg("hold", &["hold"], 1), hold())
        .await
        .unwrap();
    // a (1,100 tokens) -> b (2,200 in all: over 1,500) -> c; `slow` runs beside them.
    let tasks = vec![
        TaskSpec::new(key("slow"), cap("hold")),
        TaskSpec::new(key("a"), cap("spend")),
        TaskSpec::new(key("b"), cap("spend")).after([key("a")]),
        TaskSpec::new(key("c"), cap("spend")).after([key("b")]),
    ];
    let mut objective = Objective::with_tasks("spend", tasks);
    objective.limits.token_budget = Some(1_500);
    let id = swarm.submit(objective).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("`token_budget`") && failure.contains("2200") && failure.contains("1500"),
        "{failure}"
    );
    // The attempt that went over is recorded; nothing after it started.
    let b = view.task("b").unwrap();
    assert_eq!(b.status, TaskStatus::Succeeded);
    assert_eq!(b.usage.input_tokens + b.usage.output_tokens, 1_100);
    let c = view.task("c").unwrap();
    assert_eq!((c.status, c.attempts), (TaskStatus::Cancelled, 0));
    let slow = view.task("slow").unwrap();
    assert_eq!((slow.status, slow.attempts), (TaskStatus::Cancelled, 1));
    let seen = events.drain();
    assert!(seen.iter().any(|r| matches!(
        &r.event,
        Event::ObjectiveFailed { reason, .. } if reason.contains("`token_budget`")
    )));
    assert_eq!(swarm.stats().await.unwrap().tasks_running, 0, "slot freed");

    // Within the budget, the same graph succeeds.
    let mut objective = Objective::with_tasks(
        "enough",
        vec![
            TaskSpec::new(key("a"), cap("spend")),
            TaskSpec::new(key("b"), cap("spend")).after([key("a")]),
        ],
    );
    objective.limits.token_budget = Some(2_200);
    let id = swarm.submit(objective).await.unwrap();
    assert_eq!(
        swarm.wait(id, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    finish(swarm).await;
}

#[tokio::test(start_paused = true)]
async fn passing_the_deadline_fails_the_objective_and_cancels_its_attempts() {
    let (swarm, mut events) = start().await;
    swarm
        .register_agent(reg("hold", &["hold"], 2), hold())
        .await
        .unwrap();
    let mut objective = Objective::with_tasks(
        "late",
        vec![
            TaskSpec::new(key("forever"), cap("hold")),
            TaskSpec::new(key("after"), cap("hold")).after([key("forever")]),
        ],
    );
    objective.limits.deadline = Some(Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let id = swarm.submit(objective).await.unwrap();
    events
        .until("the attempt started", |e| {
            matches!(e, Event::TaskStarted { .. })
        })
        .await;
    // Paused time moves on to the deadline's timer once everything is idle.
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("`deadline`") && failure.contains("5s"),
        "{failure}"
    );
    assert_eq!(view.task("forever").unwrap().status, TaskStatus::Cancelled);
    assert_eq!(view.task("after").unwrap().attempts, 0);
    assert_eq!(swarm.stats().await.unwrap().tasks_running, 0);

    // An objective that ends in time succeeds.
    let echo = FnAgent::new(|_task, _ctx| async { TaskOutcome::success(json!(1)) });
    swarm
        .register_agent(reg("quick", &["quick"], 1), AgentFactory::shared(echo))
        .await
        .unwrap();
    let mut objective = Objective::with_tasks("quick", vec![TaskSpec::new(key("q"), cap("quick"))]);
    objective.limits.deadline = Some(Duration::from_secs(1));
    let id = swarm.submit(objective).await.unwrap();
    assert_eq!(
        swarm.wait(id, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    finish(swarm).await;
}

#[tokio::test]
async fn a_deadline_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    swarm
        .register_agent(reg("hold", &["hold"], 1), hold())
        .await
        .unwrap();
    let mut objective =
        Objective::with_tasks("late", vec![TaskSpec::new(key("forever"), cap("hold"))]);
    // Real time: long enough to outlive the first run (which stops right away), short enough
    // for the test. Whether it passes before or after the restart, the restarted swarm must
    // fail the objective for it; a deadline forgotten at the restart never would.
    objective.limits.deadline = Some(Duration::from_millis(1_500));
    let id = swarm.submit(objective).await.unwrap();
    swarm.shutdown().await.unwrap();

    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(swarm.resumed(), [id]);
    swarm
        .register_agent(reg("hold", &["hold"], 1), hold())
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    assert!(
        view.failure.as_deref().unwrap().contains("`deadline`"),
        "{view:#?}"
    );
    finish(swarm).await;
}
