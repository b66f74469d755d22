//! `/v1/tasks`: a person's decision on a task in review.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use swarm_protocol::{ReviewDecision, TaskId};

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
