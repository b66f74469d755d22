//! The commands that talk to a running `swarm serve` over HTTP: submit and follow objectives,
//! list agents, review tasks, and manage schedules, events and hooks. Each prints the server's
//! answer as text.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use swarm_cli::client::{
    Client, objective_from, render, render_hooks, render_review_item, render_schedules,
    template_from,
};
use swarm_protocol::{CatchUpPolicy, ObjectiveId, OverlapPolicy, ScheduleSpec};

/// The commands that ask a running server.
#[derive(Subcommand)]
pub(crate) enum RemoteCommand {
    /// Submit an objective to a running `swarm serve`.
    Submit {
        /// The goal (it may be left out when the --graph file's objective has one; given in
        /// both places, they must agree).
        goal: Option<String>,
        /// A JSON file with the task graph: an objective (its `goal` may be left out), or a
        /// list of tasks. Without it, a planner agent (capability `plan`) decomposes the goal.
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
}

/// `swarm events ...`.
#[derive(Subcommand)]
pub(crate) enum EventAction {
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
pub(crate) enum ScheduleAction {
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
        /// The goal of the objective each slot submits (it may be left out when the --graph
        /// file's objective has one; given in both places, they must agree).
        #[arg(long)]
        goal: Option<String>,
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
pub(crate) enum HookAction {
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
pub(crate) enum Overlap {
    Skip,
    QueueOne,
    CancelPrevious,
}

/// Where the client commands find the server.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
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

/// Runs a command against the server its flags name.
pub(crate) async fn run(command: RemoteCommand) -> anyhow::Result<()> {
    match command {
        RemoteCommand::Submit {
            goal,
            graph,
            watch,
            key,
            server,
        } => {
            let client = server.client()?;
            let objective = objective_from(goal.as_deref(), graph.as_deref())?;
            let id = client.submit(&objective, key.as_deref()).await?;
            if !watch {
                println!("{id}");
                return Ok(());
            }
            eprintln!("submitted {id}");
            let view = client.watch(id, std::io::stderr().is_terminal()).await?;
            print!("{}", render(&view));
            if view.get("status").and_then(serde_json::Value::as_str) != Some("succeeded") {
                anyhow::bail!("objective {id} did not succeed");
            }
        }
        RemoteCommand::Status { objective, server } => {
            let view = server.client()?.objective(objective).await?;
            print!("{}", render(&view));
        }
        RemoteCommand::Agents { server } => {
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
                // A remote agent says where it runs and when its worker last heartbeated.
                let remote = agent.get("remote").map_or(String::new(), |r| {
                    let host = r.get("host").and_then(serde_json::Value::as_str);
                    let last = r
                        .get("last_heartbeat_unix_ms")
                        .and_then(serde_json::Value::as_u64);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    match (host, last) {
                        (Some(host), Some(last)) => format!(
                            " remote@{host} heartbeat={:.1}s_ago",
                            now.saturating_sub(last) as f64 / 1000.0
                        ),
                        _ => " remote".to_owned(),
                    }
                });
                println!(
                    "{:<6} {:<20} {:<9} in_flight={} restarts={} capabilities={}{breaker}{remote}",
                    text("id").unwrap_or_default(),
                    text("name").unwrap_or_default(),
                    text("health").unwrap_or_default(),
                    text("in_flight").unwrap_or_default(),
                    text("restarts").unwrap_or_default(),
                    text("capabilities").unwrap_or_default()
                );
            }
        }
        RemoteCommand::Tasks { review: _, server } => {
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
                print!("{}", render_review_item(&item));
            }
        }
        RemoteCommand::Approve {
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
        RemoteCommand::Reject {
            task,
            reason,
            server,
        } => {
            server.client()?.reject(&task, &reason).await?;
            println!("{task} rejected");
        }
        RemoteCommand::Schedules { action } => schedule_command(action).await?,
        RemoteCommand::Events { action } => event_command(action).await?,
        RemoteCommand::Hooks { action } => hook_command(action).await?,
    }
    Ok(())
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
    match action {
        ScheduleAction::List { server } => {
            let schedules = server.client()?.schedules().await?;
            print!("{}", render_schedules(&schedules));
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
            let template = objective_from(goal.as_deref(), graph.as_deref())?;
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
            print!("{}", render_schedules(&serde_json::json!([created])));
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
