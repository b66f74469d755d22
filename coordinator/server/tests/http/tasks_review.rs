//! Tasks over HTTP: listing across objectives by status in pages, the review queue (approve
//! with an edited output, reject with a reason), and approval tasks.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::api::*;

/// `GET /v1/tasks` lists tasks across objectives by status, filtered by objective, capability
/// and agent, oldest or newest first, a page at a time with `next` as the cursor and `total`
/// counting every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tasks_by_status_across_objectives_in_pages() {
    let server = Server::start(None).await;
    let held = |n: u32| {
        json!({
            "goal": format!("held {n}"),
            "tasks": [
                { "id": "h", "capability": "hold" },
                { "id": "w", "capability": "work", "depends_on": ["h"] }
            ]
        })
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = server.submit_ok(&held(n)).await;
        let mut stream = server.events(&id, None).await;
        until(&mut stream, "task_started").await;
        ids.push(id);
    }

    let running = server.get_json("/v1/tasks?status=running").await;
    assert_eq!(running["total"], 3);
    assert_eq!(running["next"], Value::Null);
    let items = running["tasks"].as_array().unwrap();
    let goals: Vec<&str> = items.iter().map(|i| i["goal"].as_str().unwrap()).collect();
    assert_eq!(goals, ["held 0", "held 1", "held 2"]);
    for item in items {
        assert_eq!(item["task"]["capability"], "hold");
        assert!(item["task"]["running_since_ms"].as_u64().unwrap() > 0);
    }
    let backlog = server
        .get_json("/v1/tasks?status=backlog&capability=work")
        .await;
    assert_eq!(backlog["total"], 3);
    assert_eq!(
        backlog["tasks"][0]["task"]["depends_on"],
        json!([items[0]["task"]["id"]])
    );

    // Pages of two, both ways; the last page has no `next`.
    let page = server.get_json("/v1/tasks?status=running&limit=2").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(page["total"], 3);
    let next = page["next"].as_str().unwrap();
    assert_eq!(next, items[1]["task"]["id"].as_str().unwrap());
    let rest = server
        .get_json(&format!("/v1/tasks?status=running&limit=2&after={next}"))
        .await;
    assert_eq!(rest["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(rest["tasks"][0]["goal"], "held 2");
    assert_eq!(rest["next"], Value::Null);
    let newest = server
        .get_json("/v1/tasks?status=running&order=newest&limit=1")
        .await;
    assert_eq!(newest["tasks"][0]["goal"], "held 2");

    // Filters: one objective's tasks, one agent's.
    let one = server
        .get_json(&format!("/v1/tasks?objective={}", ids[1]))
        .await;
    assert_eq!(one["total"], 2);
    let agent = items[0]["task"]["agent"].as_str().unwrap();
    let on_agent = server.get_json(&format!("/v1/tasks?agent={agent}")).await;
    assert_eq!(on_agent["total"], 3);
    let nothing = server.get_json("/v1/tasks?status=succeeded").await;
    assert_eq!(nothing["tasks"], json!([]));
    assert_eq!(nothing["total"], 0);

    for id in &ids {
        let response = server.cancel(id).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let cancelled = server.get_json("/v1/tasks?status=cancelled").await;
    assert_eq!(cancelled["total"], 6);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_approve_and_reject_round_trip() {
    let server = Server::start(None).await;
    let judged = json!({
        "goal": "judge",
        "tasks": [
            { "id": "j", "capability": "judge" },
            { "id": "e", "capability": "echo", "input": { "$from": "j" }, "depends_on": ["j"] }
        ]
    });

    // Approve with an edited output: the dependent gets it and the objective succeeds.
    let id = server.submit_ok(&judged).await;
    let mut stream = server.events(&id, None).await;
    let review = until(&mut stream, "task_in_review").await;
    let task = review.last().unwrap().data["task"]
        .as_str()
        .unwrap()
        .to_owned();
    // It is in the review queue, with its objective.
    let queue = server.get_json("/v1/tasks?status=review").await;
    assert_eq!(queue["total"], 1, "{queue:?}");
    assert_eq!(queue["next"], Value::Null, "{queue:?}");
    let queue = queue["tasks"].as_array().unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0]["goal"], "judge");
    assert_eq!(queue[0]["objective"], id.as_str());
    assert_eq!(queue[0]["task"]["id"], task.as_str());
    assert_eq!(queue[0]["task"]["status"], "review");
    assert_eq!(server.swarm.stats().await.unwrap().tasks_in_review, 1);
    for bad in [
        "/v1/tasks?status=done",
        "/v1/tasks?status=review&x=1",
        "/v1/tasks?limit=0",
        "/v1/tasks?agent=T1",
        "/v1/tasks?order=up",
    ] {
        let response = server.get(bad).await;
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert!(body["field"].is_string(), "{bad}: {body}");
    }
    let response = server
        .post(
            &format!("/v1/tasks/{task}/approve"),
            &json!({ "output": "edited" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    until(&mut stream, "objective_succeeded").await;
    let view = server.view(&id).await;
    assert_eq!(view["tasks"][0]["output"], "edited");
    assert_eq!(view["tasks"][1]["status"], "succeeded");
    let queue = server.get_json("/v1/tasks?status=review").await;
    assert_eq!(queue["tasks"], json!([]), "approved tasks leave the queue");
    assert_eq!(server.swarm.stats().await.unwrap().tasks_in_review, 0);
    assert_eq!(queue["total"], 0);

    // The task is no longer in review: a second decision conflicts.
    let again = server
        .post_empty(&format!("/v1/tasks/{task}/approve"))
        .await;
    let again = problem(again, StatusCode::CONFLICT).await;
    assert!(again["detail"].as_str().unwrap().contains("not in review"));

    // Reject: the task and the objective fail with the reason.
    let id = server.submit_ok(&judged).await;
    let mut stream = server.events(&id, None).await;
    let review = until(&mut stream, "task_in_review").await;
    let task = review.last().unwrap().data["task"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing_reason = server
        .post(&format!("/v1/tasks/{task}/reject"), &json!({}))
        .await;
    let missing_reason = problem(missing_reason, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        missing_reason["detail"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let response = server
        .post(
            &format!("/v1/tasks/{task}/reject"),
            &json!({ "reason": "wrong answer" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    until(&mut stream, "objective_failed").await;
    let view = server.view(&id).await;
    assert_eq!(view["status"], "failed");
    let stats = server.swarm.stats().await.unwrap();
    assert_eq!((stats.tasks_in_review, stats.tasks_failed), (0, 1));
    server.finish().await;
}

/// `draft` echoes its input; `ship-it` asks a person to approve the draft; `publish` echoes
/// what was approved.
fn gated() -> Value {
    json!({
        "goal": "publish after sign-off",
        "tasks": [
            { "id": "draft", "capability": "echo", "input": { "text": "v1" } },
            { "id": "ship-it", "kind": "approval",
              "input": { "$from": "draft", "pointer": "/input" }, "depends_on": ["draft"] },
            { "id": "publish", "capability": "echo",
              "input": { "$from": "ship-it" }, "depends_on": ["ship-it"] }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_task_holds_its_dependents_until_approved_and_rejecting_fails_the_objective() {
    let server = Server::start(None).await;
    let id = server.submit_ok(&gated()).await;
    let mut events = server.events(&id, None).await;
    let seen = until(&mut events, "task_in_review").await;
    assert_eq!(
        seen.last().unwrap().data["reason"],
        "awaiting approval",
        "{seen:#?}"
    );
    // It waits in the review queue with what is to be approved; its dependent does not run.
    let queue = server.get_json("/v1/tasks?status=review").await;
    let item = &queue["tasks"][0]["task"];
    assert_eq!(item["kind"], "approval");
    assert_eq!(item["output"], json!({ "text": "v1" }));
    let task = item["id"].as_str().unwrap().to_owned();
    let view = server.view(&id).await;
    assert_eq!(task_named(&view, "publish")["status"], "backlog");
    let board = server.get_text("/ui/").await;
    assert!(
        board.contains("awaiting approval"),
        "the board shows the gate"
    );
    let review = server.get_text("/ui/review").await;
    assert!(
        review.contains("data-approval"),
        "the review page offers it"
    );

    let approved = server
        .post(
            &format!("/v1/tasks/{task}/approve"),
            &json!({ "output": { "text": "v2" } }),
        )
        .await;
    assert_eq!(approved.status(), StatusCode::NO_CONTENT);
    until(&mut events, "objective_succeeded").await;
    let view = server.view(&id).await;
    assert_eq!(
        task_named(&view, "publish")["output"]["input"],
        json!({ "text": "v2" })
    );
    let chain = server.chain(&id).await;
    let kinds: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task"].as_str() == Some(task.as_str()))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["task_ready", "task_in_review", "task_approved"]);

    // Rejected: the objective fails, and what follows the gate never runs.
    let id = server.submit_ok(&gated()).await;
    let mut events = server.events(&id, None).await;
    until(&mut events, "task_in_review").await;
    let view = server.view(&id).await;
    let task = task_named(&view, "ship-it")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = server
        .post(
            &format!("/v1/tasks/{task}/reject"),
            &json!({ "reason": "too risky" }),
        )
        .await;
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    let rest = until(&mut events, "objective_failed").await;
    let reason = rest.last().unwrap().data["reason"].as_str().unwrap();
    assert!(reason.contains("not approved: too risky"), "{reason}");
    let view = server.view(&id).await;
    assert_eq!(task_named(&view, "publish")["status"], "cancelled");
    assert_eq!(task_named(&view, "publish")["attempts"], 0);
    server.finish().await;
}
