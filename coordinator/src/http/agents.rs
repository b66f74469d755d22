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
use crate::http::problem::{JsonBody, Problem};

/// One agent: its registration, health and load.
#[derive(Debug, Serialize)]
pub(super) struct AgentView {
    #[serde(flatten)]
    descriptor: AgentDescriptor,
    health: Health,
    in_flight: u32,
}

pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<AgentView>> {
    let agents = state
        .swarm
        .registry()
        .snapshots()
        .into_iter()
        .map(|snapshot| AgentView {
            descriptor: snapshot.descriptor,
            health: snapshot.health,
            in_flight: snapshot.in_flight,
        })
        .collect();
    Json(agents)
}

/// `POST /v1/agents`: registers a model agent from the fields of a `[[agents]]` entry; 201
/// with its descriptor once it can take work.
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

/// `DELETE /v1/agents/{id}`: stops the agent and removes it; its attempts in flight go back to
/// the queue.
pub(super) async fn deregister(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let agent: AgentId = id.parse().map_err(|e| Problem::bad_param("id", e))?;
    state.swarm.deregister_agent(agent).await?;
    Ok(StatusCode::NO_CONTENT)
}
