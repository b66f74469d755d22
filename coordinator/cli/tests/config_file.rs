//! The README's no-key recipe end to end: `swarm serve` and `swarm run` in a directory holding
//! a `swarm.toml` (and no `--config`) read it and say so; its model agents call the simulated
//! model server, whose `sim:plan` model plans any goal; and `swarm submit "<goal>" --graph`
//! takes a file that holds only `tasks`.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::Server;

use std::path::Path;
use std::process::{Command, Output};

use swarm_agents::sim::{SimConfig, SimHandle, SimServer};

const BIN: &str = env!("CARGO_BIN_EXE_swarm");

/// A simulated model server on a runtime of its own (the test's thread blocks on children).
struct Sim {
    handle: SimHandle,
    _runtime: tokio::runtime::Runtime,
}

fn sim() -> Sim {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime
        .block_on(SimServer::start(SimConfig::default()))
        .unwrap();
    Sim {
        handle,
        _runtime: runtime,
    }
}

/// A `swarm.toml` with a planner (`sim:plan`, OpenAI format) and a writer (Anthropic format,
/// its base URL without `/v1`, as the Anthropic SDKs take it), and the log in `data`.
fn write_config(dir: &Path, sim: &SimHandle) {
    let text = format!(
        r#"
[store]
data_dir = "data"

[[agents]]
name = "planner"
provider = "openai"
base_url = "{openai}"
model = "sim:plan"
capabilities = ["plan"]

[[agents]]
name = "writer"
provider = "anthropic"
base_url = "{root}"
model = "sim"
capabilities = ["write"]
description = "Writes short texts."
"#,
        openai = sim.base_url(),
        root = sim.root_url(),
    );
    std::fs::write(dir.join("swarm.toml"), text).unwrap();
}

/// `swarm` in `dir`, with no configuration from the environment.
fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("SWARM_CONFIG")
        .env_remove("SWARM_DATA_DIR")
        .env_remove("SWARM_API_TOKEN")
        .env("RUST_LOG", "error");
    command
}

fn serve(dir: &Path) -> Server {
    let mut command = command(dir);
    command.args(["serve", "--addr", "127.0.0.1:0"]);
    Server::start(command)
}

fn client(server: &Server, dir: &Path, args: &[&str]) -> Output {
    command(dir)
        .args(args)
        .env("SWARM_SERVER", &server.url)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_reads_the_working_directorys_swarm_toml_and_plans_with_the_sim() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &sim.handle);
    let server = serve(dir.path());
    assert!(
        server
            .startup
            .iter()
            .any(|line| line.starts_with("configuration: swarm.toml (2 model agents")),
        "{:?}",
        server.startup
    );
    // The store section was read: the log is in `data`.
    assert!(dir.path().join("data").join("events.db").is_file());

    // A goal alone: `sim:plan` plans it over the capabilities registered (`write`).
    let out = client(
        &server,
        dir.path(),
        &["submit", "a haiku about tides", "--watch"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("succeeded"), "{stdout}");
    // The plan's task ran on the writer, which the prompt listed.
    assert!(
        stdout.contains("\n  plan ") && stdout.contains("\n  write "),
        "{stdout}"
    );

    // The README's `submit "<goal>" --graph graph.json` with a file holding only `tasks`.
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        r#"{"tasks": [{"id": "note", "capability": "write", "input": "a note"}]}"#,
    )
    .unwrap();
    let graph = graph.to_str().unwrap();
    let out = client(
        &server,
        dir.path(),
        &["submit", "a note", "--graph", graph, "--watch"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("succeeded"), "{stdout}");
    // Without any goal it is refused before anything is sent.
    let out = client(&server, dir.path(), &["submit", "--graph", graph]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("goal"), "{}", text(&out.stderr));
}

#[test]
fn run_says_which_configuration_it_loaded() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("objectives.jsonl");
    std::fs::write(&batch, "{\"goal\": \"a limerick about logs\"}\n").unwrap();

    // No swarm.toml here: said so; the goal alone has no planner, and fails.
    let out = command(dir.path())
        .args(["run", "--agents", "1", "--file", "objectives.jsonl"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("configuration: none"), "{stderr}");
    assert!(!out.status.success(), "{stderr}");

    write_config(dir.path(), &sim.handle);
    let out = command(dir.path())
        .args(["run", "--agents", "1", "--file", "objectives.jsonl"])
        .args(["--data-dir", "planned"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("configuration: swarm.toml (2 model agents"),
        "{stderr}"
    );
    assert!(out.status.success(), "{stderr}\n{}", text(&out.stdout));
}
