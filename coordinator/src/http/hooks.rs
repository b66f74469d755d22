//! `POST /v1/hooks/{name}`: a webhook delivery. Its signature (`X-Swarm-Signature`, see
//! `crate::hooks`) is its authentication, so the route needs no API token. A delivery whose
//! signature is missing, wrong or stale is a 401 and creates nothing. The payload is mapped
//! into the hook's template and submitted under the idempotency key
//! `hook:<name>:<X-Swarm-Delivery>`, so a delivery sent again creates nothing new.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use swarm_protocol::Objective;

use crate::hooks::{DELIVERY_HEADER, SIGNATURE_HEADER};
use crate::http::AppState;
use crate::http::problem::{PROBLEM_JSON, Problem};

/// Receives a delivery of the hook `name`: checks its signature, maps its JSON payload into
/// the hook's objective template and submits it (202 with the objective's id once it is
/// durable). The same delivery id again answers with the same objective and creates nothing.
#[utoipa::path(
    post,
    path = "/v1/hooks/{name}",
    tag = "hooks",
    operation_id = "receive_hook",
    params(
        ("name" = String, Path, description = "The hook."),
        ("X-Swarm-Signature" = String, Header,
         description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.\" + body>`."),
        ("X-Swarm-Delivery" = String, Header,
         description = "The sender's id of this delivery (1 to 200 printable characters)."),
    ),
    request_body(content = Object, content_type = "application/json",
                 description = "The payload, mapped into the hook's template."),
    responses(
        (status = 202, description = "Submitted (or submitted before, for a delivery id seen \
         already).", body = Object),
        (status = 400, description = "The body is not JSON, or `X-Swarm-Delivery` is missing \
         or not valid; `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "The signature is missing, wrong or stale.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such hook.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The delivery id was used for another payload.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The payload lacks a path the template references, or \
         the mapped objective is not valid; `field` names it.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let Some(hook) = state.config.hooks.get(&name) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no hook is named `{name}`"),
        )
        .field("name"));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    hook.verify(signature, &body, now).map_err(|err| {
        Problem::new(StatusCode::UNAUTHORIZED, "bad-signature", err.to_string())
            .field("X-Swarm-Signature")
    })?;
    let delivery = headers
        .get(DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|d| !d.is_empty() && d.len() <= 200 && d.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-delivery",
                "`X-Swarm-Delivery` must name the delivery: 1 to 200 printable ASCII characters",
            )
            .field("X-Swarm-Delivery")
        })?;
    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            format!("the payload is not JSON: {e}"),
        )
        .field("body")
    })?;
    let mapped = hook.objective(&payload).map_err(|err| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-payload",
            err.to_string(),
        )
        .field(err.field)
    })?;
    let objective: Objective = serde_json::from_value(mapped).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-objective",
            format!("the hook's template, filled from the payload, is not an objective: {e}"),
        )
        .field("template")
    })?;
    let key = format!("hook:{name}:{delivery}");
    let id = state
        .swarm
        .submit_with_key(objective.clone(), Some(key))
        .await
        .map_err(|err| Problem::from_error(err, Some(&objective)))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "hook": name, "delivery": delivery })),
    )
        .into_response())
}
