//! The HTTP API behind `swarm serve`: routes under `/v1` over a running [`Swarm`] (from the
//! `swarm-coordinator` engine), and the operator dashboard at `/` and under `/ui/`. The
//! dashboard's templates (`templates/`) and its script and style sheet (`assets/`) sit beside
//! this crate's `src/` and are compiled in.
//!
//! # Layout
//! - `routes`: [`ROUTES`], every route the router declares, in one list; the router is built
//!   from it and the auth test walks it, so a route cannot be added without being covered.
//! - `objectives`, `streams` (the log's events as Server-Sent Events), `external_events`
//!   (events from outside, for `wait` tasks), `tasks`, `agents`, `schedules`, `hooks`: the
//!   handlers.
//! - `metrics`: `GET /metrics`, gathered from the scheduler and registry at scrape time.
//! - [`notify`]: the notices of escalated reviews, POSTed (signed, retried behind a breaker)
//!   to `[approvals] notify_url` as their `TaskEscalated` events commit.
//! - `openapi`: `GET /openapi.json`, the OpenAPI 3.1 document generated from the handlers'
//!   `#[utoipa::path]` annotations and the body types' schemas; a test checks that it
//!   documents every route of [`ROUTES`].
//! - [`problem`]: every error answer as `application/problem+json`, and the JSON body
//!   extractor that names the field at fault.
//! - [`limits`]: how much the API takes: a GCRA quota per client (governor's keyed limiter),
//!   failed authentications per remote address, and admission control over the swarm's
//!   backlog; each a 429 with `Retry-After`.
//! - `auth`: who may call a route (the bearer token, or the dashboard's session cookie with
//!   its CSRF token), and no state-changing request from another site.
//! - `ui`: the operator dashboard (`/` and `/ui/...`): server-rendered pages over the same
//!   `Swarm` calls the handlers make, one script for live updates, every asset in the binary.
//! - [`text`]: the chain of work as timeline entries, durations and times, in the words the
//!   dashboard and the `swarm` CLI share.
//!
//! # Guarantees
//! - `POST /v1/objectives` answers 202 only once the objective is durable (`Swarm::submit`
//!   returns after its `ObjectiveSubmitted` is committed). A repeat under the same
//!   `Idempotency-Key` with the same body gets the same answer (202, same id); with another
//!   body, 409.
//! - With a token configured, every route but the public ones (`/healthz`, `/readyz`, the
//!   login page and the dashboard's static files) needs `Authorization: Bearer <token>`,
//!   compared in constant time, or the dashboard's session cookie (plus its CSRF token for a
//!   state-changing request). The token is never logged.
//! - No panic escapes a handler: it is caught and answered as a 500 problem.
//! - Request bodies are limited (1 MiB by default, 413 past it) and so is the time to a
//!   response (30 s by default; the body of an event stream is not limited).
//! - Every request but the probes counts against its client's quota (by default 100 per
//!   second, 1,000 at once); a client is the token or session it presents, or its remote
//!   address without auth. Past it: 429 with `Retry-After`.
//! - An address that presented a wrong token 5 times within a minute (bearer or login form,
//!   by default) is answered 429 before any further token it presents is compared.
//! - `POST /v1/objectives`, `POST /v1/events` and webhook deliveries answer 429 before reading
//!   their body while the swarm's backlog (objectives running plus tasks queued) is at its
//!   bound (10,000 by default).
//! - The session cookie is `Secure` when [`ApiConfig::secure_cookies`] is set or the login
//!   came through a proxy that says `X-Forwarded-Proto: https`.
//!
//! `swarm.toml`'s `[server]` section sets the limits (see [`limits::Limits::with_section`]);
//! [`LocalApi`], whose clients are its own process, has no per-client quota.

mod accounts;
mod agents;
mod auth;
mod external_events;
mod hooks;
pub mod limits;
mod metrics;
pub mod notify;
mod objectives;
mod openapi;
pub mod problem;
mod routes;
mod schedules;
mod streams;
mod tasks;
pub mod text;
mod ui;

pub use streams::parse_event_id;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use swarm_agents::{AgentFactory, EchoAgent, NoopAgent, WorkAgent};
use swarm_protocol::{AgentDescriptor, Capability};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::limits::Limits;
use crate::problem::{PROBLEM_JSON, Problem};
pub use crate::routes::{Endpoint, ROUTES, Route};
use swarm_coordinator::config::{AgentConfig, LimitsSection};
use swarm_coordinator::model_agents::ModelAgents;
use swarm_coordinator::triggers::{Environment, Hooks};
use swarm_coordinator::{Error, Registration, StoreConfig, Swarm, SwarmConfig};

/// How long [`Api::serve`] waits, after the last connection closed, for requests to let go
/// of the swarm.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the API behaves.
#[derive(Clone)]
pub struct ApiConfig {
    /// The bearer token every non-probe route requires (none: no auth).
    pub token: Option<String>,
    /// The largest request body accepted.
    pub body_limit_bytes: usize,
    /// The longest a request may take until its response starts.
    pub request_timeout: Duration,
    /// Quotas, the failed-authentication limit and admission control (see [`limits`]).
    pub limits: Limits,
    /// Mark the session cookie `Secure`, so a browser sends it only over HTTPS: set it when
    /// the server is reached through TLS (a proxy in front). A login request that says
    /// `X-Forwarded-Proto: https` gets a `Secure` cookie either way. Default: off.
    pub secure_cookies: bool,
    /// Ceilings on what a request may hold (`[limits]` of `swarm.toml`).
    pub ceilings: LimitsSection,
    /// What became of the escalation notices, when a [`notify::Notifier`] runs: `/metrics`
    /// counts them.
    pub notices: Option<watch::Receiver<notify::NotifyStats>>,
    /// The provider accounts and model agents of `swarm.toml`: what an agent registered
    /// through the API may name as its `account` or `fallbacks`, and what `GET /v1/accounts`
    /// shows.
    pub models: ModelAgents,
    /// The coordinator's side of NATS, when remote agents are on (`--nats`): `/readyz`,
    /// `/metrics` and the agents page say how it is.
    pub remote: Option<swarm_remote::HostProbe>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            secure_cookies: false,
            ceilings: LimitsSection::default(),
            notices: None,
            models: ModelAgents::default(),
            remote: None,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never appears in logs or panics.
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("limits", &self.limits)
            .field("secure_cookies", &self.secure_cookies)
            .field("ceilings", &self.ceilings)
            .field("notices", &self.notices.is_some())
            .field("models", &self.models)
            .finish()
    }
}

/// What every handler sees: one `Arc`, because axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    swarm: Arc<Swarm>,
    config: ApiConfig,
    /// Signs and checks the dashboard's session cookies (with a token configured).
    sessions: Option<ui::session::Sessions>,
    /// The quotas' and admission control's state.
    limiters: limits::Limiters,
    /// Turns `true` when the server shuts down, which ends every event stream.
    shutdown: watch::Receiver<bool>,
    /// `GET /openapi.json`'s body, built once for this configuration (its ceilings).
    openapi: bytes::Bytes,
    /// Never sent on: it closes when the last clone of the state is dropped, which
    /// [`Api::serve`] waits for, so that its caller holds the only `Arc<Swarm>` again.
    _in_use: mpsc::Sender<()>,
}

/// Request ids for requests that bring none: a random prefix drawn once per server and a
/// counter (`3f9c2a71e04b5d18-42`). Unique like a UUID per request, without a call into the
/// OS's random source on every request.
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: format!("{:016x}", fastrand::u64(..)).into(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// The API over one swarm.
pub struct Api {
    state: AppState,
    shutdown: watch::Sender<bool>,
    released: mpsc::Receiver<()>,
}

impl Api {
    /// The API over `swarm`.
    pub fn new(swarm: Arc<Swarm>, config: ApiConfig) -> Self {
        let (shutdown, receiver) = watch::channel(false);
        let (in_use, released) = mpsc::channel(1);
        Self {
            state: AppState(Arc::new(Shared {
                swarm,
                sessions: config.token.as_deref().map(ui::session::Sessions::new),
                limiters: limits::Limiters::new(&config.limits),
                openapi: openapi::document_bytes(&config.ceilings, config.body_limit_bytes),
                config,
                shutdown: receiver,
                _in_use: in_use,
            })),
            shutdown,
            released,
        }
    }

    /// The router, with its middleware (request ids, tracing, panics, timeouts, body limit,
    /// auth, problem answers for bodiless errors).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let config = &state.config;
        let mut router = Router::new();
        for route in ROUTES {
            let mut handler = route.endpoint.handler(route.method.clone());
            if route.creates_work() {
                handler = handler.layer(middleware::from_fn_with_state(
                    state.clone(),
                    limits::admission,
                ));
            }
            router = router.route(route.path, handler);
        }
        router
            .fallback(no_route)
            .layer(DefaultBodyLimit::max(config.body_limit_bytes))
            .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
            .layer(middleware::from_fn_with_state(state.clone(), limits::quota))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_token,
            ))
            .layer(middleware::from_fn(limits::remote))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                config.request_timeout,
            ))
            .layer(CatchPanicLayer::custom(panic_problem))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                bodiless_errors,
            ))
            .layer(middleware::from_fn(ui::security_headers))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http())
            .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
            .with_state(state)
    }

    /// Serves the API on `listener` until `shutdown` resolves, then stops accepting, ends the
    /// event streams and waits for the requests in progress. When it returns, the server
    /// holds no handle to the swarm any more (so the caller can shut it down).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let Self {
            state,
            shutdown: stop,
            mut released,
        } = self;
        drop(state);
        // Answers are small and written whole; don't let Nagle hold them back.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "TCP_NODELAY not set");
            }
        });
        // Each connection's remote address, which the limits key clients by without a token.
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.send_replace(true);
        })
        .await;
        // Connection tasks drop their clone of the router just after the graceful shutdown
        // sees them close; wait for that (bounded, in case a handler is stuck).
        if tokio::time::timeout(RELEASE_TIMEOUT, released.recv())
            .await
            .is_err()
        {
            tracing::warn!("a request still holds the swarm after the server stopped");
        }
        served
    }
}

/// Serves `swarm`'s API on `listener` until `shutdown` resolves.
pub async fn serve(
    swarm: Arc<Swarm>,
    listener: TcpListener,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    Api::new(swarm, config).serve(listener, shutdown).await
}

/// Liveness: answers 200 while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    operation_id = "healthz",
    responses((status = 200, description = "The server is up.")),
)]
async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Readiness: 200 while the coordinator runs, 503 with the reason once it stopped.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "readyz",
    responses(
        (status = 200, description = "The coordinator runs. With remote agents on, a JSON \
         body says whether its NATS connection is up (`nats`) and how many remote agents are \
         registered; NATS being down does not make the coordinator unready."),
        (status = 503, description = "The coordinator stopped; `detail` says why.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.swarm.is_running() {
        // Remote agents depend on NATS, the coordinator does not: with NATS down it stays
        // ready (objectives are accepted, local agents work) and says what is down.
        match &state.config.remote {
            Some(remote) => {
                let status = remote.status();
                axum::Json(serde_json::json!({
                    "status": "ready",
                    "nats": if status.connected { "connected" } else { "down: remote agents wait until it is back" },
                    "remote_agents": status.agents,
                }))
                .into_response()
            }
            None => StatusCode::OK.into_response(),
        }
    } else {
        let detail = match state.swarm.failure() {
            Some(reason) => format!("the coordinator stopped: {reason}"),
            None => "the coordinator is not running".to_string(),
        };
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", detail).into_response()
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Problem {
    Problem::for_status(StatusCode::NOT_FOUND, method.as_str(), uri.path(), 0)
}

fn panic_problem(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic hook has logged the message; the client learns nothing about the server.
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed while handling the request",
    )
    .into_response()
}

/// Gives a problem body to error answers that a layer or an extractor made without one (405,
/// 413 from the body limit, a timeout).
async fn bodiless_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    // Problems, and the dashboard's own HTML answers (the login form, a page naming a bad
    // filter), are kept as they are.
    let answered = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(PROBLEM_JSON.as_bytes())
                || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || answered {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let problem = Problem::for_status(
        status,
        method.as_str(),
        &path,
        state.config.body_limit_bytes,
    );
    let mut answer = problem.into_response();
    // Keep what the layer said (such as `Allow` on a 405), with the problem's body headers.
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in answer.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *answer.headers_mut() = parts.headers;
    answer
}

/// What `swarm serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The event log.
    pub store: StoreConfig,
    /// Model agents to register (`swarm.toml`).
    pub config: Option<swarm_coordinator::config::Config>,
    /// Built-in `work` agents to register, and as many `echo` agents.
    pub builtin_agents: usize,
    /// The built-in agents' concurrency limit.
    pub concurrency: u32,
    /// Where to listen.
    pub addr: SocketAddr,
    /// At shutdown, how long running attempts may go on finishing.
    pub grace: Duration,
    /// The API's settings.
    pub api: ApiConfig,
    /// The NATS server remote agents join through (`--nats`, or `[nats]` of `swarm.toml`);
    /// none: local agents only.
    pub nats: Option<swarm_coordinator::config::NatsSection>,
}

/// The API on an ephemeral loopback port in this process, without auth (the demo and the
/// HTTP benchmark drive it as a client would).
pub struct LocalApi {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LocalApi {
    /// Serves `swarm` on 127.0.0.1 at a free port.
    pub async fn start(swarm: Arc<Swarm>) -> Result<Self, Error> {
        let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let bind = |source| Error::Bind {
            addr: loopback,
            source,
        };
        let listener = TcpListener::bind(loopback).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // Its clients are this process (the demo, a benchmark measuring the server): no
        // per-client quota, which would cap what a benchmark measures.
        let config = ApiConfig {
            limits: Limits {
                client: None,
                ..Limits::default()
            },
            ..ApiConfig::default()
        };
        let task = tokio::spawn(serve(swarm, listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    /// Stops it and waits until it let go of the swarm.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `swarm serve`: opens the durable swarm, registers the agents, serves the API until
/// `shutdown` resolves, then stops accepting requests, lets running attempts finish within
/// `grace` (nothing new starts), and shuts the swarm down (the event log commits what is
/// queued). Attempts still running then resume on the next start.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // The hooks of swarm.toml first: a missing secret is refused before anything starts.
    let configured = config
        .config
        .as_ref()
        .map_or(&[][..], |file| &file.hooks[..]);
    let hooks = Hooks::configured(configured, Environment::Process)?;
    // So is a notifier whose secret is missing.
    let notify = match &config.config {
        Some(file) => notify::NotifierConfig::from_section(&file.approvals, &Environment::Process)?,
        None => None,
    };
    let swarm = Swarm::open(SwarmConfig::default(), config.store.clone()).await?;
    // Escalations are announced from now on, as they commit.
    let notifier = match notify {
        Some(notify) => notify::Notifier::for_swarm(&swarm, notify).await,
        None => None,
    };
    let models = register_agents(&swarm, &config).await?;
    // Then those declared through the API; one whose variable is unset now is left out with
    // a warning, and does not stop the start.
    swarm.serve_hooks(hooks).await?;
    let bind = |source| Error::Bind {
        addr: config.addr,
        source,
    };
    let listener = TcpListener::bind(config.addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    if config.api.token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(%local, "serving beyond loopback without SWARM_API_TOKEN: anyone who can reach it can submit");
    }
    eprintln!(
        "swarm API on http://{local}/v1 and dashboard on http://{local}/ ({} agents, auth {})",
        swarm.registry().len(),
        if config.api.token.is_some() {
            "on"
        } else {
            "off"
        }
    );
    let swarm = Arc::new(swarm);
    // Remote agents may announce themselves from now on.
    let host = match &config.nats {
        Some(nats) => {
            let host =
                swarm_remote::Host::start(&swarm, nats)
                    .await
                    .map_err(|e| Error::Config {
                        field: "nats".into(),
                        message: e.to_string(),
                    })?;
            eprintln!(
                "remote agents: NATS at {}, subjects under `{}.`",
                swarm_remote::redact(&nats.url),
                nats.prefix
            );
            Some(host)
        }
        None => None,
    };
    // Schedules fire from now on (catching up what was missed while the coordinator was
    // down, as each schedule says), until the server has stopped.
    let fire_loop = swarm
        .start_schedule_loop(Arc::new(swarm_agents::clock::TokioClock::new()))
        .await;
    let mut api = config.api.clone();
    api.models = models;
    if let Some(section) = config.config.as_ref().map(|file| &file.server) {
        api.limits = api.limits.with_section(section);
        api.secure_cookies |= section.secure_cookies.unwrap_or(false);
    }
    if let Some(file) = &config.config {
        api.ceilings = file.limits;
    }
    api.notices = notifier.as_ref().map(notify::Notifier::stats);
    api.remote = host.as_ref().map(swarm_remote::Host::probe);
    let served = serve(swarm.clone(), listener, api, shutdown).await;
    fire_loop.stop().await;
    if let Some(notifier) = notifier {
        notifier.stop().await;
    }
    // `serve` returns once no request holds the swarm, so this is the last handle (unless a
    // request was stuck past `RELEASE_TIMEOUT`; then the log is closed when the process ends,
    // and what was unfinished resumes on the next start).
    match Arc::try_unwrap(swarm) {
        Ok(swarm) => {
            if let Some(host) = &host {
                host.coordinator_stopping();
            }
            let unfinished = swarm.drain(config.grace).await.unwrap_or(0);
            if unfinished > 0 {
                eprintln!(
                    "{unfinished} attempts still running after {:?}; they resume on the next start",
                    config.grace
                );
            }
            // Remote attempts that finished during the drain have reached the swarm.
            if let Some(host) = host {
                host.stop().await;
            }
            swarm.shutdown().await?;
        }
        Err(_) => tracing::warn!("the swarm is still in use; exiting without draining it"),
    }
    served.map_err(|source| Error::Serve {
        addr: local,
        source,
    })
}

/// Registers the built-in agents, the model agents of `swarm.toml` (on the accounts it
/// declares, which are returned) and those declared through the API.
async fn register_agents(swarm: &Swarm, config: &ServeConfig) -> Result<ModelAgents, Error> {
    for i in 0..config.builtin_agents {
        for kind in ["work", "echo"] {
            let name = format!("{kind}-{i}");
            if let Some((registration, factory)) = builtin_agent(kind, name, config.concurrency)? {
                swarm.register_agent(registration, factory).await?;
            }
        }
    }
    let mut models = ModelAgents::default();
    if let Some(file) = &config.config {
        let (built, agents) = ModelAgents::build(file)?;
        models = built;
        for (registration, factory, _) in agents {
            swarm.register_agent(registration, factory).await?;
        }
    }
    register_declared_agents_on(swarm, &models).await?;
    Ok(models)
}

/// The kinds of built-in agent that `swarm serve --builtin-agents` (`work` and `echo`) and
/// `swarm worker --agent` host.
pub const BUILTIN_KINDS: [&str; 3] = ["work", "echo", "noop"];

/// A built-in agent of `kind` (one of [`BUILTIN_KINDS`]) named `name`, with the capability
/// named like its kind: its registration and its factory. `None` for another kind.
pub fn builtin_agent(
    kind: &str,
    name: String,
    concurrency: u32,
) -> Result<Option<(Registration, AgentFactory)>, Error> {
    let (factory, description) = match kind {
        "work" => (
            AgentFactory::shared(WorkAgent::new()),
            "simulated work: waits `input.ms` milliseconds, outputs `{\"sum\": input.n + the \
             sums of its dependencies}`",
        ),
        "echo" => (
            AgentFactory::shared(EchoAgent),
            "answers with its input and its dependencies' outputs",
        ),
        "noop" => (
            AgentFactory::shared(NoopAgent),
            "succeeds at once with a null output",
        ),
        _ => return Ok(None),
    };
    let registration = Registration {
        name,
        capabilities: vec![Capability::new(kind)?],
        max_concurrency: concurrency.max(1),
        labels: Default::default(),
        cost_hint: None,
        description: Some(description.to_owned()),
    };
    Ok(Some((registration, factory)))
}

/// Registers again, in the order they were first registered, the agents that were registered
/// through `POST /v1/agents` and not removed before the last stop (the log's declared agents);
/// returns the descriptors of those registered. Call it after the agents of `swarm.toml`: an
/// agent whose name is taken already is skipped with a warning (the file wins; the declaration
/// stays, so it comes back if the name is freed). One that can no longer be built (its key
/// variable is unset now, say) is skipped with a warning naming why, and stays declared too.
pub async fn register_declared_agents(swarm: &Swarm) -> Result<Vec<AgentDescriptor>, Error> {
    register_declared_agents_on(swarm, &ModelAgents::default()).await
}

/// [`register_declared_agents`], with the accounts and agents of `swarm.toml` (`models`) that
/// the declared agents may name.
pub async fn register_declared_agents_on(
    swarm: &Swarm,
    models: &ModelAgents,
) -> Result<Vec<AgentDescriptor>, Error> {
    let taken: BTreeSet<String> = swarm
        .registry()
        .snapshots()
        .into_iter()
        .map(|agent| agent.descriptor.name)
        .collect();
    let mut registered = Vec::new();
    for declared in swarm.declared_agents().await? {
        let name = &declared.name;
        if taken.contains(name) {
            tracing::warn!(
                agent = %name,
                "an agent registered through the API has the name of a configured agent; the \
                 configured one is kept"
            );
            continue;
        }
        let invalid = |message: String| Error::InvalidAgent {
            agent: name.clone(),
            message,
        };
        let built = serde_json::from_value::<AgentConfig>(declared.config)
            .map_err(|e| invalid(format!("its recorded fields do not parse: {e}")))
            .and_then(|config| {
                let (registration, factory, _) = models.build_agent(&config)?;
                let fields = serde_json::to_value(&config)
                    .map_err(|e| invalid(format!("its fields cannot be recorded: {e}")))?;
                Ok((registration, factory, fields))
            });
        let (registration, factory, fields) = match built {
            Ok(built) => built,
            Err(err) => {
                tracing::warn!(agent = %name, %err, "an agent registered through the API cannot be registered again; skipped");
                continue;
            }
        };
        let descriptor = swarm
            .register_declared_agent(registration, factory, fields)
            .await?;
        tracing::info!(agent = %name, agent_id = %descriptor.id, "agent registered through the API registered again");
        registered.push(descriptor);
    }
    Ok(registered)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
