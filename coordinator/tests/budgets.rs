//! An objective's spending limits (`token_budget`, `cost_budget`) through the real actors and
//! a real SQLite log, across restarts: what a restarted coordinator charges is what the live
//! one charged; and an objective that pauses at its budget for a person's decision.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::Error;
use swarm_coordinator::Swarm;
use swarm_coordinator::replay::replay_objective;
use swarm_protocol::{
    BudgetChoice, BudgetDecision, BudgetLimit, Budgets, Event, FailureKind, Objective, ObjectiveId,
    ObjectiveStatus, OnBudget, RetryPolicy, SchedulerError, Task, TaskOutcome, TaskSpec,
    TaskStatus, Usage, Usd,
};
use swarm_testkit::{PATIENCE, cap, finish, key, open, register, start};
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

/// Three `work` tasks in a chain (`a`, `b`, `c`), pausing at a `cost_budget` of $0.30 or a
/// `token_budget` of 15 tokens.
fn chain_of_three(limit: BudgetLimit) -> Objective {
    let mut objective = Objective::with_tasks(
        "spend, then ask",
        vec![
            TaskSpec::new(key("a"), cap("work")),
            TaskSpec::new(key("b"), cap("work")).after([key("a")]),
            TaskSpec::new(key("c"), cap("work")).after([key("b")]),
        ],
    );
    match limit {
        BudgetLimit::CostBudget => objective.limits.cost_budget = Some(Usd(300_000)),
        BudgetLimit::TokenBudget => objective.limits.token_budget = Some(15),
    }
    objective.limits.on_budget = OnBudget::Approve;
    objective
}

/// Succeeds at $0.20, but only once `allowed` is set (else its output says it ran too early).
fn priced_once(allowed: Arc<AtomicBool>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |_task: Task, _ctx| {
        let allowed = allowed.load(Ordering::SeqCst);
        async move {
            TaskOutcome::Succeeded {
                output: json!(if allowed { "finished" } else { "ran too early" }),
                usage: Some(usage(Some(200_000))),
            }
        }
    }))
}

/// `a` and `b` cost $0.40 against a `cost_budget` of $0.30 with `on_budget: approve`: the
/// objective pauses (it does not fail, as it does on `fail`), `c` waits, and the pause is in
/// the log, so the coordinator restarted on the same SQLite file keeps it paused. A person's
/// `continue` raises the budget by its submitted amount (to $0.60) and `c` runs.
#[tokio::test]
async fn an_objective_paused_at_its_cost_budget_stays_paused_across_a_restart_until_continued() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    let mut feed = swarm.subscribe().unwrap();
    register(&swarm, "worker", &["work"], 1, priced()).await;
    let id = swarm
        .submit(chain_of_three(BudgetLimit::CostBudget))
        .await
        .unwrap();
    let reached = tokio::time::timeout(PATIENCE, async {
        loop {
            let record = feed.recv().await.unwrap();
            if let Event::BudgetReached { .. } = record.event {
                return record.event.clone();
            }
        }
    })
    .await
    .unwrap();
    let Event::BudgetReached { limit, reason, .. } = reached else {
        unreachable!()
    };
    assert_eq!(limit, BudgetLimit::CostBudget);
    assert!(reason.contains("`cost_budget`"), "{reason}");
    let paused = swarm.objective(id).await.unwrap();
    assert_eq!(paused.status, ObjectiveStatus::Running, "{paused:#?}");
    assert_eq!(paused.budget_pause.as_ref().map(|p| p.limit), Some(limit));
    assert_eq!(paused.task("c").unwrap().attempts, 0, "{paused:#?}");
    // The log alone tells the same paused objective.
    {
        let store = swarm.store().unwrap();
        let (model, _) = replay_objective(store.as_ref(), id).await.unwrap().unwrap();
        assert_eq!(model.view(), paused);
    }
    finish(swarm).await;

    let swarm: Swarm = open(dir.path()).await;
    assert_eq!(swarm.resumed(), [id]);
    let allowed = Arc::new(AtomicBool::new(false));
    register(&swarm, "worker", &["work"], 1, priced_once(allowed.clone())).await;
    let view = swarm.objective(id).await.unwrap();
    assert_eq!(view.budget_pause, paused.budget_pause, "{view:#?}");
    let c = view.task("c").unwrap();
    assert_eq!((c.status, c.attempts), (TaskStatus::Ready, 0), "{view:#?}");
    allowed.store(true, Ordering::SeqCst);
    let mut feed = swarm.subscribe().unwrap();
    swarm
        .decide_budget(
            id,
            BudgetDecision {
                decision: BudgetChoice::Continue,
                by: "ann".into(),
                add_tokens: None,
                add_cost: None,
            },
        )
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.budget_pause, None);
    assert_eq!(view.task("c").unwrap().output, Some(json!("finished")));
    let raised = std::iter::from_fn(|| feed.try_recv().ok())
        .find_map(|r| match &r.event {
            Event::BudgetRaised {
                budgets,
                decided_by,
                ..
            } => Some((*budgets, decided_by.clone())),
            _ => None,
        })
        .unwrap();
    let doubled = Budgets {
        token_budget: None,
        cost_budget: Some(Usd(600_000)),
    };
    assert_eq!(raised, (doubled, "ann".to_string()));
    finish(swarm).await;
}

/// At its `token_budget` (20 tokens against 15), `stop` fails the objective with the text
/// `fail` gives, naming the limit; `c` never runs. A decision on an objective that is not
/// paused is refused.
#[tokio::test]
async fn stop_fails_an_objective_paused_at_its_token_budget_naming_the_limit() {
    let (swarm, mut events) = start().await;
    register(&swarm, "worker", &["work"], 1, priced()).await;
    let id = swarm
        .submit(chain_of_three(BudgetLimit::TokenBudget))
        .await
        .unwrap();
    events
        .until("the pause", |e| matches!(e, Event::BudgetReached { .. }))
        .await;
    let stop = |decision| BudgetDecision {
        decision,
        by: "bob".into(),
        add_tokens: None,
        add_cost: None,
    };
    swarm
        .decide_budget(id, stop(BudgetChoice::Stop))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    assert_eq!(
        view.failure.as_deref(),
        Some("the objective spent 20 model tokens, over its `token_budget` of 15")
    );
    let c = view.task("c").unwrap();
    assert_eq!((c.status, c.attempts), (TaskStatus::Cancelled, 0));
    assert_eq!(view.budget_pause, None);
    let again = swarm.decide_budget(id, stop(BudgetChoice::Continue)).await;
    assert!(
        matches!(
            again,
            Err(Error::Scheduler(SchedulerError::NotPausedAtBudget(o))) if o == id
        ),
        "{again:?}"
    );
    let unknown = ObjectiveId::new();
    assert!(
        swarm
            .decide_budget(unknown, stop(BudgetChoice::Stop))
            .await
            .is_err()
    );
    finish(swarm).await;
}
