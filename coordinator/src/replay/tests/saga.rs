//! A saga replays with its compensations as tasks of its own.

use serde_json::json;
use swarm_protocol::{
    AgentId, Capability, Compensation, DecidedBy, Event, EventRecord, FailureKind, Objective,
    ObjectiveId, ObjectiveStatus, TaskId, TaskStatus,
};

use super::{Log, fold_all, fold_through, ms, spec};
use crate::replay::Replay;

/// A saga: `a` and `b` (both with a compensation) succeed, `b` by approval; `c` fails, so
/// the compensations of `b` then `a` run (T4, T5); `b`'s fails, `a`'s succeeds.
fn saga_log() -> (ObjectiveId, Vec<EventRecord>) {
    let o = ObjectiveId::new();
    let undo = |capability: &str| {
        Compensation::new(
            Capability::new(capability).unwrap(),
            json!({"undo": {"$from": "x"}}),
        )
    };
    let mut a = spec("a", "work");
    a.compensation = Some(undo("revert"));
    let mut b = spec("b", "work");
    b.compensation = Some(undo("revert"));
    let mut log = Log(Vec::new());
    log.at(
        1,
        Event::ObjectiveSubmitted {
            objective: o,
            spec: Objective::with_tasks("saga", vec![a, b, spec("c", "work")]),
            first_task: TaskId(1),
            idempotency_key: None,
            trace: None,
        },
    );
    let started = |task, attempt| Event::TaskStarted {
        objective: o,
        task: TaskId(task),
        attempt,
        agent: AgentId(1),
        input: None,
    };
    log.at(2, started(2, 1));
    log.at(
        3,
        Event::TaskInReview {
            objective: o,
            task: TaskId(2),
            attempt: 1,
            output: Some(json!(2)),
            reason: "schema".into(),
            errors: Vec::new(),
            usage: None,
            duration: None,
            until_ms: None,
        },
    );
    log.at(4, started(1, 1));
    log.at(
        5,
        Event::TaskSucceeded {
            objective: o,
            task: TaskId(1),
            attempt: 1,
            agent: AgentId(1),
            output: json!(1),
            usage: None,
            duration: ms(1),
        },
    );
    log.at(
        6,
        Event::TaskApproved {
            objective: o,
            task: TaskId(2),
            output: json!(2),
            decided_by: DecidedBy::Person,
        },
    );
    log.at(7, started(3, 1));
    let failed = |task, message: &str| Event::TaskFailed {
        objective: o,
        task: TaskId(task),
        attempt: 1,
        agent: Some(AgentId(1)),
        kind: FailureKind::Permanent,
        message: message.into(),
        partial_output: None,
        usage: None,
        duration: None,
        retry_in: None,
    };
    log.at(8, failed(3, "401"));
    log.at(
        8,
        Event::CompensationStarted {
            objective: o,
            reason: "task `c` (T3) failed: 401".into(),
            first_task: TaskId(4),
            compensates: vec![TaskId(2), TaskId(1)],
        },
    );
    log.at(
        8,
        Event::TaskReady {
            objective: o,
            task: TaskId(4),
        },
    );
    log.at(9, started(4, 1));
    log.at(10, failed(4, "cannot undo"));
    log.at(
        10,
        Event::TaskReady {
            objective: o,
            task: TaskId(5),
        },
    );
    log.at(11, started(5, 1));
    log.at(
        12,
        Event::TaskSucceeded {
            objective: o,
            task: TaskId(5),
            attempt: 1,
            agent: AgentId(1),
            output: json!("undone"),
            usage: None,
            duration: ms(1),
        },
    );
    log.at(
        12,
        Event::ObjectiveFailed {
            objective: o,
            reason: "task `c` (T3) failed: 401".into(),
        },
    );
    (o, log.0)
}

#[test]
fn a_saga_replays_with_its_compensations_as_tasks() {
    let (o, records) = saga_log();
    let mid = fold_through(&records, |e| matches!(e, Event::CompensationStarted { .. }));
    let model = &mid.objectives[&o];
    assert_eq!(model.status, ObjectiveStatus::Compensating);
    assert_eq!(
        model.compensable,
        [TaskId(1), TaskId(2)],
        "in the order they succeeded"
    );
    assert_eq!(mid.next_task, 6);
    let undo_b = model.task(TaskId(4)).unwrap();
    assert_eq!(
        (
            undo_b.key.as_str(),
            undo_b.capability.as_str(),
            undo_b.compensates
        ),
        ("b", "revert", Some(TaskId(2)))
    );
    assert_eq!(model.task(TaskId(5)).unwrap().compensates, Some(TaskId(1)));
    // A compensating objective is unfinished: recovery resumes it.
    assert_eq!(mid.unfinished().len(), 1);
    let mut plain = Replay::default();
    for record in records.iter().take_while(|r| r.at_ms <= 11) {
        plain.apply(record.clone());
    }
    let resumed = &plain.objectives[&o];
    assert_eq!(resumed.task(TaskId(4)).unwrap().status, TaskStatus::Failed);
    assert_eq!(resumed.task(TaskId(5)).unwrap().status, TaskStatus::Running);

    let all = fold_all(&records);
    let model = &all.objectives[&o];
    assert_eq!(model.status, ObjectiveStatus::Failed);
    assert_eq!(model.failure.as_deref(), Some("task `c` (T3) failed: 401"));
    let view = model.view();
    let undo: Vec<_> = view
        .tasks
        .iter()
        .filter_map(|t| Some((t.compensates?, t.status)))
        .collect();
    assert_eq!(
        undo,
        [
            (TaskId(2), TaskStatus::Failed),
            (TaskId(1), TaskStatus::Succeeded)
        ]
    );
}
