//! The soak's server, run as a child process (`swarm bench --soak-server`): a durable swarm
//! behind the HTTP API with the model agents of its `swarm.toml` and agents that crash.

use std::io::Write as _;

use serde::Deserialize;
use swarm_agents::FnAgent;
use swarm_coordinator::config::Config;
use swarm_server::ApiConfig;

use super::*;

/// What the child server is told (as JSON on its command line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoakServerConfig {
    /// The data directory of its event log.
    pub data_dir: PathBuf,
    /// The `swarm.toml` with its model agents and `[server]` limits.
    pub config_file: PathBuf,
    /// Agents that crash on purpose.
    pub crash_agents: usize,
    /// The least time between two crashes of one agent, milliseconds.
    pub crash_every_ms: u64,
    /// Finished objectives kept in memory.
    pub keep_finished: usize,
}

/// `swarm bench --soak-server`: the soak's server. Serves the API on a free loopback port,
/// prints that address as the first line on stdout, and stops when stdin closes (so it ends
/// with the run that started it, however that run ends).
pub async fn soak_server(config: SoakServerConfig) -> Result<(), Error> {
    let file = Config::load(&config.config_file)?;
    let swarm_config = SwarmConfig {
        scheduler: swarm_coordinator::SchedulerConfig {
            keep_finished: config.keep_finished,
            ..Default::default()
        },
        ..Default::default()
    };
    let swarm = Swarm::open(swarm_config, StoreConfig::new(&config.data_dir)).await?;
    for agent in &file.agents {
        let (registration, factory, _) = agent.build()?;
        swarm.register_agent(registration, factory).await?;
    }
    let check = Capability::new(CHECK)?;
    let started = std::time::Instant::now();
    for i in 0..config.crash_agents {
        swarm
            .register_agent(
                Registration::new(format!("crashing-{i}"), vec![check.clone()], 64),
                AgentFactory::shared(crashing_agent(started, config.crash_every_ms)),
            )
            .await?;
    }
    let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|e| Error::Run(format!("binding {loopback}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Run(format!("reading the bound address: {e}")))?;
    let mut api = ApiConfig::default();
    api.limits = api.limits.with_section(&file.server);
    api.ceilings = file.limits;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{addr}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Run(format!("writing the address: {e}")))?;
    let swarm = Arc::new(swarm);
    let stdin_closed = async {
        // Reads stdin to its end on a blocking thread: the parent closes it to stop us.
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
    };
    let served = swarm_server::serve(swarm.clone(), listener, api, stdin_closed).await;
    match Arc::try_unwrap(swarm) {
        Ok(swarm) => swarm.shutdown().await?,
        Err(_) => return Err(Error::Run("a request still holds the swarm".into())),
    }
    served.map_err(|e| Error::Run(format!("serving on {addr}: {e}")))
}

/// An agent that checks a model answer, and panics on the first task after each
/// `crash_every_ms` of its life (its supervisor restarts it, and the task runs again).
fn crashing_agent(origin: std::time::Instant, crash_every_ms: u64) -> impl Agent {
    let next_crash_ms = Arc::new(AtomicU64::new(crash_every_ms));
    FnAgent::new(move |task: Task, _ctx| {
        let next_crash_ms = next_crash_ms.clone();
        async move {
            let now_ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
            let due = next_crash_ms.load(Ordering::Acquire);
            if now_ms >= due
                && next_crash_ms
                    .compare_exchange(
                        due,
                        now_ms + crash_every_ms,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                panic!("the soak's agent crashes (on purpose)");
            }
            let answer = task
                .upstream
                .values()
                .next()
                .cloned()
                .unwrap_or(Value::Null);
            TaskOutcome::success(serde_json::json!({ "checked": answer.is_string() }))
        }
    })
}
