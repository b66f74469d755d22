//! [`TaskRecord`] on plain values: the fold of events, and the views built from it.

use serde_json::json;
use swarm_protocol::FailureKind;

use super::*;

fn key(name: &str) -> TaskKey {
    TaskKey::new(name).unwrap()
}

fn spec(name: &str) -> TaskSpec {
    TaskSpec::new(key(name), Capability::new("work").unwrap())
}

fn record(id: u64) -> TaskRecord {
    TaskRecord::declared(TaskId(id), &spec("t"), ObjectiveId::new(), None, Vec::new())
}

fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    })
}

/// Folds events about task 1 of objective `o`, each at its time.
fn fold(record: &mut TaskRecord, events: impl IntoIterator<Item = (u64, Event)>) {
    for (at, event) in events {
        record.apply(&event, at);
    }
}

fn started(o: ObjectiveId, attempt: u32) -> Event {
    Event::TaskStarted {
        objective: o,
        task: TaskId(1),
        attempt,
        agent: AgentId(7),
        input: None,
    }
}

fn ready(o: ObjectiveId) -> Event {
    Event::TaskReady {
        objective: o,
        task: TaskId(1),
    }
}

#[test]
fn a_retried_attempt_and_its_success_fold_into_one_record() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    fold(
        &mut r,
        [
            (10, ready(o)),
            (20, started(o, 1)),
            (
                30,
                Event::TaskFailed {
                    objective: o,
                    task: TaskId(1),
                    attempt: 1,
                    agent: Some(AgentId(7)),
                    kind: FailureKind::Transient,
                    message: "503".into(),
                    partial_output: Some(json!("half")),
                    usage: usage(1, 2),
                    duration: Some(Duration::from_millis(5)),
                    retry_in: Some(Duration::from_millis(100)),
                },
            ),
        ],
    );
    assert_eq!(r.status, TaskStatus::Ready);
    assert_eq!(r.retry_at_ms, Some(130), "due when the backoff ends");
    assert_eq!(r.error.as_deref(), Some("503"));
    fold(
        &mut r,
        [
            (130, ready(o)),
            (140, started(o, 2)),
            (
                150,
                Event::TaskSucceeded {
                    objective: o,
                    task: TaskId(1),
                    attempt: 2,
                    agent: AgentId(7),
                    output: json!({"sum": 3}),
                    usage: usage(3, 4),
                    duration: Duration::from_millis(10),
                },
            ),
        ],
    );
    assert_eq!(r.status, TaskStatus::Succeeded);
    assert_eq!((r.attempt, r.agent), (2, Some(AgentId(7))));
    assert_eq!(r.output, Some(json!({"sum": 3})));
    assert_eq!(r.error, None, "a success clears the failure");
    assert_eq!(r.partial, Some(json!("half")), "the partial output stays");
    assert_eq!(r.usage, usage(4, 6).unwrap());
    assert_eq!(r.run_time, Duration::from_millis(15));
    assert_eq!((r.retry_at_ms, r.started_at_ms), (None, None));
}

#[test]
fn the_view_shows_times_only_in_the_status_they_belong_to() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    r.apply(&started(o, 1), 42);
    assert_eq!(r.view().running_since_ms, Some(42));
    r.apply(
        &Event::AttemptLost {
            objective: o,
            task: TaskId(1),
            attempt: 1,
            agent: Some(AgentId(7)),
            reason: "crashed".into(),
            declined: false,
        },
        50,
    );
    let view = r.view();
    assert_eq!(view.running_since_ms, None);
    assert_eq!((view.status, r.lost), (TaskStatus::Ready, 1));
    assert_eq!(view.error.as_deref(), Some("crashed"));

    let mut wait_spec = spec("w");
    wait_spec.kind = TaskKind::Wait;
    wait_spec.event = Some("go".into());
    let mut wait = TaskRecord::declared(TaskId(2), &wait_spec, o, None, Vec::new());
    assert_eq!(wait.view().event.as_deref(), Some("go"));
    wait.apply(
        &Event::TaskWaiting {
            objective: o,
            task: TaskId(2),
            event: "go".into(),
            until_ms: 1_000,
        },
        0,
    );
    assert_eq!(wait.view().waiting_until_ms, Some(1_000));
    wait.apply(
        &Event::TaskCancelled {
            objective: o,
            task: TaskId(2),
        },
        5,
    );
    assert_eq!(wait.view().waiting_until_ms, None);
    assert_eq!(wait.view().status, TaskStatus::Cancelled);
}

#[test]
fn a_wait_sent_back_by_a_review_waits_again_as_its_next_attempt() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    let waiting = Event::TaskWaiting {
        objective: o,
        task: TaskId(1),
        event: "go".into(),
        until_ms: 100,
    };
    r.apply(&waiting, 0);
    r.apply(
        &Event::TaskInReview {
            objective: o,
            task: TaskId(1),
            attempt: 1,
            output: Some(json!(1)),
            reason: "does not match".into(),
            errors: vec![OutputError {
                path: "/x".into(),
                message: "missing".into(),
            }],
            usage: None,
            duration: None,
            until_ms: None,
        },
        10,
    );
    assert_eq!(r.view().review_errors.len(), 1);
    r.apply(&ready(o), 20);
    assert!(
        r.review_errors.is_empty(),
        "leaving review clears the errors"
    );
    r.apply(&waiting, 30);
    assert_eq!(
        r.attempt, 2,
        "the live scheduler names its wait timers by attempt"
    );
}

#[test]
fn an_approval_request_is_its_attempt_and_a_cancel_clears_its_review() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    r.apply(
        &Event::TaskInReview {
            objective: o,
            task: TaskId(1),
            attempt: 1,
            output: Some(json!("draft")),
            reason: "awaiting approval".into(),
            errors: vec![OutputError {
                path: String::new(),
                message: "?".into(),
            }],
            usage: None,
            duration: None,
            until_ms: None,
        },
        0,
    );
    assert_eq!((r.attempt, r.status), (1, TaskStatus::Review));
    r.apply(
        &Event::TaskCancelled {
            objective: o,
            task: TaskId(1),
        },
        1,
    );
    assert!(r.review_errors.is_empty());
    assert_eq!(r.output, Some(json!("draft")), "what was reviewed stays");
}

#[test]
fn a_review_deadline_shows_while_in_review_and_escalations_stay_counted() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    let review = |until_ms| Event::TaskInReview {
        objective: o,
        task: TaskId(1),
        attempt: 1,
        output: Some(json!("draft")),
        reason: "awaiting approval".into(),
        errors: Vec::new(),
        usage: None,
        duration: None,
        until_ms,
    };
    let escalated = |escalation, until_ms| Event::TaskEscalated {
        objective: o,
        task: TaskId(1),
        attempt: 1,
        escalation,
        until_ms,
    };
    fold(
        &mut r,
        [
            (0, review(Some(100))),
            (100, escalated(1, 200)),
            (200, escalated(2, 300)),
        ],
    );
    let view = r.view();
    assert_eq!(view.status, TaskStatus::Review);
    assert_eq!((view.review_until_ms, view.escalations), (Some(300), 2));
    r.apply(
        &Event::TaskApproved {
            objective: o,
            task: TaskId(1),
            output: json!("draft"),
            decided_by: swarm_protocol::DecidedBy::Deadline,
        },
        300,
    );
    let view = r.view();
    assert_eq!(view.status, TaskStatus::Succeeded);
    assert_eq!(
        (view.review_until_ms, view.escalations),
        (None, 2),
        "the deadline is gone, the escalations stay on the record"
    );
    // A new review starts with none.
    r.apply(&review(None), 400);
    assert_eq!((r.review_until_ms, r.escalations), (None, 0));
}

#[test]
fn a_rejected_plan_is_kept_for_the_repair_and_counted() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    r.apply(
        &Event::PlanRequested {
            objective: o,
            task: TaskId(1),
            spec: Box::new(spec("plan")),
            replan: 2,
            failed: Some(TaskId(9)),
        },
        0,
    );
    let rejected = |repair| Event::PlanRejected {
        objective: o,
        task: TaskId(1),
        attempt: 1,
        agent: AgentId(7),
        plan: json!("nonsense"),
        errors: vec!["no JSON".into(), "no tasks".into()],
        repair,
        usage: usage(1, 1),
        duration: Duration::from_millis(3),
    };
    r.apply(&started(o, 1), 1);
    r.apply(&rejected(true), 2);
    assert_eq!(r.status, TaskStatus::Ready, "a repair runs at once");
    assert_eq!(r.error.as_deref(), Some("plan rejected: no JSON; no tasks"));
    r.apply(&rejected(false), 3);
    let planning = r.planning.as_deref().unwrap();
    assert_eq!((planning.replan, planning.failed), (2, Some(TaskId(9))));
    assert_eq!(planning.rejections, 2);
    assert_eq!(
        planning.rejected.as_ref().map(|p| &p.plan),
        Some(&json!("nonsense"))
    );
    assert_eq!(r.usage, usage(2, 2).unwrap());
}

#[test]
fn links_are_names_then_the_parent_once() {
    let ids = |k: &TaskKey| match k.as_str() {
        "a" => Some(TaskId(1)),
        "p" => Some(TaskId(3)),
        _ => None,
    };
    assert_eq!(
        link(&[key("a"), key("unknown")], Some(TaskId(3)), ids),
        [TaskId(1), TaskId(3)]
    );
    assert_eq!(
        link(&[key("p"), key("a")], Some(TaskId(3)), ids),
        [TaskId(3), TaskId(1)],
        "a parent named already keeps its place"
    );
    let compensation = TaskRecord::compensation(
        TaskId(8),
        key("a"),
        Capability::new("undo").unwrap(),
        TaskId(1),
    );
    assert_eq!(compensation.view().depends_on, [TaskId(1)]);
    assert_eq!(compensation.view().compensates, Some(TaskId(1)));
}

#[test]
fn only_events_about_one_task_name_it() {
    let o = ObjectiveId::new();
    assert_eq!(task_of(&ready(o)), Some(TaskId(1)));
    assert_eq!(task_of(&Event::ObjectiveSucceeded { objective: o }), None);
    let before = record(1);
    let mut after = before.clone();
    after.apply(&Event::ObjectiveSucceeded { objective: o }, 1);
    assert_eq!(after, before, "an objective's event changes no task");
}

#[test]
fn a_record_reads_back_from_json_and_from_a_snapshot_without_links() {
    let mut r = TaskRecord::declared(
        TaskId(4),
        &spec("t"),
        ObjectiveId::new(),
        Some(TaskId(2)),
        vec![TaskId(2)],
    );
    r.planning = Some(Box::default());
    let text = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<TaskRecord>(&text).unwrap(), r);
    let mut old: Value = serde_json::from_str(&text).unwrap();
    old.as_object_mut().unwrap().remove("deps");
    let read: TaskRecord = serde_json::from_value(old).unwrap();
    assert!(read.deps.is_empty());
    assert_eq!(read.spawned_by, Some(TaskId(2)));
}

#[test]
fn an_objective_view_lists_its_tasks_in_order() {
    let o = ObjectiveId::new();
    let tasks = [record(1), record(2)];
    let view = objective_view(
        o,
        "goal",
        ObjectiveStatus::Failed,
        Some("why"),
        None,
        &tasks,
    );
    assert_eq!(view.goal, "goal");
    assert_eq!(view.failure.as_deref(), Some("why"));
    let ids: Vec<TaskId> = view.tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids, [TaskId(1), TaskId(2)]);
}

#[test]
fn a_declined_attempt_is_counted_apart_from_lost_ones() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    let lost = |attempt, declined| Event::AttemptLost {
        objective: o,
        task: TaskId(1),
        attempt,
        agent: Some(AgentId(7)),
        reason: "gone".into(),
        declined,
    };
    fold(
        &mut r,
        [
            (10, started(o, 1)),
            (20, lost(1, true)),
            (30, started(o, 2)),
            (40, lost(2, false)),
            (50, started(o, 3)),
            (60, lost(3, true)),
        ],
    );
    assert_eq!((r.status, r.attempt), (TaskStatus::Ready, 3));
    assert_eq!((r.lost, r.declined), (1, 2));
}

#[test]
fn the_budget_is_charged_the_priced_attempts_even_when_the_tasks_cost_is_unknown() {
    let o = ObjectiveId::new();
    let mut r = record(1);
    let priced = Some(Usage {
        cost_usd_micros: Some(400),
        ..usage(1, 2).unwrap()
    });
    fold(
        &mut r,
        [
            (20, started(o, 1)),
            (
                30,
                Event::TaskFailed {
                    objective: o,
                    task: TaskId(1),
                    attempt: 1,
                    agent: Some(AgentId(7)),
                    kind: FailureKind::Transient,
                    message: "503".into(),
                    partial_output: None,
                    usage: priced,
                    duration: None,
                    retry_in: Some(Duration::from_millis(1)),
                },
            ),
            (40, started(o, 2)),
            (
                50,
                Event::TaskSucceeded {
                    objective: o,
                    task: TaskId(1),
                    attempt: 2,
                    agent: AgentId(7),
                    output: json!("done"),
                    usage: usage(3, 4),
                    duration: Duration::from_millis(10),
                },
            ),
        ],
    );
    assert_eq!(r.usage.cost_usd_micros, None, "one attempt had no price");
    assert_eq!(r.usage.tokens(), 10);
    assert_eq!(r.budget_cost_usd_micros, 400);
}
