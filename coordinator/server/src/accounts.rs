//! `/v1/accounts`: the provider accounts of `swarm.toml` (`[[accounts]]`), each with the
//! quotas, breaker and concurrency its agents share, what the last minute used of them, any
//! pause the provider asked for, the agents on it and what their calls spent.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use swarm_protocol::{BreakerStatus, LimiterStatus, Spent};

use crate::AppState;
use swarm_coordinator::config::AccountConfig;

/// One provider account: its configuration (the key only by its variable's name) and its live
/// state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AccountView {
    /// Its configuration, as `[[accounts]]` gives it.
    #[serde(flatten)]
    pub(crate) config: AccountConfig,
    /// Its breaker, shared by its agents: while open they are all down.
    pub(crate) breaker_state: BreakerStatus,
    /// Its quotas, what the last 60 seconds used of them (corrected by the usage the provider
    /// reported), the calls waiting, and any pause the provider asked for.
    pub(crate) limiter: LimiterStatus,
    /// Calls in flight now over all its agents (shown with a `concurrency` limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) in_flight: Option<u32>,
    /// The names of the registered agents on it.
    pub(crate) agents: Vec<String>,
    /// What its registered agents' calls spent since the coordinator started.
    pub(crate) spent: Spent,
}

/// Every provider account, by name, with its live quota state and its agents.
#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "agents",
    operation_id = "list_accounts",
    responses((status = 200, description = "The accounts.", body = Vec<AccountView>)),
)]
pub(super) async fn list(State(state): State<AppState>) -> Json<Vec<AccountView>> {
    let agents = crate::agents::views(&state.swarm);
    let views = state
        .config
        .models
        .accounts()
        .map(|(config, account)| {
            let live = account.state();
            let on_it: Vec<_> = agents
                .iter()
                .filter(|agent| agent.status.account.as_deref() == Some(&config.name))
                .collect();
            let mut spent = Spent::default();
            for agent in on_it.iter().filter_map(|agent| agent.status.spent) {
                spent.cost_usd_micros = spent.cost_usd_micros.saturating_add(agent.cost_usd_micros);
                spent.unpriced_tokens = spent.unpriced_tokens.saturating_add(agent.unpriced_tokens);
            }
            AccountView {
                config: config.clone(),
                breaker_state: live.breaker,
                limiter: live.limiter,
                in_flight: live.in_flight,
                agents: on_it
                    .iter()
                    .map(|agent| agent.descriptor.name.clone())
                    .collect(),
                spent,
            }
        })
        .collect();
    Json(views)
}
