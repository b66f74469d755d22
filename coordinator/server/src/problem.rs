//! Errors as RFC 9457 problem details: every 4xx and 5xx answer of the API is
//! `application/problem+json` with a `type`, a `title`, the `status`, a `detail` that names the
//! problem, and a `field` naming the part of the request at fault where there is one (a JSON
//! path such as `tasks[1].capability`, a path parameter such as `id`, or a header such as
//! `Idempotency-Key`).
//!
//! The conversion from [`swarm_coordinator::Error`] happens here and only here, so handlers
//! use `?`.
//! Details of server-side failures (the event log, a stopped actor) are logged, not sent: the
//! client learns that the server cannot serve it now and should try again.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use swarm_protocol::bounds::{JsonLimits, OutOfBounds, check_json};
use swarm_protocol::{GraphError, Objective, OutputError, SchedulerError, TaskKey};

use crate::AppState;
use swarm_coordinator::Error;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:swarm:problem:invalid-field",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "`tasks[1].capability`: invalid type: integer `3`, expected a string",
    "field": "tasks[1].capability"
}))]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:swarm:problem:<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What is wrong with this request.
    pub detail: String,
    /// The part of the request at fault: a JSON path in the body (`body` for the body as a
    /// whole), a path parameter, a query parameter or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where an output does not match its task's `output_schema` (an approval's edited
    /// output), each with its JSON Pointer.
    /// (Boxed: an error type travels in `Result`s and should stay small.)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<OutputError>>)]
    pub errors: Option<Box<Vec<OutputError>>>,
    /// Seconds the client should wait before trying again (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl Problem {
    /// A problem of kind `slug` with this status.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:swarm:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            errors: None,
            retry_after_s: None,
        }
    }

    /// Names the part of the request at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Asks the client to wait this long before trying again.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// A path parameter that does not parse.
    pub fn bad_param(name: &str, err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!("path parameter `{name}`: {err}"),
        )
        .field(name)
    }

    /// A query parameter that is unknown or does not parse; `problem` completes the sentence
    /// "query parameter `name` ...".
    pub fn bad_query(name: &str, problem: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!("query parameter `{name}` {problem}"),
        )
        .field(name)
    }

    /// A generic answer for a status that some layer produced without a body (no route, wrong
    /// method, a body over the limit, a timeout).
    pub fn for_status(status: StatusCode, method: &str, path: &str, body_limit: usize) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(
                status,
                "no-route",
                format!("no route matches {method} {path}"),
            ),
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                status,
                "method-not-allowed",
                format!("{path} does not accept {method}"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => body_too_large(body_limit),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => Self::new(
                status,
                "timeout",
                "the request took longer than the server allows; try again",
            )
            .retry_after(1),
            _ => Self::new(
                status,
                "error",
                status.canonical_reason().unwrap_or("error").to_lowercase(),
            ),
        }
    }

    /// The problem for an error the coordinator returned; `objective` (the submitted one, if
    /// any) lets graph errors name the task's index in `tasks`.
    pub fn from_error(err: Error, objective: Option<&Objective>) -> Self {
        match err {
            Error::Scheduler(e) => from_scheduler(e, objective),
            Error::UnknownAgent(id) => Self::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("agent {id} not found"),
            )
            .field("id"),
            Error::Registry(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-agent",
                e.to_string(),
            ),
            err @ Error::InvalidAgent { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-agent",
                err.to_string(),
            ),
            err @ (Error::Name(_) | Error::File { .. } | Error::Config { .. }) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid-input", err.to_string())
            }
            Error::Invalid {
                subject, ref field, ..
            } => {
                let field = field.clone();
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("invalid-{subject}"),
                    err.to_string(),
                )
                .field(field)
            }
            err @ Error::NotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "not-found", err.to_string()).field("name")
            }
            Error::Exists { subject, .. } => Self::new(
                StatusCode::CONFLICT,
                &format!("{subject}-exists"),
                err.to_string(),
            )
            .field("name"),
            Error::Configured { subject, .. } => Self::new(
                StatusCode::CONFLICT,
                &format!("{subject}-configured"),
                err.to_string(),
            )
            .field("name"),
            Error::NoStore => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-event-log",
                Error::NoStore.to_string(),
            ),
            err @ (Error::ActorStart { .. } | Error::Actor(_) | Error::Stopped(_)) => {
                tracing::error!(%err, "request failed: coordinator unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the coordinator is not available",
                )
                .retry_after(1)
            }
            Error::Store(err) => {
                tracing::error!(%err, "request failed: event log");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage",
                    "the event log is not available; try again",
                )
                .retry_after(1)
            }
            err @ (Error::Bind { .. } | Error::Serve { .. }) => {
                // A server's own sockets: no request causes this.
                tracing::error!(%err, "request failed: server socket");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed while handling the request",
                )
            }
        }
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        Self::from_error(err, None)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Serializing strings and numbers cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn body_too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

fn storage_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage",
        "the event log could not record the change; it was not accepted",
    )
    .retry_after(1)
}

/// `tasks[i].<what>` for the first task named `key`, or `tasks` if it is not in the body (a
/// spawned task, or no body at hand).
fn task_field(objective: Option<&Objective>, key: &TaskKey, what: &str) -> String {
    objective
        .and_then(|o| o.tasks.iter().position(|t| &t.id == key))
        .map_or_else(|| "tasks".to_string(), |i| format!("tasks[{i}].{what}"))
}

fn from_scheduler(err: SchedulerError, objective: Option<&Objective>) -> Problem {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let detail = err.to_string();
    match err {
        SchedulerError::Graph(graph) => {
            let field = match &graph {
                GraphError::Empty => "tasks".to_string(),
                GraphError::DuplicateId(key) => {
                    // The second use of the name is the one at fault.
                    objective
                        .and_then(|o| {
                            o.tasks
                                .iter()
                                .enumerate()
                                .filter(|(_, t)| &t.id == key)
                                .nth(1)
                        })
                        .map_or_else(|| "tasks".to_string(), |(i, _)| format!("tasks[{i}].id"))
                }
                GraphError::UnknownDependency { task, .. } => {
                    task_field(objective, task, "depends_on")
                }
                GraphError::Cycle(cycle) => match cycle.first() {
                    Some(task) => task_field(objective, task, "depends_on"),
                    None => "tasks".to_string(),
                },
                GraphError::TooManyTasks { .. } => "limits.max_tasks".to_string(),
                GraphError::TooDeep { .. } => "limits.max_depth".to_string(),
                GraphError::TooWide { .. } => "limits.max_fanout".to_string(),
                GraphError::OutOfBounds { task, field, .. } => task_field(objective, task, field),
            };
            Problem::new(unprocessable, "invalid-graph", detail).field(field)
        }
        SchedulerError::UnknownCapability { task, .. } => Problem::new(
            unprocessable,
            "unknown-capability",
            detail,
        )
        .field(task_field(objective, &task, "capability")),
        SchedulerError::BadInput { task, .. } => {
            Problem::new(unprocessable, "invalid-input", detail)
                .field(task_field(objective, &task, "input"))
        }
        SchedulerError::BadSchema { task, .. } => Problem::new(
            unprocessable,
            "invalid-output-schema",
            detail,
        )
        .field(task_field(objective, &task, "output_schema")),
        SchedulerError::BadCompensation { task, field, .. } => {
            Problem::new(unprocessable, "invalid-compensation", detail).field(task_field(
                objective,
                &task,
                &format!("compensation.{field}"),
            ))
        }
        SchedulerError::InvalidOutput { errors, .. } => {
            let mut problem = Problem::new(unprocessable, "invalid-output", detail).field("output");
            problem.errors = Some(Box::new(errors));
            problem
        }
        SchedulerError::NoPlanner => {
            Problem::new(unprocessable, "no-planner", detail).field("tasks")
        }
        SchedulerError::UnknownObjective(_) | SchedulerError::UnknownTask(_) => {
            Problem::new(StatusCode::NOT_FOUND, "not-found", detail).field("id")
        }
        SchedulerError::NotInReview { .. } => {
            Problem::new(StatusCode::CONFLICT, "not-in-review", detail).field("id")
        }
        SchedulerError::AttemptCurrent { .. } => {
            Problem::new(StatusCode::CONFLICT, "attempt-current", detail).field("id")
        }
        SchedulerError::NotPausedAtBudget(_) => {
            Problem::new(StatusCode::CONFLICT, "not-paused-at-budget", detail).field("id")
        }
        SchedulerError::Overloaded(_)
        | SchedulerError::NotTaken
        | SchedulerError::KeyNotChecked(_) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail).retry_after(1)
        }
        SchedulerError::IdempotencyConflict { .. } => {
            Problem::new(StatusCode::CONFLICT, "idempotency-conflict", detail)
                .field("Idempotency-Key")
        }
        SchedulerError::EventConflict { .. } => {
            Problem::new(StatusCode::CONFLICT, "idempotency-conflict", detail)
                .field("Idempotency-Key")
        }
        SchedulerError::BadIdempotencyKey(_) => {
            Problem::new(unprocessable, "invalid-idempotency-key", detail).field("Idempotency-Key")
        }
        SchedulerError::Storage(reason) => {
            tracing::error!(%reason, "request failed: event log");
            storage_unavailable()
        }
    }
}

/// A JSON request body, read within the body limit and parsed with the path of any bad field
/// named: syntax errors are 400, a wrong type, a missing or an unknown field 422, a body over
/// the limit 413, another content type 415.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body (with or without a content type) is `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let (headers, bytes) = read_body(req, state).await?;
        check_content_type(&headers)?;
        parse_json_within(&bytes, &state.config.ceilings.json()).map(Self)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let (headers, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        check_content_type(&headers)?;
        parse_json_within(&bytes, &state.config.ceilings.json()).map(Self)
    }
}

async fn read_body(req: Request, state: &AppState) -> Result<(HeaderMap, Bytes), Problem> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large(state.config.body_limit_bytes)
        } else {
            Problem::new(rejection.status(), "unreadable-body", rejection.body_text())
        }
    })?;
    Ok((headers, bytes))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "expected `Content-Type: application/json`, got `{}`",
                if content_type.is_empty() {
                    "none"
                } else {
                    content_type
                }
            ),
        )
        .field("Content-Type"))
    }
}

/// A field past one of the server's ceilings: 422 `over-limit`, naming it.
pub fn over_limit(bound: OutOfBounds) -> Problem {
    let detail = if bound.field.is_empty() {
        format!("the body {}", bound.message)
    } else {
        bound.to_string()
    };
    let problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "over-limit", detail);
    if bound.field.is_empty() {
        problem
    } else {
        problem.field(bound.field)
    }
}

/// Parses a JSON body within the hard ceilings on JSON ([`JsonLimits::default`]), naming
/// the path of the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    parse_json_within(bytes, &JsonLimits::default())
}

/// Parses a JSON body, naming the path of the field at fault: first its shape against
/// `limits` (depth, string and array sizes; 422 `over-limit`), then as a `T` (a struct: an
/// array is refused, 422).
pub fn parse_json_within<T: DeserializeOwned>(
    bytes: &[u8],
    limits: &JsonLimits,
) -> Result<T, Problem> {
    // A body that is not JSON is reported by the typed parse below, with its position.
    // `serde_json` reads at most 128 levels, so this parse cannot exhaust the stack.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        check_json(&value, limits).map_err(over_limit)?;
        // Every body is an object (or `null` where the body is optional); serde would read an
        // array into a struct field by field.
        if value.is_array() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "the body is not valid: expected a JSON object, got an array",
            )
            .field(BODY));
        }
    }
    typed(bytes)
}

/// The `field` of a problem with the body as a whole.
const BODY: &str = "body";

/// The part of a JSON path that names something: `serde_path_to_error` writes `?` for a
/// segment it could not tell (a key not read yet, where the JSON broke off), and `.` for the
/// root, which is the body.
fn known_path(path: &str) -> String {
    let mut known = path;
    while let Some(rest) = known.strip_suffix('?') {
        known = rest.strip_suffix('.').unwrap_or(rest);
    }
    if known.is_empty() || known == "." {
        BODY.to_owned()
    } else {
        known.to_owned()
    }
}

fn typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (status, slug) = match inner.classify() {
            serde_json::error::Category::Data => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-field")
            }
            _ => (StatusCode::BAD_REQUEST, "malformed-json"),
        };
        let field = known_path(&path);
        let detail = if field == BODY || status == StatusCode::BAD_REQUEST {
            format!("the body is not valid: {inner}")
        } else {
            format!("`{field}`: {inner}")
        };
        Problem::new(status, slug, detail).field(field)
    })?;
    deserializer.end().map_err(|inner| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            format!("the body is not valid: {inner}"),
        )
        .field(BODY)
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_with_the_body_names_the_part_that_is_known() {
        assert_eq!(known_path("."), "body");
        assert_eq!(known_path("?"), "body");
        assert_eq!(known_path("tasks[0].?"), "tasks[0]");
        assert_eq!(known_path("tasks[1].capability"), "tasks[1].capability");
    }

    /// A body that breaks off names where (the JSON path read so far, or `body`); one that
    /// is not an object names the body.
    #[test]
    fn malformed_json_and_arrays_name_the_body() {
        for (body, status, field) in [
            (&b"{\"goal\": "[..], StatusCode::BAD_REQUEST, "goal"),
            (b"{\"goal\": \"g\"} x", StatusCode::BAD_REQUEST, "body"),
            (
                b"{\"goal\": \"g\", \"tasks\": [{\"id\": \"a\" x",
                StatusCode::BAD_REQUEST,
                "tasks[0]",
            ),
            (b"{\"go", StatusCode::BAD_REQUEST, "body"),
            (b"[\"g\"]", StatusCode::UNPROCESSABLE_ENTITY, "body"),
            (b"null", StatusCode::UNPROCESSABLE_ENTITY, "body"),
        ] {
            let problem = parse_json::<Objective>(body).unwrap_err();
            assert_eq!(problem.status, status.as_u16(), "{problem:?}");
            assert_eq!(problem.field.as_deref(), Some(field), "{problem:?}");
        }
    }
}
