//! The command-line client: `swarm submit`, `status`, `agents`, `tasks`, `approve`, `reject`,
//! `schedules` and `hooks` talk to a running `swarm serve` over HTTP (`--server`, `SWARM_SERVER`; the bearer token
//! from `SWARM_API_TOKEN`, never printed).
//!
//! `submit --watch` follows the objective's server-sent events with a live progress view (tasks
//! done of total, running, in review, per-agent activity) until it ends, then prints the
//! result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use swarm_protocol::{Event, EventRecord, Objective, ObjectiveId};

use swarm_server::text::utc;

use crate::Error;

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Remote(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and reads a JSON answer; a problem+json answer becomes an error with its
    /// title and detail.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Remote(format!("cannot reach the server at {}: {e}", self.base)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Error::Remote(format!("reading the server's answer: {e}")))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .map_err(|e| Error::Remote(format!("the server's answer is not JSON: {e}")));
        }
        Err(Error::Remote(problem_text(status, &text)))
    }

    /// Submits an objective; returns its id.
    pub async fn submit(
        &self,
        objective: &Objective,
        idempotency_key: Option<&str>,
    ) -> Result<ObjectiveId, Error> {
        let mut request = self.request(Method::POST, "/v1/objectives").json(objective);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let answer = self.call(request).await?;
        answer
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| {
                Error::Remote(format!("the server's answer has no objective id: {answer}"))
            })
    }

    /// An objective's state.
    pub async fn objective(&self, id: ObjectiveId) -> Result<Value, Error> {
        self.call(self.request(Method::GET, &format!("/v1/objectives/{id}")))
            .await
    }

    /// The agents.
    pub async fn agents(&self) -> Result<Value, Error> {
        self.call(self.request(Method::GET, "/v1/agents")).await
    }

    /// Tasks in review: the first page of up to `limit` (at most 500), as `{tasks, next,
    /// total}`.
    pub async fn review_queue(&self, limit: usize) -> Result<Value, Error> {
        self.call(self.request(
            Method::GET,
            &format!("/v1/tasks?status=review&limit={limit}"),
        ))
        .await
    }

    /// Approves a task in review (optionally with edited output).
    pub async fn approve(&self, task: &str, output: Option<Value>) -> Result<Value, Error> {
        let body = match output {
            Some(output) => json!({ "output": output }),
            None => json!({}),
        };
        self.call(
            self.request(Method::POST, &format!("/v1/tasks/{task}/approve"))
                .json(&body),
        )
        .await
    }

    /// Rejects a task in review.
    pub async fn reject(&self, task: &str, reason: &str) -> Result<Value, Error> {
        self.call(
            self.request(Method::POST, &format!("/v1/tasks/{task}/reject"))
                .json(&json!({ "reason": reason })),
        )
        .await
    }

    /// Posts an event (`{key, payload, ttl?}`) for `wait` tasks; returns it as received.
    pub async fn post_event(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Error> {
        let mut request = self.request(Method::POST, "/v1/events").json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.call(request).await
    }

    /// The events kept because no task consumed them yet.
    pub async fn pending_events(&self) -> Result<Value, Error> {
        self.call(self.request(Method::GET, "/v1/events/pending"))
            .await
    }

    /// The schedules, with their next fire times and recent fires.
    pub async fn schedules(&self) -> Result<Value, Error> {
        self.call(self.request(Method::GET, "/v1/schedules")).await
    }

    /// Creates a schedule; returns it as the server shows it.
    pub async fn create_schedule(
        &self,
        spec: &swarm_protocol::ScheduleSpec,
    ) -> Result<Value, Error> {
        self.call(self.request(Method::POST, "/v1/schedules").json(spec))
            .await
    }

    /// Pauses (`paused`) or resumes a schedule.
    pub async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<Value, Error> {
        let action = if paused { "pause" } else { "resume" };
        self.call(self.request(
            Method::POST,
            &format!("/v1/schedules/{}/{action}", path_segment(name)),
        ))
        .await
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        self.call(self.request(
            Method::DELETE,
            &format!("/v1/schedules/{}", path_segment(name)),
        ))
        .await
        .map(|_| ())
    }

    /// The hooks served, by name (each with its secret's variable, never the secret).
    pub async fn hooks(&self) -> Result<Value, Error> {
        self.call(self.request(Method::GET, "/v1/hooks")).await
    }

    /// Declares a hook; returns it as the server shows it. The server reads the secret from
    /// its own environment variable `secret_env`.
    pub async fn declare_hook(
        &self,
        hook: &swarm_coordinator::config::HookConfig,
    ) -> Result<Value, Error> {
        self.call(self.request(Method::POST, "/v1/hooks").json(hook))
            .await
    }

    /// Deletes a hook declared through the API.
    pub async fn delete_hook(&self, name: &str) -> Result<(), Error> {
        self.call(self.request(Method::DELETE, &format!("/v1/hooks/{}", path_segment(name))))
            .await
            .map(|_| ())
    }

    /// Follows an objective's events until it ends, showing progress; returns its final state.
    pub async fn watch(&self, id: ObjectiveId, show: bool) -> Result<Value, Error> {
        let response = self
            .request(Method::GET, &format!("/v1/objectives/{id}/events"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| Error::Remote(format!("cannot reach the server at {}: {e}", self.base)))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(Error::Remote(problem_text(status, &text)));
        }
        let bar = if show {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut progress = Progress::default();
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| Error::Remote(format!("the event stream broke: {e}")))?;
            let Ok(record) = serde_json::from_str::<EventRecord>(&event.data) else {
                continue;
            };
            let ended = progress.apply(&record.event);
            bar.set_length(progress.total as u64);
            bar.set_position(progress.done as u64);
            bar.set_message(progress.line());
            if ended {
                break;
            }
        }
        bar.finish_and_clear();
        self.objective(id).await
    }
}

/// What the progress view counts.
#[derive(Debug, Default)]
struct Progress {
    total: usize,
    done: usize,
    running: BTreeSet<u64>,
    review: BTreeSet<u64>,
    by_agent: BTreeMap<String, usize>,
    running_on: BTreeMap<u64, String>,
}

impl Progress {
    /// Folds one event in; true when the objective ended.
    fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::ObjectiveSubmitted { spec, .. } => self.total += spec.tasks.len(),
            Event::TasksSpawned { tasks, .. } => self.total += tasks.len(),
            Event::PlanRequested { .. } => self.total += 1,
            Event::PlanRejected { task, .. } => self.settle(task.0),
            Event::CompensationStarted { compensates, .. } => self.total += compensates.len(),
            Event::TaskStarted { task, agent, .. } => {
                self.running.insert(task.0);
                self.running_on.insert(task.0, agent.to_string());
                *self.by_agent.entry(agent.to_string()).or_default() += 1;
            }
            Event::TaskSucceeded { task, .. } | Event::TaskApproved { task, .. } => {
                self.settle(task.0);
                self.review.remove(&task.0);
                self.done += 1;
            }
            Event::TaskFailed { task, .. }
            | Event::AttemptLost { task, .. }
            | Event::TaskCancelled { task, .. } => self.settle(task.0),
            Event::TaskInReview { task, .. } => {
                self.settle(task.0);
                self.review.insert(task.0);
            }
            Event::ObjectiveSucceeded { .. }
            | Event::ObjectiveFailed { .. }
            | Event::ObjectiveCancelled { .. } => return true,
            _ => {}
        }
        false
    }

    fn settle(&mut self, task: u64) {
        self.running.remove(&task);
        if let Some(agent) = self.running_on.remove(&task)
            && let Some(n) = self.by_agent.get_mut(&agent)
        {
            *n = n.saturating_sub(1);
        }
    }

    fn line(&self) -> String {
        let agents: Vec<String> = self
            .by_agent
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(agent, n)| format!("{agent}×{n}"))
            .collect();
        format!(
            "| {} running, {} in review | {}",
            self.running.len(),
            self.review.len(),
            agents.join(" ")
        )
    }
}

/// `title: detail` of a problem+json answer, or the status and body.
fn problem_text(status: StatusCode, body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(problem) if problem.get("title").is_some() => {
            let title = problem.get("title").and_then(Value::as_str).unwrap_or("");
            match problem.get("detail").and_then(Value::as_str) {
                Some(detail) => format!("{status}: {title}: {detail}"),
                None => format!("{status}: {title}"),
            }
        }
        _ => format!("{status}: {}", body.trim()),
    }
}

/// The objective `swarm submit` (and `swarm schedules add`) sends: the goal, and the tasks of
/// the graph file when one is given. The file holds an objective, with or without its `goal`,
/// or a list of tasks. The goal is given once: on the command line, or in the file; both may
/// give it only if they agree, so a goal is never silently replaced. An error names the file.
pub fn objective_from(goal: Option<&str>, graph: Option<&Path>) -> Result<Objective, Error> {
    let no_goal = || Error::Argument {
        flag: "goal",
        message: "give the objective's goal (or a --graph file whose objective has one)".into(),
    };
    let Some(path) = graph else {
        return Ok(Objective::with_tasks(goal.ok_or_else(no_goal)?, Vec::new()));
    };
    let file = |message: String| Error::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    match objective_from_graph(goal, &text) {
        Ok(objective) => Ok(objective),
        Err(GraphFileError::NoGoal) => Err(no_goal()),
        Err(GraphFileError::File(message)) => Err(file(message)),
    }
}

/// Why a graph file gives no objective.
#[derive(Debug, PartialEq)]
enum GraphFileError {
    /// Neither the command line nor the file gives a goal.
    NoGoal,
    /// What the file holds is wrong.
    File(String),
}

/// The objective of a graph file's text: an objective (its `goal` may be left out, or must be
/// `goal` when both are given), or a list of tasks.
fn objective_from_graph(goal: Option<&str>, text: &str) -> Result<Objective, GraphFileError> {
    let file = GraphFileError::File;
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| file(format!("not JSON: {e}")))?;
    if value.is_array() {
        let tasks =
            serde_json::from_value(value).map_err(|e| file(format!("not a list of tasks: {e}")))?;
        return Ok(Objective::with_tasks(
            goal.ok_or(GraphFileError::NoGoal)?,
            tasks,
        ));
    }
    if let Value::Object(fields) = &mut value {
        match (fields.get("goal"), goal) {
            (None, Some(goal)) => {
                fields.insert("goal".into(), Value::String(goal.to_owned()));
            }
            (None, None) => return Err(GraphFileError::NoGoal),
            (Some(Value::String(inner)), Some(goal)) if inner != goal => {
                return Err(file(format!(
                    "the file's objective has the goal {inner:?}, and the command line gives \
                     {goal:?}: give the goal once (leave it out of the file, or out of the \
                     command line)"
                )));
            }
            (Some(_), _) => {}
        }
    }
    serde_json::from_value(value).map_err(|e| file(format!("not an objective: {e}")))
}

/// One task of the review queue as lines of text: the task, why it is in review, its output,
/// and where the output does not match its schema (one line per error, with its path).
pub fn render_review_item(item: &Value) -> String {
    let task = &item["task"];
    let mut out = format!(
        "{} `{}` of {} ({}): {}\n    output: {}\n",
        task["id"].as_str().unwrap_or("?"),
        task["key"].as_str().unwrap_or("?"),
        item["objective"].as_str().unwrap_or("?"),
        item["goal"].as_str().unwrap_or(""),
        task["error"].as_str().unwrap_or(""),
        task.get("output")
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    for error in task
        .get("review_errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = error.get("path").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!(
            "    at {}: {}\n",
            if path.is_empty() {
                "(the whole output)"
            } else {
                path
            },
            error.get("message").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out
}

/// A schedule name as a path segment: names are `A-Z a-z 0-9 _ - .`, anything else is
/// escaped so the server answers with a clear 400 rather than another route.
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One line per schedule of a `GET /v1/schedules` answer: name, cron expression and time
/// zone, state, next fire time and latest fire (times in UTC).
pub fn render_schedules(schedules: &Value) -> String {
    let time = utc;
    let mut out = String::new();
    for schedule in schedules.as_array().into_iter().flatten() {
        let text = |k: &str| schedule.get(k).and_then(Value::as_str).unwrap_or("?");
        let paused = schedule.get("paused").and_then(Value::as_bool) == Some(true);
        let next = schedule
            .get("next_fires_ms")
            .and_then(|n| n.get(0))
            .and_then(Value::as_u64);
        let last = schedule.get("recent_fires").and_then(|f| f.get(0));
        let last = last.map_or_else(
            || "never fired".to_owned(),
            |f| {
                format!(
                    "last {} -> {}",
                    time(f.get("slot_ms").and_then(Value::as_u64)),
                    f.get("objective").and_then(Value::as_str).unwrap_or("?")
                )
            },
        );
        out.push_str(&format!(
            "{}  \"{}\" {}  {}  next {}  {}\n",
            text("name"),
            text("cron"),
            text("time_zone"),
            if paused { "paused" } else { "active" },
            time(next),
            last
        ));
        if let Some(failure) = schedule.get("last_failure") {
            out.push_str(&format!(
                "    failed {}: {}\n",
                time(failure.get("slot_ms").and_then(Value::as_u64)),
                failure.get("reason").and_then(Value::as_str).unwrap_or("?")
            ));
        }
    }
    out
}

/// `GET /v1/hooks` as lines of text: name, where it was declared, the secret's variable, the
/// tolerance, and the delivery route.
pub fn render_hooks(hooks: &Value) -> String {
    let mut out = String::new();
    for hook in hooks.as_array().into_iter().flatten() {
        let text = |k: &str| hook.get(k).and_then(Value::as_str).unwrap_or("?");
        out.push_str(&format!(
            "{}  {}  secret from ${}  tolerance {}  POST /v1/hooks/{}\n",
            text("name"),
            text("source"),
            text("secret_env"),
            text("tolerance"),
            text("name"),
        ));
    }
    out
}

/// A hook's template from `--template`: JSON text (starting with `{`), or the name of a file
/// holding it.
pub fn template_from(arg: &str) -> Result<Value, Error> {
    if arg.trim_start().starts_with('{') {
        return serde_json::from_str(arg).map_err(|e| Error::Argument {
            flag: "--template",
            message: format!("not JSON: {e}"),
        });
    }
    let path = Path::new(arg);
    let file = |message: String| Error::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file(format!("not JSON: {e}")))
}

/// The final state as lines of text.
pub fn render(objective: &Value) -> String {
    let mut out = format!(
        "objective {} {}\n",
        objective.get("id").and_then(Value::as_str).unwrap_or("?"),
        objective
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    if let Some(failure) = objective.get("failure").and_then(Value::as_str) {
        out.push_str(&format!("  failure: {failure}\n"));
    }
    if let Some(spent) = objective.get("usage").and_then(spent) {
        out.push_str(&format!("  spent: {spent}\n"));
    }
    for task in objective
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |k: &str| {
            task.get(k)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let output = task
            .get("output")
            .map(|o| match o {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into());
        let cost = task
            .get("usage")
            .and_then(spent)
            .map_or(String::new(), |spent| format!(" ({spent})"));
        out.push_str(&format!(
            "  {:<20} {:<10} attempts={}{cost} {}\n",
            text("key"),
            text("status"),
            task.get("attempts").and_then(Value::as_u64).unwrap_or(0),
            output
        ));
    }
    out
}

/// A view's `usage` as text, e.g. `1200 tokens, $0.000450` (`cost unknown` when a model had no
/// price); `None` when no token was spent.
fn spent(usage: &Value) -> Option<String> {
    let count = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let tokens = count("input_tokens").saturating_add(count("output_tokens"));
    if tokens == 0 {
        return None;
    }
    let cost = match usage.get("cost_usd_micros").and_then(Value::as_u64) {
        Some(micros) => swarm_protocol::Usd(micros).to_string(),
        None => "cost unknown".to_owned(),
    };
    Some(format!("{tokens} tokens, {cost}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn graph_files_hold_an_objective_or_a_task_list() {
        let list = r#"[{"id": "a", "capability": "x"}]"#;
        let o = objective_from_graph(Some("g"), list).unwrap();
        assert_eq!((o.goal.as_str(), o.tasks.len()), ("g", 1));
        let whole =
            r#"{"goal": "inner", "tasks": [{"id": "a", "capability": "x"}], "priority": 3}"#;
        let o = objective_from_graph(None, whole).unwrap();
        assert_eq!((o.goal.as_str(), o.priority), ("inner", 3));
        let o = objective_from_graph(Some("inner"), whole).unwrap();
        assert_eq!(o.goal, "inner");
        let Err(GraphFileError::File(err)) = objective_from_graph(Some("g"), r#"[{"id": "a"}]"#)
        else {
            panic!("a task without a capability is refused");
        };
        assert!(err.starts_with("not a list of tasks: "), "{err}");
        assert!(err.contains("capability"), "{err}");
    }

    #[test]
    fn the_status_shows_what_was_spent_and_an_unknown_cost_as_unknown() {
        let view = serde_json::json!({
            "id": "O1", "status": "succeeded",
            "usage": {"input_tokens": 1000, "output_tokens": 500},
            "tasks": [
                {"key": "a", "status": "succeeded", "attempts": 1,
                 "usage": {"input_tokens": 1000, "output_tokens": 500, "cost_usd_micros": 450}},
                {"key": "b", "status": "succeeded", "attempts": 1,
                 "usage": {"input_tokens": 10, "output_tokens": 0}},
                {"key": "c", "status": "succeeded", "attempts": 1,
                 "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd_micros": 0}}
            ]
        });
        let text = render(&view);
        assert!(
            text.contains("  spent: 1500 tokens, cost unknown\n"),
            "{text}"
        );
        assert!(
            text.contains("attempts=1 (1500 tokens, $0.000450)"),
            "{text}"
        );
        assert!(
            text.contains("attempts=1 (10 tokens, cost unknown)"),
            "{text}"
        );
        assert!(
            text.contains("c                    succeeded  attempts=1 -"),
            "{text}"
        );
    }

    #[test]
    fn the_goal_is_given_once() {
        // `swarm submit "goal" --graph graph.json` with a file of tasks only.
        let tasks_only = r#"{"tasks": [{"id": "a", "capability": "x"}], "priority": 2}"#;
        let o = objective_from_graph(Some("from the command line"), tasks_only).unwrap();
        assert_eq!(
            (o.goal.as_str(), o.tasks.len(), o.priority),
            ("from the command line", 1, 2)
        );
        assert_eq!(
            objective_from_graph(None, tasks_only).unwrap_err(),
            GraphFileError::NoGoal
        );
        assert_eq!(
            objective_from_graph(None, r#"[{"id": "a", "capability": "x"}]"#).unwrap_err(),
            GraphFileError::NoGoal
        );
        let whole = r#"{"goal": "inner", "tasks": []}"#;
        let Err(GraphFileError::File(err)) = objective_from_graph(Some("outer"), whole) else {
            panic!("two different goals are refused");
        };
        assert!(
            err.contains("\"inner\"") && err.contains("\"outer\"") && err.contains("once"),
            "{err}"
        );
        let err = objective_from(None, None).unwrap_err();
        assert!(
            matches!(err, Error::Argument { flag: "goal", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_bad_graph_or_template_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        std::fs::write(&path, "[{").unwrap();
        let err = objective_from(Some("g"), Some(&path)).unwrap_err();
        assert!(
            matches!(&err, Error::File { path: p, message } if *p == path && message.starts_with("not JSON: ")),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: not JSON: ", path.display()))
        );
        let missing = dir.path().join("missing.json");
        let err = objective_from(Some("g"), Some(&missing)).unwrap_err();
        assert!(
            matches!(&err, Error::File { path: p, .. } if *p == missing),
            "{err:?}"
        );

        let err = template_from(path.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&err, Error::File { path: p, .. } if *p == path),
            "{err:?}"
        );
        let err = template_from("{not json").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Argument {
                    flag: "--template",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            template_from(r#"{"goal": "g"}"#).unwrap(),
            json!({"goal": "g"})
        );
    }

    #[test]
    fn review_items_list_each_schema_error_with_its_path() {
        let item = json!({
            "objective": "0190",
            "goal": "g",
            "task": {"id": "T3", "key": "a", "error": "the output does not match", "output": {"n": "x"},
                "review_errors": [
                    {"path": "/n", "message": "\"x\" is not of type \"integer\""},
                    {"path": "", "message": "\"m\" is a required property"}
                ]},
        });
        let text = render_review_item(&item);
        assert!(
            text.starts_with("T3 `a` of 0190 (g): the output does not match\n"),
            "{text}"
        );
        assert!(
            text.contains("    at /n: \"x\" is not of type \"integer\"\n"),
            "{text}"
        );
        assert!(
            text.contains("    at (the whole output): \"m\" is a required"),
            "{text}"
        );
    }

    #[test]
    fn problems_read_as_title_and_detail() {
        let text = problem_text(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"type": "about:blank", "title": "graph rejected", "status": 422, "detail": "cycle: a, b"}"#,
        );
        assert_eq!(
            text,
            "422 Unprocessable Entity: graph rejected: cycle: a, b"
        );
    }
}
