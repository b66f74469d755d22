//! The HTTP benchmarks: durable submits over keep-alive connections (`--http-submits`) and
//! the dashboard's pages (`--ui-pages`).

use super::*;
use crate::bench::conn::Connection;

/// What the HTTP submit benchmark measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SubmitReport {
    /// Objectives submitted (and acknowledged as durable).
    pub submits: u64,
    /// Client connections (each keeps alive and has one request in flight at a time).
    pub connections: usize,
    /// Wall time.
    pub elapsed_s: f64,
    /// Acknowledged submits per second.
    pub submits_per_s: f64,
    /// Median request latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// One keep-alive client: posts `submits` objectives one after the other and returns each
/// one's latency in microseconds.
async fn submit_loop(addr: SocketAddr, body: Bytes, submits: u64) -> Result<Vec<u32>, String> {
    let mut connection = Connection::new(addr);
    let mut latencies = Vec::with_capacity(usize::try_from(submits).unwrap_or(0));
    for _ in 0..submits {
        let sent = Instant::now();
        let (status, _, _) = connection
            .request(hyper::Method::POST, "/v1/objectives", body.clone())
            .await?;
        if status != 202 {
            return Err(format!("submit answered {status}"));
        }
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}

/// `swarm bench --http-submits N`: a durable swarm behind the HTTP API on loopback, and
/// `connections` keep-alive clients posting one-task objectives as fast as they are answered
/// (each 202 only once the objective is committed to the event log). Client and server share
/// the machine.
pub async fn http_submits(
    data_dir: &Path,
    submits: u64,
    connections: usize,
) -> Result<SubmitReport, Error> {
    let config = SwarmConfig {
        call_timeout: Duration::from_secs(120),
        scheduler: swarm_coordinator::SchedulerConfig {
            max_objectives_running: usize::MAX,
            ..Default::default()
        },
        ..Default::default()
    };
    let swarm = Swarm::open(config, StoreConfig::new(data_dir)).await?;
    let cap = Capability::new("noop")?;
    for i in 0..4 {
        swarm
            .register_agent(
                Registration::new(format!("noop-{i}"), vec![cap.clone()], 1024),
                AgentFactory::shared(swarm_agents::NoopAgent),
            )
            .await?;
    }
    let swarm = Arc::new(swarm);
    let api = swarm_server::LocalApi::start(swarm.clone()).await?;
    let addr = api.addr;
    let body = Bytes::from(
        serde_json::json!({
            "goal": "bench",
            "tasks": [{"id": "t", "capability": "noop"}],
        })
        .to_string(),
    );
    let connections = connections.max(1);
    let per_connection = submits.div_ceil(connections as u64);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            submit_loop(addr, body, per_connection).await
        }));
    }
    let mut merged = new_histogram()?;
    let mut done = 0u64;
    for client in clients {
        let latencies = client
            .await
            .map_err(|e| Error::Run(format!("client task: {e}")))?
            .map_err(Error::Remote)?;
        done += latencies.len() as u64;
        for us in latencies {
            merged.saturating_record((u64::from(us) * 1_000).max(1));
        }
    }
    let elapsed = started.elapsed();
    api.stop().await;
    if let Ok(swarm) = Arc::try_unwrap(swarm) {
        swarm.shutdown().await?;
    }
    let us = |q: f64| merged.value_at_quantile(q) as f64 / 1_000.0;
    Ok(SubmitReport {
        submits: done,
        connections,
        elapsed_s: elapsed.as_secs_f64(),
        submits_per_s: done as f64 / elapsed.as_secs_f64(),
        p50_us: us(0.50),
        p99_us: us(0.99),
    })
}

/// How long one dashboard page (or API route) took to answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageTiming {
    /// The path requested.
    pub path: String,
    /// The answer's size.
    pub bytes: usize,
    /// Median time to the whole answer, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

/// What the dashboard benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UiPagesReport {
    /// Tasks the scheduler held (on the board).
    pub tasks: u64,
    /// Requests per page.
    pub requests: usize,
    /// Each page.
    pub pages: Vec<PageTiming>,
}

/// GETs `path` `requests` times over one keep-alive connection; returns the answer's size and
/// each request's time to the whole answer, in microseconds.
async fn get_loop(
    addr: SocketAddr,
    path: &str,
    requests: usize,
) -> Result<(usize, Vec<u64>), String> {
    let mut connection = Connection::html(addr);
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let sent = Instant::now();
        let (status, _, body) = connection
            .request(hyper::Method::GET, path, Bytes::new())
            .await?;
        times.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        if status != 200 {
            return Err(format!("GET {path} answered {status}"));
        }
        bytes = body.len();
    }
    Ok((bytes, times))
}

/// An agent whose attempts never end (the board's running tasks).
struct Hold;

impl Agent for Hold {
    async fn run(&self, _task: Task, _ctx: TaskContext) -> TaskOutcome {
        std::future::pending().await
    }
}

/// `swarm bench --ui-pages`: the dashboard's pages, answered with `tasks` tasks on the board.
///
/// A durable swarm in `data_dir` takes `tasks / 100` objectives of 100 tasks each: half of them
/// independent tasks that finish at once (the done column), the other half one task that never
/// ends (running) with 99 tasks waiting for it (the backlog). Then each page is requested
/// `requests` times, one after another, over one keep-alive connection on loopback, and the
/// time to the whole answer is reported.
pub async fn ui_pages(
    data_dir: &Path,
    tasks: u64,
    requests: usize,
) -> Result<UiPagesReport, Error> {
    const SIZE: u64 = 100;
    let config = SwarmConfig {
        call_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let swarm = Swarm::open(config, StoreConfig::new(data_dir)).await?;
    let noop = Capability::new("noop")?;
    let hold = Capability::new("hold")?;
    swarm
        .register_agent(
            Registration::new("noop-0", vec![noop.clone()], 1024),
            AgentFactory::shared(swarm_agents::NoopAgent),
        )
        .await?;
    swarm
        .register_agent(
            Registration::new("hold-0", vec![hold.clone()], 100_000),
            AgentFactory::shared(Hold),
        )
        .await?;
    let objectives = tasks.div_ceil(SIZE).max(2);
    let mut held = None;
    let mut finished = Vec::new();
    for n in 0..objectives {
        let specs: Vec<TaskSpec> = if n % 2 == 0 {
            (0..SIZE)
                .map(|i| task_spec(&format!("t{i}"), &noop, &[]))
                .collect::<Result<_, _>>()?
        } else {
            std::iter::once(task_spec("root", &hold, &[]))
                .chain((1..SIZE).map(|i| task_spec(&format!("t{i}"), &noop, &["root"])))
                .collect::<Result<_, _>>()?
        };
        let id = swarm
            .submit(Objective::with_tasks(format!("bench objective {n}"), specs))
            .await?;
        if n % 2 == 0 {
            finished.push(id);
        } else {
            held.get_or_insert(id);
        }
    }
    for id in finished {
        swarm.wait_summary(id, Duration::from_secs(120)).await?;
    }
    let held = held.ok_or_else(|| Error::Run("no objective was submitted".into()))?;
    let on_board = swarm
        .tasks(swarm_protocol::TaskQuery {
            status: None,
            objective: None,
            capability: None,
            agent: None,
            after: None,
            limit: 1,
            newest_first: false,
        })
        .await?
        .total;
    let swarm = Arc::new(swarm);
    let api = swarm_server::LocalApi::start(swarm.clone()).await?;
    let paths = [
        "/ui/".to_owned(),
        "/ui/?capability=noop".to_owned(),
        "/ui/board/columns".to_owned(),
        format!("/ui/objectives/{held}"),
        "/ui/agents".to_owned(),
        "/ui/review".to_owned(),
        "/v1/tasks?status=backlog&limit=50".to_owned(),
    ];
    let mut pages = Vec::with_capacity(paths.len());
    for path in paths {
        // One warm-up request: the first answer pays for lazily built state.
        get_loop(api.addr, &path, 1).await.map_err(Error::Remote)?;
        let (bytes, mut times) = get_loop(api.addr, &path, requests.max(1))
            .await
            .map_err(Error::Remote)?;
        times.sort_unstable();
        let at = |q: f64| {
            let i = ((times.len() as f64 - 1.0) * q).round() as usize;
            times.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        pages.push(PageTiming {
            path,
            bytes,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: times.last().copied().unwrap_or(0) as f64 / 1000.0,
        });
    }
    api.stop().await;
    if let Ok(swarm) = Arc::try_unwrap(swarm) {
        swarm.shutdown().await?;
    }
    Ok(UiPagesReport {
        tasks: on_board,
        requests: requests.max(1),
        pages,
    })
}

fn task_spec(key: &str, capability: &Capability, deps: &[&str]) -> Result<TaskSpec, Error> {
    let mut spec = TaskSpec::new(TaskKey::new(key)?, capability.clone());
    for dep in deps {
        spec.depends_on.push(TaskKey::new(*dep)?);
    }
    Ok(spec)
}
