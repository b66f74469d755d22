//! External events: `POST /v1/events`, events from outside the swarm, which `wait` tasks
//! consume; and `GET /v1/events/pending`, the ones kept because no task consumed them yet.
//! (The event *streams* of the log, `GET /v1/events` and an objective's, are `streams`.)

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use swarm_protocol::task::check_event_key;
use swarm_protocol::{ExternalEvent, NewExternalEvent};

use crate::AppState;
use crate::objectives::idempotency_key;
use crate::problem::{JsonBody, PROBLEM_JSON, Problem};

/// How long an event is kept for a task that has not started waiting yet, unless `ttl` says.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest `ttl` accepted.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// An event to post.
///
/// ```json
/// { "key": "build-42-done", "payload": { "status": "green" }, "ttl": "1h" }
/// ```
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventPost {
    /// The key `wait` tasks wait for: 1 to 200 printable ASCII characters, no spaces.
    key: String,
    /// What it carries: the output of the task that consumes it.
    #[serde(default)]
    payload: Value,
    /// How long it is kept if no task consumes it (default 24h, at most 30 days).
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "1h")]
    ttl: Option<Duration>,
}

/// Posts an event. The first `wait` task waiting for its key consumes it and succeeds with
/// the payload as its output; if none waits, it is kept (durably) for the first one that
/// starts, until its `ttl` passes. 202 once it is durable, with `consumed_by` naming the task
/// that took it at once. A repeat under the same `Idempotency-Key` with the same key and
/// payload gets the first event back and delivers nothing again.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "post_event",
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Makes a retried post safe: 1 to 255 printable ASCII characters."),
    ),
    request_body(content = EventPost, content_type = "application/json"),
    responses(
        (status = 202, description = "Received (and consumed, if a task was waiting).",
         body = ExternalEvent),
        (status = 400, description = "The body is not JSON.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The idempotency key was used for another event.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "`key`, `ttl` or the idempotency key is not valid, or \
         the body has a wrong type or unknown field; `field` names it.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(post): JsonBody<EventPost>,
) -> Result<(StatusCode, Json<ExternalEvent>), Problem> {
    let idempotency_key = idempotency_key(&headers)?;
    let invalid = |field: &str, detail: String| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-field", detail).field(field)
    };
    check_event_key(&post.key).map_err(|e| invalid("key", format!("`key` {e}")))?;
    let ttl = post.ttl.unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(invalid(
            "ttl",
            format!(
                "`ttl` must be longer than zero and at most {}",
                humantime::format_duration(MAX_TTL)
            ),
        ));
    }
    let event = NewExternalEvent {
        key: post.key,
        payload: post.payload,
        ttl,
        idempotency_key,
    };
    let posted = state.swarm.post_event(event).await?;
    Ok((StatusCode::ACCEPTED, Json(posted)))
}

/// The events kept because no `wait` task consumed them yet (and not expired), oldest first.
#[utoipa::path(
    get,
    path = "/v1/events/pending",
    tag = "events",
    operation_id = "pending_events",
    responses(
        (status = 200, description = "The kept events.", body = Vec<ExternalEvent>),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn pending(
    State(state): State<AppState>,
) -> Result<Json<Vec<ExternalEvent>>, Problem> {
    Ok(Json(state.swarm.pending_events().await?))
}
