//! `swarm demo`: a small objective run over the durable event log (SQLite in the data
//! directory) with model agents calling the simulated model server over real HTTP, then
//! printed as its chain of work read back from that log.
//!
//! Two model agents research (one speaks the OpenAI format and fails every call, so its
//! circuit breaker opens and its work moves to the other, which speaks Anthropic's); a writer
//! crashes once and is restarted by its supervisor;
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

use swarm_agents::model::breaker::BreakerState;
use swarm_agents::sim::{Endpoint, Latency, SimConfig, SimServer};

use std::io::IsTerminal as _;

use crate::client::Client;
use crate::config::Config;
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
        description: None,
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
    let sim = SimServer::start(SimConfig {
        seed: 7,
        tokens: (8, 16),
        latency: Latency {
            first_token_ms: (5, 15),
            per_token_ms: (1, 3),
        },
        ..SimConfig::default()
    })
    .await
    .map_err(|e| Error::Actor(format!("simulated model server: {e}")))?;
    println!("simulated model server on {}", sim.base_url());
    // The same declarations a swarm.toml holds.
    let agents = Config::parse(&format!(
        r#"
[[agents]]
name = "researcher-flaky"
provider = "openai"
base_url = "{openai}"
model = "sim:fail=503"
capabilities = ["research"]
concurrency = 2
breaker = {{ consecutive_failures = 2, cool_down = "30s" }}

[[agents]]
name = "researcher"
provider = "anthropic"
base_url = "{anthropic}"
model = "sim"
capabilities = ["research"]
concurrency = 2
rpm = 600
system_prompt = "You are a careful researcher."
"#,
        openai = sim.base_url(),
        anthropic = sim.base_url(),
    ))
    .map_err(Error::Input)?;
    let mut models = Vec::new();
    for agent in &agents.agents {
        let (registration, factory, model) = agent.build()?;
        swarm.register_agent(registration, factory).await?;
        models.push((agent.name.clone(), model));
    }
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
    for topic in ["rust", "actors", "llms", "queues", "breakers", "logs"] {
        let mut spec = TaskSpec::new(key(&format!("research-{topic}"))?, research.clone())
            .with_input(json!(format!("One fact about {topic}, please.")));
        spec.retry.max_attempts = 5;
        spec.retry.initial_backoff = Duration::from_millis(20);
        tasks.push(spec);
    }
    let research_keys: Vec<TaskKey> = tasks.iter().map(|t| t.id.clone()).collect();
    tasks.push(TaskSpec::new(key("write")?, write.clone()).after(research_keys));
    tasks.push(TaskSpec::new(key("review")?, review.clone()).after([key("write")?]));
    let objective = Objective::with_tasks("write a short note on agent swarms", tasks);

    // Through the HTTP API, as a user would: submit, then follow its event stream live.
    let swarm = Arc::new(swarm);
    let api = crate::http::LocalApi::start(swarm.clone()).await?;
    let addr = api.addr;
    println!("swarm API on http://{addr}/v1");
    println!("submitting (POST /v1/objectives): {}", objective.goal);
    let client = Client::new(&format!("http://{addr}"), None)?;
    let id = client.submit(&objective, None).await?;
    println!("accepted {id}; following GET /v1/objectives/{id}/events");
    tokio::time::timeout(
        Duration::from_secs(60),
        client.watch(id, std::io::stderr().is_terminal()),
    )
    .await
    .map_err(|_| Error::Input(format!("objective {id} did not end within 60 s")))??;
    let view = swarm.objective(id).await?;
    let chain = swarm.chain(id).await?;
    api.stop().await;
    match Arc::try_unwrap(swarm) {
        Ok(swarm) => swarm.shutdown().await?,
        Err(_) => return Err(Error::Actor("the API still held the swarm".into())),
    }
    let stats = sim.stats();
    let _ = sim.shutdown().await;
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
    println!("\nmodel agents:");
    for (name, model) in &models {
        let limiter = model.limiter().stats();
        let breaker = match model.breaker().state() {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open { .. } => "open",
        };
        println!(
            "  {name:<18} breaker {breaker}, {} requests granted by its limiter",
            limiter.requests_granted
        );
    }
    println!(
        "  simulated server answered {} requests ({} with 503)",
        stats.total(),
        stats.count_status(Endpoint::ChatCompletions, 503)
    );
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
