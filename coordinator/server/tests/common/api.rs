//! A served API for tests: a durable swarm in a temporary directory with the standard test
//! fleet registered, `swarm_server::serve` on 127.0.0.1:0, and a reqwest client
//! with helpers for the usual calls. Nothing here sleeps: a test waits for an objective's end
//! on its event stream (which ends after the terminal event) or with `Swarm::wait`, and for
//! anything else on an event, each wait bounded by [`PATIENCE`].
//!
//! Only public APIs are used (`Swarm`, `swarm_server::…`), so changes inside the
//! coordinator reach the tests through this file and the few tests that need more.

use std::collections::HashMap;
use std::sync::Arc;

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent, WorkAgent};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{Event, EventRecord, FailureKind, ObjectiveId, ObjectiveView, TaskOutcome};
use swarm_server::ApiConfig;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::{PATIENCE, reg};

/// The bearer token tests that need one use.
pub const TOKEN: &str = "s3cret-token";

/// Registers the standard test fleet on `swarm`, one agent of each capability (up to 8 tasks
/// at once each), in this order:
///
/// - `work-0` (`work`): [`WorkAgent`], `{"sum": n + Σ upstream sums}`;
/// - `echo-0` (`echo`): [`EchoAgent`], answers with the input it got;
/// - `judge-0` (`judge`): its output `{"answer": "wrong"}` is invalid ("`answer` must be a
///   number"), so its task goes to review;
/// - `gate-0` (`gate`): each task waits for a permit of the returned semaphore, then succeeds
///   with `"through"`;
/// - `hold-0` (`hold`): never finishes.
pub async fn register_fleet(swarm: &Swarm) -> Arc<Semaphore> {
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
        TaskOutcome::Failed {
            kind: FailureKind::InvalidOutput,
            message: "output does not match the schema: `answer` must be a number".into(),
            partial_output: Some(json!({ "answer": "wrong" })),
            usage: None,
            retry_after: None,
        }
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
    gate
}

/// A served API over a durable swarm with the standard fleet (see [`register_fleet`]).
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The client [`Server::request`] sends with (no cookies, follows redirects).
    pub client: reqwest::Client,
    /// The bearer token requests carry, if the server has one.
    pub token: Option<String>,
    /// The swarm behind the server, for what a test checks outside the API.
    pub swarm: Arc<Swarm>,
    /// Permits for the `gate` agent: each lets one gated task finish.
    pub gate: Arc<Semaphore>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server on a fresh data directory, with `token` as its bearer token if any.
    pub async fn start(token: Option<&str>) -> Self {
        Self::start_with(ApiConfig {
            token: token.map(str::to_owned),
            ..ApiConfig::default()
        })
        .await
    }

    /// A server on a fresh data directory with this API configuration.
    pub async fn start_with(config: ApiConfig) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config).await
    }

    /// A server whose event log is in `dir`: a restart when a server used it before (see
    /// [`Server::finish`], which gives the directory back).
    pub async fn start_in(dir: tempfile::TempDir, config: ApiConfig) -> Self {
        let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
            .await
            .unwrap();
        let gate = register_fleet(&swarm).await;
        let swarm = Arc::new(swarm);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = config.token.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(swarm_server::serve(
            swarm.clone(),
            listener,
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
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

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, with the server's token if it has one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `method path` with no body.
    pub async fn send(&self, method: Method, path: &str) -> Response {
        self.request(method, path).send().await.unwrap()
    }

    /// `GET path`, whatever it answers.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST path` with no body.
    pub async fn post_empty(&self, path: &str) -> Response {
        self.send(Method::POST, path).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path).await
    }

    /// `GET path`, which must answer 200; its body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.unwrap()
    }

    /// `GET path`, which must answer 200; its body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// `POST /v1/objectives`, with an `Idempotency-Key` if `key` is given.
    pub async fn submit(&self, objective: &Value, key: Option<&str>) -> Response {
        let mut request = self.request(Method::POST, "/v1/objectives").json(objective);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// Submits `objective`, which must be accepted (202); its id.
    pub async fn submit_ok(&self, objective: &Value) -> String {
        let response = self.submit(objective, None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/objectives/{id}`: the objective's view.
    pub async fn view(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/objectives/{id}")).await
    }

    /// `GET /v1/objectives/{id}/chain`: its events, oldest first.
    pub async fn chain(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/objectives/{id}/chain")).await
    }

    /// `POST /v1/objectives/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Response {
        self.post_empty(&format!("/v1/objectives/{id}/cancel"))
            .await
    }

    /// `POST /v1/tasks/{task}/approve`, with `body` (`{"output": …}`) if given.
    pub async fn approve(&self, task: &str, body: Option<&Value>) -> Response {
        let path = format!("/v1/tasks/{task}/approve");
        match body {
            Some(body) => self.post(&path, body).await,
            None => self.post_empty(&path).await,
        }
    }

    /// `POST /v1/tasks/{task}/reject` with `reason`.
    pub async fn reject(&self, task: &str, reason: &str) -> Response {
        self.post(
            &format!("/v1/tasks/{task}/reject"),
            &json!({ "reason": reason }),
        )
        .await
    }

    /// `POST /v1/events`, with an `Idempotency-Key` if `key` is given.
    pub async fn post_event(&self, body: &Value, key: Option<&str>) -> Response {
        let mut request = self.request(Method::POST, "/v1/events").json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// `GET /metrics`, parsed (see [`prometheus_samples`]).
    pub async fn metrics(&self) -> HashMap<String, f64> {
        prometheus_samples(&self.get_text("/metrics").await)
    }

    /// The agent of `name` in `GET /v1/agents`.
    pub async fn agent_named(&self, name: &str) -> Value {
        let agents = self.get_json("/v1/agents").await;
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no agent {name} in {agents:#}"))
            .clone()
    }

    /// The objective's event stream, from after `last_event_id`.
    pub async fn events(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> impl Stream<Item = Sse> + Unpin + use<> {
        self.stream(&format!("/v1/objectives/{id}/events"), last_event_id)
            .await
    }

    /// The event stream at `path`, from after `last_event_id`.
    pub async fn stream(
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

    /// Every event of the objective's stream, until it ends (after the objective's terminal
    /// event).
    pub async fn all_events(&self, id: &str, last_event_id: Option<u64>) -> Vec<Sse> {
        let stream = self.events(id, last_event_id).await;
        tokio::time::timeout(PATIENCE, stream.collect::<Vec<_>>())
            .await
            .expect("the event stream did not end")
    }

    /// Waits for the objective to end, through its event stream; every event of it.
    pub async fn wait_end(&self, id: &str) -> Vec<Sse> {
        self.all_events(id, None).await
    }

    /// Waits for the objective `id` (an `ObjectiveId` or its text) to end, through
    /// `Swarm::wait`; its view.
    pub async fn wait(&self, id: impl std::fmt::Display) -> ObjectiveView {
        let id: ObjectiveId = id.to_string().parse().unwrap();
        self.swarm.wait(id, PATIENCE).await.unwrap()
    }

    /// Submits `objective` (as the API takes it) to the swarm directly, not over HTTP; its id.
    pub async fn submit_to_swarm(&self, objective: &Value) -> ObjectiveId {
        self.swarm
            .submit(serde_json::from_value(objective.clone()).unwrap())
            .await
            .unwrap()
    }

    /// Stops the server and the swarm, cleanly (checking that nothing failed the swarm and
    /// that the server let go of it); the data directory, for a restart.
    pub async fn finish(self) -> tempfile::TempDir {
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
pub struct Sse {
    /// Its `id`: the event's sequence number in the log.
    pub seq: u64,
    /// Its `event`: the event's type.
    pub kind: String,
    /// Its `data`: the event's record.
    pub data: Value,
}

/// Waits for the next event of `kind`, returning every event up to it.
pub async fn until(stream: &mut (impl Stream<Item = Sse> + Unpin), kind: &str) -> Vec<Sse> {
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

/// Asserts that the stream ends (within [`PATIENCE`]) without another event.
pub async fn ends(stream: &mut (impl Stream<Item = Sse> + Unpin)) {
    let next = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream did not end");
    assert!(next.is_none(), "the stream went on: {next:?}");
}

/// The next committed event matching `pred`, from a subscription (`Swarm::subscribe`) taken
/// before it could happen.
pub async fn next_event(
    feed: &mut tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
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

/// Asserts that `response` is an RFC 9457 problem of `status` (its content type, `status`,
/// a `urn:swarm:problem:` type, a title and a detail); its body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
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

/// [`problem`], naming `field`; its body.
pub async fn problem_at(response: Response, status: StatusCode, field: &str) -> Value {
    let body = problem(response, status).await;
    assert_eq!(body["field"], field, "{body}");
    body
}

/// Two `work` tasks, `b` after `a`: `b`'s output is `{"sum": 5}`.
pub fn two_step() -> Value {
    json!({
        "goal": "add up",
        "tasks": [
            { "id": "a", "capability": "work", "input": { "n": 2 } },
            { "id": "b", "capability": "work", "input": { "n": 3 }, "depends_on": ["a"] }
        ]
    })
}

/// An objective of one `hold` task: it runs until cancelled.
pub fn hold_forever() -> Value {
    json!({ "goal": "never", "tasks": [{ "id": "h", "capability": "hold" }] })
}

/// The task named `key` of an objective's view.
pub fn task_named<'a>(view: &'a Value, key: &str) -> &'a Value {
    view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no task `{key}` in {view}"))
}

/// A client that does not follow redirects and keeps no cookies (the tests carry them).
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The samples of a Prometheus text exposition, keyed `name{labels}`; panics on a line that is
/// not a comment, blank, or `name{labels} value`.
pub fn prometheus_samples(text: &str) -> HashMap<String, f64> {
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
