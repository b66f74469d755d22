//! The durable event log through the real actors and real SQLite files: the log tells the same
//! story as the live scheduler, idempotent submits survive a restart, an unfinished objective is
//! resumed where it stopped, nothing is acknowledged that the disk did not take, broken data
//! directories are refused by name, pruning keeps unfinished work, and a snapshot bounds what a
//! restart reads.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use swarm_agents::{Agent, AgentFactory, FnAgent, WorkAgent};
use swarm_coordinator::replay::{Replay, fold_after, replay_objective};
use swarm_coordinator::writer::take_snapshot;
use swarm_coordinator::{Error, StoreConfig, Swarm, SwarmConfig, WriterConfig};
use swarm_protocol::{
    AgentId, AgentMsg, Event, EventRecord, FailureKind, Objective, ObjectiveId, ObjectiveStatus,
    ObjectiveView, RetryPolicy, ReviewDecision, SchedulerError, SchedulerMsg, Task, TaskOutcome,
    TaskSpec, TaskStatus, Usage,
};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};
use swarm_testkit::{PATIENCE, cap, fast_restarts, finish, key, open, register};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Fast agent restarts (as [`open`] has them), so a crash test does not wait.
fn config() -> SwarmConfig {
    fast_restarts(3)
}

async fn open_with(store: StoreConfig) -> Swarm {
    Swarm::open(config(), store).await.unwrap()
}

fn log_of(swarm: &Swarm) -> Arc<dyn EventStore> {
    swarm.store().unwrap().clone()
}

/// Every event in the log, in order.
async fn whole_log(store: &dyn EventStore) -> Vec<EventRecord> {
    store.read_after(0, usize::MAX).await.unwrap()
}

fn submissions(events: &[EventRecord]) -> Vec<ObjectiveId> {
    events
        .iter()
        .filter_map(|r| match &r.event {
            Event::ObjectiveSubmitted { objective, .. } => Some(*objective),
            _ => None,
        })
        .collect()
}

/// Awaits the next message an agent sent, with a safety net.
async fn next<T>(rx: &mut UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// A barrier through an agent's mailbox: once it answers, every batch it was sent before has
/// been run, and the reports of attempts that finished on their first poll are in the
/// scheduler's report queue (which the scheduler drains before any later message).
async fn settle(swarm: &Swarm, agent: AgentId) {
    let actor = swarm.registry().handle(agent).unwrap();
    ractor::call_t!(actor, AgentMsg::InFlight, 10_000).unwrap();
}

/// Executions per task key, over every session of a test.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn count(&self, task: &Task) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(task.key.as_str().to_owned())
            .or_default() += 1;
    }

    fn of(&self, key: &str) -> u32 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// `WorkAgent` (`{"sum": n + Σ upstream sums}`, `input.spawn` follow-ups), counting each run.
fn counted_work(runs: &Runs) -> AgentFactory {
    let runs = runs.clone();
    AgentFactory::shared(FnAgent::new(move |task, ctx| {
        runs.count(&task);
        async move { WorkAgent::new().run(task, ctx).await }
    }))
}

/// An agent that tells the test which attempt it got and then never answers.
fn hanging(started: UnboundedSender<Task>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| {
        let _ = started.send(task);
        std::future::pending::<TaskOutcome>()
    }))
}

/// An agent that tells the test which attempt it got and then works like `WorkAgent`.
fn reporting_work(started: UnboundedSender<Task>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, ctx| {
        let _ = started.send(task.clone());
        async move { WorkAgent::new().run(task, ctx).await }
    }))
}

/// A task whose input is `{"n": n}` (what `WorkAgent` adds to its upstream sums).
fn task(name: &str, capability: &str, n: u64) -> TaskSpec {
    TaskSpec::new(key(name), cap(capability)).with_input(json!({ "n": n }))
}

fn work(name: &str, n: u64) -> TaskSpec {
    task(name, "work", n)
}

fn after(spec: TaskSpec, deps: &[&str]) -> TaskSpec {
    spec.after(deps.iter().map(|d| key(d)))
}

fn sum(view: &ObjectiveView, task: &str) -> Value {
    view.task(task)
        .unwrap()
        .output
        .clone()
        .unwrap_or(Value::Null)["sum"]
        .clone()
}

/// The objective rebuilt from its own events in the log, as the scheduler would show it.
async fn replayed(store: &dyn EventStore, id: ObjectiveId) -> ObjectiveView {
    replay_objective(store, id).await.unwrap().unwrap().0.view()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finished_objective_replays_to_exactly_its_live_view() {
    let dir = tempfile::tempdir().unwrap();
    // Finished objectives stay in the scheduler's memory, so `objective` answers from the live
    // state rather than from the log.
    let mut keep_all = config();
    keep_all.scheduler.keep_finished = 100;
    let swarm = Swarm::open(keep_all, StoreConfig::new(dir.path()))
        .await
        .unwrap();
    let runs = Runs::default();
    register(&swarm, "work", &["work"], 8, counted_work(&runs)).await;
    // Fails transiently (with partial output and tokens) on its first attempt.
    let flaky = FnAgent::new(|task: Task, _ctx| async move {
        if task.attempt == 1 {
            TaskOutcome::Failed {
                kind: FailureKind::Transient,
                message: "503 from upstream".into(),
                partial_output: Some(json!({"got": "half"})),
                usage: Some(Usage {
                    input_tokens: 1,
                    output_tokens: 2,
                    ..Usage::default()
                }),
                retry_after: None,
            }
        } else {
            TaskOutcome::Succeeded {
                output: json!({ "flaky": task.attempt }),
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    ..Usage::default()
                }),
            }
        }
    });
    register(&swarm, "flaky", &["flaky"], 2, AgentFactory::shared(flaky)).await;
    let tokens = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::Succeeded {
            output: json!("counted"),
            usage: Some(Usage {
                input_tokens: 7,
                output_tokens: 11,
                ..Usage::default()
            }),
        }
    });
    register(
        &swarm,
        "tokens",
        &["tokens"],
        2,
        AgentFactory::shared(tokens),
    )
    .await;
    // Panics on its first run (off the mailbox), so its supervisor restarts it.
    let crashes = Arc::new(AtomicU32::new(0));
    let crash_count = crashes.clone();
    let crash = FnAgent::new(move |task: Task, _ctx| {
        let n = crash_count.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::task::yield_now().await;
            assert!(n > 0, "crash on the first run");
            TaskOutcome::success(json!({ "survived": task.attempt }))
        }
    });
    register(&swarm, "crash", &["crash"], 1, AgentFactory::shared(crash)).await;
    let permanent = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::failure(FailureKind::Permanent, "401 unauthorized")
    });
    register(
        &swarm,
        "permanent",
        &["permanent"],
        1,
        AgentFactory::shared(permanent),
    )
    .await;
    let (in_review_tx, mut in_review) = unbounded_channel();
    let reviewed = FnAgent::new(move |task: Task, _ctx| {
        let _ = in_review_tx.send(task.id);
        async {
            TaskOutcome::Failed {
                kind: FailureKind::InvalidOutput,
                message: "output does not match the schema".into(),
                partial_output: Some(json!({"draft": 1})),
                usage: Some(Usage {
                    input_tokens: 5,
                    output_tokens: 5,
                    ..Usage::default()
                }),
                retry_after: None,
            }
        }
    });
    let review_agent = register(
        &swarm,
        "review",
        &["review"],
        1,
        AgentFactory::shared(reviewed),
    )
    .await;
    let (blocked_tx, mut blocked) = unbounded_channel();
    register(&swarm, "block", &["block"], 8, hanging(blocked_tx)).await;

    let fast_retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let mut flaky_task = TaskSpec::new(key("f"), cap("flaky"));
    flaky_task.retry = fast_retry;
    let succeeded = swarm
        .submit(Objective::with_tasks(
            "retry, spawn, tokens and a crash",
            vec![
                TaskSpec::new(key("w"), cap("work")).with_input(json!({"n": 2, "spawn": 2})),
                flaky_task,
                TaskSpec::new(key("u"), cap("tokens")),
                TaskSpec::new(key("k"), cap("crash")),
                after(work("j", 1), &["w", "f", "u", "k"]),
            ],
        ))
        .await
        .unwrap();
    let failed = swarm
        .submit(Objective::with_tasks(
            "a permanent failure",
            vec![
                TaskSpec::new(key("p"), cap("permanent")),
                TaskSpec::new(key("b"), cap("block")),
                after(work("x", 1), &["p"]),
            ],
        ))
        .await
        .unwrap();
    let review = swarm
        .submit(Objective::with_tasks(
            "a review",
            vec![
                TaskSpec::new(key("r"), cap("review")),
                after(work("d", 1), &["r"]),
            ],
        ))
        .await
        .unwrap();
    let cancelled = swarm
        .submit(Objective::with_tasks(
            "cancelled by its user",
            vec![
                TaskSpec::new(key("c1"), cap("block")),
                after(work("c2", 1), &["c1"]),
            ],
        ))
        .await
        .unwrap();

    // A person's approval, then an event: both arrive from outside.
    let gate: TaskSpec = serde_json::from_value(json!({
        "id": "gate", "kind": "approval", "input": {"sum": 4}
    }))
    .unwrap();
    let ci: TaskSpec = serde_json::from_value(json!({
        "id": "ci", "kind": "wait", "event": "ci-{objective}", "timeout": "1h",
        "depends_on": ["gate"]
    }))
    .unwrap();
    let gated = swarm
        .submit(Objective::with_tasks(
            "an approval and an event",
            vec![gate, ci, after(work("g", 1), &["ci"])],
        ))
        .await
        .unwrap();
    let never: TaskSpec = serde_json::from_value(json!({
        "id": "never", "kind": "wait", "event": "never", "timeout": "20ms"
    }))
    .unwrap();
    let timed_out = swarm
        .submit(Objective::with_tasks(
            "a wait that times out",
            vec![never, after(work("n", 1), &["never"])],
        ))
        .await
        .unwrap();
    // Accepted once durable, with the gate already in review.
    let view = swarm.objective(gated).await.unwrap();
    let gate = view.task("gate").unwrap();
    assert_eq!(gate.status, TaskStatus::Review);
    swarm
        .review(gate.id, ReviewDecision::Approve { output: None })
        .await
        .unwrap();
    let posted = swarm
        .post_event(swarm_protocol::NewExternalEvent {
            key: format!("ci-{gated}"),
            payload: json!({"sum": 10}),
            ttl: Duration::from_secs(60),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(posted.consumed_by.map(|c| c.objective), Some(gated));

    // The review: the agent has run, its report is queued before the decision arrives.
    let reviewed_task = next(&mut in_review, "the reviewed attempt").await;
    settle(&swarm, review_agent.id).await;
    swarm
        .review(
            reviewed_task,
            ReviewDecision::Approve {
                output: Some(json!({"sum": 40})),
            },
        )
        .await
        .unwrap();
    // The cancellation: its first task is running on the blocking agent.
    let mut blocked_keys = BTreeSet::new();
    while blocked_keys.len() < 2 {
        blocked_keys.insert(next(&mut blocked, "blocked attempts").await.key.to_string());
    }
    assert!(blocked_keys.contains("c1"), "{blocked_keys:?}");
    swarm.cancel(cancelled).await.unwrap();

    let ok = swarm.wait(succeeded, PATIENCE).await.unwrap();
    assert_eq!(ok.status, ObjectiveStatus::Succeeded, "{ok:#?}");
    assert_eq!(ok.task("f").unwrap().attempts, 2);
    assert_eq!(
        ok.task("f").unwrap().partial_output,
        Some(json!({"got": "half"}))
    );
    assert_eq!(
        ok.task("f").unwrap().usage,
        Usage {
            input_tokens: 4,
            output_tokens: 6,
            ..Usage::default()
        }
    );
    assert_eq!(ok.task("u").unwrap().usage.output_tokens, 11);
    assert_eq!(
        ok.task("k").unwrap().attempts,
        2,
        "one attempt lost to the crash"
    );
    assert_eq!(ok.task("k").unwrap().output, Some(json!({"survived": 2})));
    let w = ok.task("w").unwrap().id;
    assert_eq!(ok.task("w-s1").unwrap().spawned_by, Some(w));
    assert_eq!(sum(&ok, "w-s1"), json!(4), "its own 2 + its parent w's 2");
    assert_eq!(sum(&ok, "j"), json!(3), "1 + w's 2");
    for follow_up in ["w-s0", "w-s1"] {
        assert_eq!(runs.of(follow_up), 1, "`{follow_up}` ran once");
    }
    let bad = swarm.wait(failed, PATIENCE).await.unwrap();
    assert_eq!(bad.status, ObjectiveStatus::Failed);
    assert!(bad.failure.as_deref().unwrap().contains("401"), "{bad:#?}");
    assert_eq!(bad.task("b").unwrap().status, TaskStatus::Cancelled);
    assert_eq!(bad.task("x").unwrap().status, TaskStatus::Cancelled);
    let rev = swarm.wait(review, PATIENCE).await.unwrap();
    assert_eq!(rev.status, ObjectiveStatus::Succeeded);
    assert_eq!(rev.task("r").unwrap().output, Some(json!({"sum": 40})));
    assert_eq!(
        sum(&rev, "d"),
        json!(41),
        "the edited output flowed downstream"
    );
    let gone = swarm.wait(cancelled, PATIENCE).await.unwrap();
    assert_eq!(gone.status, ObjectiveStatus::Cancelled);
    assert_eq!(gone.task("c1").unwrap().status, TaskStatus::Cancelled);
    let through = swarm.wait(gated, PATIENCE).await.unwrap();
    assert_eq!(through.status, ObjectiveStatus::Succeeded, "{through:#?}");
    assert_eq!(
        sum(&through, "g"),
        json!(11),
        "the event's payload flowed downstream"
    );
    let late = swarm.wait(timed_out, PATIENCE).await.unwrap();
    assert_eq!(late.status, ObjectiveStatus::Failed);
    assert_eq!(late.task("n").unwrap().status, TaskStatus::Cancelled);

    let store = log_of(&swarm);
    let chain = swarm.chain(succeeded).await.unwrap();
    assert!(
        chain.iter().any(|r| matches!(
            r.event,
            Event::AttemptLost { task, attempt: 1, .. } if task == ok.task("k").unwrap().id
        )),
        "the crash is in the chain of work"
    );
    // The log read whole and folded once agrees with the per-objective reading.
    let mut everything = Replay::keeping_finished();
    for record in whole_log(&*store).await {
        everything.apply(record);
    }
    let mut live_views = Vec::new();
    for id in [succeeded, failed, review, cancelled, gated, timed_out] {
        let live = swarm.objective(id).await.unwrap();
        assert_eq!(replayed(&*store, id).await, live, "objective {}", live.goal);
        assert_eq!(
            everything.objectives[&id].view(),
            live,
            "objective {}",
            live.goal
        );
        live_views.push(live);
    }
    // The log is the swarm's; the next session opens it afresh.
    drop(store);
    finish(swarm).await;

    // After a restart the scheduler holds none of them; the log answers with the same views.
    let swarm = open(dir.path()).await;
    assert!(swarm.resumed().is_empty());
    for live in live_views {
        assert_eq!(swarm.objective(live.id).await.unwrap(), live);
    }
    finish(swarm).await;
}

#[tokio::test]
async fn a_repeated_submit_under_one_key_creates_one_objective_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let swarm = open(dir.path()).await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let objective = Objective::with_tasks("once", vec![work("t", 1)]);
    let other = Objective::with_tasks("something else", vec![work("t", 2)]);
    let order = || Some("order-42".to_owned());

    // Two clients racing with one key get one objective.
    let (first, racing) = tokio::join!(
        swarm.submit_with_key(objective.clone(), order()),
        swarm.submit_with_key(objective.clone(), order()),
    );
    let first = first.unwrap();
    assert_eq!(racing.unwrap(), first);
    let view = swarm.wait(first, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    let after_end = swarm
        .submit_with_key(objective.clone(), order())
        .await
        .unwrap();
    assert_eq!(after_end, first);
    assert_eq!(runs.of("t"), 1);
    let err = swarm
        .submit_with_key(other.clone(), order())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Scheduler(SchedulerError::IdempotencyConflict { key, existing }) if key == "order-42" && *existing == first),
        "{err}"
    );

    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "line\nbreak", "tab\there", "caf\u{e9}"] {
        let err = swarm
            .submit_with_key(objective.clone(), Some(bad.to_owned()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Scheduler(SchedulerError::BadIdempotencyKey(_))),
            "key {bad:?}: {err}"
        );
    }
    // The longest key allowed is accepted, for a new objective.
    let longest = swarm
        .submit_with_key(objective.clone(), Some("k".repeat(255)))
        .await
        .unwrap();
    assert_ne!(longest, first);
    assert_eq!(
        swarm.wait(longest, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );

    let chain = swarm.chain(first).await.unwrap();
    assert_eq!(submissions(&chain), [first]);
    assert_eq!(
        submissions(&whole_log(&*log_of(&swarm)).await),
        [first, longest]
    );
    finish(swarm).await;

    let swarm = open(dir.path()).await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let replayed_id = swarm
        .submit_with_key(objective.clone(), order())
        .await
        .unwrap();
    assert_eq!(replayed_id, first, "the key survived the restart");
    let err = swarm.submit_with_key(other, order()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Scheduler(SchedulerError::IdempotencyConflict { existing, .. }) if *existing == first),
        "{err}"
    );
    assert_eq!(
        swarm.objective(first).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    // The submit was answered after its turn was committed, so a new event would be there.
    assert_eq!(
        submissions(&whole_log(&*log_of(&swarm)).await),
        [first, longest]
    );
    assert_eq!(runs.of("t"), 2, "once for `first`, once for `longest`");
    finish(swarm).await;
}

/// The scheduler holds only the newest keys; an older one is answered from the log's index,
/// before and after a restart, and a submit that skips the index is refused once a key was
/// dropped, never accepted as new.
#[tokio::test]
async fn keys_past_the_memory_bound_answer_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let open_bounded = || async {
        let mut config = config();
        config.scheduler.idempotency_keys_in_memory = 2;
        Swarm::open(config, StoreConfig::new(dir.path()))
            .await
            .unwrap()
    };
    let swarm = open_bounded().await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let objective = |n: u64| Objective::with_tasks(format!("order {n}"), vec![work("t", n)]);
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = swarm
            .submit_with_key(objective(n), Some(format!("order-{n}")))
            .await
            .unwrap();
        ids.push(id);
    }
    for (n, id) in (0..).zip(&ids) {
        assert_eq!(
            swarm
                .submit_with_key(objective(n), Some(format!("order-{n}")))
                .await
                .unwrap(),
            *id,
            "order-{n}"
        );
    }
    let err = swarm
        .submit_with_key(objective(9), Some("order-0".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Scheduler(SchedulerError::IdempotencyConflict { existing, .. }) if *existing == ids[0]),
        "{err}"
    );
    // Straight to the scheduler, without reading the index: `order-0` is no longer held, so
    // the submit is refused rather than taken as new.
    let skipped = ractor::call!(swarm.scheduler(), |reply| SchedulerMsg::Submit {
        objective: objective(0),
        idempotency_key: Some("order-0".into()),
        key_index_as_of: None,
        trace: None,
        accept_by: std::time::Instant::now() + PATIENCE,
        reply,
    })
    .unwrap();
    assert_eq!(
        skipped,
        Err(SchedulerError::KeyNotChecked("order-0".into()))
    );
    for id in &ids {
        swarm.wait(*id, PATIENCE).await.unwrap();
    }
    finish(swarm).await;

    let swarm = open_bounded().await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    for (n, id) in (0..).zip(&ids) {
        assert_eq!(
            swarm
                .submit_with_key(objective(n), Some(format!("order-{n}")))
                .await
                .unwrap(),
            *id,
            "order-{n} after the restart"
        );
    }
    assert_eq!(submissions(&whole_log(&*log_of(&swarm)).await), ids);
    finish(swarm).await;
}

#[tokio::test]
async fn an_attempt_running_at_shutdown_runs_again_as_the_next_attempt_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let swarm = open(dir.path()).await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (slow_tx, mut slow_started) = unbounded_channel();
    register(&swarm, "slow", &["slow"], 1, hanging(slow_tx)).await;
    let id = swarm
        .submit(Objective::with_tasks(
            "resume me",
            vec![
                work("s1", 1),
                work("s2", 2),
                after(task("slow", "slow", 10), &["s1", "s2"]),
                after(work("fin", 100), &["slow"]),
            ],
        ))
        .await
        .unwrap();
    // `slow` is handed out only once its dependencies' successes are committed.
    let first = next(&mut slow_started, "the first attempt of `slow`").await;
    assert_eq!(first.attempt, 1);
    let before = swarm.objective(id).await.unwrap();
    assert_eq!(before.task("s1").unwrap().status, TaskStatus::Succeeded);
    assert_eq!(before.task("s2").unwrap().status, TaskStatus::Succeeded);
    finish(swarm).await;

    // The log holds `slow` started and never ended.
    let found = Swarm::inspect(dir.path()).await.unwrap();
    let unfinished = found.replay.unfinished();
    assert_eq!(unfinished.len(), 1);
    let slow = unfinished[0].task(first.id).unwrap();
    assert_eq!((slow.status, slow.attempt), (TaskStatus::Running, 1));

    let swarm = open(dir.path()).await;
    assert_eq!(swarm.resumed(), [id]);
    assert_eq!(swarm.recovery().unwrap().objectives, 1);
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (slow_tx, mut slow_started) = unbounded_channel();
    register(&swarm, "slow", &["slow"], 1, reporting_work(slow_tx)).await;
    let second = next(&mut slow_started, "the second attempt of `slow`").await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.idempotency_key(), first.idempotency_key());
    assert_eq!(
        second.upstream.get(&key("s1")),
        before.task("s1").unwrap().output.as_ref(),
        "the recovered output reaches the retried task"
    );

    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    for sibling in ["s1", "s2"] {
        assert_eq!(
            runs.of(sibling),
            1,
            "`{sibling}` succeeded before and did not run again"
        );
        assert_eq!(
            view.task(sibling).unwrap().output,
            before.task(sibling).unwrap().output
        );
    }
    assert_eq!(runs.of("fin"), 1);
    assert_eq!(sum(&view, "slow"), json!(13));
    assert_eq!(sum(&view, "fin"), json!(113));
    assert_eq!(view.task("slow").unwrap().attempts, 2);
    let chain = swarm.chain(id).await.unwrap();
    let lost: Vec<u32> = chain
        .iter()
        .filter_map(|r| match r.event {
            Event::AttemptLost { task, attempt, .. } if task == first.id => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [1]);
    assert_eq!(replayed(&*log_of(&swarm), id).await, view);
    finish(swarm).await;
}

#[tokio::test]
async fn a_full_disk_fails_the_submit_that_did_not_fit_and_stops_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let capped = StoreConfig {
        max_page_count: Some(300),
        ..StoreConfig::new(dir.path())
    };
    let swarm = open_with(capped).await;
    let (blocked_tx, _blocked) = unbounded_channel();
    register(&swarm, "block", &["block"], 1_000, hanging(blocked_tx)).await;
    // About 64 KiB an objective: 300 pages (1.2 MB) hold fewer than 20.
    let padding = "x".repeat(64 * 1024);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..100 {
        let objective = Objective::with_tasks(
            format!("fill-{i}"),
            vec![TaskSpec::new(key("t"), cap("block")).with_input(json!({ "padding": padding }))],
        );
        match swarm.submit(objective).await {
            Ok(id) => accepted.push(id),
            Err(err) => {
                refusal = Some((i, err));
                break;
            }
        }
    }
    let (refused, err) = refusal.expect("the capped log never filled up");
    assert!(!accepted.is_empty(), "the cap left no room to start with");
    let message = err.to_string();
    assert!(message.contains("events.db"), "{message}");
    assert!(message.contains("disk is full"), "{message}");
    let reason = tokio::time::timeout(PATIENCE, swarm.failed())
        .await
        .expect("the coordinator did not stop");
    assert!(reason.contains("disk is full"), "{reason}");
    assert!(reason.contains("events.db"), "{reason}");
    let err = swarm
        .submit(Objective::with_tasks(
            "late",
            vec![TaskSpec::new(key("t"), cap("block"))],
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk is full"), "{err}");
    swarm.shutdown().await.unwrap();

    let swarm = open(dir.path()).await;
    let resumed: BTreeSet<ObjectiveId> = swarm.resumed().iter().copied().collect();
    assert_eq!(resumed, accepted.iter().copied().collect());
    for id in &accepted {
        assert_eq!(
            swarm.objective(*id).await.unwrap().status,
            ObjectiveStatus::Running
        );
    }
    let events = whole_log(&*log_of(&swarm)).await;
    assert_eq!(
        submissions(&events),
        accepted,
        "exactly the acknowledged submits"
    );
    let refused_goal = format!("fill-{refused}");
    assert!(!events.iter().any(|r| matches!(
        &r.event,
        Event::ObjectiveSubmitted { spec, .. } if spec.goal == refused_goal
    )));
    finish(swarm).await;
}

#[tokio::test]
async fn a_data_directory_that_is_a_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "plain text").unwrap();
    let err = Swarm::open(config(), StoreConfig::new(&file))
        .await
        .err()
        .expect("opened a file as a data directory");
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
}

#[tokio::test]
async fn an_events_db_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let text = "these are my notes, not a database\n".repeat(200);
    std::fs::write(&db, &text).unwrap();
    let err = Swarm::open(config(), StoreConfig::new(dir.path()))
        .await
        .err()
        .expect("opened a text file as the event log");
    let message = err.to_string();
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(message.contains("is not a swarm event log"), "{message}");
    assert_eq!(std::fs::read_to_string(&db).unwrap(), text);
}

#[tokio::test]
async fn pruning_removes_finished_objectives_and_keeps_unfinished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let swarm = open(dir.path()).await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (hang_tx, mut hang_started) = unbounded_channel();
    register(&swarm, "hang", &["hang"], 1, hanging(hang_tx)).await;
    let done = swarm
        .submit(Objective::with_tasks("finished", vec![work("w", 1)]))
        .await
        .unwrap();
    assert_eq!(
        swarm.wait(done, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    let open_id = swarm
        .submit(Objective::with_tasks(
            "unfinished",
            vec![
                work("a", 1),
                after(task("h", "hang", 10), &["a"]),
                after(work("z", 1), &["h"]),
            ],
        ))
        .await
        .unwrap();
    next(&mut hang_started, "the hanging attempt").await;
    finish(swarm).await;

    let keep_nothing = StoreConfig {
        writer: WriterConfig {
            retention: Some(Duration::ZERO),
            prune_every: Duration::from_secs(3600),
            ..WriterConfig::default()
        },
        ..StoreConfig::new(dir.path())
    };
    let swarm = open_with(keep_nothing).await;
    assert_eq!(swarm.resumed(), [open_id]);
    // The writer prunes first thing; waiting on an objective the scheduler does not hold is
    // answered after a later commit of the same writer, so after the prune.
    let err = swarm.wait_summary(done, PATIENCE).await.unwrap_err();
    assert!(
        matches!(err, Error::Scheduler(SchedulerError::UnknownObjective(id)) if id == done),
        "{err}"
    );
    let store = log_of(&swarm);
    assert_eq!(store.objective(done).await.unwrap(), None);
    assert!(store.read_objective(done).await.unwrap().is_empty());
    assert!(swarm.objective(done).await.is_err());
    let kept = store.objective(open_id).await.unwrap().unwrap();
    assert_eq!(kept.status, ObjectiveStatus::Running);
    let chain = swarm.chain(open_id).await.unwrap();
    assert!(matches!(chain[0].event, Event::ObjectiveSubmitted { .. }));

    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (hang_tx, _hang_started) = unbounded_channel();
    register(&swarm, "hang", &["hang"], 1, reporting_work(hang_tx)).await;
    let view = swarm.wait(open_id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(sum(&view, "z"), json!(12), "1 + (10 + a's 1)");
    assert_eq!(runs.of("a"), 1);
    drop(store);
    finish(swarm).await;
}

#[tokio::test]
async fn a_restart_reads_the_snapshot_and_only_the_events_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::default();
    let frequent = || StoreConfig {
        writer: WriterConfig {
            snapshot_every: 50,
            ..WriterConfig::default()
        },
        ..StoreConfig::new(dir.path())
    };
    let swarm = open_with(frequent()).await;
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (hang_tx, mut hang_started) = unbounded_channel();
    register(&swarm, "hang", &["hang"], 1, hanging(hang_tx)).await;
    let (review_tx, mut in_review) = unbounded_channel();
    let drafts = FnAgent::new(move |task: Task, _ctx| {
        let _ = review_tx.send(task.key.to_string());
        async { TaskOutcome::failure(FailureKind::InvalidOutput, "needs a person") }
    });
    let reviewer = register(
        &swarm,
        "review",
        &["review"],
        2,
        AgentFactory::shared(drafts),
    )
    .await;
    // `a` succeeds and `h` hangs before the snapshot; `r1` is approved after it, `r2` only
    // after the restart.
    let spanning = swarm
        .submit(Objective::with_tasks(
            "spans the snapshot",
            vec![
                work("a", 1),
                after(task("h", "hang", 10), &["a"]),
                TaskSpec::new(key("r1"), cap("review")),
                TaskSpec::new(key("r2"), cap("review")),
                after(work("z", 1), &["h", "r1", "r2"]),
            ],
        ))
        .await
        .unwrap();
    let first = next(&mut hang_started, "the hanging attempt").await;
    for _ in 0..2 {
        next(&mut in_review, "a draft").await;
    }
    settle(&swarm, reviewer.id).await;
    let chain_of_three = |i: usize| {
        Objective::with_tasks(
            format!("filler-{i}"),
            vec![
                work("x", 1),
                after(work("y", 1), &["x"]),
                after(work("v", 1), &["y"]),
            ],
        )
    };
    for i in 0..15 {
        let id = swarm.submit(chain_of_three(i)).await.unwrap();
        swarm.wait_summary(id, PATIENCE).await.unwrap();
    }
    let before = swarm.objective(spanning).await.unwrap();
    assert_eq!(before.task("r1").unwrap().status, TaskStatus::Review);
    // The writer snapshots in the background and nothing tells when a snapshot is saved, so
    // the test takes one itself, the way the writer does (from the writer's newest, if any).
    let store = log_of(&swarm);
    let upto = store.info().await.unwrap().last_seq;
    if let Some(snapshot) = take_snapshot(&*store, upto, 0).await.unwrap() {
        store.save_snapshot(&snapshot).await.unwrap();
    }
    let snapshot_seq = store.latest_snapshot().await.unwrap().unwrap().seq;
    assert!(snapshot_seq >= upto);
    drop(store);
    swarm
        .review(
            before.task("r1").unwrap().id,
            ReviewDecision::Approve {
                output: Some(json!({"sum": 5})),
            },
        )
        .await
        .unwrap();
    for i in 15..20 {
        let id = swarm.submit(chain_of_three(i)).await.unwrap();
        swarm.wait_summary(id, PATIENCE).await.unwrap();
    }
    finish(swarm).await;

    // What a restart rebuilds from the snapshot and what followed it equals the fold of the
    // whole log.
    let found = Swarm::inspect(dir.path()).await.unwrap();
    let direct = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let info = direct.info().await.unwrap();
    let mut whole = Replay::default();
    fold_after(&direct, &mut whole, info.last_seq)
        .await
        .unwrap();
    direct.close().await.unwrap();
    assert_eq!(found.replay.objectives, whole.objectives);
    assert!(found.next_task >= whole.next_task);
    assert!(found.snapshot_seq >= snapshot_seq);
    let model = &found.replay.objectives[&spanning];
    let r1 = model.task(before.task("r1").unwrap().id).unwrap();
    assert_eq!(
        r1.status,
        TaskStatus::Succeeded,
        "approved after the snapshot"
    );

    let swarm = open_with(frequent()).await;
    let report = swarm.recovery().unwrap();
    assert!(report.snapshot_seq >= snapshot_seq, "{report:?}");
    assert_eq!(report.last_seq, info.last_seq);
    assert!(
        report.events_read <= report.last_seq - report.snapshot_seq,
        "{report:?}"
    );
    assert!(
        report.events_read < info.events,
        "read {} of {} events",
        report.events_read,
        info.events
    );
    assert_eq!(swarm.resumed(), [spanning]);
    register(&swarm, "work", &["work"], 4, counted_work(&runs)).await;
    let (hang_tx, mut hang_started) = unbounded_channel();
    register(&swarm, "hang", &["hang"], 1, reporting_work(hang_tx)).await;
    let second = next(&mut hang_started, "the retried attempt").await;
    assert_eq!((second.id, second.attempt), (first.id, 2));
    // `r2` is still in review after the restart.
    swarm
        .review(
            before.task("r2").unwrap().id,
            ReviewDecision::Approve {
                output: Some(json!({"sum": 7})),
            },
        )
        .await
        .unwrap();
    let view = swarm.wait(spanning, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(sum(&view, "z"), json!(24), "1 + h's 11 + r1's 5 + r2's 7");
    assert_eq!(
        runs.of("a"),
        1,
        "`a` succeeded before the snapshot and did not run again"
    );
    assert_eq!(replayed(&*log_of(&swarm), spanning).await, view);
    // New work gets task ids past every id in the log, finished objectives' included.
    let highest = whole_log(&*log_of(&swarm))
        .await
        .iter()
        .filter_map(|r| match &r.event {
            Event::ObjectiveSubmitted {
                spec, first_task, ..
            } => Some(first_task.0 + spec.tasks.len() as u64 - 1),
            _ => None,
        })
        .max()
        .unwrap();
    let fresh = swarm.submit(chain_of_three(20)).await.unwrap();
    let fresh = swarm.wait(fresh, PATIENCE).await.unwrap();
    assert_eq!(fresh.status, ObjectiveStatus::Succeeded);
    assert!(
        fresh.tasks.iter().all(|t| t.id.0 > highest),
        "{:?} reuse ids up to T{highest}",
        fresh.tasks
    );
    finish(swarm).await;
}

#[tokio::test]
async fn an_objective_read_right_after_it_ended_is_never_shown_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut forget_at_once = config();
    forget_at_once.scheduler.keep_finished = 0;
    let swarm = Swarm::open(forget_at_once, StoreConfig::new(dir.path()))
        .await
        .unwrap();
    let agent = register(
        &swarm,
        "work",
        &["work"],
        4,
        AgentFactory::shared(WorkAgent::new()),
    )
    .await;
    for i in 0..20 {
        let id = swarm
            .submit(Objective::with_tasks(format!("o{i}"), vec![work("x", 1)]))
            .await
            .unwrap();
        // The task's report is queued; the scheduler handles it, and so ends the objective,
        // before it answers the read.
        settle(&swarm, agent.id).await;
        let view = swarm.objective(id).await.unwrap();
        assert_eq!(
            view.status,
            ObjectiveStatus::Succeeded,
            "round {i}: the scheduler had ended it, the answer shows {view:#?}"
        );
    }
    finish(swarm).await;
}

#[tokio::test]
async fn agent_ids_stay_unique_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let work = || AgentFactory::shared(WorkAgent::new());
    let swarm = open(dir.path()).await;
    let a = register(&swarm, "a", &["work"], 1, work()).await;
    let b = register(&swarm, "b", &["work"], 1, work()).await;
    finish(swarm).await;

    // The same agent registering again after a restart is a new agent in the log.
    let swarm = open(dir.path()).await;
    let again = register(&swarm, "a", &["work"], 1, work()).await;
    assert!(
        again.id > a.id && again.id > b.id,
        "{} after {} and {}",
        again.id,
        a.id,
        b.id
    );
    finish(swarm).await;

    // Every turn still queued was committed at shutdown, so the reopened log has all three.
    let swarm = open(dir.path()).await;
    let registered: Vec<AgentId> = whole_log(&*log_of(&swarm))
        .await
        .iter()
        .filter_map(|r| match &r.event {
            Event::AgentRegistered { descriptor } => Some(descriptor.id),
            _ => None,
        })
        .collect();
    assert_eq!(registered, [a.id, b.id, again.id]);
    assert_eq!(registered.iter().collect::<BTreeSet<_>>().len(), 3);
    finish(swarm).await;
}

#[tokio::test]
async fn subscribers_see_every_committed_event_of_an_objective_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    let mut feed = swarm.subscribe().unwrap();
    register(
        &swarm,
        "w",
        &["work"],
        4,
        AgentFactory::shared(WorkAgent::new()),
    )
    .await;
    let tasks = vec![
        TaskSpec::new(key("a"), cap("work")),
        TaskSpec::new(key("b"), cap("work")).after([key("a")]),
    ];
    let id = swarm
        .submit(Objective::with_tasks("fed", tasks))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let record = tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .unwrap()
            .unwrap();
        let ended =
            matches!(record.event, Event::ObjectiveSucceeded { objective } if objective == id);
        seen.push((*record).clone());
        if ended {
            break;
        }
    }
    // In order and without gaps, and the objective's part is exactly its chain of work.
    for pair in seen.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "{pair:?}");
    }
    let mine: Vec<EventRecord> = seen
        .into_iter()
        .filter(|r| r.event.objective() == Some(id))
        .collect();
    assert_eq!(mine, swarm.chain(id).await.unwrap());
    finish(swarm).await;
}

/// A log holding a record this version cannot decode (nested past serde_json's limit, as
/// older versions could write) does not keep the swarm down: it starts, reports the
/// objective the record belongs to, and serves the rest of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_leaves_out_its_objective_not_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (held_tx, _held_rx) = unbounded_channel::<()>();
    let swarm = open(dir.path()).await;
    let hold = FnAgent::new(move |_task: Task, _ctx| {
        let held = held_tx.clone();
        async move {
            held.closed().await;
            TaskOutcome::success(json!("never"))
        }
    });
    register(&swarm, "hold", &["hold"], 4, AgentFactory::shared(hold)).await;
    register(
        &swarm,
        "echo",
        &["echo"],
        4,
        AgentFactory::shared(swarm_agents::EchoAgent),
    )
    .await;
    let damaged = swarm
        .submit(Objective::with_tasks(
            "damaged",
            vec![TaskSpec::new(key("a"), cap("hold"))],
        ))
        .await
        .unwrap();
    let fine = swarm
        .submit(Objective::with_tasks(
            "fine",
            vec![TaskSpec::new(key("a"), cap("hold"))],
        ))
        .await
        .unwrap();
    swarm.shutdown().await.unwrap();

    // An older version's record: an output nested 200 levels deep.
    let store = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let last = store.info().await.unwrap().last_seq;
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let task = whole_log(&store)
        .await
        .into_iter()
        .find_map(|r| match r.event {
            Event::ObjectiveSubmitted {
                objective,
                first_task,
                ..
            } if objective == damaged => Some(first_task),
            _ => None,
        })
        .unwrap();
    store
        .append(&[EventRecord {
            seq: last + 1,
            at_ms: 1,
            event: Event::TaskSucceeded {
                objective: damaged,
                task,
                attempt: 1,
                agent: AgentId(1),
                output: deep,
                usage: None,
                duration: Duration::from_millis(1),
            },
        }])
        .await
        .unwrap();
    drop(store);

    let swarm = open(dir.path()).await;
    let report = swarm.recovery().unwrap();
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].0, damaged);
    assert!(
        report.unreadable[0].1.contains("could not be decoded"),
        "{report:?}"
    );
    // The rest is served: the other objective resumed, and new work runs.
    assert_eq!(swarm.resumed(), &[fine]);
    register(
        &swarm,
        "echo",
        &["echo"],
        4,
        AgentFactory::shared(swarm_agents::EchoAgent),
    )
    .await;
    let new = swarm
        .submit(Objective::with_tasks(
            "new",
            vec![TaskSpec::new(key("a"), cap("echo"))],
        ))
        .await
        .unwrap();
    let view = swarm.wait(new, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    finish(swarm).await;
}
