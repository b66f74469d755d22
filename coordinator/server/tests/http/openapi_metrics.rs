//! The OpenAPI document (every route, and nothing else) and the Prometheus metrics (they
//! follow the scheduler).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_protocol::{FencedResult, OutcomeSummary, TaskOutcome};
use swarm_server::ROUTES;

use crate::common::api::*;
use crate::common::reg;

/// `GET /openapi.json` is an OpenAPI 3.1 document that documents every route of `ROUTES` with
/// its method (and no other), so a route added without documentation fails here; its
/// references all resolve and its operation ids are unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_route() {
    let server = Server::start(Some(TOKEN)).await;
    let response = server.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi: {version}");

    let paths = doc["paths"].as_object().unwrap();
    // The dashboard's pages are HTML for people, not API: documented as left out.
    let api: Vec<_> = ROUTES.iter().filter(|r| !r.is_ui()).collect();
    for route in ROUTES.iter().filter(|r| r.is_ui()) {
        assert!(
            !paths.contains_key(route.path),
            "{} is documented",
            route.path
        );
    }
    assert!(ROUTES.iter().any(|r| r.is_ui() && r.path == "/ui/"));
    for route in &api {
        let method = route.method.as_str().to_ascii_lowercase();
        let operation = paths
            .get(route.path)
            .and_then(|item| item.get(&method))
            .unwrap_or_else(|| panic!("{} {} is not in the document", route.method, route.path));
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{} {}: no success answer",
            route.method,
            route.path
        );
        if route.is_public() {
            assert_eq!(operation["security"], json!([]), "{}", route.path);
        } else {
            let unauthorized = &responses["401"]["content"]["application/problem+json"];
            assert_eq!(
                unauthorized["schema"]["$ref"], "#/components/schemas/Problem",
                "{} {}",
                route.method, route.path
            );
        }
    }
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    let operations: Vec<&Value> = paths
        .values()
        .flat_map(|item| METHODS.iter().filter_map(|method| item.get(*method)))
        .collect();
    assert_eq!(
        operations.len(),
        api.len(),
        "documented routes the router lacks"
    );
    let mut ids: Vec<&str> = operations
        .iter()
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), api.len(), "operation ids are not unique");

    // Every reference points at a schema of the document.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for target in targets {
        let name = target.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            schemas.contains_key(name),
            "{target} is not in the document"
        );
    }
    // The request bodies are described field by field, not as any object.
    let submit = &paths["/v1/objectives"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(submit["schema"]["$ref"], "#/components/schemas/Objective");
    assert_eq!(schemas["Objective"]["required"], json!(["goal"]));
    assert_eq!(schemas["Objective"]["additionalProperties"], false);
    // `capability` is required of agent tasks only (a `wait` or `approval` task takes none).
    assert_eq!(schemas["TaskSpec"]["required"], json!(["id"]));
    assert_eq!(schemas["TaskSpec"]["additionalProperties"], false);
    // Durations are the humantime text the wire carries.
    assert_eq!(
        schemas["RetryPolicy"]["properties"]["initial_backoff"]["default"],
        "200ms"
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_follow_the_scheduler() {
    let server = Server::start(Some(TOKEN)).await;
    let before = server.get("/metrics").await;
    assert_eq!(before.status(), StatusCode::OK);
    assert!(
        before.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let before = prometheus_samples(&before.text().await.unwrap());
    assert_eq!(before["swarm_tasks_succeeded_total"], 0.0);
    assert_eq!(before["swarm_agents"], 5.0);
    assert_eq!(before["swarm_allocation_latency_seconds_count"], 0.0);

    // An agent whose first attempt crashes it: its supervisor restarts it (a fresh instance
    // from its factory) and the attempt runs again there.
    let crashed = Arc::new(AtomicBool::new(false));
    let flag = crashed.clone();
    let crash = server
        .swarm
        .register_agent(
            reg("crash-0", &["crash"], 1),
            AgentFactory::new(move || {
                let flag = flag.clone();
                FnAgent::new(move |_task, _ctx| {
                    let first = !flag.swap(true, Ordering::SeqCst);
                    async move {
                        assert!(!first, "the first attempt crashes the agent");
                        TaskOutcome::success(json!("second time"))
                    }
                })
            }),
        )
        .await
        .unwrap();
    let crashing = server
        .submit_ok(&json!({ "goal": "crash", "tasks": [{ "id": "c", "capability": "crash" }] }))
        .await;
    let view = server.wait(&crashing).await;
    assert_eq!(view.tasks[0].attempts, 2, "{view:#?}");
    assert!(crashed.load(Ordering::SeqCst));
    let judged = server
        .submit_ok(&json!({ "goal": "judge", "tasks": [{ "id": "j", "capability": "judge" }] }))
        .await;
    let mut judged = server.events(&judged, None).await;
    until(&mut judged, "task_in_review").await;

    let id = server.submit_ok(&two_step()).await;
    let held = server
        .submit_ok(&json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }, { "id": "q", "capability": "gate" }] }))
        .await;
    server.wait(&id).await;
    let mut stream = server.events(&held, None).await;
    until(&mut stream, "task_started").await;
    until(&mut stream, "task_started").await;

    let response = server.get("/metrics").await;
    let text = response.text().await.unwrap();
    let after = prometheus_samples(&text);
    // The two steps and the crashing task (on its second attempt).
    assert_eq!(after["swarm_tasks_succeeded_total"], 3.0, "{text}");
    // Two attempts of `c`, one of `j`, two steps, `h` and `q`.
    assert_eq!(after["swarm_allocations_total"], 7.0, "{text}");
    assert_eq!(after["swarm_objectives_ended_total"], 2.0, "{text}");
    assert_eq!(after["swarm_objectives_running"], 2.0, "{text}");
    assert_eq!(after["swarm_tasks_running"], 2.0, "{text}");
    assert_eq!(after["swarm_tasks_in_review"], 1.0, "{text}");
    assert_eq!(after["swarm_tasks_failed_total"], 0.0, "{text}");
    // Every allocation is in the latency histogram, whose buckets are cumulative.
    assert!(text.contains("# TYPE swarm_allocation_latency_seconds histogram"));
    assert_eq!(
        after["swarm_allocation_latency_seconds_count"], 7.0,
        "{text}"
    );
    assert_eq!(
        after["swarm_allocation_latency_seconds_bucket{le=\"+Inf\"}"], 7.0,
        "{text}"
    );
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(series, count)| {
            let le = series
                .strip_prefix("swarm_allocation_latency_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((le.parse().unwrap_or(f64::INFINITY), *count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 17, "{text}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{text}");
    assert!(
        after["swarm_allocation_latency_seconds_sum"] > 0.0,
        "{text}"
    );
    // The restart shows, for the crashing agent only.
    let crash_labels = format!("agent=\"{}\",name=\"crash-0\"", crash.id);
    assert_eq!(
        after[&format!("swarm_agent_restarts_total{{{crash_labels}}}")],
        1.0,
        "{text}"
    );
    assert_eq!(
        after[&format!("swarm_agent_health{{{crash_labels},health=\"up\"}}")],
        1.0,
        "{text}"
    );
    assert_eq!(server.agent_named("crash-0").await["restarts"], 1);
    assert_eq!(server.agent_named("work-0").await["restarts"], 0);
    let hold = server
        .swarm
        .registry()
        .snapshots()
        .into_iter()
        .find(|a| a.descriptor.name == "hold-0")
        .unwrap()
        .descriptor
        .id;
    assert_eq!(
        after[&format!("swarm_agent_in_flight{{agent=\"{hold}\",name=\"hold-0\"}}")],
        1.0,
        "{text}"
    );
    assert_eq!(
        after[&format!("swarm_agent_health{{agent=\"{hold}\",name=\"hold-0\",health=\"up\"}}")],
        1.0,
        "{text}"
    );
    server.gate.add_permits(1);
    server.finish().await;
}

/// A result fenced for an attempt that ended reads in the chain of work with how it ended and
/// why it did not commit, never with an output, and counts in `swarm_fenced_results_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_result_shows_in_the_chain_and_the_metrics() {
    let server = Server::start(Some(TOKEN)).await;
    assert_eq!(server.metrics().await["swarm_fenced_results_total"], 0.0);
    let id = server.submit_ok(&two_step()).await;
    let view = server.wait(&id).await;
    let (task, agent) = (view.tasks[0].id, view.tasks[0].agent.unwrap());
    server
        .swarm
        .record_fenced(FencedResult {
            objective: view.id,
            task,
            attempt: 1,
            agent,
            outcome: OutcomeSummary::Spawned { tasks: 2 },
        })
        .await
        .unwrap();
    let chain = server.chain(&id).await;
    let fenced: Vec<&Value> = chain
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "result_fenced")
        .collect();
    assert_eq!(fenced.len(), 1, "{chain:#}");
    let mut fenced = fenced[0].clone();
    let seq = fenced.as_object_mut().unwrap().remove("seq").unwrap();
    let at_ms = fenced.as_object_mut().unwrap().remove("at_ms").unwrap();
    assert!(seq.as_u64().is_some() && at_ms.as_u64().is_some());
    assert_eq!(
        fenced,
        json!({
            "type": "result_fenced",
            "objective": id,
            "task": task.to_string(),
            "attempt": 1,
            "agent": agent.to_string(),
            "outcome": { "status": "spawned", "tasks": 2 },
            "reason": "attempt 1 is not running: the task is succeeded",
        })
    );
    assert_eq!(server.view(&id).await, serde_json::to_value(&view).unwrap());
    assert_eq!(server.metrics().await["swarm_fenced_results_total"], 1.0);
    // The document declares the event (the contract test checks a chain holding one).
    let doc = server.get_text("/openapi.json").await;
    assert!(doc.contains("\"result_fenced\"") && doc.contains("\"OutcomeSummary\""));
    server.finish().await;
}
