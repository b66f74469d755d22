//! An objective's spending limits (`token_budget`, `cost_budget`) through the real actors and
//! a real SQLite log, across restarts: what a restarted coordinator charges is what the live
//! one charged.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::Swarm;
use swarm_protocol::{
    FailureKind, Objective, ObjectiveStatus, RetryPolicy, Task, TaskOutcome, TaskSpec, Usage, Usd,
};
use swarm_testkit::{PATIENCE, cap, finish, key, open, register};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// Usage of ten tokens, at `cost` micro-dollars (`None`: a model without a price).
fn usage(cost: Option<u64>) -> Usage {
    Usage {
        input_tokens: 5,
        output_tokens: 5,
        cached_input_tokens: 0,
        cost_usd_micros: cost,
    }
}

/// Attempt 1 on a priced model ($0.40) fails and is retried; attempt 2, on a model without a
/// price, succeeds: the task's cost is unknown, but $0.40 of it is known.
fn priced_then_unpriced() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|task: Task, _ctx| async move {
        if task.attempt == 1 {
            TaskOutcome::Failed {
                kind: FailureKind::Transient,
                message: "503".into(),
                partial_output: None,
                usage: Some(usage(Some(400_000))),
                retry_after: None,
            }
        } else {
            TaskOutcome::Succeeded {
                output: json!("drafted"),
                usage: Some(usage(None)),
            }
        }
    }))
}

/// Tells the test it started, and never ends (the coordinator stops under it).
fn hanging(started: UnboundedSender<Task>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| {
        let _ = started.send(task);
        std::future::pending::<TaskOutcome>()
    }))
}

/// Succeeds at $0.20.
fn priced() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|_task: Task, _ctx| async move {
        TaskOutcome::Succeeded {
            output: json!("finished"),
            usage: Some(usage(Some(200_000))),
        }
    }))
}

/// A `cost_budget` of $0.50 over `draft` (a priced attempt of $0.40 that failed, then an
/// unpriced one that succeeded) and `finish` ($0.20, after it). The coordinator stops while
/// `finish` runs; the restarted one charges `draft` its known $0.40, as the live one did, so
/// `finish`'s $0.20 takes the objective to $0.60 and fails it naming the limit. (Rebuilt from
/// the tasks' summed usage, whose cost is unknown, the charge was $0 and the objective
/// succeeded at $0.20.)
#[tokio::test]
async fn a_restart_charges_the_cost_budget_what_the_live_run_charged() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    register(&swarm, "drafter", &["draft"], 1, priced_then_unpriced()).await;
    let (started_tx, mut started) = unbounded_channel();
    register(&swarm, "finisher", &["finish"], 1, hanging(started_tx)).await;
    let mut draft = TaskSpec::new(key("draft"), cap("draft"));
    draft.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let mut objective = Objective::with_tasks(
        "spend across a restart",
        vec![
            draft,
            TaskSpec::new(key("finish"), cap("finish")).after([key("draft")]),
        ],
    );
    objective.limits.cost_budget = Some(Usd(500_000));
    let id = swarm.submit(objective).await.unwrap();
    tokio::time::timeout(PATIENCE, started.recv())
        .await
        .unwrap()
        .unwrap();
    let before = swarm.objective(id).await.unwrap();
    let draft = before.task("draft").unwrap();
    assert_eq!(
        (
            draft.attempts,
            draft.usage.tokens(),
            draft.usage.cost_usd_micros
        ),
        (2, 20, None),
        "{before:#?}"
    );
    finish(swarm).await;

    let swarm: Swarm = open(dir.path()).await;
    assert_eq!(swarm.resumed(), [id]);
    register(&swarm, "finisher", &["finish"], 1, priced()).await;
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("`cost_budget`")
            && failure.contains("$0.600000")
            && failure.contains("$0.500000"),
        "{failure}"
    );
    finish(swarm).await;
}
