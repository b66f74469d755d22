//! Wait tasks and posted events: a wait completes when its event arrives (also when the event
//! came first, kept across a restart), and fails with a timeout when none does.

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_server::ApiConfig;

use crate::common::api::*;

/// `build` waits (for `timeout`) for the event `key`; `report` echoes the part of its payload
/// at `/status` after it.
fn waiting_for(key: &str, timeout: &str) -> Value {
    json!({
        "goal": "report the build",
        "tasks": [
            { "id": "build", "kind": "wait", "event": key, "timeout": timeout },
            { "id": "report", "capability": "echo",
              "input": { "$from": "build", "pointer": "/status" }, "depends_on": ["build"] }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_task_completes_when_its_event_arrives_also_when_it_came_first() {
    let server = Server::start(None).await;

    // The task waits first; the event's key names its objective.
    let id = server.submit_ok(&waiting_for("ci-{objective}", "1h")).await;
    let mut events = server.events(&id, None).await;
    let waiting = until(&mut events, "task_waiting").await;
    let key = format!("ci-{id}");
    assert_eq!(waiting.last().unwrap().data["event"], key.as_str());
    let board = server.get_json("/v1/tasks?status=waiting").await;
    assert_eq!(board["total"], 1, "{board}");
    assert_eq!(board["tasks"][0]["task"]["kind"], "wait");
    assert_eq!(board["tasks"][0]["task"]["event"], key.as_str());
    assert!(board["tasks"][0]["task"]["waiting_until_ms"].is_u64());
    let view = server.view(&id).await;
    assert_eq!(task_named(&view, "report")["status"], "backlog");
    let metrics = prometheus_samples(&server.get_text("/metrics").await);
    assert_eq!(metrics["swarm_tasks_waiting"], 1.0);
    assert_eq!(metrics["swarm_events_kept"], 0.0);

    let response = server
        .post_event(
            &json!({ "key": key, "payload": { "status": "green" } }),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let posted: Value = response.json().await.unwrap();
    assert_eq!(posted["consumed_by"]["objective"], id.as_str());
    until(&mut events, "objective_succeeded").await;
    let view = server.view(&id).await;
    assert_eq!(
        task_named(&view, "build")["output"],
        json!({ "status": "green" })
    );
    assert_eq!(task_named(&view, "report")["output"]["input"], "green");
    let chain = server.chain(&id).await;
    let satisfied = chain
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "wait_satisfied")
        .unwrap_or_else(|| panic!("no wait_satisfied in {chain}"));
    assert_eq!(satisfied["event"], posted["id"]);

    // The event comes first: it is kept (durably, across a restart) for the task that
    // starts later, and a retried post under its idempotency key adds nothing.
    let early = json!({ "key": "deploy-7", "payload": { "status": "amber" } });
    let response = server.post_event(&early, Some("deploy-7-sent")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let first: Value = response.json().await.unwrap();
    assert!(first.get("consumed_by").is_none(), "{first}");
    let again: Value = server
        .post_event(&early, Some("deploy-7-sent"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = json!({ "key": "deploy-7", "payload": { "status": "red" } });
    let conflict = problem(
        server.post_event(&other, Some("deploy-7-sent")).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(conflict["field"], "Idempotency-Key");
    let pending = server.get_json("/v1/events/pending").await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["id"], first["id"]);
    let metrics = prometheus_samples(&server.get_text("/metrics").await);
    assert_eq!(metrics["swarm_tasks_waiting"], 0.0);
    assert_eq!(metrics["swarm_events_kept"], 1.0);
    let dir = server.finish().await;

    let server = Server::start_in(dir, ApiConfig::default()).await;
    let pending = server.get_json("/v1/events/pending").await;
    assert_eq!(pending[0]["id"], first["id"], "{pending}");
    let id = server.submit_ok(&waiting_for("deploy-7", "1h")).await;
    let all = server.all_events(&id, None).await;
    assert_eq!(all.last().unwrap().kind, "objective_succeeded");
    assert!(all.iter().all(|e| e.kind != "task_waiting" || e.seq > 0));
    let view = server.view(&id).await;
    assert_eq!(
        task_named(&view, "build")["output"],
        json!({ "status": "amber" })
    );
    assert_eq!(server.get_json("/v1/events/pending").await, json!([]));
    // Consumed, so a second task waiting for the key does not get it again.
    let id = server.submit_ok(&waiting_for("deploy-7", "1h")).await;
    let mut events = server.events(&id, None).await;
    until(&mut events, "task_waiting").await;
    let view = server.view(&id).await;
    assert_eq!(task_named(&view, "build")["status"], "waiting");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_task_without_its_event_fails_with_a_timeout() {
    let server = Server::start(None).await;
    let id = server.submit_ok(&waiting_for("never", "300ms")).await;
    let all = server.all_events(&id, None).await;
    let end = all.last().unwrap();
    assert_eq!(end.kind, "objective_failed");
    let reason = end.data["reason"].as_str().unwrap();
    assert!(
        reason.contains("no event `never` arrived within 300ms"),
        "{reason}"
    );
    let failed = all.iter().find(|e| e.kind == "task_failed").unwrap();
    assert_eq!(failed.data["kind"], "timeout");
    let view = server.view(&id).await;
    assert_eq!(task_named(&view, "report")["status"], "cancelled");
    // An event posted after the timeout is kept for a later task, not given to this one.
    let late = server.post_event(&json!({ "key": "never" }), None).await;
    let late: Value = late.json().await.unwrap();
    assert!(late.get("consumed_by").is_none(), "{late}");

    // Bad events and bad wait tasks are named.
    for (body, field) in [
        (json!({ "key": "" }), "key"),
        (json!({ "key": "has space" }), "key"),
        (json!({ "key": "k", "ttl": "0s" }), "ttl"),
        (json!({ "key": "k", "ttl": "90days" }), "ttl"),
        (json!({ "key": "k", "payload": 1, "extra": true }), "extra"),
    ] {
        let body = problem(
            server.post_event(&body, None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["field"], field, "{body}");
    }
    let no_timeout = json!({
        "goal": "g",
        "tasks": [{ "id": "w", "kind": "wait", "event": "k" }]
    });
    let body = problem(
        server.submit(&no_timeout, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(body["field"], "tasks[0]", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("`timeout`"),
        "{body}"
    );
    server.finish().await;
}
