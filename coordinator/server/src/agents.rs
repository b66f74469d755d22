//! `/v1/agents`: the registry's view of every agent, and registering or removing a model
//! agent while the server runs (a removal drains the agent first).
//!
//! A registration takes the fields of one `[[agents]]` entry of `swarm.toml`
//! ([`AgentConfig`]). Its API key is named by `api_key_env`, an environment variable of the
//! server; the key itself never travels over the API, and an error names the variable only.
//! The fields are recorded in the event log (`AgentDeclared`), so `swarm serve` registers the
//! agent again after a restart; a removal forgets them (`AgentUndeclared`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use swarm_agents::model::ApiKey;
use swarm_protocol::{AgentDescriptor, AgentId, AgentStatus, Health};

use crate::AppState;
use crate::problem::{JsonBody, PROBLEM_JSON, Problem, over_limit};
use swarm_coordinator::config::AgentConfig;

/// One agent: its registration, health and load, how often it was restarted, and what its
/// plug-in says about itself (a model agent's breaker and limiter).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AgentView {
    /// Its registration.
    #[serde(flatten)]
    pub(crate) descriptor: AgentDescriptor,
    /// Whether it may be given work.
    pub(crate) health: Health,
    /// Attempts running on it.
    pub(crate) in_flight: u32,
    /// Times its supervisor restarted its actor since it was registered.
    pub(crate) restarts: u32,
    /// Its breaker and limiter, when it has them.
    #[serde(flatten)]
    pub(crate) status: AgentStatus,
}

/// Every agent of the registry, by id: what `GET /v1/agents` answers and the dashboard's
/// agents page shows.
pub(crate) fn views(swarm: &swarm_coordinator::Swarm) -> Vec<AgentView> {
    let live = swarm.live_agents();
    swarm
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
        .collect()
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
    Json(views(&state.swarm))
}

/// Registers a model agent from the fields of a `swarm.toml` `[[agents]]` entry; 201 with its
/// descriptor once it can take work and its fields are durable in the event log, so a restart
/// registers it again (until it is removed).
///
/// Its API key is read from the server's environment variable `api_key_env`; the key itself
/// never travels over the API and is never stored.
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
    config.check_bounds().map_err(over_limit)?;
    let accounts: Vec<_> = state
        .config
        .models
        .accounts()
        .map(|(account, _)| account.clone())
        .collect();
    let endpoint = config.check(&accounts).map_err(|(field, message)| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            format!("{field}: {message}"),
        )
        .field(field)
    })?;
    if let Some(var) = &endpoint.api_key_env {
        // `from_env` names the variable and says whether it is unset or empty, never a value.
        ApiKey::from_env(var).map_err(|detail| {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "missing-api-key", detail)
                .field("api_key_env")
        })?;
    }
    // An agent that cannot be built is `Error::InvalidAgent`: 422 `invalid-agent`.
    let (registration, factory, _) = state.config.models.build_agent(&config)?;
    // Its own fields, as read: a restart builds it again from them.
    let declared = serde_json::to_value(&config).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-agent",
            format!("the agent's fields cannot be recorded: {e}"),
        )
    })?;
    let descriptor = state
        .swarm
        .register_declared_agent(registration, factory, declared)
        .await?;
    let location = format!("/v1/agents/{}", descriptor.id);
    let mut response = (StatusCode::CREATED, Json(descriptor)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// How long a removed agent's running attempts may take to finish when `grace` is not given.
const GRACE_DEFAULT: Duration = Duration::from_secs(60);

/// The longest `grace` accepted: a removal must end.
const GRACE_MAX: Duration = Duration::from_secs(60 * 60);

/// A removal under way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Removal {
    /// The agent.
    id: AgentId,
    /// `draining`: it gets no new work, and leaves once its running attempts end.
    health: Health,
    /// How long its running attempts may take to finish; what still runs then is re-queued.
    #[schema(value_type = String, example = "1m")]
    grace: String,
}

/// Removes an agent gracefully: it is marked `draining` at once (nothing new is allocated to
/// it, and the change is durable before the answer), the attempts it runs may finish for up to
/// `grace`, then it is stopped and removed, and whatever still runs goes back to the queue.
/// Asking again while it drains answers 202 again. An agent registered over the API is
/// forgotten at once: a restart does not register it again.
#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    tag = "agents",
    operation_id = "deregister_agent",
    params(
        ("id" = AgentId, Path, description = "The agent."),
        ("grace" = Option<String>, Query, example = "30s",
         description = "How long its running attempts may take to finish (humantime: `500ms`, \
                        `30s`, `2m`; at most 1h). Default 60s."),
    ),
    responses(
        (status = 202, description = "Draining; it is removed once its running attempts \
         ended or the grace elapsed.", body = Removal),
        (status = 400, description = "`id` is not an agent id, or `grace` is not a duration of \
         at most 1h; `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such agent.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn deregister(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let agent: AgentId = id.parse().map_err(|e| Problem::bad_param("id", e))?;
    let grace = parse_grace(&uri)?;
    state.swarm.remove_agent(agent, grace).await?;
    let removal = Removal {
        id: agent,
        health: Health::Draining,
        grace: humantime::format_duration(grace).to_string(),
    };
    Ok((StatusCode::ACCEPTED, Json(removal)).into_response())
}

/// `?grace=<duration>`, or the default.
fn parse_grace(uri: &Uri) -> Result<Duration, Problem> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!("the query string does not parse: {e}"),
        )
    })?;
    let mut grace = GRACE_DEFAULT;
    for (name, value) in pairs {
        if name != "grace" {
            return Err(Problem::bad_query(
                &name,
                "is not a parameter of this route; use grace",
            ));
        }
        grace = humantime::parse_duration(&value).map_err(|e| {
            Problem::bad_query(
                "grace",
                &format!("`{value}` is not a duration such as `30s` or `2m`: {e}"),
            )
        })?;
        if grace > GRACE_MAX {
            return Err(Problem::bad_query(
                "grace",
                &format!(
                    "`{value}` is longer than the most allowed, {}",
                    humantime::format_duration(GRACE_MAX)
                ),
            ));
        }
    }
    Ok(grace)
}
