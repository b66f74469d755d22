//! A planned objective replays into planning tasks, and resumes from any snapshot.

use serde_json::json;
use swarm_protocol::{
    AgentId, Event, EventRecord, FailureKind, Objective, ObjectiveId, ObjectiveStatus, TaskId,
    TaskKey, TaskStatus, Usage,
};

use super::{Log, declared_task, fold_all, fold_through, ms, spec};
use crate::replay::Replay;
use crate::scheduler::{Planning, RejectedPlan, TaskRecord};

/// A planned objective: its planning task rejected once and repaired, its plan's first
/// task failing for good, the dependent dropped, and a re-plan requested. Task ids: the
/// plan T60, its tasks T61 and T62, the re-plan T63.
fn planning_log() -> (ObjectiveId, Vec<EventRecord>) {
    let o = ObjectiveId::new();
    let mut log = Log::default();
    log.at(
        100,
        Event::ObjectiveSubmitted {
            objective: o,
            spec: Objective::with_tasks("plan it", vec![]),
            first_task: TaskId(60),
            idempotency_key: None,
            trace: None,
        },
    );
    log.at(
        100,
        Event::PlanRequested {
            objective: o,
            task: TaskId(60),
            spec: Box::new(spec("plan", "plan")),
            replan: 0,
            failed: None,
        },
    );
    log.at(
        100,
        Event::TaskReady {
            objective: o,
            task: TaskId(60),
        },
    );
    for attempt in [1, 2] {
        log.at(
            110,
            Event::TaskStarted {
                objective: o,
                task: TaskId(60),
                attempt,
                agent: AgentId(1),
                input: Some(json!({"prompt": format!("attempt {attempt}")})),
            },
        );
        if attempt == 1 {
            log.at(
                120,
                Event::PlanRejected {
                    objective: o,
                    task: TaskId(60),
                    attempt,
                    agent: AgentId(1),
                    plan: json!("nonsense"),
                    errors: vec!["no JSON".into(), "no tasks".into()],
                    repair: true,
                    usage: Some(Usage {
                        input_tokens: 7,
                        output_tokens: 1,
                        ..Usage::default()
                    }),
                    duration: ms(10),
                },
            );
            log.at(
                120,
                Event::TaskReady {
                    objective: o,
                    task: TaskId(60),
                },
            );
        }
    }
    log.at(
        130,
        Event::TasksSpawned {
            objective: o,
            parent: TaskId(60),
            first_task: TaskId(61),
            tasks: vec![
                spec("a", "work"),
                spec("b", "work").after([TaskKey::new("a").unwrap()]),
            ],
        },
    );
    log.at(
        130,
        Event::TaskSucceeded {
            objective: o,
            task: TaskId(60),
            attempt: 2,
            agent: AgentId(1),
            output: json!("{\"tasks\": [...]}"),
            usage: None,
            duration: ms(20),
        },
    );
    log.at(
        140,
        Event::TaskStarted {
            objective: o,
            task: TaskId(61),
            attempt: 1,
            agent: AgentId(2),
            input: None,
        },
    );
    log.at(
        150,
        Event::TaskFailed {
            objective: o,
            task: TaskId(61),
            attempt: 1,
            agent: Some(AgentId(2)),
            kind: FailureKind::Permanent,
            message: "400".into(),
            partial_output: None,
            usage: None,
            duration: Some(ms(5)),
            retry_in: None,
        },
    );
    log.at(
        150,
        Event::TaskCancelled {
            objective: o,
            task: TaskId(62),
        },
    );
    log.at(
        150,
        Event::PlanRequested {
            objective: o,
            task: TaskId(63),
            spec: Box::new(spec("replan-1", "plan")),
            replan: 1,
            failed: Some(TaskId(61)),
        },
    );
    (o, log.0)
}

#[test]
fn planning_events_replay_into_planning_tasks() {
    let (o, records) = planning_log();
    let rejected = fold_through(&records, |e| matches!(e, Event::PlanRejected { .. }));
    let plan = rejected.objectives[&o].task(TaskId(60)).unwrap();
    assert_eq!(
        (plan.status, plan.attempt),
        (TaskStatus::Ready, 1),
        "a repair attempt follows"
    );
    assert_eq!(
        plan.error.as_deref(),
        Some("plan rejected: no JSON; no tasks")
    );
    assert_eq!(plan.partial, Some(json!("nonsense")));

    let all = fold_all(&records);
    assert_eq!(all.next_task, 64, "one past the re-planning task");
    let model = &all.objectives[&o];
    assert!(model.planned);
    assert_eq!(model.replans, 1);
    assert_eq!(model.status, ObjectiveStatus::Running);
    let firsts: Vec<(TaskId, Option<TaskId>, usize)> = model
        .batches
        .iter()
        .map(|b| (b.first_task, b.parent, b.specs.len()))
        .collect();
    assert_eq!(
        firsts,
        [
            (TaskId(60), None, 1),
            (TaskId(61), Some(TaskId(60)), 2),
            (TaskId(63), None, 1)
        ],
        "the planning tasks are batches of their own; the submission added none"
    );
    let expected_plan = TaskRecord {
        status: TaskStatus::Succeeded,
        attempt: 2,
        agent: Some(AgentId(1)),
        output: Some(json!("{\"tasks\": [...]}")),
        partial: Some(json!("nonsense")),
        usage: Usage {
            input_tokens: 7,
            output_tokens: 1,
            ..Usage::default()
        },
        run_time: ms(30),
        planning: Some(Box::new(Planning {
            replan: 0,
            failed: None,
            rejections: 1,
            rejected: Some(RejectedPlan {
                plan: json!("nonsense"),
                errors: vec!["no JSON".into(), "no tasks".into()],
            }),
        })),
        ..declared_task(60, "plan", "plan", None)
    };
    assert_eq!(model.task(TaskId(60)), Some(&expected_plan));
    assert_eq!(model.task(TaskId(61)).unwrap().status, TaskStatus::Failed);
    assert_eq!(
        model.task(TaskId(62)).unwrap().status,
        TaskStatus::Cancelled
    );
    let replan = model.task(TaskId(63)).unwrap();
    assert_eq!(replan.key.as_str(), "replan-1");
    assert_eq!(replan.status, TaskStatus::Backlog);
    assert_eq!(
        replan.planning,
        Some(Box::new(Planning {
            replan: 1,
            failed: Some(TaskId(61)),
            ..Planning::default()
        }))
    );
    assert_eq!(all.unfinished().len(), 1);

    // Snapshots taken anywhere in the story resume to the same fold.
    let mut whole = Replay::default();
    for record in &records {
        whole.apply(record.clone());
    }
    for cut in 0..=records.len() {
        let mut head = Replay::default();
        for record in &records[..cut] {
            head.apply(record.clone());
        }
        let mut resumed: Replay =
            serde_json::from_slice(&serde_json::to_vec(&head).unwrap()).unwrap();
        for record in &records[cut..] {
            resumed.apply(record.clone());
        }
        assert_eq!(
            resumed, whole,
            "resumed from the snapshot after {cut} events"
        );
    }
}
