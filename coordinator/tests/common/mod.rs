//! Helpers shared by the coordinator's integration tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use swarm_coordinator::journal::ChannelJournal;
use swarm_coordinator::{Registration, RestartPolicy, Swarm, SwarmConfig};
use swarm_protocol::{Capability, Event, EventRecord, TaskKey};
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a test waits for something that should happen quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn cap(name: &str) -> Capability {
    Capability::new(name).unwrap()
}

pub fn key(name: &str) -> TaskKey {
    TaskKey::new(name).unwrap()
}

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

/// A swarm with fast restarts, and its event stream.
pub async fn start() -> (Swarm, Events) {
    let config = SwarmConfig {
        restart: RestartPolicy {
            max_restarts: 2,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
        },
        ..Default::default()
    };
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

/// Shuts the swarm down cleanly and checks that it was still running (no actor failed it).
pub async fn finish(swarm: Swarm) {
    assert!(swarm.is_running(), "the coordinator stopped on its own");
    swarm.shutdown().await.unwrap();
}
