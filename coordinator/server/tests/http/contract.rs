//! The OpenAPI document as the server's contract: every route of the document is driven over
//! loopback with valid and invalid requests, and every answer must be one the document
//! declares for its operation (the status, the content type) with a body that validates
//! against the declared schema (`jsonschema`, the document's `components` resolving the
//! `$ref`s, formats checked). The events of an event stream are checked one by one against the
//! per-event schema the document declares (`x-itemSchema`). Values the document lists (every
//! `status`, every `order`) must be accepted, and a query value the document's schema refuses
//! must be refused. A body or query value the server refuses for a reason a schema can say
//! (a name's pattern, a task kind's fields, an empty capability list) must be refused by the
//! document too, and what the server takes, admitted. A second server with low limits checks
//! the over-limit answers (413, 422, 429) and that the document states its ceilings.
//!
//! Violations are collected, so one run lists every mismatch, and reported at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::config::{Config, HookConfig, LimitsSection};
use swarm_coordinator::model_agents::ModelAgents;
use swarm_coordinator::triggers::signature::sign;
use swarm_coordinator::triggers::{Environment, Hooks};
use swarm_protocol::{
    AgentId, Event, FailureKind, FencedResult, ObjectiveId, OutcomeSummary, Task, TaskOutcome,
    Usage,
};
use swarm_server::ApiConfig;
use swarm_server::limits::{Limits, Rate};

use crate::common::PATIENCE;
use crate::common::api::*;

const HOOK_VAR: &str = "SWARM_TEST_HTTP_CONTRACT_HOOK_SECRET";
const HOOK_SECRET: &str = "contract-s3cret";

/// What the document says, and what was seen against it.
struct Contract {
    doc: Value,
    validators: Mutex<BTreeMap<String, Arc<jsonschema::Validator>>>,
    /// `METHOD path-template` of every operation called.
    called: Mutex<BTreeSet<String>>,
    violations: Mutex<Vec<String>>,
}

/// One answer, once checked.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Contract {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            validators: Mutex::default(),
            called: Mutex::default(),
            violations: Mutex::default(),
        }
    }

    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    /// The operation `method template` of the document.
    fn operation(&self, method: &Method, template: &str) -> &Value {
        let operation = &self.doc["paths"][template][method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the document"
        );
        operation
    }

    /// `schema` with every `$ref` resolved against the document's components, as a validator.
    fn validator(&self, schema: &Value) -> Arc<jsonschema::Validator> {
        let key = schema.to_string();
        let mut validators = self.validators.lock().unwrap();
        validators
            .entry(key)
            .or_insert_with(|| {
                let root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": self.doc["components"],
                    "allOf": [schema],
                });
                Arc::new(
                    jsonschema::options()
                        .offline()
                        .should_validate_formats(true)
                        .build(&root)
                        .unwrap_or_else(|e| panic!("the schema {schema} does not compile: {e}")),
                )
            })
            .clone()
    }

    /// Checks `value` against `schema`; the errors, if any.
    fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(value)
            .take(5)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect()
    }

    /// Resolves a `$ref` to a component (one level).
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(target) => {
                let name = target.strip_prefix("#/components/schemas/").unwrap();
                &self.doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    /// Sends `request` (to the operation `method template`) and checks its answer against the
    /// document: its status is declared, its content type is one declared for that status,
    /// and its body validates against the declared schema.
    async fn call(&self, method: Method, template: &str, request: RequestBuilder) -> Answer {
        let what = format!("{method} {template}");
        self.called.lock().unwrap().insert(what.clone());
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let responses = &self.operation(&method, template)["responses"];
        let Some(declared) = responses
            .get(status.as_str())
            .or_else(|| responses.get("default"))
        else {
            self.violation(format!(
                "{what}: {status} is not declared ({})",
                String::from_utf8_lossy(&bytes)
            ));
            return Answer { status, body };
        };
        let content = declared["content"].as_object();
        match (content, content_type) {
            (None, None) => {}
            (None, Some(_)) if bytes.is_empty() => {}
            (None, Some(got)) => self.violation(format!(
                "{what}: {status} declares no body, got `{got}`: {}",
                String::from_utf8_lossy(&bytes)
            )),
            (Some(_), None) => self.violation(format!("{what}: {status} has no content type")),
            (Some(content), Some(got)) => {
                let essence = |media: &str| media.split(';').next().unwrap().trim().to_owned();
                let essence = essence(&got);
                let declared = content.get(&essence).or_else(|| {
                    content
                        .iter()
                        .find(|(media, _)| media.split(';').next().unwrap().trim() == essence)
                        .map(|(_, declared)| declared)
                });
                match declared {
                    None => self.violation(format!(
                        "{what}: {status} answered `{got}`, the document declares {:?}",
                        content.keys().collect::<Vec<_>>()
                    )),
                    Some(media) if essence.ends_with("json") => {
                        let schema = &media["schema"];
                        let value: Value = match serde_json::from_slice(&bytes) {
                            Ok(value) => value,
                            Err(e) => {
                                self.violation(format!("{what}: {status}: not JSON: {e}"));
                                return Answer { status, body };
                            }
                        };
                        for error in self.errors(schema, &value) {
                            self.violation(format!("{what}: {status}: {error}"));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        Answer { status, body }
    }

    /// Reads the event stream `request` answers (the operation `GET template`), checking each
    /// event against the document's per-event schema, until `done` says so (or the stream
    /// ends); the events' `data`.
    async fn stream(
        &self,
        template: &str,
        request: RequestBuilder,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let what = format!("GET {template}");
        self.called.lock().unwrap().insert(what.clone());
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let media = &self.operation(&Method::GET, template)["responses"]["200"]["content"]["text/event-stream"];
        assert!(media.is_object(), "{what}: no text/event-stream answer");
        let item = self.resolve(&media["x-itemSchema"]).clone();
        let data_schema = item["properties"]["data"]["contentSchema"].clone();
        if !data_schema.is_object() {
            self.violation(format!("{what}: no per-event schema with one of `data`"));
        }
        let mut events = Box::pin(response.bytes_stream().eventsource());
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout(PATIENCE, events.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no event; saw {seen:#?}"));
            let Some(event) = next else { break };
            let event = event.unwrap();
            let frame = json!({ "id": event.id, "event": event.event, "data": event.data });
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if data_schema.is_object() {
                for error in self.errors(&item, &frame) {
                    self.violation(format!("{what}: event {}: {error}", event.id));
                }
                for error in self.errors(&data_schema, &data) {
                    self.violation(format!("{what}: event {} `data`: {error}", event.id));
                }
            }
            if data["type"] != event.event.as_str() || data["seq"].as_u64() != event.id.parse().ok()
            {
                self.violation(format!(
                    "{what}: event {} is named `{}` but carries {data}",
                    event.id, event.event
                ));
            }
            let finished = done(&data);
            seen.push(data);
            if finished {
                break;
            }
        }
        seen
    }

    /// Records a violation unless the document's request body of `method template` admits
    /// `body` exactly when `admitted`: a body the server refuses for a reason a schema can
    /// say must be refused by the document too, and one it takes must be admitted.
    fn body_declared(&self, method: &Method, template: &str, body: &Value, admitted: bool) {
        let schema = &self.operation(method, template)["requestBody"]["content"]["application/json"]
            ["schema"];
        let errors = self.errors(schema, body);
        if errors.is_empty() != admitted {
            self.violation(format!(
                "{method} {template}: the document {} the body {body}, the server {} it",
                if errors.is_empty() {
                    "admits"
                } else {
                    "refuses"
                },
                if admitted { "takes" } else { "refuses" },
            ));
        }
    }

    /// Records a violation unless the document's query parameters of `GET template` admit
    /// every pair of `query` (when the server takes it) or refuse one (when it does not; a
    /// parameter the document lacks is refused).
    fn query_declared(&self, template: &str, query: &str, admitted: bool) {
        let parameters = self.operation(&Method::GET, template)["parameters"]
            .as_array()
            .unwrap();
        let all_admitted = query.split('&').all(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            parameters
                .iter()
                .find(|p| p["name"] == name && p["in"] == "query")
                .is_some_and(|p| {
                    let schema = &p["schema"];
                    let typed = match self.resolve(schema)["type"].as_str() {
                        Some("integer") => value.parse::<i64>().map_or(json!(value), |n| json!(n)),
                        _ => json!(value),
                    };
                    self.errors(schema, &typed).is_empty()
                })
        });
        if all_admitted != admitted {
            self.violation(format!(
                "GET {template}?{query}: the document {} it, the server {} it",
                if all_admitted { "admits" } else { "refuses" },
                if admitted { "takes" } else { "refuses" },
            ));
        }
    }

    /// Records a violation unless `answer` has `status`.
    fn expect(&self, answer: &Answer, status: StatusCode, context: impl std::fmt::Display) {
        if answer.status != status {
            self.violation(format!(
                "{context}: expected {status}, got {}: {}",
                answer.status, answer.body
            ));
        }
    }

    /// The values the document lists for the query parameter `name` of `GET template`.
    fn enum_values(&self, template: &str, name: &str) -> Vec<String> {
        let parameter = self.parameter(template, name);
        let Some(values) = self.resolve(&parameter["schema"])["enum"].as_array() else {
            self.violation(format!("GET {template}: `{name}` lists no values"));
            return Vec::new();
        };
        values
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    fn parameter(&self, template: &str, name: &str) -> &Value {
        self.parameter_of(&Method::GET, template, name)
    }

    fn parameter_of(&self, method: &Method, template: &str, name: &str) -> &Value {
        self.operation(method, template)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {template}: no parameter `{name}`"))
    }

    /// Panics listing every violation seen, if there is one.
    fn assert_conforms(&self) {
        let violations = self.violations.lock().unwrap();
        assert!(
            violations.is_empty(),
            "{} answers violate the document:\n{}",
            violations.len(),
            violations.join("\n")
        );
    }

    /// Every operation of the document that was not called.
    fn uncalled(&self) -> Vec<String> {
        let called = self.called.lock().unwrap();
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let what = format!("{} {path}", method.to_ascii_uppercase());
                if !called.contains(&what) {
                    missing.push(what);
                }
            }
        }
        missing
    }
}

/// A `wait` task for `contract-<objective id>`, and an `echo` task after it.
fn waits() -> Value {
    json!({ "goal": "wait", "tasks": [
        { "id": "w", "kind": "wait", "event": "contract-{objective}", "timeout": "1h" },
        { "id": "after", "capability": "echo", "input": { "$from": "w" }, "depends_on": ["w"] }
    ] })
}

/// A model agent with a breaker and a limiter (nothing calls its server).
fn model_agent() -> Value {
    json!({
        "name": "model-1", "provider": "openai", "base_url": "http://127.0.0.1:9",
        "model": "m", "capabilities": ["write"], "rpm": 60,
        "breaker": { "consecutive_failures": 3, "cool_down": "10s" }
    })
}

/// A schedule that fires at 3:00 in Berlin.
fn nightly() -> Value {
    json!({
        "name": "nightly", "cron": "0 3 * * *", "time_zone": "Europe/Berlin",
        "template": { "goal": "g", "tasks": [{ "id": "a", "capability": "work" }] }
    })
}

/// A hook named `name` whose deliveries submit an `echo` task of their payload.
fn hook_config(name: &str) -> Value {
    json!({
        "name": name,
        "secret_env": HOOK_VAR,
        "template": {
            "goal": { "$payload": "/goal" },
            "tasks": [{ "id": "e", "capability": "echo", "input": { "$payload": "" } }]
        }
    })
}

/// Drives every route of the document with valid and invalid requests, and checks every
/// answer against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_conforms_to_the_openapi_document() {
    let configured = Hooks::configured(
        &[serde_json::from_value::<HookConfig>(hook_config("configured")).unwrap()],
        Environment::fixed([(HOOK_VAR, HOOK_SECRET)]),
    )
    .unwrap();
    // One provider account (no agent calls it: its address is unreachable).
    let file = Config::parse(
        "[[accounts]]\nname = \"key\"\nprovider = \"openai\"\n\
         base_url = \"http://127.0.0.1:9/v1\"\nrpm = 60\ntpm = 10000\nconcurrency = 2\n",
    )
    .unwrap();
    let (models, _) = ModelAgents::build(&file).unwrap();
    let server = Server::start_with(ApiConfig {
        token: Some(TOKEN.into()),
        models,
        ..ApiConfig::default()
    })
    .await;
    server.swarm.serve_hooks(configured).await.unwrap();
    let doc: Value = server.get("/openapi.json").await.json().await.unwrap();
    let c = Contract::new(doc);
    let s = &server;
    probes(&c, s).await;
    let ids = submits(&c, s).await;
    objectives(&c, s, &ids).await;
    task_listing(&c, s, &ids).await;
    review(&c, s, &ids).await;
    cancel(&c, s, &ids).await;
    budget(&c, s, &ids).await;
    external_events(&c, s, &ids).await;
    agents(&c, s).await;
    accounts(&c, s).await;
    schedules(&c, s).await;
    hooks(&c, s).await;
    swarm_stream(&c, s).await;
    declared(&c);

    let uncalled = c.uncalled();
    assert!(uncalled.is_empty(), "operations not driven: {uncalled:#?}");
    c.assert_conforms();
    server.finish().await;
}

/// The objectives the scenario submitted, by what they are for.
struct Submitted {
    /// Two `work` tasks; succeeded.
    done: String,
    /// Three objectives of one `judge` task each, which goes to review.
    reviewed: Vec<String>,
    /// One `hold` task: runs until cancelled.
    held: String,
    /// A `wait` task and one after it.
    waiting: String,
}

/// An objective id no objective has.
const UNKNOWN_OBJECTIVE: &str = "0190a2b4-7c1d-7e3f-8a5b-6c7d8e9f0a1b";

/// The probes and the document, and a route without the token.
async fn probes(c: &Contract, s: &Server) {
    let get = |path: &str| s.request(Method::GET, path);
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let answer = c.call(Method::GET, path, get(path)).await;
        c.expect(&answer, StatusCode::OK, path);
    }
    // Without the token.
    let answer = c
        .call(Method::GET, "/v1/agents", s.client.get(s.url("/v1/agents")))
        .await;
    c.expect(&answer, StatusCode::UNAUTHORIZED, "");
}

/// Submits the scenario's objectives (one that succeeds, three whose task goes to review, one
/// that runs until cancelled, one that waits for an event) and refused ones.
async fn submits(c: &Contract, s: &Server) -> Submitted {
    let post = |path: &str| s.request(Method::POST, path);
    let submit = "/v1/objectives";
    let done = c
        .call(Method::POST, submit, post(submit).json(&two_step()))
        .await;
    assert_eq!(done.status, StatusCode::ACCEPTED);
    let done = done.body["id"].as_str().unwrap().to_owned();
    let mut reviewed = Vec::new();
    for i in 0..3 {
        let judged = json!({ "goal": format!("judge {i}"), "tasks": [{ "id": "j", "capability": "judge" }] });
        let answer = c
            .call(
                Method::POST,
                submit,
                post(submit)
                    .header("Idempotency-Key", format!("judge-{i}"))
                    .json(&judged),
            )
            .await;
        c.expect(&answer, StatusCode::ACCEPTED, "");
        reviewed.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    let held = c
        .call(Method::POST, submit, post(submit).json(&hold_forever()))
        .await;
    let held = held.body["id"].as_str().unwrap().to_owned();
    let waiting = c
        .call(Method::POST, submit, post(submit).json(&waits()))
        .await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED);
    let waiting = waiting.body["id"].as_str().unwrap().to_owned();
    // Every kind of task is taken.
    let kinds = json!({ "goal": "kinds", "tasks": [
        { "id": "a", "kind": "agent", "capability": "echo", "input": 1 },
        { "id": "w", "kind": "wait", "event": "never-posted", "timeout": "1h" },
        { "id": "p", "kind": "approval", "input": { "$from": "a" }, "depends_on": ["a"] }
    ] });
    let answer = c
        .call(Method::POST, submit, post(submit).json(&kinds))
        .await;
    c.expect(&answer, StatusCode::ACCEPTED, "every kind of task");
    c.body_declared(&Method::POST, submit, &kinds, true);
    // Refused submits: not JSON, not an objective, a graph error, a `wait` task given a
    // capability, JSON nested too deep, another content type, an idempotency key reused for
    // another body. (The 413 of a body over the limit is the limits test's: a body of a few
    // kilobytes, which the client finishes writing before the server answers.)
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let bad_bodies = [
        (
            post(submit)
                .header("content-type", "application/json")
                .body("{\"goal\": "),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(submit)
                .header("content-type", "application/json")
                .body("{\"goal\": \"g\", \"tasks\": [{\"id\": \"a\", \"capability\": \"work\"} x]}"),
            StatusCode::BAD_REQUEST,
        ),
        (post(submit).json(&json!({ "goal": 3 })), StatusCode::UNPROCESSABLE_ENTITY),
        (post(submit).json(&json!(null)), StatusCode::UNPROCESSABLE_ENTITY),
        (
            post(submit).json(&json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work", "depends_on": ["nope"] }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(submit).json(&json!({ "goal": "g", "tasks": [{ "id": "w", "kind": "wait", "event": "e", "capability": "work" }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(submit).json(&json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work", "input": deep }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(submit).json(&json!({ "goal": "g", "limits": { "deadline": "400days" }, "tasks": [{ "id": "a", "capability": "work" }] })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            post(submit).header("content-type", "text/plain").body("goal"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            post(submit)
                .header("Idempotency-Key", "judge-0")
                .json(&two_step()),
            StatusCode::CONFLICT,
        ),
    ];
    for (request, status) in bad_bodies {
        let answer = c.call(Method::POST, submit, request).await;
        c.expect(&answer, status, "");
        assert_ne!(answer.body["field"], "?", "{}", answer.body);
    }
    s.wait(&done).await;
    Submitted {
        done,
        reviewed,
        held,
        waiting,
    }
}

/// Lists objectives (every documented status), reads one, its chain and its event stream.
async fn objectives(c: &Contract, s: &Server, ids: &Submitted) {
    let Submitted { done, waiting, .. } = ids;
    let get = |path: &str| s.request(Method::GET, path);
    let list = "/v1/objectives";
    let answer = c.call(Method::GET, list, get(list)).await;
    c.expect(&answer, StatusCode::OK, list);
    for status in c.enum_values(list, "status") {
        let answer = c
            .call(Method::GET, list, get(&format!("{list}?status={status}")))
            .await;
        c.expect(&answer, StatusCode::OK, format!("status={status}"));
    }
    for query in [
        "limit=1",
        &format!("after={done}"),
        "status=failed&limit=500",
    ] {
        let answer = c
            .call(Method::GET, list, get(&format!("{list}?{query}")))
            .await;
        c.query_declared(list, query, true);
        c.expect(&answer, StatusCode::OK, query);
    }
    for query in ["status=review", "limit=0", "after=x", "page=2", "status="] {
        let answer = c
            .call(Method::GET, list, get(&format!("{list}?{query}")))
            .await;
        c.query_declared(list, query, false);
        c.expect(&answer, StatusCode::BAD_REQUEST, query);
    }

    // A fenced result joins the chain of `waiting` (its `wait` task runs on no agent), so the
    // chain read below holds one.
    let objective: ObjectiveId = waiting.parse().unwrap();
    let task = s.swarm.objective(objective).await.unwrap().tasks[0].id;
    s.swarm
        .record_fenced(FencedResult {
            objective,
            task,
            attempt: 1,
            agent: AgentId(1),
            outcome: OutcomeSummary::Failed {
                kind: FailureKind::Timeout,
            },
        })
        .await
        .unwrap();

    // One objective: its view, its chain, its events.
    for template in ["/v1/objectives/{id}", "/v1/objectives/{id}/chain"] {
        for (id, status) in [
            (done.as_str(), StatusCode::OK),
            (waiting.as_str(), StatusCode::OK),
            ("nope", StatusCode::BAD_REQUEST),
            (UNKNOWN_OBJECTIVE, StatusCode::NOT_FOUND),
        ] {
            let path = template.replace("{id}", id);
            let answer = c.call(Method::GET, template, get(&path)).await;
            c.expect(&answer, status, path);
        }
    }
    let events = "/v1/objectives/{id}/events";
    let history = c
        .stream(
            events,
            get(&format!("/v1/objectives/{done}/events")),
            |_| false,
        )
        .await;
    assert_eq!(history.last().unwrap()["type"], "objective_succeeded");
    for (path, last_event_id, status) in [
        (
            format!("/v1/objectives/{done}/events"),
            "x",
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/objectives/{done}/events?after=x"),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/objectives/nope/events".to_owned(),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/objectives/{UNKNOWN_OBJECTIVE}/events"),
            "",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let mut request = get(&path);
        if !last_event_id.is_empty() {
            request = request.header("Last-Event-ID", last_event_id);
        }
        let answer = c.call(Method::GET, events, request).await;
        c.expect(&answer, status, path);
    }
}

/// Lists tasks: every documented status and order works; a value the document refuses is
/// refused, an empty one included.
async fn task_listing(c: &Contract, s: &Server, ids: &Submitted) {
    let Submitted { done, .. } = ids;
    let list = "/v1/objectives";
    let get = |path: &str| s.request(Method::GET, path);
    let tasks = "/v1/tasks";
    for status in c.enum_values(tasks, "status") {
        let answer = c
            .call(Method::GET, tasks, get(&format!("{tasks}?status={status}")))
            .await;
        c.expect(&answer, StatusCode::OK, format!("status={status}"));
    }
    for order in c.enum_values(tasks, "order") {
        let answer = c
            .call(Method::GET, tasks, get(&format!("{tasks}?order={order}")))
            .await;
        c.expect(&answer, StatusCode::OK, format!("order={order}"));
    }
    for query in [
        format!("objective={done}"),
        "capability=judge".to_owned(),
        "agent=A1".to_owned(),
        "agent=1".to_owned(),
        "limit=2&after=T1".to_owned(),
        "after=7".to_owned(),
    ] {
        let answer = c
            .call(Method::GET, tasks, get(&format!("{tasks}?{query}")))
            .await;
        c.query_declared(tasks, &query, true);
        c.expect(&answer, StatusCode::OK, query);
    }
    for query in [
        "status=done",
        "order=up",
        "limit=501",
        "agent=B1",
        "after=T",
        "after=X7",
        "page=1",
    ] {
        let answer = c
            .call(Method::GET, tasks, get(&format!("{tasks}?{query}")))
            .await;
        c.query_declared(tasks, query, false);
        c.expect(&answer, StatusCode::BAD_REQUEST, query);
    }
    // An empty value is a value: refused where the document's schema refuses it.
    for template in [tasks, list] {
        let operation = c.operation(&Method::GET, template);
        for parameter in operation["parameters"].as_array().unwrap() {
            if parameter["in"] != "query" {
                continue;
            }
            let name = parameter["name"].as_str().unwrap();
            let admitted = c.errors(&parameter["schema"], &json!("")).is_empty();
            let answer = c
                .call(Method::GET, template, get(&format!("{template}?{name}=")))
                .await;
            if answer.status.is_success() != admitted {
                c.violation(format!(
                    "GET {template}?{name}= answered {}, but the document {} an empty `{name}`",
                    answer.status,
                    if admitted { "admits" } else { "refuses" }
                ));
            }
        }
    }
}

/// The review queue: approve (with `null`, refused bodies), reject, retry.
async fn review(c: &Contract, s: &Server, ids: &Submitted) {
    let Submitted { reviewed, .. } = ids;
    let post = |path: &str| s.request(Method::POST, path);
    let in_review = |objective: &str| {
        let objective = objective.to_owned();
        async move {
            let path = format!("/v1/tasks?status=review&objective={objective}");
            loop {
                let page = s.get_json(&path).await;
                if let Some(task) = page["tasks"].as_array().unwrap().first() {
                    return task["task"]["id"].as_str().unwrap().to_owned();
                }
                let id: swarm_protocol::ObjectiveId = objective.parse().unwrap();
                let mut feed = s.swarm.subscribe().unwrap();
                if s.get_json(&path).await["tasks"]
                    .as_array()
                    .unwrap()
                    .is_empty()
                {
                    next_event(&mut feed, "a task in review", |e| {
                        matches!(e, swarm_protocol::Event::TaskInReview { objective, .. } if *objective == id)
                    })
                    .await;
                }
            }
        }
    };
    let approve = "/v1/tasks/{id}/approve";
    let first = in_review(&reviewed[0]).await;
    let answer = c
        .call(
            Method::POST,
            approve,
            post(&format!("/v1/tasks/{first}/approve"))
                .header("content-type", "application/json")
                .body("null"),
        )
        .await;
    c.expect(&answer, StatusCode::NO_CONTENT, "");
    for (id, request, status) in [
        ("T999999", None, StatusCode::NOT_FOUND),
        ("x", None, StatusCode::BAD_REQUEST),
        (first.as_str(), None, StatusCode::CONFLICT),
        (
            first.as_str(),
            Some(json!({ "outptu": 1 })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            first.as_str(),
            Some(json!([1])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let mut builder = post(&format!("/v1/tasks/{id}/approve"));
        if let Some(body) = request {
            builder = builder.json(&body);
        }
        let answer = c.call(Method::POST, approve, builder).await;
        c.expect(&answer, status, id);
    }
    let second = in_review(&reviewed[1]).await;
    let reject = "/v1/tasks/{id}/reject";
    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({ "reason": "wrong" }), StatusCode::NO_CONTENT),
        (json!({ "reason": "again" }), StatusCode::CONFLICT),
    ] {
        let answer = c
            .call(
                Method::POST,
                reject,
                post(&format!("/v1/tasks/{second}/reject")).json(&body),
            )
            .await;
        c.expect(&answer, status, body);
    }
    let third = in_review(&reviewed[2]).await;
    let retry = "/v1/tasks/{id}/retry";
    for (id, status) in [
        (third.as_str(), StatusCode::NO_CONTENT),
        ("x", StatusCode::BAD_REQUEST),
        ("T999999", StatusCode::NOT_FOUND),
        (first.as_str(), StatusCode::CONFLICT),
    ] {
        let answer = c
            .call(Method::POST, retry, post(&format!("/v1/tasks/{id}/retry")))
            .await;
        c.expect(&answer, status, id);
    }
}

/// Cancels the objective that runs until cancelled.
async fn cancel(c: &Contract, s: &Server, ids: &Submitted) {
    let Submitted { held, .. } = ids;
    let post = |path: &str| s.request(Method::POST, path);
    let cancel = "/v1/objectives/{id}/cancel";
    for (id, status) in [
        (held.as_str(), StatusCode::OK),
        ("nope", StatusCode::BAD_REQUEST),
        (UNKNOWN_OBJECTIVE, StatusCode::NOT_FOUND),
    ] {
        let answer = c
            .call(
                Method::POST,
                cancel,
                post(&format!("/v1/objectives/{id}/cancel")),
            )
            .await;
        c.expect(&answer, status, id);
    }
}

/// A budget decision: `continue` on an objective paused at its `token_budget` (a `spend`
/// agent reports ten tokens a task against a budget of five), and refused ones.
async fn budget(c: &Contract, s: &Server, ids: &Submitted) {
    s.swarm
        .register_agent(
            crate::common::reg("spend-0", &["spend"], 1),
            AgentFactory::shared(FnAgent::new(|_task: Task, _ctx| async move {
                TaskOutcome::Succeeded {
                    output: json!("spent"),
                    usage: Some(Usage {
                        input_tokens: 5,
                        output_tokens: 5,
                        cached_input_tokens: 0,
                        cost_usd_micros: None,
                    }),
                }
            })),
        )
        .await
        .unwrap();
    let mut feed = s.swarm.subscribe().unwrap();
    let post = |path: &str| s.request(Method::POST, path);
    let submit = "/v1/objectives";
    let spending = json!({
        "goal": "spend, then ask",
        "tasks": [{ "id": "a", "capability": "spend" },
                  { "id": "b", "capability": "spend", "depends_on": ["a"] }],
        "limits": { "token_budget": 5, "on_budget": "approve" },
    });
    let paused = c
        .call(Method::POST, submit, post(submit).json(&spending))
        .await;
    c.expect(&paused, StatusCode::ACCEPTED, "spending");
    let paused = paused.body["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(PATIENCE, async {
        while !matches!(
            feed.recv().await.unwrap().event,
            Event::BudgetReached { .. }
        ) {}
    })
    .await
    .unwrap();
    let got = c
        .call(
            Method::GET,
            "/v1/objectives/{id}",
            s.request(Method::GET, &format!("/v1/objectives/{paused}")),
        )
        .await;
    assert_eq!(
        got.body["budget_pause"]["limit"], "token_budget",
        "{}",
        got.body
    );
    let pauses = "/v1/budget-pauses";
    let listed = c
        .call(Method::GET, pauses, s.request(Method::GET, pauses))
        .await;
    c.expect(&listed, StatusCode::OK, "pauses");
    assert_eq!(listed.body[0]["id"], paused.as_str(), "{}", listed.body);
    let budget = "/v1/objectives/{id}/budget";
    let go_on = json!({ "decision": "continue", "by": "ann", "add_tokens": 100 });
    for (id, body, status) in [
        (paused.as_str(), go_on.clone(), StatusCode::OK),
        (ids.done.as_str(), go_on.clone(), StatusCode::CONFLICT),
        ("nope", go_on.clone(), StatusCode::BAD_REQUEST),
        (UNKNOWN_OBJECTIVE, go_on.clone(), StatusCode::NOT_FOUND),
        (
            paused.as_str(),
            json!({ "decision": "maybe", "by": "ann" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = c
            .call(
                Method::POST,
                budget,
                post(&format!("/v1/objectives/{id}/budget")).json(&body),
            )
            .await;
        c.expect(&answer, status, id);
    }
}

/// External events: one the `wait` task takes, one kept, refused ones.
async fn external_events(c: &Contract, s: &Server, ids: &Submitted) {
    let Submitted { waiting, .. } = ids;
    let get = |path: &str| s.request(Method::GET, path);
    let post = |path: &str| s.request(Method::POST, path);
    let post_event = "/v1/events";
    let key = format!("contract-{waiting}");
    for (body, idempotency, status) in [
        (
            json!({ "key": key, "payload": { "ok": true } }),
            Some("ev-1"),
            StatusCode::ACCEPTED,
        ),
        (
            json!({ "key": "nobody-waits", "ttl": "1h" }),
            None,
            StatusCode::ACCEPTED,
        ),
        (
            json!({ "key": "other", "payload": 1 }),
            Some("ev-1"),
            StatusCode::CONFLICT,
        ),
        (json!({ "key": "" }), None, StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({ "key": "has space" }),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "key": "k", "ttl": "0s" }),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "key": "k", "ttl": "31days" }),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "key": "k", "ttl": "soon" }),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "kye": "k" }),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let mut request = post(post_event).json(&body);
        if let Some(idempotency) = idempotency {
            request = request.header("Idempotency-Key", idempotency);
        }
        let answer = c.call(Method::POST, post_event, request).await;
        c.expect(&answer, status, body);
    }
    s.wait(&waiting).await;
    let pending = "/v1/events/pending";
    let answer = c.call(Method::GET, pending, get(pending)).await;
    c.expect(&answer, StatusCode::OK, "");
    assert_eq!(answer.body.as_array().unwrap().len(), 1, "{}", answer.body);
}

/// Agents: the list (with a model agent's breaker and limiter), a registration, a removal.
/// The provider accounts, with an agent registered on one.
async fn accounts(c: &Contract, s: &Server) {
    let agent = json!({ "name": "on-key", "account": "key", "model": "m",
                        "capabilities": ["write"] });
    let registered = c
        .call(
            Method::POST,
            "/v1/agents",
            s.request(Method::POST, "/v1/agents").json(&agent),
        )
        .await;
    c.expect(&registered, StatusCode::CREATED, "");
    let answer = c
        .call(
            Method::GET,
            "/v1/accounts",
            s.request(Method::GET, "/v1/accounts"),
        )
        .await;
    c.expect(&answer, StatusCode::OK, "");
    assert_eq!(answer.body[0]["name"], "key", "{}", answer.body);
}

async fn agents(c: &Contract, s: &Server) {
    let get = |path: &str| s.request(Method::GET, path);
    let post = |path: &str| s.request(Method::POST, path);
    let delete = |path: &str| s.request(Method::DELETE, path);
    let agents = "/v1/agents";
    let registered = c
        .call(Method::POST, agents, post(agents).json(&model_agent()))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let model_id = registered.body["id"].as_str().unwrap().to_owned();
    for body in [
        json!({ "name": "", "provider": "openai", "base_url": "http://127.0.0.1:9", "model": "m", "capabilities": ["write"] }),
        json!({ "name": "m2", "provider": "openai", "base_url": "http://127.0.0.1:9", "model": "m", "capabilities": [] }),
        json!({ "name": "m2", "provider": "openai", "base_url": "ftp://x", "model": "m", "capabilities": ["w"] }),
        json!({ "name": "m2", "provider": "openai", "base_url": "http://127.0.0.1:9", "model": "m", "capabilities": ["w"], "hard_timeout": "2years" }),
        json!({ "name": "m2", "provider": "openai", "base_url": "http://127.0.0.1:9", "model": "m", "capabilities": ["w"], "api_key_env": "SWARM_TEST_SURELY_UNSET" }),
        json!({ "name": "model-1", "provider": "openai", "base_url": "http://127.0.0.1:9", "model": "m", "capabilities": ["w"] }),
    ] {
        let answer = c.call(Method::POST, agents, post(agents).json(&body)).await;
        if !answer.status.is_client_error() {
            c.violation(format!("{body}: expected a 4xx, got {}", answer.status));
        }
    }
    let answer = c.call(Method::GET, agents, get(agents)).await;
    c.expect(&answer, StatusCode::OK, "");
    assert!(
        answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["breaker"].is_object()),
        "{}",
        answer.body
    );
    let deregister = "/v1/agents/{id}";
    for (path, status) in [
        (
            format!("/v1/agents/{model_id}?grace=2h"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/agents/{model_id}?grace=soon"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/v1/agents/{model_id}?wait=1s"),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/agents/x".to_owned(), StatusCode::BAD_REQUEST),
        ("/v1/agents/A999999".to_owned(), StatusCode::NOT_FOUND),
        (
            format!("/v1/agents/{model_id}?grace=1s"),
            StatusCode::ACCEPTED,
        ),
    ] {
        let answer = c.call(Method::DELETE, deregister, delete(&path)).await;
        c.expect(&answer, status, path);
    }
}

/// Schedules: created, refused, listed, paused, resumed, deleted.
async fn schedules(c: &Contract, s: &Server) {
    let get = |path: &str| s.request(Method::GET, path);
    let post = |path: &str| s.request(Method::POST, path);
    let schedules = "/v1/schedules";
    let answer = c
        .call(Method::POST, schedules, post(schedules).json(&nightly()))
        .await;
    c.expect(&answer, StatusCode::CREATED, "");
    for body in [
        nightly(),
        json!({ "name": "", "cron": "0 3 * * *", "template": { "goal": "g" } }),
        json!({ "name": "a b", "cron": "0 3 * * *", "template": { "goal": "g" } }),
        json!({ "name": "x".repeat(65), "cron": "0 3 * * *", "template": { "goal": "g" } }),
        json!({ "name": "n", "cron": "whenever", "template": { "goal": "g" } }),
        json!({ "name": "n", "cron": "0 3 * * *", "time_zone": "Mars/Base", "template": { "goal": "g" } }),
        json!({ "name": "n", "cron": "0 3 * * *", "template": { "goal": "g", "tasks": [{ "id": "a", "capability": "work", "depends_on": ["b"] }] } }),
    ] {
        let answer = c
            .call(Method::POST, schedules, post(schedules).json(&body))
            .await;
        if !answer.status.is_client_error() {
            c.violation(format!("{body}: expected a 4xx, got {}", answer.status));
        }
    }
    // Every documented overlap policy, and a catch-up window.
    let overlaps = c.resolve(&json!({ "$ref": "#/components/schemas/OverlapPolicy" }))["enum"]
        .as_array()
        .unwrap()
        .clone();
    for overlap in overlaps {
        let mut body = nightly();
        body["name"] = json!(format!("overlap-{}", overlap.as_str().unwrap()));
        body["overlap"] = overlap;
        body["catch_up"] = json!({ "policy": "run_latest", "window": "1h" });
        c.body_declared(&Method::POST, schedules, &body, true);
        let answer = c
            .call(Method::POST, schedules, post(schedules).json(&body))
            .await;
        c.expect(&answer, StatusCode::CREATED, body);
    }
    let answer = c.call(Method::GET, schedules, get(schedules)).await;
    c.expect(&answer, StatusCode::OK, "");
    for (template, method) in [
        ("/v1/schedules/{name}/pause", Method::POST),
        ("/v1/schedules/{name}/resume", Method::POST),
        ("/v1/schedules/{name}", Method::DELETE),
    ] {
        for (name, status) in [
            (
                "nightly",
                if method == Method::DELETE {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::OK
                },
            ),
            ("nope", StatusCode::NOT_FOUND),
            ("a%20b", StatusCode::BAD_REQUEST),
        ] {
            let path = template.replace("{name}", name);
            let answer = c
                .call(method.clone(), template, s.request(method.clone(), &path))
                .await;
            c.expect(&answer, status, format!("{method} {path}"));
        }
    }
}

/// Hooks: declared, listed, delivered to, deleted.
async fn hooks(c: &Contract, s: &Server) {
    let get = |path: &str| s.request(Method::GET, path);
    let post = |path: &str| s.request(Method::POST, path);
    let delete = |path: &str| s.request(Method::DELETE, path);
    let hooks = "/v1/hooks";
    let answer = c
        .call(Method::POST, hooks, post(hooks).json(&hook_config("build")))
        .await;
    c.expect(&answer, StatusCode::CREATED, "");
    let mut unset = hook_config("other");
    unset["secret_env"] = json!("SWARM_TEST_SURELY_UNSET");
    let mut slow = hook_config("slow");
    slow["tolerance"] = json!("2years");
    for body in [
        hook_config("build"),
        hook_config("configured"),
        hook_config(""),
        hook_config("a/b"),
        hook_config(&"x".repeat(49)),
        unset,
        slow,
    ] {
        let answer = c.call(Method::POST, hooks, post(hooks).json(&body)).await;
        if !answer.status.is_client_error() {
            c.violation(format!("{body}: expected a 4xx, got {}", answer.status));
        }
    }
    let answer = c.call(Method::GET, hooks, get(hooks)).await;
    c.expect(&answer, StatusCode::OK, "");
    let receive = "/v1/hooks/{name}";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let payload = json!({ "goal": "from a hook" }).to_string();
    let delivery = |name: &str, signature: Option<String>, id: Option<&str>, body: &str| {
        let mut request = s
            .client
            .post(s.url(&format!("/v1/hooks/{name}")))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("x-swarm-signature", signature);
        }
        if let Some(id) = id {
            request = request.header("x-swarm-delivery", id);
        }
        request
    };
    let signed = |body: &str| Some(sign(HOOK_SECRET.as_bytes(), now, body.as_bytes()));
    let other = json!({ "goal": "other" }).to_string();
    let no_goal = json!({ "title": "x" }).to_string();
    for (request, status) in [
        (
            delivery("build", signed(&payload), Some("d-1"), &payload),
            StatusCode::ACCEPTED,
        ),
        (
            delivery("build", signed(&payload), Some("d-1"), &payload),
            StatusCode::ACCEPTED,
        ),
        (
            delivery("build", signed(&other), Some("d-1"), &other),
            StatusCode::CONFLICT,
        ),
        (
            delivery("build", signed(&payload), None, &payload),
            StatusCode::BAD_REQUEST,
        ),
        (
            delivery("build", signed("{"), Some("d-2"), "{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            delivery("build", signed(&no_goal), Some("d-3"), &no_goal),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            delivery("build", None, Some("d-4"), &payload),
            StatusCode::UNAUTHORIZED,
        ),
        (
            delivery("build", Some("t=1,v1=00".into()), Some("d-4"), &payload),
            StatusCode::UNAUTHORIZED,
        ),
        (
            delivery("nope", signed(&payload), Some("d-5"), &payload),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let answer = c.call(Method::POST, receive, request).await;
        c.expect(&answer, status, "");
    }
    let delete_hook = "/v1/hooks/{name}";
    for (name, status) in [
        ("build", StatusCode::NO_CONTENT),
        ("build", StatusCode::NOT_FOUND),
        ("configured", StatusCode::CONFLICT),
        ("a%20b", StatusCode::BAD_REQUEST),
    ] {
        let answer = c
            .call(
                Method::DELETE,
                delete_hook,
                delete(&format!("/v1/hooks/{name}")),
            )
            .await;
        c.expect(&answer, status, name);
    }
}

/// The swarm's stream, from the start of the log to the last event so far: every kind of
/// event the scenario produced.
async fn swarm_stream(c: &Contract, s: &Server) {
    let get = |path: &str| s.request(Method::GET, path);
    let last = s.swarm.store().unwrap().info().await.unwrap().last_seq;
    let all = "/v1/events";
    let seen = c
        .stream(all, get(all).header("Last-Event-ID", "0"), |data| {
            data["seq"].as_u64() >= Some(last)
        })
        .await;
    assert!(seen.len() as u64 >= last, "{} of {last}", seen.len());
    for (request, status) in [
        (
            get(all).header("Last-Event-ID", "x"),
            StatusCode::BAD_REQUEST,
        ),
        (get("/v1/events?after=-1"), StatusCode::BAD_REQUEST),
        (get("/v1/events?from=1"), StatusCode::BAD_REQUEST),
    ] {
        let answer = c.call(Method::GET, all, request).await;
        c.expect(&answer, status, "");
    }
}

/// What the server refuses for a reason a schema can say, the document says; what it takes,
/// the document admits; and the parameters say what the server takes.
fn declared(c: &Contract) {
    let submit = "/v1/objectives";
    let approve = "/v1/tasks/{id}/approve";
    let post_event = "/v1/events";
    let agents = "/v1/agents";
    let schedules = "/v1/schedules";
    let hooks = "/v1/hooks";
    let all = "/v1/events";
    let events = "/v1/objectives/{id}/events";
    let agent = |name: &str, capabilities: Value, base_url: &str| json!({ "name": name, "provider": "openai", "base_url": base_url, "model": "m", "capabilities": capabilities });
    let named =
        |name: &str| json!({ "name": name, "cron": "0 3 * * *", "template": { "goal": "g" } });
    let wait_with_capability = json!({ "goal": "g", "tasks": [{ "id": "w", "kind": "wait", "event": "e", "timeout": "1h", "capability": "work" }] });
    let wait_without_event =
        json!({ "goal": "g", "tasks": [{ "id": "w", "kind": "wait", "timeout": "1h" }] });
    let agent_with_event =
        json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work", "event": "e" }] });
    let approval_task =
        json!({ "goal": "g", "tasks": [{ "id": "a", "kind": "approval", "input": 1 }] });
    for (method, template, body, admitted) in [
        (Method::POST, submit, two_step(), true),
        (Method::POST, submit, waits(), true),
        (Method::POST, submit, approval_task, true),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a", "kind": "approval", "input": 1,
                                             "timeout": "4h", "on_timeout": "escalate" }] }),
            true,
        ),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work",
                                             "review_timeout": "1d", "on_review_timeout": "approve" }] }),
            true,
        ),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a", "kind": "approval", "input": 1,
                                             "on_timeout": "approve" }] }),
            false,
        ),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work", "timeout": "1h",
                                             "on_timeout": "approve" }] }),
            false,
        ),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a", "kind": "approval", "input": 1,
                                             "review_timeout": "1h" }] }),
            false,
        ),
        (Method::POST, submit, json!({ "goal": 3 }), false),
        (Method::POST, submit, json!(null), false),
        (Method::POST, submit, wait_with_capability, false),
        (Method::POST, submit, wait_without_event, false),
        (Method::POST, submit, agent_with_event, false),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "tasks": [{ "id": "a" }] }),
            false,
        ),
        (
            Method::POST,
            submit,
            json!({ "goal": "g", "limits": { "deadline": "soon" } }),
            false,
        ),
        (Method::POST, approve, json!(null), true),
        (Method::POST, approve, json!({}), true),
        (Method::POST, approve, json!({ "output": [1] }), true),
        (Method::POST, approve, json!([1]), false),
        (Method::POST, approve, json!({ "outptu": 1 }), false),
        (
            Method::POST,
            post_event,
            json!({ "key": "k", "ttl": "1h 30m" }),
            true,
        ),
        (Method::POST, post_event, json!({ "key": "" }), false),
        (
            Method::POST,
            post_event,
            json!({ "key": "has space" }),
            false,
        ),
        (
            Method::POST,
            post_event,
            json!({ "key": "k", "ttl": "soon" }),
            false,
        ),
        (Method::POST, agents, model_agent(), true),
        (
            Method::POST,
            agents,
            agent("", json!(["w"]), "http://x"),
            false,
        ),
        (
            Method::POST,
            agents,
            agent("m", json!([]), "http://x"),
            false,
        ),
        (
            Method::POST,
            agents,
            agent("m", json!(["w"]), "ftp://x"),
            false,
        ),
        (Method::POST, schedules, nightly(), true),
        (Method::POST, schedules, named(""), false),
        (Method::POST, schedules, named("a b"), false),
        (Method::POST, schedules, named(&"x".repeat(65)), false),
        (Method::POST, hooks, hook_config("build"), true),
        (Method::POST, hooks, hook_config(""), false),
        (Method::POST, hooks, hook_config("a/b"), false),
        (Method::POST, hooks, hook_config(&"x".repeat(49)), false),
    ] {
        c.body_declared(&method, template, &body, admitted);
    }
    for (method, template) in [
        (Method::DELETE, "/v1/schedules/{name}"),
        (Method::POST, "/v1/schedules/{name}/pause"),
        (Method::POST, "/v1/hooks/{name}"),
        (Method::DELETE, "/v1/hooks/{name}"),
    ] {
        let schema = &c.parameter_of(&method, template, "name")["schema"];
        for (name, admitted) in [("nightly", true), ("a b", false), ("", false)] {
            if c.errors(schema, &json!(name)).is_empty() != admitted {
                c.violation(format!(
                    "{method} {template}: the document is wrong about name `{name}`"
                ));
            }
        }
    }
    for template in [all, events] {
        let schema = &c.parameter_of(&Method::GET, template, "Last-Event-ID")["schema"];
        if c.errors(schema, &json!(null)).is_empty() || !c.errors(schema, &json!(3)).is_empty() {
            c.violation(format!(
                "GET {template}: `Last-Event-ID` is not a sequence number: {schema}"
            ));
        }
    }
}

/// The limits answer as the document declares (413 past the body limit, 422 `over-limit` past
/// a ceiling on JSON, 422 past the graph ceiling, 429 with `Retry-After` for the backlog, the
/// quota and failed authentications), and the document states this server's ceilings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_as_the_document_declares() {
    let ceilings = LimitsSection {
        json_depth_max: 4,
        string_bytes_max: 32,
        array_items_max: 3,
        max_tasks: 2,
        ..LimitsSection::default()
    };
    let quota = 12;
    let server = Server::start_with(ApiConfig {
        token: Some(TOKEN.into()),
        body_limit_bytes: 4096,
        limits: Limits {
            client: Some(Rate::new(
                NonZeroU32::new(quota).unwrap(),
                Duration::from_secs(3600),
                NonZeroU32::new(quota).unwrap(),
            )),
            backlog_max: Some(1),
            // Read the backlog on every request, so each answer sees the one before.
            backlog_refresh: Duration::ZERO,
            ..Limits::default()
        },
        ceilings,
        ..ApiConfig::default()
    })
    .await;
    let s = &server;
    let doc: Value = s.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        doc["info"]["x-ceilings"],
        json!({
            "body_bytes_max": 4096, "json_depth_max": 4, "string_bytes_max": 32,
            "array_items_max": 3, "duration_max": "366 days", "max_tasks": 2,
            "max_depth": ceilings.max_depth, "max_fanout": ceilings.max_fanout,
        })
    );
    assert_eq!(
        doc["components"]["schemas"]["Objective"]["properties"]["tasks"]["maxItems"],
        2
    );
    let c = Contract::new(doc);
    let submit = "/v1/objectives";
    let post = |body: &Value| s.request(Method::POST, submit).json(body);
    let task = |id: &str| json!({ "id": id, "capability": "work" });
    let over = [
        (
            post(
                &json!({ "goal": "g", "tasks": [{ "id": "a", "capability": "work", "input": [[[[1]]]] }] }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-limit",
        ),
        (
            post(&json!({ "goal": "g".repeat(33), "tasks": [task("a")] })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-limit",
        ),
        (
            post(&json!({ "goal": "g", "tasks": [task("a"), task("b"), task("c"), task("d")] })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-limit",
        ),
        (
            post(&json!({ "goal": "g", "tasks": [task("a"), task("b"), task("c")] })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-graph",
        ),
        (
            s.request(Method::POST, submit)
                .header("content-type", "application/json")
                .body(vec![b' '; 4097]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
        (post(&hold_forever()), StatusCode::ACCEPTED, ""),
        (post(&two_step()), StatusCode::TOO_MANY_REQUESTS, "backlog"),
    ];
    let mut held = None;
    for (request, status, kind) in over {
        let answer = c.call(Method::POST, submit, request).await;
        c.expect(&answer, status, kind);
        if status.is_success() {
            held = answer.body["id"].as_str().map(str::to_owned);
        } else {
            assert_eq!(
                answer.body["type"],
                format!("urn:swarm:problem:{kind}"),
                "{}",
                answer.body
            );
        }
    }
    let answer = c
        .call(
            Method::POST,
            "/v1/events",
            s.request(Method::POST, "/v1/events")
                .json(&json!({ "key": "k" })),
        )
        .await;
    c.expect(&answer, StatusCode::TOO_MANY_REQUESTS, "the backlog");
    // The quota: every request so far counted, the document's included.
    let mut answers = Vec::new();
    for _ in 0..quota {
        let answer = c
            .call(
                Method::GET,
                "/v1/agents",
                s.request(Method::GET, "/v1/agents"),
            )
            .await;
        answers.push(answer.status);
    }
    assert_eq!(
        answers.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{answers:?}"
    );
    // Failed authentications, from a client that presents a wrong token.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let request = s.client.get(s.url("/v1/agents")).bearer_auth("wrong");
        statuses.push(c.call(Method::GET, "/v1/agents", request).await.status);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    c.assert_conforms();
    let held: swarm_protocol::ObjectiveId = held.unwrap().parse().unwrap();
    server.swarm.cancel(held).await.unwrap();
    server.finish().await;
}
