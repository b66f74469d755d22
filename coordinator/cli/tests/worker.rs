//! `swarm worker`: its flags and errors. Against a real coordinator and `nats-server`, it is
//! tested in `remote.rs`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_swarm");

/// `swarm worker` with `args`, in an empty directory (no swarm.toml is read).
fn worker(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("worker")
        .args(args)
        .current_dir(dir)
        .env_remove("SWARM_CONFIG")
        .env_remove("SWARM_NATS_URL")
        .env("RUST_LOG", "error");
    command
}

fn run(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    worker(dir.path(), args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn swarm_worker_help_names_its_flags() {
    let output = run(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--nats",
        "--nats-prefix",
        "--config",
        "--agent",
        "--name",
        "--grace",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn swarm_worker_without_nats_or_with_a_bad_address_says_so() {
    let output = run(&["--agent", "echo"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("no NATS server") && err.contains("--nats"),
        "{err}"
    );

    let output = run(&["--nats", "http://127.0.0.1:4222", "--agent", "echo"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("http://127.0.0.1:4222") && err.contains("scheme"),
        "{err}"
    );

    let output = run(&[
        "--nats",
        "nats://127.0.0.1:1",
        "--nats-prefix",
        "a.b",
        "--agent",
        "echo",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("nats.prefix"),
        "{}",
        stderr(&output)
    );

    let output = run(&["--nats", "nats://127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("nothing to host"),
        "{}",
        stderr(&output)
    );
}
