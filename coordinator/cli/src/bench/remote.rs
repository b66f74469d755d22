//! `swarm bench --remote-workers`: the closed loop of [`super::run`] over remote agents, each in
//! a worker process of its own reached through NATS on loopback, to measure what the remote
//! protocol costs per task.
//!
//! One run starts everything it needs and stops it at the end: a `nats-server` (unless one is
//! given), the swarm in memory with a [`Host`] on it, and the worker processes (this program's
//! `swarm worker --agent noop`, and with [`PythonWorker`] one Python worker process hosting a
//! no-op agent, measured after the Rust ones). Each measurement has a swarm and a host of its
//! own, under the prefix [`PREFIX`], so a server shared with a real swarm is left alone.
//!
//! Allocation to start, for a remote attempt, runs from its task becoming ready to the
//! coordinator hearing of the attempt from its worker (its first progress or its result),
//! through the host's [`swarm_remote::StartedHook`].

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use swarm_coordinator::Swarm;
use swarm_coordinator::config::NatsSection;
use swarm_protocol::Capability;
use swarm_remote::Host;
use tokio::time::Instant;

use super::{TASKS_IN_FLIGHT, bench_swarm_config, closed_loop, new_histogram};
use crate::Error;

/// The subject prefix the benchmark's swarms use (their streams are purged at each start).
pub const PREFIX: &str = "swarm-bench";

/// The Python worker's program (`workers/python/bench/noop_worker.py`), run with `-c`: one
/// no-op agent of capability `noop`.
const PYTHON_NOOP_WORKER: &str = include_str!("../../../../workers/python/bench/noop_worker.py");

/// How long worker processes may take to announce their agents, and to drain at the end.
const PATIENCE: Duration = Duration::from_secs(60);

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The `swarm` program the Rust workers run (`swarm worker`).
    pub program: PathBuf,
    /// A NATS server to use; `None`: a `nats-server` started for the run.
    pub nats: Option<String>,
    /// Rust worker processes, each hosting one no-op agent.
    pub workers: usize,
    /// Each agent's concurrency limit (the attempts its worker runs at once).
    pub concurrency: u32,
    /// Tasks to run through the Rust workers.
    pub tasks: u64,
    /// Tasks per objective.
    pub objective_size: usize,
    /// Objectives in flight at once; `None`: enough for [`TASKS_IN_FLIGHT`] tasks, at least 2.
    pub objectives_in_flight: Option<usize>,
    /// Also measure one Python worker process.
    pub python: Option<PythonWorker>,
}

/// The Python side of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonWorker {
    /// The interpreter (it must import `swarm_worker`, the package in `workers/python`).
    pub interpreter: PathBuf,
    /// Tasks to run through it.
    pub tasks: u64,
}

/// What one measurement found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteReport {
    /// The workers' language: `rust` or `python`.
    pub workers: &'static str,
    /// Worker processes (one agent each).
    pub processes: usize,
    /// Each agent's concurrency limit.
    pub concurrency: u32,
    /// Tasks run (allocated and completed).
    pub tasks: u64,
    /// Attempts published to workers (more than `tasks` when some ran again).
    pub attempts: u64,
    /// Attempts the coordinator heard had started (each counted in the latencies).
    pub started: u64,
    /// Wall time from the first submit to the last objective's end.
    pub elapsed_s: f64,
    /// Tasks allocated and completed per second.
    pub tasks_per_s: f64,
    /// Median time from a task becoming ready to the coordinator hearing its attempt started,
    /// in microseconds.
    pub start_p50_us: f64,
    /// 99th percentile of the same.
    pub start_p99_us: f64,
}

/// Runs the Rust measurement, then the Python one if asked, on the current tokio runtime.
pub async fn remote(config: RemoteConfig) -> Result<Vec<RemoteReport>, Error> {
    let server;
    let url = match &config.nats {
        Some(url) => url.clone(),
        None => {
            server = NatsServer::start()?;
            server.url()
        }
    };
    let logs = tempfile::tempdir().map_err(|e| Error::Run(format!("a temporary dir: {e}")))?;
    let concurrency = config.concurrency.to_string();
    let rust = (0..config.workers)
        .map(|i| {
            let mut command = Command::new(&config.program);
            command.args(["worker", "--nats", &url, "--nats-prefix", PREFIX]);
            command.args(["--agent", "noop", "--concurrency", &concurrency]);
            command.args(["--name", &format!("bench-{i}")]);
            command
        })
        .collect();
    let mut reports = vec![measure(&url, "rust", rust, &config, config.tasks, logs.path()).await?];
    if let Some(python) = &config.python {
        let mut command = Command::new(&python.interpreter);
        command.args(["-c", PYTHON_NOOP_WORKER, &url, &concurrency, PREFIX]);
        reports.push(
            measure(
                &url,
                "python",
                vec![command],
                &config,
                python.tasks,
                logs.path(),
            )
            .await?,
        );
    }
    Ok(reports)
}

/// One measurement: a swarm and its host, the worker processes `commands` (one agent each),
/// the closed loop once all are registered, then everything stopped.
async fn measure(
    url: &str,
    workers: &'static str,
    commands: Vec<Command>,
    config: &RemoteConfig,
    tasks: u64,
    logs: &Path,
) -> Result<RemoteReport, Error> {
    let size = config.objective_size.max(1);
    let window = config
        .objectives_in_flight
        .unwrap_or_else(|| TASKS_IN_FLIGHT.div_ceil(size).max(2))
        .max(1);
    let swarm = Arc::new(Swarm::start(bench_swarm_config(2 * window)).await?);
    let mut section = NatsSection::for_url(url.to_owned());
    section.prefix = PREFIX.to_owned();
    let starts = Arc::new(Mutex::new(new_histogram()?));
    let hook: swarm_remote::StartedHook = {
        let starts = starts.clone();
        Arc::new(move |waited: Duration| {
            starts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .saturating_record(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).max(1));
        })
    };
    let host = Host::start_with(&swarm, &section, Some(hook))
        .await
        .map_err(|e| Error::Run(format!("the coordinator's side of NATS: {e}")))?;
    let processes = commands.len();
    let mut children = Workers::default();
    for (i, mut command) in commands.into_iter().enumerate() {
        let log = logs.join(format!("{workers}-{i}.log"));
        children.spawn(&mut command, log)?;
    }

    let measured = async {
        children.wait_registered(&host, processes).await?;
        let capability = Capability::new("noop").map_err(|e| Error::Run(e.to_string()))?;
        let (elapsed, _) = closed_loop(&swarm, &[capability], tasks, size, window).await?;
        Ok::<_, Error>(elapsed)
    }
    .await;
    let stopped = children.stop().await;
    let attempts = host.status().attempts;
    host.stop().await;
    let swarm = Arc::try_unwrap(swarm)
        .map_err(|_| Error::Run("the swarm is still held after the run".into()))?;
    swarm.shutdown().await?;
    let elapsed = measured?;
    stopped?;

    let starts = starts.lock().unwrap_or_else(PoisonError::into_inner);
    let us = |q: f64| starts.value_at_quantile(q) as f64 / 1_000.0;
    Ok(RemoteReport {
        workers,
        processes,
        concurrency: config.concurrency,
        tasks,
        attempts,
        started: starts.len(),
        elapsed_s: elapsed.as_secs_f64(),
        tasks_per_s: tasks as f64 / elapsed.as_secs_f64(),
        start_p50_us: us(0.50),
        start_p99_us: us(0.99),
    })
}

/// The worker processes of one measurement, killed if still running when dropped.
#[derive(Default)]
struct Workers {
    running: Vec<(Child, PathBuf)>,
}

impl Workers {
    fn spawn(&mut self, command: &mut Command, log: PathBuf) -> Result<(), Error> {
        let file = std::fs::File::create(&log).map_err(|e| Error::File {
            path: log.clone(),
            message: e.to_string(),
        })?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .map_err(|e| {
                Error::Run(format!(
                    "starting the worker {}: {e}",
                    command.get_program().to_string_lossy()
                ))
            })?;
        self.running.push((child, log));
        Ok(())
    }

    /// Waits until `agents` remote agents are registered; fails when a worker exits first.
    async fn wait_registered(&mut self, host: &Host, agents: usize) -> Result<(), Error> {
        let deadline = Instant::now() + PATIENCE;
        while host.status().agents < agents as u64 {
            for (child, log) in &mut self.running {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Run(format!(
                        "a worker exited ({status}) before its agent was registered; its log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Run(format!(
                    "{agents} remote agents were not registered within {PATIENCE:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Sends each worker SIGTERM (it drains and leaves) and waits for all to exit.
    async fn stop(&mut self) -> Result<(), Error> {
        for (child, _) in &self.running {
            // `kill -TERM`: the standard library only sends SIGKILL, and a drain needs SIGTERM.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + PATIENCE;
        let mut failed = Vec::new();
        for (mut child, log) in std::mem::take(&mut self.running) {
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            match status {
                Some(status) if status.success() => {}
                other => failed.push(format!(
                    "a worker ended {}; its log:\n{}",
                    other.map_or("killed after not draining in time".into(), |s| s
                        .to_string()),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Run(failed.join("\n")))
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (child, _) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `nats-server -js` on a free loopback port, its store in a temporary directory; killed and
/// removed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts it and returns once it accepts clients.
    fn start() -> Result<Self, Error> {
        let store = tempfile::tempdir().map_err(|e| Error::Run(format!("a temporary dir: {e}")))?;
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Run(format!(
                    "cannot start nats-server ({e}): install it (Debian: apt-get install \
                     nats-server), or give --nats nats://host:4222"
                ))
            })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::Run("nats-server's stderr is not piped".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log to its end, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut port = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                const LISTENING: &str = "Listening for client connections on ";
                if let Some(at) = line.find(LISTENING) {
                    port = line[at + LISTENING.len()..]
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok());
                }
                if line.contains("Server is ready") {
                    let _ = tx.send(port);
                }
            }
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(Some(port)) => Ok(Self {
                child,
                port,
                _store: store,
            }),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Run(format!(
                    "nats-server did not become ready within {PATIENCE:?} ({other:?})"
                )))
            }
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
