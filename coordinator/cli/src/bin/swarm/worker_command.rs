//! `swarm worker`: hosts agents in this process for a swarm reached through NATS
//! (`protocol/REMOTE.md`), until Ctrl-C or SIGTERM, then drains.
//!
//! The agents are the same a `swarm serve` registers: built-in kinds (`--agent work`) and the
//! model agents of a `swarm.toml` (`[[agents]]`), built by the same code. Each is named
//! `{agent}@{worker}`, the worker's name being `--name` or the host name, so the same file
//! run on several machines gives each its own agents, and a worker that restarts under the
//! same name replaces its agents at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use swarm_coordinator::model_agents::ModelAgents;
use swarm_remote::{HostedAgent, Subjects, Worker, WorkerOptions};
use swarm_server::{BUILTIN_KINDS, builtin_agent};

use crate::local_commands::{load_config, nats_section};

/// The flags of `swarm worker`.
#[derive(clap::Args)]
pub(crate) struct WorkerArgs {
    /// The NATS server(s) the coordinator uses (`nats://host:4222`, comma-separated for a
    /// cluster) [default: the `[nats]` section of the configuration].
    #[arg(long, env = "SWARM_NATS_URL")]
    nats: Option<String>,
    /// The prefix of the swarm's subjects and streams [default: `[nats]`'s, else `swarm`].
    #[arg(long)]
    nats_prefix: Option<String>,
    /// A `swarm.toml` whose `[[agents]]` (model agents) are hosted and whose `[nats]` says
    /// how to reach NATS [default: ./swarm.toml, when it exists].
    #[arg(long, env = "SWARM_CONFIG")]
    config: Option<PathBuf>,
    /// A built-in agent to host (`work`, `echo` or `noop`; the capability is its kind). May
    /// be given several times.
    #[arg(long = "agent", value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(BUILTIN_KINDS))]
    agents: Vec<String>,
    /// The built-in agents' concurrency limit.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// This worker's name, the part after `@` in its agents' names [default: the host
    /// name]. Give each worker on one machine its own.
    #[arg(long)]
    name: Option<String>,
    /// At SIGINT/SIGTERM, how long running attempts may go on finishing (nothing new is
    /// taken); what does not finish runs again elsewhere.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    grace: Duration,
}

/// `swarm worker`: hosts the agents until Ctrl-C or SIGTERM, then drains within `--grace`.
/// Fails when NATS is not configured, an agent cannot be built, or the coordinator refuses
/// an agent.
pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let WorkerArgs {
        nats,
        nats_prefix,
        config,
        agents: kinds,
        concurrency,
        name,
        grace,
    } = args;
    let config = load_config(config)?;
    let Some(section) = nats_section(config.as_ref(), nats, nats_prefix)? else {
        anyhow::bail!(
            "no NATS server to reach the coordinator through: give --nats nats://host:4222 \
             (or SWARM_NATS_URL), or a [nats] section in swarm.toml"
        );
    };

    let options = WorkerOptions::for_this_process();
    let worker_name = name.unwrap_or_else(|| options.host.clone());
    let named = |agent: &str| format!("{agent}@{worker_name}");
    let mut hosted = Vec::new();
    for kind in &kinds {
        let Some((registration, factory)) = builtin_agent(kind, named(kind), concurrency)? else {
            anyhow::bail!(
                "--agent {kind}: not a built-in agent ({})",
                BUILTIN_KINDS.join(", ")
            );
        };
        hosted.push(HostedAgent::from_registration(registration, factory.make()));
    }
    if let Some(config) = &config {
        let (_accounts, built) = ModelAgents::build(config)?;
        for (mut registration, factory, _agent) in built {
            registration.name = named(&registration.name);
            hosted.push(HostedAgent::from_registration(registration, factory.make()));
        }
    }
    anyhow::ensure!(
        !hosted.is_empty(),
        "nothing to host: give --agent {} or a swarm.toml with [[agents]]",
        BUILTIN_KINDS.join("|")
    );
    let names: Vec<String> = hosted.iter().map(|a| a.name.clone()).collect();

    let url = swarm_remote::redact(&section.url);
    let client = swarm_remote::connect(&section, &format!("swarm worker {worker_name}")).await?;
    let worker = Worker::start(client, Subjects::new(&section.prefix), hosted, options).await?;
    eprintln!(
        "worker {worker_name}: hosting {} through {url} (prefix {}); announcing them",
        names.join(", "),
        section.prefix
    );
    let signal = swarm_server::shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        announced = worker.announced() => match announced {
            Ok(ids) => {
                for (name, id) in ids {
                    eprintln!("  {name}: accepted as {id}");
                }
            }
            Err(err) => {
                worker.shutdown(false).await;
                return Err(err).context("the coordinator refused an agent");
            }
        },
        () = &mut signal => {
            eprintln!("stopping before the coordinator answered");
            worker.shutdown(false).await;
            return Ok(());
        }
    }
    tokio::select! {
        () = worker.ended() => {
            eprintln!("every agent left the swarm (drained by the coordinator)");
            worker.shutdown(true).await;
        }
        () = &mut signal => {
            eprintln!("draining: finishing what runs (at most {grace:?}); nothing new is taken");
            if tokio::time::timeout(grace, worker.shutdown(true)).await.is_err() {
                eprintln!("attempts still running after {grace:?} are left to run again elsewhere");
            }
        }
    }
    Ok(())
}
