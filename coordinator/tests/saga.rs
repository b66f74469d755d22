//! Saga compensation through the real actors and a durable log: when an objective fails, the
//! compensations of its succeeded tasks run one after another, newest success first, each as
//! a task with its own events; a failed compensation is recorded and the next one still runs;
//! the objective ends `failed` only after the last; a restart mid-compensation resumes it.
//! Orders are read from the chain of work; tests await events or the objective's end.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{
    Compensation, Event, EventRecord, FailureKind, Objective, ObjectiveId, ObjectiveStatus,
    RetryPolicy, TaskId, TaskOutcome, TaskSpec, TaskStatus,
};
use swarm_testkit::{PATIENCE, cap, key, reg};
use tokio::sync::broadcast::Receiver;

/// `t1 -> t2 -> t3`, each with a compensation on `undo` whose input carries the task's
/// output; the `step` agent fails `t3` for good.
fn chain_of_three() -> Objective {
    let mut tasks = Vec::new();
    for (i, name) in ["t1", "t2", "t3"].into_iter().enumerate() {
        let mut spec = TaskSpec::new(key(name), cap("step")).with_input(json!(i + 1));
        if i > 0 {
            spec = spec.after([key(["t1", "t2"][i - 1])]);
        }
        let mut compensation =
            Compensation::new(cap("undo"), json!({"undo": {"$from": name}, "why": "saga"}));
        compensation.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        spec.compensation = Some(compensation);
        tasks.push(spec);
    }
    Objective::with_tasks("three steps", tasks)
}

fn step_agent() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|task, _ctx| async move {
        if task.key.as_str() == "t3" {
            TaskOutcome::failure(FailureKind::Permanent, "the card was declined")
        } else {
            TaskOutcome::success(json!({"done": *task.input}))
        }
    }))
}

/// Undoes: answers with what it received; the compensation of `failing` fails for good.
fn undo_agent(failing: Option<&'static str>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| async move {
        if Some(task.key.as_str()) == failing {
            return TaskOutcome::failure(FailureKind::Permanent, "cannot undo");
        }
        TaskOutcome::success(json!({"undid": task.key, "input": *task.input,
                                    "upstream": task.upstream}))
    }))
}

async fn open(dir: &std::path::Path) -> Swarm {
    Swarm::open(SwarmConfig::default(), StoreConfig::new(dir))
        .await
        .unwrap()
}

async fn finish(swarm: Swarm) {
    assert_eq!(swarm.failure(), None);
    assert!(swarm.is_running());
    swarm.shutdown().await.unwrap();
}

/// What the chain of work says happened to compensations, in log order: `(event kind,
/// compensated task's key)`, with `started` for attempts.
fn compensation_story(chain: &[EventRecord]) -> (Vec<TaskId>, Vec<(String, String)>) {
    let mut names = std::collections::BTreeMap::new();
    let mut order = Vec::new();
    let mut story = Vec::new();
    for record in chain {
        match &record.event {
            Event::ObjectiveSubmitted {
                spec, first_task, ..
            } => {
                for (i, s) in spec.tasks.iter().enumerate() {
                    names.insert(TaskId(first_task.0 + i as u64), s.id.to_string());
                }
            }
            Event::CompensationStarted {
                first_task,
                compensates,
                ..
            } => {
                order.clone_from(compensates);
                for (i, t) in compensates.iter().enumerate() {
                    let name = format!("undo {}", names[t]);
                    names.insert(TaskId(first_task.0 + i as u64), name);
                }
            }
            Event::TaskStarted { task, .. } => story.push(("started".into(), names[task].clone())),
            Event::TaskSucceeded { task, .. } => {
                story.push(("succeeded".into(), names[task].clone()));
            }
            Event::TaskFailed { task, .. } => story.push(("failed".into(), names[task].clone())),
            Event::AttemptLost { task, .. } => story.push(("lost".into(), names[task].clone())),
            Event::ObjectiveFailed { .. } => story.push(("objective failed".into(), String::new())),
            _ => {}
        }
    }
    (order, story)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn compensations_run_newest_success_first_one_after_another_then_the_objective_fails() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    swarm
        .register_agent(reg("step", &["step"], 4), step_agent())
        .await
        .unwrap();
    // Room for several at once: that they run one at a time is the scheduler's doing.
    swarm
        .register_agent(reg("undo", &["undo"], 8), undo_agent(None))
        .await
        .unwrap();
    let id = swarm.submit(chain_of_three()).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("`t3`") && failure.contains("the card was declined"),
        "{failure}"
    );

    let chain = swarm.chain(id).await.unwrap();
    let (order, story) = compensation_story(&chain);
    let t1 = view.task("t1").unwrap().id;
    let t2 = view.task("t2").unwrap().id;
    assert_eq!(order, [t2, t1], "newest success first");
    let after_failure: Vec<_> = story
        .iter()
        .skip_while(|(what, name)| !(what == "failed" && name == "t3"))
        .skip(1)
        .cloned()
        .collect();
    assert_eq!(
        after_failure,
        pairs(&[
            ("started", "undo t2"),
            ("succeeded", "undo t2"),
            ("started", "undo t1"),
            ("succeeded", "undo t1"),
            ("objective failed", ""),
        ]),
        "one after another, and the objective ends after the last"
    );
    // Each compensation is a task of the objective, fed the output of the task it undoes.
    let undo_t1 = view
        .tasks
        .iter()
        .find(|t| t.compensates == Some(t1))
        .unwrap();
    assert_eq!(undo_t1.status, TaskStatus::Succeeded);
    assert_eq!(undo_t1.capability, cap("undo"));
    let output = undo_t1.output.clone().unwrap();
    assert_eq!(output["input"], json!({"undo": {"done": 1}, "why": "saga"}));
    assert_eq!(output["upstream"], json!({"t1": {"done": 1}}));
    // The live view and the log agree.
    let replayed = swarm_coordinator::replay::replay_objective(&**swarm.store().unwrap(), id)
        .await
        .unwrap()
        .unwrap()
        .0
        .view();
    assert_eq!(replayed, view);
    finish(swarm).await;
}

#[tokio::test]
async fn a_failed_compensation_is_recorded_and_the_next_one_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    swarm
        .register_agent(reg("step", &["step"], 4), step_agent())
        .await
        .unwrap();
    swarm
        .register_agent(reg("undo", &["undo"], 1), undo_agent(Some("t2")))
        .await
        .unwrap();
    let id = swarm.submit(chain_of_three()).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let chain = swarm.chain(id).await.unwrap();
    let (_, story) = compensation_story(&chain);
    let tail: Vec<_> = story.iter().rev().take(5).rev().cloned().collect();
    assert_eq!(
        tail,
        pairs(&[
            ("started", "undo t2"),
            ("failed", "undo t2"),
            ("started", "undo t1"),
            ("succeeded", "undo t1"),
            ("objective failed", ""),
        ])
    );
    let t2 = view.task("t2").unwrap().id;
    let undo_t2 = view
        .tasks
        .iter()
        .find(|t| t.compensates == Some(t2))
        .unwrap();
    assert_eq!(undo_t2.status, TaskStatus::Failed);
    assert_eq!(undo_t2.error.as_deref(), Some("cannot undo"));
    assert!(
        view.failure.as_deref().unwrap().contains("`t3`"),
        "the objective's failure stays the task's"
    );
    finish(swarm).await;
}

/// Waits for the first committed event of `objective` that matches.
async fn until(
    events: &mut Receiver<Arc<EventRecord>>,
    objective: ObjectiveId,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let record = events.recv().await.unwrap();
            if record.event.objective() == Some(objective) && pred(&record.event) {
                return record.event.clone();
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_restart_mid_compensation_resumes_the_saga() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    swarm
        .register_agent(reg("step", &["step"], 4), step_agent())
        .await
        .unwrap();
    // The first compensation never ends in this run.
    let hold = FnAgent::new(|_task, _ctx| std::future::pending::<TaskOutcome>());
    swarm
        .register_agent(reg("undo", &["undo"], 4), AgentFactory::shared(hold))
        .await
        .unwrap();
    let mut events = swarm.subscribe().unwrap();
    let id = swarm.submit(chain_of_three()).await.unwrap();
    let Event::CompensationStarted { first_task, .. } = until(&mut events, id, |e| {
        matches!(e, Event::CompensationStarted { .. })
    })
    .await
    else {
        unreachable!()
    };
    until(
        &mut events,
        id,
        |e| matches!(e, Event::TaskStarted { task, .. } if *task == first_task),
    )
    .await;
    assert_eq!(
        swarm.objective(id).await.unwrap().status,
        ObjectiveStatus::Compensating
    );
    swarm.shutdown().await.unwrap();

    let swarm = open(dir.path()).await;
    assert_eq!(
        swarm.resumed(),
        [id],
        "a compensating objective is unfinished"
    );
    let view = swarm.objective(id).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Compensating);
    swarm
        .register_agent(reg("undo", &["undo"], 4), undo_agent(None))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let chain = swarm.chain(id).await.unwrap();
    let (_, story) = compensation_story(&chain);
    let tail: Vec<_> = story.iter().rev().take(6).rev().cloned().collect();
    assert_eq!(
        tail,
        pairs(&[
            ("lost", "undo t2"),
            ("started", "undo t2"),
            ("succeeded", "undo t2"),
            ("started", "undo t1"),
            ("succeeded", "undo t1"),
            ("objective failed", ""),
        ])
    );
    let undone: Vec<Value> = view
        .tasks
        .iter()
        .filter(|t| t.compensates.is_some())
        .map(|t| t.output.clone().unwrap()["undid"].clone())
        .collect();
    assert_eq!(undone, [json!("t2"), json!("t1")]);
    assert_eq!(
        view.tasks
            .iter()
            .filter(|t| t.compensates.is_some())
            .count(),
        2,
        "no compensation was added twice"
    );
    finish(swarm).await;
}

#[tokio::test]
async fn the_order_is_that_of_the_successes_not_of_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    swarm
        .register_agent(reg("step", &["step"], 4), step_agent())
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let permits = gate.clone();
    let gated = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            TaskOutcome::success(json!("slow"))
        }
    });
    swarm
        .register_agent(reg("gate", &["gate"], 1), AgentFactory::shared(gated))
        .await
        .unwrap();
    swarm
        .register_agent(reg("undo", &["undo"], 4), undo_agent(None))
        .await
        .unwrap();
    let undo = |name: &str| Some(Compensation::new(cap("undo"), json!({"$from": name})));
    let mut slow = TaskSpec::new(key("slow"), cap("gate"));
    slow.compensation = undo("slow");
    let mut fast = TaskSpec::new(key("fast"), cap("step"));
    fast.compensation = undo("fast");
    let doomed = TaskSpec::new(key("t3"), cap("step")).after([key("slow"), key("fast")]);
    let mut events = swarm.subscribe().unwrap();
    let id = swarm
        .submit(Objective::with_tasks("order", vec![slow, fast, doomed]))
        .await
        .unwrap();
    // `slow` (declared first) succeeds after `fast`.
    until(&mut events, id, |e| {
        matches!(e, Event::TaskSucceeded { .. })
    })
    .await;
    gate.add_permits(1);
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let (order, _) = compensation_story(&swarm.chain(id).await.unwrap());
    assert_eq!(
        order,
        [view.task("slow").unwrap().id, view.task("fast").unwrap().id]
    );
    finish(swarm).await;
}
