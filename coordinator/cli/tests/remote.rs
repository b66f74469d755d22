//! Remote agents under failure, with the real binaries: `swarm serve --nats` and `swarm worker`
//! processes over a real `nats-server`, each killed, stopped or restarted as an operator's
//! machines would be. Every wait is for a state the coordinator reports over HTTP, bounded by
//! a patience; the `work` agents' `ms` input is the length of the work, not a synchronisation.
//!
//! These tests need nats-server: `scripts/test.sh` installs it and runs them.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_testkit::NatsServer;

use common::Server;

const BIN: &str = env!("CARGO_BIN_EXE_swarm");
const PATIENCE: Duration = Duration::from_secs(60);

/// A `swarm.toml` with a short lease and heartbeat, so a lost worker is noticed in about a
/// second.
fn config(dir: &Path, nats: &NatsServer) -> std::path::PathBuf {
    let path = dir.join("swarm.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nurl = \"{}\"\nheartbeat_interval = \"300ms\"\nlease = \"3s\"\n",
            nats.url()
        ),
    )
    .unwrap();
    path
}

fn serve(dir: &Path, nats: &NatsServer, extra: &[&str]) -> Server {
    let mut command = Command::new(BIN);
    command
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--grace",
            "1s",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(config(dir, nats))
        .args(extra)
        .env_remove("SWARM_API_TOKEN")
        .current_dir(dir);
    Server::start(command)
}

/// A `swarm worker` hosting `work` agents, named `name`.
fn worker(dir: &Path, nats: &NatsServer, name: &str) -> Child {
    Command::new(BIN)
        .args([
            "worker",
            "--agent",
            "work",
            "--concurrency",
            "4",
            "--name",
            name,
        ])
        .arg("--config")
        .arg(config(dir, nats))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(server: &Server) -> Self {
        Self {
            base: server.url.clone(),
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let text = answer.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn text(&self, path: &str) -> String {
        let answer = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        answer.text().await.unwrap()
    }

    async fn submit(&self, body: Value) -> String {
        let answer = self
            .client
            .post(format!("{}/v1/objectives", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        let answer: Value = answer.json().await.unwrap();
        answer["id"].as_str().unwrap().to_owned()
    }

    /// Asks `probe` until it answers, for at most the patience.
    async fn until<T>(&self, what: &str, mut probe: impl AsyncFnMut(&Self) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = probe(self).await {
                return found;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: not within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The id of the remote agent named `name`, once it is registered.
    async fn agent(&self, name: &str) -> String {
        self.until(&format!("agent {name} is registered"), async |http| {
            let agents = http.get("/v1/agents").await;
            agents.as_array().unwrap().iter().find_map(|a| {
                (a["name"] == name && a["health"] == "up")
                    .then(|| a["id"].as_str().unwrap().to_owned())
            })
        })
        .await
    }

    async fn ended(&self, objective: &str) -> Value {
        self.until("the objective ends", async |http| {
            let view = http.get(&format!("/v1/objectives/{objective}")).await;
            (view["status"] != "running" && view["status"] != "pending").then_some(view)
        })
        .await
    }

    /// Tasks of `objective` running now on `agent`.
    async fn running_on(&self, objective: &str, agent: &str) -> usize {
        let view = self.get(&format!("/v1/objectives/{objective}")).await;
        view["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "running" && t["agent"] == agent)
            .count()
    }

    /// Checks the chain of work: each task succeeded exactly once. Returns its events.
    async fn each_task_succeeded_once(&self, objective: &str, tasks: usize) -> Vec<Value> {
        let chain = self.get(&format!("/v1/objectives/{objective}/chain")).await;
        let events = chain.as_array().unwrap().clone();
        let mut succeeded: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "task_succeeded")
            .map(|e| e["task"].as_str().unwrap())
            .collect();
        succeeded.sort_unstable();
        let before = succeeded.len();
        succeeded.dedup();
        assert_eq!(
            before,
            succeeded.len(),
            "a task succeeded twice: {events:#?}"
        );
        assert_eq!(succeeded.len(), tasks, "{events:#?}");
        events
    }
}

fn work(keys: &[&str], ms: u64) -> Value {
    json!({
        "goal": "remote work",
        "tasks": keys.iter().map(|k| json!({"id": k, "capability": "work", "input": {"ms": ms}})).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_worker_killed_mid_attempt_loses_it_and_another_worker_runs_it() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut first = worker(dir.path(), &nats, "first");
    let first_agent = http.agent("work@first").await;
    // `swarm agents` marks it remote, with its host.
    let listed = Command::new(BIN)
        .args(["agents", "--server", &server.url])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let line = listed.lines().find(|l| l.contains("work@first")).unwrap();
    assert!(
        line.contains(" remote@") && line.contains("heartbeat="),
        "{listed}"
    );
    let objective = http.submit(work(&["a", "b", "c"], 5_000)).await;
    http.until("the first worker runs the tasks", async |http| {
        (http.running_on(&objective, &first_agent).await == 3).then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = worker(dir.path(), &nats, "second");
    let view = http.ended(&objective).await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    let second_agent = http.agent("work@second").await;
    for task in view["tasks"].as_array().unwrap() {
        assert_eq!(task["agent"], second_agent.as_str(), "{task:#}");
    }
    let events = http.each_task_succeeded_once(&objective, 3).await;
    let lost = events
        .iter()
        .filter(|e| e["type"] == "attempt_lost")
        .count();
    assert_eq!(
        lost, 3,
        "each attempt of the killed worker was lost: {events:#?}"
    );
    // The dead worker's agent left the registry.
    let agents = http.get("/v1/agents").await;
    assert!(!agents.to_string().contains("work@first"), "{agents:#}");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_partitioned_worker_s_late_result_is_fenced() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut stopped = worker(dir.path(), &nats, "stopped");
    let stopped_agent = http.agent("work@stopped").await;
    let objective = http.submit(work(&["only"], 1_500)).await;
    http.until("the worker runs the task", async |http| {
        (http.running_on(&objective, &stopped_agent).await == 1).then_some(())
    })
    .await;
    // Stopped past its lease: no heartbeat, no progress; the task runs elsewhere.
    signal(&stopped, "-STOP");
    let mut other = worker(dir.path(), &nats, "other");
    let view = http.ended(&objective).await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    // Resumed, it finishes the attempt it had and reports it: too late, fenced.
    signal(&stopped, "-CONT");
    let fenced = http
        .until("the late result is fenced", async |http| {
            let chain = http.get(&format!("/v1/objectives/{objective}/chain")).await;
            chain
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "result_fenced")
                .cloned()
        })
        .await;
    assert_eq!(fenced["attempt"], 1, "{fenced:#}");
    assert_eq!(fenced["agent"], stopped_agent.as_str(), "{fenced:#}");
    http.each_task_succeeded_once(&objective, 1).await;
    let metrics = http.text("/metrics").await;
    assert!(
        metrics.contains("swarm_remote_fenced_results_total 1"),
        "{metrics}"
    );
    for child in [&mut stopped, &mut other] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_coordinator_killed_while_remote_attempts_run_resumes_and_each_task_succeeds_once() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut remote = worker(dir.path(), &nats, "w");
    let agent = http.agent("work@w").await;
    let mut objectives = Vec::new();
    for _ in 0..3 {
        objectives.push(
            http.submit(json!({
                "goal": "a chain",
                "tasks": [
                    {"id": "a", "capability": "work", "input": {"ms": 1_000}},
                    {"id": "b", "capability": "work", "depends_on": ["a"], "input": {"ms": 200}},
                ],
            }))
            .await,
        );
    }
    http.until("remote attempts run", async |http| {
        let mut running = 0;
        for objective in &objectives {
            running += http.running_on(objective, &agent).await;
        }
        (running == 3).then_some(())
    })
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    // The worker finishes what it had while the coordinator is down; those results wait in
    // JetStream and are fenced at the restart, whose recovery re-queued the attempts.
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    for objective in &objectives {
        let view = http.ended(objective).await;
        assert_eq!(view["status"], "succeeded", "{view:#}");
        let events = http.each_task_succeeded_once(objective, 2).await;
        assert!(
            events.iter().any(|e| e["type"] == "attempt_lost"),
            "the restart recovered the running attempt as lost: {events:#?}"
        );
    }
    remote.kill().unwrap();
    remote.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn with_nats_down_local_agents_work_remote_work_waits_and_resumes() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Local `work` and `echo` agents in the coordinator; the worker hosts `noop`.
    let server = serve(dir.path(), &nats, &["--builtin-agents", "1"]);
    let http = Http::new(&server);
    let mut remote = Command::new(BIN)
        .args(["worker", "--agent", "noop", "--name", "n"])
        .arg("--config")
        .arg(config(dir.path(), &nats))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    http.agent("noop@n").await;

    nats.stop();
    http.until("/readyz says NATS is down", async |http| {
        let ready = http.get("/readyz").await;
        ready["nats"]
            .as_str()
            .unwrap_or("")
            .starts_with("down")
            .then_some(())
    })
    .await;
    let page = http.text("/ui/agents").await;
    assert!(page.contains("NATS is unreachable"), "{page}");
    let remote_objective = http
        .submit(json!({"goal": "remote", "tasks": [{"id": "r", "capability": "noop"}]}))
        .await;
    let local_objective = http
        .submit(json!({"goal": "local", "tasks": [{"id": "l", "capability": "echo", "input": 1}]}))
        .await;
    let local = http.ended(&local_objective).await;
    assert_eq!(local["status"], "succeeded", "{local:#}");
    let waiting = http
        .get(&format!("/v1/objectives/{remote_objective}"))
        .await;
    assert_eq!(waiting["status"], "running", "{waiting:#}");

    nats.restart();
    let view = http.ended(&remote_objective).await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    let ready = http.get("/readyz").await;
    assert_eq!(ready["nats"], "connected");
    remote.kill().unwrap();
    remote.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_worker_outlives_a_graceful_restart_of_the_coordinator() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut remote = worker(dir.path(), &nats, "stays");
    http.agent("work@stays").await;
    // SIGTERM: the coordinator drains and stops, without telling its workers to leave.
    signal(&server.child, "-TERM");
    assert!(server.child.wait().unwrap().success());
    drop(server);
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    http.agent("work@stays").await;
    let objective = http.submit(work(&["after"], 0)).await;
    assert_eq!(http.ended(&objective).await["status"], "succeeded");
    assert!(remote.try_wait().unwrap().is_none(), "the worker exited");
    remote.kill().unwrap();
    remote.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn deleting_a_remote_agent_drains_it_and_its_worker_leaves() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut remote = worker(dir.path(), &nats, "leaving");
    let agent = http.agent("work@leaving").await;
    let objective = http.submit(work(&["last"], 1_000)).await;
    http.until("the worker runs the task", async |http| {
        (http.running_on(&objective, &agent).await == 1).then_some(())
    })
    .await;
    let answer = http
        .client
        .delete(format!("{}/v1/agents/{agent}?grace=30s", http.base))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    // The attempt it runs finishes there; then the worker, with nothing left to host, exits.
    let view = http.ended(&objective).await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    assert_eq!(view["tasks"][0]["agent"], agent.as_str());
    let status = tokio::task::spawn_blocking(move || remote.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    http.until("the agent is gone", async |http| {
        let agents = http.get("/v1/agents").await;
        (!agents.to_string().contains("work@leaving")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_worker_stopped_with_sigterm_finishes_its_attempt_then_leaves() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &nats, &[]);
    let http = Http::new(&server);
    let mut remote = worker(dir.path(), &nats, "term");
    let agent = http.agent("work@term").await;
    let objective = http.submit(work(&["running"], 1_000)).await;
    http.until("the worker runs the task", async |http| {
        (http.running_on(&objective, &agent).await == 1).then_some(())
    })
    .await;
    signal(&remote, "-TERM");
    // It takes nothing new, finishes what it runs, reports it, leaves and exits.
    let view = http.ended(&objective).await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    assert_eq!(view["tasks"][0]["agent"], agent.as_str());
    assert_eq!(view["tasks"][0]["attempts"], 1);
    let status = tokio::task::spawn_blocking(move || remote.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    http.until("the agent is gone", async |http| {
        let agents = http.get("/v1/agents").await;
        (!agents.to_string().contains("work@term")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_nats_server_that_wants_a_token_gets_it_from_the_environment_never_from_the_logs() {
    const TOKEN: &str = "s3cret-nats-token-4242";
    let nats = NatsServer::start_with(&["--auth", TOKEN]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("swarm.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\ntoken_env = \"NATS_TOKEN\"\n",
            nats.url()
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("NATS_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .env_remove("SWARM_API_TOKEN")
        .current_dir(dir.path());
    let server = Server::start(command);
    let http = Http::new(&server);
    let log = dir.path().join("worker.log");
    let mut remote = Command::new(BIN)
        .args(["worker", "--agent", "echo", "--name", "auth"])
        .arg("--config")
        .arg(&config)
        .env("NATS_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    http.agent("echo@auth").await;
    let objective = http
        .submit(json!({"goal": "auth", "tasks": [{"id": "e", "capability": "echo", "input": 7}]}))
        .await;
    assert_eq!(http.ended(&objective).await["status"], "succeeded");
    signal(&remote, "-TERM");
    let status = tokio::task::spawn_blocking(move || remote.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let worker_log = std::fs::read_to_string(&log).unwrap();
    assert!(!worker_log.contains(TOKEN), "the worker logged the token");
    assert!(
        !server.startup.join("\n").contains(TOKEN),
        "swarm serve printed the token"
    );
}
