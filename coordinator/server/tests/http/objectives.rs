//! Objectives over HTTP: submission (202 once durable, idempotent under its key), the
//! event streams of one objective and of the whole swarm (history, then live, resumable after
//! `Last-Event-ID`), listing with filters and a cursor, cancellation, and streams ending at
//! shutdown.

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::PATIENCE;
use crate::common::api::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_answers_202_once_durable_and_is_idempotent() {
    let server = Server::start(None).await;
    let response = server.submit(&two_step(), Some("order-1")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/objectives/{id}"));
    assert_eq!(body["links"]["self"], location);
    assert_eq!(body["links"]["events"], format!("{location}/events"));
    assert_eq!(body["links"]["chain"], format!("{location}/chain"));

    // Durable when acknowledged: the log already holds the submission.
    let chain = server.swarm.chain(id.parse().unwrap()).await.unwrap();
    assert!(matches!(
        chain[0].event,
        swarm_protocol::Event::ObjectiveSubmitted { .. }
    ));

    // The same key and body: the same answer.
    let again = server.submit(&two_step(), Some("order-1")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, body);

    // The same key, another body: a conflict naming the header.
    let mut other = two_step();
    other["goal"] = json!("something else");
    let conflict = problem(
        server.submit(&other, Some("order-1")).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(conflict["field"], "Idempotency-Key");
    assert!(conflict["detail"].as_str().unwrap().contains("order-1"));

    // Run to the end (the stream ends with the objective), then read it.
    let events = server.all_events(&id, None).await;
    assert_eq!(events.last().unwrap().kind, "objective_succeeded");
    let view = server.view(&id).await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["tasks"][1]["output"], json!({ "sum": 5 }));
    let chain = server.chain(&id).await;
    assert_eq!(chain.as_array().unwrap().len(), events.len());

    // After a restart the objective is still there under its id.
    let dir = server.finish().await;
    let mut options = swarm_store::SqliteOptions::new(dir.path());
    options.lock = false;
    let store = swarm_store::SqliteStore::open(options).await.unwrap();
    use swarm_store::EventStore as _;
    let logged = store.read_objective(id.parse().unwrap()).await.unwrap();
    assert_eq!(logged.len(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_history_then_live_in_order_and_resume_after_last_event_id() {
    let server = Server::start(None).await;
    let id = server
        .submit_ok(&json!({
            "goal": "wait for the gate",
            "tasks": [
                { "id": "gate", "capability": "gate" },
                { "id": "after", "capability": "echo", "input": "x", "depends_on": ["gate"] }
            ]
        }))
        .await;
    // History (submitted, ready, started) and then live events: the gate opens only once the
    // stream has shown the start, so what follows can only come from the live feed.
    let mut stream = server.events(&id, None).await;
    let mut seen = until(&mut stream, "task_started").await;
    server.gate.add_permits(1);
    while let Some(event) = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap() {
        seen.push(event);
    }
    assert_eq!(seen.first().unwrap().kind, "objective_submitted");
    assert_eq!(seen.last().unwrap().kind, "objective_succeeded");
    for pair in seen.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "out of order: {pair:#?}");
    }
    // Complete: exactly the objective's chain, each event's data is its record.
    let chain = server.chain(&id).await;
    let chain = chain.as_array().unwrap();
    assert_eq!(chain.len(), seen.len());
    for (event, record) in seen.iter().zip(chain) {
        assert_eq!(&event.data, record);
        assert_eq!(event.seq, record["seq"].as_u64().unwrap());
        assert_eq!(event.kind, record["type"].as_str().unwrap());
    }

    // A reconnect gets only what follows its Last-Event-ID, and ends.
    let cut = seen[2].seq;
    let rest = server.all_events(&id, Some(cut)).await;
    assert_eq!(rest, seen[3..].to_vec());
    // After the terminal event there is nothing more, and the stream ends at once.
    let nothing = server.all_events(&id, Some(seen.last().unwrap().seq)).await;
    assert!(nothing.is_empty());
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_objectives_filters_by_status_and_pages_with_a_cursor() {
    let server = Server::start(None).await;
    let echo = |n: u32| json!({ "goal": format!("echo {n}"), "tasks": [{ "id": "e", "capability": "echo", "input": n }] });
    let mut done = Vec::new();
    for n in 0..3 {
        let response = server.submit(&echo(n), (n == 0).then_some("first")).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        done.push(body["id"].as_str().unwrap().to_owned());
    }
    let held = server.submit_ok(&hold_forever()).await;
    for id in &done {
        server.wait(id).await;
    }

    let all = server.get_json("/v1/objectives").await;
    assert_eq!(all["next"], Value::Null);
    let listed = all["objectives"].as_array().unwrap();
    let ids: Vec<&str> = listed.iter().map(|o| o["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = done.iter().chain([&held]).map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let first = listed.iter().find(|o| o["id"] == done[0].as_str()).unwrap();
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["idempotency_key"], "first");
    assert!(first["submitted_at_ms"].as_u64().unwrap() > 0);
    assert!(first["ended_at_ms"].as_u64().unwrap() >= first["submitted_at_ms"].as_u64().unwrap());
    let hold = listed.iter().find(|o| o["id"] == held.as_str()).unwrap();
    assert_eq!(hold["status"], "running");
    assert_eq!(hold["ended_at_ms"], Value::Null);
    assert_eq!(hold["idempotency_key"], Value::Null);

    let running = server.get_json("/v1/objectives?status=running").await;
    assert_eq!(running["objectives"].as_array().unwrap().len(), 1);
    assert_eq!(running["objectives"][0]["id"], held.as_str());
    let succeeded = server
        .get_json("/v1/objectives?status=succeeded&limit=500")
        .await;
    assert_eq!(succeeded["objectives"].as_array().unwrap().len(), 3);

    // Pages of three: `next` is the cursor, absent on the last page.
    let page = server.get_json("/v1/objectives?limit=3").await;
    assert_eq!(page["objectives"].as_array().unwrap().len(), 3);
    let next = page["next"].as_str().unwrap();
    assert_eq!(next, expected[2]);
    let rest = server
        .get_json(&format!("/v1/objectives?limit=3&after={next}"))
        .await;
    assert_eq!(rest["objectives"].as_array().unwrap().len(), 1);
    assert_eq!(rest["objectives"][0]["id"], expected[3]);
    assert_eq!(rest["next"], Value::Null);

    for (query, field) in [
        ("status=review", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("after=nope", "after"),
        ("sort=id", "sort"),
    ] {
        let response = server.get(&format!("/v1/objectives?{query}")).await;
        problem_at(response, StatusCode::BAD_REQUEST, field).await;
    }
    server.finish().await;
}

/// `GET /v1/events` follows every objective from now on, and resumes after `Last-Event-ID`
/// from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_events_follow_every_objective_and_resume_from_the_log() {
    let server = Server::start(None).await;
    let before = server.submit_ok(&two_step()).await;
    server.wait(&before).await;
    // Opened after the first objective ended: none of its events come.
    let mut all = server.stream("/v1/events", None).await;
    let first = server.submit_ok(&two_step()).await;
    let second = server.submit_ok(&two_step()).await;
    let mut seen = until(&mut all, "objective_succeeded").await;
    seen.extend(until(&mut all, "objective_succeeded").await);
    let objectives: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter_map(|e| e.data["objective"].as_str())
        .collect();
    assert_eq!(
        objectives,
        [first.as_str(), second.as_str()].into_iter().collect()
    );
    assert!(
        seen.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "{seen:#?}"
    );

    // Resuming after the first event sent gives the rest again, from the log.
    let mut again = server.stream("/v1/events", Some(seen[0].seq)).await;
    for expected in &seen[1..] {
        let event = tokio::time::timeout(PATIENCE, again.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&event, expected);
    }
    drop((all, again));
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_objective_and_its_stream() {
    let server = Server::start(None).await;
    let id = server.submit_ok(&hold_forever()).await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;
    let response = server.cancel(&id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");
    let rest = until(&mut stream, "objective_cancelled").await;
    assert!(rest.iter().any(|e| e.kind == "task_cancelled"));
    ends(&mut stream).await;
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    let server = Server::start(None).await;
    let id = server.submit_ok(&hold_forever()).await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;
    // The stream is open on a running objective; stopping the server must not wait for it.
    server.finish().await;
    ends(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_context_is_recorded_with_the_objective_and_an_invalid_one_ignored() {
    let server = Server::start(None).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let submit = |traceparent: &'static str| {
        server
            .request(reqwest::Method::POST, "/v1/objectives")
            .json(&two_step())
            .header("traceparent", traceparent)
            .header("tracestate", "congo=t61rcWkgMzE")
            .send()
    };
    let traced = submit(traceparent).await.unwrap();
    assert_eq!(traced.status(), StatusCode::ACCEPTED);
    let traced: Value = traced.json().await.unwrap();
    let traced = traced["id"].as_str().unwrap().to_owned();
    // W3C Trace Context: a receiver that cannot parse `traceparent` starts a new trace.
    let untraced = submit("00-not-a-trace-01").await.unwrap();
    assert_eq!(untraced.status(), StatusCode::ACCEPTED);
    let untraced: Value = untraced.json().await.unwrap();
    let untraced = untraced["id"].as_str().unwrap().to_owned();
    for id in [&traced, &untraced] {
        let events = server.all_events(id, None).await;
        assert_eq!(events.last().unwrap().kind, "objective_succeeded");
    }

    // The context is in the log with the submission, so a restart continues the trace.
    let dir = server.finish().await;
    let mut options = swarm_store::SqliteOptions::new(dir.path());
    options.lock = false;
    let store = swarm_store::SqliteStore::open(options).await.unwrap();
    use swarm_store::EventStore as _;
    let submitted = |events: Vec<swarm_protocol::EventRecord>| match &events[0].event {
        swarm_protocol::Event::ObjectiveSubmitted { trace, .. } => trace.clone(),
        other => panic!("not a submission: {other:?}"),
    };
    let logged = store.read_objective(traced.parse().unwrap()).await.unwrap();
    let trace = submitted(logged).expect("the trace context was recorded");
    assert_eq!(trace.traceparent, traceparent);
    assert_eq!(trace.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    let logged = store
        .read_objective(untraced.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(submitted(logged), None);
}
