//! Counters of the requests a simulated model server received, so a test can assert how many
//! reached it (none while a breaker was open, say).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::state::SimState;

/// A model endpoint of the simulated server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// OpenAI-compatible `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

/// The most `traceparent` headers kept (the newest).
const TRACEPARENTS_KEPT: usize = 256;

/// The requests received per endpoint and status, counted on arrival with the status the
/// server decided for them (a streamed or stalled answer counts as 200), and the W3C trace
/// context they carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Request counts by endpoint, then by status.
    pub requests: BTreeMap<Endpoint, BTreeMap<u16, u64>>,
    /// The `traceparent` headers of the requests that had one, oldest first (the newest
    /// 256).
    #[serde(default)]
    pub traceparents: Vec<String>,
}

impl SimStats {
    /// Requests to every model endpoint.
    pub fn total(&self) -> u64 {
        self.requests.values().flat_map(BTreeMap::values).sum()
    }

    /// Requests to `endpoint`, whatever their status.
    pub fn count(&self, endpoint: Endpoint) -> u64 {
        self.requests
            .get(&endpoint)
            .map_or(0, |by_status| by_status.values().sum())
    }

    /// Requests to `endpoint` answered `status`.
    pub fn count_status(&self, endpoint: Endpoint, status: u16) -> u64 {
        self.requests
            .get(&endpoint)
            .and_then(|by_status| by_status.get(&status))
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn record(&mut self, endpoint: Endpoint, status: u16, traceparent: Option<&str>) {
        *self
            .requests
            .entry(endpoint)
            .or_default()
            .entry(status)
            .or_default() += 1;
        if let Some(traceparent) = traceparent {
            if self.traceparents.len() >= TRACEPARENTS_KEPT {
                self.traceparents.remove(0);
            }
            self.traceparents.push(traceparent.to_owned());
        }
    }
}

/// `GET /sim/stats`.
pub(super) async fn stats_json(State(state): State<Arc<SimState>>) -> Json<SimStats> {
    Json(state.stats())
}

/// One request the server answered (status 200), as it counted it: when it arrived, and the
/// tokens its answer's usage reports (prompt and completion), so a test can weigh every
/// 60-second window at the server, outside the client that made the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// When it arrived, on tokio's clock.
    pub at: tokio::time::Instant,
    /// Where.
    pub endpoint: Endpoint,
    /// Prompt plus completion tokens.
    pub tokens: u64,
}
