//! `swarm bench --soak <duration>`: a soak and an overload run against a real server.
//!
//! The server is a child process (this binary, `swarm bench --soak-server`): a durable swarm
//! on a SQLite log in a temporary directory behind the HTTP API, as `swarm serve` runs it, with
//! model agents calling the simulated model server (which runs here, in the parent, and fails
//! `--fault-rate` of the calls with a 500) and agents that crash on purpose (a panic, which the
//! supervision tree restarts). Being a process of its own, its resident memory is read from
//! `/proc/<pid>/status` without the load generator's in it.
//!
//! The run, in phases:
//! 1. **Soak**: objectives (a model call, then a check by a crashing agent) posted over HTTP on
//!    loopback at a fixed rate, open loop: each is sent when the schedule says, whatever the
//!    answers before it did, and its accept latency runs from that scheduled time to its 202
//!    (so a client held up by a slow answer is charged to the server). The first
//!    [`SoakConfig::warmup_fraction`] of it is warm-up; the RSS drift is measured after it.
//! 2. **Calibration**: once the soak's objectives ended, a batch is posted as fast as it is
//!    taken and the time until all of it ended gives the sustainable rate (objectives ended
//!    per second while the swarm always had work).
//! 3. **Overload**: [`SoakConfig::overload_factor`] times that rate, open loop. Admission
//!    control (`backlog_max`) must refuse what the swarm cannot take, with 429 and
//!    `Retry-After`, and memory must stay bounded by the backlog.
//! 4. **Drain**: every accepted objective must end; the event log's listing
//!    (`GET /v1/objectives`) is read back and each 202's objective looked up in it. One that is
//!    missing or unfinished is lost.
//!
//! [`verdict`] names every target missed; the command fails when it names any.

use std::collections::HashMap;
use std::process::Stdio;

use serde::Deserialize;
use swarm_agents::sim::{Latency, SimConfig, SimServer};
use tokio::sync::watch;

use super::*;

/// The capability of the model calls.
const ASK: &str = "ask";
/// The capability of the agents that crash.
const CHECK: &str = "check";
/// How long the calibration's batch and the drain may take before the run gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the drain and the calibration read `/metrics`.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What a soak run does.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakConfig {
    /// The program that serves (this binary: it is run as `<program> bench --soak-server`).
    pub server_program: PathBuf,
    /// How long the soak offers objectives.
    pub soak: Duration,
    /// Objectives offered per second during the soak.
    pub rate: u64,
    /// How long the overload offers objectives.
    pub overload: Duration,
    /// The overload's rate, in multiples of the sustainable rate.
    pub overload_factor: f64,
    /// The fraction (0..1) of model calls the simulated server fails with a 500.
    pub fault_rate: f64,
    /// The fraction of the soak that is warm-up, left out of the RSS drift. Half by default:
    /// at 20 objectives/s the server's heap reaches its working size only after about ten
    /// minutes (a step of some 7 MiB, the allocator's footprint catching up with the
    /// occasional burst), and at three times the rate it gets there in the first 20 s and
    /// stays flat. A drift measured from before that step reads the step as growth; one
    /// measured over the second half still shows a leak, which grows all the way.
    pub warmup_fraction: f64,
    /// The server's admission bound (`[server] backlog_max`).
    pub backlog_max: u64,
    /// Model agents, and each one's concurrency.
    pub model_agents: usize,
    /// Each model agent's concurrency limit.
    pub model_concurrency: u32,
    /// Agents that crash, each at most once per `crash_every`.
    pub crash_agents: usize,
    /// The least time between two crashes of one agent (the default restart policy allows 3
    /// restarts a minute before it leaves an agent down).
    pub crash_every: Duration,
    /// How often the server's RSS is read.
    pub sample_every: Duration,
    /// Keep-alive connections the load generator posts over.
    pub connections: usize,
    /// The targets the verdict checks.
    pub targets: Targets,
}

impl SoakConfig {
    /// The defaults of `swarm bench --soak`: 20 objectives/s with 5% model faults, then 60 s
    /// at 10 times the sustainable rate.
    pub fn new(server_program: PathBuf, soak: Duration) -> Self {
        Self {
            server_program,
            soak,
            rate: 20,
            overload: Duration::from_secs(60),
            overload_factor: 10.0,
            fault_rate: 0.05,
            warmup_fraction: 0.5,
            backlog_max: 4_000,
            model_agents: 4,
            model_concurrency: 4,
            crash_agents: 2,
            crash_every: Duration::from_secs(30),
            sample_every: Duration::from_secs(1),
            connections: 64,
            targets: Targets::default(),
        }
    }

    /// How long the warm-up lasts.
    pub fn warmup(&self) -> Duration {
        self.soak.mul_f64(self.warmup_fraction.clamp(0.0, 1.0))
    }

    /// Finished objectives the server keeps in memory: as many as end in half the warm-up
    /// (at least 100, at most 10,000, `swarm serve`'s default), so the memory that holds them
    /// is at its full size before the drift is measured, and a short soak measures a leak
    /// rather than that cache filling.
    pub fn keep_finished(&self) -> usize {
        let half_warmup = self.warmup().as_secs_f64() / 2.0;
        ((self.rate as f64 * half_warmup) as usize).clamp(100, 10_000)
    }

    /// The calibration's batch: a quarter of the backlog bound (an objective counts once
    /// running and once per queued task), so the batch itself is not refused.
    pub fn calibration_batch(&self) -> u64 {
        (self.backlog_max / 4).max(10)
    }
}

/// What the verdict holds a run to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    /// The most the RSS may grow from the end of the warm-up to the end of the soak (0.1:
    /// 10%).
    pub rss_drift_max: f64,
    /// The soak's 99th percentile accept latency must be below this.
    pub accept_p99_max: Duration,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            rss_drift_max: 0.10,
            accept_p99_max: Duration::from_millis(50),
        }
    }
}

/// Runs the soak: the phases of the module docs. The report's `misses` is the verdict.
pub async fn soak(config: SoakConfig) -> Result<SoakReport, Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::Run(format!("a temporary directory: {e}")))?;
    let sim = SimServer::start(SimConfig {
        seed: 1,
        tokens: (4, 16),
        latency: Latency {
            first_token_ms: (10, 50),
            per_token_ms: (0, 1),
        },
        error_rate: config.fault_rate.clamp(0.0, 1.0),
        error_status: 500,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| Error::Run(format!("simulated model server: {e}")))?;
    let config_file = dir.path().join("swarm.toml");
    std::fs::write(&config_file, server_toml(&config, &sim.base_url())).map_err(|e| {
        Error::File {
            path: config_file.clone(),
            message: e.to_string(),
        }
    })?;
    let server = SoakServerConfig {
        data_dir: dir.path().join("data"),
        config_file,
        crash_agents: config.crash_agents,
        crash_every_ms: u64::try_from(config.crash_every.as_millis()).unwrap_or(u64::MAX),
        keep_finished: config.keep_finished(),
    };
    let child = Child::start(&config, &server, dir.path()).await?;
    let addr = child.addr;
    let body = objective_body();
    let mut control = Connection::new(addr);
    let started = Instant::now();
    let (phase, phases) = watch::channel(Phase::Soak);
    let sampler = sample_rss(child.process.id(), started, config.sample_every, phases);

    // 1. The soak.
    let soak_count = (config.rate as f64 * config.soak.as_secs_f64()).round() as u64;
    let soak = offer(addr, &body, config.rate, soak_count, config.connections).await?;
    let soak_end_s = started.elapsed().as_secs_f64();

    // 2. Calibration, once the soak's objectives ended.
    phase.send_replace(Phase::Calibration);
    let idle = poll_metrics(&mut control, DRAIN_TIMEOUT, "the soak's objectives", |t| {
        running(t) == 0.0
    })
    .await?;
    let ended_before = metric(&idle, "swarm_objectives_ended_total").unwrap_or(0.0);
    let batch = config.calibration_batch();
    let calibration_started = Instant::now();
    let calibration = offer(addr, &body, u64::MAX / 4, batch, config.connections).await?;
    let accepted = calibration.accepted_ids.len() as f64;
    poll_metrics(
        &mut control,
        DRAIN_TIMEOUT,
        "the calibration's batch",
        |t| metric(t, "swarm_objectives_ended_total").unwrap_or(0.0) >= ended_before + accepted,
    )
    .await?;
    let sustainable_per_s = accepted / calibration_started.elapsed().as_secs_f64();

    // 3. The overload, with the backlog read meanwhile.
    phase.send_replace(Phase::Overload);
    let overload_rate = ((sustainable_per_s * config.overload_factor).round() as u64).max(1);
    let overload_count = (overload_rate as f64 * config.overload.as_secs_f64()).round() as u64;
    let watching = {
        let mut connection = Connection::new(addr);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Ok(text) = connection.metrics().await {
                    peak = peak.max(backlog(&text));
                }
                tokio::select! {
                    _ = &mut stopped => return peak,
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        });
        (stop, task)
    };
    let overload = offer(
        addr,
        &body,
        overload_rate,
        overload_count,
        config.connections,
    )
    .await?;
    let _ = watching.0.send(());
    let backlog_peak = watching
        .1
        .await
        .map_err(|e| Error::Run(format!("the backlog watch: {e}")))?;

    // 4. The drain, then every accepted objective looked up in the log.
    phase.send_replace(Phase::Drain);
    let drained = poll_metrics(
        &mut control,
        DRAIN_TIMEOUT,
        "the accepted objectives",
        |t| running(t) == 0.0,
    )
    .await;
    let listed = list_objectives(&mut control).await?;
    let metrics_text = control.metrics().await?;
    drop(phase);
    let rss_samples = sampler
        .await
        .map_err(|e| Error::Run(format!("the RSS sampler: {e}")))?;
    drop(control);
    child.stop().await?;
    // A drain that timed out shows up as lost objectives below; the listing says which.
    if let Err(err) = drained {
        tracing::warn!(%err, "not every accepted objective ended");
    }

    let accepted: Vec<String> = [&soak, &calibration, &overload]
        .into_iter()
        .flat_map(|t| t.accepted_ids.iter().cloned())
        .collect();
    let stats = sim.stats();
    let warmup_s = config.warmup().as_secs_f64();
    let mut report = SoakReport {
        soak: PhaseReport::of(&soak, config.soak, config.rate),
        warmup_s,
        fault_rate: config.fault_rate,
        model_calls: stats.total(),
        model_faults: stats
            .requests
            .values()
            .flat_map(|by_status| by_status.iter())
            .filter(|(status, _)| **status >= 400)
            .map(|(_, n)| n)
            .sum(),
        agent_restarts: metric(&metrics_text, "swarm_agent_restarts_total").unwrap_or(0.0) as u64,
        drift: rss_drift(&rss_samples, warmup_s, soak_end_s),
        soak_rss_peak_bytes: rss_peak(&rss_samples, Phase::Soak),
        calibration_batch: batch,
        sustainable_per_s,
        overload: PhaseReport::of(&overload, config.overload, overload_rate),
        overload_rss_peak_bytes: rss_peak(&rss_samples, Phase::Overload)
            .max(rss_peak(&rss_samples, Phase::Drain)),
        backlog_max: config.backlog_max,
        backlog_peak,
        endings: endings(&accepted, &listed),
        rss_samples,
        misses: Vec::new(),
    };
    report.misses = verdict(&report, &config.targets);
    Ok(report)
}

/// Reads `/metrics` until `done` holds of it; returns that text, or fails after `timeout`.
async fn poll_metrics(
    connection: &mut Connection,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&str) -> bool,
) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = connection.metrics().await?;
        if done(&text) {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn running(text: &str) -> f64 {
    metric(text, "swarm_objectives_running").unwrap_or(f64::MAX)
}

fn backlog(text: &str) -> u64 {
    let queued = metric(text, "swarm_tasks_queued").unwrap_or(0.0);
    (metric(text, "swarm_objectives_running").unwrap_or(0.0) + queued) as u64
}

/// Every objective of the log's listing, by id.
async fn list_objectives(
    connection: &mut Connection,
) -> Result<HashMap<String, ObjectiveStatus>, Error> {
    #[derive(Deserialize)]
    struct Listed {
        id: String,
        status: ObjectiveStatus,
    }
    #[derive(Deserialize)]
    struct Page {
        objectives: Vec<Listed>,
        next: Option<String>,
    }
    let mut all = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/objectives?limit=500&after={id}"),
            None => "/v1/objectives?limit=500".to_owned(),
        };
        let body = connection.get(&path).await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| Error::Remote(format!("GET {path}: not a listing: {e}")))?;
        for listed in page.objectives {
            all.insert(listed.id, listed.status);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// The child server and what it needs to be stopped and read.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Child {
    /// Starts the server and reads the address it prints. Should the run end early, dropping
    /// the child closes its stdin, which stops it.
    async fn start(
        config: &SoakConfig,
        server: &SoakServerConfig,
        dir: &Path,
    ) -> Result<Self, Error> {
        let stderr_path = dir.join("server.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| Error::File {
            path: stderr_path.clone(),
            message: e.to_string(),
        })?;
        let arg = serde_json::to_string(server)
            .map_err(|e| Error::Run(format!("the server's settings: {e}")))?;
        let mut process = std::process::Command::new(&config.server_program)
            .args(["bench", "--soak-server", &arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| {
                Error::Run(format!("starting {}: {e}", config.server_program.display()))
            })?;
        let stdout = process
            .stdout
            .take()
            .ok_or_else(|| Error::Run("the server's stdout is not piped".into()))?;
        // The first line, read on a blocking thread; the server exits (ending it) on an error.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line).await;
        let addr = match line {
            Ok(Ok(Ok(line))) => line.trim().parse::<SocketAddr>().ok(),
            _ => None,
        };
        let Some(addr) = addr else {
            // Stuck or failed before serving: it will not stop on its own.
            let _ = process.kill();
            let _ = process.wait();
            return Err(Error::Run(format!(
                "the server did not print its address; its log:\n{}",
                tail(&stderr_path)
            )));
        };
        Ok(Self {
            process,
            addr,
            stderr_path,
        })
    }

    /// Closes its stdin, which stops it, and waits for it to exit cleanly.
    async fn stop(mut self) -> Result<(), Error> {
        drop(self.process.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match self.process.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL_EVERY).await,
                Ok(None) => {
                    let _ = self.process.kill();
                    let _ = self.process.wait();
                    return Err(Error::Run("the server did not stop within 60 s".into()));
                }
                Err(e) => return Err(Error::Run(format!("waiting for the server: {e}"))),
            }
        };
        if !status.success() {
            return Err(Error::Run(format!(
                "the server exited with {status}; its log:\n{}",
                tail(&self.stderr_path)
            )));
        }
        Ok(())
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Reads the child's RSS every `every`, labelled with the phase `phase` says, until `phase`'s
/// sender is dropped.
fn sample_rss(
    child_pid: u32,
    started: Instant,
    every: Duration,
    mut phase: watch::Receiver<Phase>,
) -> tokio::task::JoinHandle<Vec<RssSample>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = phase.changed() => if changed.is_err() { break },
                _ = tick.tick() => {
                    let status = std::fs::read_to_string(format!("/proc/{child_pid}/status"));
                    if let Some(rss_bytes) = status.ok().as_deref().and_then(parse_vm_rss) {
                        samples.push(RssSample {
                            at_s: started.elapsed().as_secs_f64(),
                            rss_bytes,
                            phase: *phase.borrow(),
                        });
                    }
                }
            }
        }
        samples
    })
}

/// The `swarm.toml` of the soak's server: its model agents on the simulated server, no
/// per-client quota (one load generator is one client, and a quota would refuse the overload
/// before the backlog fills, leaving admission control, the server's defence, untried) and
/// the backlog bound.
fn server_toml(config: &SoakConfig, sim_base_url: &str) -> String {
    let mut toml = format!(
        "[server]\nclient_requests_per_second = 0\nbacklog_max = {}\n",
        config.backlog_max
    );
    for i in 0..config.model_agents {
        toml.push_str(&format!(
            "\n[[agents]]\nname = \"model-{i}\"\nprovider = \"openai\"\nbase_url = \"{sim_base_url}\"\n\
             model = \"sim\"\ncapabilities = [\"{ASK}\"]\nconcurrency = {}\n",
            config.model_concurrency.max(1)
        ));
    }
    toml
}

mod figures;
mod load;
mod server;

use super::conn::Connection;
pub use figures::{
    Drift, Endings, Phase, PhaseReport, RssSample, SoakReport, endings, metric, parse_vm_rss,
    render, rss_drift, rss_peak, verdict,
};
pub use load::{Answer, Tally, classify};
use load::{objective_body, offer};
pub use server::{SoakServerConfig, soak_server};

#[cfg(test)]
mod tests;
