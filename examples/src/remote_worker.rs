//! How to run an agent in a process of its own, on any machine, for a swarm reached through
//! NATS: the same [`WordCount`] that [`crate::run`] plugs into a swarm in-process, hosted by a
//! [`Worker`] instead. The coordinator (`swarm serve --nats ...`) allocates `count` tasks to
//! it exactly as to a local agent.

use std::sync::Arc;

use swarm_coordinator::config::NatsSection;
use swarm_protocol::Capability;
use swarm_remote::{HostedAgent, Subjects, Worker, WorkerOptions};

use crate::WordCount;

/// The name the word counter is announced under.
pub const AGENT_NAME: &str = "word-count";

/// Connects to the NATS server at `url` and starts hosting [`WordCount`] (capability `count`,
/// four attempts at once) for the swarm whose subjects start with `prefix`. The worker
/// announces it at once, and again until a coordinator answers.
pub async fn start(url: &str, prefix: &str) -> anyhow::Result<Worker> {
    let nats = NatsSection {
        prefix: prefix.to_owned(),
        ..NatsSection::for_url(url)
    };
    let client = swarm_remote::connect(&nats, "word-count worker").await?;
    let agent = HostedAgent {
        name: AGENT_NAME.to_owned(),
        capabilities: vec![Capability::new("count")?],
        max_concurrency: 4,
        description: Some("Counts the words of its input or of its dependencies' outputs.".into()),
        labels: [("lang".to_owned(), "rust".to_owned())].into(),
        agent: Arc::new(WordCount),
    };
    let worker = Worker::start(
        client,
        Subjects::new(prefix),
        vec![agent],
        WorkerOptions::for_this_process(),
    )
    .await?;
    Ok(worker)
}
