//! The `swarm` command: parses the command line and hands each command to the module that
//! runs it, `local_commands` (a swarm, its event log or a simulated model in this process),
//! `remote_commands` (requests to a running `swarm serve`) or `worker_command` (agents hosted
//! for a swarm reached through NATS), or to the library (`swarm demo`).

// glibc malloc serialises threads on its arena locks under the API's load (a fifth of the CPU in
// a profile of `swarm bench --http-submits`); mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod local_commands;
mod remote_commands;
mod worker_command;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use swarm_protocol::ObjectiveId;

use crate::local_commands::{BenchArgs, RunArgs, ServeArgs, SimModelArgs};
use crate::remote_commands::RemoteCommand;
use crate::worker_command::WorkerArgs;

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
    Bench(BenchArgs),
    /// Run a small objective on in-process agents, durably, and print its chain of work as
    /// read back from the event log.
    Demo {
        /// The data directory holding the event log.
        #[arg(long, env = "SWARM_DATA_DIR", default_value = "swarm-data")]
        data_dir: PathBuf,
    },
    /// Run a batch of objectives durably: resume what the log left unfinished, submit the
    /// file's objectives under their idempotency keys, and wait until all have ended.
    Run(RunArgs),
    /// Serve a simulated model API (OpenAI-compatible and Anthropic wire formats) on
    /// 127.0.0.1, for demos and tests without an API key.
    SimModel(SimModelArgs),
    /// Serve the HTTP API (routes under /v1) and the operator dashboard (at /) over a durable
    /// swarm until Ctrl-C or SIGTERM. With SWARM_API_TOKEN set, every API route but /healthz
    /// and /readyz needs `Authorization: Bearer <token>`, and the dashboard asks for the token
    /// once (keeping a session cookie).
    Serve(ServeArgs),
    /// Host agents (built-in kinds, and the [[agents]] of a swarm.toml) for a swarm reached
    /// through NATS, in this process, until Ctrl-C or SIGTERM; then finish what runs and leave.
    Worker(WorkerArgs),
    // `submit`, `status`, `agents`, `tasks`, `approve`, `reject`, `schedules`, `events` and
    // `hooks`: requests to a running `swarm serve`.
    #[command(flatten)]
    Remote(RemoteCommand),
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
    let telemetry =
        swarm_cli::telemetry::Telemetry::install().context("starting the trace exporter")?;
    // An agent plug-in that panics is a crash its supervisor handles (restart, retry); report it
    // as one log line rather than a backtrace on the terminal.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic caught; the supervision tree handles it");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(dispatch(cli.command));
    // Once the swarm has stopped (its last spans ended with it), outside the runtime: the
    // exporter's thread sends what is queued.
    telemetry.shutdown();
    result
}

/// Runs one command.
async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => local_commands::bench(args).await,
        Command::Demo { data_dir } => Ok(swarm_cli::demo::run(&data_dir).await?),
        Command::Run(args) => local_commands::run_batch(args).await,
        Command::SimModel(args) => local_commands::sim_model(args).await,
        Command::Serve(args) => local_commands::serve(args).await,
        Command::Worker(args) => worker_command::worker(args).await,
        Command::Remote(command) => remote_commands::run(command).await,
        Command::Replay {
            objective,
            data_dir,
            json,
        } => local_commands::replay(objective, data_dir, json).await,
    }
}
