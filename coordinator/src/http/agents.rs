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
use swarm_protocol::{AgentDescriptor, AgentId, AgentStatus, Health};

use crate::Error;
use crate::config::AgentConfig;
use crate::http::AppState;
use crate::http::problem::{JsonBody, PROBLEM_JSON, Problem};

/// One agent: its registration, health and load, how often it was restarted, and what its
/// plug-in says about itself (a model agent's breaker and limiter).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AgentView {
    /// Its registration.
    #[serde(flatten)]
    descriptor: AgentDescriptor,
    /// Whether it may be given work.
    health: Health,
    /// Attempts running on it.
    in_flight: u32,
    /// Times its supervisor restarted its actor since it was registered.
    restarts: u32,
    /// Its breaker and limiter, when it has them.
    #[serde(flatten)]
    status: AgentStatus,
}

/// Every agent of the registry, with its health and load, restarts, and its breaker and rate
/// limiter where it has them.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "list_agents",
    responses((status = 200, description = "The agents.", body = Vec<AgentView>)),
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<AgentView>> {
    let live = state.swarm.live_agents();
    let agents = state
        .swarm
        .registry()
        .snapshots()
        .into_iter()
        .map(|snapshot| {
            // An agent registered or removed between the two reads shows no live part.
            let (restarts, status) = live
                .get(snapshot.descriptor.id)
                .map(|live| (live.restarts, live.instance.agent_status()))
                .unwrap_or_default();
            AgentView {
                descriptor: snapshot.descriptor,
                health: snapshot.health,
                in_flight: snapshot.in_flight,
                restarts,
                status,
            }
        })
        .collect();
    Json(agents)
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
