//! Sample values for tests of code that stores, sends or folds protocol values (compiled for
//! this crate's tests and with the `test-support` feature).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;

use crate::agent::{AgentDescriptor, Health};
use crate::event::Event;
use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::objective::Objective;
use crate::outcome::{FailureKind, Usage};
use crate::task::TaskSpec;

/// One event of every kind, all of one new objective (task `T3`, a spawn of two tasks from
/// `T9`), in an order a log could hold them.
pub fn every_event_kind() -> Vec<Event> {
    let objective = ObjectiveId::new();
    let task = TaskId(3);
    let key = TaskKey::new("a").unwrap_or_else(|e| panic!("{e}"));
    let cap = Capability::new("echo").unwrap_or_else(|e| panic!("{e}"));
    let spec = TaskSpec::new(key, cap.clone());
    vec![
        Event::ObjectiveSubmitted {
            objective,
            spec: Objective::with_tasks("g", vec![spec.clone()]),
            first_task: task,
            idempotency_key: Some("k-1".into()),
        },
        Event::TaskReady { objective, task },
        Event::TaskStarted {
            objective,
            task,
            attempt: 1,
            agent: AgentId(1),
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
        },
        Event::TaskInReview {
            objective,
            task,
            attempt: 1,
            output: Some(json!(1)),
            reason: "schema".into(),
            usage: None,
            duration: Some(Duration::from_millis(7)),
        },
        Event::TaskApproved {
            objective,
            task,
            output: json!(2),
        },
        Event::TaskRejected {
            objective,
            task,
            reason: "no".into(),
        },
        Event::TasksSpawned {
            objective,
            parent: task,
            first_task: TaskId(9),
            tasks: vec![spec.clone(), spec],
        },
        Event::TaskCancelled { objective, task },
        Event::ObjectiveSucceeded { objective },
        Event::ObjectiveFailed {
            objective,
            reason: "x".into(),
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
    ]
}
