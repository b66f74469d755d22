//! `/v1/tasks`: the review queue, and a person's decision on a task in review.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use swarm_protocol::{ReviewDecision, ReviewItem, TaskId};

use crate::http::AppState;
use crate::http::problem::{JsonBody, OptionalJsonBody, Problem};

/// The body of an approval: the reviewed output is kept unless `output` replaces it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Approval {
    #[serde(default)]
    output: Option<Value>,
}

/// The body of a rejection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rejection {
    reason: String,
}

/// `GET /v1/tasks?status=review`: every task waiting for a person, oldest objective first.
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
