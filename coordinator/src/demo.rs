//! `swarm demo`: a small objective run on in-process agents over the durable event log (SQLite
//! in the data directory), then printed as its chain of work read back from that log.
//!
//! It shows fan-out and fan-in with outputs flowing along the edges, an agent that crashes and
//! is restarted by its supervisor while its task is retried, and a task that spawns a
//! follow-up task while the objective runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use swarm_agents::{AgentFactory, FnAgent};
use swarm_protocol::{Capability, Objective, TaskKey, TaskOutcome, TaskSpec};

use crate::replay::{short, timeline};
use crate::{Error, Registration, StoreConfig, Swarm, SwarmConfig};

fn cap(name: &str) -> Result<Capability, Error> {
    Capability::new(name).map_err(|e| Error::Actor(e.to_string()))
}

fn key(name: &str) -> Result<TaskKey, Error> {
    TaskKey::new(name).map_err(|e| Error::Actor(e.to_string()))
}

fn registration(name: &str, capability: &Capability) -> Registration {
    Registration {
        name: name.to_owned(),
        capabilities: vec![capability.clone()],
        max_concurrency: 4,
        labels: Default::default(),
        cost_hint: None,
    }
}

/// Runs the demo with its event log in `data_dir` and prints what happened.
pub async fn run(data_dir: &Path) -> Result<(), Error> {
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(data_dir)).await?;
    if let Some(recovery) = swarm.recovery() {
        println!(
            "event log {}: {} events, {} unfinished objectives resumed",
            data_dir.join("events.db").display(),
            recovery.last_seq,
            recovery.objectives
        );
    }

    let (research, write, review) = (cap("research")?, cap("write")?, cap("review")?);
    let researcher = FnAgent::new(|task, ctx| async move {
        ctx.heartbeat();
        tokio::time::sleep(Duration::from_millis(20)).await;
        TaskOutcome::success(json!({ "fact": format!("a fact about {}", task.input) }))
    });
    swarm
        .register_agent(
            registration("researcher", &research),
            AgentFactory::shared(researcher),
        )
        .await?;
    // Crashes on its first task, once: its supervisor restarts it and the task is retried.
    let crashed = Arc::new(AtomicBool::new(false));
    let writer = FnAgent::new(move |task, _ctx| {
        let crashed = crashed.clone();
        async move {
            if !crashed.swap(true, Ordering::SeqCst) {
                panic!("the writer crashed (on purpose, once)");
            }
            let facts: Vec<_> = task.upstream.values().cloned().collect();
            TaskOutcome::success(json!({ "draft": facts }))
        }
    });
    swarm
        .register_agent(registration("writer", &write), AgentFactory::shared(writer))
        .await?;
    let reviewer = FnAgent::new(|task, _ctx| async move {
        if task.key.as_str() == "review" {
            let publish = TaskSpec::new(
                TaskKey::new("publish").unwrap_or_else(|_| task.key.clone()),
                task.capability.clone(),
            );
            TaskOutcome::Spawned {
                output: json!({ "approved": true }),
                tasks: vec![publish],
                usage: None,
            }
        } else {
            TaskOutcome::success(json!({ "published": true }))
        }
    });
    swarm
        .register_agent(
            registration("reviewer", &review),
            AgentFactory::shared(reviewer),
        )
        .await?;

    let mut tasks = Vec::new();
    for topic in ["rust", "actors", "llms"] {
        tasks.push(
            TaskSpec::new(key(&format!("research-{topic}"))?, research.clone())
                .with_input(json!(topic)),
        );
    }
    let research_keys: Vec<TaskKey> = tasks.iter().map(|t| t.id.clone()).collect();
    tasks.push(TaskSpec::new(key("write")?, write.clone()).after(research_keys));
    tasks.push(TaskSpec::new(key("review")?, review.clone()).after([key("write")?]));
    let objective = Objective::with_tasks("write a short note on agent swarms", tasks);

    println!("submitting: {}", objective.goal);
    let id = swarm.submit(objective).await?;
    let view = swarm.wait(id, Duration::from_secs(60)).await?;
    let chain = swarm.chain(id).await?;
    swarm.shutdown().await?;
    println!(
        "\nchain of work, read back from the event log ({} events):",
        chain.len()
    );
    print!("{}", timeline(&chain));
    println!("\nobjective {id} {:?}", view.status);
    for t in &view.tasks {
        println!(
            "  {:<16} {:<10} attempts={} run_time={} output={}",
            t.key.as_str(),
            format!("{:?}", t.status).to_lowercase(),
            t.attempts,
            short(t.run_time),
            t.output.as_ref().map(|o| o.to_string()).unwrap_or_default()
        );
    }
    println!(
        "\nrebuild it from the log alone: swarm replay {id} --data-dir {}",
        data_dir.display()
    );
    if view.status != swarm_protocol::ObjectiveStatus::Succeeded {
        return Err(Error::Actor(format!(
            "the demo objective ended {:?}",
            view.status
        )));
    }
    Ok(())
}
