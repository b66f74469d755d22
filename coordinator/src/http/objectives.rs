//! `/v1/objectives`: submit, read, the chain of work, cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use swarm_protocol::{EventRecord, Objective, ObjectiveId, ObjectiveView};

use crate::http::AppState;
use crate::http::problem::{JsonBody, Problem};

/// The header that makes a submit idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The answer to a submit.
#[derive(Debug, Serialize)]
pub(super) struct Submitted {
    id: ObjectiveId,
    links: Links,
}

#[derive(Debug, Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    events: String,
    chain: String,
}

/// Parses an objective id path parameter, naming it when it is not one.
pub(super) fn objective_id(raw: &str) -> Result<ObjectiveId, Problem> {
    raw.parse().map_err(|e| Problem::bad_param("id", e))
}

pub(super) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(objective): JsonBody<Objective>,
) -> Result<Response, Problem> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid-idempotency-key",
                        "idempotency key: must be printable ASCII",
                    )
                    .field("Idempotency-Key")
                })?
                .to_string(),
        ),
    };
    // The body is kept so that a graph error can name the task's index in `tasks`.
    let id = state
        .swarm
        .submit_with_key(objective.clone(), key)
        .await
        .map_err(|e| Problem::from_error(e, Some(&objective)))?;
    let this = format!("/v1/objectives/{id}");
    let body = Submitted {
        id,
        links: Links {
            events: format!("{this}/events"),
            chain: format!("{this}/chain"),
            this: this.clone(),
        },
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&this) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ObjectiveView>, Problem> {
    let id = objective_id(&id)?;
    Ok(Json(state.swarm.objective(id).await?))
}

pub(super) async fn chain(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventRecord>>, Problem> {
    let id = objective_id(&id)?;
    Ok(Json(state.swarm.chain(id).await?))
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ObjectiveView>, Problem> {
    let id = objective_id(&id)?;
    state.swarm.cancel(id).await?;
    Ok(Json(state.swarm.objective(id).await?))
}
