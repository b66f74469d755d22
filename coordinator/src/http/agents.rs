//! `/v1/agents`: the registry's view of every agent.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use swarm_protocol::{AgentDescriptor, Health};

use crate::http::AppState;

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
