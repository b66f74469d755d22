//! Sample values for tests of code that stores, sends or folds protocol values (compiled for
//! this crate's tests and with the `test-support` feature).

#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::time::Duration;

use serde_json::json;

use crate::agent::{AgentDescriptor, Health};
use crate::cost::Usd;
use crate::event::Event;
use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::{BudgetLimit, Budgets, Objective};
use crate::outcome::{FailureKind, OutcomeSummary, Usage};
use crate::schedule::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
use crate::task::{Compensation, OutputError, TaskSpec};
use crate::trace::TraceContext;

/// One event of every kind, all of one new objective (task `T3`, a spawn of two tasks from
/// `T9`, a re-plan `T11`), in an order a log could hold them.
pub fn every_event_kind() -> Vec<Event> {
    let objective = ObjectiveId::new();
    let task = TaskId(3);
    let key = TaskKey::new("a").unwrap_or_else(|e| panic!("{e}"));
    let cap = Capability::new("echo").unwrap_or_else(|e| panic!("{e}"));
    let mut spec = TaskSpec::new(key, cap.clone());
    spec.output_schema = Some(json!({"type": "object"}));
    spec.compensation = Some(Compensation::new(
        cap.clone(),
        json!({"undo": {"$from": "a"}}),
    ));
    let mut submitted = Objective::with_tasks("g", vec![spec.clone()]);
    submitted.limits.max_concurrency = NonZeroU32::new(2);
    submitted.limits.token_budget = Some(1_000);
    submitted.limits.deadline = Some(Duration::from_secs(90));
    vec![
        Event::ObjectiveSubmitted {
            objective,
            spec: submitted,
            first_task: task,
            idempotency_key: Some("k-1".into()),
            trace: TraceContext::parse(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some("congo=t61rcWkgMzE"),
            ),
        },
        Event::TaskReady { objective, task },
        Event::TaskStarted {
            objective,
            task,
            attempt: 1,
            agent: AgentId(1),
            input: Some(json!({"system": "s", "prompt": "p"})),
        },
        Event::TaskSucceeded {
            objective,
            task,
            attempt: 1,
            agent: AgentId(1),
            output: json!({"x": 1}),
            usage: Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                ..Usage::default()
            }),
            duration: Duration::from_millis(1500),
        },
        Event::TaskFailed {
            objective,
            task,
            attempt: 2,
            agent: None,
            kind: FailureKind::Transient,
            message: "503".into(),
            partial_output: Some(json!("par")),
            usage: None,
            duration: Some(Duration::from_millis(40)),
            retry_in: Some(Duration::from_millis(250)),
        },
        Event::AttemptLost {
            objective,
            task,
            attempt: 3,
            agent: Some(AgentId(2)),
            reason: "agent A2 crashed".into(),
            declined: false,
        },
        Event::ResultFenced {
            objective,
            task,
            attempt: 2,
            agent: AgentId(2),
            outcome: OutcomeSummary::Failed {
                kind: FailureKind::Timeout,
            },
            reason: "attempt 2 is not running: the task is ready after attempt 3".into(),
        },
        Event::TaskInReview {
            objective,
            task,
            attempt: 1,
            output: Some(json!(1)),
            reason: "schema".into(),
            errors: vec![OutputError {
                path: "/name".into(),
                message: "5 is not of type \"string\"".into(),
            }],
            usage: None,
            duration: Some(Duration::from_millis(7)),
            until_ms: Some(1_700_000_060_000),
        },
        Event::TaskWaiting {
            objective,
            task: TaskId(12),
            event: "build-42-done".into(),
            until_ms: 1_700_000_360_000,
        },
        Event::WaitSatisfied {
            objective,
            task: TaskId(12),
            event: uuid::Uuid::now_v7(),
            key: "build-42-done".into(),
            payload: json!({"status": "green"}),
        },
        Event::TaskApproved {
            objective,
            task,
            output: json!(2),
            decided_by: crate::DecidedBy::Person,
        },
        Event::TaskRejected {
            objective,
            task,
            reason: "no".into(),
            decided_by: crate::DecidedBy::Deadline,
        },
        Event::TaskEscalated {
            objective,
            task,
            attempt: 1,
            escalation: 1,
            until_ms: 1_700_000_060_000,
        },
        Event::TasksSpawned {
            objective,
            parent: task,
            first_task: TaskId(9),
            tasks: vec![spec.clone(), spec],
        },
        Event::PlanRequested {
            objective,
            task: TaskId(11),
            spec: Box::new(TaskSpec::new(
                TaskKey::new("replan-1").unwrap_or_else(|e| panic!("{e}")),
                Capability::new("plan").unwrap_or_else(|e| panic!("{e}")),
            )),
            replan: 1,
            failed: Some(task),
        },
        Event::PlanRejected {
            objective,
            task: TaskId(11),
            attempt: 1,
            agent: AgentId(1),
            plan: json!("no plan here"),
            errors: vec!["the planner's answer holds no JSON object".into()],
            repair: true,
            usage: None,
            duration: Duration::from_millis(30),
        },
        Event::CompensationStarted {
            objective,
            reason: "task `b` (T10) failed: 401".into(),
            first_task: TaskId(11),
            compensates: vec![TaskId(9), task],
        },
        Event::TaskCancelled { objective, task },
        Event::ObjectiveSucceeded { objective },
        Event::ObjectiveFailed {
            objective,
            reason: "x".into(),
        },
        Event::BudgetReached {
            objective,
            limit: BudgetLimit::CostBudget,
            reason: "the objective spent $0.30 on models, over its `cost_budget` of $0.25".into(),
        },
        Event::BudgetRaised {
            objective,
            budgets: Budgets {
                token_budget: None,
                cost_budget: Some(Usd(500_000)),
            },
            decided_by: "ann".into(),
        },
        Event::ObjectiveCancelled { objective },
        Event::AgentRegistered {
            descriptor: AgentDescriptor {
                id: AgentId(1),
                name: "n".into(),
                capabilities: vec![cap],
                max_concurrency: 4,
                labels: Default::default(),
                cost_hint: Some(0.5),
                description: Some("writes".into()),
            },
        },
        Event::AgentHealthChanged {
            agent: AgentId(1),
            health: Health::Down,
            reason: "r".into(),
        },
        Event::AgentRestarted {
            agent: AgentId(1),
            restarts: 2,
            reason: "panic".into(),
        },
        Event::AgentDeclared {
            agent: AgentId(2),
            name: "model".into(),
            config: json!({ "name": "model", "provider": "openai", "api_key_env": "KEY_VAR" }),
        },
        Event::AgentUndeclared {
            agent: AgentId(2),
            name: "model".into(),
        },
        Event::AgentDeregistered { agent: AgentId(1) },
        Event::EventReceived {
            id: uuid::Uuid::now_v7(),
            key: "build-43-done".into(),
            payload: json!({"status": "red"}),
            expires_at_ms: 1_700_086_400_000,
            idempotency_key: Some("ci-run-43".into()),
        },
        Event::ScheduleCreated {
            spec: Box::new(ScheduleSpec {
                name: "nightly".into(),
                cron: "0 30 2 * * *".into(),
                time_zone: "Europe/Berlin".into(),
                template: Objective::with_tasks("nightly report", Vec::new()),
                overlap: OverlapPolicy::QueueOne,
                catch_up: CatchUpPolicy::RunLatest {
                    window: Duration::from_secs(3600),
                },
                paused: false,
            }),
        },
        Event::SchedulePaused {
            schedule: "nightly".into(),
        },
        Event::ScheduleResumed {
            schedule: "nightly".into(),
        },
        Event::ScheduleSkipped {
            schedule: "nightly".into(),
            slot_ms: 1_700_000_005_000,
            reason: "the previous fire still runs".into(),
        },
        Event::ScheduleFireFailed {
            schedule: "nightly".into(),
            slot_ms: 1_700_000_010_000,
            reason: "no agent has capability `echo`".into(),
        },
        Event::ScheduleFired {
            schedule: "nightly".into(),
            slot_ms: 1_700_000_000_000,
            objective: ObjectiveId::new(),
        },
        Event::ScheduleDeleted {
            schedule: "nightly".into(),
        },
        Event::HookDeclared {
            name: "deploy".into(),
            config: json!({
                "name": "deploy",
                "secret_env": "DEPLOY_HOOK_SECRET",
                "template": { "goal": { "$payload": "/message" } },
                "tolerance": "5m"
            }),
        },
        Event::HookDeleted {
            name: "deploy".into(),
        },
    ]
}
