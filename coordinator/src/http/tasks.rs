//! `/v1/tasks`: the review queue, and a person's decision on a task in review.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use swarm_protocol::{ReviewDecision, ReviewItem, TaskId};

use crate::http::AppState;
use crate::http::problem::{JsonBody, OptionalJsonBody, PROBLEM_JSON, Problem};

/// The body of an approval: the reviewed output is kept unless `output` replaces it. An edited
/// output is checked against the task's `output_schema`; one that does not match is refused
/// (422, with `errors`) and the task stays in review.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Approval {
    /// Replaces the reviewed output; dependents receive this.
    #[serde(default)]
    output: Option<Value>,
}

/// The body of a rejection.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rejection {
    /// Why; the task fails with it.
    reason: String,
}

/// The review queue: every task waiting for a person, oldest objective first.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "review_queue",
    params(
        ("status" = String, Query, example = "review",
         description = "Required; only `review` is supported."),
    ),
    responses(
        (status = 200, description = "The tasks in review, with the schema errors of their \
         output where that is why.", body = Vec<ReviewItem>),
        (status = 400, description = "`status` is missing or not `review`, or a parameter \
         is unknown; `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn review_queue(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ReviewItem>>, Problem> {
    let mut status = None;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "status" => status = Some(value.to_owned()),
            other => {
                return Err(Problem::bad_query(
                    other,
                    "is not a parameter of this route; use status=review",
                ));
            }
        }
    }
    match status.as_deref() {
        Some("review") => Ok(Json(state.swarm.review_queue().await?)),
        Some(other) => Err(Problem::bad_query(
            "status",
            &format!("`{other}` is not supported; only status=review lists tasks"),
        )),
        None => Err(Problem::bad_query("status", "is required: status=review")),
    }
}

fn task_id(raw: &str) -> Result<TaskId, Problem> {
    raw.parse().map_err(|e| Problem::bad_param("id", e))
}

/// Approves a task in review: its dependents run with its output (or the one given).
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/approve",
    tag = "tasks",
    operation_id = "approve_task",
    params(("id" = TaskId, Path, description = "The task in review.")),
    request_body(content = Option<Approval>, content_type = "application/json",
                 description = "Optional: an empty body keeps the reviewed output."),
    responses(
        (status = 204, description = "Decided."),
        (status = 400, description = "`id` is not a task id, or the body is not JSON.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The task is not in review.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field of the body is not valid, or the edited \
         `output` does not match the task's `output_schema` (`errors` lists where, each with \
         its JSON Pointer); `field` names it. The task stays in review.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(approval): OptionalJsonBody<Approval>,
) -> Result<StatusCode, Problem> {
    let task = task_id(&id)?;
    let decision = ReviewDecision::Approve {
        output: approval.output,
    };
    state.swarm.review(task, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rejects a task in review: it fails with the reason.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/reject",
    tag = "tasks",
    operation_id = "reject_task",
    params(("id" = TaskId, Path, description = "The task in review.")),
    request_body(content = Rejection, content_type = "application/json"),
    responses(
        (status = 204, description = "Decided."),
        (status = 400, description = "`id` is not a task id, or the body is not JSON.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The task is not in review.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field of the body is not valid; `field` names it.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(rejection): JsonBody<Rejection>,
) -> Result<StatusCode, Problem> {
    let task = task_id(&id)?;
    let decision = ReviewDecision::Reject {
        reason: rejection.reason,
    };
    state.swarm.review(task, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}
