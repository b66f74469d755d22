//! A simulated model server: a fake model API that speaks the real wire formats over real HTTP,
//! so the demo, the tests and load runs exercise the real HTTP path with no API key.
//!
//! It serves OpenAI-compatible `POST /v1/chat/completions` and Anthropic `POST /v1/messages`,
//! each with and without streaming (server-sent events), plus `GET /healthz` and
//! `GET /sim/stats` (the [`SimStats`] counters as JSON). Start it in-process with
//! [`SimServer::start`], which binds `127.0.0.1:0` and returns a [`SimHandle`]; dropping the
//! handle or calling [`SimHandle::shutdown`] stops it. The CLI runs it with [`serve`] until
//! Ctrl-C.
//!
//! # What it answers
//! The text is deterministic for (seed, model name, messages): words drawn from a small fixed
//! vocabulary by a PRNG seeded with a hash of the request, so a streamed answer and a
//! non-streamed one to the same request carry the same content, and so does a retry. Each
//! streamed piece is one completion token; prompt tokens are the characters of every message
//! (and the system prompt) divided by four, rounded up. `max_tokens` (or
//! `max_completion_tokens`) cuts the answer, which then ends with `finish_reason: "length"`
//! (OpenAI) or `stop_reason: "max_tokens"` (Anthropic). As OpenAI does, a model named like
//! one of its reasoning models (`o1`, `o3-mini`, `gpt-5`, ...; see
//! [`is_reasoning_model`](crate::model::provider::is_reasoning_model)) refuses `max_tokens`
//! with 400 (`param: "max_tokens"`): it takes `max_completion_tokens` only.
//!
//! JSON mode (OpenAI `response_format` `json_object` or `json_schema`, or the `json` directive
//! below) answers a JSON object as a string, streamed in pieces of four characters:
//! - if the last user message contains an object with a `"$sim_replies"` key whose value is a
//!   non-empty array, the answer is one of its members, in order: the first answered request
//!   of the scenario (see below) carrying that same array gets the first member, the next one
//!   the second, and every request past the end the last (a string member is answered as
//!   plain text, in text mode too). Each distinct array keeps its own count within a scenario,
//!   and refused requests (faults, rate limit) take no member. A test scripts a conversation
//!   this way, e.g. a planner that answers an invalid plan, then a repaired one:
//!   `{"$sim_replies": [{"tasks": "oops"}, {"tasks": [...]}]}`;
//! - else, if the last user message contains an object with a `"$sim_reply"` key, its value is
//!   the answer verbatim (a string value is answered as plain text, in text mode too), so a
//!   test can make the model say exactly what it needs;
//! - else, if [`SimConfig::replies`] holds a fixed answer for the model's name (directives
//!   left out), that answer, the same way (the demo's planner always answers its plan);
//! - else, with a `json_schema` response format, an object filling its schema (see below);
//! - else, if the last user message contains an object with a `"$sim_schema"` key, an object
//!   filling that schema (in text mode too);
//! - else `{"text": "<generated words>"}`.
//!
//! Filling a schema: `const`, then `enum` (one member, seeded), then the first of
//! `anyOf`/`oneOf`/`allOf`, then by `type`: an object gets its `required` properties (all
//! `properties` when `required` is absent), an array `max(minItems, 1)` items, a string one
//! word (repeated up to `minLength`), a number or integer a value within `minimum`..`maximum`
//! (default 0..100), a boolean a seeded one. Nesting deeper than 8 levels is answered `null`.
//!
//! # Behaviour and per-request directives
//! [`SimConfig`] sets the server-wide behaviour: seed, output length, latency, error rate,
//! rate limit, stalls, a fixed failure, an API key to check. One request can override it
//! through directives, so one server serves several scenarios in one test. Directives come
//! from the model name, after the first `:` (`sim:fail=500x5:stall=3`), and from the `x-sim`
//! request header (`x-sim: fail=500x5,stall=3`); segments are separated by `:` or `,`, header
//! directives win over the model's, and an unknown directive is answered 400.
//!
//! ```text
//! json               answer in JSON mode
//! plan               play the swarm's planner: answer a valid plan over the capabilities the
//!                    planner's prompt lists (one task each, chained when the depth limit
//!                    allows), for any goal; `$sim_reply` and `$sim_replies` still win
//! late_usage         Anthropic streams: input tokens 0 in `message_start`, the count in
//!                    `message_delta` (as LiteLLM's `/v1/messages` reports them)
//! nostream           answer a streamed request with the whole JSON answer (content type
//!                    application/json), as proxies that do not stream do
//! seed=N             the seed of the content hash
//! tokens=N | N-M     output length, in pieces
//! ttft=MS | MS-MS    delay before the first token
//! tpt=MS | MS-MS     delay before each later token
//! stall=N            stream at most N content pieces, then send nothing and never finish;
//!                    a non-streaming request is never answered
//! err=P              answer `error_status` with probability P (0..1)
//! fail=STATUS[xN]    answer STATUS (400..599) with that status's error body
//! 429=SECS[xN]       answer 429 with `Retry-After: SECS` and the rate-limit headers
//! ```
//!
//! `fail` and `429` form a script, in the order written (model first, then header): a fault
//! with `xN` covers the next N requests of the scenario, one without a count covers every
//! later request. `sim:fail=500x5` fails the first five requests with 500 and answers the
//! sixth; `sim:429=2x1` answers 429 with `Retry-After: 2` once; `sim:429=1x1:fail=503x2`
//! answers 429, 503, 503, then succeeds. Requests are counted per scenario: the `x-sim-scenario`
//! header when present, else the whole model name and `x-sim` header, so two tests sharing a
//! server keep apart by using different names.
//!
//! A request is checked in this order: API key (when configured), body, directives, the
//! directive script, [`SimConfig::fail_with`], the rate limit, the error rate; the first that
//! refuses answers. The [`SimStats`] count every request to a model endpoint by the status
//! decided on arrival, before any latency, so a request a client gave up on is still counted.

mod anthropic;
mod config;
mod directive;
mod openai;
mod output;
mod plan;
mod state;
mod stats;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{Latency, SimConfig};
pub use stats::{Endpoint, Served, SimStats};

use state::SimState;

/// How long [`SimHandle::shutdown`] waits for open connections to close before it aborts the
/// server task: streams end at once on shutdown, so this only bounds a misbehaving client.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the simulated model server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is out of range; the message names the field.
    #[error("invalid sim model config: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot bind the sim model server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: io::Error,
    },
    /// The server task ended with an error or panicked.
    #[error("the sim model server failed: {0}")]
    Serve(String),
    /// Waiting for Ctrl-C or SIGTERM failed.
    #[error("cannot listen for the shutdown signal: {0}")]
    Signal(io::Error),
}

/// Starts simulated model servers.
#[derive(Debug, Clone, Copy)]
pub struct SimServer;

impl SimServer {
    /// Starts a server on `127.0.0.1` at a free port.
    pub async fn start(config: SimConfig) -> Result<SimHandle, Error> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr` (port 0 picks a free one).
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, Error> {
        config.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let (shutdown, stopped) = watch::channel(false);
        let state = Arc::new(SimState::new(config, stopped.clone()));
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            // Streamed tokens are small writes: without TCP_NODELAY, Nagle's algorithm and the
            // client's delayed ACK hold every other answer on a reused connection ~40 ms.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(state::stopped(stopped))
                .await
        });
        Ok(SimHandle {
            addr,
            state,
            shutdown,
            task: Some(task),
        })
    }
}

/// Runs a server on `127.0.0.1:port` until Ctrl-C (or SIGTERM), then stops it: the body of
/// `swarm sim-model`.
pub async fn serve(config: SimConfig, port: u16) -> Result<(), Error> {
    let handle = SimServer::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    info!(addr = %handle.addr, "sim model server listening");
    shutdown_signal().await?;
    info!("sim model server stopping");
    handle.shutdown().await
}

/// A running simulated model server. Dropping it stops the server; [`SimHandle::shutdown`]
/// also waits until it has stopped.
#[derive(Debug)]
pub struct SimHandle {
    /// The address the server listens on.
    pub addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// `http://<addr>/v1`: the `base_url` of a model agent of either provider (which appends
    /// `/chat/completions` or `/messages`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The same as [`SimHandle::base_url`] (kept for OpenAI-compatible clients' wording).
    pub fn openai_base_url(&self) -> String {
        self.base_url()
    }

    /// `http://<addr>`: the server's root (`/healthz`, `/sim/stats`; the Anthropic SDK's own
    /// base URL, to which it appends `/v1/messages`, as an Anthropic model agent does too).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far, per endpoint and status.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// The requests answered so far (the newest 100,000), each with its arrival and the
    /// tokens its usage reports.
    pub fn served(&self) -> Vec<Served> {
        self.state.served()
    }

    /// Stops the server: no new connection is accepted, open streams (stalled ones too) end,
    /// and this returns once every connection has closed or five seconds have passed
    /// (then it aborts the server task).
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown.send_replace(true);
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(err))) => Err(Error::Serve(err.to_string())),
            Ok(Err(join)) => Err(Error::Serve(join.to_string())),
            Err(_elapsed) => {
                warn!(addr = %self.addr, "sim model server did not stop in time, aborting it");
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // The server task sees the signal and stops by itself; nothing to wait for here.
        self.shutdown.send_replace(true);
    }
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/healthz", get(|| async { "ok" }))
        .route("/sim/stats", get(stats::stats_json))
        .with_state(state)
}

async fn shutdown_signal() -> Result<(), Error> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signal)?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(Error::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(Error::Signal)
    }
}
