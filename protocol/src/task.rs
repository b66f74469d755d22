//! Tasks: what a graph declares ([`TaskSpec`]), where a task is in its life ([`TaskStatus`]),
//! and what an agent receives ([`Task`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Capability, ObjectiveId, TaskId, TaskKey};

/// One node of an objective's task graph, as a user (or a planner) writes it.
///
/// ```json
/// { "id": "sum", "capability": "summarize",
///   "input": { "text": { "$from": "fetch", "pointer": "/body" } },
///   "depends_on": ["fetch"], "hard_timeout": "2m", "retry": { "max_attempts": 5 },
///   "output_schema": { "type": "object", "required": ["summary"] } }
/// ```
///
/// Two kinds of task are run by the coordinator itself rather than by an agent, and take no
/// `capability`: a `wait` task waits for an event posted to `POST /v1/events` under its `event`
/// key (for at most `timeout`; the event's payload is its output), and an `approval` task holds
/// its dependents until a person approves it (its resolved input is what they approve and, as
/// approved or edited, its output) or rejects it (it fails):
///
/// ```json
/// { "id": "ci", "kind": "wait", "event": "build-42-done", "timeout": "1h" }
/// { "id": "ship-it", "kind": "approval", "input": { "$from": "draft" }, "depends_on": ["draft"] }
/// ```
///
/// A review may have a deadline, after which the coordinator decides as the task says (see
/// [`OnTimeout`]): an `approval` task's `timeout` with `on_timeout`, and for the review of
/// output that does not match its `output_schema`, an `agent` or `wait` task's
/// `review_timeout` with `on_review_timeout`:
///
/// ```json
/// { "id": "ship-it", "kind": "approval", "timeout": "4h", "on_timeout": "escalate" }
/// { "id": "sum", "capability": "summarize", "output_schema": { "type": "object" },
///   "review_timeout": "1d", "on_review_timeout": "reject" }
/// ```
///
/// Its JSON Schema is derived from these fields rather than from the wire form it is read
/// through (which has no documentation); `capability` is optional in it, as in the wire form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "wire::TaskSpecWire", deny_unknown_fields)]
#[schemars(!try_from)]
pub struct TaskSpec {
    /// The task's name in its graph; dependencies refer to it.
    pub id: TaskKey,
    /// What the agent that runs it must be able to do. Required for a task of kind `agent`;
    /// a `wait` or `approval` task takes none (it reads back as the kind's name).
    #[cfg_attr(feature = "openapi", schema(required = false))]
    #[schemars(with = "Option<Capability>")]
    pub capability: Capability,
    /// Who runs it: `agent` (the default), `wait` or `approval`.
    #[serde(default, skip_serializing_if = "TaskKind::is_agent")]
    pub kind: TaskKind,
    /// For a `wait` task: the key of the event it waits for. `{objective}` in it is replaced
    /// by the objective's id, so the objectives of one template wait for different events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// For a `wait` task: how long it waits for its event before it fails with a timeout.
    /// For an `approval` task: how long it waits for a person before `on_timeout` decides.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1h"))]
    #[schemars(with = "Option<String>", extend("examples" = ["1h"]))]
    pub timeout: Option<Duration>,
    /// For an `approval` task with a `timeout`: what is decided when nobody decided in time
    /// (`reject` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// For an `agent` or `wait` task: how long its output waits in review (when it does not
    /// match the `output_schema`) before `on_review_timeout` decides.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "1d"))]
    #[schemars(with = "Option<String>", extend("examples" = ["1d"]))]
    pub review_timeout: Option<Duration>,
    /// With `review_timeout`: what is decided when nobody decided in time (`reject` when
    /// left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_review_timeout: Option<OnTimeout>,
    /// The task's input. An object `{"$from": "<dependency>"}` anywhere inside it is replaced by
    /// that dependency's output (or by the part of it at `"pointer"`, a JSON Pointer).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// Tasks that must succeed before this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskKey>,
    /// How failures are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// An attempt that reports no progress for this long is cancelled as stalled.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    #[schemars(with = "Option<String>", extend("examples" = ["2m"]))]
    pub idle_timeout: Option<Duration>,
    /// An attempt that runs longer than this is cancelled.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    #[schemars(with = "Option<String>", extend("examples" = ["2m"]))]
    pub hard_timeout: Option<Duration>,
    /// A JSON Schema the output must satisfy; output that does not goes to review. It is
    /// compiled when the task is added (an invalid schema, or one that refers to a document
    /// elsewhere with a remote `$ref`, is refused); nothing is ever fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output_schema: Option<Value>,
    /// What undoes this task's effect if its objective fails after it succeeded (a saga's
    /// compensating action). See [`Compensation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
}

/// The compensating action of a task: a small task run, on an agent with `capability`, when
/// the task's objective fails after the task succeeded. The compensations of an objective's
/// succeeded tasks run one after another, newest success first; each is a task of the
/// objective in its own right (its own id, attempts and events), and one that fails is
/// recorded and the next one still runs.
///
/// `input` may refer to the compensated task's output with `{"$from": "<the task's id>"}`
/// (optionally with a `"pointer"`), and the agent also receives that output in `upstream`:
///
/// ```json
/// { "id": "book", "capability": "booking", "input": { "room": 12 },
///   "compensation": { "capability": "booking",
///                     "input": { "cancel": { "$from": "book", "pointer": "/reservation" } },
///                     "retry": { "max_attempts": 5 } } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    /// What the agent that runs it must be able to do.
    pub capability: Capability,
    /// Its input; `$from` may name only the compensated task.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// How its failures are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// An attempt that runs longer than this is cancelled.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "2m"))]
    #[schemars(with = "Option<String>", extend("examples" = ["2m"]))]
    pub hard_timeout: Option<Duration>,
}

impl Compensation {
    /// A compensation on `capability` with this input and the default retry policy.
    pub fn new(capability: Capability, input: Value) -> Self {
        Self {
            capability,
            input,
            retry: RetryPolicy::default(),
            hard_timeout: None,
        }
    }

    /// The compensation as the task an agent runs: named after the task it compensates and
    /// depending on it, so `$from` resolves against that task's output.
    pub fn task_spec(&self, compensated: &TaskKey) -> TaskSpec {
        TaskSpec {
            id: compensated.clone(),
            capability: self.capability.clone(),
            kind: TaskKind::Agent,
            event: None,
            timeout: None,
            on_timeout: None,
            review_timeout: None,
            on_review_timeout: None,
            input: self.input.clone(),
            depends_on: vec![compensated.clone()],
            retry: self.retry,
            idle_timeout: None,
            hard_timeout: self.hard_timeout,
            output_schema: None,
            compensation: None,
        }
    }
}

/// One way in which a task's output does not match its `output_schema`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputError {
    /// Where in the output, as a JSON Pointer (`""` is the whole output, `/items/0/name` a
    /// field inside it).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "(the whole output): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl TaskSpec {
    /// A task with default retry policy and no timeouts.
    pub fn new(id: TaskKey, capability: Capability) -> Self {
        Self {
            id,
            capability,
            kind: TaskKind::Agent,
            event: None,
            timeout: None,
            on_timeout: None,
            review_timeout: None,
            on_review_timeout: None,
            input: Value::Null,
            depends_on: Vec::new(),
            retry: RetryPolicy::default(),
            idle_timeout: None,
            hard_timeout: None,
            output_schema: None,
            compensation: None,
        }
    }

    /// For a `wait` task: the key of the event it waits for in `objective` (`{objective}` in
    /// its `event` replaced by the objective's id).
    pub fn event_key(&self, objective: ObjectiveId) -> Option<String> {
        let event = self.event.as_ref()?;
        Some(if event.contains("{objective}") {
            event.replace("{objective}", &objective.to_string())
        } else {
            event.clone()
        })
    }

    /// The deadline of the task's reviews, if it has one: an `approval` task's `timeout` and
    /// `on_timeout`, another task's `review_timeout` and `on_review_timeout` (`reject` when
    /// the decision is left out).
    pub fn review_deadline(&self) -> Option<ReviewDeadline> {
        let (after, then) = match self.kind {
            TaskKind::Approval => (self.timeout?, self.on_timeout),
            TaskKind::Agent | TaskKind::Wait => (self.review_timeout?, self.on_review_timeout),
        };
        Some(ReviewDeadline {
            after,
            then: then.unwrap_or_default(),
        })
    }

    /// Sets the input.
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Adds dependencies.
    pub fn after(mut self, deps: impl IntoIterator<Item = TaskKey>) -> Self {
        self.depends_on.extend(deps);
        self
    }
}

/// Who runs a task.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// An agent with the task's capability.
    #[default]
    Agent,
    /// The coordinator: the task waits for an event posted under its `event` key.
    Wait,
    /// A person: the task waits for an approval or a rejection.
    Approval,
}

impl TaskKind {
    /// True for the default kind (left out of the JSON).
    pub fn is_agent(&self) -> bool {
        *self == Self::Agent
    }

    /// The name a `wait` or `approval` task's `capability` reads as.
    pub fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Wait => "wait",
            Self::Approval => "approval",
        }
    }
}

/// What the coordinator decides for a person who did not decide on a review in time.
///
/// The default is `reject`: a deadline fails safe, giving no approval that nobody gave.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Approve the output under review as it is.
    Approve,
    /// Reject it: the task fails.
    #[default]
    Reject,
    /// Keep it in review for another `timeout`, marked escalated, and notify whoever the
    /// coordinator is configured to notify; after [`ESCALATIONS_MAX`] escalations the next
    /// deadline rejects.
    Escalate,
}

impl OnTimeout {
    /// The decision's name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Escalate => "escalate",
        }
    }
}

/// The most times one review is escalated; the deadline after the last escalation rejects,
/// so a review with a deadline always ends.
pub const ESCALATIONS_MAX: u32 = 3;

/// A review's deadline: how long a review waits for a person, and what is decided then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewDeadline {
    /// How long each review (and each escalation) waits.
    pub after: Duration,
    /// What is decided when the time is up.
    pub then: OnTimeout,
}

/// The longest event key, in bytes.
pub const MAX_EVENT_KEY_LEN: usize = 200;

/// Checks an event key: 1 to 200 bytes of printable ASCII without spaces.
pub fn check_event_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_EVENT_KEY_LEN {
        return Err(format!(
            "is {} bytes long; the limit is {MAX_EVENT_KEY_LEN}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "contains {c:?}; only printable ASCII without spaces is allowed"
        ));
    }
    Ok(())
}

/// The wire form of a [`TaskSpec`]: `capability` is optional there, and the fields that belong
/// to one kind are checked against the kind, naming the field at fault.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct TaskSpecWire {
        id: TaskKey,
        #[serde(default)]
        capability: Option<Capability>,
        #[serde(default)]
        kind: TaskKind,
        #[serde(default)]
        event: Option<String>,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        #[serde(default)]
        on_timeout: Option<OnTimeout>,
        #[serde(default, with = "humantime_serde")]
        review_timeout: Option<Duration>,
        #[serde(default)]
        on_review_timeout: Option<OnTimeout>,
        #[serde(default)]
        input: Value,
        #[serde(default)]
        depends_on: Vec<TaskKey>,
        #[serde(default)]
        retry: RetryPolicy,
        #[serde(default, with = "humantime_serde")]
        idle_timeout: Option<Duration>,
        #[serde(default, with = "humantime_serde")]
        hard_timeout: Option<Duration>,
        #[serde(default)]
        output_schema: Option<Value>,
        #[serde(default)]
        compensation: Option<Compensation>,
    }

    impl TryFrom<TaskSpecWire> for TaskSpec {
        type Error = String;

        fn try_from(w: TaskSpecWire) -> Result<Self, String> {
            let kind = w.kind;
            let capability = match (kind, w.capability) {
                (TaskKind::Agent, Some(c)) => c,
                (TaskKind::Agent, None) => return Err("missing field `capability`".into()),
                (kind, Some(c)) if c.as_str() != kind.name() => {
                    return Err(format!(
                        "`capability`: a task of kind `{}` is run by the coordinator and takes \
                         no capability",
                        kind.name()
                    ));
                }
                (kind, _) => Capability::new(kind.name()).map_err(|e| e.to_string())?,
            };
            let only = |field: &str, what: &str| {
                format!(
                    "`{field}` is only for tasks of kind {what}; this task is of kind `{}`",
                    kind.name()
                )
            };
            if kind != TaskKind::Wait && w.event.is_some() {
                return Err(only("event", "`wait`"));
            }
            if kind == TaskKind::Agent && w.timeout.is_some() {
                return Err(only("timeout", "`wait` or `approval`"));
            }
            if kind != TaskKind::Approval && w.on_timeout.is_some() {
                return Err(only("on_timeout", "`approval`"));
            }
            if kind == TaskKind::Approval {
                if w.review_timeout.is_some() {
                    return Err(only("review_timeout", "`agent` or `wait`"));
                }
                if w.on_review_timeout.is_some() {
                    return Err(only("on_review_timeout", "`agent` or `wait`"));
                }
                if w.on_timeout.is_some() && w.timeout.is_none() {
                    return Err(
                        "`on_timeout` needs a `timeout`: it says what is decided when the \
                         timeout passes"
                            .into(),
                    );
                }
            }
            if w.on_review_timeout.is_some() && w.review_timeout.is_none() {
                return Err(
                    "`on_review_timeout` needs a `review_timeout`: it says what is decided \
                     when the review timeout passes"
                        .into(),
                );
            }
            if w.timeout.is_some_and(|t| t.is_zero()) {
                return Err("`timeout` must be longer than zero".into());
            }
            if w.review_timeout.is_some_and(|t| t.is_zero()) {
                return Err("`review_timeout` must be longer than zero".into());
            }
            if kind != TaskKind::Agent {
                if w.idle_timeout.is_some() {
                    return Err(only("idle_timeout", "`agent`"));
                }
                if w.hard_timeout.is_some() {
                    return Err(only("hard_timeout", "`agent`"));
                }
                if w.compensation.is_some() {
                    return Err(only("compensation", "`agent`"));
                }
            }
            if kind == TaskKind::Wait {
                let Some(event) = &w.event else {
                    return Err(
                        "missing field `event`: a `wait` task names the key of the event it \
                         waits for"
                            .into(),
                    );
                };
                check_event_key(event).map_err(|e| format!("`event` {e}"))?;
                if w.timeout.is_none() {
                    return Err(
                        "missing field `timeout`: a `wait` task says how long it waits, \
                         e.g. \"1h\""
                            .into(),
                    );
                }
            }
            Ok(TaskSpec {
                id: w.id,
                capability,
                kind,
                event: w.event,
                timeout: w.timeout,
                on_timeout: w.on_timeout,
                review_timeout: w.review_timeout,
                on_review_timeout: w.on_review_timeout,
                input: w.input,
                depends_on: w.depends_on,
                retry: w.retry,
                idle_timeout: w.idle_timeout,
                hard_timeout: w.hard_timeout,
                output_schema: w.output_schema,
                compensation: w.compensation,
            })
        }
    }
}

/// How a task's failed attempts are retried: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. `1` means no retry.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, default = openapi::default_initial_backoff)
    )]
    #[schemars(with = "String")]
    pub initial_backoff: Duration,
    /// The backoff never grows past this.
    #[serde(with = "humantime_serde")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, default = openapi::default_max_backoff)
    )]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The most attempts any policy may ask for.
    pub const MAX_ATTEMPTS_CEILING: u32 = 100;

    /// The backoff ceiling before attempt `next_attempt` (2 for the first retry); the actual
    /// delay is drawn uniformly from zero to this ("full jitter").
    pub fn backoff_ceiling(&self, next_attempt: u32) -> Duration {
        let doublings = next_attempt.saturating_sub(2).min(30);
        let ceiling = self.initial_backoff.saturating_mul(1u32 << doublings);
        ceiling.min(self.max_backoff)
    }
}

/// The defaults of the duration fields in their JSON form: the schema derive would otherwise
/// serialize `Duration`'s own `{secs, nanos}`, not the humantime text the wire carries.
#[cfg(feature = "openapi")]
mod openapi {
    use humantime_serde::re::humantime::format_duration;

    pub(super) fn default_initial_backoff() -> String {
        format_duration(super::RetryPolicy::default().initial_backoff).to_string()
    }

    pub(super) fn default_max_backoff() -> String {
        format_duration(super::RetryPolicy::default().max_backoff).to_string()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A task's place on the kanban board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its dependencies.
    Backlog,
    /// Dependencies done; waiting for an agent (or for its retry backoff).
    Ready,
    /// An attempt is running on an agent.
    Running,
    /// A `wait` task waits for its event.
    Waiting,
    /// Output needs a person's decision before dependents may use it.
    Review,
    /// Finished with output.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Will not run: its objective ended or was cancelled.
    Cancelled,
}

impl TaskStatus {
    /// True once the task will change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One attempt of a task, as an agent receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// The objective it belongs to.
    pub objective: ObjectiveId,
    /// Its name in the objective's graph.
    pub key: TaskKey,
    /// The capability it was allocated by.
    pub capability: Capability,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The input, with `$from` references resolved.
    pub input: Arc<Value>,
    /// The outputs of the tasks it depends on, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream: BTreeMap<TaskKey, Value>,
    /// The attempt is cancelled after this long without progress.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// The attempt is cancelled after running this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hard_timeout: Option<Duration>,
    /// Its objective's priority (higher first): where a model agent's calls wait for a shared
    /// account's quota, higher-priority tasks get it first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
}

fn is_zero(priority: &i32) -> bool {
    *priority == 0
}

impl Task {
    /// A key that is the same each time this attempt is delivered (also after a coordinator
    /// restart) and different for every other attempt, for agents to pass to the models and
    /// tools they call so that a repeated delivery does not repeat a side effect.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.objective, self.id, self.attempt)
    }
}

/// Why a `$from` reference in a task's input could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The reference names a task that is not among the dependencies.
    #[error("input refers to `{0}`, which is not among the task's dependencies")]
    NotADependency(String),
    /// `$from` or `pointer` is not a string.
    #[error("`$from` and `pointer` must be strings")]
    Malformed,
    /// The pointer selects nothing in the dependency's output.
    #[error("pointer `{pointer}` selects nothing in the output of `{from}`")]
    PointerMisses {
        /// The dependency.
        from: String,
        /// The JSON Pointer.
        pointer: String,
    },
}

/// Replaces every `{"$from": key, "pointer"?: p}` object inside `input` by the named
/// dependency's output (or the part of it at `p`). Inputs without references are returned as
/// they are.
pub fn resolve_input(
    input: &Value,
    upstream: &BTreeMap<TaskKey, Value>,
) -> Result<Value, InputError> {
    match input {
        Value::Object(map) if map.contains_key("$from") => {
            let from = map
                .get("$from")
                .and_then(Value::as_str)
                .ok_or(InputError::Malformed)?;
            let output = upstream
                .get(from)
                .ok_or_else(|| InputError::NotADependency(from.to_owned()))?;
            match map.get("pointer") {
                None => Ok(output.clone()),
                Some(Value::String(pointer)) => {
                    output
                        .pointer(pointer)
                        .cloned()
                        .ok_or_else(|| InputError::PointerMisses {
                            from: from.to_owned(),
                            pointer: pointer.clone(),
                        })
                }
                Some(_) => Err(InputError::Malformed),
            }
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), resolve_input(v, upstream)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| resolve_input(v, upstream))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// Checks that every `$from` reference in a task's input is well formed and names one of the
/// task's dependencies, so a bad reference is refused on submit rather than failing later.
pub fn check_references(spec: &TaskSpec) -> Result<(), InputError> {
    fn walk(value: &Value, deps: &[TaskKey]) -> Result<(), InputError> {
        match value {
            Value::Object(map) if map.contains_key("$from") => {
                let from = map
                    .get("$from")
                    .and_then(Value::as_str)
                    .ok_or(InputError::Malformed)?;
                if !matches!(map.get("pointer"), None | Some(Value::String(_))) {
                    return Err(InputError::Malformed);
                }
                if deps.iter().any(|d| d.as_str() == from) {
                    Ok(())
                } else {
                    Err(InputError::NotADependency(from.to_owned()))
                }
            }
            Value::Object(map) => map.values().try_for_each(|v| walk(v, deps)),
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, deps)),
            _ => Ok(()),
        }
    }
    walk(&spec.input, &spec.depends_on)
}

/// Checks the `$from` references of a task's compensation: the only output it may refer to is
/// the compensated task's own.
pub fn check_compensation_references(spec: &TaskSpec) -> Result<(), InputError> {
    match &spec.compensation {
        Some(compensation) => check_references(&compensation.task_spec(&spec.id)),
        None => Ok(()),
    }
}

/// True when `input` holds a `$from` reference anywhere (cheap check before resolving).
pub fn has_references(input: &Value) -> bool {
    match input {
        Value::Object(map) => map.contains_key("$from") || map.values().any(has_references),
        Value::Array(items) => items.iter().any(has_references),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
