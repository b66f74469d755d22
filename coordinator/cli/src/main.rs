//! The `swarm` command: parses the command line and calls into the library.

// glibc malloc serialises threads on its arena locks under the API's load (a fifth of the CPU in
// a profile of `swarm bench --http-submits`); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use swarm_cli::batch::{self, BatchConfig};
use swarm_cli::bench::{self, BenchConfig};
use swarm_cli::client::Client;
use swarm_cli::timeline::timeline;
use swarm_coordinator::{StoreConfig, replay};
use swarm_protocol::ObjectiveId;
use swarm_server::text::format_duration_short;

#[derive(Parser)]
#[command(
    name = "swarm",
    version,
    about = "A coordinator for fleets of AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure allocation throughput with the real scheduler, registry and agent actors.
    Bench {
        /// Agents to register.
        #[arg(long, default_value_t = 64)]
        agents: usize,
        /// Distinct capabilities (agent i has capability i % C).
        #[arg(long, default_value_t = 8)]
        capabilities: usize,
        /// Tasks to run.
        #[arg(long, default_value_t = 1_000_000)]
        tasks: u64,
        /// Tasks per objective.
        #[arg(long, default_value_t = 1_000)]
        objective_size: usize,
        /// Each agent's concurrency limit.
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// Commit every state change to an event log (SQLite in a temporary directory, or in
        /// --data-dir) before acting on it, and measure restart time afterwards.
        #[arg(long)]
        durable: bool,
        /// With --durable: where the log goes (it must not hold one yet).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Instead: post this many one-task objectives to the HTTP API on loopback (a durable
        /// swarm in a temporary directory) and report submits/s and latency.
        #[arg(long)]
        http_submits: Option<u64>,
        /// With --http-submits: client connections (keep-alive, one request in flight each).
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Instead: put --tasks tasks on the dashboard's board (a durable swarm in a temporary
        /// directory; half of them done, half waiting or running) and time each page, this
        /// many requests per page.
        #[arg(long)]
        ui_pages: Option<usize>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a small objective on in-process agents, durably, and print its chain of work as
    /// read back from the event log.
    Demo {
        /// The data directory holding the event log.
        #[arg(long, env = "SWARM_DATA_DIR", default_value = "swarm-data")]
        data_dir: PathBuf,
    },
    /// Run a batch of objectives durably: resume what the log left unfinished, submit the
    /// file's objectives under their idempotency keys, and wait until all have ended.
    Run {
        /// The data directory holding the event log.
        #[arg(long, env = "SWARM_DATA_DIR", default_value = "swarm-data")]
        data_dir: PathBuf,
        /// Objectives, one JSON per line: an objective, or {"idempotency_key", "objective"}.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Built-in `work` agents to register (and as many `echo` agents).
        #[arg(long, default_value_t = 4)]
        agents: usize,
        /// A `swarm.toml` whose model agents are registered too.
        #[arg(long, env = "SWARM_CONFIG")]
        config: Option<PathBuf>,
        /// Each agent's concurrency limit.
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
        /// Append every attempt a `work` agent begins to this file (an execution audit kept
        /// outside the event log).
        #[arg(long)]
        exec_log: Option<PathBuf>,
        /// Commit without fsync: an acknowledged change survives a crash of the process but
        /// not a power loss.
        #[arg(long)]
        no_fsync: bool,
        /// Prune objectives that ended longer ago than this (e.g. `30d`); unfinished ones are
        /// never pruned. Without it the log keeps everything.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
        /// Snapshot the recovery state after this many events, so a restart reads the latest
        /// snapshot and the events after it rather than the whole log.
        #[arg(long, default_value_t = 200_000)]
        snapshot_every: u64,
    },
    /// Serve a simulated model API (OpenAI-compatible and Anthropic wire formats) on
    /// 127.0.0.1, for demos and tests without an API key.
    SimModel {
        /// The port.
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// Seed of the generated answers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fraction of requests answered with an error (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Requests per minute before answering 429 with Retry-After.
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Milliseconds before the first token, and between tokens.
        #[arg(long, num_args = 2, value_names = ["FIRST", "EACH"])]
        latency_ms: Option<Vec<u64>>,
        /// A JSON file with the full simulation settings (overrides the flags above).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve the HTTP API (routes under /v1) and the operator dashboard (at /) over a durable
    /// swarm until Ctrl-C or SIGTERM. With SWARM_API_TOKEN set, every API route but /healthz
    /// and /readyz needs `Authorization: Bearer <token>`, and the dashboard asks for the token
    /// once (keeping a session cookie).
    Serve {
        /// The data directory holding the event log (default: swarm.toml's, else swarm-data).
        #[arg(long, env = "SWARM_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A `swarm.toml` whose model agents are registered.
        #[arg(long, env = "SWARM_CONFIG")]
        config: Option<PathBuf>,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Built-in `work` agents to register (and as many `echo` agents).
        #[arg(long, default_value_t = 0)]
        builtin_agents: usize,
        /// The built-in agents' concurrency limit.
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
        /// The largest request body accepted, in bytes.
        #[arg(long, default_value_t = 1024 * 1024)]
        body_limit: usize,
        /// At SIGINT/SIGTERM, how long running attempts may go on finishing (nothing new
        /// starts); what does not finish resumes on the next start.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        grace: Duration,
    },
    /// Submit an objective to a running `swarm serve`.
    Submit {
        /// The goal.
        goal: String,
        /// A JSON file with the task graph: an objective, or a list of tasks. Without it, a
        /// planner agent (capability `plan`) decomposes the goal.
        #[arg(long)]
        graph: Option<PathBuf>,
        /// Follow it with a live progress view until it ends, then print the result.
        #[arg(long)]
        watch: bool,
        /// An idempotency key: submitting again with it returns the same objective.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show an objective's state.
    Status {
        /// The objective.
        objective: ObjectiveId,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the agents, their health and load.
    Agents {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tasks waiting for review or approval.
    Tasks {
        /// Only tasks in review (the one listing there is).
        #[arg(long, default_value_t = true)]
        review: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a task in review or an approval gate, optionally replacing its output (JSON).
    Approve {
        /// The task (`T42`).
        task: String,
        /// The output dependents receive instead.
        #[arg(long)]
        output: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a task in review or an approval gate: it and its objective fail.
    Reject {
        /// The task (`T42`).
        task: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage the cron schedules of a running `swarm serve`.
    Schedules {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Post events that `wait` tasks wait for, and list the ones kept.
    Events {
        #[command(subcommand)]
        action: EventAction,
    },
    /// Manage the webhooks of a running `swarm serve`.
    Hooks {
        #[command(subcommand)]
        action: HookAction,
    },
    /// Rebuild one objective from the event log alone and print its chain of work.
    Replay {
        /// The objective.
        objective: ObjectiveId,
        /// The data directory holding the event log.
        #[arg(long, env = "SWARM_DATA_DIR", default_value = "swarm-data")]
        data_dir: PathBuf,
        /// Print `{"objective": <final state>, "events": [...]}` as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `swarm events ...`.
#[derive(Subcommand)]
enum EventAction {
    /// Post an event: the first `wait` task waiting for KEY consumes it (the payload becomes
    /// its output); if none waits yet, it is kept until one starts or its time to live passes.
    Send {
        /// The event key the `wait` task names.
        key: String,
        /// The payload (JSON; quote a string).
        #[arg(long)]
        data: Option<String>,
        /// How long it is kept if no task consumes it (default 24h).
        #[arg(long)]
        ttl: Option<String>,
        /// Makes a retried send safe: a repeat with the same key returns the first event.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the events kept because no task consumed them yet.
    Pending {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `swarm schedules ...`.
#[derive(Subcommand)]
enum ScheduleAction {
    /// List the schedules with their next fire time and latest fire.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a schedule that submits an objective at each slot of a cron expression.
    Add {
        /// Its name (`A-Z a-z 0-9 _ - .`).
        name: String,
        /// A cron expression: five fields, or six with seconds first (`0 30 2 * * *`).
        cron: String,
        /// The goal of the objective each slot submits.
        #[arg(long)]
        goal: String,
        /// A JSON file with the task graph (as for `swarm submit`).
        #[arg(long)]
        graph: Option<PathBuf>,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// While the previous fire still runs: skip, queue-one or cancel-previous.
        #[arg(long, value_enum, default_value = "skip")]
        overlap: Overlap,
        /// Catch up the latest slot missed while the coordinator was down, if it is at most
        /// this old (e.g. `1h`); without it, missed slots are skipped.
        #[arg(long, value_parser = humantime::parse_duration)]
        catch_up_window: Option<Duration>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Pause a schedule: it fires nothing until resumed.
    Pause {
        /// The schedule.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a paused schedule from its next slot.
    Resume {
        /// The schedule.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a schedule (the objectives it submitted stay).
    Delete {
        /// The schedule.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `swarm hooks ...`.
#[derive(Subcommand)]
enum HookAction {
    /// List the hooks (from swarm.toml and declared through the API), with the variable each
    /// reads its secret from.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Declare a hook: `POST /v1/hooks/NAME` then takes deliveries signed with its secret.
    /// The server keeps it across restarts until it is deleted.
    Add {
        /// Its name (1 to 48 of `A-Z a-z 0-9 _ - .`).
        name: String,
        /// The environment variable of the *server's* process holding the secret (read by the
        /// server now and at every start; the secret never goes over the wire).
        #[arg(long)]
        secret_env: String,
        /// The objective each delivery submits, as JSON or a JSON file, with
        /// `{"$payload": "/json/pointer"}` where a part of the payload goes.
        #[arg(long)]
        template: String,
        /// How far a delivery's timestamp may be from the server's clock (default 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        tolerance: Option<Duration>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a hook declared through the API (its deliveries are refused from then on; the
    /// objectives it submitted stay).
    Delete {
        /// The hook.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `--overlap`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Overlap {
    Skip,
    QueueOne,
    CancelPrevious,
}

async fn event_command(action: EventAction) -> anyhow::Result<()> {
    match action {
        EventAction::Send {
            key,
            data,
            ttl,
            idempotency_key,
            server,
        } => {
            let payload = data
                .map(|text| {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .context("--data must be JSON (quote a string)")
                })
                .transpose()?
                .unwrap_or(serde_json::Value::Null);
            let mut body = serde_json::json!({ "key": key, "payload": payload });
            if let Some(ttl) = ttl {
                body["ttl"] = serde_json::Value::String(ttl);
            }
            let posted = server
                .client()?
                .post_event(&body, idempotency_key.as_deref())
                .await?;
            let id = posted["id"].as_str().unwrap_or("?");
            match posted.get("consumed_by") {
                Some(by) => println!(
                    "event {id} consumed by task {} of objective {}",
                    by["task"].as_str().unwrap_or("?"),
                    by["objective"].as_str().unwrap_or("?")
                ),
                None => println!("event {id} kept: no task waits for `{key}` yet"),
            }
        }
        EventAction::Pending { server } => {
            let events = server.client()?.pending_events().await?;
            let events = events.as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                println!("no event is kept");
            }
            for event in events {
                println!(
                    "{}  {}  expires {}",
                    event["id"].as_str().unwrap_or("?"),
                    event["key"].as_str().unwrap_or("?"),
                    swarm_server::text::utc(event["expires_at_ms"].as_u64())
                );
            }
        }
    }
    Ok(())
}

async fn schedule_command(action: ScheduleAction) -> anyhow::Result<()> {
    use swarm_protocol::{CatchUpPolicy, OverlapPolicy, ScheduleSpec};
    match action {
        ScheduleAction::List { server } => {
            let schedules = server.client()?.schedules().await?;
            print!("{}", swarm_cli::client::render_schedules(&schedules));
        }
        ScheduleAction::Add {
            name,
            cron,
            goal,
            graph,
            time_zone,
            overlap,
            catch_up_window,
            paused,
            server,
        } => {
            let template = swarm_cli::client::objective_from(&goal, graph.as_deref())?;
            let spec = ScheduleSpec {
                name,
                cron,
                time_zone,
                template,
                overlap: match overlap {
                    Overlap::Skip => OverlapPolicy::Skip,
                    Overlap::QueueOne => OverlapPolicy::QueueOne,
                    Overlap::CancelPrevious => OverlapPolicy::CancelPrevious,
                },
                catch_up: catch_up_window.map_or(CatchUpPolicy::Skip, |window| {
                    CatchUpPolicy::RunLatest { window }
                }),
                paused,
            };
            let created = server.client()?.create_schedule(&spec).await?;
            print!(
                "{}",
                swarm_cli::client::render_schedules(&serde_json::json!([created]))
            );
        }
        ScheduleAction::Pause { name, server } => {
            server.client()?.set_schedule_paused(&name, true).await?;
            println!("{name} paused");
        }
        ScheduleAction::Resume { name, server } => {
            server.client()?.set_schedule_paused(&name, false).await?;
            println!("{name} resumed");
        }
        ScheduleAction::Delete { name, server } => {
            server.client()?.delete_schedule(&name).await?;
            println!("{name} deleted");
        }
    }
    Ok(())
}

async fn hook_command(action: HookAction) -> anyhow::Result<()> {
    use swarm_cli::client::{render_hooks, template_from};
    match action {
        HookAction::List { server } => {
            let hooks = server.client()?.hooks().await?;
            print!("{}", render_hooks(&hooks));
        }
        HookAction::Add {
            name,
            secret_env,
            template,
            tolerance,
            server,
        } => {
            let hook = swarm_coordinator::config::HookConfig {
                name,
                secret_env,
                template: template_from(&template)?,
                tolerance,
            };
            let declared = server.client()?.declare_hook(&hook).await?;
            print!("{}", render_hooks(&serde_json::json!([declared])));
        }
        HookAction::Delete { name, server } => {
            server.client()?.delete_hook(&name).await?;
            println!("{name} deleted");
        }
    }
    Ok(())
}

async fn print_replay(objective: ObjectiveId, data_dir: PathBuf, json: bool) -> anyhow::Result<()> {
    // Reading only: a running coordinator may hold the data directory's lock.
    let mut options = swarm_store::SqliteOptions::new(data_dir);
    options.lock = false;
    let store = swarm_store::SqliteStore::open(options).await?;
    let Some((model, events)) = replay::replay_objective(&store, objective).await? else {
        anyhow::bail!("objective {objective} is not in the event log (never submitted, or pruned)");
    };
    let view = model.view();
    if json {
        let out = serde_json::json!({ "objective": view, "events": events });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("objective {} ({:?}): {:?}", view.id, view.goal, view.status);
    if let Some(failure) = &view.failure {
        println!("  failure: {failure}");
    }
    println!("\nchain of work ({} events):", events.len());
    print!("{}", timeline(&events));
    println!("\nfinal state:");
    for t in &view.tasks {
        let output = t
            .output
            .as_ref()
            .map(|o| o.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<6} {:<16} {:<10} attempts={} agent={} run_time={} output={}",
            t.id.to_string(),
            t.key.as_str(),
            format!("{:?}", t.status).to_lowercase(),
            t.attempts,
            t.agent.map_or("-".to_string(), |a| a.to_string()),
            format_duration_short(t.run_time),
            output
        );
    }
    Ok(())
}

/// Where the client commands find the server.
#[derive(clap::Args)]
struct ServerArgs {
    /// The server's address.
    #[arg(long, env = "SWARM_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
}

impl ServerArgs {
    fn client(&self) -> anyhow::Result<Client> {
        // The token comes from the environment only, so it never shows in `ps` or history.
        let token = std::env::var("SWARM_API_TOKEN").ok();
        Ok(Client::new(&self.server, token)?)
    }
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Submit {
            goal,
            graph,
            watch,
            key,
            server,
        } => {
            let client = server.client()?;
            let objective = swarm_cli::client::objective_from(&goal, graph.as_deref())?;
            let id = client.submit(&objective, key.as_deref()).await?;
            if !watch {
                println!("{id}");
                return Ok(());
            }
            eprintln!("submitted {id}");
            let view = client.watch(id, std::io::stderr().is_terminal()).await?;
            print!("{}", swarm_cli::client::render(&view));
            if view.get("status").and_then(serde_json::Value::as_str) != Some("succeeded") {
                anyhow::bail!("objective {id} did not succeed");
            }
        }
        Command::Status { objective, server } => {
            let view = server.client()?.objective(objective).await?;
            print!("{}", swarm_cli::client::render(&view));
        }
        Command::Agents { server } => {
            let agents = server.client()?.agents().await?;
            for agent in agents.as_array().into_iter().flatten() {
                let text = |k: &str| {
                    agent.get(k).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                };
                // A model agent also shows its breaker (and when it probes next, if open).
                let breaker = agent.get("breaker").map_or(String::new(), |b| {
                    let state = b.get("state").and_then(serde_json::Value::as_str);
                    match (
                        state,
                        b.get("probe_in_ms").and_then(serde_json::Value::as_u64),
                    ) {
                        (Some(state), Some(ms)) => format!(" breaker={state} probe_in={ms}ms"),
                        (Some(state), None) => format!(" breaker={state}"),
                        _ => String::new(),
                    }
                });
                println!(
                    "{:<6} {:<20} {:<9} in_flight={} restarts={} capabilities={}{breaker}",
                    text("id").unwrap_or_default(),
                    text("name").unwrap_or_default(),
                    text("health").unwrap_or_default(),
                    text("in_flight").unwrap_or_default(),
                    text("restarts").unwrap_or_default(),
                    text("capabilities").unwrap_or_default()
                );
            }
        }
        Command::Tasks { review: _, server } => {
            let queue = server.client()?.review_queue(500).await?;
            let items = queue["tasks"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("no task is waiting for review");
            }
            let total = queue["total"].as_u64().unwrap_or(0);
            if total > items.len() as u64 {
                println!(
                    "{total} tasks wait for review; the first {} follow",
                    items.len()
                );
            }
            for item in items {
                print!("{}", swarm_cli::client::render_review_item(&item));
            }
        }
        Command::Approve {
            task,
            output,
            server,
        } => {
            let output = output
                .map(|text| {
                    serde_json::from_str(&text).context("--output must be JSON (quote a string)")
                })
                .transpose()?;
            server.client()?.approve(&task, output).await?;
            println!("{task} approved");
        }
        Command::Reject {
            task,
            reason,
            server,
        } => {
            server.client()?.reject(&task, &reason).await?;
            println!("{task} rejected");
        }
        _ => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // An agent plug-in that panics is a crash its supervisor handles (restart, retry); report it
    // as one log line rather than a backtrace on the terminal.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic caught; the supervision tree handles it");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        command @ (Command::Submit { .. }
        | Command::Status { .. }
        | Command::Agents { .. }
        | Command::Tasks { .. }
        | Command::Approve { .. }
        | Command::Reject { .. }) => runtime.block_on(client_command(command))?,
        Command::Schedules { action } => runtime.block_on(schedule_command(action))?,
        Command::Events { action } => runtime.block_on(event_command(action))?,
        Command::Hooks { action } => runtime.block_on(hook_command(action))?,
        Command::Bench {
            agents,
            capabilities,
            tasks,
            objective_size,
            concurrency,
            durable,
            data_dir,
            http_submits,
            connections,
            ui_pages,
            json,
        } => {
            if let Some(requests) = ui_pages {
                let temp = tempfile::tempdir().context("making a temporary data directory")?;
                let report = runtime.block_on(bench::ui_pages(temp.path(), tasks, requests))?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "dashboard pages with {} tasks on the board, {} requests each:",
                        report.tasks, report.requests
                    );
                    for page in &report.pages {
                        println!(
                            "  {:<52} {:>8} bytes  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
                            page.path, page.bytes, page.p50_ms, page.p99_ms, page.max_ms
                        );
                    }
                }
                return Ok(());
            }
            if let Some(submits) = http_submits {
                let temp = tempfile::tempdir().context("making a temporary data directory")?;
                let report =
                    runtime.block_on(bench::http_submits(temp.path(), submits, connections))?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "HTTP submits: {} over {} keep-alive connections in {:.3}s\n\
                         durable submits/s: {:.0}\n\
                         latency: p50 {:.0} us, p99 {:.0} us",
                        report.submits,
                        report.connections,
                        report.elapsed_s,
                        report.submits_per_s,
                        report.p50_us,
                        report.p99_us
                    );
                }
                return Ok(());
            }
            let temp;
            let data_dir = match (durable, data_dir) {
                (false, _) => None,
                (true, Some(dir)) => Some(dir),
                (true, None) => {
                    temp = tempfile::tempdir().context("making a temporary data directory")?;
                    Some(temp.path().to_path_buf())
                }
            };
            let config = BenchConfig {
                agents,
                capabilities,
                tasks,
                objective_size,
                concurrency,
                data_dir,
            };
            let report = runtime.block_on(bench::run(config))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "agents={} capabilities={} tasks={} durable={} elapsed={:.3}s\n\
                     tasks/s (allocated and completed): {:.0}\n\
                     allocation latency (ready -> agent): p50 {:.1} us, p99 {:.1} us\n\
                     peak RSS: {:.1} MiB",
                    report.agents,
                    report.capabilities,
                    report.tasks,
                    report.durable.is_some(),
                    report.elapsed_s,
                    report.tasks_per_s,
                    report.alloc_p50_us,
                    report.alloc_p99_us,
                    report.peak_rss_bytes as f64 / (1024.0 * 1024.0)
                );
                if let Some(d) = report.durable {
                    println!(
                        "event log: {} events, {:.0} events/s committed\n\
                         restart (snapshot at {} + {} events): {:.0} ms\n\
                         restart from the full log ({} events, no snapshot): {:.0} ms",
                        d.events,
                        d.events as f64 / report.elapsed_s,
                        d.snapshot_seq,
                        d.tail_events,
                        d.restart_ms,
                        d.events,
                        d.full_replay_ms
                    );
                }
            }
        }
        Command::Demo { data_dir } => runtime.block_on(swarm_cli::demo::run(&data_dir))?,
        Command::Run {
            data_dir,
            file,
            agents,
            concurrency,
            exec_log,
            no_fsync,
            retention,
            snapshot_every,
            config,
        } => {
            let config = config
                .map(|path| swarm_coordinator::config::Config::load(&path))
                .transpose()?;
            let mut store = StoreConfig::new(data_dir);
            store.fsync = !no_fsync;
            store.writer.retention = retention;
            store.writer.snapshot_every = snapshot_every.max(1);
            let config = BatchConfig {
                store,
                file,
                agents,
                concurrency,
                exec_log,
                parallel_submits: 64,
                config,
            };
            let outcome = runtime.block_on(batch::run(config))?;
            eprintln!(
                "{} objectives succeeded, {} failed or cancelled",
                outcome.succeeded, outcome.failed
            );
            if outcome.failed > 0 {
                anyhow::bail!("{} objectives did not succeed", outcome.failed);
            }
        }
        Command::Serve {
            data_dir,
            config,
            addr,
            builtin_agents,
            concurrency,
            body_limit,
            grace,
        } => {
            let config = config
                .map(|path| swarm_coordinator::config::Config::load(&path))
                .transpose()?;
            let section = config.as_ref().map(|c| c.store.clone()).unwrap_or_default();
            let mut store = StoreConfig::new(data_dir.unwrap_or(section.data_dir));
            store.fsync = section.fsync;
            store.writer.retention = section.retention;
            // Read once; never logged.
            let token = match std::env::var("SWARM_API_TOKEN") {
                Ok(token) if token.trim().is_empty() => {
                    anyhow::bail!("SWARM_API_TOKEN is set but empty")
                }
                Ok(token) => Some(token),
                Err(_) => None,
            };
            let serve = swarm_server::ServeConfig {
                store,
                config,
                builtin_agents,
                concurrency,
                addr,
                grace,
                api: swarm_server::ApiConfig {
                    token,
                    body_limit_bytes: body_limit,
                    ..Default::default()
                },
            };
            runtime.block_on(swarm_server::run(serve, swarm_server::shutdown_signal()))?;
        }
        Command::Replay {
            objective,
            data_dir,
            json,
        } => runtime.block_on(print_replay(objective, data_dir, json))?,
        Command::SimModel {
            port,
            seed,
            error_rate,
            rate_limit,
            latency_ms,
            config,
        } => {
            let config = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a simulation config", path.display()))?
                }
                None => {
                    let mut config = swarm_agents::sim::SimConfig {
                        seed,
                        error_rate,
                        rate_limit,
                        ..Default::default()
                    };
                    if let Some([first, each]) = latency_ms.as_deref() {
                        config.latency = swarm_agents::sim::Latency::fixed(*first, *each);
                    }
                    config
                }
            };
            eprintln!("simulated model API on http://127.0.0.1:{port}/v1 (Ctrl-C stops it)");
            runtime.block_on(swarm_agents::sim::serve(config, port))?;
        }
    }
    Ok(())
}
