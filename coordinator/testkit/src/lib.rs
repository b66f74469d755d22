//! The swarm's test harness, shared by the integration tests of the engine
//! (`coordinator/tests/`), the server (`coordinator/server/tests/`, whose `tests/common/` adds
//! the served API and the browser) and the CLI (`coordinator/cli/tests/`):
//!
//! - names ([`cap`], [`key`], [`reg`]), a swarm in memory with its event stream ([`start`],
//!   [`Events`]) or on a data directory ([`open`]), registration in one call ([`register`]),
//!   and a clean end ([`finish`]);
//! - a real `nats-server` with JetStream on loopback ([`NatsServer`]).
//!
//! Nothing here sleeps to synchronise: every wait is for an event, an answer or a stream's end,
//! bounded by [`PATIENCE`]. Helpers panic on failure, as a test would.
#![allow(clippy::unwrap_used)]

mod nats;
pub use nats::NatsServer;

use std::path::Path;
use std::time::Duration;

use swarm_agents::AgentFactory;
use swarm_coordinator::journal::ChannelJournal;
use swarm_coordinator::{Registration, RestartPolicy, StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{AgentDescriptor, Capability, Event, EventRecord, TaskKey};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The capability `name` (panics if the name is not valid).
pub fn cap(name: &str) -> Capability {
    Capability::new(name).unwrap()
}

/// The task key `name` (panics if the name is not valid).
pub fn key(name: &str) -> TaskKey {
    TaskKey::new(name).unwrap()
}

/// The registration of an agent `name` of `caps` taking up to `max_concurrency` tasks at once.
pub fn reg(name: &str, caps: &[&str], max_concurrency: u32) -> Registration {
    Registration {
        name: name.to_owned(),
        capabilities: caps.iter().map(|c| cap(c)).collect(),
        max_concurrency,
        labels: Default::default(),
        cost_hint: None,
        description: None,
    }
}

/// The events a swarm records, awaited in order.
pub struct Events {
    rx: UnboundedReceiver<EventRecord>,
    /// Every event received so far, in order.
    pub seen: Vec<EventRecord>,
}

impl Events {
    /// Waits for the next event matching `pred` (keeping every event in `seen`).
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let record = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.seen))
                .unwrap_or_else(|| panic!("journal closed waiting for {what}"));
            self.seen.push(record.clone());
            if pred(&record.event) {
                return record.event;
            }
        }
    }

    /// Takes every event already recorded.
    pub fn drain(&mut self) -> &[EventRecord] {
        while let Ok(record) = self.rx.try_recv() {
            self.seen.push(record);
        }
        &self.seen
    }
}

/// A configuration whose agents restart fast (1 to 10 ms apart), up to `max_restarts` times
/// a minute, so a crash test does not wait.
pub fn fast_restarts(max_restarts: u32) -> SwarmConfig {
    SwarmConfig {
        restart: RestartPolicy {
            max_restarts,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
        },
        ..Default::default()
    }
}

/// Registers an agent `name` of `caps` taking up to `max_concurrency` tasks at once.
pub async fn register(
    swarm: &Swarm,
    name: &str,
    caps: &[&str],
    max_concurrency: u32,
    factory: AgentFactory,
) -> AgentDescriptor {
    swarm
        .register_agent(reg(name, caps, max_concurrency), factory)
        .await
        .unwrap()
}

/// A durable swarm on the data directory `dir` (a restart when one used it before), its
/// agents restarting fast (three times a minute).
pub async fn open(dir: &Path) -> Swarm {
    Swarm::open(fast_restarts(3), StoreConfig::new(dir))
        .await
        .unwrap()
}

/// A swarm with fast restarts (twice a minute), and its event stream.
pub async fn start() -> (Swarm, Events) {
    let config = fast_restarts(2);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let swarm = Swarm::start_with_journal(config, Box::new(ChannelJournal::new(tx)))
        .await
        .unwrap();
    (
        swarm,
        Events {
            rx,
            seen: Vec::new(),
        },
    )
}

/// Shuts the swarm down cleanly and checks that nothing had failed it (it was still running).
pub async fn finish(swarm: Swarm) {
    assert_eq!(swarm.failure(), None);
    assert!(swarm.is_running(), "the coordinator stopped on its own");
    swarm.shutdown().await.unwrap();
}

/// Runs a scenario (an `async fn(Provider)`) once per wire format, on the paused clock:
/// `<scenario>::openai` and `<scenario>::anthropic`.
#[macro_export]
macro_rules! both_formats {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(start_paused = true)]
            async fn openai() {
                super::$scenario(::swarm_agents::model::provider::Provider::Openai).await;
            }

            #[tokio::test(start_paused = true)]
            async fn anthropic() {
                super::$scenario(::swarm_agents::model::provider::Provider::Anthropic).await;
            }
        }
    };
}
