//! `swarm worker` end to end: its flags and errors, and (against a real `nats-server`) a
//! built-in agent hosted for a coordinator played by the test, drained on SIGTERM.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::json;
use swarm_protocol::remote::{
    self, Announce, AnnounceReply, Attempt, AttemptId, AttemptResult, HeartbeatReply, Leave,
    LeaveMode, Outcome, PROTOCOL_VERSION,
};
use swarm_protocol::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use swarm_remote::Subjects;
use swarm_testkit::{NatsServer, PATIENCE};

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

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the awaited message never came")
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn swarm_worker_hosts_a_builtin_agent_and_drains_on_sigterm() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new("swarm");
    let attempts = js
        .create_stream(stream::Config {
            name: subjects.attempts_stream(),
            subjects: vec![subjects.all_attempts()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let results = js
        .create_stream(stream::Config {
            name: subjects.results_stream(),
            subjects: vec![subjects.results()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some("coordinator".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut announces = client.subscribe(subjects.announce()).await.unwrap();
    let mut leaves = client.subscribe(subjects.leave()).await.unwrap();
    let mut beats = client.subscribe(subjects.heartbeat()).await.unwrap();
    let answering = client.clone();
    tokio::spawn(async move {
        while let Some(beat) = beats.next().await {
            let answer = remote::encode(&HeartbeatReply::Continue).unwrap();
            let _ = answering.publish(beat.reply.unwrap(), answer.into()).await;
        }
    });
    client.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut child = worker(
        dir.path(),
        &["--nats", &server.url(), "--agent", "echo", "--name", "w1"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let request = within(announces.next()).await.unwrap();
    let announce: Announce = remote::decode(&request.payload).unwrap();
    assert_eq!(announce.name, "echo@w1");
    assert_eq!(
        announce.capabilities,
        vec![Capability::new("echo").unwrap()]
    );
    let agent = AgentId(1);
    attempts
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects.attempts_consumer(agent)),
            filter_subject: subjects.attempts(agent),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: i64::from(announce.max_concurrency),
            ..Default::default()
        })
        .await
        .unwrap();
    let accepted = AnnounceReply::Accepted {
        agent,
        protocol_version: PROTOCOL_VERSION,
        heartbeat_interval_ms: 1000,
        lease_ms: 30_000,
        attempts_subject: subjects.attempts(agent),
        attempts_consumer: subjects.attempts_consumer(agent),
    };
    client
        .publish(
            request.reply.unwrap(),
            remote::encode(&accepted).unwrap().into(),
        )
        .await
        .unwrap();

    let id = AttemptId {
        objective: ObjectiveId::new(),
        task: TaskId(1),
        number: 1,
    };
    let attempt = Attempt {
        attempt: id,
        agent,
        key: TaskKey::new("say").unwrap(),
        capability: Capability::new("echo").unwrap(),
        idempotency_key: id.idempotency_key(),
        input: Arc::new(json!({"x": 1})),
        upstream: Default::default(),
        idle_timeout_ms: None,
        hard_timeout_ms: None,
        priority: 0,
        trace: None,
    };
    js.publish(
        subjects.attempts(agent),
        remote::encode(&attempt).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut batch = results
        .batch()
        .max_messages(1)
        .expires(PATIENCE)
        .messages()
        .await
        .unwrap();
    let message = within(batch.next()).await.unwrap().unwrap();
    message.ack().await.unwrap();
    let result: AttemptResult = remote::decode(&message.payload).unwrap();
    assert_eq!((result.attempt, result.agent), (id, agent));
    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            output: json!({"task": "say", "input": {"x": 1}, "upstream": {}}),
            usage: None
        }
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let leave: Leave = remote::decode(&within(leaves.next()).await.unwrap().payload).unwrap();
    assert_eq!((leave.agent, leave.mode), (agent, LeaveMode::Drain));
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
        (status, text)
    });
    let (status, text) = within(status).await.unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("echo@w1: accepted as A1"), "{text}");
}
