//! `swarm run`: a durable batch run. It opens the event log (resuming every objective a
//! previous run left unfinished), registers the built-in agents, submits the objectives of a
//! JSON-lines file under their idempotency keys (so running the same file again, after a crash
//! or not, creates nothing twice), and waits for every objective to end.
//!
//! Each line of the file is either an objective, or `{"idempotency_key": "...", "objective":
//! {...}}`. What happens is printed one line at a time on standard output:
//! `accepted <key> <objective-id>` once a submission is durable, `resumed <objective-id>` for
//! one recovered from the log, and `finished <objective-id> <status>` as each ends.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use swarm_agents::{AgentFactory, EchoAgent, WorkAgent};
use swarm_protocol::{Capability, Objective, ObjectiveId, ObjectiveStatus};

use swarm_coordinator::{Error, Registration, StoreConfig, Swarm, SwarmConfig};

/// One line of a batch file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BatchLine {
    /// An objective under a client's idempotency key.
    Keyed {
        /// The key.
        idempotency_key: String,
        /// The objective.
        objective: Objective,
    },
    /// An objective alone (submitted again if the file is run again).
    Plain(Objective),
}

/// What `swarm run` does.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The event log.
    pub store: StoreConfig,
    /// The objectives to submit (none: only resume what the log holds).
    pub file: Option<PathBuf>,
    /// `work` agents to register (and as many `echo` agents).
    pub agents: usize,
    /// Each agent's concurrency limit.
    pub concurrency: u32,
    /// Where `work` agents append every attempt they begin.
    pub exec_log: Option<PathBuf>,
    /// Submissions in flight at once.
    pub parallel_submits: usize,
    /// Model agents to register too (`swarm.toml`).
    pub config: Option<swarm_coordinator::config::Config>,
}

/// How a batch run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Objectives that succeeded.
    pub succeeded: usize,
    /// Objectives that failed or were cancelled.
    pub failed: usize,
}

/// Reads a batch file, naming the line and the problem of any bad line.
pub fn read_batch(path: &Path) -> Result<Vec<(Option<String>, Objective)>, Error> {
    let file = |message: String| Error::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: BatchLine = serde_json::from_str(line).map_err(|e| {
            file(format!(
                "line {}: not an objective nor {{\"idempotency_key\", \"objective\"}}: {e}",
                i + 1
            ))
        })?;
        out.push(match parsed {
            BatchLine::Keyed {
                idempotency_key,
                objective,
            } => (Some(idempotency_key), objective),
            BatchLine::Plain(objective) => (None, objective),
        });
    }
    Ok(out)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the batch until every objective (submitted or resumed) has ended.
pub async fn run(config: BatchConfig) -> Result<BatchOutcome, Error> {
    let batch = match &config.file {
        Some(path) => read_batch(path)?,
        None => Vec::new(),
    };
    let swarm_config = SwarmConfig {
        call_timeout: Duration::from_secs(60),
        ..SwarmConfig::default()
    };
    let swarm = Swarm::open(swarm_config, config.store.clone()).await?;
    let resumed = swarm.resumed().to_vec();
    for id in &resumed {
        say(&format!("resumed {id}"));
    }

    let exec_log = match &config.exec_log {
        Some(path) => Some(Arc::new(open_append(path)?)),
        None => None,
    };
    let work = Capability::new("work")?;
    let echo = Capability::new("echo")?;
    for i in 0..config.agents.max(1) {
        let agent = match &exec_log {
            Some(log) => WorkAgent::with_exec_log(log.clone()),
            None => WorkAgent::new(),
        };
        swarm
            .register_agent(
                registration(format!("work-{i}"), &work, config.concurrency),
                AgentFactory::shared(agent),
            )
            .await?;
        swarm
            .register_agent(
                registration(format!("echo-{i}"), &echo, config.concurrency),
                AgentFactory::shared(EchoAgent),
            )
            .await?;
    }

    if let Some(config) = &config.config {
        let (_accounts, agents) = swarm_coordinator::model_agents::ModelAgents::build(config)?;
        for (registration, factory, _) in agents {
            swarm.register_agent(registration, factory).await?;
        }
    }

    let swarm = Arc::new(swarm);
    let submitted: Vec<Result<ObjectiveId, Error>> = futures::stream::iter(batch)
        .map(|(key, objective)| {
            let swarm = swarm.clone();
            async move {
                let id = swarm.submit_with_key(objective, key.clone()).await?;
                say(&format!("accepted {} {id}", key.as_deref().unwrap_or("-")));
                Ok(id)
            }
        })
        .buffered(config.parallel_submits.max(1))
        .collect()
        .await;
    let mut all: BTreeSet<ObjectiveId> = resumed.into_iter().collect();
    for result in submitted {
        all.insert(result?);
    }

    let mut outcome = BatchOutcome::default();
    let waiting = swarm.clone();
    let waits = futures::stream::iter(all)
        .map(move |id| {
            let swarm = waiting.clone();
            async move {
                (
                    id,
                    swarm.wait_summary(id, Duration::from_secs(86_400)).await,
                )
            }
        })
        .buffer_unordered(1024);
    let mut waits = Box::pin(waits);
    while let Some((id, summary)) = waits.next().await {
        let summary = summary?;
        let status = match summary.status {
            ObjectiveStatus::Succeeded => {
                outcome.succeeded += 1;
                "succeeded"
            }
            ObjectiveStatus::Failed => {
                outcome.failed += 1;
                "failed"
            }
            ObjectiveStatus::Cancelled => {
                outcome.failed += 1;
                "cancelled"
            }
            ObjectiveStatus::Running => "running",
            ObjectiveStatus::Compensating => "compensating",
        };
        say(&format!("finished {id} {status}"));
    }
    drop(waits);
    if let Ok(swarm) = Arc::try_unwrap(swarm) {
        swarm.shutdown().await?;
    }
    Ok(outcome)
}

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::File {
            path: path.to_owned(),
            message: format!("execution log: {e}"),
        })
}

fn registration(name: String, capability: &Capability, concurrency: u32) -> Registration {
    Registration {
        name,
        capabilities: vec![capability.clone()],
        max_concurrency: concurrency.max(1),
        labels: Default::default(),
        cost_hint: None,
        description: None,
    }
}
