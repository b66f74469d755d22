//! The agents page: each agent's capabilities, health, load against capacity, and a button
//! that drains it (`DELETE /v1/agents/{id}`: it takes no new work, its attempts in flight go
//! back to the queue, and it leaves the registry).
//!
//! The page shows what `GET /v1/agents` answers (`agents::views`). The circuit breaker, the
//! rate limiter and restarts have their own columns, filled from the optional fields of
//! [`Row`]: `GET /v1/agents` does not report them yet, so they read "not reported" until it
//! does (a model agent's breaker already shows through its health: open is `down`, half-open
//! `degraded`, closed `up`). The script follows `GET /v1/events` and fetches the table again
//! (`/ui/agents/live`), at most twice a second.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Badge, Layout, Visitor, health_badge, html};
use crate::http::AppState;
use crate::http::agents::{AgentView, views};

/// A circuit breaker's state, as the page shows it.
#[expect(
    dead_code,
    reason = "built once `GET /v1/agents` reports breakers; the template already shows each"
)]
pub(crate) enum Breaker {
    /// Calls go through.
    Closed,
    /// Calls are refused until the next probe.
    Open {
        /// Until the next probe, ms.
        probe_in_ms: u64,
    },
    /// One probe call is let through.
    HalfOpen,
}

/// A rate limiter's use against its limits in the current minute.
pub(crate) struct Limiter {
    pub(crate) requests: u64,
    pub(crate) requests_max: Option<u64>,
    pub(crate) tokens: u64,
    pub(crate) tokens_max: Option<u64>,
}

/// One agent's row.
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) health: Badge,
    pub(crate) in_flight: u32,
    pub(crate) capacity: u32,
    /// Filled once `GET /v1/agents` reports it.
    pub(crate) breaker: Option<Breaker>,
    /// Filled once `GET /v1/agents` reports it.
    pub(crate) limiter: Option<Limiter>,
    /// Filled once `GET /v1/agents` reports it.
    pub(crate) restarts: Option<u32>,
}

impl From<AgentView> for Row {
    fn from(view: AgentView) -> Self {
        Self {
            id: view.descriptor.id.to_string(),
            name: view.descriptor.name,
            description: view.descriptor.description,
            capabilities: view
                .descriptor
                .capabilities
                .iter()
                .map(ToString::to_string)
                .collect(),
            health: health_badge(view.health),
            in_flight: view.in_flight,
            capacity: view.descriptor.max_concurrency,
            breaker: None,
            limiter: None,
            restarts: None,
        }
    }
}

/// The table.
struct Live {
    rows: Vec<Row>,
}

/// The page.
#[derive(Template)]
#[template(path = "agents.html")]
struct Page {
    layout: Layout,
    this: Live,
    after_seq: u64,
}

/// The live part alone (for the script).
#[derive(Template)]
#[template(path = "agents_live.html")]
struct LiveFragment {
    this: Live,
}

fn live_of(state: &AppState) -> Live {
    Live {
        rows: views(&state.swarm).into_iter().map(Row::from).collect(),
    }
}

/// `GET /ui/agents`.
pub(in crate::http) async fn page(State(state): State<AppState>, visitor: Visitor) -> Response {
    let page = super::last_seq(&state).await.map(|after_seq| {
        html(&Page {
            layout: visitor.layout("agents"),
            this: live_of(&state),
            after_seq,
        })
    });
    super::page_or_error(&visitor, "agents", page)
}

/// `GET /ui/agents/live`.
pub(in crate::http) async fn live(State(state): State<AppState>) -> Response {
    html(&LiveFragment {
        this: live_of(&state),
    })
}
