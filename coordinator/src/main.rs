//! The `swarm` command: parses the command line and calls into the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use swarm_coordinator::bench::{self, BenchConfig};

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
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a small objective on in-process agents and print its chain of work.
    Demo,
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
        Command::Bench {
            agents,
            capabilities,
            tasks,
            objective_size,
            concurrency,
            json,
        } => {
            let config = BenchConfig {
                agents,
                capabilities,
                tasks,
                objective_size,
                concurrency,
            };
            let report = runtime.block_on(bench::run(config))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "agents={} capabilities={} tasks={} elapsed={:.3}s\n\
                     tasks/s (allocated and completed): {:.0}\n\
                     allocation latency (ready -> agent): p50 {:.1} us, p99 {:.1} us\n\
                     peak RSS: {:.1} MiB",
                    report.agents,
                    report.capabilities,
                    report.tasks,
                    report.elapsed_s,
                    report.tasks_per_s,
                    report.alloc_p50_us,
                    report.alloc_p99_us,
                    report.peak_rss_bytes as f64 / (1024.0 * 1024.0)
                );
            }
        }
        Command::Demo => runtime.block_on(swarm_coordinator::demo::run())?,
    }
    Ok(())
}
