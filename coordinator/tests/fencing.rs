//! Fenced results through the real actors and a real SQLite log: a result for an attempt that
//! is not current (from before a restart, or a late report) is recorded in the chain of work as
//! `ResultFenced`, durably, and changes nothing else; the replay of the log still equals the
//! live view.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ractor::call_t;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::replay::replay_objective;
use swarm_coordinator::{Error, Swarm};
use swarm_protocol::{
    AgentId, Event, EventRecord, FailureKind, FencedResult, Objective, ObjectiveId,
    ObjectiveStatus, OutcomeSummary, Report, SchedulerError, SchedulerMsg, Task, TaskId,
    TaskOutcome, TaskSpec,
};
use swarm_testkit::{PATIENCE, cap, finish, key, open, register};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// An agent that tells the test which attempt it got, then waits for a permit of `gate`
/// before it succeeds with `"done"` (a gate with no permits holds it for ever).
fn gated(started: UnboundedSender<Task>, gate: Arc<Semaphore>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| {
        let _ = started.send(task);
        let gate = gate.clone();
        async move {
            // The gate is never closed, so a permit always comes once the test adds one.
            let _permit = gate.acquire().await;
            TaskOutcome::success(serde_json::json!("done"))
        }
    }))
}

async fn next(rx: &mut UnboundedReceiver<Task>, what: &str) -> Task {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// A barrier: every event recorded before it is durable.
async fn flush(swarm: &Swarm) {
    call_t!(swarm.scheduler(), SchedulerMsg::Flush, 10_000)
        .unwrap()
        .unwrap();
}

/// The `ResultFenced` events of a chain: (task, attempt, agent, outcome, reason).
fn fenced(chain: &[EventRecord]) -> Vec<(TaskId, u32, AgentId, OutcomeSummary, String)> {
    chain
        .iter()
        .filter_map(|r| match &r.event {
            Event::ResultFenced {
                task,
                attempt,
                agent,
                outcome,
                reason,
                ..
            } => Some((*task, *attempt, *agent, *outcome, reason.clone())),
            _ => None,
        })
        .collect()
}

fn fenced_result(
    objective: ObjectiveId,
    task: TaskId,
    attempt: u32,
    agent: AgentId,
) -> FencedResult {
    FencedResult {
        objective,
        task,
        attempt,
        agent,
        outcome: OutcomeSummary::Succeeded,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_from_before_a_restart_is_fenced_durably_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    let (tx, mut started) = unbounded_channel();
    let never = Arc::new(Semaphore::new(0));
    let first_agent = register(&swarm, "slow", &["slow"], 1, gated(tx, never))
        .await
        .id;
    let id = swarm
        .submit(Objective::with_tasks(
            "outlive a restart",
            vec![TaskSpec::new(key("slow"), cap("slow"))],
        ))
        .await
        .unwrap();
    let first = next(&mut started, "attempt 1").await;
    assert_eq!(first.attempt, 1);
    finish(swarm).await;

    // The restart recovers attempt 1 as lost; attempt 2 runs, held by its gate.
    let swarm = open(dir.path()).await;
    let (tx, mut started) = unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let agent = register(&swarm, "slow", &["slow"], 1, gated(tx, gate.clone()))
        .await
        .id;
    let second = next(&mut started, "attempt 2").await;
    assert_eq!((second.id, second.attempt), (first.id, 2));
    let before = swarm.objective(id).await.unwrap();

    // Attempt 1's result arrives from its worker, with nobody waiting for it.
    swarm
        .record_fenced(fenced_result(id, first.id, 1, first_agent))
        .await
        .unwrap();
    // The running attempt is not fenced: the scheduler still waits for it.
    let current = swarm
        .record_fenced(fenced_result(id, first.id, 2, agent))
        .await
        .unwrap_err();
    assert!(
        matches!(
            current,
            Error::Scheduler(SchedulerError::AttemptCurrent { task, attempt: 2, agent: a })
                if task == first.id && a == agent
        ),
        "{current}"
    );
    // A local agent's late report of attempt 1 is fenced on the same path as any report.
    swarm
        .scheduler()
        .cast(SchedulerMsg::Reports {
            agent,
            reports: vec![Report {
                task: first.id,
                attempt: 1,
                outcome: TaskOutcome::failure(FailureKind::Transient, "late"),
                duration: Duration::from_millis(3),
            }],
        })
        .unwrap();
    flush(&swarm).await;
    assert_eq!(
        swarm.objective(id).await.unwrap(),
        before,
        "fencing changed nothing"
    );
    assert_eq!(swarm.stats().await.unwrap().fenced_results, 2);

    gate.add_permits(1);
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.task("slow").unwrap().attempts, 2);
    let (model, chain) = replay_objective(&**swarm.store().unwrap(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        model.view(),
        view,
        "the replay of the log equals the live view"
    );
    let expected = vec![
        (
            first.id,
            1,
            first_agent,
            OutcomeSummary::Succeeded,
            "attempt 1 is not current: the task runs attempt 2".to_owned(),
        ),
        (
            first.id,
            1,
            agent,
            OutcomeSummary::Failed {
                kind: FailureKind::Transient,
            },
            "attempt 1 is not current: the task runs attempt 2".to_owned(),
        ),
    ];
    assert_eq!(fenced(&chain), expected);
    // Recorded between the attempt's start and its success, and no output was kept.
    let kinds: Vec<&str> = chain
        .iter()
        .map(|r| match r.event {
            Event::TaskStarted { .. } => "started",
            Event::ResultFenced { .. } => "fenced",
            Event::TaskSucceeded { .. } => "succeeded",
            _ => "",
        })
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(
        kinds,
        ["started", "started", "fenced", "fenced", "succeeded"]
    );
    finish(swarm).await;

    // After another restart the chain still has both, and the objective (no longer held in
    // memory) takes one more: its objective is found in the log's index.
    let swarm = open(dir.path()).await;
    let again = swarm.chain(id).await.unwrap();
    assert_eq!(fenced(&again), expected);
    swarm
        .record_fenced(fenced_result(id, first.id, 1, first_agent))
        .await
        .unwrap();
    let chain = swarm.chain(id).await.unwrap();
    let last = fenced(&chain).pop().unwrap();
    assert_eq!(
        last.4,
        format!(
            "task {} is no longer held: its objective is succeeded",
            first.id
        )
    );
    let (model, _) = replay_objective(&**swarm.store().unwrap(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        model.view(),
        view,
        "a fenced result after the end changes nothing"
    );
    // A result of an objective the log never had is not recorded.
    let unknown = swarm
        .record_fenced(fenced_result(ObjectiveId::new(), TaskId(9_999), 1, agent))
        .await
        .unwrap_err();
    assert!(
        matches!(
            unknown,
            Error::Scheduler(SchedulerError::UnknownTask(TaskId(9_999)))
        ),
        "{unknown}"
    );
    assert_eq!(swarm.stats().await.unwrap().fenced_results, 2);
    finish(swarm).await;
}
