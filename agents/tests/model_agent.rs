//! Model agents over real HTTP on loopback: an `LlmAgent` calls the simulated model server (or,
//! for answers the sim cannot give, wiremock) in both wire formats, and each test checks what
//! the agent reports, what its breaker, limiter and health feed did, and what reached the
//! server.
//!
//! Tests where time matters run on tokio's paused clock (`start_paused`), which the breaker, the
//! limiter and the sim all read: a cool-down or a quota minute passes in no real time. Loopback
//! I/O works under it because the kernel completes a loopback connect or write inside the
//! syscall, so the runtime sees the peer's readiness before it decides it is idle and moves the
//! clock; a request is never overtaken by a timer that was not due. The exception is a write
//! the kernel holds back: a socket without `TCP_NODELAY` sends a small write only once its
//! previous one is acknowledged, and the peer may delay that ACK for ~40 ms of real time, which
//! a paused clock with a timer pending skips over. The sim had that problem until it set
//! `TCP_NODELAY` on its connections (`a_streamed_answer_on_a_reused_connection_arrives` keeps
//! it fixed); a [`Tap`] in front of it sets `TCP_NODELAY` too, and opens a fresh upstream
//! connection per request. Where a test lets paused time pass with
//! `tokio::time::sleep`, that sleep is a barrier, not a guess: a paused clock only moves when
//! every task is idle, so everything that could happen before that instant has.
//!
//! wiremock serves from a thread of its own with its own runtime, which a paused clock would
//! skip over (the test's runtime looks idle while wiremock works), so the wiremock tests run on
//! the real clock and take a few real seconds at most.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use serde_json::{Value, json};
use swarm_agents::clock::TokioClock;
use swarm_agents::model::breaker::{Breaker, BreakerConfig, BreakerState, ConsecutiveBreaker};
use swarm_agents::model::limiter::{RateLimiter, RateLimits};
use swarm_agents::model::provider::Provider;
use swarm_agents::model::{ApiKey, LlmAgent, ModelSpec};
use swarm_agents::sim::{Endpoint, SimConfig, SimHandle, SimServer};
use swarm_agents::{Agent, HealthReport, TaskContext};
use swarm_protocol::{
    BreakerStatus, Capability, FailureKind, Health, ObjectiveId, QuotaUse, Task, TaskId, TaskKey,
    TaskOutcome, Usage,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};

/// How long a test waits for something that should happen at once (paused time: no real wait).
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs a scenario once per wire format, on the paused clock: `<scenario>::openai` and
/// `<scenario>::anthropic`.
macro_rules! both_formats {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test(start_paused = true)]
            async fn openai() {
                super::$scenario(Provider::Openai).await;
            }

            #[tokio::test(start_paused = true)]
            async fn anthropic() {
                super::$scenario(Provider::Anthropic).await;
            }
        }
    };
}

// --- Building agents and tasks -------------------------------------------------------------

async fn sim(config: SimConfig) -> SimHandle {
    SimServer::start(config).await.unwrap()
}

/// The base URL a `ModelSpec` takes for `addr`, ending in `/v1` for both formats (the agent
/// appends `/chat/completions` or `/messages`; an Anthropic base without `/v1`, as the SDK's
/// `ANTHROPIC_BASE_URL` and `SimHandle::base_url` give it, is taken as well).
fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}/v1")
}

fn endpoint(provider: Provider) -> Endpoint {
    match provider {
        Provider::Openai => Endpoint::ChatCompletions,
        Provider::Anthropic => Endpoint::Messages,
    }
}

fn breaker_of(consecutive_failures: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures,
        ..BreakerConfig::default()
    }
}

fn agent(
    spec: ModelSpec,
    breaker: BreakerConfig,
    limits: RateLimits,
) -> (LlmAgent, ConsecutiveBreaker) {
    let clock = TokioClock::new();
    let breaker = ConsecutiveBreaker::new(breaker, clock);
    let agent = LlmAgent::new(
        spec,
        Arc::new(breaker.clone()),
        RateLimiter::new(limits, clock),
    )
    .unwrap();
    (agent, breaker)
}

/// An agent for `model` at `addr` with a breaker of 5 and no quotas.
fn plain_agent(provider: Provider, addr: SocketAddr, model: &str) -> LlmAgent {
    let spec = ModelSpec::new(provider, base_url(addr), model);
    agent(spec, BreakerConfig::default(), RateLimits::default()).0
}

fn task(input: Value) -> Task {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Task {
        id: TaskId(NEXT.fetch_add(1, Ordering::Relaxed)),
        objective: ObjectiveId::new(),
        key: TaskKey::new("t").unwrap(),
        capability: Capability::new("write").unwrap(),
        attempt: 1,
        input: Arc::new(input),
        upstream: BTreeMap::new(),
        idle_timeout: None,
        hard_timeout: None,
        priority: 0,
    }
}

/// The input that makes the sim answer exactly `reply` (a string: as text, split after each
/// whitespace into pieces; anything else: as JSON).
fn reply_with(reply: Value) -> String {
    json!({ "$sim_reply": reply }).to_string()
}

async fn run(agent: &LlmAgent, task: Task) -> TaskOutcome {
    agent
        .run(task, TaskContext::new(std::time::Instant::now()))
        .await
}

/// A failed outcome's parts.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    message: String,
    partial: Option<Value>,
    usage: Option<Usage>,
    retry_after: Option<Duration>,
}

#[track_caller]
fn failure(outcome: TaskOutcome) -> Failure {
    match outcome {
        TaskOutcome::Failed {
            kind,
            message,
            partial_output,
            usage,
            retry_after,
        } => Failure {
            kind,
            message,
            partial: partial_output,
            usage,
            retry_after,
        },
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn success(outcome: TaskOutcome) -> (Value, Option<Usage>) {
    match outcome {
        TaskOutcome::Succeeded { output, usage } => (output, usage),
        other => panic!("expected a success, got {other:?}"),
    }
}

// --- Watching an agent -----------------------------------------------------------------------

/// Every change on an agent's health feed, in order.
struct HealthLog {
    feed: swarm_agents::HealthFeed,
    changes: UnboundedReceiver<HealthReport>,
}

impl HealthLog {
    fn follow(agent: &LlmAgent) -> Self {
        let feed = agent.health().expect("a model agent has a health feed");
        let mut follower = feed.clone();
        let (tx, changes) = unbounded_channel();
        tokio::spawn(async move {
            while follower.changed().await.is_ok() {
                let report = follower.borrow_and_update().clone();
                if tx.send(report).is_err() {
                    break;
                }
            }
        });
        Self { feed, changes }
    }

    /// The health the agent reports now.
    fn now(&self) -> Health {
        self.feed.borrow().health
    }

    /// The next change.
    async fn next(&mut self) -> HealthReport {
        timeout(PATIENCE, self.changes.recv())
            .await
            .expect("no health change")
            .unwrap()
    }

    /// The changes recorded and not yet taken.
    fn rest(&mut self) -> Vec<Health> {
        std::iter::from_fn(|| self.changes.try_recv().ok())
            .map(|report| report.health)
            .collect()
    }
}

/// A request as it reached a [`Tap`].
#[derive(Debug, Clone)]
struct Arrival {
    /// On tokio's clock.
    at: Instant,
    headers: HeaderMap,
    body: Value,
}

/// A recording proxy on loopback: notes when (on tokio's clock) each request arrived, with its
/// headers and body, forwards it to `upstream` and streams the answer back. The sim keeps
/// counts only; this keeps instants.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Arrival>>>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct TapState {
    upstream: SocketAddr,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Arrival>>>,
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        // A fresh upstream connection per request, and no Nagle delay on the tap's own
        // answers: see `a_streamed_answer_on_a_reused_connection_arrives` for why.
        let state = TapState {
            upstream,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            seen: seen.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, seen, server }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(tap): State<TapState>, request: Request) -> Response {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    tap.seen.lock().unwrap().push(Arrival {
        at,
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let answer = tap
        .client
        .request(
            parts.method,
            format!("http://{}{}", tap.upstream, parts.uri.path()),
        )
        .headers(headers)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if ![
            header::TRANSFER_ENCODING,
            header::CONTENT_LENGTH,
            header::CONNECTION,
        ]
        .contains(name)
        {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

/// The most any window `[t, t + 60 s]` (closed) holds, weighing each arrival with `weight`.
fn heaviest_minute(arrivals: &[Arrival], weight: impl Fn(&Arrival) -> u64) -> u64 {
    let mut sorted: Vec<&Arrival> = arrivals.iter().collect();
    sorted.sort_by_key(|a| a.at);
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|a| a.at - sorted[i].at <= Duration::from_secs(60))
                .map(|a| weight(a))
                .sum()
        })
        .max()
        .unwrap_or(0)
}

// --- 1. The breaker ---------------------------------------------------------------------------

const COOL_DOWN: Duration = Duration::from_secs(30);

/// Four 500s leave a breaker of five closed; the fifth opens it. While it is open a call is
/// declined at once and sends nothing; when the cool-down ends exactly one probe goes out while other calls wait
/// for it; its success closes the breaker. The health feed goes Down, Degraded, Up.
async fn breaker_opens_probes_once_and_closes(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let ep = endpoint(provider);
    // Five 500s, then answers whose first token takes two seconds, so the probe is still in
    // flight when the calls behind it ask to go.
    let spec = ModelSpec::new(provider, base_url(sim.addr), "sim:fail=500x5:ttft=2000");
    let (agent, breaker) = agent(
        spec,
        BreakerConfig {
            consecutive_failures: 5,
            cool_down: COOL_DOWN,
            ..BreakerConfig::default()
        },
        RateLimits::default(),
    );
    let mut health = HealthLog::follow(&agent);
    assert_eq!(health.now(), Health::Up);

    for n in 1..=4 {
        let failed = failure(run(&agent, task(json!("hello"))).await);
        assert_eq!(failed.kind, FailureKind::Transient, "{failed:?}");
        assert!(failed.message.contains("500"), "{}", failed.message);
        assert_eq!(breaker.state(), BreakerState::Closed, "after {n} failures");
        assert_eq!(health.now(), Health::Up, "after {n} failures");
    }
    let failed = failure(run(&agent, task(json!("hello"))).await);
    assert_eq!(failed.kind, FailureKind::Transient);
    let opened_at = Instant::now();
    let BreakerState::Open { until } = breaker.state() else {
        panic!(
            "five failures in a row left the breaker {:?}",
            breaker.state()
        );
    };
    assert_eq!(until - opened_at, COOL_DOWN);
    // The status operators read says the same, with the time to the probe.
    assert_eq!(
        agent.status().breaker,
        Some(BreakerStatus::Open {
            probe_in_ms: COOL_DOWN.as_millis() as u64
        })
    );
    let down = health.next().await;
    assert_eq!(down.health, Health::Down);
    assert!(
        down.reason.contains("circuit open") && down.reason.contains("500"),
        "{down:?}"
    );
    assert_eq!(sim.stats().count_status(ep, 500), 5);
    assert_eq!(sim.stats().total(), 5);

    // While open, a call is declined at once and sends nothing, all through the cool-down.
    for at in [
        Duration::ZERO,
        Duration::from_secs(10),
        Duration::from_secs(29),
    ] {
        tokio::time::sleep_until(opened_at + at).await;
        let asked = Instant::now();
        let declined = failure(run(&agent, task(json!("hello"))).await);
        assert_eq!(declined.kind, FailureKind::Declined, "{declined:?}");
        assert!(
            declined.message.contains("circuit open"),
            "{}",
            declined.message
        );
        assert_eq!(asked.elapsed(), Duration::ZERO, "a declined call waited");
        assert_eq!(
            sim.stats().total(),
            5,
            "a request reached the server while open"
        );
        assert_eq!(breaker.state(), BreakerState::Open { until });
        assert_eq!(
            agent.status().breaker,
            Some(BreakerStatus::Open {
                probe_in_ms: (COOL_DOWN - at).as_millis() as u64
            })
        );
        assert_eq!(health.now(), Health::Down);
    }

    // The cool-down ends: the agent reports itself degraded, still without a request.
    tokio::time::sleep_until(until).await;
    assert_eq!(health.next().await.health, Health::Degraded);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(agent.status().breaker, Some(BreakerStatus::HalfOpen));
    assert_eq!(sim.stats().total(), 5);

    // Three calls at once: one probe goes out, the other two wait for its result.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let agent = agent.clone();
            tokio::spawn(async move { run(&agent, task(json!("hello"))).await })
        })
        .collect();
    // The probe reaches the server (over real loopback, so wait for it there rather than let
    // the paused clock run ahead of it), then the calls behind it have 1.5 s to ask to go,
    // while its first token is still 0.5 s away.
    let mut spins = 0;
    while sim.stats().total() < 6 {
        spins += 1;
        assert!(spins < 1_000_000, "the probe never reached the server");
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sim.stats().total(),
        6,
        "more than one probe while half-open"
    );
    assert_eq!(sim.stats().count_status(ep, 200), 1);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(health.now(), Health::Degraded);

    // The probe succeeds: closed, and the waiting calls go through.
    for call in calls {
        success(call.await.unwrap());
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(agent.status().breaker, Some(BreakerStatus::Closed));
    assert_eq!(sim.stats().count_status(ep, 200), 3);
    assert_eq!(health.next().await.health, Health::Up);
    assert_eq!(
        health.rest(),
        [],
        "health changes beyond Down, Degraded, Up"
    );
    sim.shutdown().await.unwrap();
}
both_formats!(breaker_opens_probes_once_and_closes);

/// A failed probe opens the breaker again, for twice as long; calls are declined until then.
async fn a_failed_probe_reopens_for_longer(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let spec = ModelSpec::new(provider, base_url(sim.addr), "sim:fail=503");
    let (agent, breaker) = agent(spec, breaker_of(2), RateLimits::default());
    for _ in 0..2 {
        failure(run(&agent, task(json!("x"))).await);
    }
    let BreakerState::Open { until } = breaker.state() else {
        panic!("not open: {:?}", breaker.state());
    };
    tokio::time::sleep_until(until).await;
    // The probe fails: open again, now for twice the cool-down.
    let probe = failure(run(&agent, task(json!("x"))).await);
    assert_eq!(probe.kind, FailureKind::Transient);
    let BreakerState::Open { until: again } = breaker.state() else {
        panic!("a failed probe left the breaker {:?}", breaker.state());
    };
    assert_eq!(again - Instant::now(), 2 * COOL_DOWN);
    assert_eq!(sim.stats().total(), 3);
    tokio::time::sleep_until(again - Duration::from_secs(1)).await;
    let declined = failure(run(&agent, task(json!("x"))).await);
    assert_eq!(declined.kind, FailureKind::Declined);
    assert_eq!(sim.stats().total(), 3);
    // The second cool-down ends: one more probe.
    tokio::time::sleep_until(again).await;
    failure(run(&agent, task(json!("x"))).await);
    assert_eq!(sim.stats().total(), 4);
    sim.shutdown().await.unwrap();
}
both_formats!(a_failed_probe_reopens_for_longer);

// --- 4. 429 and Retry-After -----------------------------------------------------------------

/// A 429 with `Retry-After: 2` is transient with `retry_after` of at least 2 s, and the
/// limiter holds the next request until 2 s after it.
async fn retry_after_holds_the_next_request(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let tap = Tap::start(sim.addr).await;
    let agent = plain_agent(provider, tap.addr, "sim:429=2x1");
    let failed = failure(run(&agent, task(json!("hi"))).await);
    assert_eq!(failed.kind, FailureKind::Transient, "{failed:?}");
    assert!(failed.message.contains("429"), "{}", failed.message);
    let retry_after = failed
        .retry_after
        .expect("a 429 with Retry-After sets retry_after");
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(3)).contains(&retry_after),
        "{retry_after:?}"
    );
    let throttled_at = tap.arrivals()[0].at;
    let paused_until = agent
        .limiter()
        .stats()
        .paused_until
        .expect("the limiter pauses");
    assert!(paused_until >= throttled_at + Duration::from_secs(2));

    success(run(&agent, task(json!("hi"))).await);
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].at - arrivals[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "the next request came {gap:?} after the 429"
    );
    assert!(
        gap <= retry_after + Duration::from_millis(100),
        "waited {gap:?}, too long"
    );
    assert_eq!(sim.stats().count_status(endpoint(provider), 429), 1);
    sim.shutdown().await.unwrap();
}
both_formats!(retry_after_holds_the_next_request);

/// Answers a 429 whose `Retry-After` is an HTTP date (three to four seconds ahead), then
/// successes; notes when each request arrived (real time: wiremock has its own runtime).
struct HttpDateThrottle {
    provider: Provider,
    arrivals: Mutex<Vec<std::time::Instant>>,
}

impl wiremock::Respond for HttpDateThrottle {
    fn respond(&self, _request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(std::time::Instant::now());
        if arrivals.len() == 1 {
            // An HTTP date has whole seconds: the next whole second, plus three, is at least
            // three seconds away, so the pause is above two seconds once read.
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let at = UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1 + 3);
            return wiremock::ResponseTemplate::new(429)
                .insert_header("retry-after", httpdate::fmt_http_date(at).as_str())
                .set_body_json(json!({"error": {"message": "slow down (wiremock)"}}));
        }
        wiremock::ResponseTemplate::new(200).set_body_json(match self.provider {
            Provider::Openai => json!({
                "choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }),
            Provider::Anthropic => json!({
                "content": [{"type": "text", "text": "fine"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            }),
        })
    }
}

async fn http_date_retry_after(provider: Provider) {
    let server = wiremock::MockServer::start().await;
    let throttle = Arc::new(HttpDateThrottle {
        provider,
        arrivals: Mutex::new(Vec::new()),
    });
    let path = match provider {
        Provider::Openai => "/v1/chat/completions",
        Provider::Anthropic => "/v1/messages",
    };
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(path))
        .respond_with(ArcRespond(throttle.clone()))
        .mount(&server)
        .await;
    let mut spec = ModelSpec::new(provider, format!("{}/v1", server.uri()), "m");
    spec.stream = false;
    let (agent, _) = agent(spec, BreakerConfig::default(), RateLimits::default());

    let failed = failure(run(&agent, task(json!("hi"))).await);
    assert_eq!(failed.kind, FailureKind::Transient, "{failed:?}");
    assert!(
        failed.message.contains("slow down (wiremock)"),
        "{}",
        failed.message
    );
    let retry_after = failed
        .retry_after
        .expect("an HTTP-date Retry-After sets retry_after");
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(4)).contains(&retry_after),
        "{retry_after:?}"
    );
    let (output, _) = success(run(&agent, task(json!("hi"))).await);
    assert_eq!(output, json!("fine"));
    let arrivals = throttle.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= retry_after,
        "the next request came {gap:?} after the 429, asked {retry_after:?}"
    );
}

/// `Respond` for a shared responder, so the test keeps a handle on what it recorded.
struct ArcRespond<R>(Arc<R>);

impl<R: wiremock::Respond> wiremock::Respond for ArcRespond<R> {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        self.0.respond(request)
    }
}

#[tokio::test]
async fn an_http_date_retry_after_holds_the_next_request() {
    tokio::join!(
        http_date_retry_after(Provider::Openai),
        http_date_retry_after(Provider::Anthropic)
    );
}

// --- 3. Quotas ----------------------------------------------------------------------------------

/// 200 calls at once through an agent allowed 60 requests a minute: no minute holds more than
/// 60 of them at the server, and the quota is not wasted (four minutes' windows, not more).
async fn requests_per_minute_hold_at_the_server(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let tap = Tap::start(sim.addr).await;
    let spec = ModelSpec::new(provider, base_url(tap.addr), "sim:tokens=2");
    let (agent, _) = agent(
        spec,
        BreakerConfig::default(),
        RateLimits {
            requests_per_minute: NonZeroU32::new(60),
            tokens_per_minute: None,
        },
    );
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..200 {
        let agent = agent.clone();
        calls.spawn(async move { run(&agent, task(json!(format!("call {i}")))).await });
    }
    while let Some(outcome) = calls.join_next().await {
        success(outcome.unwrap());
    }
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 200);
    assert_eq!(heaviest_minute(&arrivals, |_| 1), 60);
    let span = arrivals.iter().map(|a| a.at).max().unwrap() - started;
    // 60 at once, then 60 a minute later, ...: the last 20 go just after three minutes.
    assert!(span > Duration::from_secs(180), "{span:?}");
    assert!(
        span < Duration::from_secs(181),
        "the limiter wasted quota: {span:?}"
    );
    assert_eq!(agent.limiter().stats().requests_granted, 200);
    // Every call after the first 60 waited; the last minute holds the last 20.
    let limiter = agent.status().limiter.unwrap();
    assert_eq!(
        limiter.requests,
        Some(QuotaUse {
            per_minute: 60,
            used: 20
        })
    );
    assert_eq!(limiter.tokens, None);
    assert_eq!(
        (limiter.granted, limiter.waits, limiter.waiting),
        (200, 140, 0)
    );
    // 60 calls waited one minute, 60 two, 20 three (and a timer tick each).
    let waited = Duration::from_millis(limiter.waited_ms);
    assert!(
        waited >= Duration::from_secs(60 * 60 + 60 * 120 + 20 * 180)
            && waited < Duration::from_secs(60 * 60 + 60 * 120 + 20 * 180 + 1),
        "{waited:?}"
    );
    sim.shutdown().await.unwrap();
}
both_formats!(requests_per_minute_hold_at_the_server);

/// The prompt estimate plus `max_tokens` of one request, as the limiter weighs it (four bytes a
/// token, system prompt included), read back from the request body as it reached the server.
fn estimated_tokens(provider: Provider, body: &Value) -> u64 {
    let mut bytes: usize = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().len())
        .sum();
    if provider == Provider::Anthropic {
        bytes += body["system"].as_str().map_or(0, str::len);
    }
    bytes.div_ceil(4) as u64 + body["max_tokens"].as_u64().unwrap()
}

/// With a token quota, the tokens the provider reported using per minute stay within it: each
/// call is charged its estimate (prompt estimate + max_tokens) when it goes out, and corrected
/// by the usage reported when it ends, so the quota lets through more calls than the estimates
/// alone would, and never more tokens than it allows.
async fn tokens_per_minute_hold_at_the_server(provider: Provider) {
    const QUOTA: u64 = 2_000;
    let sim = sim(SimConfig::default()).await;
    let tap = Tap::start(sim.addr).await;
    let mut spec = ModelSpec::new(provider, base_url(tap.addr), "sim:tokens=2");
    spec.max_tokens = 100;
    spec.system_prompt = Some("Be brief.".into());
    let (agent, _) = agent(
        spec,
        BreakerConfig::default(),
        RateLimits {
            requests_per_minute: None,
            tokens_per_minute: NonZeroU32::new(QUOTA as u32),
        },
    );
    let mut calls = JoinSet::new();
    for i in 0..40 {
        let agent = agent.clone();
        // Prompts of 4 to 400 bytes, each a different length: calls are estimated at about
        // 100 to 200 tokens, and use the prompt and two more.
        let prompt = "word ".repeat(1 + (i * 37) % 80);
        calls.spawn(async move {
            let (_, usage) = success(run(&agent, task(json!(prompt.clone()))).await);
            let usage = usage.expect("the sim reports usage");
            (prompt, usage.input_tokens + usage.output_tokens)
        });
    }
    let mut used = std::collections::HashMap::new();
    while let Some(call) = calls.join_next().await {
        let (prompt, tokens) = call.unwrap();
        used.insert(prompt, tokens);
    }
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 40);
    let prompt_of = |a: &Arrival| {
        let messages = a.body["messages"].as_array().unwrap();
        let last = messages.last().unwrap()["content"].as_str().unwrap();
        used[last]
    };
    let estimated: u64 = arrivals
        .iter()
        .map(|a| estimated_tokens(provider, &a.body))
        .sum();
    assert!(
        estimated > 3 * QUOTA,
        "the test needs several minutes of estimated quota: {estimated}"
    );
    let heaviest = heaviest_minute(&arrivals, prompt_of);
    assert!(
        heaviest <= QUOTA,
        "one minute carried {heaviest} tokens, quota {QUOTA}"
    );
    // The corrections let more through than the estimates alone would have.
    let heaviest_estimate = heaviest_minute(&arrivals, |a| estimated_tokens(provider, &a.body));
    assert!(heaviest_estimate > QUOTA, "{heaviest_estimate}");
    let stats = agent.limiter().stats();
    assert_eq!(stats.tokens_granted, estimated);
    assert_eq!(
        stats.tokens_granted - stats.tokens_refunded + stats.tokens_over,
        used.values().sum::<u64>()
    );
    sim.shutdown().await.unwrap();
}
both_formats!(tokens_per_minute_hold_at_the_server);

// --- 5. A stalled stream --------------------------------------------------------------------

/// A stream that stalls after three pieces times out under the idle timeout with exactly those
/// pieces as partial output, and the breaker counts it as a failure.
async fn a_stalled_stream_times_out_with_its_pieces(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let spec = ModelSpec::new(provider, base_url(sim.addr), "sim:stall=3");
    let (agent, breaker) = agent(spec, breaker_of(1), RateLimits::default());
    let mut health = HealthLog::follow(&agent);
    let mut stalled = task(json!(reply_with(json!("one two three four five"))));
    stalled.idle_timeout = Some(Duration::from_secs(5));
    let ctx = TaskContext::new(std::time::Instant::now());
    let started = Instant::now();
    let failed = failure(agent.run(stalled, ctx.clone()).await);
    let took = started.elapsed();
    assert_eq!(failed.kind, FailureKind::Timeout, "{failed:?}");
    assert!(failed.message.contains("idle"), "{}", failed.message);
    assert_eq!(failed.partial, Some(json!("one two three ")));
    assert_eq!(ctx.partial(), Some(json!("one two three ")));
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(6)).contains(&took),
        "timed out after {took:?}"
    );
    // Counted: a breaker of one opened.
    assert!(
        matches!(breaker.state(), BreakerState::Open { .. }),
        "{:?}",
        breaker.state()
    );
    assert_eq!(health.next().await.health, Health::Down);
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 1);
    sim.shutdown().await.unwrap();
}
both_formats!(a_stalled_stream_times_out_with_its_pieces);

/// The spec's idle timeout applies to tasks that set none.
async fn the_specs_idle_timeout_is_the_default(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let mut spec = ModelSpec::new(provider, base_url(sim.addr), "sim:stall=2");
    spec.idle_timeout = Some(Duration::from_secs(3));
    let (agent, _) = agent(spec, BreakerConfig::default(), RateLimits::default());
    let failed = failure(run(&agent, task(json!(reply_with(json!("a b c d"))))).await);
    assert_eq!(failed.kind, FailureKind::Timeout);
    assert_eq!(failed.partial, Some(json!("a b ")));
    sim.shutdown().await.unwrap();
}
both_formats!(the_specs_idle_timeout_is_the_default);

// --- 6. Status classification ---------------------------------------------------------------

/// Each error status is classified as the module docs say: 401, 403 and 404 also report the
/// agent down (its breaker stays closed), and only the transient ones count against the
/// breaker (two in a row open a breaker of two; two permanent ones do not).
async fn statuses_are_classified(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let cases = [
        (400, FailureKind::Permanent, Health::Up),
        (401, FailureKind::Permanent, Health::Down),
        (403, FailureKind::Permanent, Health::Down),
        (404, FailureKind::Permanent, Health::Down),
        (408, FailureKind::Transient, Health::Up),
        (422, FailureKind::Permanent, Health::Up),
        (429, FailureKind::Transient, Health::Up),
        (500, FailureKind::Transient, Health::Up),
        (503, FailureKind::Transient, Health::Up),
        (529, FailureKind::Transient, Health::Up),
    ];
    for (status, kind, health) in cases {
        let spec = ModelSpec::new(provider, base_url(sim.addr), format!("sim:fail={status}"));
        let (agent, breaker) = agent(spec, breaker_of(2), RateLimits::default());
        let failed = failure(run(&agent, task(json!("hi"))).await);
        assert_eq!(failed.kind, kind, "{status}: {failed:?}");
        assert!(
            failed.message.contains(&status.to_string()),
            "{status}: {}",
            failed.message
        );
        assert!(
            failed.message.contains("(simulated)"),
            "{status}: no provider message: {}",
            failed.message
        );
        assert_eq!(agent.health().unwrap().borrow().health, health, "{status}");
        assert_eq!(breaker.state(), BreakerState::Closed, "{status}");
        // A 429 or 529 without timing headers pauses for the limiter's default throttle pause.
        let throttled = status == 429 || status == 529;
        assert_eq!(
            failed.retry_after.is_some(),
            throttled,
            "{status}: {failed:?}"
        );

        let again = failure(run(&agent, task(json!("hi"))).await);
        assert_eq!(again.kind, kind, "{status}: {again:?}");
        let opened = matches!(breaker.state(), BreakerState::Open { .. });
        assert_eq!(
            opened,
            kind == FailureKind::Transient,
            "{status}: {:?}",
            breaker.state()
        );
    }
    assert_eq!(sim.stats().total(), 2 * cases.len() as u64);
    sim.shutdown().await.unwrap();
}
both_formats!(statuses_are_classified);

/// A 401 is permanent with the provider's message, sent once (the agent does not retry), and
/// the agent reports itself down as misconfigured.
async fn unauthorized_is_permanent_and_reports_down(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let agent = plain_agent(provider, sim.addr, "sim:fail=401");
    let mut health = HealthLog::follow(&agent);
    let failed = failure(run(&agent, task(json!("hi"))).await);
    assert_eq!(failed.kind, FailureKind::Permanent);
    assert!(
        failed.message.contains("401") && failed.message.contains("invalid API key (simulated)"),
        "{}",
        failed.message
    );
    assert_eq!(failed.retry_after, None);
    assert_eq!(sim.stats().count_status(endpoint(provider), 401), 1);
    assert_eq!(sim.stats().total(), 1);
    let down = health.next().await;
    assert_eq!(down.health, Health::Down);
    assert!(
        down.reason.contains("misconfigured") && down.reason.contains("401"),
        "{down:?}"
    );
    assert_eq!(agent.breaker().state(), BreakerState::Closed);
    sim.shutdown().await.unwrap();
}
both_formats!(unauthorized_is_permanent_and_reports_down);

/// A refused connection is transient, and its message names no key.
async fn a_refused_connection_is_transient(provider: Provider) {
    let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = unused.local_addr().unwrap();
    drop(unused);
    let mut spec = ModelSpec::new(provider, base_url(addr), "m");
    spec.api_key = Some(ApiKey::new("sk-never-shown-0000"));
    let (agent, breaker) = agent(spec, breaker_of(1), RateLimits::default());
    let failed = failure(run(&agent, task(json!("hi"))).await);
    assert_eq!(failed.kind, FailureKind::Transient, "{failed:?}");
    assert!(
        !failed.message.contains("sk-never-shown"),
        "{}",
        failed.message
    );
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
}
both_formats!(a_refused_connection_is_transient);

// --- Answers: usage, JSON, the key --------------------------------------------------------------

/// Usage is recorded, streaming or not: output tokens are the answer's pieces, input tokens the
/// sim's count of the prompt (characters / 4, rounded up).
async fn usage_is_recorded(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let prompt = reply_with(json!("one two three four five"));
    let expected = Usage {
        input_tokens: prompt.chars().count().div_ceil(4) as u64,
        output_tokens: 5,
        ..Usage::default()
    };
    for stream in [false, true] {
        let mut spec = ModelSpec::new(provider, base_url(sim.addr), "sim");
        spec.stream = stream;
        let (agent, _) = agent(spec, BreakerConfig::default(), RateLimits::default());
        let (output, usage) = success(run(&agent, task(json!(prompt))).await);
        assert_eq!(output, json!("one two three four five"), "stream: {stream}");
        assert_eq!(usage, Some(expected), "stream: {stream}");
    }
    sim.shutdown().await.unwrap();
}
both_formats!(usage_is_recorded);

/// JSON asked and given: the output is the parsed object (streamed or not). JSON asked and
/// text given: invalid output, with the text kept.
async fn json_mode(provider: Provider) {
    let sim = sim(SimConfig::default()).await;
    let object = json!({"answer": 42, "items": ["a", "b"], "nested": {"ok": true}});
    for stream in [false, true] {
        let mut spec = ModelSpec::new(provider, base_url(sim.addr), "sim");
        spec.stream = stream;
        let (agent, _) = agent(spec, BreakerConfig::default(), RateLimits::default());
        let asked = json!({"json": true, "prompt": reply_with(object.clone())});
        let (output, usage) = success(run(&agent, task(asked)).await);
        assert_eq!(output, object, "stream: {stream}");
        assert!(usage.is_some());

        let asked = json!({"json": true, "prompt": reply_with(json!("Sure! Here it is."))});
        let failed = failure(run(&agent, task(asked)).await);
        assert_eq!(
            failed.kind,
            FailureKind::InvalidOutput,
            "stream: {stream}: {failed:?}"
        );
        assert_eq!(failed.partial, Some(json!("Sure! Here it is.")));
        assert!(failed.usage.is_some(), "usage of an invalid answer is kept");
        // Not a model failure: the breaker did not count it.
        assert_eq!(agent.breaker().state(), BreakerState::Closed);
    }
    sim.shutdown().await.unwrap();
}
both_formats!(json_mode);

const KEY: &str = "sk-test-secret-4f9a";
const WRONG_KEY: &str = "sk-wrong-secret-77c1";

/// The key is sent the provider's way (and the task's idempotency key with it); a wrong key is
/// a 401, and neither key shows in a failure message or in any Debug output.
async fn the_api_key_is_sent_and_never_shown(provider: Provider) {
    let sim = sim(SimConfig {
        api_key: Some(KEY.into()),
        ..SimConfig::default()
    })
    .await;
    let tap = Tap::start(sim.addr).await;
    let with_key = |key: &str| {
        let mut spec = ModelSpec::new(provider, base_url(tap.addr), "sim");
        spec.api_key = Some(ApiKey::new(key));
        agent(spec, BreakerConfig::default(), RateLimits::default()).0
    };

    let good = with_key(KEY);
    let sent = task(json!("hi"));
    let idempotency_key = sent.idempotency_key();
    success(run(&good, sent).await);
    let arrival = &tap.arrivals()[0];
    let header = |name: &str| {
        arrival
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    match provider {
        Provider::Openai => assert_eq!(header("authorization"), Some(format!("Bearer {KEY}"))),
        Provider::Anthropic => {
            assert_eq!(header("x-api-key").as_deref(), Some(KEY));
            assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
            assert_eq!(header("authorization"), None);
        }
    }
    assert_eq!(header("idempotency-key"), Some(idempotency_key));

    let bad = with_key(WRONG_KEY);
    let outcome = run(&bad, task(json!("hi"))).await;
    let shown = format!("{outcome:?} {bad:?} {good:?} {:?}", bad.spec());
    let failed = failure(outcome);
    assert_eq!(failed.kind, FailureKind::Permanent);
    assert!(failed.message.contains("401"), "{}", failed.message);
    assert_eq!(bad.health().unwrap().borrow().health, Health::Down);
    for key in [KEY, WRONG_KEY] {
        assert!(!shown.contains(key), "the key shows: {shown}");
    }
    assert_eq!(sim.stats().count_status(endpoint(provider), 401), 1);
    sim.shutdown().await.unwrap();
}
both_formats!(the_api_key_is_sent_and_never_shown);

/// A second streamed answer from the sim on the agent's pooled connection arrives while a timer
/// is pending. It did not while the sim left `TCP_NODELAY` unset: after the first exchange on
/// a connection its small SSE writes waited for the client's delayed ACK (about 40 ms of real
/// time on Linux loopback), and on a paused clock the runtime saw no readiness and moved the
/// clock instead (here to the 20 s timeout). The sim sets `TCP_NODELAY` now; this test keeps
/// it so.
#[tokio::test(start_paused = true)]
async fn a_streamed_answer_on_a_reused_connection_arrives() {
    let sim = sim(SimConfig::default()).await;
    let agent = plain_agent(Provider::Openai, sim.addr, "sim:tokens=20");
    for n in 0..4 {
        let answered = timeout(PATIENCE, run(&agent, task(json!("hi")))).await;
        assert!(
            answered.is_ok(),
            "streamed answer {n} on a reused connection never came"
        );
        success(answered.unwrap());
    }
    sim.shutdown().await.unwrap();
}

/// A server (some OpenAI-compatible proxies do) that echoes the key it was given: in a 401,
/// or (`mid_stream`) in an error event after a first piece of a streamed answer.
struct EchoesKey {
    mid_stream: bool,
}

impl wiremock::Respond for EchoesKey {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let given = ["authorization", "x-api-key"]
            .iter()
            .filter_map(|name| request.headers.get(*name))
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(" ");
        let error = json!({"type": "error", "error": {"message": format!("Incorrect API key provided: {given}")}});
        if !self.mid_stream {
            return wiremock::ResponseTemplate::new(401).set_body_json(error);
        }
        let body = if request.url.path().ends_with("/messages") {
            format!(
                "event: message_start\ndata: {}\n\n\
                 event: content_block_delta\ndata: {}\n\n\
                 event: error\ndata: {error}\n\n",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
                json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "par"}}),
            )
        } else {
            format!(
                "data: {}\n\ndata: {error}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": "par"}}]}),
            )
        };
        wiremock::ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
    }
}

/// Even when the server repeats the key, the failure message does not.
async fn an_echoed_key_is_not_repeated(mid_stream: bool) {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(EchoesKey { mid_stream })
        .mount(&server)
        .await;
    for provider in [Provider::Openai, Provider::Anthropic] {
        let mut spec = ModelSpec::new(provider, format!("{}/v1", server.uri()), "m");
        spec.api_key = Some(ApiKey::new(WRONG_KEY));
        let (agent, _) = agent(spec, BreakerConfig::default(), RateLimits::default());
        let outcome = run(&agent, task(json!("hi"))).await;
        let shown = format!("{outcome:?}");
        let failed = failure(outcome);
        let expected = if mid_stream {
            FailureKind::Transient
        } else {
            FailureKind::Permanent
        };
        assert_eq!(
            failed.kind, expected,
            "{provider:?}, mid-stream {mid_stream}: {failed:?}"
        );
        assert!(
            failed.message.contains("Incorrect API key provided"),
            "{}",
            failed.message
        );
        if mid_stream {
            assert_eq!(failed.partial, Some(json!("par")));
        }
        assert!(
            !shown.contains(WRONG_KEY),
            "{provider:?}, mid-stream {mid_stream}: the key shows: {shown}"
        );
    }
}

#[tokio::test]
async fn a_key_echoed_in_a_401_is_not_repeated() {
    an_echoed_key_is_not_repeated(false).await;
}

#[tokio::test]
async fn a_key_echoed_mid_stream_is_not_repeated() {
    an_echoed_key_is_not_repeated(true).await;
}
