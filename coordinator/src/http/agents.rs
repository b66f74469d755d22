//! `/v1/agents`: the registry's view of every agent, and registering or removing a model
//! agent while the server runs.
//!
//! A registration takes the fields of one `[[agents]]` entry of `swarm.toml`
//! ([`AgentConfig`]). Its API key is named by `api_key_env`, an environment variable of the
//! server; the key itself never travels over the API, and an error names the variable only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use swarm_agents::model::ApiKey;
use swarm_protocol::{AgentDescriptor, AgentId, Health};

use crate::Error;
use crate::config::AgentConfig;
use crate::http::AppState;
use crate::http::problem::{JsonBody, PROBLEM_JSON, Problem};

/// One agent: its registration, health and load.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AgentView {
    /// Its registration.
    #[serde(flatten)]
    pub(crate) descriptor: AgentDescriptor,
    /// Whether it may be given work.
    pub(crate) health: Health,
    /// Attempts running on it.
    pub(crate) in_flight: u32,
}

/// Every agent of the registry, by id: what `GET /v1/agents` answers and the dashboard's
/// agents page shows.
pub(crate) fn views(swarm: &crate::Swarm) -> Vec<AgentView> {
    swarm
        .registry()
        .snapshots()
        .into_iter()
        .map(|snapshot| AgentView {
            descriptor: snapshot.descriptor,
            health: snapshot.health,
            in_flight: snapshot.in_flight,
        })
        .collect()
}

/// Every agent of the registry, with its health and load.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "list_agents",
    responses((status = 200, description = "The agents.", body = Vec<AgentView>)),
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<AgentView>> {
    Json(views(&state.swarm))
}

/// Registers a model agent from the fields of a `swarm.toml` `[[agents]]` entry; 201 with its
/// descriptor once it can take work.
///
/// Its API key is read from the server's environment variable `api_key_env`; the key itself
/// never travels over the API.
#[utoipa::path(
    post,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "register_agent",
    request_body(content = AgentConfig, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered.", body = AgentDescriptor,
         headers(("Location" = String, description = "The agent's route."))),
        (status = 400, description = "The body is not JSON.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field is not valid, the agent cannot be built, or \
         the variable `api_key_env` names is unset or empty; `field` names the field.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn register(
    State(state): State<AppState>,
    JsonBody(config): JsonBody<AgentConfig>,
) -> Result<Response, Problem> {
    if let Some(var) = &config.api_key_env {
        // `from_env` names the variable and says whether it is unset or empty, never a value.
        ApiKey::from_env(var).map_err(|detail| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "missing-api-key", detail)
                .field("api_key_env")
        })?;
    }
    let (registration, factory, _) = config.build().map_err(|err| match err {
        Error::Input(detail) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-agent", detail)
        }
        other => Problem::from(other),
    })?;
    let descriptor = state.swarm.register_agent(registration, factory).await?;
    let location = format!("/v1/agents/{}", descriptor.id);
    let mut response = (StatusCode::CREATED, Json(descriptor)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Stops an agent and removes it; its attempts in flight go back to the queue.
#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    tag = "agents",
    operation_id = "deregister_agent",
    params(("id" = AgentId, Path, description = "The agent.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "`id` is not an agent id.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such agent.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn deregister(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let agent: AgentId = id.parse().map_err(|e| Problem::bad_param("id", e))?;
    state.swarm.deregister_agent(agent).await?;
    Ok(StatusCode::NO_CONTENT)
}
