//! A log with every kind of event: four objectives interleaved, with agent events between
//! them.

use std::time::Duration;

use serde_json::json;
use swarm_protocol::{
    AgentDescriptor, AgentId, Capability, DecidedBy, Event, EventRecord, FailureKind, Health,
    Objective, ObjectiveId, OutcomeSummary, OutputError, TaskId,
};

use super::{Log, ms, spec, usage};

/// The objectives of the hand-written log.
pub(super) struct Ids {
    /// Fails: a retried task, a lost attempt, a review approved and one rejected, a spawn,
    /// cancelled leftovers.
    pub(super) failed: ObjectiveId,
    /// Cancelled by its user while a task ran.
    pub(super) cancelled: ObjectiveId,
    /// Succeeds.
    pub(super) succeeded: ObjectiveId,
    /// Still running at the end of the log, with a retry pending.
    pub(super) open: ObjectiveId,
}

/// A log with every kind of event, four objectives interleaved, and agent events between
/// them. Task ids: `failed` has T10..T13 and spawns T20, T21; `cancelled` T30; `succeeded`
/// T40; `open` T50, T51.
pub(super) fn log_of_every_kind() -> (Ids, Vec<EventRecord>) {
    let ids = Ids {
        failed: ObjectiveId::new(),
        cancelled: ObjectiveId::new(),
        succeeded: ObjectiveId::new(),
        open: ObjectiveId::new(),
    };
    let o = ids.failed;
    let (a, b, c, d) = (TaskId(10), TaskId(11), TaskId(12), TaskId(13));
    let (s1, s2) = (TaskId(20), TaskId(21));
    let mut log = Log::default();
    let mut objective = Objective::with_tasks(
        "every kind",
        vec![
            spec("a", "work"),
            spec("b", "review"),
            spec("c", "work"),
            spec("d", "work"),
        ],
    );
    objective.priority = 3;
    log.at(
        1_000,
        Event::ObjectiveSubmitted {
            objective: o,
            spec: objective,
            first_task: a,
            idempotency_key: Some("key-1".into()),
            trace: None,
        },
    );
    log.at(
        1_001,
        Event::AgentRegistered {
            descriptor: AgentDescriptor {
                id: AgentId(1),
                name: "one".into(),
                capabilities: vec![Capability::new("work").unwrap()],
                max_concurrency: 4,
                labels: Default::default(),
                cost_hint: None,
                description: None,
            },
        },
    );
    // `a`: fails transiently (with partial output), is retried, and succeeds.
    log.at(
        1_002,
        Event::TaskReady {
            objective: o,
            task: a,
        },
    );
    log.at(
        1_003,
        Event::TaskStarted {
            objective: o,
            task: a,
            attempt: 1,
            agent: AgentId(1),
            input: None,
        },
    );
    log.at(
        2_000,
        Event::TaskFailed {
            objective: o,
            task: a,
            attempt: 1,
            agent: Some(AgentId(1)),
            kind: FailureKind::Transient,
            message: "503".into(),
            partial_output: Some(json!("half")),
            usage: usage(1, 2),
            duration: Some(ms(40)),
            retry_in: Some(ms(250)),
        },
    );
    log.at(
        2_300,
        Event::TaskStarted {
            objective: o,
            task: a,
            attempt: 2,
            agent: AgentId(2),
            input: None,
        },
    );
    // The other objectives start meanwhile.
    log.at(
        2_301,
        Event::ObjectiveSubmitted {
            objective: ids.cancelled,
            spec: Objective::with_tasks("cancel me", vec![spec("x", "work")]),
            first_task: TaskId(30),
            idempotency_key: None,
            trace: None,
        },
    );
    log.at(
        2_302,
        Event::TaskReady {
            objective: ids.cancelled,
            task: TaskId(30),
        },
    );
    log.at(
        2_303,
        Event::TaskStarted {
            objective: ids.cancelled,
            task: TaskId(30),
            attempt: 1,
            agent: AgentId(1),
            input: None,
        },
    );
    log.at(
        2_400,
        Event::TaskSucceeded {
            objective: o,
            task: a,
            attempt: 2,
            agent: AgentId(2),
            output: json!({"sum": 1}),
            usage: usage(3, 4),
            duration: ms(60),
        },
    );
    // `b`: its agent crashes; the next attempt goes to review and is approved, edited.
    log.at(
        2_401,
        Event::TaskReady {
            objective: o,
            task: b,
        },
    );
    log.at(
        2_402,
        Event::TaskStarted {
            objective: o,
            task: b,
            attempt: 1,
            agent: AgentId(1),
            input: None,
        },
    );
    log.at(
        2_500,
        Event::AgentHealthChanged {
            agent: AgentId(1),
            health: Health::Down,
            reason: "failed: panic".into(),
        },
    );
    log.at(
        2_501,
        Event::AttemptLost {
            objective: o,
            task: b,
            attempt: 1,
            agent: Some(AgentId(1)),
            reason: "agent A1 crashed".into(),
            declined: false,
        },
    );
    log.at(
        2_502,
        Event::AgentRestarted {
            agent: AgentId(1),
            restarts: 1,
            reason: "restarted by its supervisor".into(),
        },
    );
    log.at(
        2_503,
        Event::TaskStarted {
            objective: o,
            task: b,
            attempt: 2,
            agent: AgentId(1),
            input: None,
        },
    );
    // The late result of the lost attempt: it changes nothing.
    log.at(
        2_504,
        Event::ResultFenced {
            objective: o,
            task: b,
            attempt: 1,
            agent: AgentId(1),
            outcome: OutcomeSummary::Succeeded,
            reason: "attempt 1 is not current: the task runs attempt 2".into(),
        },
    );
    log.at(
        2_600,
        Event::TaskInReview {
            objective: o,
            task: b,
            attempt: 2,
            output: Some(json!({"draft": 1})),
            reason: "schema".into(),
            errors: vec![OutputError {
                path: "/draft".into(),
                message: "1 is not of type \"string\"".into(),
            }],
            usage: usage(5, 5),
            duration: Some(ms(10)),
            until_ms: None,
        },
    );
    log.at(
        3_000,
        Event::TaskApproved {
            objective: o,
            task: b,
            output: json!({"final": 1}),
            decided_by: DecidedBy::Person,
        },
    );
    // `c` spawns `s1` and `s2`.
    log.at(
        3_001,
        Event::TaskReady {
            objective: o,
            task: c,
        },
    );
    log.at(
        3_002,
        Event::TaskStarted {
            objective: o,
            task: c,
            attempt: 1,
            agent: AgentId(2),
            input: None,
        },
    );
    log.at(
        3_100,
        Event::TasksSpawned {
            objective: o,
            parent: c,
            first_task: s1,
            tasks: vec![spec("s1", "review"), spec("s2", "work")],
        },
    );
    log.at(
        3_100,
        Event::TaskSucceeded {
            objective: o,
            task: c,
            attempt: 1,
            agent: AgentId(2),
            output: json!({"sum": 3}),
            usage: None,
            duration: ms(5),
        },
    );
    log.at(
        3_200,
        Event::ObjectiveSubmitted {
            objective: ids.succeeded,
            spec: Objective::with_tasks("fine", vec![spec("y", "work")]),
            first_task: TaskId(40),
            idempotency_key: None,
            trace: None,
        },
    );
    log.at(
        3_201,
        Event::TaskReady {
            objective: ids.succeeded,
            task: TaskId(40),
        },
    );
    // `s1` goes to review without output and is rejected, so the objective fails.
    log.at(
        3_300,
        Event::TaskReady {
            objective: o,
            task: s1,
        },
    );
    log.at(
        3_301,
        Event::TaskStarted {
            objective: o,
            task: s1,
            attempt: 1,
            agent: AgentId(1),
            input: None,
        },
    );
    log.at(
        3_400,
        Event::TaskInReview {
            objective: o,
            task: s1,
            attempt: 1,
            output: None,
            reason: "no output".into(),
            errors: Vec::new(),
            usage: None,
            duration: None,
            until_ms: None,
        },
    );
    log.at(
        3_500,
        Event::TaskRejected {
            objective: o,
            task: s1,
            reason: "no".into(),
            decided_by: DecidedBy::Person,
        },
    );
    log.at(
        3_500,
        Event::TaskFailed {
            objective: o,
            task: s1,
            attempt: 1,
            agent: None,
            kind: FailureKind::Permanent,
            message: "rejected in review: no".into(),
            partial_output: None,
            usage: None,
            duration: None,
            retry_in: None,
        },
    );
    log.at(
        3_500,
        Event::TaskCancelled {
            objective: o,
            task: d,
        },
    );
    log.at(
        3_500,
        Event::TaskCancelled {
            objective: o,
            task: s2,
        },
    );
    log.at(
        3_500,
        Event::ObjectiveFailed {
            objective: o,
            reason: "task `s1` (T20) failed: rejected in review: no".into(),
        },
    );
    // An event of an objective the log no longer holds (pruned) creates nothing.
    log.at(
        3_502,
        Event::TaskReady {
            objective: ObjectiveId::new(),
            task: TaskId(99),
        },
    );
    log.at(
        3_600,
        Event::TaskStarted {
            objective: ids.succeeded,
            task: TaskId(40),
            attempt: 1,
            agent: AgentId(2),
            input: None,
        },
    );
    log.at(
        3_700,
        Event::TaskSucceeded {
            objective: ids.succeeded,
            task: TaskId(40),
            attempt: 1,
            agent: AgentId(2),
            output: json!("y"),
            usage: None,
            duration: ms(100),
        },
    );
    log.at(
        3_700,
        Event::ObjectiveSucceeded {
            objective: ids.succeeded,
        },
    );
    log.at(
        4_000,
        Event::TaskCancelled {
            objective: ids.cancelled,
            task: TaskId(30),
        },
    );
    log.at(
        4_000,
        Event::ObjectiveCancelled {
            objective: ids.cancelled,
        },
    );
    log.at(
        4_100,
        Event::ObjectiveSubmitted {
            objective: ids.open,
            spec: Objective::with_tasks("still open", vec![spec("z", "work"), spec("w", "work")]),
            first_task: TaskId(50),
            idempotency_key: Some("key-2".into()),
            trace: None,
        },
    );
    log.at(
        4_101,
        Event::TaskReady {
            objective: ids.open,
            task: TaskId(50),
        },
    );
    log.at(
        4_102,
        Event::TaskStarted {
            objective: ids.open,
            task: TaskId(50),
            attempt: 1,
            agent: AgentId(1),
            input: None,
        },
    );
    log.at(
        5_000,
        Event::TaskFailed {
            objective: ids.open,
            task: TaskId(50),
            attempt: 1,
            agent: Some(AgentId(1)),
            kind: FailureKind::Timeout,
            message: "stalled".into(),
            partial_output: None,
            usage: None,
            duration: Some(ms(900)),
            retry_in: Some(Duration::from_secs(1)),
        },
    );
    log.at(5_001, Event::AgentDeregistered { agent: AgentId(2) });
    (ids, log.0)
}
