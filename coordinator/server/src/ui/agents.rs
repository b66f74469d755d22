//! The agents page: each agent's capabilities, health, load against capacity, and a button
//! that drains it (`DELETE /v1/agents/{id}`: it takes no new work, its attempts in flight go
//! back to the queue, and it leaves the registry).
//!
//! The page shows what `GET /v1/agents` answers (`agents::views`), including each agent's
//! circuit breaker, rate limiter use and restarts; an agent without a breaker or limiter (any
//! plug-in that is not a model agent) reads "not reported" there. The script follows `GET /v1/events` and fetches the table again
//! (`/ui/agents/live`), at most twice a second. A remote agent (a worker's, over NATS) says
//! which host it runs on and when its last heartbeat came; while the coordinator's NATS
//! connection is down, a banner says that remote agents wait.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Badge, Layout, Visitor, health_badge, html};
use crate::AppState;
use crate::agents::{AgentView, views};
use swarm_protocol::BreakerStatus;

/// A circuit breaker's state, as the page shows it.
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
    /// A model agent's breaker.
    pub(crate) breaker: Option<Breaker>,
    /// A model agent's limiter.
    pub(crate) limiter: Option<Limiter>,
    /// Restarts by its supervisor.
    pub(crate) restarts: Option<u32>,
    /// Where a remote agent runs, and how long ago its worker last sent a heartbeat.
    pub(crate) remote: Option<Remote>,
}

/// A remote agent's worker.
pub(crate) struct Remote {
    pub(crate) host: String,
    pub(crate) heartbeat_ago: String,
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
            breaker: view.status.breaker.map(|b| match b {
                BreakerStatus::Closed => Breaker::Closed,
                BreakerStatus::Open { probe_in_ms } => Breaker::Open { probe_in_ms },
                BreakerStatus::HalfOpen => Breaker::HalfOpen,
            }),
            limiter: view.status.limiter.map(|l| Limiter {
                requests: l.requests.map_or(0, |q| q.used),
                requests_max: l.requests.map(|q| u64::from(q.per_minute)),
                tokens: l.tokens.map_or(0, |q| q.used),
                tokens_max: l.tokens.map(|q| u64::from(q.per_minute)),
            }),
            restarts: Some(view.restarts),
            remote: view.status.remote.map(|r| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let ago = now.saturating_sub(r.last_heartbeat_unix_ms);
                Remote {
                    host: r.host,
                    heartbeat_ago: format!("{:.1}s ago", ago as f64 / 1000.0),
                }
            }),
        }
    }
}

/// The table.
struct Live {
    rows: Vec<Row>,
    /// Remote agents are on and the coordinator's NATS connection is down.
    nats_down: bool,
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
        nats_down: state
            .config
            .remote
            .as_ref()
            .is_some_and(|r| !r.status().connected),
    }
}

/// `GET /ui/agents`.
pub(crate) async fn page(State(state): State<AppState>, visitor: Visitor) -> Response {
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
pub(crate) async fn live(State(state): State<AppState>) -> Response {
    html(&LiveFragment {
        this: live_of(&state),
    })
}
