//! The allocation benchmark behind `swarm bench`: the real scheduler, registry and agent actors,
//! in-process, with agents that do nothing but note how long each task took to reach them.
//!
//! Two shapes of load. The closed loop ([`run`]) measures throughput: objectives are generated
//! as they are submitted and a bounded number of them is in flight, the next submitted as one
//! ends, so there is always work ready for every agent. The open loop ([`open_loop`]) measures
//! latency: tasks are offered on a fixed schedule, whatever the swarm does, and each one's
//! latency runs from when the schedule meant it to be sent (so a sender that fell behind is
//! charged to the swarm's account, as it would be to a real client's, rather than omitted).
//!
//! Both keep their working set bounded and recycled: finished objectives are dropped from
//! memory (`SchedulerConfig::forget_finished_in_memory`) and none is built before it is needed.
//! A run therefore touches a few tens of megabytes, reused, rather than memory in proportion to
//! the tasks run. This is what makes a figure repeatable: fresh memory costs a page fault per
//! page, and on a virtual machine whose idle memory the host reclaims (a virtio balloon with
//! free page reporting), each such fault after a pause is also a fault on the host, which
//! made one run of a million tasks three times slower than the next.
//!
//! [`remote::remote`] runs the closed loop over remote agents in worker processes, through NATS.
//!
//! [`soak`] is of another kind: a soak and an overload run against a server in a child process,
//! with model faults and crashing agents, checked against targets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::{StreamExt as _, TryStreamExt as _};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use serde::Serialize;
use serde_json::Value;
use swarm_agents::{Agent, AgentFactory, TaskContext};
use swarm_protocol::{
    Capability, Objective, ObjectiveStatus, Task, TaskKey, TaskOutcome, TaskQuery, TaskSpec,
};

use swarm_coordinator::replay::{Replay, fold_after};
use swarm_coordinator::{Registration, StoreConfig, Swarm, SwarmConfig};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};

use crate::Error;

/// The tasks the closed loop keeps in flight by default: more than the scheduler hands out in a
/// turn, so agents never wait for work, and few enough that the working set stays small. (With
/// 64 agents, windows of 2, 4, 8 and 16 objectives of 1,000 tasks took 1.0, 1.15, 1.2 and 1.4 s
/// of CPU per million tasks and peaked at 60, 70, 80 and 110 MiB: a bigger window only costs.)
pub const TASKS_IN_FLIGHT: usize = 4_096;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Agents to register.
    pub agents: usize,
    /// Distinct capabilities; agent `i` has capability `i % capabilities`.
    pub capabilities: usize,
    /// Tasks to run in all.
    pub tasks: u64,
    /// Tasks per objective (independent tasks, capabilities round-robin).
    pub objective_size: usize,
    /// Objectives in flight at once: the next is submitted as soon as one ends. `None`: enough
    /// for [`TASKS_IN_FLIGHT`] tasks, and at least two (so one is always there while the next
    /// is submitted).
    pub objectives_in_flight: Option<usize>,
    /// Each agent's concurrency limit.
    pub concurrency: u32,
    /// With a data directory, every state change is committed to the event log there before
    /// it is acted on (`swarm bench --durable`).
    pub data_dir: Option<PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            agents: 64,
            capabilities: 8,
            tasks: 1_000_000,
            objective_size: 1_000,
            objectives_in_flight: None,
            concurrency: 64,
            data_dir: None,
        }
    }
}

/// What the durable run measured about the log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DurableReport {
    /// Events in the log after the run.
    pub events: u64,
    /// The snapshot a restart starts from.
    pub snapshot_seq: u64,
    /// Events a restart reads after that snapshot.
    pub tail_events: u64,
    /// Time to open the log and rebuild the state, as a restart does.
    pub restart_ms: f64,
    /// Time to fold the whole log from the first event, ignoring snapshots.
    pub full_replay_ms: f64,
}

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BenchReport {
    /// Agents registered.
    pub agents: usize,
    /// Capabilities.
    pub capabilities: usize,
    /// Tasks run (allocated and completed).
    pub tasks: u64,
    /// Objectives allowed in flight at once (the window).
    pub objectives_in_flight: usize,
    /// The most objectives that were in flight at once (submitted and their end not yet
    /// seen): the window, unless the run had fewer objectives.
    pub objectives_in_flight_max: usize,
    /// Tasks the scheduler still held in memory once every objective had ended: those of the
    /// finished objectives it keeps (twice the window), however many objectives ran.
    pub tasks_held_after: u64,
    /// Wall time from the first submit to the last objective's end.
    pub elapsed_s: f64,
    /// Tasks allocated and completed per second.
    pub tasks_per_s: f64,
    /// Median time from a task becoming ready to its agent receiving it, in microseconds.
    pub alloc_p50_us: f64,
    /// 99th percentile of the same.
    pub alloc_p99_us: f64,
    /// Peak resident memory of the process, in bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// Page faults the process took during the timed run (0 where unknown): few, once its
    /// working set is in place.
    pub page_faults: u64,
    /// The event log figures, for a durable run.
    pub durable: Option<DurableReport>,
}

/// Where a probe measures a task's latency from.
#[derive(Debug, Clone)]
enum Origin {
    /// From when the task became ready in the scheduler.
    Ready,
    /// From when the open-loop schedule meant its burst (the task's input) to be sent. The
    /// schedule is set once every agent is registered, before the first burst is sent.
    Scheduled(Arc<OnceLock<Schedule>>),
}

/// Counts the tasks that reached an agent and wakes the open loop when all have.
struct Arrivals {
    count: AtomicU64,
    expected: u64,
    all_in: Notify,
}

/// Latencies in nanoseconds, in one of a few histograms shared by the probes: a histogram has
/// a fixed size, so memory does not grow with the tasks run (as a list of every latency would),
/// and a few of them, each shared by every [`LATENCY_SHARDS`]th agent, keep agents on
/// different worker threads from contending on one lock.
type Latencies = Arc<Mutex<Histogram<u64>>>;

/// How many latency histograms the probes share (each takes about 200 KiB).
const LATENCY_SHARDS: usize = 16;

/// A no-op agent that notes each task's latency.
struct LatencyProbe {
    origin: Origin,
    waits_ns: Latencies,
    arrivals: Option<Arc<Arrivals>>,
}

impl Agent for LatencyProbe {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        let waited = match &self.origin {
            Origin::Ready => ctx.ready_at().elapsed(),
            Origin::Scheduled(schedule) => schedule.get().map_or(Duration::ZERO, |schedule| {
                schedule.latency(task.input.as_u64().unwrap_or(0), Instant::now())
            }),
        };
        self.waits_ns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX).max(1));
        if let Some(arrivals) = &self.arrivals
            && arrivals.count.fetch_add(1, Ordering::AcqRel) + 1 == arrivals.expected
        {
            // `notify_one` keeps the wake-up for a waiter that has not started waiting yet.
            arrivals.all_in.notify_one();
        }
        TaskOutcome::success(Value::Null)
    }
}

fn new_histogram() -> Result<Histogram<u64>, Error> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| Error::Run(format!("histogram: {e}")))
}

/// The probes' latencies in one histogram, in nanoseconds, checked to hold one per task run.
fn merged_for(shards: &[Latencies], tasks: u64) -> Result<Histogram<u64>, Error> {
    let mut merged = new_histogram()?;
    for shard in shards {
        merged
            .add(&*shard.lock().unwrap_or_else(PoisonError::into_inner))
            .map_err(|e| Error::Run(format!("histogram: {e}")))?;
    }
    if merged.len() != tasks {
        return Err(Error::Run(format!(
            "{tasks} tasks ran but {} latencies were noted",
            merged.len()
        )));
    }
    Ok(merged)
}

fn capabilities(count: usize) -> Result<Vec<Capability>, Error> {
    (0..count.max(1))
        .map(|i| Capability::new(format!("cap{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Run(e.to_string()))
}

fn task_keys(count: u64) -> Result<Vec<TaskKey>, Error> {
    (0..count)
        .map(|i| TaskKey::new(format!("t{i}")))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Run(e.to_string()))
}

/// The scheduler settings of a benchmark swarm: no cap on running objectives, and at most
/// `finished_kept` finished objectives held in memory, with or without a log, so that memory
/// follows the objectives in flight rather than every objective run.
fn bench_swarm_config(finished_kept: usize) -> SwarmConfig {
    SwarmConfig {
        call_timeout: Duration::from_secs(600),
        scheduler: swarm_coordinator::SchedulerConfig {
            max_objectives_running: usize::MAX,
            keep_finished: finished_kept,
            forget_finished_in_memory: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Registers `agents` probes, agent `i` with capability `i % capabilities.len()`; returns the
/// histograms they note latencies in.
async fn register_probes(
    swarm: &Swarm,
    agents: usize,
    capabilities: &[Capability],
    concurrency: u32,
    origin: Origin,
    arrivals: Option<&Arc<Arrivals>>,
) -> Result<Vec<Latencies>, Error> {
    let shards = (0..agents.clamp(1, LATENCY_SHARDS))
        .map(|_| new_histogram().map(|h| Arc::new(Mutex::new(h))))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..agents {
        let waits_ns = shards[i % shards.len()].clone();
        let registration = Registration {
            name: format!("bench-{i}"),
            capabilities: vec![capabilities[i % capabilities.len()].clone()],
            max_concurrency: concurrency,
            labels: Default::default(),
            cost_hint: None,
            description: None,
        };
        let (origin, arrivals) = (origin.clone(), arrivals.cloned());
        let factory = AgentFactory::new(move || LatencyProbe {
            origin: origin.clone(),
            waits_ns: waits_ns.clone(),
            arrivals: arrivals.clone(),
        });
        swarm.register_agent(registration, factory).await?;
    }
    Ok(shards)
}

/// Counts the closed loop's objectives in flight, from before an objective's submit until its
/// end is seen, and the most there were at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    /// Counts one more objective in flight until the guard is dropped.
    fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        InFlightGuard(self)
    }
}

struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A query that counts every task the scheduler holds (`total`) and lists none.
fn every_task() -> TaskQuery {
    TaskQuery {
        status: None,
        objective: None,
        capability: None,
        agent: None,
        after: None,
        limit: 0,
        newest_first: false,
    }
}

/// Runs the closed-loop benchmark on the current tokio runtime.
pub async fn run(config: BenchConfig) -> Result<BenchReport, Error> {
    let capabilities = capabilities(config.capabilities)?;
    let size = config.objective_size.max(1);
    let window = config
        .objectives_in_flight
        .unwrap_or_else(|| TASKS_IN_FLIGHT.div_ceil(size).max(2))
        .max(1);
    // An objective is waited for right after its submit answers. Until that wait reaches the
    // scheduler, no other objective is submitted (the waits and submits all run in this one
    // task, in turn), so fewer than `window` others can end in between: keeping twice that
    // many finished objectives means none is dropped before its wait arrives.
    let swarm_config = bench_swarm_config(2 * window);
    let swarm = match &config.data_dir {
        Some(dir) => Swarm::open(swarm_config, StoreConfig::new(dir)).await?,
        None => Swarm::start(swarm_config).await?,
    };
    let probes = register_probes(
        &swarm,
        config.agents,
        &capabilities,
        config.concurrency,
        Origin::Ready,
        None,
    )
    .await?;

    let faults_before = page_faults();
    let (elapsed, objectives_in_flight_max) =
        closed_loop(&swarm, &capabilities, config.tasks, size, window).await?;
    let faults = page_faults().saturating_sub(faults_before);
    let tasks_held_after = swarm.tasks(every_task()).await?.total;
    swarm.shutdown().await?;
    let durable = match &config.data_dir {
        Some(dir) => Some(measure_restart(dir).await?),
        None => None,
    };

    let merged = merged_for(&probes, config.tasks)?;
    let us = |q: f64| merged.value_at_quantile(q) as f64 / 1_000.0;
    Ok(BenchReport {
        agents: config.agents,
        capabilities: config.capabilities,
        tasks: config.tasks,
        objectives_in_flight: window,
        objectives_in_flight_max,
        tasks_held_after,
        elapsed_s: elapsed.as_secs_f64(),
        tasks_per_s: config.tasks as f64 / elapsed.as_secs_f64(),
        alloc_p50_us: us(0.50),
        alloc_p99_us: us(0.99),
        peak_rss_bytes: peak_rss_bytes(),
        page_faults: faults,
        durable,
    })
}

/// Submits `tasks` tasks in objectives of `size` independent tasks (capabilities round-robin),
/// `window` objectives in flight, the next submitted as one ends; returns the wall time from
/// the first submit to the last end and the most objectives that were in flight at once.
async fn closed_loop(
    swarm: &Swarm,
    capabilities: &[Capability],
    tasks: u64,
    size: usize,
    window: usize,
) -> Result<(Duration, usize), Error> {
    let size = size as u64;
    let objectives = tasks.div_ceil(size);
    let keys = task_keys(size)?;
    let max_tasks = u32::try_from(size).unwrap_or(u32::MAX);
    let limits = swarm_protocol::Limits {
        max_tasks,
        max_fanout: max_tasks,
        ..Default::default()
    };
    // Objective `o`, built only when it is about to be submitted.
    let objective = |o: u64| {
        let n = (tasks - o * size).min(size);
        let tasks = (0..n)
            .map(|i| {
                let cap = &capabilities[((o * size + i) as usize) % capabilities.len()];
                TaskSpec::new(keys[i as usize].clone(), cap.clone())
            })
            .collect();
        let mut objective = Objective::with_tasks("bench", tasks);
        objective.limits = limits;
        objective
    };

    let started = Instant::now();
    let swarm_ref = swarm;
    let in_flight = &InFlight::default();
    futures::stream::iter(0..objectives)
        .map(|o| {
            let objective = objective(o);
            async move {
                let _counted = in_flight.enter();
                let id = swarm_ref.submit(objective).await?;
                let summary = swarm_ref
                    .wait_summary(id, Duration::from_secs(3600))
                    .await?;
                if summary.status != ObjectiveStatus::Succeeded {
                    return Err(Error::Run(format!(
                        "objective {id} ended {:?}",
                        summary.status
                    )));
                }
                Ok(())
            }
        })
        .buffer_unordered(window)
        .try_collect::<()>()
        .await?;
    Ok((started.elapsed(), in_flight.max.load(Ordering::Relaxed)))
}

/// What to offer in an open-loop run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLoopConfig {
    /// Agents to register.
    pub agents: usize,
    /// Distinct capabilities; agent `i` has capability `i % capabilities`.
    pub capabilities: usize,
    /// Each agent's concurrency limit.
    pub concurrency: u32,
    /// Tasks offered per second.
    pub rate: u64,
    /// Tasks offered in all.
    pub tasks: u64,
    /// Tasks per burst: each burst is one objective of independent tasks, sent when the
    /// schedule says, every `burst / rate` seconds. `None`: a burst every
    /// [`BURST_INTERVAL`] (an objective costs the scheduler tens of microseconds beyond its
    /// tasks, so one per task would measure objectives, not allocation).
    pub burst: Option<u64>,
}

/// The default interval between open-loop bursts.
pub const BURST_INTERVAL: Duration = Duration::from_micros(200);

/// What an open-loop run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpenLoopReport {
    /// Agents registered.
    pub agents: usize,
    /// Capabilities.
    pub capabilities: usize,
    /// Tasks offered (all of them reached an agent).
    pub tasks: u64,
    /// Tasks per burst (one objective each).
    pub burst: u64,
    /// Tasks offered per second.
    pub offered_per_s: f64,
    /// Tasks that reached an agent per second, from the first burst's due time to the last
    /// task's arrival.
    pub tasks_per_s: f64,
    /// That span.
    pub elapsed_s: f64,
    /// Latency from a task's scheduled send time to its agent receiving it, microseconds:
    /// the median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest.
    pub max_us: f64,
    /// The furthest the sender fell behind the schedule, microseconds (what a closed-loop
    /// client would have left out of its latencies).
    pub send_lag_max_us: f64,
    /// Peak resident memory of the process, in bytes (0 where unknown).
    pub peak_rss_bytes: u64,
    /// Page faults the process took while tasks were offered (0 where unknown).
    pub page_faults: u64,
}

/// The fixed schedule of an open-loop run: burst `j` is due at `start + j * burst / rate`,
/// whether or not the bursts before it went out on time.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    /// Tasks per second, at least 1.
    rate: u64,
    /// Tasks per burst, at least 1.
    burst: u64,
}

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Sleep on a timer until then (a timer fires with millisecond granularity, so shortly
    /// before the next burst is due).
    SleepUntil(Instant),
    /// Let the runtime run other tasks, then look again.
    Yield,
}

const NANOS_PER_S: u128 = 1_000_000_000;

impl Schedule {
    fn new(start: Instant, rate: u64, burst: u64) -> Self {
        Self {
            start,
            rate: rate.max(1),
            burst: burst.max(1),
        }
    }

    /// When burst `j` is due.
    fn due_at(&self, j: u64) -> Instant {
        let nanos = u128::from(j) * u128::from(self.burst) * NANOS_PER_S / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many bursts are due by `now`: those `j` with `due_at(j) <= now`.
    fn due_by(&self, now: Instant) -> u64 {
        // due_at(j) <= now  <=>  floor(j * burst * 1e9 / rate) <= e  <=>  j * burst * 1e9 < (e + 1) * rate,
        // so the count is ceil((e + 1) * rate / (burst * 1e9)).
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let period = u128::from(self.burst) * NANOS_PER_S;
        let count = ((elapsed + 1) * u128::from(self.rate)).div_ceil(period);
        u64::try_from(count).unwrap_or(u64::MAX)
    }

    /// The latency of a task of burst `j` that arrived `at`: from when the schedule meant its
    /// burst to be sent, not from when it was sent.
    fn latency(&self, j: u64, at: Instant) -> Duration {
        at.saturating_duration_since(self.due_at(j))
    }

    /// What the sender does next when `sent` bursts are out at `now`.
    fn wake(&self, sent: u64, now: Instant) -> Wake {
        const TIMER_SLACK: Duration = Duration::from_millis(2);
        let next = self.due_at(sent);
        if next.saturating_duration_since(now) > TIMER_SLACK {
            Wake::SleepUntil(next - TIMER_SLACK / 2)
        } else {
            Wake::Yield
        }
    }
}

/// Sends an open-loop run's bursts, each when the schedule says (or at once, all that are
/// due, when it fell behind), never waiting for earlier submits to be answered.
struct Sender {
    schedule: Schedule,
    tasks: u64,
    bursts: u64,
    capabilities: Vec<Capability>,
    keys: Vec<TaskKey>,
    limits: swarm_protocol::Limits,
}

impl Sender {
    /// Burst `j`: one objective of independent tasks whose input is `j`, capabilities
    /// round-robin.
    fn objective(&self, j: u64) -> Objective {
        let burst = self.schedule.burst;
        let n = (self.tasks - j * burst).min(burst);
        let specs = (0..n)
            .map(|i| {
                let cap = &self.capabilities[((j * burst + i) as usize) % self.capabilities.len()];
                let mut spec = TaskSpec::new(self.keys[i as usize].clone(), cap.clone());
                spec.input = Value::from(j);
                spec
            })
            .collect();
        let mut objective = Objective::with_tasks("bench", specs);
        objective.limits = self.limits;
        objective
    }

    /// Sends every burst; returns once all are submitted, with the furthest it fell behind.
    async fn run(self, swarm: Arc<Swarm>) -> Result<Duration, Error> {
        let schedule = self.schedule;
        let mut submits = tokio::task::JoinSet::new();
        let mut sent = 0u64;
        let mut lag_max = Duration::ZERO;
        while sent < self.bursts {
            let now = Instant::now();
            let due = schedule.due_by(now).min(self.bursts);
            if sent < due {
                lag_max = lag_max.max(now.saturating_duration_since(schedule.due_at(sent)));
            }
            for j in sent..due {
                let objective = self.objective(j);
                let swarm = swarm.clone();
                submits.spawn(async move { swarm.submit(objective).await.map(drop) });
            }
            sent = due;
            while let Some(submitted) = submits.try_join_next() {
                submitted.map_err(|e| Error::Run(format!("submit task: {e}")))??;
            }
            if sent == self.bursts {
                break;
            }
            match schedule.wake(sent, now) {
                Wake::SleepUntil(at) => tokio::time::sleep_until(at).await,
                Wake::Yield => tokio::task::yield_now().await,
            }
        }
        while let Some(submitted) = submits.join_next().await {
            submitted.map_err(|e| Error::Run(format!("submit task: {e}")))??;
        }
        Ok(lag_max)
    }
}

/// Runs the open-loop benchmark on the current tokio runtime: `config.tasks` tasks offered at
/// `config.rate` per second in bursts of `config.burst`, each burst submitted when it is due
/// without waiting for earlier submits to be answered.
pub async fn open_loop(config: OpenLoopConfig) -> Result<OpenLoopReport, Error> {
    let capabilities = capabilities(config.capabilities)?;
    // Nobody waits for these objectives: they are dropped as soon as they end.
    let swarm = Arc::new(Swarm::start(bench_swarm_config(64)).await?);
    let tasks = config.tasks.max(1);
    let rate = config.rate.max(1);
    let burst = config
        .burst
        .unwrap_or_else(|| {
            let per_interval = u128::from(rate) * BURST_INTERVAL.as_nanos() / NANOS_PER_S;
            u64::try_from(per_interval).unwrap_or(u64::MAX)
        })
        .clamp(1, u64::from(u32::MAX));
    let bursts = tasks.div_ceil(burst);
    let arrivals = Arc::new(Arrivals {
        count: AtomicU64::new(0),
        expected: tasks,
        all_in: Notify::new(),
    });
    let origin = Arc::new(OnceLock::new());
    let probes = register_probes(
        &swarm,
        config.agents,
        &capabilities,
        config.concurrency,
        Origin::Scheduled(origin.clone()),
        Some(&arrivals),
    )
    .await?;
    let keys = task_keys(burst)?;
    let limits = swarm_protocol::Limits {
        max_tasks: u32::try_from(burst).unwrap_or(u32::MAX),
        max_fanout: u32::try_from(burst).unwrap_or(u32::MAX),
        ..Default::default()
    };

    let faults_before = page_faults();
    let schedule = *origin.get_or_init(|| Schedule::new(Instant::now(), rate, burst));
    // The sender runs as a task of the runtime, beside the actors, rather than on the thread
    // that blocks on this future: its yields then hand the worker to them, where a thread of
    // its own would spin against theirs for the machine's cores.
    let sender = Sender {
        schedule,
        tasks,
        bursts,
        capabilities,
        keys,
        limits,
    };
    let send_lag_max = tokio::spawn(sender.run(swarm.clone()))
        .await
        .map_err(|e| Error::Run(format!("sender task: {e}")))??;
    let offered_for = schedule
        .due_at(bursts)
        .saturating_duration_since(schedule.start);
    tokio::time::timeout(
        offered_for + Duration::from_secs(600),
        arrivals.all_in.notified(),
    )
    .await
    .map_err(|_| Error::Run("not every offered task reached an agent".into()))?;
    let elapsed = schedule.start.elapsed();
    let faults = page_faults().saturating_sub(faults_before);
    let swarm =
        Arc::try_unwrap(swarm).map_err(|_| Error::Run("a submit still holds the swarm".into()))?;
    swarm.shutdown().await?;

    let merged = merged_for(&probes, tasks)?;
    let us = |q: f64| merged.value_at_quantile(q) as f64 / 1_000.0;
    Ok(OpenLoopReport {
        agents: config.agents,
        capabilities: config.capabilities,
        tasks,
        burst,
        offered_per_s: rate as f64,
        tasks_per_s: tasks as f64 / elapsed.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: merged.max() as f64 / 1_000.0,
        send_lag_max_us: send_lag_max.as_secs_f64() * 1e6,
        peak_rss_bytes: peak_rss_bytes(),
        page_faults: faults,
    })
}

/// Opens the log as a restart would, then folds all of it from the first event.
async fn measure_restart(dir: &Path) -> Result<DurableReport, Error> {
    let started = Instant::now();
    let recovered = Swarm::inspect(dir).await?;
    let restart = started.elapsed();
    let store = SqliteStore::open(SqliteOptions::new(dir)).await?;
    let events = store.info().await?.events;
    let started = Instant::now();
    let mut full = Replay::default();
    fold_after(&store, &mut full, u64::MAX).await?;
    let full_replay = started.elapsed();
    Ok(DurableReport {
        events,
        snapshot_seq: recovered.snapshot_seq,
        tail_events: recovered.events_read,
        restart_ms: restart.as_secs_f64() * 1000.0,
        full_replay_ms: full_replay.as_secs_f64() * 1000.0,
    })
}

/// The process's peak resident set size (Linux `VmHWM`), or 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Page faults the process has taken (Linux `/proc/self/stat`: minor plus major), or 0 where
/// unknown.
pub fn page_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The fields after the command name (which may hold spaces, but not a `)`): the
            // state is field 3, minor faults field 10 and major faults field 12.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let minor = fields.get(7)?.parse::<u64>().ok()?;
            let major = fields.get(9)?.parse::<u64>().ok()?;
            Some(minor + major)
        })
        .unwrap_or(0)
}

mod conn;
mod http;
pub mod remote;
pub mod soak;

pub use http::{PageTiming, SubmitReport, UiPagesReport, http_submits, ui_pages};

#[cfg(test)]
mod tests;
