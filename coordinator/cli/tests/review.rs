//! Output validation and review over the real HTTP API on loopback: output that does not match
//! its task's `output_schema` goes to review with the errors (each with its path), an approval
//! with an edited output is checked again, dependents run on the approved output, a rejection
//! fails the objective, the errors survive a restart, and a schema that refers elsewhere is
//! refused at submit without any network access. Tests await events (`Swarm::subscribe`) or
//! the objective's end, never sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use futures::FutureExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{
    Event, EventRecord, ObjectiveId, ObjectiveStatus, ReviewDecision, TaskOutcome, TaskQuery,
    TaskStatus,
};
use swarm_server::LocalApi;
use swarm_testkit::{PATIENCE, reg};
use tokio::sync::broadcast::Receiver;

/// The schema of the `draft` task: a name and a list of string tags.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "tags"],
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}
        }
    })
}

/// `draft` (whose agent answers with a number for a name and a number among the tags) and
/// `use`, which depends on it and takes its name through `$from`.
fn graph() -> Value {
    json!({
        "goal": "a person",
        "tasks": [
            {"id": "draft", "capability": "draft", "output_schema": person_schema()},
            {"id": "use", "capability": "use", "depends_on": ["draft"],
             "input": {"name": {"$from": "draft", "pointer": "/name"}}}
        ]
    })
}

/// A durable swarm in a temporary directory with agents `draft` (invalid output) and `use`
/// (answers with its input and upstream), served on a loopback port.
struct Api {
    swarm: Arc<Swarm>,
    api: LocalApi,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn register(swarm: &Swarm) {
    let draft = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::success(json!({"name": 5, "tags": ["ok", 7]}))
    });
    swarm
        .register_agent(reg("draft-0", &["draft"], 4), AgentFactory::shared(draft))
        .await
        .unwrap();
    let using = FnAgent::new(|task, _ctx| async move {
        TaskOutcome::success(json!({"input": *task.input, "upstream": task.upstream}))
    });
    swarm
        .register_agent(reg("use-0", &["use"], 4), AgentFactory::shared(using))
        .await
        .unwrap();
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    register(&swarm).await;
    let swarm = Arc::new(swarm);
    let api = LocalApi::start(swarm.clone()).await.unwrap();
    let base = format!("http://{}", api.addr);
    Api {
        swarm,
        api,
        base,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn submit(&self, body: &Value) -> ObjectiveId {
        let (status, answer) = self.post("/v1/objectives", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    async fn stop(self) {
        self.api.stop().await;
        let swarm = Arc::into_inner(self.swarm).unwrap();
        assert_eq!(swarm.failure(), None);
        swarm.shutdown().await.unwrap();
    }
}

/// Waits for the first committed event of `objective` that matches.
async fn until(
    events: &mut Receiver<Arc<EventRecord>>,
    objective: ObjectiveId,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let record = events.recv().await.unwrap();
            if record.event.objective() == Some(objective) && pred(&record.event) {
                return record.event.clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn in_review(e: &Event) -> bool {
    matches!(e, Event::TaskInReview { .. })
}

#[tokio::test]
async fn invalid_output_is_reviewed_and_dependents_run_on_the_approved_edit() {
    let api = start().await;
    let mut events = api.swarm.subscribe().unwrap();
    let id = api.submit(&graph()).await;

    // The output does not match: review, with every error and its path.
    let Event::TaskInReview {
        task,
        errors,
        reason,
        ..
    } = until(&mut events, id, "the draft in review", in_review).await
    else {
        unreachable!()
    };
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/name", "/tags/1"], "{errors:?}");
    assert!(reason.contains("output_schema"), "{reason}");

    let queue = api.get("/v1/tasks?status=review").await;
    let items = queue["tasks"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{queue}");
    let item = &items[0];
    assert_eq!(item["task"]["id"], json!(task.to_string()));
    assert_eq!(item["task"]["status"], json!("review"));
    assert_eq!(
        item["task"]["output"],
        json!({"name": 5, "tags": ["ok", 7]})
    );
    let mut listed: Vec<&str> = item["task"]["review_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["/name", "/tags/1"]);
    // What `swarm tasks --review` prints.
    let client = swarm_cli::client::Client::new(&api.base, None).unwrap();
    let queue = client.review_queue(10).await.unwrap();
    let text = swarm_cli::client::render_review_item(&queue["tasks"][0]);
    assert!(
        text.contains("    at /name: 5 is not of type \"string\""),
        "{text}"
    );
    assert!(
        text.contains("    at /tags/1: 7 is not of type \"string\""),
        "{text}"
    );
    // The dependent waits.
    let view = api.swarm.objective(id).await.unwrap();
    assert_eq!(view.task("draft").unwrap().status, TaskStatus::Review);
    assert_eq!(view.task("use").unwrap().status, TaskStatus::Backlog);

    // An edited output that does not match either is refused, and the task stays in review.
    let approve = format!("/v1/tasks/{task}/approve");
    let (status, problem) = api
        .post(&approve, &json!({"output": {"name": "Ada", "tags": [1]}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], json!("output"));
    assert_eq!(problem["errors"][0]["path"], json!("/tags/0"), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("/tags/0"),
        "{problem}"
    );
    let queue = api.get("/v1/tasks?status=review").await;
    assert_eq!(
        queue["tasks"].as_array().unwrap().len(),
        1,
        "still in review"
    );
    assert_eq!(
        api.swarm
            .objective(id)
            .await
            .unwrap()
            .task("use")
            .unwrap()
            .status,
        TaskStatus::Backlog
    );

    // A matching edit is taken, and the dependent runs on it.
    let edited = json!({"name": "Ada", "tags": ["x"]});
    let (status, answer) = api.post(&approve, &json!({"output": edited})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let view = api.swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.task("draft").unwrap().output, Some(edited.clone()));
    assert_eq!(
        view.task("use").unwrap().output,
        Some(json!({"input": {"name": "Ada"}, "upstream": {"draft": edited}}))
    );
    assert!(
        api.get("/v1/tasks?status=review").await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The chain of work has the errors and the approved edit.
    let chain = api.swarm.chain(id).await.unwrap();
    assert!(chain.iter().any(|r| matches!(
        &r.event,
        Event::TaskInReview { errors, .. } if errors.len() == 2
    )));
    assert!(chain.iter().any(|r| matches!(
        &r.event,
        Event::TaskApproved { output, .. } if *output == edited
    )));
    api.stop().await;
}

#[tokio::test]
async fn rejecting_in_review_fails_the_objective() {
    let api = start().await;
    let mut events = api.swarm.subscribe().unwrap();
    let id = api.submit(&graph()).await;
    let Event::TaskInReview { task, .. } =
        until(&mut events, id, "the draft in review", in_review).await
    else {
        unreachable!()
    };
    let (status, answer) = api
        .post(
            &format!("/v1/tasks/{task}/reject"),
            &json!({"reason": "names are strings"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let view = api.swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("draft") && failure.contains("rejected in review: names are strings"),
        "{failure}"
    );
    assert_eq!(view.task("draft").unwrap().status, TaskStatus::Failed);
    assert_eq!(view.task("use").unwrap().status, TaskStatus::Cancelled);
    assert_eq!(view.task("use").unwrap().attempts, 0);
    api.stop().await;
}

#[tokio::test]
async fn review_errors_survive_a_restart_and_an_approval_is_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    register(&swarm).await;
    let mut events = swarm.subscribe().unwrap();
    let objective = serde_json::from_value(graph()).unwrap();
    let id = swarm.submit(objective).await.unwrap();
    let Event::TaskInReview { task, .. } =
        until(&mut events, id, "the draft in review", in_review).await
    else {
        unreachable!()
    };
    swarm.shutdown().await.unwrap();

    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(swarm.resumed(), [id]);
    let queue = swarm
        .tasks(TaskQuery::status(TaskStatus::Review, 10))
        .await
        .unwrap()
        .tasks;
    assert_eq!(queue.len(), 1);
    let mut paths: Vec<&str> = queue[0]
        .task
        .review_errors
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/name", "/tags/1"], "the errors were replayed");
    // The schema was compiled again: a bad edit is still refused.
    let bad = swarm
        .review(
            task,
            ReviewDecision::Approve {
                output: Some(json!({"tags": []})),
            },
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("name"), "{bad}");
    register(&swarm).await;
    swarm
        .review(
            task,
            ReviewDecision::Approve {
                output: Some(json!({"name": "Ada", "tags": []})),
            },
        )
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    assert_eq!(
        view.task("use").unwrap().output.as_ref().unwrap()["input"],
        json!({"name": "Ada"})
    );
    swarm.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_schema_that_refers_elsewhere_is_refused_at_submit_without_a_fetch() {
    let api = start().await;
    // A server the schema points at: a fetch would connect to it.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = format!("http://{}/person.json", bait.local_addr().unwrap());
    for (schema, words) in [
        (json!({"$ref": remote}), "person.json"),
        (
            json!({"properties": {"a": {"$ref": "file:///etc/hostname"}}}),
            "file:///etc/hostname",
        ),
        (json!({"type": 5}), "output_schema"),
    ] {
        let body = json!({
            "goal": "g",
            "tasks": [
                {"id": "fine", "capability": "use"},
                {"id": "draft", "capability": "draft", "output_schema": schema}
            ]
        });
        let (status, problem) = api.post("/v1/objectives", &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(
            problem["field"],
            json!("tasks[1].output_schema"),
            "{problem}"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("`draft`") && detail.contains("output_schema"),
            "{detail}"
        );
        assert!(detail.contains(words), "{detail}");
    }
    assert!(
        bait.accept().now_or_never().is_none(),
        "the schema's reference was fetched"
    );
    // A compensation on a capability no agent has is refused too, naming the field.
    let body = json!({
        "goal": "g",
        "tasks": [{"id": "a", "capability": "use",
                   "compensation": {"capability": "time-travel"}}]
    });
    let (status, problem) = api.post("/v1/objectives", &body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], json!("tasks[0].compensation.capability"));
    assert_eq!(api.swarm.stats().await.unwrap().objectives_running, 0);
    api.stop().await;
}

#[tokio::test]
async fn a_spawned_task_with_an_unusable_schema_is_refused_naming_it() {
    let swarm = Swarm::start(SwarmConfig::default()).await.unwrap();
    let planner = FnAgent::new(|task, _ctx| async move {
        let mut child = swarm_protocol::TaskSpec::new(
            swarm_protocol::TaskKey::new("child").unwrap(),
            task.capability.clone(),
        );
        child.output_schema = Some(json!({"$ref": "https://example.invalid/s.json"}));
        TaskOutcome::Spawned {
            output: json!("planned"),
            tasks: vec![child],
            usage: None,
        }
    });
    swarm
        .register_agent(reg("plan", &["plan"], 1), AgentFactory::shared(planner))
        .await
        .unwrap();
    let objective = serde_json::from_value(json!({
        "goal": "g", "tasks": [{"id": "plan", "capability": "plan"}]
    }))
    .unwrap();
    let id = swarm.submit(objective).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let failure = view.failure.unwrap();
    assert!(
        failure.contains("spawned tasks refused")
            && failure.contains("`child`")
            && failure.contains("output_schema"),
        "{failure}"
    );
    assert_eq!(view.tasks.len(), 1, "nothing was added");
    swarm.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_payload_that_does_not_match_the_wait_tasks_schema_goes_to_review() {
    let (swarm, mut events) = swarm_testkit::start().await;
    let wait: swarm_protocol::TaskSpec = serde_json::from_value(json!({
        "id": "ci", "kind": "wait", "event": "ci-7", "timeout": "1h",
        "output_schema": {"type": "object", "required": ["status"]}
    }))
    .unwrap();
    let objective = swarm
        .submit(swarm_protocol::Objective::with_tasks(
            "check the payload",
            vec![wait],
        ))
        .await
        .unwrap();
    let posted = swarm
        .post_event(swarm_protocol::NewExternalEvent {
            key: "ci-7".into(),
            payload: json!({"state": "green"}),
            ttl: std::time::Duration::from_secs(60),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert!(posted.consumed_by.is_some());
    events
        .until(
            "the payload in review",
            |e| matches!(e, Event::TaskInReview { objective: o, .. } if *o == objective),
        )
        .await;
    let view = swarm.objective(objective).await.unwrap();
    let task = view.task("ci").unwrap();
    assert_eq!(task.status, TaskStatus::Review);
    assert_eq!(task.output, Some(json!({"state": "green"})));
    assert_eq!(task.review_errors[0].path, "");
    assert!(task.review_errors[0].message.contains("status"));
    swarm
        .review(
            task.id,
            ReviewDecision::Approve {
                output: Some(json!({"status": "green"})),
            },
        )
        .await
        .unwrap();
    let done = swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(done.status, ObjectiveStatus::Succeeded);
    assert_eq!(
        done.task("ci").unwrap().output,
        Some(json!({"status": "green"}))
    );
    swarm_testkit::finish(swarm).await;
}
