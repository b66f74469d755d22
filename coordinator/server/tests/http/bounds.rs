//! Every input bounded at the edge: durations past their maximum, JSON nested past the
//! server's ceiling and graph limits above the server's are refused with a problem naming the
//! field, and whatever is accepted (the deepest and the largest) is stored, read back, and
//! read back again after a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_coordinator::config::LimitsSection;
use swarm_protocol::ObjectiveStatus;
use swarm_protocol::bounds::JSON_DEPTH_CEILING;
use swarm_server::ApiConfig;

use crate::common::api::*;

/// Longer than any `Instant` can hold: it once panicked every agent that ran the task.
const HUGE: &str = "10000000000000000000s";

/// `{"a": {"a": … 1}}`, `levels` objects deep.
fn nested(levels: u32) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = json!({ "a": value });
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_durations_past_the_maximum_are_refused_naming_the_field() {
    let server = Server::start(None).await;
    for (field, task) in [
        (
            "tasks[1].hard_timeout",
            json!({ "id": "b", "capability": "work", "hard_timeout": HUGE }),
        ),
        (
            "tasks[1].idle_timeout",
            json!({ "id": "b", "capability": "work", "idle_timeout": HUGE }),
        ),
        (
            "tasks[1].retry.max_backoff",
            json!({ "id": "b", "capability": "work",
                    "retry": { "max_attempts": 2, "initial_backoff": "1s", "max_backoff": HUGE } }),
        ),
    ] {
        let objective = json!({ "goal": "g", "tasks": [
            { "id": "a", "capability": "work" }, task
        ] });
        let answer = server.submit(&objective, None).await;
        let body = problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, field).await;
        assert!(
            body["detail"].as_str().unwrap().contains("longer than"),
            "{body}"
        );
    }
    let deadline = json!({ "goal": "g", "limits": { "deadline": HUGE },
                           "tasks": [{ "id": "a", "capability": "work" }] });
    let answer = server.submit(&deadline, None).await;
    problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, "limits.deadline").await;

    // A year is accepted, and the agent that runs the task lives through it.
    let id = server
        .submit_ok(&json!({ "goal": "g", "tasks": [
            { "id": "a", "capability": "work", "input": { "ms": 1 },
              "idle_timeout": "366days", "hard_timeout": "366days" }
        ] }))
        .await;
    assert_eq!(server.wait(&id).await.status, ObjectiveStatus::Succeeded);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_durations_past_the_maximum_are_refused_naming_the_field() {
    let server = Server::start(None).await;
    let agent = |extra: Value| {
        let mut body = json!({
            "name": "slow", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
            "model": "m", "capabilities": ["draft"]
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (field, extra) in [
        ("hard_timeout", json!({ "hard_timeout": HUGE })),
        ("idle_timeout", json!({ "idle_timeout": HUGE })),
        (
            "breaker.cool_down",
            json!({ "breaker": { "cool_down": HUGE } }),
        ),
    ] {
        let answer = server.post("/v1/agents", &agent(extra)).await;
        problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, field).await;
    }
    assert_eq!(
        server
            .post("/v1/agents", &agent(json!({ "hard_timeout": "1h" })))
            .await
            .status(),
        StatusCode::CREATED
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_past_the_ceilings_is_refused_naming_the_field() {
    let server = Server::start_with(ApiConfig {
        ceilings: LimitsSection {
            string_bytes_max: 100,
            array_items_max: 3,
            ..LimitsSection::default()
        },
        ..ApiConfig::default()
    })
    .await;
    // The body is the value checked: `tasks[0].input` sits 3 levels down.
    let deep = json!({ "goal": "g", "tasks": [
        { "id": "a", "capability": "echo", "input": nested(JSON_DEPTH_CEILING - 2) }
    ] });
    let answer = server.submit(&deep, None).await;
    let body = problem(answer, StatusCode::UNPROCESSABLE_ENTITY).await;
    let field = body["field"].as_str().unwrap();
    assert!(field.starts_with("tasks[0].input.a.a"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("deeper"),
        "{body}"
    );

    let long = json!({ "goal": "x".repeat(101), "tasks": [{ "id": "a", "capability": "echo" }] });
    problem_at(
        server.submit(&long, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "goal",
    )
    .await;
    let wide = json!({ "goal": "g", "tasks": [
        { "id": "a", "capability": "echo", "input": [1, 2, 3, 4] }
    ] });
    let answer = server.submit(&wide, None).await;
    problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, "tasks[0].input").await;
    server.finish().await;
}

/// A client may lower the graph limits, never raise them past the server's (in a submit or a
/// schedule's template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objective_cannot_raise_the_servers_graph_limits() {
    let server = Server::start(None).await;
    let chain = |length: usize, limits: Value| {
        let tasks: Vec<Value> = (0..length)
            .map(|i| match i {
                0 => json!({ "id": "t0", "capability": "work" }),
                _ => json!({ "id": format!("t{i}"), "capability": "work",
                             "depends_on": [format!("t{}", i - 1)] }),
            })
            .collect();
        json!({ "goal": "chain", "limits": limits, "tasks": tasks })
    };
    let raised = chain(
        65,
        json!({ "max_tasks": 100, "max_depth": 1000, "max_fanout": 10 }),
    );
    let answer = server.submit(&raised, None).await;
    let body = problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, "limits.max_depth").await;
    assert!(
        body["detail"].as_str().unwrap().contains("max_depth = 64"),
        "{body}"
    );
    let lowered = chain(
        5,
        json!({ "max_tasks": 100, "max_depth": 4, "max_fanout": 10 }),
    );
    let answer = server.submit(&lowered, None).await;
    problem_at(answer, StatusCode::UNPROCESSABLE_ENTITY, "limits.max_depth").await;
    // Nor through a schedule's template, which every fire submits.
    let schedule = json!({ "name": "deep", "cron": "0 * * * *", "template": raised });
    let answer = server.post("/v1/schedules", &schedule).await;
    problem_at(
        answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "template.limits.max_depth",
    )
    .await;
    server.finish().await;
}

/// The deepest and the largest accepted input, and a chain of echoes as long as the default
/// limits allow, are stored and read back: from the live log, and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_and_largest_accepted_input_round_trips_through_a_restart() {
    let server = Server::start(None).await;
    // The deepest: the body at the ceiling (`tasks[0].input` is 3 levels down).
    let deepest = nested(JSON_DEPTH_CEILING - 3);
    let deep_id = server
        .submit_ok(&json!({ "goal": "deep", "tasks": [
            { "id": "a", "capability": "echo", "input": deepest },
            { "id": "b", "capability": "echo", "input": deepest, "depends_on": ["a"] }
        ] }))
        .await;
    // The largest: a body just under the default limit of 1 MiB.
    let large = "x".repeat(1024 * 1024 - 200);
    let large_id = server
        .submit_ok(&json!({ "goal": "large", "tasks": [
            { "id": "a", "capability": "echo", "input": large }
        ] }))
        .await;
    // A chain of 64 echoes, each answering with its predecessor's answer.
    let tasks: Vec<Value> = (0..64)
        .map(|i| match i {
            0 => json!({ "id": "e0", "capability": "echo", "input": { "n": 0 } }),
            _ => json!({ "id": format!("e{i}"), "capability": "echo", "input": { "n": i },
                         "depends_on": [format!("e{}", i - 1)] }),
        })
        .collect();
    let chain_id = server
        .submit_ok(&json!({ "goal": "echoes", "tasks": tasks }))
        .await;
    for id in [&deep_id, &large_id, &chain_id] {
        assert_eq!(
            server.wait(id).await.status,
            ObjectiveStatus::Succeeded,
            "{id}"
        );
    }
    // `chain` asserts a 200: every event of each objective was read back from the log.
    let mut before = Vec::new();
    for id in [&deep_id, &large_id, &chain_id] {
        before.push(server.chain(id).await);
    }
    assert!(
        holds(&before[0], &deepest),
        "the deep input is in its chain"
    );

    let dir = server.finish().await;
    let server = Server::start_in(dir, ApiConfig::default()).await;
    for (id, chain) in [&deep_id, &large_id, &chain_id].into_iter().zip(&before) {
        assert_eq!(&server.chain(id).await, chain, "{id} after a restart");
        assert_eq!(
            server.view(id).await["status"],
            "succeeded",
            "{id} after a restart"
        );
    }
    server.finish().await;
}

/// Whether `needle` is `value` or a part of it.
fn holds(value: &Value, needle: &Value) -> bool {
    value == needle
        || match value {
            Value::Array(items) => items.iter().any(|item| holds(item, needle)),
            Value::Object(map) => map.values().any(|item| holds(item, needle)),
            _ => false,
        }
}
