//! The commands that run in this process: a benchmark, a durable batch run, the HTTP server,
//! a replay of the event log, and the simulated model server. Each takes its flags as parsed
//! and prints what it reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use swarm_cli::batch::{self, BatchConfig};
use swarm_cli::bench::{self, BenchConfig};
use swarm_cli::timeline::timeline;
use swarm_coordinator::StoreConfig;
use swarm_coordinator::config::Config;
use swarm_coordinator::replay::replay_objective;
use swarm_protocol::ObjectiveId;
use swarm_server::text::format_duration_precise;

/// The flags of `swarm bench`.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
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
    /// Objectives in flight at once; the next is submitted as soon as one ends [default:
    /// enough for 4,096 tasks, at least 2].
    #[arg(long)]
    objectives_in_flight: Option<usize>,
    /// Each agent's concurrency limit.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Instead: offer tasks at this fixed rate (tasks/s, open loop, in memory), --tasks of
    /// them or for --duration, and report the latency from each task's scheduled send time
    /// to its agent (coordinated omission accounted for).
    #[arg(
        long,
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with_all = ["durable", "data_dir", "http_submits", "ui_pages", "objectives_in_flight"]
    )]
    rate: Option<u64>,
    /// With --rate: offer tasks for this long (e.g. `10s`) rather than --tasks of them.
    #[arg(long, value_parser = humantime::parse_duration, requires = "rate")]
    duration: Option<Duration>,
    /// With --rate: tasks per burst (one objective), sent every burst/rate seconds
    /// [default: a burst every 200 us].
    #[arg(long, requires = "rate")]
    burst: Option<u64>,
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
    /// Instead: a soak and overload run against a server in a child process (a durable log in
    /// a temporary directory, model agents on the simulated model server with --fault-rate
    /// faults, agents that crash): objectives over HTTP at --soak-rate per second for this
    /// long (e.g. `30m`), then --overload-factor times the sustainable rate for --overload.
    /// Fails when a target is missed (RSS drift after the warm-up above 10%, soak accept p99
    /// at or above 50 ms, an objective lost, a refusal without Retry-After).
    #[arg(
        long,
        value_parser = humantime::parse_duration,
        conflicts_with_all = ["rate", "durable", "data_dir", "http_submits", "ui_pages"]
    )]
    soak: Option<Duration>,
    /// With --soak: objectives offered per second during the soak (open loop).
    #[arg(
        long,
        default_value_t = 20,
        value_parser = clap::value_parser!(u64).range(1..),
        requires = "soak"
    )]
    soak_rate: u64,
    /// With --soak: how long the overload lasts.
    #[arg(
        long,
        value_parser = humantime::parse_duration,
        default_value = "60s",
        requires = "soak"
    )]
    overload: Duration,
    /// With --soak: the overload's rate, in multiples of the measured sustainable rate.
    #[arg(long, default_value_t = 10.0, requires = "soak")]
    overload_factor: f64,
    /// With --soak: the fraction (0 to 1) of model calls the simulated server fails.
    #[arg(long, default_value_t = 0.05, requires = "soak")]
    fault_rate: f64,
    /// The soak's server (run by --soak as a child process; its settings as JSON).
    #[arg(long, hide = true)]
    soak_server: Option<String>,
    /// Instead: the closed loop over this many remote no-op agents, each in a `swarm worker`
    /// process of its own, through NATS on loopback (a nats-server started for the run unless
    /// --nats names one); reports tasks/s and the time from a task becoming ready to the
    /// coordinator hearing its attempt started.
    #[arg(
        long,
        value_parser = clap::value_parser!(u64).range(1..),
        conflicts_with_all = ["rate", "durable", "data_dir", "http_submits", "ui_pages", "soak"]
    )]
    remote_workers: Option<u64>,
    /// With --remote-workers: the NATS server to use (its `swarm-bench.` subjects and streams
    /// are taken over) [default: a nats-server started for the run].
    #[arg(long, requires = "remote_workers")]
    nats: Option<String>,
    /// With --remote-workers: then the same with one Python worker process
    /// (workers/python/bench/noop_worker.py) instead, both lines side by side.
    #[arg(long, requires = "remote_workers")]
    remote_python: bool,
    /// With --remote-python: the Python interpreter (it must import `swarm_worker`, the
    /// package in workers/python).
    #[arg(long, default_value = "python3", requires = "remote_python")]
    python: PathBuf,
    /// With --remote-python: tasks to run through the Python worker [default: a tenth of
    /// --tasks].
    #[arg(long, requires = "remote_python")]
    python_tasks: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `swarm bench`: one of the benchmarks (allocation, durable, HTTP submits, dashboard pages),
/// printed as text or one JSON object.
pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        agents,
        capabilities,
        tasks,
        objective_size,
        objectives_in_flight,
        concurrency,
        rate,
        duration,
        burst,
        durable,
        data_dir,
        http_submits,
        connections,
        ui_pages,
        soak,
        soak_rate,
        overload,
        overload_factor,
        fault_rate,
        soak_server,
        remote_workers,
        nats,
        remote_python,
        python,
        python_tasks,
        json,
    } = args;
    if let Some(settings) = soak_server {
        let config = serde_json::from_str(&settings).context("the soak server's settings")?;
        return Ok(bench::soak::soak_server(config).await?);
    }
    if let Some(duration) = soak {
        anyhow::ensure!(
            (0.0..=1.0).contains(&fault_rate),
            "--fault-rate: {fault_rate} is not within 0..1"
        );
        anyhow::ensure!(
            overload_factor > 0.0,
            "--overload-factor: {overload_factor} is not above 0"
        );
        let program = std::env::current_exe().context("finding this program to run its server")?;
        let mut config = bench::soak::SoakConfig::new(program, duration);
        config.rate = soak_rate;
        config.overload = overload;
        config.overload_factor = overload_factor;
        config.fault_rate = fault_rate;
        let targets = config.targets;
        let report = bench::soak::soak(config).await?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", bench::soak::render(&report, &targets));
        }
        if !report.misses.is_empty() {
            anyhow::bail!("the soak missed {} targets", report.misses.len());
        }
        return Ok(());
    }
    if let Some(workers) = remote_workers {
        let config = bench::remote::RemoteConfig {
            program: std::env::current_exe().context("finding this program to run its workers")?,
            nats,
            workers: usize::try_from(workers)?,
            concurrency,
            tasks,
            objective_size,
            objectives_in_flight,
            python: remote_python.then(|| bench::remote::PythonWorker {
                interpreter: python,
                tasks: python_tasks.unwrap_or(tasks / 10).max(1),
            }),
        };
        let reports = bench::remote::remote(config).await?;
        if json {
            println!("{}", serde_json::to_string(&reports)?);
        } else {
            for r in &reports {
                println!(
                    "remote {} workers: {} processes x 1 no-op agent (concurrency {}) over NATS \
                     tasks={} attempts={} elapsed={:.3}s\n\
                     tasks/s (allocated and completed): {:.0}\n\
                     allocation to start (ready -> first progress or result at the coordinator): \
                     p50 {:.1} us, p99 {:.1} us",
                    r.workers,
                    r.processes,
                    r.concurrency,
                    r.tasks,
                    r.attempts,
                    r.elapsed_s,
                    r.tasks_per_s,
                    r.start_p50_us,
                    r.start_p99_us
                );
            }
        }
        return Ok(());
    }
    if let Some(requests) = ui_pages {
        let temp = tempfile::tempdir().context("making a temporary data directory")?;
        let report = bench::ui_pages(temp.path(), tasks, requests).await?;
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
        let report = bench::http_submits(temp.path(), submits, connections).await?;
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
    if let Some(rate) = rate {
        let tasks = duration.map_or(tasks, |d| (rate as f64 * d.as_secs_f64()) as u64);
        let config = bench::OpenLoopConfig {
            agents,
            capabilities,
            concurrency,
            rate,
            tasks,
            burst,
        };
        let report = bench::open_loop(config).await?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "agents={} capabilities={} tasks={} open loop: {:.0} tasks/s offered in \
                 bursts of {} elapsed={:.3}s\n\
                 tasks/s (reached an agent): {:.0}\n\
                 allocation latency (scheduled send -> agent): p50 {:.1} us, \
                 p90 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us\n\
                 sender behind schedule: at most {:.1} us (counted in the latency)\n\
                 peak RSS: {:.1} MiB, page faults while offering: {}",
                report.agents,
                report.capabilities,
                report.tasks,
                report.offered_per_s,
                report.burst,
                report.elapsed_s,
                report.tasks_per_s,
                report.p50_us,
                report.p90_us,
                report.p99_us,
                report.p999_us,
                report.max_us,
                report.send_lag_max_us,
                report.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                report.page_faults
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
        objectives_in_flight,
        concurrency,
        data_dir,
    };
    let report = bench::run(config).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "agents={} capabilities={} tasks={} durable={} objectives in flight={} \
             elapsed={:.3}s\n\
             tasks/s (allocated and completed): {:.0}\n\
             allocation latency (ready -> agent): p50 {:.1} us, p99 {:.1} us\n\
             peak RSS: {:.1} MiB, page faults during the run: {}",
            report.agents,
            report.capabilities,
            report.tasks,
            report.durable.is_some(),
            report.objectives_in_flight,
            report.elapsed_s,
            report.tasks_per_s,
            report.alloc_p50_us,
            report.alloc_p99_us,
            report.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            report.page_faults
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
    Ok(())
}

/// The flags of `swarm run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The data directory holding the event log.
    #[arg(long, env = "SWARM_DATA_DIR", default_value = "swarm-data")]
    data_dir: PathBuf,
    /// Objectives, one JSON per line: an objective, or {"idempotency_key", "objective"}.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Built-in `work` agents to register (and as many `echo` agents).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// A `swarm.toml` whose model agents are registered too [default: ./swarm.toml, when it
    /// exists].
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
}

/// `swarm run`: a durable batch run; fails when an objective did not succeed.
pub(crate) async fn run_batch(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        data_dir,
        file,
        agents,
        config,
        concurrency,
        exec_log,
        no_fsync,
        retention,
        snapshot_every,
    } = args;
    let config = load_config(config)?;
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
    let outcome = batch::run(config).await?;
    eprintln!(
        "{} objectives succeeded, {} failed or cancelled",
        outcome.succeeded, outcome.failed
    );
    if outcome.failed > 0 {
        anyhow::bail!("{} objectives did not succeed", outcome.failed);
    }
    Ok(())
}

/// The flags of `swarm serve`.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The data directory holding the event log (default: swarm.toml's, else swarm-data).
    #[arg(long, env = "SWARM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A `swarm.toml` [default: ./swarm.toml, when it exists]: its model agents are
    /// registered, its hooks served, its limits kept, and escalated reviews announced as its
    /// `[approvals]` says.
    #[arg(long, env = "SWARM_CONFIG")]
    config: Option<PathBuf>,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
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
    /// Let remote agents join through this NATS server (JetStream on), e.g.
    /// nats://127.0.0.1:4222; credentials and TLS go in swarm.toml's [nats] section, whose
    /// url this overrides. Without it (and without [nats]), agents are local only.
    #[arg(long, env = "SWARM_NATS_URL")]
    nats: Option<String>,
    /// The prefix of every NATS subject and stream, so two swarms can share one NATS server
    /// [default: swarm.toml's, else swarm].
    #[arg(long)]
    nats_prefix: Option<String>,
}

/// `swarm serve`: the HTTP API and the dashboard over a durable swarm, until Ctrl-C or SIGTERM.
pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        data_dir,
        config,
        addr,
        builtin_agents,
        concurrency,
        body_limit,
        grace,
        nats,
        nats_prefix,
    } = args;
    let config = load_config(config)?;
    let nats = nats_section(config.as_ref(), nats, nats_prefix)?;
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
        nats,
    };
    swarm_server::run(serve, swarm_server::shutdown_signal()).await?;
    Ok(())
}

/// The `[nats]` section in use: the file's, with `--nats` and `--nats-prefix` over it; none
/// when neither the file nor the flags name a server.
pub(crate) fn nats_section(
    config: Option<&Config>,
    url: Option<String>,
    prefix: Option<String>,
) -> anyhow::Result<Option<swarm_coordinator::config::NatsSection>> {
    let file = config.and_then(|c| c.nats.clone());
    let mut section = match (file, &url) {
        (Some(section), _) => section,
        (None, Some(url)) => swarm_coordinator::config::NatsSection::for_url(url.clone()),
        (None, None) if prefix.is_some() => {
            anyhow::bail!("--nats-prefix needs --nats (or a [nats] section in swarm.toml)")
        }
        (None, None) => return Ok(None),
    };
    if let Some(url) = url {
        section.url = url;
    }
    if let Some(prefix) = prefix {
        section.prefix = prefix;
    }
    section.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(section))
}

/// The configuration file `swarm serve` and `swarm run` read when no `--config` (nor
/// `SWARM_CONFIG`) names one, if it exists in the working directory.
const DEFAULT_CONFIG: &str = "swarm.toml";

/// The configuration: the file `--config` names, else `./swarm.toml` when it exists, else
/// none. Says on standard error which one it loaded, so a file that was (or was not) picked
/// up is never a surprise.
pub(crate) fn load_config(flag: Option<PathBuf>) -> anyhow::Result<Option<Config>> {
    let path = match flag {
        Some(path) => path,
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG);
            if !default.is_file() {
                eprintln!(
                    "configuration: none (no --config, and no {DEFAULT_CONFIG} in the working \
                     directory)"
                );
                return Ok(None);
            }
            default
        }
    };
    let config = Config::load(&path)?;
    eprintln!(
        "configuration: {} ({} model agents, {} hooks)",
        path.display(),
        config.agents.len(),
        config.hooks.len()
    );
    Ok(Some(config))
}

/// `swarm replay`: rebuilds one objective from the event log alone and prints its chain of
/// work and final state (or both as JSON).
pub(crate) async fn replay(
    objective: ObjectiveId,
    data_dir: PathBuf,
    json: bool,
) -> anyhow::Result<()> {
    // Reading only: a running coordinator may hold the data directory's lock.
    let mut options = swarm_store::SqliteOptions::new(data_dir);
    options.lock = false;
    let store = swarm_store::SqliteStore::open(options).await?;
    let Some((model, events)) = replay_objective(&store, objective).await? else {
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
            format_duration_precise(t.run_time),
            output
        );
    }
    Ok(())
}

/// The flags of `swarm sim-model`.
#[derive(clap::Args)]
pub(crate) struct SimModelArgs {
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
}

/// `swarm sim-model`: the simulated model API on 127.0.0.1, until Ctrl-C.
pub(crate) async fn sim_model(args: SimModelArgs) -> anyhow::Result<()> {
    let SimModelArgs {
        port,
        seed,
        error_rate,
        rate_limit,
        latency_ms,
        config,
    } = args;
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
    swarm_agents::sim::serve(config, port).await?;
    Ok(())
}
