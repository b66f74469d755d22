//! The `swarm` binary end to end: `swarm serve` in a child process, and the client commands
//! (`submit --watch`, `status`, `agents`, `tasks`) talking to it over HTTP.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::Server;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_swarm");

fn serve(data_dir: &std::path::Path, token: Option<&str>) -> Server {
    serve_with_env(data_dir, token, &[])
}

/// [`serve`], with these variables set in the server's environment.
fn serve_with_env(
    data_dir: &std::path::Path,
    token: Option<&str>,
    vars: &[(&str, &str)],
) -> Server {
    serve_with(data_dir, token, vars, &[])
}

/// [`serve_with_env`], with these arguments added.
fn serve_with(
    data_dir: &std::path::Path,
    token: Option<&str>,
    vars: &[(&str, &str)],
    args: &[&str],
) -> Server {
    let mut command = Command::new(BIN);
    command.envs(vars.iter().copied());
    command
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--builtin-agents",
            "2",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args)
        // A swarm.toml of the working directory, or SWARM_CONFIG, would be read: neither is.
        .current_dir(data_dir)
        .env_remove("SWARM_CONFIG")
        .env("RUST_LOG", "error")
        .env_remove("SWARM_API_TOKEN");
    if let Some(token) = token {
        command.env("SWARM_API_TOKEN", token);
    }
    Server::start(command)
}

fn swarm(server: &Server, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("SWARM_SERVER", &server.url)
        .env_remove("SWARM_API_TOKEN")
        .env("RUST_LOG", "error");
    if let Some(token) = token {
        command.env("SWARM_API_TOKEN", token);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn submit_watch_follows_an_objective_to_its_end_and_the_other_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), Some("cli-token"));
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        r#"[{"id": "a", "capability": "work", "input": {"n": 2, "ms": 5}},
            {"id": "b", "capability": "work", "depends_on": ["a"], "input": {"n": 3}},
            {"id": "c", "capability": "echo", "depends_on": ["b"]}]"#,
    )
    .unwrap();
    let graph = graph.to_str().unwrap();

    let out = swarm(
        &server,
        Some("cli-token"),
        &[
            "submit",
            "a small graph",
            "--graph",
            graph,
            "--watch",
            "--key",
            "k-1",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert!(stdout.contains("succeeded"), "{stdout}");
    // b's output is a's sum (2) plus its own n (3).
    assert!(stdout.contains(r#"{"sum":5}"#), "{stdout}");
    let id = stdout.split_whitespace().nth(1).unwrap().to_owned();

    // The same key again returns the same objective, without --watch just its id.
    let again = swarm(
        &server,
        Some("cli-token"),
        &["submit", "a small graph", "--graph", graph, "--key", "k-1"],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), id);

    let status = swarm(&server, Some("cli-token"), &["status", &id]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status = text(&status.stdout);
    assert!(
        status.contains("succeeded") && status.contains(" c "),
        "{status}"
    );

    let agents = swarm(&server, Some("cli-token"), &["agents"]);
    let agents = text(&agents.stdout);
    assert!(
        agents.contains("work-0") && agents.contains("echo-1") && agents.contains("restarts=0"),
        "{agents}"
    );

    let tasks = swarm(&server, Some("cli-token"), &["tasks", "--review"]);
    assert!(
        text(&tasks.stdout).contains("no task is waiting"),
        "{}",
        text(&tasks.stdout)
    );

    // Without the token the server refuses, and the client says why.
    let refused = swarm(&server, None, &["status", &id]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );

    // A graph the server refuses is reported with the problem's detail.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"id": "a", "capability": "telepathy"}]"#).unwrap();
    let out = swarm(
        &server,
        Some("cli-token"),
        &["submit", "g", "--graph", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("telepathy"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_attempt_finish_and_records_it() {
    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), None);
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .post(format!("{}/v1/objectives", server.url))
        .json(&serde_json::json!({
            "goal": "slow",
            "tasks": [{"id": "slow", "capability": "work", "input": {"n": 4, "ms": 400}}]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    // Wait until the attempt runs.
    let mut events = client
        .get(format!("{}/v1/objectives/{id}/events", server.url))
        .send()
        .await
        .unwrap()
        .bytes_stream()
        .eventsource();
    while let Some(event) = events.next().await {
        if event.unwrap().event == "task_started" {
            break;
        }
    }
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    // The stream ends (the server stops accepting and closes it), the process exits cleanly.
    while events.next().await.is_some() {}
    let mut server = server;
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        (exit, server)
    })
    .await
    .unwrap()
    .0;
    assert!(exit.success(), "swarm serve exited with {exit}");
    // The attempt finished within the grace period and its success is in the log.
    let recovered = swarm_coordinator::Swarm::inspect(dir.path()).await.unwrap();
    assert!(
        recovered.replay.unfinished().is_empty(),
        "the objective was left unfinished"
    );
    let store = swarm_store::SqliteStore::open(swarm_store::SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let (model, _) = swarm_coordinator::replay::replay_objective(&store, id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(model.status, swarm_protocol::ObjectiveStatus::Succeeded);
    assert_eq!(
        model.tasks[0].attempt, 1,
        "the attempt was not cut off and retried"
    );
}

/// The crash test of schedules: `swarm serve` with a schedule firing every second is killed
/// with SIGKILL at moments spread over a fire (right after a `ScheduleFired`, right after a
/// slot's objective was submitted, so possibly before its `ScheduleFired`, and once its task
/// started), each seen on `GET /v1/events` after at least one fire of that run, and restarted
/// on the same log, four times. Each slot produced at most one objective, and every
/// `ScheduleFired` names the objective submitted under its slot's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_killed_while_firing_submits_each_slot_once() {
    use std::collections::HashMap;
    use swarm_protocol::Event;
    use swarm_store::EventStore as _;

    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut created = false;
    // What each round is killed at, once it has seen a fire of its own.
    let kill_at = [
        "schedule_fired",
        "objective_submitted",
        "task_started",
        "objective_submitted",
    ];
    for (round, kill_at) in kill_at.into_iter().enumerate() {
        let mut server = serve(dir.path(), None);
        // Following the log from now, before the schedule exists, so no fire is missed.
        let mut events = client
            .get(format!("{}/v1/events", server.url))
            .send()
            .await
            .unwrap()
            .bytes_stream()
            .eventsource();
        if !created {
            let response = client
                .post(format!("{}/v1/schedules", server.url))
                .json(&serde_json::json!({
                    "name": "every-second",
                    "cron": "* * * * * *",
                    "template": {
                        "goal": "tick",
                        "tasks": [{"id": "t", "capability": "work", "input": {"n": 1}}]
                    }
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
            created = true;
        }
        let mut next = async |what: &str| {
            let event = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: timed out waiting for {what}"))
                .unwrap_or_else(|| panic!("round {round}: the stream ended before {what}"))
                .unwrap();
            event.event
        };
        while next("a fire").await != "schedule_fired" {}
        if kill_at != "schedule_fired" {
            while next(kill_at).await != kill_at {}
        }
        let status = Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "round {round}");
        let _ = tokio::task::spawn_blocking(move || server.child.wait())
            .await
            .unwrap();
    }

    let store = swarm_store::SqliteStore::open(swarm_store::SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let records = store.read_after(0, 1_000_000).await.unwrap();
    let mut by_key: HashMap<String, Vec<swarm_protocol::ObjectiveId>> = HashMap::new();
    let mut fired = Vec::new();
    for record in &records {
        match &record.event {
            Event::ObjectiveSubmitted {
                objective,
                idempotency_key: Some(key),
                ..
            } => by_key.entry(key.clone()).or_default().push(*objective),
            Event::ScheduleFired {
                schedule,
                slot_ms,
                objective,
            } => fired.push((schedule.clone(), *slot_ms, *objective)),
            _ => {}
        }
    }
    // Each round saw a fire of its own, committed before it was streamed.
    assert!(fired.len() >= 4, "fewer fires than rounds: {fired:?}");
    for (key, objectives) in &by_key {
        assert_eq!(objectives.len(), 1, "{key} submitted {objectives:?}");
    }
    for (schedule, slot_ms, objective) in &fired {
        let key = format!("schedule:{schedule}:{slot_ms}");
        assert_eq!(by_key.get(&key), Some(&vec![*objective]), "{key}");
    }
}

/// `swarm schedules add|list|pause|resume|delete` against `swarm serve`.
#[test]
fn schedules_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), None);
    let added = swarm(
        &server,
        None,
        &[
            "schedules",
            "add",
            "nightly",
            "0 30 2 * * *",
            "--goal",
            "write the nightly report",
            "--time-zone",
            "Europe/Berlin",
            "--overlap",
            "queue-one",
            "--catch-up-window",
            "1h",
        ],
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    let out = text(&added.stdout);
    assert!(
        out.starts_with("nightly  \"0 30 2 * * *\" Europe/Berlin  active  next 20"),
        "{out}"
    );
    assert!(out.contains("never fired"), "{out}");

    let bad = swarm(
        &server,
        None,
        &["schedules", "add", "bad", "61 * * * *", "--goal", "g"],
    );
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("cron"), "{}", text(&bad.stderr));

    let paused = swarm(&server, None, &["schedules", "pause", "nightly"]);
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    let list = swarm(&server, None, &["schedules", "list"]);
    let out = text(&list.stdout);
    assert!(
        out.contains("nightly") && out.contains("paused  next -"),
        "{out}"
    );
    let resumed = swarm(&server, None, &["schedules", "resume", "nightly"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let deleted = swarm(&server, None, &["schedules", "delete", "nightly"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let list = swarm(&server, None, &["schedules", "list"]);
    assert!(list.status.success());
    assert_eq!(text(&list.stdout), "");
    let missing = swarm(&server, None, &["schedules", "delete", "nightly"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn events_are_sent_and_approval_gates_approved_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), None);
    // The event comes before the task that waits for it.
    let sent = swarm(
        &server,
        None,
        &[
            "events",
            "send",
            "ci-done",
            "--data",
            r#"{"status":"green"}"#,
        ],
    );
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    assert!(
        text(&sent.stdout).contains("kept"),
        "{}",
        text(&sent.stdout)
    );
    let pending = swarm(&server, None, &["events", "pending"]);
    assert!(
        text(&pending.stdout).contains("ci-done"),
        "{}",
        text(&pending.stdout)
    );
    let bad = swarm(&server, None, &["events", "send", "ci done"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("key"), "{}", text(&bad.stderr));

    let graph = dir.path().join("release.json");
    std::fs::write(
        &graph,
        r#"[{"id": "ship-it", "kind": "approval", "input": {"release": "1.2"}},
            {"id": "ci", "kind": "wait", "event": "ci-done", "timeout": "1h",
             "depends_on": ["ship-it"]},
            {"id": "report", "capability": "echo", "depends_on": ["ci"],
             "input": {"$from": "ci", "pointer": "/status"}}]"#,
    )
    .unwrap();
    let graph = graph.to_str().unwrap();
    let submit = [
        "submit",
        "release 1.2",
        "--graph",
        graph,
        "--key",
        "rel-1.2",
    ];
    // Accepted once durable, with the gate already asking for approval.
    let out = swarm(&server, None, &submit);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let queue = swarm(&server, None, &["tasks", "--review"]);
    let queue = text(&queue.stdout);
    let line = queue
        .lines()
        .find(|l| l.contains("`ship-it`"))
        .unwrap_or_else(|| panic!("the gate is not in the review queue: {queue}"));
    assert!(
        line.contains(&id) && line.contains("awaiting approval"),
        "{line}"
    );
    let task = line.split_whitespace().next().unwrap().to_owned();

    let approved = swarm(&server, None, &["approve", &task]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    // The same key again follows the objective to its end.
    let mut watch = submit.to_vec();
    watch.push("--watch");
    let out = swarm(&server, None, &watch);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(stdout.contains(r#""input":"green""#), "{stdout}");
    let pending = swarm(&server, None, &["events", "pending"]);
    assert_eq!(text(&pending.stdout).trim(), "no event is kept");
}

/// `swarm hooks add|list|delete` against `swarm serve`, whose environment holds the secret; a
/// declared hook is served again after a restart (read back by `swarm serve` itself), until
/// it is deleted.
#[test]
fn hooks_are_managed_from_the_command_line() {
    const VAR: &str = "SWARM_TEST_CLI_HOOK_SECRET";
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.json");
    std::fs::write(
        &template,
        r#"{"goal": {"$payload": "/message"}, "tasks": [{"id": "e", "capability": "echo"}]}"#,
    )
    .unwrap();
    let server = serve_with_env(dir.path(), None, &[(VAR, "cli-hook-secret")]);
    let added = swarm(
        &server,
        None,
        &[
            "hooks",
            "add",
            "build",
            "--secret-env",
            VAR,
            "--template",
            template.to_str().unwrap(),
            "--tolerance",
            "2m",
        ],
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(
        text(&added.stdout),
        format!("build  api  secret from ${VAR}  tolerance 2m  POST /v1/hooks/build\n")
    );
    // A variable the server does not have is refused, naming the field and the variable.
    let unset = swarm(
        &server,
        None,
        &[
            "hooks",
            "add",
            "other",
            "--secret-env",
            "SWARM_TEST_CLI_SURELY_UNSET",
            "--template",
            r#"{"goal": "g"}"#,
        ],
    );
    assert!(!unset.status.success());
    let err = text(&unset.stderr);
    assert!(
        err.contains("secret_env") && err.contains("SWARM_TEST_CLI_SURELY_UNSET"),
        "{err}"
    );
    drop(server);

    // Restarted on the same data directory, with the variable still set.
    let server = serve_with_env(dir.path(), None, &[(VAR, "cli-hook-secret")]);
    let list = swarm(&server, None, &["hooks", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).starts_with("build  api  secret from"),
        "{}",
        text(&list.stdout)
    );
    let deleted = swarm(&server, None, &["hooks", "delete", "build"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(text(&deleted.stdout), "build deleted\n");
    let list = swarm(&server, None, &["hooks", "list"]);
    assert_eq!(text(&list.stdout), "");
    let missing = swarm(&server, None, &["hooks", "delete", "build"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}

/// A receiver of escalation notices on a loopback port: each request's head and body, as
/// text, answered 204.
fn notice_receiver() -> (String, mpsc::Receiver<(String, String)>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/escalations", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            if tx
                .send((head, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// `swarm serve` with `[approvals]` in its `swarm.toml`: an approval its deadline escalates is
/// announced to `notify_url`, signed with the secret of the named variable.
#[test]
fn swarm_serve_announces_an_escalated_approval() {
    const VAR: &str = "SWARM_TEST_CLI_NOTIFY_SECRET";
    const SECRET: &str = "cli-notify-secret";
    let dir = tempfile::tempdir().unwrap();
    let (url, notices) = notice_receiver();
    let config = dir.path().join("swarm.toml");
    std::fs::write(
        &config,
        format!("[approvals]\nnotify_url = \"{url}\"\nsecret_env = \"{VAR}\"\n"),
    )
    .unwrap();
    let server = serve_with(
        dir.path(),
        None,
        &[(VAR, SECRET)],
        &["--config", config.to_str().unwrap()],
    );
    let graph = dir.path().join("gate.json");
    std::fs::write(
        &graph,
        r#"[{"id": "gate", "kind": "approval", "input": {"release": "1.2"},
             "timeout": "1s", "on_timeout": "escalate"}]"#,
    )
    .unwrap();
    let out = swarm(
        &server,
        None,
        &["submit", "release 1.2", "--graph", graph.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let (head, body) = notices
        .recv_timeout(Duration::from_secs(60))
        .expect("no notice came");
    let notice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(notice["type"], "task_escalated", "{body}");
    assert_eq!(notice["objective"], id.as_str(), "{body}");
    let signature = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-swarm-signature:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no signature: {head}"));
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    swarm_coordinator::triggers::signature::verify(
        SECRET.as_bytes(),
        Some(&signature),
        body.as_bytes(),
        now_secs,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e}: {head}"));
}
