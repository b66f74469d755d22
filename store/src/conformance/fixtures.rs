//! Events and views for the conformance checks, the projection's unit tests and a backend's
//! own tests: small builders, so each test says only what matters to it.

use swarm_protocol::{
    AgentDescriptor, AgentId, Capability, CatchUpPolicy, Event, EventRecord, Health, Objective,
    ObjectiveId, OverlapPolicy, ScheduleSpec, TaskId, TaskKey, TaskSpec,
};

use crate::EventStore;

/// An objective of `tasks` `echo` tasks.
pub fn objective_spec(tasks: usize) -> Objective {
    let echo = Capability::new("echo").unwrap_or_else(|e| panic!("{e}"));
    let tasks = (0..tasks)
        .map(|i| {
            let key = TaskKey::new(format!("t{i}")).unwrap_or_else(|e| panic!("{e}"));
            TaskSpec::new(key, echo.clone())
        })
        .collect();
    Objective::with_tasks("g", tasks)
}

/// Numbers `events` from `first`, all at `at_ms`.
pub fn records(first: u64, at_ms: u64, events: Vec<Event>) -> Vec<EventRecord> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| EventRecord { seq, at_ms, event })
        .collect()
}

/// One record.
pub fn record(seq: u64, at_ms: u64, event: Event) -> EventRecord {
    EventRecord { seq, at_ms, event }
}

/// The submit of a two-task objective whose tasks are numbered from `first_task`.
pub fn submitted(objective: ObjectiveId, first_task: u64, key: Option<&str>) -> Event {
    Event::ObjectiveSubmitted {
        objective,
        spec: objective_spec(2),
        first_task: TaskId(first_task),
        idempotency_key: key.map(Into::into),
        trace: None,
    }
}

/// The registration of agent `agent`.
pub fn registered(agent: u64) -> Event {
    Event::AgentRegistered {
        descriptor: AgentDescriptor {
            id: AgentId(agent),
            name: format!("agent-{agent}"),
            capabilities: vec![Capability::new("echo").unwrap_or_else(|e| panic!("{e}"))],
            max_concurrency: 1,
            labels: Default::default(),
            cost_hint: None,
            description: None,
        },
    }
}

/// An event of agent `agent` that belongs to no objective and changes no index.
pub fn agent_event(agent: u64) -> Event {
    Event::AgentHealthChanged {
        agent: AgentId(agent),
        health: Health::Degraded,
        reason: "slow".into(),
    }
}

/// The declaration of agent `agent` as `name`, with model `m-<agent>`.
pub fn declared(agent: u64, name: &str) -> Event {
    Event::AgentDeclared {
        agent: AgentId(agent),
        name: name.into(),
        config: serde_json::json!({ "name": name, "model": format!("m-{agent}") }),
    }
}

/// The undeclaration of `name`.
pub fn undeclared(agent: u64, name: &str) -> Event {
    Event::AgentUndeclared {
        agent: AgentId(agent),
        name: name.into(),
    }
}

/// A schedule every five seconds, of an empty objective.
pub fn schedule_spec(name: &str, paused: bool) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "*/5 * * * * *".into(),
        time_zone: "UTC".into(),
        template: Objective::with_tasks("g", Vec::new()),
        overlap: OverlapPolicy::Skip,
        catch_up: CatchUpPolicy::Skip,
        paused,
    }
}

/// The receipt of a posted event whose payload is `{"key": key}`.
pub fn received(id: uuid::Uuid, key: &str, expires_at_ms: u64, idem: Option<&str>) -> Event {
    Event::EventReceived {
        id,
        key: key.into(),
        payload: serde_json::json!({ "key": key }),
        expires_at_ms,
        idempotency_key: idem.map(Into::into),
    }
}

/// The declaration of hook `name`, whose secret is in the variable `secret_env`.
pub fn hook_declared(name: &str, secret_env: &str) -> Event {
    Event::HookDeclared {
        name: name.into(),
        config: serde_json::json!({
            "name": name,
            "secret_env": secret_env,
            "template": { "goal": { "$payload": "/message" } },
        }),
    }
}

/// The deletion of hook `name`.
pub fn hook_deleted(name: &str) -> Event {
    Event::HookDeleted { name: name.into() }
}

/// The declared agents as (name, id, model).
pub async fn declared_agent_models(store: &impl EventStore) -> Vec<(String, u64, String)> {
    let agents = store
        .declared_agents()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    agents
        .into_iter()
        .map(|d| {
            let model = d.config["model"].as_str().unwrap_or_default().to_owned();
            (d.name, d.agent.0, model)
        })
        .collect()
}

/// The declared hooks as (name, secret_env).
pub async fn declared_hook_secrets(store: &impl EventStore) -> Vec<(String, String)> {
    let hooks = store
        .declared_hooks()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    hooks
        .into_iter()
        .map(|h| {
            let env = h.config["secret_env"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (h.name, env)
        })
        .collect()
}

/// Owned pairs, to compare with [`declared_hook_secrets`].
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}
