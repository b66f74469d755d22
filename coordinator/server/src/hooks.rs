//! `/v1/hooks`: webhooks.
//!
//! `POST /v1/hooks/{name}` is a delivery. Its signature (`X-Swarm-Signature`, see
//! `swarm_coordinator::triggers::signature`) is its authentication, so the route needs no API
//! token. A delivery whose signature is missing, wrong or stale is a 401 and creates nothing. The payload is mapped
//! into the hook's template and submitted under the idempotency key
//! `hook:<name>:<X-Swarm-Delivery>`, so a delivery sent again creates nothing new.
//!
//! `POST /v1/hooks`, `GET /v1/hooks` and `DELETE /v1/hooks/{name}` declare, list and delete
//! hooks (with the API token like every other route): a declaration or deletion answers once
//! its event is durable, and deliveries see it at once. The hooks are the trigger actor's
//! (`swarm_coordinator::triggers`); each handler is one message to it through `Swarm`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use swarm_protocol::bounds::{check_duration, check_json};
use swarm_protocol::{Objective, ObjectiveId, SchedulerError};

use crate::AppState;
use crate::problem::{JsonBody, PROBLEM_JSON, Problem, over_limit};
use swarm_coordinator::Error;
use swarm_coordinator::config::HookConfig;
use swarm_coordinator::triggers::HookView;
use swarm_coordinator::triggers::hooks::{
    DELIVERY_HEADER, MAX_DELIVERY_LEN, check_hook_name, delivery_idempotency_key,
};
use swarm_coordinator::triggers::signature::SIGNATURE_HEADER;

/// A hook's name from the path.
fn name(raw: &str) -> Result<&str, Problem> {
    check_hook_name(raw).map_err(|e| Problem::bad_param("name", e))?;
    Ok(raw)
}

/// Declares a hook: its name, the environment variable of the coordinator's process that
/// holds its secret (read now, and at every start), its objective template and its
/// timestamp tolerance: the fields of a `swarm.toml` `[[hooks]]` entry. 201 once
/// `HookDeclared` is durable; deliveries are accepted from then on.
#[utoipa::path(
    post,
    path = "/v1/hooks",
    tag = "hooks",
    operation_id = "declare_hook",
    request_body(content = HookConfig, content_type = "application/json"),
    responses(
        (status = 201, description = "Declared.", body = HookView,
         headers(("Location" = String, description = "The hook's delivery route."))),
        (status = 400, description = "The body is not JSON.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "A hook has that name (one of swarm.toml, or one declared \
         through the API).", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field is not valid: `secret_env` names a variable that \
         is unset or empty in the coordinator's environment, a `$payload` reference of the \
         template is not a JSON Pointer (`template.tasks[0].input.ref`), `name`, `tolerance`, \
         or a wrong type or unknown field; `field` names it.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn declare(
    State(state): State<AppState>,
    JsonBody(config): JsonBody<HookConfig>,
) -> Result<Response, Problem> {
    if let Some(tolerance) = config.tolerance {
        check_duration("tolerance", tolerance).map_err(over_limit)?;
    }
    let view = state.swarm.declare_hook(config).await?;
    let location = format!("/v1/hooks/{}", view.name);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Every hook served, by name: from swarm.toml (`source: config`) and declared through the
/// API (`source: api`). A secret is only named by its variable.
#[utoipa::path(
    get,
    path = "/v1/hooks",
    tag = "hooks",
    operation_id = "list_hooks",
    responses(
        (status = 200, description = "The hooks.", body = Vec<HookView>),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Vec<HookView>>, Problem> {
    Ok(Json(state.swarm.hooks().await?))
}

/// Deletes a hook declared through the API (204 once `HookDeleted` is durable): deliveries
/// to it are 404 from then on; the objectives it submitted are not touched. A hook of
/// swarm.toml cannot be deleted here (409).
#[utoipa::path(
    delete,
    path = "/v1/hooks/{name}",
    tag = "hooks",
    operation_id = "delete_hook",
    params(("name" = String, Path, description = "The hook.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`name` is not a hook name.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such hook.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The hook is declared in swarm.toml.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, Problem> {
    state.swarm.delete_hook(name(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

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
    request_body(content = serde_json::Value, content_type = "application/json",
                 description = "The payload (any JSON), mapped into the hook's template."),
    responses(
        (status = 202, description = "Submitted (or submitted before, for a delivery id seen \
         already).", body = Delivered),
        (status = 400, description = "The body is not JSON, or `X-Swarm-Delivery` is missing \
         or not valid; `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = "The signature is missing, wrong or stale.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such hook.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The delivery id was used for another body; `field` is \
         `X-Swarm-Delivery`.", body = Problem, content_type = PROBLEM_JSON),
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
    let Some(hook) = state.swarm.hook(&name).await? else {
        // Also a hook deleted since: deliveries to it are refused.
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
        .filter(|d| {
            !d.is_empty() && d.len() <= MAX_DELIVERY_LEN && d.bytes().all(|b| b.is_ascii_graphic())
        })
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
    check_json(&payload, &state.config.ceilings.json())
        .map_err(|bound| over_limit(bound.within("body")))?;
    let mapped = hook.objective(&payload).map_err(|err| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-payload",
            err.to_string(),
        )
        .field(err.field)
    })?;
    let mut objective: Objective = serde_json::from_value(mapped).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-objective",
            format!("the hook's template, filled from the payload, is not an objective: {e}"),
        )
        .field("template")
    })?;
    crate::objectives::bound(&mut objective, &state.config.ceilings)?;
    let key = delivery_idempotency_key(&name, delivery);
    let id = state
        .swarm
        .submit_with_key(objective.clone(), Some(key))
        .await
        .map_err(|err| match err {
            // The key is the delivery id: name the header the sender set, not the
            // `Idempotency-Key` of a submit.
            Error::Scheduler(SchedulerError::IdempotencyConflict { .. }) => Problem::new(
                StatusCode::CONFLICT,
                "delivery-conflict",
                format!("delivery `{delivery}` was already received with a different body"),
            )
            .field("X-Swarm-Delivery"),
            err => Problem::from_error(err, Some(&objective)),
        })?;
    let delivered = Delivered {
        id,
        hook: name,
        delivery: delivery.to_owned(),
    };
    Ok((StatusCode::ACCEPTED, Json(delivered)).into_response())
}

/// The answer to a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Delivered {
    /// The objective the delivery submitted (the first one, for a delivery id seen already).
    id: ObjectiveId,
    /// The hook.
    hook: String,
    /// The delivery's id (`X-Swarm-Delivery`).
    delivery: String,
}
