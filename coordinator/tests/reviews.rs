//! Review deadlines through the real actors: an `approval` task's `timeout` and an agent
//! task's `review_timeout` decide as their `on_timeout` says (`approve`, `reject`, or
//! `escalate`, which re-opens the review up to `ESCALATIONS_MAX` times and then rejects);
//! the decision is recorded as the deadline's; a person who decides first wins; and on a real
//! SQLite log a restart keeps the logged deadline, decides one that passed while the
//! coordinator was down, and arms one still ahead. Timers run on paused tokio time, except
//! in the durable tests, which wait on the objective's end.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::replay::replay_objective;
use swarm_protocol::task::ESCALATIONS_MAX;
use swarm_protocol::{
    DecidedBy, Event, EventRecord, Objective, ObjectiveId, ObjectiveStatus, ReviewDecision,
    TaskOutcome, TaskSpec, TaskStatus,
};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};
use swarm_testkit::{Events, PATIENCE, finish, open, register, start};

fn spec(value: Value) -> TaskSpec {
    serde_json::from_value(value).unwrap()
}

/// An objective of one `approval` task (input `{"ship": true}`) with these deadline fields.
fn gate(deadline: Value) -> Objective {
    let mut task = json!({"id": "gate", "kind": "approval", "input": {"ship": true}});
    if let (Some(task), Some(fields)) = (task.as_object_mut(), deadline.as_object()) {
        task.extend(fields.clone());
    }
    Objective::with_tasks("ship it", vec![spec(task)])
}

/// The events recorded so far, without their records.
fn seen(events: &mut Events) -> Vec<Event> {
    events.drain().iter().map(|r| r.event.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn an_approval_past_its_deadline_is_approved_when_on_timeout_says_approve() {
    let (swarm, mut events) = start().await;
    let started = tokio::time::Instant::now();
    let id = swarm
        .submit(gate(json!({"timeout": "5s", "on_timeout": "approve"})))
        .await
        .unwrap();
    let Event::TaskInReview { until_ms, .. } = events
        .until("the request", |e| matches!(e, Event::TaskInReview { .. }))
        .await
    else {
        unreachable!()
    };
    let view = swarm.objective(id).await.unwrap();
    let task = view.task("gate").unwrap();
    assert_eq!(task.status, TaskStatus::Review);
    assert!(until_ms.is_some());
    assert_eq!(
        task.review_until_ms, until_ms,
        "the view shows the deadline"
    );

    // Paused time moves on to the deadline's timer once everything is idle.
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let task = view.task("gate").unwrap();
    assert_eq!(task.output, Some(json!({"ship": true})));
    assert_eq!(task.review_until_ms, None);
    assert!(seen(&mut events).contains(&Event::TaskApproved {
        objective: id,
        task: task.id,
        output: json!({"ship": true}),
        decided_by: DecidedBy::Deadline,
    }));
    assert_eq!(swarm.stats().await.unwrap().tasks_in_review, 0);
    finish(swarm).await;
}

#[tokio::test(start_paused = true)]
async fn an_approval_past_its_deadline_is_rejected_by_default() {
    let (swarm, mut events) = start().await;
    let id = swarm.submit(gate(json!({"timeout": "5s"}))).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let task = view.task("gate").unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(
        task.error.as_deref(),
        Some("not approved: no decision within 5s")
    );
    let rejected = seen(&mut events).into_iter().find_map(|e| match e {
        Event::TaskRejected {
            reason, decided_by, ..
        } => Some((reason, decided_by)),
        _ => None,
    });
    assert_eq!(
        rejected,
        Some(("no decision within 5s".to_owned(), DecidedBy::Deadline))
    );
    assert_eq!(swarm.stats().await.unwrap().tasks_in_review, 0);
    finish(swarm).await;
}

#[tokio::test(start_paused = true)]
async fn escalation_reopens_the_review_a_bounded_number_of_times_then_rejects() {
    let (swarm, mut events) = start().await;
    let started = tokio::time::Instant::now();
    let id = swarm
        .submit(gate(json!({"timeout": "2s", "on_timeout": "escalate"})))
        .await
        .unwrap();
    let first = events
        .until("the first escalation", |e| {
            matches!(e, Event::TaskEscalated { .. })
        })
        .await;
    let Event::TaskEscalated {
        escalation,
        until_ms,
        ..
    } = first
    else {
        unreachable!()
    };
    assert_eq!(escalation, 1);
    let view = swarm.objective(id).await.unwrap();
    let task = view.task("gate").unwrap();
    assert_eq!(
        task.status,
        TaskStatus::Review,
        "still waiting for a person"
    );
    assert_eq!(
        (task.escalations, task.review_until_ms),
        (1, Some(until_ms))
    );

    let view = swarm.wait(id, PATIENCE).await.unwrap();
    // The request's deadline and one per escalation.
    assert!(started.elapsed() >= Duration::from_secs(2 * u64::from(ESCALATIONS_MAX + 1)));
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let task = view.task("gate").unwrap();
    assert_eq!(task.escalations, ESCALATIONS_MAX);
    assert_eq!(
        task.error.as_deref(),
        Some("not approved: no decision within 2s after 3 escalations")
    );
    let log = seen(&mut events);
    let escalations: Vec<u32> = log
        .iter()
        .filter_map(|e| match e {
            Event::TaskEscalated { escalation, .. } => Some(*escalation),
            _ => None,
        })
        .collect();
    assert_eq!(escalations, (1..=ESCALATIONS_MAX).collect::<Vec<_>>());
    assert!(log.iter().any(|e| matches!(
        e,
        Event::TaskRejected {
            decided_by: DecidedBy::Deadline,
            ..
        }
    )));
    finish(swarm).await;
}

#[tokio::test(start_paused = true)]
async fn a_person_who_decides_first_wins_even_after_an_escalation() {
    let (swarm, mut events) = start().await;
    let id = swarm
        .submit(gate(json!({"timeout": "2s", "on_timeout": "escalate"})))
        .await
        .unwrap();
    let Event::TaskEscalated { task, .. } = events
        .until("the escalation", |e| {
            matches!(e, Event::TaskEscalated { .. })
        })
        .await
    else {
        unreachable!()
    };
    swarm
        .review(task, ReviewDecision::Approve { output: None })
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    // The escalated deadline's timer, when it fires, finds the review decided.
    tokio::time::sleep(Duration::from_secs(10)).await;
    swarm.stats().await.unwrap();
    let decisions: Vec<Event> = seen(&mut events)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::TaskApproved { .. }
                    | Event::TaskRejected { .. }
                    | Event::TaskEscalated { .. }
            )
        })
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    assert!(matches!(
        decisions[1],
        Event::TaskApproved {
            decided_by: DecidedBy::Person,
            ..
        }
    ));
    finish(swarm).await;
}

#[tokio::test(start_paused = true)]
async fn invalid_output_left_in_review_is_decided_by_its_review_timeout() {
    let (swarm, mut events) = start().await;
    let bad = AgentFactory::shared(FnAgent::new(|_task, _ctx| async {
        TaskOutcome::success(json!({"summary": 7}))
    }));
    register(&swarm, "writer", &["write"], 2, bad).await;
    let schema = json!({"type": "object", "properties": {"summary": {"type": "string"}}});
    let task = |name: &str, then: &str| {
        spec(json!({
            "id": name, "capability": "write", "output_schema": schema,
            "review_timeout": "3s", "on_review_timeout": then
        }))
    };
    let approve = swarm
        .submit(Objective::with_tasks("lenient", vec![task("a", "approve")]))
        .await
        .unwrap();
    let reject = swarm
        .submit(Objective::with_tasks("strict", vec![task("a", "reject")]))
        .await
        .unwrap();
    let lenient = swarm.wait(approve, PATIENCE).await.unwrap();
    assert_eq!(lenient.status, ObjectiveStatus::Succeeded);
    assert_eq!(
        lenient.task("a").unwrap().output,
        Some(json!({"summary": 7})),
        "the deadline approves the output as it is"
    );
    let strict = swarm.wait(reject, PATIENCE).await.unwrap();
    assert_eq!(strict.status, ObjectiveStatus::Failed);
    assert_eq!(
        strict.task("a").unwrap().error.as_deref(),
        Some("rejected in review: no decision within 3s")
    );
    let by_deadline = seen(&mut events)
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::TaskApproved {
                    decided_by: DecidedBy::Deadline,
                    ..
                } | Event::TaskRejected {
                    decided_by: DecidedBy::Deadline,
                    ..
                }
            )
        })
        .count();
    assert_eq!(by_deadline, 2);
    finish(swarm).await;
}

async fn whole_log(store: &dyn EventStore) -> Vec<EventRecord> {
    store.read_after(0, usize::MAX).await.unwrap()
}

/// The `TaskInReview` of the log's only objective.
fn in_review(log: &[EventRecord]) -> (ObjectiveId, swarm_protocol::TaskId, Option<u64>) {
    log.iter()
        .find_map(|r| match r.event {
            Event::TaskInReview {
                objective,
                task,
                until_ms,
                ..
            } => Some((objective, task, until_ms)),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn a_restart_keeps_the_logged_deadline_and_replays_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    let id = swarm
        .submit(gate(json!({"timeout": "1h", "on_timeout": "escalate"})))
        .await
        .unwrap();
    let mut feed = swarm.subscribe().unwrap();
    while !matches!(
        swarm
            .objective(id)
            .await
            .unwrap()
            .task("gate")
            .unwrap()
            .status,
        TaskStatus::Review
    ) {
        tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .unwrap()
            .unwrap();
    }
    swarm.shutdown().await.unwrap();

    let store = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let (_, task, until_ms) = in_review(&whole_log(&store).await);
    drop(store);
    assert!(until_ms.is_some());

    // The deadline is the logged one, not an hour from the restart.
    let swarm = open(dir.path()).await;
    assert_eq!(swarm.resumed(), &[id]);
    let view = swarm.objective(id).await.unwrap();
    let gate_view = view.task("gate").unwrap();
    assert_eq!(gate_view.status, TaskStatus::Review);
    assert_eq!(gate_view.review_until_ms, until_ms);
    swarm
        .review(
            task,
            ReviewDecision::Approve {
                output: Some(json!({"ship": "edited"})),
            },
        )
        .await
        .unwrap();
    let live = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(live.status, ObjectiveStatus::Succeeded);
    let store = swarm.store().unwrap().clone();
    let replayed = replay_objective(&*store, id)
        .await
        .unwrap()
        .unwrap()
        .0
        .view();
    assert_eq!(replayed, live);
    finish(swarm).await;
}

/// A log in which `gate` went to review with a deadline at `until_ms` and its coordinator
/// stopped: written as a session of this version would have written it.
async fn log_with_review(dir: &std::path::Path, deadline: Value, until_ms: u64) -> ObjectiveId {
    let swarm = open(dir).await;
    // A deadline far away, so the session stops long before it; the test then moves it.
    let mut far = deadline.clone();
    far["timeout"] = json!("300d");
    let id = swarm.submit(gate(far)).await.unwrap();
    let mut feed = swarm.subscribe().unwrap();
    while swarm
        .objective(id)
        .await
        .unwrap()
        .task("gate")
        .unwrap()
        .status
        != TaskStatus::Review
    {
        tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .unwrap()
            .unwrap();
    }
    swarm.shutdown().await.unwrap();
    // What a session killed after escalating once would have left: the deadline moved to
    // `until_ms` by a `TaskEscalated`.
    let store = SqliteStore::open(SqliteOptions::new(dir)).await.unwrap();
    let log = whole_log(&store).await;
    let (objective, task, _) = in_review(&log);
    let last = store.info().await.unwrap().last_seq;
    store
        .append(&[EventRecord {
            seq: last + 1,
            at_ms: log.last().unwrap().at_ms,
            event: Event::TaskEscalated {
                objective,
                task,
                attempt: 1,
                escalation: 1,
                until_ms,
            },
        }])
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_deadline_that_passed_while_the_coordinator_was_down_decides_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The deadline passed a minute before the restart.
    let past = swarm_agents::clock::system_now_ms() - 60_000;
    let id = log_with_review(
        dir.path(),
        json!({"timeout": "1h", "on_timeout": "approve"}),
        past,
    )
    .await;
    let swarm = open(dir.path()).await;
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let gate_view = view.task("gate").unwrap();
    assert_eq!(gate_view.escalations, 1);
    assert_eq!(gate_view.output, Some(json!({"ship": true})));
    let chain = swarm.chain(id).await.unwrap();
    assert!(chain.iter().any(|r| matches!(
        r.event,
        Event::TaskApproved {
            decided_by: DecidedBy::Deadline,
            ..
        }
    )));
    let store = swarm.store().unwrap().clone();
    let replayed = replay_objective(&*store, id)
        .await
        .unwrap()
        .unwrap()
        .0
        .view();
    assert_eq!(replayed, view);
    finish(swarm).await;
}

#[tokio::test]
async fn a_deadline_still_ahead_at_the_restart_decides_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let until = swarm_agents::clock::system_now_ms() + 2_000;
    let id = log_with_review(
        dir.path(),
        json!({"timeout": "1h", "on_timeout": "reject"}),
        until,
    )
    .await;
    let swarm = open(dir.path()).await;
    // Waits on the objective's end, which the re-armed deadline brings.
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let chain = swarm.chain(id).await.unwrap();
    let decided = chain
        .iter()
        .find(|r| {
            matches!(
                r.event,
                Event::TaskRejected {
                    decided_by: DecidedBy::Deadline,
                    ..
                }
            )
        })
        .unwrap();
    assert!(decided.at_ms >= until, "decided before the logged deadline");
    finish(swarm).await;
}
