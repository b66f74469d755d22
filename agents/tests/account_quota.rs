//! Model agents on a provider account whose quota is spent, over real HTTP on loopback against
//! the simulated model server, on tokio's paused clock (see `model_agent.rs` for why loopback
//! I/O works under it): a call that cannot have the quota now is declined at once, sending
//! nothing, and every agent on the account reports itself down until the quota frees.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use swarm_agents::clock::TokioClock;
use swarm_agents::model::account::Account;
use swarm_agents::model::breaker::BreakerConfig;
use swarm_agents::model::limiter::RateLimits;
use swarm_agents::model::provider::Provider;
use swarm_agents::model::{LlmAgent, ModelSpec};
use swarm_agents::sim::{SimConfig, SimServer};
use swarm_agents::{Agent, TaskContext};
use swarm_protocol::{
    Capability, FailureKind, Health, ObjectiveId, Task, TaskId, TaskKey, TaskOutcome,
};
use tokio::time::Instant;

fn task(id: u64, input: Value) -> Task {
    Task {
        id: TaskId(id),
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

async fn run(agent: &LlmAgent, task: Task) -> TaskOutcome {
    agent
        .run(task, TaskContext::new(std::time::Instant::now()))
        .await
}

/// Two agents on an account of one request a minute. The first agent's call spends the
/// minute; the second agent's call, made at once, is declined without reaching the server,
/// with the time until the quota frees as its `retry_after`; both agents' health feeds say
/// down ("out of quota"), and up again when the minute is over, when a call goes through.
#[tokio::test(start_paused = true)]
async fn a_call_without_quota_is_declined_and_the_accounts_agents_go_down_until_it_frees() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let account = Account::new(
        "key",
        RateLimits {
            requests_per_minute: NonZeroU32::new(1),
            tokens_per_minute: None,
        },
        BreakerConfig::default(),
        None,
        TokioClock::new(),
    );
    let spec = ModelSpec::new(Provider::Openai, sim.base_url(), "sim:tokens=2");
    let first = LlmAgent::on_account(spec.clone(), &account).unwrap();
    let second = LlmAgent::on_account(spec, &account).unwrap();
    let mut first_health = first.health().unwrap();
    let mut second_health = second.health().unwrap();
    let started = Instant::now();
    assert!(matches!(
        run(&first, task(1, json!("one"))).await,
        TaskOutcome::Succeeded { .. }
    ));
    let declined = run(&second, task(2, json!("two"))).await;
    let TaskOutcome::Failed {
        kind, retry_after, ..
    } = &declined
    else {
        panic!("{declined:?}");
    };
    assert_eq!(*kind, FailureKind::Declined, "{declined:?}");
    let wait = retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(59) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    assert_eq!(sim.stats().total(), 1, "a declined call sends nothing");
    assert!(account.cooling_until().is_some());
    for feed in [&mut first_health, &mut second_health] {
        feed.wait_for(|report| report.health == Health::Down)
            .await
            .unwrap();
        assert!(
            feed.borrow().reason.contains("account `key` out of quota"),
            "{:?}",
            feed.borrow()
        );
    }
    for feed in [&mut first_health, &mut second_health] {
        feed.wait_for(|report| report.health == Health::Up)
            .await
            .unwrap();
    }
    assert!(Instant::now() - started >= Duration::from_secs(60));
    assert_eq!(account.cooling_until(), None);
    assert!(matches!(
        run(&second, task(3, json!("three"))).await,
        TaskOutcome::Succeeded { .. }
    ));
    assert_eq!(sim.stats().total(), 2);
    sim.shutdown().await.unwrap();
}
