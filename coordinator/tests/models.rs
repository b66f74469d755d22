//! Model agents in a swarm: agents built from `swarm.toml` entries (`AgentConfig::build`) call
//! the simulated model server over real HTTP on loopback, in both wire formats, and the
//! scheduler, registry and supervisor react to what they report: a breaker that opens takes its
//! agent out of selection, a rejected key fails a task over to another agent, a 429's
//! `Retry-After` delays the retry, a quota spaces requests, a price table gives attempts their
//! cost and a `cost_budget` bounds it.
//!
//! Every test runs on tokio's paused clock, which the breaker, the limiter, the sim and the
//! scheduler's retry timers all read: cool-downs and quota minutes pass in no real time.
//! Loopback I/O works under it because the kernel completes a loopback connect or write within
//! the syscall, so the runtime sees it before it decides it is idle and moves the clock. A write
//! the kernel held back would break that (a streamed answer on a reused connection waiting for
//! a delayed ACK, ~40 ms real, that a paused clock skips over), so the sim sets `TCP_NODELAY`;
//! every scenario runs in both delivery modes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use swarm_agents::model::provider::Provider;
use swarm_agents::sim::{Endpoint, SimConfig, SimHandle, SimServer};
use swarm_coordinator::Swarm;
use swarm_coordinator::config::Config;
use swarm_coordinator::model_agents::ModelAgents;
use swarm_coordinator::replay::Replay;
use swarm_protocol::{
    AgentId, Event, FailureKind, Health, Objective, ObjectiveId, ObjectiveStatus, ObjectiveView,
    RetryPolicy, TaskSpec, TaskStatus, Usd,
};
use swarm_testkit::{both_formats, cap, finish, key, start};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long (on the paused clock) an objective may take: far more than any test needs.
const OBJECTIVE_PATIENCE: Duration = Duration::from_secs(3600);

/// Runs a scenario in both wire formats and both delivery modes: `<scenario>::openai_whole`
/// (`stream = false`), `<scenario>::openai_streamed`, and the same for Anthropic.
macro_rules! formats_and_modes {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test(start_paused = true)]
            async fn openai_whole() {
                super::$scenario(Provider::Openai, false).await;
            }

            #[tokio::test(start_paused = true)]
            async fn anthropic_whole() {
                super::$scenario(Provider::Anthropic, false).await;
            }

            #[tokio::test(start_paused = true)]
            async fn openai_streamed() {
                super::$scenario(Provider::Openai, true).await;
            }

            #[tokio::test(start_paused = true)]
            async fn anthropic_streamed() {
                super::$scenario(Provider::Anthropic, true).await;
            }
        }
    };
}

async fn sim() -> SimHandle {
    SimServer::start(SimConfig::default()).await.unwrap()
}

fn endpoint(provider: Provider) -> Endpoint {
    match provider {
        Provider::Openai => Endpoint::ChatCompletions,
        Provider::Anthropic => Endpoint::Messages,
    }
}

/// Registers a model agent described the way `swarm.toml` describes one (`extra` adds keys),
/// with capability `write`, calling `model` at `addr`.
async fn register(
    swarm: &Swarm,
    name: &str,
    provider: Provider,
    addr: SocketAddr,
    model: &str,
    extra: &str,
) -> AgentId {
    let provider = match provider {
        Provider::Openai => "openai",
        Provider::Anthropic => "anthropic",
    };
    let text = format!(
        "[[agents]]\n\
         name = \"{name}\"\n\
         provider = \"{provider}\"\n\
         base_url = \"http://{addr}/v1\"\n\
         model = \"{model}\"\n\
         capabilities = [\"write\"]\n\
         {extra}\n"
    );
    let config = Config::parse(&text).unwrap();
    let (registration, factory, _agent) = config.agents[0].build().unwrap();
    swarm
        .register_agent(registration, factory)
        .await
        .unwrap()
        .id
}

/// Registers the agents of a `swarm.toml` text (with its `[[accounts]]`), where `{addr}`
/// stands for `addr`; returns their ids in the file's order.
async fn register_file(swarm: &Swarm, text: &str, addr: SocketAddr) -> Vec<AgentId> {
    let config = Config::parse(&text.replace("{addr}", &addr.to_string())).unwrap();
    let (_models, agents) = ModelAgents::build(&config).unwrap();
    let mut ids = Vec::new();
    for (registration, factory, _) in agents {
        ids.push(
            swarm
                .register_agent(registration, factory)
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::Anthropic => "anthropic",
    }
}

/// The most arrivals in any closed 60-second window.
fn busiest_minute(arrivals: &[Instant]) -> usize {
    let mut arrivals = arrivals.to_vec();
    arrivals.sort();
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|at| **at - arrivals[i] <= Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `count` independent `write` tasks, each retried up to `max_attempts` times.
fn writes(count: usize, max_attempts: u32) -> Objective {
    let tasks = (0..count)
        .map(|i| {
            let mut spec = TaskSpec::new(key(&format!("w{i}")), cap("write"))
                .with_input(json!(format!("write {i}")));
            spec.retry = RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            };
            spec
        })
        .collect();
    Objective::with_tasks("write things", tasks)
}

async fn run_to_end(swarm: &Swarm, objective: Objective) -> ObjectiveView {
    let id: ObjectiveId = swarm.submit(objective).await.unwrap();
    swarm.wait(id, OBJECTIVE_PATIENCE).await.unwrap()
}

/// The events recorded so far (every one, since the swarm started).
fn recorded(events: &mut swarm_testkit::Events) -> Vec<Event> {
    events
        .drain()
        .iter()
        .map(|record| record.event.clone())
        .collect()
}

fn is_down(event: &Event, agent: AgentId) -> bool {
    matches!(event, Event::AgentHealthChanged { agent: a, health: Health::Down, .. } if *a == agent)
}

/// Waits until `agent`'s first Down is recorded (an agent's health reaches the log on its own
/// path, not with the outcome that caused it), then returns every event recorded so far and
/// the Down's index among them. Panics, naming `why`, if it never comes.
async fn log_after_down(
    events: &mut swarm_testkit::Events,
    agent: AgentId,
    why: &str,
) -> (Vec<Event>, usize) {
    let seen_already = events
        .drain()
        .iter()
        .any(|record| is_down(&record.event, agent));
    if !seen_already {
        events.until(why, |event| is_down(event, agent)).await;
    }
    let log = recorded(events);
    let down = log.iter().position(|event| is_down(event, agent)).unwrap();
    (log, down)
}

/// A recording TCP proxy on loopback: notes when (on tokio's clock) each HTTP request began to
/// arrive, and pipes bytes both ways unchanged. The sim keeps counts only; this keeps instants.
/// Requests are told apart by a read that starts with `POST `: a client sends the next request
/// on a connection only after the previous answer, so a request's head starts a read.
struct Tap {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    server: JoinHandle<()>,
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let noted = arrivals.clone();
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(pipe(client, upstream, noted.clone()));
            }
        });
        Self {
            addr,
            arrivals,
            server,
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, arrivals: Arc<Mutex<Vec<Instant>>>) {
    let server = TcpStream::connect(upstream).await.unwrap();
    // The tap's own writes go out at once (no Nagle delay added on top of the server's).
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            if buffer[..n].starts_with(b"POST ") {
                arrivals.lock().unwrap().push(Instant::now());
            }
            if to_server.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    };
    let answers = async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(requests, answers);
}

// --- 2. A failing agent's breaker opens; work moves to the healthy one ---------------------

/// A answers 500 to everything (breaker of 3), B answers. Thirty tasks all succeed, all on B;
/// A's breaker opened (its Down is in the log), and after that A got no more work.
async fn a_failing_agent_is_taken_out_and_work_moves(provider: Provider, stream: bool) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let a = register(
        &swarm,
        "a",
        provider,
        sim.addr,
        "sim:fail=500",
        "concurrency = 2\nbreaker = { consecutive_failures = 3, cool_down = \"30s\" }",
    )
    .await;
    let b = register(
        &swarm,
        "b",
        provider,
        sim.addr,
        "sim",
        &format!("concurrency = 4\nstream = {stream}"),
    )
    .await;

    // Four attempts: A takes work only until its third failure, so no task can fail on it
    // more than three times.
    let view = run_to_end(&swarm, writes(30, 4)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    for task in &view.tasks {
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert_eq!(
            task.agent,
            Some(b),
            "{} ended on {:?}",
            task.key,
            task.agent
        );
    }

    let (log, down) = log_after_down(&mut events, a, "A's breaker to open (its Down)").await;
    match &log[down] {
        Event::AgentHealthChanged { reason, .. } => {
            assert!(
                reason.contains("circuit open") && reason.contains("500"),
                "{reason}"
            );
        }
        other => unreachable!("{other:?}"),
    }
    let failed_on_a = log
        .iter()
        .filter(|event| {
            matches!(event, Event::TaskFailed { agent: Some(agent), kind: FailureKind::Transient, .. } if *agent == a)
        })
        .count();
    assert!(
        failed_on_a >= 3,
        "A failed {failed_on_a} attempts; its breaker needs 3"
    );
    // Every request that reached the server for A is one of those failures: none was sent
    // while its breaker was open.
    assert_eq!(
        sim.stats().count_status(endpoint(provider), 500),
        failed_on_a as u64
    );
    let started_on_a_later = log[down..]
        .iter()
        .filter(|event| matches!(event, Event::TaskStarted { agent, .. } if *agent == a))
        .count();
    assert_eq!(started_on_a_later, 0, "A was given work after it went down");
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 30);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
formats_and_modes!(a_failing_agent_is_taken_out_and_work_moves);

// --- 6. 401 ---------------------------------------------------------------------------------

/// Alone, an agent whose key is refused fails the task at once: one attempt, one request, the
/// provider's message, and the agent reports itself down.
async fn unauthorized_alone_fails_without_retry(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let a = register(&swarm, "a", provider, sim.addr, "sim:fail=401", "").await;
    let view = run_to_end(&swarm, writes(1, 3)).await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let task = &view.tasks[0];
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempts, 1, "a 401 was retried");
    let error = task.error.as_deref().unwrap();
    assert!(
        error.contains("401") && error.contains("invalid API key (simulated)"),
        "{error}"
    );
    assert_eq!(sim.stats().total(), 1);
    assert_eq!(sim.stats().count_status(endpoint(provider), 401), 1);

    let (log, down) = log_after_down(&mut events, a, "the 401 agent to report itself down").await;
    match &log[down] {
        Event::AgentHealthChanged { reason, .. } => {
            assert!(reason.contains("misconfigured"), "{reason}");
        }
        other => unreachable!("{other:?}"),
    }
    assert!(log.iter().any(|event| matches!(
        event,
        Event::TaskFailed {
            kind: FailureKind::Permanent,
            retry_in: None,
            ..
        }
    )));
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(unauthorized_alone_fails_without_retry);

/// With a second agent of the capability, a task refused with 401 moves to it at once and
/// succeeds there; the first agent reports itself down and gets no more work.
async fn unauthorized_fails_over_to_another_agent(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let a = register(&swarm, "a", provider, sim.addr, "sim:fail=401", "").await;
    let b = register(&swarm, "b", provider, sim.addr, "sim", "").await;
    // Steer the first attempt to A: the registry prefers an agent that is up to a degraded
    // one that has room.
    swarm.set_health(b, Health::Degraded).await.unwrap();

    let view = run_to_end(&swarm, writes(1, 3)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let task = &view.tasks[0];
    assert_eq!(task.attempts, 2);
    assert_eq!(task.agent, Some(b));

    let log = recorded(&mut events);
    let failed = log
        .iter()
        .find_map(|event| match event {
            Event::TaskFailed {
                agent,
                kind,
                message,
                retry_in,
                attempt,
                ..
            } => Some((*agent, *kind, message.clone(), *retry_in, *attempt)),
            _ => None,
        })
        .expect("the first attempt did not fail");
    assert_eq!(failed.0, Some(a));
    assert_eq!(failed.1, FailureKind::Permanent);
    assert!(
        failed.2.contains("invalid API key (simulated)"),
        "{}",
        failed.2
    );
    // Moved at once: no backoff before another agent tries.
    assert_eq!(failed.3, Some(Duration::ZERO));
    assert_eq!(failed.4, 1);
    let (log, down) = log_after_down(&mut events, a, "the 401 agent to report itself down").await;
    assert!(
        !log[down..]
            .iter()
            .any(|event| matches!(event, Event::TaskStarted { agent, .. } if *agent == a)),
        "A was given work after it reported itself down"
    );
    assert_eq!(sim.stats().count_status(endpoint(provider), 401), 1);
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 1);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(unauthorized_fails_over_to_another_agent);

// --- 4. 429: the retry waits for Retry-After ----------------------------------------------

/// A 429 with `Retry-After: 2`: the scheduler's retry comes no sooner than 2 s, and the
/// retried attempt reaches the server no earlier than 2 s after the 429.
async fn a_429_retry_waits_for_retry_after(provider: Provider, stream: bool) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, mut events) = start().await;
    register(
        &swarm,
        "a",
        provider,
        tap.addr,
        "sim:429=2x1",
        &format!("stream = {stream}"),
    )
    .await;
    let view = run_to_end(&swarm, writes(1, 3)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.tasks[0].attempts, 2);

    let log = recorded(&mut events);
    let retry_in = log
        .iter()
        .find_map(|event| match event {
            Event::TaskFailed {
                kind: FailureKind::Transient,
                retry_in,
                ..
            } => *retry_in,
            _ => None,
        })
        .expect("no retried failure");
    assert!(
        retry_in >= Duration::from_secs(2),
        "retried after {retry_in:?}"
    );
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(2),
        "the retry reached the server {gap:?} after the 429"
    );
    assert_eq!(sim.stats().count_status(endpoint(provider), 429), 1);
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 1);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
formats_and_modes!(a_429_retry_waits_for_retry_after);

// --- 3. A quota spaces a swarm's requests ------------------------------------------------------

/// 200 tasks through one agent allowed 60 requests a minute: no 60-second window holds more
/// than 60 requests at the server.
async fn a_quota_holds_across_the_swarm(provider: Provider) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, _events) = start().await;
    register(
        &swarm,
        "a",
        provider,
        tap.addr,
        "sim:tokens=2",
        "concurrency = 16\nrpm = 60",
    )
    .await;
    let started = Instant::now();
    let view = run_to_end(&swarm, writes(200, 1)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let mut arrivals = tap.arrivals();
    arrivals.sort();
    assert_eq!(arrivals.len(), 200);
    let heaviest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|at| **at - arrivals[i] <= Duration::from_secs(60))
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(heaviest, 60);
    let span = arrivals[199] - started;
    assert!(
        span > Duration::from_secs(180) && span < Duration::from_secs(181),
        "{span:?}"
    );
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_quota_holds_across_the_swarm);

// --- 5. A stalled stream ------------------------------------------------------------------------

/// A stream that stalls after three pieces: the attempt times out with those pieces as its
/// partial output, kept on the task, and the agent's breaker (of one) counted it and opened.
async fn a_stall_keeps_its_partial_output(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let a = register(
        &swarm,
        "a",
        provider,
        sim.addr,
        "sim:stall=3",
        "breaker = { consecutive_failures = 1 }",
    )
    .await;
    let mut objective = writes(1, 1);
    objective.tasks[0].input = json!(json!({"$sim_reply": "one two three four five"}).to_string());
    objective.tasks[0].idle_timeout = Some(Duration::from_secs(5));
    let view = run_to_end(&swarm, objective).await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let task = &view.tasks[0];
    assert_eq!(task.partial_output, Some(json!("one two three ")));
    let log = recorded(&mut events);
    assert!(log.iter().any(|event| matches!(
        event,
        Event::TaskFailed { kind: FailureKind::Timeout, partial_output: Some(p), .. } if *p == json!("one two three ")
    )), "{log:#?}");
    let (log, down) = log_after_down(&mut events, a, "the stall to open the breaker").await;
    match &log[down] {
        Event::AgentHealthChanged { reason, .. } => {
            assert!(reason.contains("circuit open"), "{reason}")
        }
        other => unreachable!("{other:?}"),
    }
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_stall_keeps_its_partial_output);

// --- 7. The README's primary and fallback, every other key at its default ----------------------

/// The README's pair: `writer` (declared first) answers 429 to everything, `fallback` answers.
/// With every other key at its default (breaker, concurrency, the task's retry policy), the
/// task's retry goes to `fallback` and succeeds: a transient failure moves to another agent
/// with the capability when one has room.
async fn the_readme_fallback_takes_a_throttled_primarys_work(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let writer = register(&swarm, "writer", provider, sim.addr, "sim:429=1", "").await;
    let fallback = register(&swarm, "fallback", provider, sim.addr, "sim", "").await;
    let objective = Objective::with_tasks(
        "write",
        vec![TaskSpec::new(key("w"), cap("write")).with_input(json!("write"))],
    );
    let view = run_to_end(&swarm, objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let task = &view.tasks[0];
    assert_eq!(task.agent, Some(fallback));
    assert_eq!(task.attempts, 2, "{view:#?}");
    let started: Vec<AgentId> = recorded(&mut events)
        .iter()
        .filter_map(|event| match event {
            Event::TaskStarted { agent, .. } => Some(*agent),
            _ => None,
        })
        .collect();
    assert_eq!(started, [writer, fallback]);
    assert_eq!(sim.stats().count_status(endpoint(provider), 429), 1);
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 1);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(the_readme_fallback_takes_a_throttled_primarys_work);

// --- 8. Provider accounts: agents on one key share its quota, its pauses and its usage --------

/// Eight agents on one account of 60 requests a minute, with room for 32 calls at once between
/// them: 200 tasks never put more than 60 requests in any 60-second window at the server,
/// whichever agents made them, and several agents did make them.
async fn many_agents_on_one_account_keep_its_quota(provider: Provider) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, mut events) = start().await;
    let mut file = format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         rpm = 60\n",
        provider_name(provider)
    );
    for i in 0..8 {
        file.push_str(&format!(
            "[[agents]]\nname = \"a{i}\"\naccount = \"key\"\nmodel = \"sim:tokens=2\"\n\
             capabilities = [\"write\"]\nconcurrency = 4\n"
        ));
    }
    let agents = register_file(&swarm, &file, tap.addr).await;
    let started = Instant::now();
    let view = run_to_end(&swarm, writes(200, 1)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 200);
    assert_eq!(busiest_minute(&arrivals), 60);
    let last = arrivals.iter().max().unwrap();
    let span = *last - started;
    assert!(
        span > Duration::from_secs(180) && span < Duration::from_secs(181),
        "{span:?}"
    );
    let used: std::collections::BTreeSet<AgentId> = recorded(&mut events)
        .iter()
        .filter_map(|event| match event {
            Event::TaskSucceeded { agent, .. } => Some(*agent),
            _ => None,
        })
        .collect();
    assert!(used.len() > 1, "only {used:?} of {agents:?} ran tasks");
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(many_agents_on_one_account_keep_its_quota);

/// Two agents on one account; the first answers 429 with `Retry-After: 5` once. The task's
/// retry goes to the second agent, which finds the account paused: it declines the attempt
/// (sending nothing) and the account's agents go down until the pause ends. The task's next
/// attempt reaches the server no sooner than 5 s after the 429: the pause was the account's,
/// not only the agent's.
async fn a_429_to_one_agent_pauses_its_whole_account(provider: Provider) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, mut events) = start().await;
    let file = format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         [[agents]]\nname = \"throttled\"\naccount = \"key\"\nmodel = \"sim:429=5x1\"\n\
         capabilities = [\"write\"]\n\
         [[agents]]\nname = \"other\"\naccount = \"key\"\nmodel = \"sim\"\n\
         capabilities = [\"write\"]\n",
        provider_name(provider)
    );
    let agents = register_file(&swarm, &file, tap.addr).await;
    let view = run_to_end(&swarm, writes(1, 3)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    // Between the 429 and the success, only declines: the other agent's, and any that reached
    // an agent of the account before the registry heard it was down.
    let log = recorded(&mut events);
    let declines = |agent: Option<AgentId>| {
        log.iter()
            .filter(|event| {
                matches!(event, Event::AttemptLost { agent: a, declined: true, .. }
                    if agent.is_none_or(|agent| *a == Some(agent)))
            })
            .count() as u32
    };
    assert!(
        declines(Some(agents[1])) >= 1,
        "the other agent did not decline the paused account's call"
    );
    assert_eq!(view.tasks[0].attempts, 2 + declines(None), "{view:#?}");
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(5),
        "the retry reached the server {gap:?} after the 429"
    );
    assert_eq!(sim.stats().count_status(endpoint(provider), 429), 1);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_429_to_one_agent_pauses_its_whole_account);

/// An account of 2,100 tokens a minute, and calls estimated at over 1,024 tokens each (the
/// most they may generate) that use a few dozen: with the reported usage correcting each
/// estimate, ten calls in a row all go out within the first minute (charged by their
/// estimates alone, two would).
async fn reported_usage_gives_unused_tokens_back(provider: Provider) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, _events) = start().await;
    let file = format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         tpm = 2100\n\
         [[agents]]\nname = \"a\"\naccount = \"key\"\nmodel = \"sim:tokens=3\"\n\
         capabilities = [\"write\"]\nconcurrency = 1\n",
        provider_name(provider)
    );
    register_file(&swarm, &file, tap.addr).await;
    let started = Instant::now();
    let view = run_to_end(&swarm, writes(10, 1)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let arrivals = tap.arrivals();
    assert_eq!(arrivals.len(), 10);
    let span = *arrivals.iter().max().unwrap() - started;
    assert!(span < Duration::from_secs(60), "{span:?}");
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(reported_usage_gives_unused_tokens_back);

// --- 9. An agent's own fallbacks ---------------------------------------------------------------

/// The seeds' case: one agent whose primary model is down (500s; a breaker of one failure and
/// an hour's cool-down) and a cheaper model as its fallback. The first attempt fails on the
/// primary, which opens its breaker; the agent stays in service (degraded, not down), and the
/// retry is answered by the fallback model at once.
async fn a_primary_model_that_is_down_falls_back_to_a_cheaper_one(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let agent = register(
        &swarm,
        "writer",
        provider,
        sim.addr,
        "sim:fail=500",
        "breaker = { consecutive_failures = 1, cool_down = \"1h\" }\n\
         fallbacks = [\"sim:tokens=2\"]",
    )
    .await;
    let started = Instant::now();
    let view = run_to_end(&swarm, writes(1, 3)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.tasks[0].attempts, 2);
    assert_eq!(view.tasks[0].agent, Some(agent));
    assert!(
        Instant::now() - started < Duration::from_secs(60),
        "the retry waited for the primary's cool-down"
    );
    assert_eq!(sim.stats().count_status(endpoint(provider), 500), 1);
    assert_eq!(sim.stats().count_status(endpoint(provider), 200), 1);
    let log = recorded(&mut events);
    assert!(
        !log.iter().any(|event| is_down(event, agent)),
        "the agent went down although its fallback could answer"
    );
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_primary_model_that_is_down_falls_back_to_a_cheaper_one);

/// An agent on an account of one request a minute names as its fallback an agent on another
/// account (which offers another capability, so the scheduler never picks it itself). Three
/// tasks in a chain: the first spends the primary's quota, the next two go to the fallback at
/// once instead of waiting a minute each.
async fn an_agent_out_of_quota_falls_back_to_another_account(provider: Provider) {
    let sim = sim().await;
    let tap = Tap::start(sim.addr).await;
    let (swarm, _events) = start().await;
    let kind = provider_name(provider);
    let file = format!(
        "[[accounts]]\nname = \"small\"\nprovider = \"{kind}\"\nbase_url = \"http://{{addr}}/v1\"\nrpm = 1\n\
         [[accounts]]\nname = \"spare\"\nprovider = \"{kind}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         [[agents]]\nname = \"backup\"\naccount = \"spare\"\nmodel = \"sim\"\n\
         capabilities = [\"spare\"]\n\
         [[agents]]\nname = \"primary\"\naccount = \"small\"\nmodel = \"sim\"\n\
         capabilities = [\"write\"]\nfallbacks = [\"backup\"]\n"
    );
    let agents = register_file(&swarm, &file, tap.addr).await;
    let chain = (0..3)
        .map(|i| {
            let mut spec = TaskSpec::new(key(&format!("w{i}")), cap("write"))
                .with_input(json!(format!("write {i}")));
            if i > 0 {
                spec.depends_on = vec![key(&format!("w{}", i - 1))];
            }
            spec
        })
        .collect();
    let started = Instant::now();
    let view = run_to_end(&swarm, Objective::with_tasks("chain", chain)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    for task in &view.tasks {
        assert_eq!(
            task.agent,
            Some(agents[1]),
            "not on the agent the scheduler chose"
        );
        assert_eq!(task.attempts, 1);
    }
    assert_eq!(tap.arrivals().len(), 3);
    let span = Instant::now() - started;
    assert!(span < Duration::from_secs(60), "{span:?}");
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(an_agent_out_of_quota_falls_back_to_another_account);

/// An account of one request a minute, saturated by a low-priority objective's three tasks:
/// the first is granted at once, the other two are declined back to the queue. A
/// high-priority objective submitted then gets the quota first: its two tasks are granted
/// before the low ones left waiting.
async fn a_saturated_account_serves_higher_priority_tasks_first(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let file = format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\nrpm = 1\n\
         [[agents]]\nname = \"a\"\naccount = \"key\"\nmodel = \"sim\"\n\
         capabilities = [\"write\"]\nconcurrency = 8\n",
        provider_name(provider)
    );
    register_file(&swarm, &file, sim.addr).await;
    let low = swarm.submit(writes(3, 1)).await.unwrap();
    events
        .until(
            "the first low-priority task",
            |event| matches!(event, Event::TaskSucceeded { objective, .. } if *objective == low),
        )
        .await;
    let mut urgent = writes(2, 1);
    urgent.priority = 5;
    let high = swarm.submit(urgent).await.unwrap();
    for id in [low, high] {
        let view = swarm.wait(id, OBJECTIVE_PATIENCE).await.unwrap();
        assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    }
    let order: Vec<&str> = recorded(&mut events)
        .iter()
        .filter_map(|event| match event {
            Event::TaskSucceeded { objective, .. } if *objective == low => Some("low"),
            Event::TaskSucceeded { objective, .. } if *objective == high => Some("high"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["low", "high", "high", "low", "low"]);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_saturated_account_serves_higher_priority_tasks_first);

/// Two agents on one account whose breaker opens at the first failure: the failing agent's
/// 500 opens it, and the other agent, never called, goes down with it.
async fn an_open_account_breaker_takes_every_agent_on_it_down(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let file = format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         breaker = {{ consecutive_failures = 1, cool_down = \"1h\" }}\n\
         [[agents]]\nname = \"failing\"\naccount = \"key\"\nmodel = \"sim:fail=500\"\n\
         capabilities = [\"write\"]\n\
         [[agents]]\nname = \"idle\"\naccount = \"key\"\nmodel = \"sim\"\n\
         capabilities = [\"other\"]\n",
        provider_name(provider)
    );
    let agents = register_file(&swarm, &file, sim.addr).await;
    let view = run_to_end(&swarm, writes(1, 1)).await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let (log, down) = log_after_down(&mut events, agents[1], "the idle agent to go down").await;
    match &log[down] {
        Event::AgentHealthChanged { reason, .. } => {
            assert!(reason.contains("circuit open"), "{reason}");
        }
        other => unreachable!("{other:?}"),
    }
    assert!(log.iter().any(|event| is_down(event, agents[0])));
    assert_eq!(sim.stats().total(), 1, "the idle agent made no call");
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(an_open_account_breaker_takes_every_agent_on_it_down);

/// Two agents from one file with a price table: `priced` (model `sim:tokens=3`, priced at $2
/// in and $10 out per million tokens, so 2 and 10 micro-dollars a token) and `unpriced` (a
/// model not in the table). Each attempt's event carries its usage; the priced one's cost is
/// its tokens times the price, the unpriced one's is absent (unknown), and so is the
/// objective's total, which has an unknown part. The log replays to the live view.
async fn a_priced_models_attempts_carry_their_cost(provider: Provider, stream: bool) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let file = format!(
        "[prices.\"sim:tokens=3\"]\ninput = 2.0\noutput = 10.0\n\
         [[agents]]\nname = \"priced\"\nprovider = \"{p}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         model = \"sim:tokens=3\"\nstream = {stream}\ncapabilities = [\"write\"]\n\
         [[agents]]\nname = \"unpriced\"\nprovider = \"{p}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         model = \"sim:tokens=4\"\nstream = {stream}\ncapabilities = [\"draft\"]\n",
        p = provider_name(provider)
    );
    register_file(&swarm, &file, sim.addr).await;
    let tasks = vec![
        TaskSpec::new(key("a"), cap("write")).with_input(json!("write a")),
        TaskSpec::new(key("b"), cap("draft")).with_input(json!("draft b")),
    ];
    let view = run_to_end(&swarm, Objective::with_tasks("spend", tasks)).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    events
        .until("the objective's end", |e| {
            matches!(e, Event::ObjectiveSucceeded { .. })
        })
        .await;
    let log = events.drain().to_vec();
    let usage_of = |task| {
        log.iter()
            .find_map(|record| match &record.event {
                Event::TaskSucceeded { task: t, usage, .. } if *t == task => *usage,
                _ => None,
            })
            .unwrap()
    };
    let a = view.task("a").unwrap();
    let spent = usage_of(a.id);
    assert_eq!(spent.output_tokens, 3);
    assert!(spent.input_tokens > 0);
    let cost = spent.input_tokens * 2 + spent.output_tokens * 10;
    assert_eq!(spent.cost_usd_micros, Some(cost), "{spent:?}");
    assert_eq!(a.usage, spent, "the task's view is its one attempt");
    let b = view.task("b").unwrap();
    let unknown = usage_of(b.id);
    assert_eq!((unknown.output_tokens, unknown.cost_usd_micros), (4, None));
    assert_eq!(
        b.usage.cost_usd_micros, None,
        "an unpriced model's cost is unknown"
    );
    assert_eq!(view.usage.tokens(), spent.tokens() + unknown.tokens());
    assert_eq!(view.usage.cost_usd_micros, None, "a part is unknown");
    let mut replay = Replay::keeping_finished();
    for record in log {
        replay.apply(record);
    }
    assert_eq!(replay.objectives[&view.id].view(), view);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
formats_and_modes!(a_priced_models_attempts_carry_their_cost);

/// A model at $0.10 an output token (and free input), three tasks of three tokens run one at a
/// time, and a `cost_budget` of $0.50: the second attempt takes the objective to $0.60, which
/// fails it naming the limit; the third never runs. Every priced objective's total is known.
async fn going_over_the_cost_budget_fails_the_objective(provider: Provider) {
    let sim = sim().await;
    let (swarm, _events) = start().await;
    let file = format!(
        "[prices.\"sim:tokens=3\"]\ninput = 0.0\noutput = 100000.0\n\
         [[agents]]\nname = \"dear\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         model = \"sim:tokens=3\"\nconcurrency = 1\ncapabilities = [\"write\"]\n",
        provider_name(provider)
    );
    register_file(&swarm, &file, sim.addr).await;
    let mut objective = writes(3, 1);
    objective.limits.cost_budget = Some(Usd(500_000));
    let view = run_to_end(&swarm, objective).await;
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("`cost_budget`")
            && failure.contains("$0.600000")
            && failure.contains("$0.500000"),
        "{failure}"
    );
    assert_eq!(sim.stats().total(), 2, "the third task never ran");
    assert_eq!(view.usage.cost_usd_micros, Some(600_000));
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(going_over_the_cost_budget_fails_the_objective);
