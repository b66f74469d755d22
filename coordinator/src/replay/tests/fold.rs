//! The fold of the log with every kind of event: the model of each objective, mid-way and at
//! the end, and a fold resumed from a snapshot taken after any event.

use serde_json::{Value, json};
use swarm_protocol::{AgentId, Event, ObjectiveId, ObjectiveStatus, TaskId, TaskStatus, Usage};

use super::every_kind_log::log_of_every_kind;
use super::{declared_task, fold_all, fold_through, ms, spec};
use crate::replay::{Replay, TaskBatch};
use crate::scheduler::TaskRecord;

#[test]
fn replay_of_every_event_kind_gives_the_model_of_each_objective() {
    let (ids, records) = log_of_every_kind();
    let o = ids.failed;

    // Mid-way states that the end state no longer shows.
    let after_failure = fold_through(&records, |e| {
        matches!(
            e,
            Event::TaskFailed {
                task: TaskId(10),
                ..
            }
        )
    });
    let a = after_failure.objectives[&o].task(TaskId(10)).unwrap();
    assert_eq!(a.status, TaskStatus::Ready, "a retry is pending");
    assert_eq!(a.retry_at_ms, Some(2_250), "at_ms + retry_in");
    assert_eq!(a.error.as_deref(), Some("503"));
    let restarted = fold_through(&records, |e| {
        matches!(
            e,
            Event::TaskStarted {
                task: TaskId(10),
                attempt: 2,
                ..
            }
        )
    });
    let a = restarted.objectives[&o].task(TaskId(10)).unwrap();
    assert_eq!(
        (a.status, a.attempt, a.retry_at_ms),
        (TaskStatus::Running, 2, None)
    );
    let lost = fold_through(&records, |e| matches!(e, Event::AttemptLost { .. }));
    let b = lost.objectives[&o].task(TaskId(11)).unwrap();
    assert_eq!((b.status, b.lost), (TaskStatus::Ready, 1));
    assert_eq!(b.error.as_deref(), Some("agent A1 crashed"));
    let in_review = fold_through(&records, |e| {
        matches!(
            e,
            Event::TaskInReview {
                task: TaskId(11),
                ..
            }
        )
    });
    let b = in_review.objectives[&o].task(TaskId(11)).unwrap();
    assert_eq!(b.status, TaskStatus::Review);
    assert_eq!(b.output, Some(json!({"draft": 1})));
    assert_eq!(b.error.as_deref(), Some("schema"));
    assert_eq!(b.review_errors.len(), 1);
    assert_eq!(b.review_errors[0].path, "/draft");

    let all = fold_all(&records);
    assert_eq!(all.seq, records.len() as u64);
    assert_eq!(
        all.next_task, 52,
        "one past the highest task id of any batch"
    );
    assert_eq!(
        all.objectives.len(),
        4,
        "the pruned objective's event created nothing"
    );

    let failed = &all.objectives[&o];
    assert_eq!(failed.goal, "every kind");
    assert_eq!(failed.priority, 3);
    assert_eq!(failed.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(failed.status, ObjectiveStatus::Failed);
    assert_eq!(
        failed.failure.as_deref(),
        Some("task `s1` (T20) failed: rejected in review: no")
    );
    assert_eq!(
        (failed.submitted_at_ms, failed.ended_at_ms),
        (1_000, Some(3_500))
    );
    assert_eq!(
        failed.batches,
        vec![
            TaskBatch {
                first_task: TaskId(10),
                parent: None,
                specs: vec![
                    spec("a", "work"),
                    spec("b", "review"),
                    spec("c", "work"),
                    spec("d", "work"),
                ],
            },
            TaskBatch {
                first_task: TaskId(20),
                parent: Some(TaskId(12)),
                specs: vec![spec("s1", "review"), spec("s2", "work")],
            },
        ]
    );
    let expected = vec![
        TaskRecord {
            status: TaskStatus::Succeeded,
            attempt: 2,
            agent: Some(AgentId(2)),
            output: Some(json!({"sum": 1})),
            partial: Some(json!("half")),
            usage: Usage {
                input_tokens: 4,
                output_tokens: 6,
                ..Usage::default()
            },
            run_time: ms(100),
            ..declared_task(10, "a", "work", None)
        },
        TaskRecord {
            status: TaskStatus::Succeeded,
            attempt: 2,
            lost: 1,
            agent: Some(AgentId(1)),
            output: Some(json!({"final": 1})),
            usage: Usage {
                input_tokens: 5,
                output_tokens: 5,
                ..Usage::default()
            },
            run_time: ms(10),
            ..declared_task(11, "b", "review", None)
        },
        TaskRecord {
            status: TaskStatus::Succeeded,
            attempt: 1,
            agent: Some(AgentId(2)),
            output: Some(json!({"sum": 3})),
            run_time: ms(5),
            ..declared_task(12, "c", "work", None)
        },
        TaskRecord {
            status: TaskStatus::Cancelled,
            ..declared_task(13, "d", "work", None)
        },
        TaskRecord {
            status: TaskStatus::Failed,
            attempt: 1,
            agent: Some(AgentId(1)),
            error: Some("rejected in review: no".into()),
            ..declared_task(20, "s1", "review", Some(TaskId(12)))
        },
        TaskRecord {
            status: TaskStatus::Cancelled,
            ..declared_task(21, "s2", "work", Some(TaskId(12)))
        },
    ];
    assert_eq!(failed.tasks, expected);

    let view = failed.view();
    assert_eq!((view.id, view.status), (o, ObjectiveStatus::Failed));
    assert_eq!(view.failure, failed.failure);
    let a = view.task("a").unwrap();
    assert_eq!(a.attempts, 2);
    assert_eq!(a.partial_output, Some(json!("half")));
    assert_eq!(a.run_time, ms(100));
    assert_eq!(view.task("s2").unwrap().spawned_by, Some(TaskId(12)));
    let keys: Vec<&str> = view.tasks.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "s1", "s2"]);

    let cancelled = &all.objectives[&ids.cancelled];
    assert_eq!(cancelled.status, ObjectiveStatus::Cancelled);
    assert_eq!(cancelled.failure, None);
    assert_eq!(cancelled.ended_at_ms, Some(4_000));
    assert_eq!(cancelled.tasks[0].status, TaskStatus::Cancelled);
    assert_eq!(cancelled.tasks[0].agent, Some(AgentId(1)));
    let succeeded = &all.objectives[&ids.succeeded];
    assert_eq!(succeeded.status, ObjectiveStatus::Succeeded);
    assert_eq!(succeeded.tasks[0].output, Some(json!("y")));
    assert_eq!(succeeded.tasks[0].run_time, ms(100));

    let open = &all.objectives[&ids.open];
    assert_eq!(open.status, ObjectiveStatus::Running);
    assert_eq!(open.ended_at_ms, None);
    assert_eq!(open.idempotency_key.as_deref(), Some("key-2"));
    let z = &open.tasks[0];
    assert_eq!(z.status, TaskStatus::Ready);
    assert_eq!(z.retry_at_ms, Some(6_000));
    assert_eq!(z.run_time, ms(900));
    assert_eq!(open.tasks[1].status, TaskStatus::Backlog);
    let unfinished: Vec<ObjectiveId> = all.unfinished().iter().map(|m| m.id).collect();
    assert_eq!(unfinished, [ids.open]);

    // The default fold drops each objective as it ends and keeps the rest exactly alike.
    let mut plain = Replay::default();
    for record in &records {
        plain.apply(record.clone());
    }
    assert_eq!(plain.seq, all.seq);
    assert_eq!(plain.next_task, all.next_task);
    assert_eq!(plain.objectives.len(), 1);
    assert_eq!(plain.objectives[&ids.open], *open);
}

#[test]
fn agent_events_change_no_objective() {
    let (_, records) = log_of_every_kind();
    let mut replay = Replay::keeping_finished();
    let mut agent_events = 0;
    for record in records {
        let before = replay.clone();
        let is_agent_event = record.event.objective().is_none();
        let seq = record.seq;
        replay.apply(record);
        assert_eq!(replay.seq, seq);
        if is_agent_event {
            agent_events += 1;
            assert_eq!(replay.objectives, before.objectives);
            assert_eq!(replay.next_task, before.next_task);
        }
    }
    assert_eq!(
        agent_events, 4,
        "the story has each of the four kinds of agent event"
    );
}

#[test]
fn a_fold_resumed_from_its_json_snapshot_equals_one_fold_of_the_whole_log() {
    let (_, records) = log_of_every_kind();
    let mut whole = Replay::default();
    for record in &records {
        whole.apply(record.clone());
    }
    // Snapshot after every prefix, so each kind of event is the first one folded after a
    // snapshot once.
    for cut in 0..=records.len() {
        let mut head = Replay::default();
        for record in &records[..cut] {
            head.apply(record.clone());
        }
        let body = serde_json::to_vec(&head).unwrap();
        let mut resumed: Replay = serde_json::from_slice(&body).unwrap();
        assert_eq!(resumed, head, "the snapshot after {cut} events round-trips");
        let as_value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            as_value["seq"],
            json!(cut),
            "a snapshot names its last event"
        );
        for record in &records[cut..] {
            resumed.apply(record.clone());
        }
        assert_eq!(
            resumed, whole,
            "resumed from the snapshot after {cut} events"
        );
    }
}
