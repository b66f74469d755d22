//! `swarm demo`: a goal in plain language, planned and run over the durable event log (SQLite
//! in the data directory) with model agents calling the simulated model server over real
//! HTTP, then printed as its chain of work read back from that log.
//!
//! A planner (a model agent with capability `plan`) breaks the goal down: its answer, prose
//! around a JSON code fence, lists research tasks, a draft whose output must match a JSON
//! Schema, and a review. Two model agents research (one speaks the OpenAI format and fails
//! every call, so its circuit breaker opens and its work moves to the other, which speaks
//! Anthropic's); the writer crashes once and is restarted by its supervisor, then drafts
//! without a title, so the draft stops in the review queue until the demo, acting as the
//! person on duty, approves it over the API with a title added; the reviewer then spawns a
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

use swarm_coordinator::config::Config;
use swarm_coordinator::{Registration, StoreConfig, Swarm, SwarmConfig};
use swarm_server::text::format_duration_precise;

use crate::Error;
use crate::client::Client;
use crate::timeline::timeline;

fn capability(name: &str) -> Result<Capability, Error> {
    Ok(Capability::new(name)?)
}

fn registration(name: &str, capability: &Capability, description: &str) -> Registration {
    Registration {
        name: name.to_owned(),
        capabilities: vec![capability.clone()],
        max_concurrency: 4,
        labels: Default::default(),
        cost_hint: None,
        description: Some(description.to_owned()),
    }
}

/// An output as one line of at most 100 characters.
fn clip(output: &serde_json::Value) -> String {
    let text = output.to_string().replace("\\n", " ");
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// How long the demo's objective may run before the demo gives up on it (it ends in a few
/// seconds on simulated models).
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The planner's model name on the simulated server.
const PLANNER_MODEL: &str = "sim-planner";

/// The demo's goal, in plain language.
const GOAL: &str = "Write a short note on agent swarms: a fact each about rust, actors, llms, \
                    queues, breakers and logs, drafted into a titled note, reviewed, published.";

/// The planner's answer: prose around a fenced plan, as models write them.
fn plan_answer() -> String {
    let topics = ["rust", "actors", "llms", "queues", "breakers", "logs"];
    let mut tasks: Vec<serde_json::Value> = topics
        .iter()
        .map(|topic| {
            json!({
                "id": format!("research-{topic}"),
                "capability": "research",
                "input": format!("One fact about {topic}, please."),
                "retry": {"max_attempts": 5, "initial_backoff": "20ms"},
            })
        })
        .collect();
    tasks.push(json!({
        "id": "write",
        "capability": "write",
        "depends_on": topics.iter().map(|t| format!("research-{t}")).collect::<Vec<_>>(),
        "output_schema": {
            "type": "object",
            "required": ["title", "draft"],
            "properties": {"title": {"type": "string", "minLength": 1}, "draft": {"type": "array"}},
        },
    }));
    tasks.push(json!({"id": "review", "capability": "review", "depends_on": ["write"]}));
    format!(
        "Here is a plan: six research tasks in parallel, a draft, then a review.\n\n```json\n{}\n```\n",
        serde_json::to_string(&json!({ "tasks": tasks })).unwrap_or_default()
    )
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

    let (write, review) = (capability("write")?, capability("review")?);
    let sim = SimServer::start(SimConfig {
        seed: 7,
        tokens: (8, 16),
        latency: Latency {
            first_token_ms: (5, 15),
            per_token_ms: (1, 3),
        },
        // What the planner model answers (a real one would write its own plan).
        replies: [(PLANNER_MODEL.to_owned(), json!(plan_answer()))].into(),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| Error::Run(format!("simulated model server: {e}")))?;
    println!("simulated model server on {}", sim.base_url());
    // The same declarations a swarm.toml holds.
    let agents = Config::parse(&format!(
        r#"
[[agents]]
name = "planner"
provider = "openai"
base_url = "{openai}"
model = "{PLANNER_MODEL}"
capabilities = ["plan"]
concurrency = 1
description = "Breaks a goal down into tasks."

[[agents]]
name = "researcher-flaky"
provider = "openai"
base_url = "{openai}"
model = "sim:fail=503"
capabilities = ["research"]
concurrency = 2
breaker = {{ consecutive_failures = 2, cool_down = "30s" }}
description = "Finds one fact about a topic."

[[agents]]
name = "researcher"
provider = "anthropic"
base_url = "{anthropic}"
model = "sim"
capabilities = ["research"]
concurrency = 2
rpm = 600
system_prompt = "You are a careful researcher."
description = "Finds one fact about a topic."
"#,
        openai = sim.base_url(),
        anthropic = sim.base_url(),
    ))
    .map_err(|e| Error::Run(format!("the demo's agent declarations: {e}")))?;
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
            // No title: the task's output schema requires one, so a person looks at it.
            let facts: Vec<_> = task.upstream.values().cloned().collect();
            TaskOutcome::success(json!({ "draft": facts }))
        }
    });
    swarm
        .register_agent(
            registration(
                "writer",
                &write,
                "Drafts a note from the facts it is given.",
            ),
            AgentFactory::shared(writer),
        )
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
            registration("reviewer", &review, "Reviews a draft and publishes it."),
            AgentFactory::shared(reviewer),
        )
        .await?;

    // No task graph: the planner makes one.
    let objective = Objective::with_tasks(GOAL, Vec::new());

    // Through the HTTP API, as a user would: submit, then follow its event stream live.
    let swarm = Arc::new(swarm);
    let api = swarm_server::LocalApi::start(swarm.clone()).await?;
    let addr = api.addr;
    println!("swarm API on http://{addr}/v1");
    println!("submitting (POST /v1/objectives): {}", objective.goal);
    let client = Client::new(&format!("http://{addr}"), None)?;
    let mut events = swarm
        .subscribe()
        .ok_or_else(|| Error::Run("the demo's swarm has no durable log".into()))?;
    let id = client.submit(&objective, None).await?;
    println!("accepted {id}; following GET /v1/objectives/{id}/events");
    // The person on duty: approves the draft that failed its schema, with a title added.
    let reviewer = Client::new(&format!("http://{addr}"), None)?;
    let on_duty = tokio::spawn(async move {
        while let Ok(record) = events.recv().await {
            if let swarm_protocol::Event::TaskInReview {
                objective,
                task,
                output,
                errors,
                ..
            } = &record.event
                && *objective == id
            {
                let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let mut edited = output.clone().unwrap_or_else(|| json!({}));
                if let Some(fields) = edited.as_object_mut() {
                    fields.insert("title".into(), json!("Agent swarms in six facts"));
                }
                eprintln!(
                    "\nreview: {task} does not match its schema ({}); approving it with a title \
                     (POST /v1/tasks/{task}/approve)",
                    problems.join("; ")
                );
                return reviewer
                    .approve(&task.to_string(), Some(edited))
                    .await
                    .map(|_| ());
            }
        }
        Ok(())
    });
    let watched = tokio::time::timeout(
        WATCH_TIMEOUT,
        client.watch(id, std::io::stderr().is_terminal()),
    )
    .await;
    on_duty.abort();
    watched.map_err(|_| Error::Timeout {
        what: format!("objective {id}"),
        after: WATCH_TIMEOUT,
    })??;
    let view = swarm.objective(id).await?;
    let chain = swarm.chain(id).await?;
    api.stop().await;
    match Arc::try_unwrap(swarm) {
        Ok(swarm) => swarm.shutdown().await?,
        Err(_) => return Err(Error::Run("the API still held the swarm".into())),
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
            format_duration_precise(t.run_time),
            t.output.as_ref().map(clip).unwrap_or_default()
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
        return Err(Error::Run(format!(
            "the demo objective ended {:?}",
            view.status
        )));
    }
    Ok(())
}
