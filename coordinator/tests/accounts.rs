//! Provider accounts in a swarm, against the simulated model server over real HTTP on
//! loopback: a task that cannot have its account's quota now leaves its agent's slot and waits
//! in the scheduler's queue, so other work keeps flowing (`model::account`'s rule), and every
//! 60-second window at the server holds the account's quota of requests and tokens.
//!
//! Every test runs on tokio's paused clock, which the limiter, the account's cool-down, the sim
//! and the scheduler's timers all read (see `models.rs` for why loopback I/O works under it).
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use swarm_agents::model::provider::Provider;
use swarm_agents::sim::{Served, SimConfig, SimHandle, SimServer};
use swarm_coordinator::Swarm;
use swarm_coordinator::config::Config;
use swarm_coordinator::model_agents::ModelAgents;
use swarm_coordinator::replay::Replay;
use swarm_protocol::{
    AgentId, Event, Health, Objective, ObjectiveStatus, ObjectiveView, RetryPolicy, TaskSpec,
    TaskStatus,
};
use swarm_testkit::{both_formats, cap, finish, key, start};
use tokio::time::Instant;

/// How long (on the paused clock) an objective may take: far more than any test needs.
const OBJECTIVE_PATIENCE: Duration = Duration::from_secs(3600);

const MINUTE: Duration = Duration::from_secs(60);

async fn sim() -> SimHandle {
    SimServer::start(SimConfig::default()).await.unwrap()
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::Anthropic => "anthropic",
    }
}

/// An `[[accounts]]` entry of `provider` at the sim (`{addr}`), with `extra` keys.
fn account(name: &str, provider: Provider, extra: &str) -> String {
    format!(
        "[[accounts]]\nname = \"{name}\"\nprovider = \"{}\"\nbase_url = \"http://{{addr}}/v1\"\n\
         {extra}\n",
        provider_name(provider)
    )
}

/// An `[[agents]]` entry with capability `write` on `account`.
fn agent(name: &str, account: &str, model: &str, concurrency: u32) -> String {
    format!(
        "[[agents]]\nname = \"{name}\"\naccount = \"{account}\"\nmodel = \"{model}\"\n\
         capabilities = [\"write\"]\nconcurrency = {concurrency}\n"
    )
}

/// Registers the agents of a `swarm.toml` text, where `{addr}` stands for `addr`; returns
/// their ids in the file's order.
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

/// `count` independent `write` tasks of one attempt each: a declined attempt must not use it.
fn writes(count: usize) -> Objective {
    let tasks = (0..count)
        .map(|i| {
            let mut spec = TaskSpec::new(key(&format!("w{i}")), cap("write"))
                .with_input(json!(format!("write {i}")));
            spec.retry = RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            };
            spec
        })
        .collect();
    Objective::with_tasks("write things", tasks)
}

/// The events recorded so far.
fn recorded(events: &mut swarm_testkit::Events) -> Vec<Event> {
    events
        .drain()
        .iter()
        .map(|record| record.event.clone())
        .collect()
}

/// Returns once an event matching `pred` was recorded, whether already or from now on.
async fn seen_or_awaited(
    events: &mut swarm_testkit::Events,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) {
    if !events.drain().iter().any(|record| pred(&record.event)) {
        events.until(what, pred).await;
    }
}

fn succeeded_by_agent(log: &[Event]) -> BTreeMap<AgentId, usize> {
    let mut by_agent = BTreeMap::new();
    for event in log {
        if let Event::TaskSucceeded { agent, .. } = event {
            *by_agent.entry(*agent).or_default() += 1;
        }
    }
    by_agent
}

fn declined_on(log: &[Event], agent: AgentId) -> usize {
    log.iter()
        .filter(|event| {
            matches!(event, Event::AttemptLost { agent: Some(a), declined: true, .. } if *a == agent)
        })
        .count()
}

fn replays_to(log: Vec<swarm_protocol::EventRecord>, view: &ObjectiveView) {
    let mut replay = Replay::keeping_finished();
    for record in log {
        replay.apply(record);
    }
    assert_eq!(&replay.objectives[&view.id].view(), view);
}

/// Agent `a` (4 slots) on an account of one request a minute, `b` (1 slot) on another account
/// without a quota. Eight tasks of one attempt each: `a`'s first call spends its account's
/// minute; the tasks it then receives are declined back to the queue (not held in its slots
/// for a minute each) and `b` runs all seven, well within the minute. `a` went down for its
/// account's quota meanwhile; no task used up its single attempt on a decline.
async fn tasks_flow_to_another_account_while_one_waits_for_quota(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let file = [
        account("small", provider, "rpm = 1"),
        account("spare", provider, ""),
        agent("a", "small", "sim:tokens=2", 4),
        agent("b", "spare", "sim:tokens=2", 1),
    ]
    .concat();
    let agents = register_file(&swarm, &file, sim.addr).await;
    let (a, b) = (agents[0], agents[1]);
    let started = Instant::now();
    let id = swarm.submit(writes(8)).await.unwrap();
    let view = swarm.wait(id, OBJECTIVE_PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let span = Instant::now() - started;
    assert!(
        span < MINUTE,
        "the tasks waited for `a`'s quota in its slots: {span:?}"
    );
    let log = recorded(&mut events);
    assert_eq!(
        succeeded_by_agent(&log),
        BTreeMap::from([(a, 1), (b, 7)]),
        "{log:#?}"
    );
    assert!(declined_on(&log, a) > 0, "{log:#?}");
    assert_eq!(sim.stats().total(), 8, "a declined attempt sends nothing");
    let down = log.iter().find_map(|event| match event {
        Event::AgentHealthChanged {
            agent,
            health: Health::Down,
            reason,
        } if *agent == a => Some(reason.clone()),
        _ => None,
    });
    let down = down.unwrap_or_else(|| panic!("`a` never went down: {log:#?}"));
    assert!(down.contains("account `small` out of quota"), "{down}");
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(tasks_flow_to_another_account_while_one_waits_for_quota);

/// One agent of 4 slots on an account of one request a minute, three tasks: the first spends
/// the minute, and then the agent holds none of the other two (its slots are free, they wait
/// as ready tasks in the queue) until the account's minute is over; the second runs then, the
/// third a minute later. The log, declines included, replays to the live view.
async fn a_saturated_account_holds_no_task_in_its_agents_slots(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let file = [
        account("key", provider, "rpm = 1"),
        agent("a", "key", "sim:tokens=2", 4),
    ]
    .concat();
    let a = register_file(&swarm, &file, sim.addr).await[0];
    let started = Instant::now();
    let id = swarm.submit(writes(3)).await.unwrap();
    seen_or_awaited(&mut events, "the first task", |e| {
        matches!(e, Event::TaskSucceeded { .. })
    })
    .await;
    seen_or_awaited(&mut events, "the agent down for its account's quota", |e| {
        matches!(e, Event::AgentHealthChanged { agent, health: Health::Down, .. } if *agent == a)
    })
    .await;
    // A second of paused time runs everything already under way (the clock moves only when
    // nothing else can run), and is far from the minute the quota needs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snapshot = swarm.registry().snapshot(a).unwrap();
    assert_eq!(
        (snapshot.health, snapshot.in_flight),
        (Health::Down, 0),
        "the agent holds tasks waiting for quota"
    );
    let waiting = swarm.objective(id).await.unwrap();
    let mut statuses: Vec<TaskStatus> = waiting.tasks.iter().map(|t| t.status).collect();
    statuses.sort_by_key(|status| format!("{status:?}"));
    assert_eq!(
        statuses,
        [TaskStatus::Ready, TaskStatus::Ready, TaskStatus::Succeeded],
        "{waiting:#?}"
    );
    assert_eq!(sim.stats().total(), 1);
    let view = swarm.wait(id, OBJECTIVE_PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let span = Instant::now() - started;
    assert!(
        span > 2 * MINUTE && span < 2 * MINUTE + Duration::from_secs(2),
        "{span:?}"
    );
    assert_eq!(sim.stats().total(), 3);
    events
        .until("the objective's end", |e| {
            matches!(e, Event::ObjectiveSucceeded { .. })
        })
        .await;
    let log = events.drain().to_vec();
    let events_only: Vec<Event> = log.iter().map(|r| r.event.clone()).collect();
    assert!(declined_on(&events_only, a) >= 2, "{events_only:#?}");
    replays_to(log, &view);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(a_saturated_account_holds_no_task_in_its_agents_slots);

/// Per 60-second window at the server: the busiest closed window `[t, t + 60 s]` over every
/// arrival `t` (requests, tokens), and the fixed minutes from `start` (requests, tokens each).
fn windows(served: &[Served], start: Instant) -> ((usize, u64), Vec<(usize, u64)>) {
    let mut served = served.to_vec();
    served.sort_by_key(|s| s.at);
    let busiest = (0..served.len()).fold((0, 0), |(requests, tokens), i| {
        let window = served[i..]
            .iter()
            .take_while(|s| s.at - served[i].at <= MINUTE);
        let (n, t) = window.fold((0, 0), |(n, t), s| (n + 1, t + s.tokens));
        (requests.max(n), tokens.max(t))
    });
    let mut minutes: Vec<(usize, u64)> = Vec::new();
    for s in &served {
        let minute = ((s.at - start).as_secs() / 60) as usize;
        if minutes.len() <= minute {
            minutes.resize(minute + 1, (0, 0));
        }
        minutes[minute].0 += 1;
        minutes[minute].1 += s.tokens;
    }
    (busiest, minutes)
}

/// The check: eight agents (4 slots each) on one account of 60 requests and 20,000
/// tokens a minute, and 150 calls of 400 output tokens each (estimated at their `max_tokens`
/// of 500 plus the prompt, corrected by the reported usage). Counted at the server, every
/// 60-second window holds at most 60 requests and 20,000 tokens, whichever agents made the
/// calls. The tokens are what binds (about 48 calls fit a minute): the busiest window holds
/// fewer than 60 requests and more than 16,000 tokens.
async fn eight_agents_keep_an_accounts_requests_and_tokens_in_every_window(provider: Provider) {
    let sim = sim().await;
    let (swarm, mut events) = start().await;
    let mut file = account("key", provider, "rpm = 60\ntpm = 20000");
    for i in 0..8 {
        file.push_str(&agent(&format!("a{i}"), "key", "sim:tokens=400", 4));
        file.push_str("max_tokens = 500\nstream = false\n");
    }
    let agents = register_file(&swarm, &file, sim.addr).await;
    let started = Instant::now();
    let id = swarm.submit(writes(150)).await.unwrap();
    let view = swarm.wait(id, OBJECTIVE_PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let served = sim.served();
    assert_eq!(served.len(), 150);
    let ((requests, tokens), minutes) = windows(&served, started);
    println!(
        "{provider:?}: busiest 60-s window at the server: {requests} requests, {tokens} tokens; \
         per minute from the start (requests, tokens): {minutes:?}"
    );
    assert!(tokens <= 20_000, "{tokens} tokens in a window");
    assert!(
        requests < 60,
        "the requests bound, not the tokens: {requests}"
    );
    assert!(tokens > 16_000, "the token quota was hardly used: {tokens}");
    for (requests, tokens) in &minutes {
        assert!(*requests <= 60 && *tokens <= 20_000, "{minutes:?}");
    }
    let log = recorded(&mut events);
    let by_agent = succeeded_by_agent(&log);
    assert!(
        by_agent.len() > 1,
        "only {by_agent:?} of {agents:?} ran tasks"
    );
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
both_formats!(eight_agents_keep_an_accounts_requests_and_tokens_in_every_window);
