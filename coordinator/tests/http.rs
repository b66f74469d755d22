//! The HTTP API over real loopback HTTP: a durable swarm in a temporary directory, the server
//! on an ephemeral port, a reqwest client. Tests wait on the event stream's end, never on
//! sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{PATIENCE, reg};
use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use swarm_agents::sim::{SimConfig, SimServer};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent, WorkAgent};
use swarm_coordinator::config::HookConfig;
use swarm_coordinator::http::{ApiConfig, ROUTES};
use swarm_coordinator::triggers::{Environment, Hooks};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{Event, FailureKind, Health, TaskOutcome};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

const TOKEN: &str = "s3cret-token";

/// A server on 127.0.0.1:0 over a durable swarm with agents of capability `work`, `echo`,
/// `judge` (its output always needs review), `gate` (waits for a permit of `gate`) and `hold`
/// (never finishes).
struct Server {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
    swarm: Arc<Swarm>,
    gate: Arc<Semaphore>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

async fn start(token: Option<&str>) -> Server {
    start_with(ApiConfig {
        token: token.map(str::to_owned),
        ..ApiConfig::default()
    })
    .await
}

async fn start_with(config: ApiConfig) -> Server {
    start_in(tempfile::tempdir().unwrap(), config).await
}

/// A server whose event log is in `dir` (a restart when a server used it before).
async fn start_in(dir: tempfile::TempDir, config: ApiConfig) -> Server {
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    swarm
        .register_agent(
            reg("work-0", &["work"], 8),
            AgentFactory::shared(WorkAgent::new()),
        )
        .await
        .unwrap();
    swarm
        .register_agent(reg("echo-0", &["echo"], 8), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let judge = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::failure(FailureKind::InvalidOutput, "the answer does not parse")
    });
    swarm
        .register_agent(reg("judge-0", &["judge"], 8), AgentFactory::shared(judge))
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let gated = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            TaskOutcome::success(json!("through"))
        }
    });
    swarm
        .register_agent(reg("gate-0", &["gate"], 8), AgentFactory::shared(gated))
        .await
        .unwrap();
    let hold = FnAgent::new(|_task, _ctx| std::future::pending::<TaskOutcome>());
    swarm
        .register_agent(reg("hold-0", &["hold"], 8), AgentFactory::shared(hold))
        .await
        .unwrap();

    let swarm = Arc::new(swarm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = config.token.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(swarm_coordinator::http::serve(
        swarm.clone(),
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        client: reqwest::Client::new(),
        token,
        swarm,
        gate,
        stop,
        served,
        dir,
    }
}

impl Server {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn submit(&self, objective: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = self.request(Method::POST, "/v1/objectives").json(objective);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    async fn submit_ok(&self, objective: &Value) -> String {
        let response = self.submit(objective, None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    async fn get_text(&self, path: &str) -> String {
        let response = self.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let response = self.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// The objective's event stream, from after `last_event_id`.
    async fn events(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> impl Stream<Item = Sse> + Unpin + use<> {
        self.stream(&format!("/v1/objectives/{id}/events"), last_event_id)
            .await
    }

    /// The event stream at `path`, from after `last_event_id`.
    async fn stream(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> impl Stream<Item = Sse> + Unpin + use<> {
        let mut request = self.request(Method::GET, path);
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Box::pin(response.bytes_stream().eventsource().map(|event| {
            let event = event.unwrap();
            Sse {
                seq: event.id.parse().unwrap(),
                kind: event.event,
                data: serde_json::from_str(&event.data).unwrap(),
            }
        }))
    }

    /// Every event of the stream, until it ends (after the objective's terminal event).
    async fn all_events(&self, id: &str, last_event_id: Option<u64>) -> Vec<Sse> {
        let stream = self.events(id, last_event_id).await;
        tokio::time::timeout(PATIENCE, stream.collect::<Vec<_>>())
            .await
            .expect("the event stream did not end")
    }

    /// Stops the server and the swarm, cleanly.
    async fn finish(self) -> tempfile::TempDir {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.served)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
        let swarm = Arc::try_unwrap(self.swarm)
            .ok()
            .expect("the server still holds the swarm");
        assert!(swarm.failure().is_none());
        swarm.shutdown().await.unwrap();
        self.dir
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    seq: u64,
    kind: String,
    data: Value,
}

/// Waits for the next event of `kind`, returning every event up to it.
async fn until(stream: &mut (impl Stream<Item = Sse> + Unpin), kind: &str) -> Vec<Sse> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {kind}; saw {seen:#?}"))
            .unwrap_or_else(|| panic!("the stream ended before {kind}; saw {seen:#?}"));
        let found = event.kind == kind;
        seen.push(event);
        if found {
            return seen;
        }
    }
}

async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:swarm:problem:")
    );
    assert!(body["title"].is_string());
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

fn two_step() -> Value {
    json!({
        "goal": "add up",
        "tasks": [
            { "id": "a", "capability": "work", "input": { "n": 2 } },
            { "id": "b", "capability": "work", "input": { "n": 3 }, "depends_on": ["a"] }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_answers_202_once_durable_and_is_idempotent() {
    let server = start(None).await;
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
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["tasks"][1]["output"], json!({ "sum": 5 }));
    let chain = server.get_json(&format!("/v1/objectives/{id}/chain")).await;
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
    let server = start(None).await;
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
    let chain = server.get_json(&format!("/v1/objectives/{id}/chain")).await;
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
    let server = start(None).await;
    let echo = |n: u32| json!({ "goal": format!("echo {n}"), "tasks": [{ "id": "e", "capability": "echo", "input": n }] });
    let mut done = Vec::new();
    for n in 0..3 {
        let response = server.submit(&echo(n), (n == 0).then_some("first")).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        done.push(body["id"].as_str().unwrap().to_owned());
    }
    let held = server
        .submit_ok(&json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }] }))
        .await;
    for id in &done {
        server
            .swarm
            .wait(id.parse().unwrap(), PATIENCE)
            .await
            .unwrap();
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
        let response = server
            .request(Method::GET, &format!("/v1/objectives?{query}"))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["field"], field, "{query}");
    }
    server.finish().await;
}

/// `GET /v1/tasks` lists tasks across objectives by status, filtered by objective, capability
/// and agent, oldest or newest first, a page at a time with `next` as the cursor and `total`
/// counting every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tasks_by_status_across_objectives_in_pages() {
    let server = start(None).await;
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
        let response = server
            .request(Method::POST, &format!("/v1/objectives/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let cancelled = server.get_json("/v1/tasks?status=cancelled").await;
    assert_eq!(cancelled["total"], 6);
    server.finish().await;
}

/// `GET /v1/events` follows every objective from now on, and resumes after `Last-Event-ID`
/// from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_events_follow_every_objective_and_resume_from_the_log() {
    let server = start(None).await;
    let before = server.submit_ok(&two_step()).await;
    server
        .swarm
        .wait(before.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
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
    let server = start(None).await;
    let id = server
        .submit_ok(&json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }] }))
        .await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;
    let response = server
        .request(Method::POST, &format!("/v1/objectives/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");
    let rest = until(&mut stream, "objective_cancelled").await;
    assert!(rest.iter().any(|e| e.kind == "task_cancelled"));
    assert!(
        tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap()
            .is_none()
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_approve_and_reject_round_trip() {
    let server = start(None).await;
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
        let response = server.request(Method::GET, bad).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert!(body["field"].is_string(), "{bad}: {body}");
    }
    let response = server
        .request(Method::POST, &format!("/v1/tasks/{task}/approve"))
        .json(&json!({ "output": "edited" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    until(&mut stream, "objective_succeeded").await;
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(view["tasks"][0]["output"], "edited");
    assert_eq!(view["tasks"][1]["status"], "succeeded");
    let queue = server.get_json("/v1/tasks?status=review").await;
    assert_eq!(queue["tasks"], json!([]), "approved tasks leave the queue");
    assert_eq!(server.swarm.stats().await.unwrap().tasks_in_review, 0);
    assert_eq!(queue["total"], 0);

    // The task is no longer in review: a second decision conflicts.
    let again = server
        .request(Method::POST, &format!("/v1/tasks/{task}/approve"))
        .send()
        .await
        .unwrap();
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
        .request(Method::POST, &format!("/v1/tasks/{task}/reject"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let missing_reason = problem(missing_reason, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        missing_reason["detail"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let response = server
        .request(Method::POST, &format!("/v1/tasks/{task}/reject"))
        .json(&json!({ "reason": "wrong answer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    until(&mut stream, "objective_failed").await;
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(view["status"], "failed");
    let stats = server.swarm.stats().await.unwrap();
    assert_eq!((stats.tasks_in_review, stats.tasks_failed), (0, 1));
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_problems_naming_the_field() {
    let server = start(None).await;
    let post = |body: &'static str| {
        server
            .request(Method::POST, "/v1/objectives")
            .header("content-type", "application/json")
            .body(body)
    };

    let malformed = post(r#"{"goal": "x", "tasks": ["#).send().await.unwrap();
    let malformed = problem(malformed, StatusCode::BAD_REQUEST).await;
    assert!(malformed["detail"].as_str().unwrap().contains("line 1"));

    let wrong_type = post(r#"{"goal": "x", "priority": "high"}"#)
        .send()
        .await
        .unwrap();
    let wrong_type = problem(wrong_type, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(wrong_type["field"], "priority");

    let unknown =
        post(r#"{"goal": "x", "tasks": [{"id": "a", "capability": "work", "colour": 1}]}"#)
            .send()
            .await
            .unwrap();
    let unknown = problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        unknown["detail"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );
    assert!(
        unknown["field"].as_str().unwrap().starts_with("tasks[0]"),
        "{unknown}"
    );

    let missing = post(r#"{"tasks": []}"#).send().await.unwrap();
    let missing = problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(missing["detail"].as_str().unwrap().contains("goal"));

    let no_type = server
        .request(Method::POST, "/v1/objectives")
        .body(two_step().to_string())
        .send()
        .await
        .unwrap();
    let no_type = problem(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(no_type["field"], "Content-Type");

    let unknown_capability = server
        .submit(
            &json!({ "goal": "x", "tasks": [
                { "id": "a", "capability": "work" },
                { "id": "b", "capability": "teleport" }
            ] }),
            None,
        )
        .await;
    let unknown_capability = problem(unknown_capability, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(unknown_capability["field"], "tasks[1].capability");
    assert!(
        unknown_capability["detail"]
            .as_str()
            .unwrap()
            .contains("teleport")
    );

    let cycle = server
        .submit(
            &json!({ "goal": "x", "tasks": [
                { "id": "a", "capability": "work", "depends_on": ["b"] },
                { "id": "b", "capability": "work", "depends_on": ["a"] }
            ] }),
            None,
        )
        .await;
    let cycle = problem(cycle, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(cycle["detail"].as_str().unwrap().contains("cycle"));
    assert!(cycle["field"].as_str().unwrap().ends_with("depends_on"));

    // A goal alone needs a planner (an agent with capability `plan`); none has registered.
    let no_planner = server.submit(&json!({ "goal": "plan it" }), None).await;
    let no_planner = problem(no_planner, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(no_planner["field"], "tasks");
    assert!(
        no_planner["detail"].as_str().unwrap().contains("planner"),
        "{no_planner}"
    );

    let bad_key = server.submit(&two_step(), Some(&"k".repeat(300))).await;
    let bad_key = problem(bad_key, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(bad_key["field"], "Idempotency-Key");

    for path in [
        "/v1/objectives/not-a-uuid",
        "/v1/objectives/not-a-uuid/chain",
        "/v1/objectives/not-a-uuid/events",
    ] {
        let response = server.request(Method::GET, path).send().await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["field"], "id");
        assert!(body["detail"].as_str().unwrap().contains("`id`"));
    }
    let bad_task = server
        .request(Method::POST, "/v1/tasks/xyz/approve")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(bad_task, StatusCode::BAD_REQUEST).await["field"],
        "id"
    );

    let nobody = swarm_protocol::ObjectiveId::new();
    for (method, path) in [
        (Method::GET, format!("/v1/objectives/{nobody}")),
        (Method::GET, format!("/v1/objectives/{nobody}/chain")),
        (Method::GET, format!("/v1/objectives/{nobody}/events")),
        (Method::POST, format!("/v1/objectives/{nobody}/cancel")),
        (Method::POST, "/v1/tasks/T999999/approve".to_owned()),
    ] {
        let response = server.request(method, &path).send().await.unwrap();
        let body = problem(response, StatusCode::NOT_FOUND).await;
        assert!(
            body["detail"].as_str().unwrap().contains("not found"),
            "{path}: {body}"
        );
    }
    let bad_last = server
        .request(Method::GET, &format!("/v1/objectives/{nobody}/events"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(bad_last, StatusCode::BAD_REQUEST).await["field"],
        "Last-Event-ID"
    );

    let no_route = server
        .request(Method::GET, "/v1/nothing")
        .send()
        .await
        .unwrap();
    problem(no_route, StatusCode::NOT_FOUND).await;
    let wrong_method = server
        .request(Method::DELETE, "/v1/objectives")
        .send()
        .await
        .unwrap();
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let server = start_with(ApiConfig {
        body_limit_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let big = json!({ "goal": "x".repeat(8192), "tasks": [{ "id": "a", "capability": "work" }] });
    let response = server.submit(&big, None).await;
    let body = problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(body["detail"].as_str().unwrap().contains("4096"));

    // The default is 1 MiB.
    assert_eq!(ApiConfig::default().body_limit_bytes, 1024 * 1024);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_probes_needs_the_token() {
    let server = start(Some(TOKEN)).await;
    let id = server.submit_ok(&two_step()).await;
    let anonymous = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let path = route.path.replace(
            "{id}",
            if route.path.starts_with("/v1/tasks") {
                "T1"
            } else if route.path.starts_with("/v1/agents") {
                "A999"
            } else {
                &id
            },
        );
        // A listing route is called with the query it needs.
        let path = if route.path == "/v1/tasks" {
            format!("{path}?status=review")
        } else {
            path
        };
        let url = format!("{}{path}", server.base);
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        if route.is_public() {
            let response = anonymous
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            if method == Method::GET {
                assert_eq!(response.status(), StatusCode::OK, "{path}");
            } else {
                // The login form's POST, without a token: answered, not refused.
                assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            }
            continue;
        }
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
            let mut request = anonymous.request(method.clone(), &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{} {path}",
                route.method
            );
            let body = problem(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(body["field"], "Authorization");
        }
        // With the token the route is reached (whatever it then answers).
        let response = server
            .request(method.clone(), &path)
            .json(&json!({ "reason": "r" }))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        if method == Method::GET && !path.ends_with("/events") {
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        checked += 1;
    }
    assert_eq!(checked, ROUTES.iter().filter(|r| !r.is_public()).count());
    assert!(checked >= 8);
    // Paths the router does not declare are refused before anything else.
    let unknown = anonymous
        .get(format!("{}/v1/secret", server.base))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::UNAUTHORIZED).await;
    server.finish().await;
}

/// `GET /openapi.json` is an OpenAPI 3.1 document that documents every route of `ROUTES` with
/// its method (and no other), so a route added without documentation fails here; its
/// references all resolve and its operation ids are unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_route() {
    let server = start(Some(TOKEN)).await;
    let response = server
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
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
async fn probes_and_agents() {
    let server = start(None).await;
    let health = server
        .request(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = server.request(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));

    let agents = server.get_json("/v1/agents").await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["work-0", "echo-0", "judge-0", "gate-0", "hold-0"]);
    assert_eq!(agents[0]["health"], "up");
    assert_eq!(agents[0]["in_flight"], 0);
    assert_eq!(agents[0]["capabilities"], json!(["work"]));
    assert_eq!(agents[0]["restarts"], 0);
    // A plug-in without a breaker or a limiter says nothing about them.
    assert!(agents[0].get("breaker").is_none() && agents[0].get("limiter").is_none());
    server.finish().await;
}

/// The next committed event matching `pred`, from a subscription taken before it could happen.
async fn next_event(
    feed: &mut tokio::sync::broadcast::Receiver<Arc<swarm_protocol::EventRecord>>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    loop {
        let record = tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
        if pred(&record.event) {
            return record.event.clone();
        }
    }
}

/// The agent of `name` in `GET /v1/agents`.
async fn agent_named(server: &Server, name: &str) -> Value {
    let agents = server.get_json("/v1/agents").await;
    agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no agent {name} in {agents:#}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_show_an_open_breaker_and_their_limiter() {
    let server = start(None).await;
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let mut feed = server.swarm.subscribe().unwrap();
    // Five 500s in a row; the breaker opens at the third and stays open for an hour.
    let model = json!({
        "name": "failing",
        "provider": "openai",
        "base_url": sim.base_url(),
        "model": "sim:fail=500x5",
        "capabilities": ["write"],
        "concurrency": 1,
        "rpm": 100,
        "tpm": 100000,
        "max_tokens": 50,
        "breaker": { "consecutive_failures": 3, "cool_down": "1h" }
    });
    let response = server
        .request(Method::POST, "/v1/agents")
        .json(&model)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id: swarm_protocol::AgentId = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let closed = agent_named(&server, "failing").await;
    assert_eq!(closed["breaker"], json!({ "state": "closed" }));
    assert_eq!(
        closed["limiter"]["requests"],
        json!({ "per_minute": 100, "used": 0 })
    );

    server
        .submit_ok(&json!({ "goal": "write", "tasks": [{
            "id": "w", "capability": "write", "input": "a haiku",
            "retry": { "max_attempts": 10, "initial_backoff": "1ms", "max_backoff": "5ms" }
        }] }))
        .await;
    next_event(&mut feed, "the breaker opening", |e| {
        matches!(e, Event::AgentHealthChanged { agent, health: Health::Down, .. } if *agent == id)
    })
    .await;

    let open = agent_named(&server, "failing").await;
    assert_eq!(open["health"], "down", "{open:#}");
    assert_eq!(open["breaker"]["state"], "open", "{open:#}");
    let probe_in_ms = open["breaker"]["probe_in_ms"].as_u64().unwrap();
    assert!(
        probe_in_ms > 3_500_000 && probe_in_ms <= 3_600_000,
        "{open:#}"
    );
    // Three calls reached the model, within the last minute; none waited for quota.
    let limiter = &open["limiter"];
    assert_eq!(
        limiter["requests"],
        json!({ "per_minute": 100, "used": 3 }),
        "{open:#}"
    );
    assert_eq!(limiter["tokens"]["per_minute"], 100000, "{open:#}");
    assert!(
        limiter["tokens"]["used"].as_u64().unwrap() >= 3 * 50,
        "{open:#}"
    );
    assert_eq!(limiter["granted"], 3, "{open:#}");
    assert_eq!(limiter["waits"], 0, "{open:#}");
    assert_eq!(limiter["waiting"], 0, "{open:#}");
    assert_eq!(open["restarts"], 0, "{open:#}");
    assert_eq!(sim.stats().total(), 3);

    server.finish().await;
    sim.shutdown().await.unwrap();
}

/// The samples of a Prometheus text exposition, keyed `name{labels}`; panics on a line that is
/// not a comment, blank, or `name{labels} value`.
fn prometheus_samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {line}"
            );
            if series.contains('{') {
                assert!(series.ends_with('}'), "bad labels in {line}");
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            (series.to_owned(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_and_follow_the_scheduler() {
    let server = start(Some(TOKEN)).await;
    let before = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
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
    let view = server
        .swarm
        .wait(crashing.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
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
    server
        .swarm
        .wait(id.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    let mut stream = server.events(&held, None).await;
    until(&mut stream, "task_started").await;
    until(&mut stream, "task_started").await;

    let response = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
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
    assert_eq!(agent_named(&server, "crash-0").await["restarts"], 1);
    assert_eq!(agent_named(&server, "work-0").await["restarts"], 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_agents_are_registered_and_removed_while_serving() {
    let server = start(None).await;
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let model = json!({
        "name": "model-1",
        "provider": "openai",
        "base_url": sim.base_url(),
        "model": "m",
        "capabilities": ["write"],
        "concurrency": 2,
        "breaker": { "consecutive_failures": 3, "cool_down": "10s" }
    });
    let response = server
        .request(Method::POST, "/v1/agents")
        .json(&model)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let descriptor: Value = response.json().await.unwrap();
    let id = descriptor["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/agents/{id}"));
    assert_eq!(descriptor["name"], "model-1");
    assert_eq!(descriptor["capabilities"], json!(["write"]));
    assert_eq!(descriptor["max_concurrency"], 2);
    let agents = server.get_json("/v1/agents").await;
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );

    // It takes work at once.
    let objective = server
        .submit_ok(&json!({ "goal": "write", "tasks": [{ "id": "w", "capability": "write", "input": "a haiku" }] }))
        .await;
    let view = server
        .swarm
        .wait(objective.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(view.status).unwrap(),
        "succeeded",
        "{view:#?}"
    );

    // A second agent of the same name, a missing key variable, an unknown field.
    let again = server
        .request(Method::POST, "/v1/agents")
        .json(&model)
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut keyed = model.clone();
    keyed["name"] = json!("model-2");
    keyed["api_key_env"] = json!("SWARM_HTTP_TEST_KEY_NEVER_SET");
    let response = server
        .request(Method::POST, "/v1/agents")
        .json(&keyed)
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "api_key_env");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("SWARM_HTTP_TEST_KEY_NEVER_SET")
    );
    let mut unknown = model.clone();
    unknown["name"] = json!("model-3");
    unknown["api_key"] = json!("sk-inline");
    let response = server
        .request(Method::POST, "/v1/agents")
        .json(&unknown)
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(!body.to_string().contains("sk-inline"));
    assert_eq!(
        server
            .get_json("/v1/agents")
            .await
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // Removed: it drains (nothing runs on it) and leaves; then a second removal is a 404.
    let mut feed = server.swarm.subscribe().unwrap();
    let delete = |id: String| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{id}"))
            .send()
    };
    let response = delete(id.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let agent: swarm_protocol::AgentId = id.parse().unwrap();
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let agents = server.get_json("/v1/agents").await;
    assert!(
        !agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    let body = problem(delete(id).await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(body["field"], "id");
    let body = problem(
        delete("nope".into()).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "id");

    server.finish().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drains_a_running_attempt_then_removes_the_agent() {
    let server = start(None).await;
    let mut feed = server.swarm.subscribe().unwrap();
    let gate = agent_named(&server, "gate-0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent: swarm_protocol::AgentId = gate.parse().unwrap();
    let id = server
        .submit_ok(&json!({ "goal": "slow", "tasks": [{ "id": "g", "capability": "gate" }] }))
        .await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;

    let delete = |query: &str| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{gate}{query}"))
            .send()
    };
    let response = delete("?grace=1m").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "id": gate.as_str(), "health": "draining", "grace": "1m" })
    );
    // Recorded (and durable) before the answer.
    next_event(&mut feed, "draining", |e| {
        matches!(e, Event::AgentHealthChanged { agent: a, health: Health::Draining, .. } if *a == agent)
    })
    .await;
    // Still there, draining, with its attempt; asking again changes nothing.
    let draining = agent_named(&server, "gate-0").await;
    assert_eq!(draining["health"], "draining", "{draining:#}");
    assert_eq!(draining["in_flight"], 1, "{draining:#}");
    let again = delete("").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    // Nothing new is given to it: another task of its capability waits in the queue.
    let waiting = server
        .submit_ok(&json!({ "goal": "later", "tasks": [{ "id": "w", "capability": "gate" }] }))
        .await;
    let text = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(
        samples["swarm_tasks_queued_by_capability{capability=\"gate\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples[&format!(
            "swarm_agent_health{{agent=\"{gate}\",name=\"gate-0\",health=\"draining\"}}"
        )],
        1.0,
        "{text}"
    );

    // The running attempt finishes, as its first and only attempt; then the agent leaves.
    server.gate.add_permits(1);
    let view = server
        .swarm
        .wait(id.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(view.status).unwrap(), "succeeded");
    assert_eq!(view.tasks[0].attempts, 1, "{view:#?}");
    assert_eq!(view.tasks[0].output, Some(json!("through")));
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let chain = server.get_json(&format!("/v1/objectives/{id}/chain")).await;
    assert!(
        !chain.to_string().contains("attempt_lost"),
        "the drained attempt was lost: {chain:#}"
    );
    let agents = server.get_json("/v1/agents").await;
    assert!(!agents.to_string().contains("gate-0"), "{agents:#}");
    let gone = delete("").await.unwrap();
    assert_eq!(problem(gone, StatusCode::NOT_FOUND).await["field"], "id");
    let later = server.get_json(&format!("/v1/objectives/{waiting}")).await;
    assert_eq!(later["tasks"][0]["status"], "ready", "{later:#}");
    assert_eq!(later["tasks"][0]["attempts"], 0, "{later:#}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_requeues_what_still_runs_when_the_grace_elapses() {
    let server = start(None).await;
    let mut feed = server.swarm.subscribe().unwrap();
    let hold = agent_named(&server, "hold-0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent: swarm_protocol::AgentId = hold.parse().unwrap();
    let delete = |query: &str| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{hold}{query}"))
            .send()
    };
    // Bad graces are problems naming the parameter, and change nothing.
    for (query, field) in [
        ("?grace=soon", "grace"),
        ("?grace=2h", "grace"),
        ("?grace=", "grace"),
        ("?wait=1s", "wait"),
    ] {
        let response = delete(query).await.unwrap();
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    assert_eq!(agent_named(&server, "hold-0").await["health"], "up");
    let unknown = server
        .request(Method::DELETE, "/v1/agents/A999?grace=1s")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(unknown, StatusCode::NOT_FOUND).await["field"], "id");

    let held = server
        .submit_ok(&json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }] }))
        .await;
    let mut stream = server.events(&held, None).await;
    until(&mut stream, "task_started").await;
    let response = delete("?grace=50ms").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The attempt never ends: when the grace elapses the agent leaves and the attempt goes
    // back to the queue.
    let lost = until(&mut stream, "attempt_lost").await;
    let reason = lost.last().unwrap().data["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("grace of 50ms elapsed"), "{reason}");
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let text = server
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(
        samples["swarm_tasks_queued_by_capability{capability=\"hold\"}"], 1.0,
        "{text}"
    );
    assert_eq!(samples["swarm_tasks_running"], 0.0, "{text}");
    server.finish().await;
}

/// Registers a model agent through the API; returns its id.
async fn post_agent(server: &Server, body: &Value) -> String {
    let response = server
        .request(Method::POST, "/v1/agents")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(agents: &Value) -> Vec<String> {
    agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_registered_over_http_survive_a_restart_until_removed() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let model = |name: &str| {
        json!({
            "name": name,
            "provider": "openai",
            "base_url": sim.base_url(),
            "model": "m",
            "capabilities": ["write"],
            "concurrency": 3,
            "rpm": 600,
            "breaker": { "consecutive_failures": 4, "cool_down": "7s" }
        })
    };
    let server = start(None).await;
    post_agent(&server, &model("api-writer")).await;
    post_agent(&server, &model("clash")).await;
    // Not a declared agent: registered by the process itself, so not brought back.
    assert!(server.swarm.declared_agents().await.unwrap().len() == 2);
    let dir = server.finish().await;

    // Restarted on the same data directory. `clash` is now also the name of an agent the
    // process registers itself (as one of `swarm.toml` would be): that one wins.
    let server = start_in(dir, ApiConfig::default()).await;
    let configured = server
        .swarm
        .register_agent(reg("clash", &["other"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let restored = swarm_coordinator::http::register_declared_agents(&server.swarm)
        .await
        .unwrap();
    let restored: Vec<&str> = restored.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(restored, ["api-writer"]);
    let writer = agent_named(&server, "api-writer").await;
    assert_eq!(writer["capabilities"], json!(["write"]), "{writer:#}");
    assert_eq!(writer["max_concurrency"], 3, "{writer:#}");
    assert_eq!(
        writer["limiter"]["requests"]["per_minute"], 600,
        "{writer:#}"
    );
    let clash = agent_named(&server, "clash").await;
    assert_eq!(clash["id"], configured.id.to_string(), "{clash:#}");
    // It works: a task of its capability runs on it.
    let objective = server
        .submit_ok(&json!({ "goal": "write", "tasks": [{ "id": "w", "capability": "write", "input": "a haiku" }] }))
        .await;
    let view = server
        .swarm
        .wait(objective.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(view.status).unwrap(), "succeeded");
    assert_eq!(
        view.tasks[0].agent.map(|a| a.to_string()),
        writer["id"].as_str().map(str::to_owned)
    );

    // Removed: forgotten at once, so the next start does not bring it back.
    let response = server
        .request(
            Method::DELETE,
            &format!("/v1/agents/{}", writer["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let declared: Vec<String> = server
        .swarm
        .declared_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(declared, ["clash"]);
    let dir = server.finish().await;

    let server = start_in(dir, ApiConfig::default()).await;
    let restored = swarm_coordinator::http::register_declared_agents(&server.swarm)
        .await
        .unwrap();
    let restored: Vec<&str> = restored.iter().map(|d| d.name.as_str()).collect();
    // The file's `clash` is gone this time, so the declared one comes back.
    assert_eq!(restored, ["clash"]);
    let agents = names(&server.get_json("/v1/agents").await);
    assert!(!agents.contains(&"api-writer".to_owned()), "{agents:?}");
    assert_eq!(
        agent_named(&server, "clash").await["capabilities"],
        json!(["write"])
    );
    server.finish().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    let server = start(None).await;
    let id = server
        .submit_ok(&json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }] }))
        .await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;
    // The stream is open on a running objective; stopping the server must not wait for it.
    server.finish().await;
    assert!(
        tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap()
            .is_none()
    );
}

/// A client that does not follow redirects and keeps no cookies (the tests carry them).
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Every dashboard page is HTML under a strict Content-Security-Policy, and what a user wrote
/// is escaped: a goal holding a script is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_escape_what_users_wrote_under_a_strict_policy() {
    let server = start(None).await;
    let goal = "<script>alert(1)</script> & \"quotes\"";
    let id = server
        .submit_ok(&json!({ "goal": goal, "tasks": [{ "id": "a", "capability": "work" }] }))
        .await;
    server
        .swarm
        .wait(id.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    let root = raw_client()
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/ui/");
    // A schedule whose template holds the same goal, for the schedules page.
    let created = server
        .request(Method::POST, "/v1/schedules")
        .json(&json!({
            "name": "escaped",
            "cron": "0 0 1 1 *",
            "template": { "goal": goal, "tasks": [{ "id": "a", "capability": "work" }] }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    for path in [
        "/ui/".to_owned(),
        format!("/ui/?objective={id}"),
        "/ui/board/columns".to_owned(),
        format!("/ui/objectives/{id}"),
        format!("/ui/objectives/{id}/live"),
        "/ui/agents".to_owned(),
        "/ui/agents/live".to_owned(),
        "/ui/review".to_owned(),
        "/ui/review/live".to_owned(),
        "/ui/schedules".to_owned(),
        "/ui/schedules/live".to_owned(),
        "/ui/submit".to_owned(),
    ] {
        let response = server.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{path} holds the raw goal");
        if path.contains(&id)
            || path.starts_with("/ui/board")
            || path.starts_with("/ui/?")
            || path.starts_with("/ui/schedules")
        {
            assert!(
                html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                    || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}: {html}"
            );
        }
        // The only script is the server's own file; nothing inline.
        assert_eq!(
            html.matches("<script").count(),
            usize::from(!path.contains("live") && !path.contains("columns")),
            "{path}"
        );
    }
    let board = server.get_text(&format!("/ui/?objective={id}")).await;
    assert!(board.contains("data-column=\"succeeded\""));
    assert!(board.contains("data-key=\"a\""));
    // A filter that does not parse is named on the page.
    let bad = server
        .request(Method::GET, "/ui/?agent=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("data-field=\"agent\""));

    // A page that cannot be shown says why, as a page.
    for (path, status) in [
        (
            format!("/ui/objectives/{}", swarm_protocol::ObjectiveId::new()),
            StatusCode::NOT_FOUND,
        ),
        ("/ui/objectives/nope".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let response = server
            .request(Method::GET, &path)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(response.text().await.unwrap().contains("Back to the board"));
    }

    // The static files, with a validator.
    for (path, kind) in [
        ("/ui/static/app.js", "text/javascript"),
        ("/ui/static/app.css", "text/css"),
    ] {
        let response = server.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        let etag = response.headers()["etag"].clone();
        let again = server
            .request(Method::GET, path)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
    server.finish().await;
}

/// The schedules page shows what `GET /v1/schedules` holds, as text: a schedule firing every
/// second whose objective never ends fires once and then skips its slots (overlap `skip`),
/// one whose template needs a capability no agent has fails to fire; its page lists the
/// fire (a link to the objective), the skips and the failure with their reasons, escapes the
/// goals, and answers under the strict policy. With no schedule it says how to make one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_shows_fires_skips_and_failures_as_text() {
    let server = start(None).await;
    let empty = server.get_text("/ui/schedules").await;
    assert!(empty.contains("No schedule yet"), "{empty}");
    assert!(empty.contains("swarm schedules add"), "{empty}");

    let mut events = server.stream("/v1/events", None).await;
    let fire_loop = server
        .swarm
        .start_schedule_loop(Arc::new(swarm_agents::clock::TokioClock::new()))
        .await;
    for (name, goal, capability) in [
        ("held", "<i>held</i> & \"kept\"", "hold"),
        ("orphan", "<script>alert(2)</script>", "nobody"),
    ] {
        let created = server
            .request(Method::POST, "/v1/schedules")
            .json(&json!({
                "name": name,
                "cron": "* * * * * *",
                "time_zone": "Europe/Berlin",
                "template": { "goal": goal, "tasks": [{ "id": "t", "capability": capability }] }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // Both happen within a few seconds, in either order.
    let mut missing = vec!["schedule_skipped", "schedule_fire_failed"];
    let mut fired = None;
    while !missing.is_empty() {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {missing:?}"))
            .unwrap();
        missing.retain(|kind| *kind != event.kind);
        if event.kind == "schedule_fired" {
            fired = Some(event.data["objective"].as_str().unwrap().to_owned());
        }
    }
    let fired = fired.expect("a skip comes after a fire");
    fire_loop.stop().await;

    let response = server
        .request(Method::GET, "/ui/schedules")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    let html = response.text().await.unwrap();
    assert!(
        !html.contains("<script>alert") && !html.contains("<i>held"),
        "{html}"
    );
    assert!(
        html.contains("&#60;script&#62;alert(2)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&#60;i&#62;held&#60;/i&#62; &#38; &#34;kept&#34;")
            || html.contains("&lt;i&gt;held&lt;/i&gt; &amp; &quot;kept&quot;"),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "only the server's own");
    assert!(
        html.contains(&format!("href=\"/ui/objectives/{fired}\"")),
        "{html}"
    );
    assert!(html.contains("data-skips"), "{html}");
    assert!(html.contains("data-last-failure"), "{html}");
    // The reasons, as the API gives them.
    let listed = server.get_json("/v1/schedules").await;
    let of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    let skip = of("held")["recent_skips"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    let failure = of("orphan")["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    for reason in [&skip, &failure] {
        let escaped = reason
            .replace('&', "&#38;")
            .replace('<', "&#60;")
            .replace('>', "&#62;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        assert!(
            html.contains(reason.as_str()) || html.contains(&escaped),
            "{reason:?} is not on the page: {html}"
        );
    }
    // Times read in UTC, in the schedule's zone and relative to now; the button pauses.
    assert!(html.contains(" UTC</time>"), "{html}");
    assert!(html.contains("CET)") || html.contains("CEST)"), "{html}");
    assert!(html.contains("data-pause=\"held\""), "{html}");
    drop(events);
    server.finish().await;
}

/// With a token set, a browser gets the login form until it gives the token once; then a
/// session cookie (HttpOnly, SameSite=Strict, without the token in it) opens the pages and
/// the API, and a state-changing request made with the cookie needs the CSRF token the
/// pages carry. Requests another site makes are refused, token or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_once_and_the_cookie_needs_its_csrf_token() {
    let server = start(Some(TOKEN)).await;
    let client = raw_client();
    let url = |path: &str| format!("{}{path}", server.base);

    // A browser is shown the login form, which leads back to the page it asked for.
    let refused = client
        .get(url("/ui/agents"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let form = refused.text().await.unwrap();
    assert!(form.contains("name=\"token\"") && form.contains("value=\"/ui/agents\""));
    // A program is told what to send.
    let refused = client.get(url("/v1/tasks")).send().await.unwrap();
    problem(refused, StatusCode::UNAUTHORIZED).await;

    let login = |token: &str, next: &str| {
        client
            .post(url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next={next}"))
            .send()
    };
    assert_eq!(
        login("wrong", "/ui/").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        login("", "/ui/").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let evil = login(TOKEN, "https://evil.example/").await.unwrap();
    assert_eq!(
        evil.headers()["location"],
        "/ui/",
        "only dashboard paths are followed"
    );
    let ok = login(TOKEN, "%2Fui%2Fagents").await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/ui/agents");
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the token never leaves the form"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = client
        .get(url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 32);
    assert!(!html.contains(TOKEN));
    let listed = client
        .get(url("/v1/tasks"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // Changing state with the cookie alone is refused; with the CSRF token it goes through.
    let submit = |csrf: Option<&str>, origin: Option<&str>| {
        let mut request = client
            .post(url("/v1/objectives"))
            .header("cookie", &cookie)
            .json(&two_step());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let body = problem(submit(None, None).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(body["field"], "X-CSRF-Token");
    problem(
        submit(Some("0123456789abcdef0123456789abcdef"), None)
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        submit(Some(&csrf), None).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let same_site = server.base.clone();
    assert_eq!(
        submit(Some(&csrf), Some(&same_site))
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    let body = problem(
        submit(Some(&csrf), Some("https://evil.example"))
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(body["field"], "Origin");
    // Even with the bearer token, another site's request is refused.
    let cross = server
        .request(Method::POST, "/v1/objectives")
        .header("sec-fetch-site", "cross-site")
        .json(&two_step())
        .send()
        .await
        .unwrap();
    problem(cross, StatusCode::FORBIDDEN).await;

    // A forged or cleared cookie opens nothing.
    let forged = cookie.replace("v1.", "v1.9");
    let response = client
        .get(url("/v1/tasks"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    let logout = client
        .post(url("/ui/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    server.finish().await;
}

/// `/v1/schedules`: a schedule is created (201, with its next fire times in its time zone),
/// listed, paused, resumed and deleted, each change an event in the log; a taken name is 409,
/// a bad cron expression or time zone a 422 naming the field, an unknown name 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_and_deleted() {
    let server = start(None).await;
    let spec = json!({
        "name": "nightly",
        "cron": "0 30 2 * * *",
        "time_zone": "Europe/Berlin",
        "template": two_step(),
        "catch_up": { "policy": "run_latest", "window": "1h" }
    });
    let response = server
        .request(Method::POST, "/v1/schedules")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/schedules/nightly");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["overlap"], "skip");
    assert_eq!(created["recent_fires"], json!([]));
    let next: Vec<u64> = serde_json::from_value(created["next_fires_ms"].clone()).unwrap();
    assert_eq!(next.len(), 5);
    assert!(next.windows(2).all(|w| w[0] < w[1]), "{next:?}");
    // 02:30 in Berlin is 00:30 or 01:30 UTC.
    for slot in &next {
        let of_day = slot % 86_400_000;
        assert!(of_day == 1_800_000 || of_day == 5_400_000, "{slot}");
    }

    let again = server
        .request(Method::POST, "/v1/schedules")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(again, StatusCode::CONFLICT).await["field"], "name");
    for (field, bad) in [
        ("cron", json!({ "cron": "61 * * * *" })),
        ("cron", json!({ "cron": "* * *" })),
        ("time_zone", json!({ "time_zone": "Mars/Olympus_Mons" })),
        ("name", json!({ "name": "a:b" })),
        (
            "template.tasks[0].depends_on",
            json!({ "template": { "goal": "g", "tasks": [
                { "id": "a", "capability": "work", "depends_on": ["nowhere"] }
            ] } }),
        ),
    ] {
        let mut body = spec.clone();
        body["name"] = json!("other");
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = server
            .request(Method::POST, "/v1/schedules")
            .json(&body)
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], field, "{body}");
    }

    let listed = server.get_json("/v1/schedules").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "nightly");

    let paused: Value = server
        .request(Method::POST, "/v1/schedules/nightly/pause")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next_fires_ms"], json!([]));
    let resumed: Value = server
        .request(Method::POST, "/v1/schedules/nightly/resume")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(resumed.get("paused").is_none(), "{resumed}");
    assert_eq!(resumed["next_fires_ms"].as_array().unwrap().len(), 5);

    let deleted = server
        .request(Method::DELETE, "/v1/schedules/nightly")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = server
        .request(Method::DELETE, "/v1/schedules/nightly")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(gone, StatusCode::NOT_FOUND).await["field"], "name");
    let gone = server
        .request(Method::POST, "/v1/schedules/nightly/pause")
        .send()
        .await
        .unwrap();
    problem(gone, StatusCode::NOT_FOUND).await;
    assert_eq!(server.get_json("/v1/schedules").await, json!([]));

    // Each change is in the log, in order.
    let mut stream = server.stream("/v1/events", Some(0)).await;
    let kinds: Vec<String> = until(&mut stream, "schedule_deleted")
        .await
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("schedule_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "schedule_created",
            "schedule_paused",
            "schedule_resumed",
            "schedule_deleted"
        ]
    );
    drop(stream);
    server.finish().await;
}

/// Schedules survive a restart, paused or not, until deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_restart_until_deleted() {
    let server = start(None).await;
    for name in ["every-5s", "nightly"] {
        let response = server
            .request(Method::POST, "/v1/schedules")
            .json(&json!({ "name": name, "cron": "*/5 * * * * *", "template": two_step() }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let paused = server
        .request(Method::POST, "/v1/schedules/nightly/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    // A slot fires once: firing it again returns the same objective.
    let slot = 1_800_000_000_000;
    let first = server.swarm.fire_schedule("every-5s", slot).await.unwrap();
    let again = server.swarm.fire_schedule("every-5s", slot).await.unwrap();
    assert_eq!(first, again);
    let later = server
        .swarm
        .fire_schedule("every-5s", slot + 5_000)
        .await
        .unwrap();
    assert_ne!(later, first);
    let before = server.get_json("/v1/schedules").await;
    assert_eq!(
        before[0]["recent_fires"],
        json!([
            { "slot_ms": slot + 5_000, "objective": later.to_string() },
            { "slot_ms": slot, "objective": first.to_string() },
        ])
    );
    let dir = server.finish().await;

    let server = start_in(dir, ApiConfig::default()).await;
    let after = server.get_json("/v1/schedules").await;
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    for (before, after) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        for field in [
            "name",
            "cron",
            "time_zone",
            "template",
            "overlap",
            "catch_up",
            "paused",
        ] {
            assert_eq!(before.get(field), after.get(field), "{field}");
        }
        assert_eq!(before["created_at_ms"], after["created_at_ms"]);
    }
    assert_eq!(after[1]["paused"], true);
    // The latest fire is kept across the restart, and the slot still fires only once.
    assert_eq!(
        after[0]["recent_fires"],
        json!([{ "slot_ms": slot + 5_000, "objective": later.to_string() }])
    );
    assert_eq!(
        server.swarm.fire_schedule("every-5s", slot).await.unwrap(),
        first
    );
    let deleted = server
        .request(Method::DELETE, "/v1/schedules/every-5s")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let dir = server.finish().await;

    let server = start_in(dir, ApiConfig::default()).await;
    let after = server.get_json("/v1/schedules").await;
    let names: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
    server.finish().await;
}

const HOOK_SECRET: &str = "hook-secret";

/// The variable the hook `deploy` of [`start_with_hook`] reads its secret from.
const DEPLOY_SECRET_ENV: &str = "SWARM_TEST_HTTP_DEPLOY_HOOK_SECRET";

/// A hook's `[[hooks]]` fields, whose template takes its goal and input from the payload.
fn hook_config(name: &str, secret_env: &str) -> HookConfig {
    HookConfig {
        name: name.into(),
        secret_env: secret_env.into(),
        template: json!({
            "goal": { "$payload": "/message" },
            "tasks": [{ "id": "d", "capability": "echo", "input": { "ref": { "$payload": "/ref" } } }]
        }),
        tolerance: None,
    }
}

/// A server with the hook `deploy` of `swarm.toml`.
async fn start_with_hook(token: Option<&str>) -> Server {
    // The secret is looked up in a fixed environment: setting a variable of the test process
    // is `unsafe` while other threads run (and the workspace forbids unsafe code).
    let book = Hooks::configured(
        &[hook_config("deploy", DEPLOY_SECRET_ENV)],
        Environment::fixed([(DEPLOY_SECRET_ENV, HOOK_SECRET)]),
    )
    .unwrap();
    let server = start_with(ApiConfig {
        token: token.map(str::to_owned),
        ..ApiConfig::default()
    })
    .await;
    server.swarm.serve_hooks(book).await.unwrap();
    server
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Posts a delivery to `/v1/hooks/{name}`, signed at `t` with `secret` (no signature: None).
async fn deliver(
    server: &Server,
    name: &str,
    body: &str,
    signed: Option<(&str, u64)>,
    delivery: &str,
) -> reqwest::Response {
    // No bearer token: the signature is the hook's authentication.
    let mut request = server
        .client
        .post(format!("{}/v1/hooks/{name}", server.base))
        .header("content-type", "application/json")
        .header("x-swarm-delivery", delivery)
        .body(body.to_owned());
    if let Some((secret, t)) = signed {
        request = request.header(
            "x-swarm-signature",
            swarm_coordinator::triggers::signature::sign(secret.as_bytes(), t, body.as_bytes()),
        );
    }
    request.send().await.unwrap()
}

/// Over loopback: a delivery with a valid signature starts an objective with the mapped
/// input; a wrong signature, a stale timestamp, a missing signature and a reused delivery id
/// each create nothing; an unknown hook is 404 and a payload without a referenced path 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_start_objectives_and_nothing_else_does() {
    let server = start_with_hook(Some(TOKEN)).await;
    let body = r#"{"message": "deploy main", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "deploy", body, Some((HOOK_SECRET, now)), "d-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    let objective = server
        .swarm
        .wait(id.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(objective.goal, "deploy main");
    // The echo agent answers with the input it got.
    let output = objective.tasks[0].output.clone().unwrap();
    assert_eq!(output["input"], json!({ "ref": "main" }));

    let count = || async {
        server
            .swarm
            .list_objectives(None, None, 100)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 1);
    // The same delivery again: the same objective, nothing new.
    let again = deliver(&server, "deploy", body, Some((HOOK_SECRET, now)), "d-1").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id.as_str());
    // Refused, creating nothing.
    for (signed, why) in [
        (Some(("wrong-secret", now)), "does not match"),
        (Some((HOOK_SECRET, now - 3_600)), "timestamp"),
        (None, "no `X-Swarm-Signature`"),
    ] {
        let response = deliver(&server, "deploy", body, signed, "d-2").await;
        let problem = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(problem["field"], "X-Swarm-Signature");
        assert!(
            problem["detail"].as_str().unwrap().contains(why),
            "{problem}"
        );
    }
    let unknown = deliver(&server, "nope", body, Some((HOOK_SECRET, now)), "d-3").await;
    assert_eq!(
        problem(unknown, StatusCode::NOT_FOUND).await["field"],
        "name"
    );
    let lacking = r#"{"message": "no ref"}"#;
    let response = deliver(&server, "deploy", lacking, Some((HOOK_SECRET, now)), "d-4").await;
    let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["field"], "template.tasks[0].input.ref");
    assert_eq!(count().await, 1);
    server.finish().await;
}

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

async fn post_event(server: &Server, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = server.request(Method::POST, "/v1/events").json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// The task named `key` of an objective's view.
fn task_named<'a>(view: &'a Value, key: &str) -> &'a Value {
    view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no task `{key}` in {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_task_completes_when_its_event_arrives_also_when_it_came_first() {
    let server = start(None).await;

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
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(task_named(&view, "report")["status"], "backlog");
    let metrics = prometheus_samples(&server.get_text("/metrics").await);
    assert_eq!(metrics["swarm_tasks_waiting"], 1.0);
    assert_eq!(metrics["swarm_events_kept"], 0.0);

    let response = post_event(
        &server,
        &json!({ "key": key, "payload": { "status": "green" } }),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let posted: Value = response.json().await.unwrap();
    assert_eq!(posted["consumed_by"]["objective"], id.as_str());
    until(&mut events, "objective_succeeded").await;
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(
        task_named(&view, "build")["output"],
        json!({ "status": "green" })
    );
    assert_eq!(task_named(&view, "report")["output"]["input"], "green");
    let chain = server.get_json(&format!("/v1/objectives/{id}/chain")).await;
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
    let response = post_event(&server, &early, Some("deploy-7-sent")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let first: Value = response.json().await.unwrap();
    assert!(first.get("consumed_by").is_none(), "{first}");
    let again: Value = post_event(&server, &early, Some("deploy-7-sent"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = json!({ "key": "deploy-7", "payload": { "status": "red" } });
    let conflict = problem(
        post_event(&server, &other, Some("deploy-7-sent")).await,
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

    let server = start_in(dir, ApiConfig::default()).await;
    let pending = server.get_json("/v1/events/pending").await;
    assert_eq!(pending[0]["id"], first["id"], "{pending}");
    let id = server.submit_ok(&waiting_for("deploy-7", "1h")).await;
    let all = server.all_events(&id, None).await;
    assert_eq!(all.last().unwrap().kind, "objective_succeeded");
    assert!(all.iter().all(|e| e.kind != "task_waiting" || e.seq > 0));
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(
        task_named(&view, "build")["output"],
        json!({ "status": "amber" })
    );
    assert_eq!(server.get_json("/v1/events/pending").await, json!([]));
    // Consumed, so a second task waiting for the key does not get it again.
    let id = server.submit_ok(&waiting_for("deploy-7", "1h")).await;
    let mut events = server.events(&id, None).await;
    until(&mut events, "task_waiting").await;
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(task_named(&view, "build")["status"], "waiting");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_task_without_its_event_fails_with_a_timeout() {
    let server = start(None).await;
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
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(task_named(&view, "report")["status"], "cancelled");
    // An event posted after the timeout is kept for a later task, not given to this one.
    let late = post_event(&server, &json!({ "key": "never" }), None).await;
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
            post_event(&server, &body, None).await,
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
    let server = start(None).await;
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
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
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
        .request(Method::POST, &format!("/v1/tasks/{task}/approve"))
        .json(&json!({ "output": { "text": "v2" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), StatusCode::NO_CONTENT);
    until(&mut events, "objective_succeeded").await;
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(
        task_named(&view, "publish")["output"]["input"],
        json!({ "text": "v2" })
    );
    let chain = server.get_json(&format!("/v1/objectives/{id}/chain")).await;
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
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    let task = task_named(&view, "ship-it")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = server
        .request(Method::POST, &format!("/v1/tasks/{task}/reject"))
        .json(&json!({ "reason": "too risky" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::NO_CONTENT);
    let rest = until(&mut events, "objective_failed").await;
    let reason = rest.last().unwrap().data["reason"].as_str().unwrap();
    assert!(reason.contains("not approved: too risky"), "{reason}");
    let view = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(task_named(&view, "publish")["status"], "cancelled");
    assert_eq!(task_named(&view, "publish")["attempts"], 0);
    server.finish().await;
}

/// Declares a hook over HTTP; returns the answer.
async fn declare_hook(server: &Server, body: &Value) -> reqwest::Response {
    server
        .request(Method::POST, "/v1/hooks")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn hook_names(hooks: &Value) -> Vec<(String, String)> {
    hooks
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Over loopback, with the API token: a hook declared with `POST /v1/hooks` is listed (the
/// secret only by its variable), takes signed deliveries that start objectives, refuses a
/// reused delivery id with another body (409 naming `X-Swarm-Delivery`), and once deleted
/// refuses deliveries (404). Bad declarations name their field; names in use are 409, and a
/// hook of swarm.toml can be neither replaced nor deleted through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_declared_through_the_api_take_deliveries_until_deleted() {
    const VAR: &str = "SWARM_TEST_HTTP_API_HOOK_SECRET";
    const SECRET: &str = "api-hook-s3cret";
    let book = Hooks::configured(
        &[hook_config("deploy", DEPLOY_SECRET_ENV)],
        Environment::fixed([(DEPLOY_SECRET_ENV, HOOK_SECRET), (VAR, SECRET)]),
    )
    .unwrap();
    let server = start_with(ApiConfig {
        token: Some(TOKEN.into()),
        ..ApiConfig::default()
    })
    .await;
    server.swarm.serve_hooks(book).await.unwrap();
    let mut body = serde_json::to_value(hook_config("build", VAR)).unwrap();
    body["tolerance"] = json!("2m");
    let response = declare_hook(&server, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/hooks/build");
    let text = response.text().await.unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let declared: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(declared["name"], "build");
    assert_eq!(declared["secret_env"], VAR);
    assert_eq!(declared["tolerance"], "2m");
    assert_eq!(declared["source"], "api");
    assert_eq!(declared["template"], body["template"]);

    // Listed by name beside the hook of swarm.toml, with no secret.
    let response = server
        .request(Method::GET, "/v1/hooks")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(SECRET) && !text.contains(HOOK_SECRET),
        "{text}"
    );
    let hooks: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        hook_names(&hooks),
        [
            ("build".to_owned(), "api".to_owned()),
            ("deploy".to_owned(), "config".to_owned())
        ]
    );
    assert_eq!(hooks[1]["tolerance"], "5m");

    // Refused declarations, each naming its field.
    for (change, status, field, says) in [
        (json!({}), StatusCode::CONFLICT, "name", "exists already"),
        (
            json!({ "name": "deploy" }),
            StatusCode::CONFLICT,
            "name",
            "swarm.toml",
        ),
        (
            json!({ "name": "other", "secret_env": "SWARM_TEST_SURELY_UNSET" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret_env",
            "SWARM_TEST_SURELY_UNSET",
        ),
        (
            json!({ "name": "other", "template": { "goal": { "$payload": "message" } } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template.goal",
            "JSON Pointer",
        ),
        (
            json!({ "name": "a/b" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
            "only A-Z",
        ),
        (
            json!({ "name": "other", "tolerance": "soon" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tolerance",
            "tolerance",
        ),
        (
            json!({ "name": "other", "secret": "inline" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret",
            "unknown field",
        ),
    ] {
        let mut bad = body.clone();
        for (key, value) in change.as_object().unwrap() {
            bad[key] = value.clone();
        }
        let response = declare_hook(&server, &bad).await;
        let problem = problem(response, status).await;
        assert_eq!(problem["field"], field, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }

    // A signed delivery starts an objective with the mapped input.
    let payload = r#"{"message": "build main", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "build", payload, Some((SECRET, now)), "b-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["hook"], "build");
    let id = answer["id"].as_str().unwrap().to_owned();
    let objective = server
        .swarm
        .wait(id.parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(objective.goal, "build main");
    assert_eq!(
        objective.tasks[0].output.clone().unwrap()["input"],
        json!({ "ref": "main" })
    );
    // Signed with another hook's secret: refused.
    let response = deliver(&server, "build", payload, Some((HOOK_SECRET, now)), "b-2").await;
    problem(response, StatusCode::UNAUTHORIZED).await;
    // The same delivery id with another body: 409 naming the delivery header.
    let other = r#"{"message": "build dev", "ref": "dev"}"#;
    let response = deliver(&server, "build", other, Some((SECRET, now)), "b-1").await;
    let conflict = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(conflict["field"], "X-Swarm-Delivery");
    assert_eq!(
        conflict["detail"],
        "delivery `b-1` was already received with a different body"
    );
    assert_eq!(
        server
            .swarm
            .list_objectives(None, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    // Deleting: a hook of swarm.toml is refused, an unknown one is 404.
    let response = server
        .request(Method::DELETE, "/v1/hooks/deploy")
        .send()
        .await
        .unwrap();
    let refused = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(refused["field"], "name");
    assert!(
        refused["detail"].as_str().unwrap().contains("swarm.toml"),
        "{refused}"
    );
    let response = server
        .request(Method::DELETE, "/v1/hooks/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(response, StatusCode::NOT_FOUND).await["field"],
        "name"
    );
    let response = server
        .request(Method::DELETE, "/v1/hooks/build")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // From then on its deliveries are refused, signed or not.
    let response = deliver(&server, "build", payload, Some((SECRET, now)), "b-3").await;
    assert_eq!(
        problem(response, StatusCode::NOT_FOUND).await["field"],
        "name"
    );
    let response = server
        .request(Method::DELETE, "/v1/hooks/build")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
    let hooks = server.get_json("/v1/hooks").await;
    assert_eq!(
        hook_names(&hooks),
        [("deploy".to_owned(), "config".to_owned())]
    );

    // The log holds the declaration and the deletion, and never the secret.
    let events = server
        .swarm
        .store()
        .unwrap()
        .read_after(0, 10_000)
        .await
        .unwrap();
    let kinds: Vec<&Event> = events
        .iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, Event::HookDeclared { .. } | Event::HookDeleted { .. }))
        .collect();
    assert!(
        matches!(kinds[..], [Event::HookDeclared { name: a, config }, Event::HookDeleted { name: b }]
            if a == "build" && b == "build" && config["secret_env"] == VAR),
        "{kinds:?}"
    );
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(SECRET));
    assert!(server.swarm.declared_hooks().await.unwrap().is_empty());
    server.finish().await;
}

/// A server on `dir` whose hooks are those of `configured` and then the declared ones the
/// log holds, their secrets read in `env` (a restart of `swarm serve`).
async fn restart_with_hooks(
    dir: tempfile::TempDir,
    configured: &[HookConfig],
    env: Environment,
) -> (Server, Vec<String>) {
    let book = Hooks::configured(configured, env).unwrap();
    let server = start_in(dir, ApiConfig::default()).await;
    let restored = server.swarm.serve_hooks(book).await.unwrap();
    (server, restored)
}

/// Hooks declared through the API come back after a restart on the same data directory, with
/// their secrets read again from their variables (a changed value is the one that counts);
/// one whose variable is unset is left out without failing the start, and can still be
/// deleted; a hook of swarm.toml of the same name wins over a declared one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_declared_through_the_api_survive_a_restart_until_deleted() {
    const ALPHA_VAR: &str = "SWARM_TEST_HTTP_RESTART_ALPHA_SECRET";
    const BETA_VAR: &str = "SWARM_TEST_HTTP_RESTART_BETA_SECRET";
    let env = |alpha: Option<&str>, beta: Option<&str>| {
        Environment::fixed(
            [(ALPHA_VAR, alpha), (BETA_VAR, beta)]
                .into_iter()
                .filter_map(|(var, value)| value.map(|v| (var, v))),
        )
    };
    let (server, restored) = restart_with_hooks(
        tempfile::tempdir().unwrap(),
        &[],
        env(Some("alpha-1"), Some("beta-1")),
    )
    .await;
    assert!(restored.is_empty());
    for (name, var) in [("alpha", ALPHA_VAR), ("beta", BETA_VAR)] {
        let response = declare_hook(
            &server,
            &serde_json::to_value(hook_config(name, var)).unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let before = server.get_json("/v1/hooks").await;
    let dir = server.finish().await;

    // Restarted with alpha's secret changed and beta's variable unset.
    let (server, restored) = restart_with_hooks(dir, &[], env(Some("alpha-2"), None)).await;
    assert_eq!(restored, ["alpha"]);
    let after = server.get_json("/v1/hooks").await;
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after[0], before[0]);
    let payload = r#"{"message": "after the restart", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "alpha", payload, Some(("alpha-2", now)), "a-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id: Value = response.json().await.unwrap();
    let objective = server
        .swarm
        .wait(id["id"].as_str().unwrap().parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(objective.goal, "after the restart");
    // The secret it was declared with no longer signs for it.
    let response = deliver(&server, "alpha", payload, Some(("alpha-1", now)), "a-2").await;
    problem(response, StatusCode::UNAUTHORIZED).await;
    // Left out, so not served...
    let response = deliver(&server, "beta", payload, Some(("beta-1", now)), "b-1").await;
    problem(response, StatusCode::NOT_FOUND).await;
    // ...but still declared, and deleting it forgets it.
    let response = server
        .request(Method::DELETE, "/v1/hooks/beta")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let dir = server.finish().await;

    // Restarted with both variables set, and swarm.toml now declaring `alpha` too: the file's
    // hook is served; beta stays deleted.
    let mut file_alpha = hook_config("alpha", BETA_VAR);
    file_alpha.template =
        json!({ "goal": "from the file", "tasks": [{ "id": "t", "capability": "echo" }] });
    let (server, restored) = restart_with_hooks(
        dir,
        std::slice::from_ref(&file_alpha),
        env(Some("alpha-2"), Some("beta-2")),
    )
    .await;
    assert!(restored.is_empty(), "{restored:?}");
    let hooks = server.get_json("/v1/hooks").await;
    assert_eq!(
        hook_names(&hooks),
        [("alpha".to_owned(), "config".to_owned())]
    );
    assert_eq!(hooks[0]["secret_env"], BETA_VAR);
    let response = deliver(&server, "alpha", payload, Some(("beta-2", now)), "a-3").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The declaration stays (it comes back if the file drops its hook).
    let declared: Vec<String> = server
        .swarm
        .declared_hooks()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(declared, ["alpha"]);
    server.finish().await;
}
