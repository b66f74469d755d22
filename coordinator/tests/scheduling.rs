//! Objectives through the real scheduler, registry and agent actors: graph validation,
//! dependencies with outputs flowing along edges, retries, spawned tasks, waiting for capacity,
//! priorities and cancellation, and which finished objectives an in-memory swarm keeps.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent};
use swarm_coordinator::{Error, Swarm};
use swarm_protocol::{
    Event, FailureKind, GraphError, Objective, ObjectiveId, ObjectiveStatus, RetryPolicy,
    SchedulerError, SchedulerMsg, TaskOutcome, TaskQuery, TaskSpec, TaskStatus,
};
use swarm_testkit::{PATIENCE, cap, fast_restarts, finish, key, reg, start};
use tokio::sync::Semaphore;

#[tokio::test]
async fn a_cycle_is_rejected_naming_its_tasks() {
    let (swarm, _events) = start().await;
    swarm
        .register_agent(reg("e", &["x"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let tasks = vec![
        TaskSpec::new(key("a"), cap("x")),
        TaskSpec::new(key("b"), cap("x")).after([key("a"), key("d")]),
        TaskSpec::new(key("c"), cap("x")).after([key("b")]),
        TaskSpec::new(key("d"), cap("x")).after([key("c")]),
    ];
    let err = swarm
        .submit(Objective::with_tasks("loop", tasks))
        .await
        .unwrap_err();
    let Error::Scheduler(SchedulerError::Graph(GraphError::Cycle(cycle))) = &err else {
        panic!("expected a cycle error, got {err}");
    };
    let mut names: Vec<&str> = cycle.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["b", "c", "d"]);
    assert!(err.to_string().contains("cycle"), "{err}");
    finish(swarm).await;
}

/// A submit the scheduler reaches after its caller's deadline is refused and leaves nothing
/// behind: `Swarm::submit` waits for this answer instead of timing out on its own, so a
/// client told that its submit failed (503) never finds the objective accepted afterwards.
#[tokio::test]
async fn a_submit_reached_after_its_deadline_is_refused_and_never_accepted() {
    let (swarm, mut events) = start().await;
    swarm
        .register_agent(reg("e", &["x"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let late = std::time::Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(std::time::Instant::now);
    let objective = Objective::with_tasks("late", vec![TaskSpec::new(key("a"), cap("x"))]);
    let answer = ractor::call!(swarm.scheduler(), |reply| SchedulerMsg::Submit {
        objective: objective.clone(),
        idempotency_key: Some("late-1".into()),
        key_index_as_of: None,
        trace: None,
        accept_by: late,
        reply,
    })
    .unwrap();
    assert_eq!(answer, Err(SchedulerError::NotTaken));
    // Nothing was recorded, counted or keyed: the same key with the same objective in time
    // is a new objective, which runs.
    let id = swarm
        .submit_with_key(objective, Some("late-1".into()))
        .await
        .unwrap();
    let first = events
        .until("the objective's submit", |e| {
            matches!(e, Event::ObjectiveSubmitted { .. })
        })
        .await;
    assert!(matches!(first, Event::ObjectiveSubmitted { objective, .. } if objective == id));
    assert_eq!(
        swarm.wait(id, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    assert_eq!(swarm.stats().await.unwrap().objectives_ended, 1);
    finish(swarm).await;
}

#[tokio::test]
async fn bad_graphs_get_errors_naming_the_offender() {
    let (swarm, _events) = start().await;
    swarm
        .register_agent(reg("e", &["x"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let unknown_dep = vec![TaskSpec::new(key("a"), cap("x")).after([key("ghost")])];
    let err = swarm
        .submit(Objective::with_tasks("g", unknown_dep))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    let dup = vec![
        TaskSpec::new(key("a"), cap("x")),
        TaskSpec::new(key("a"), cap("x")),
    ];
    let err = swarm
        .submit(Objective::with_tasks("g", dup))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Scheduler(SchedulerError::Graph(GraphError::DuplicateId(ref k))) if k.as_str() == "a"),
        "{err}"
    );
    let unknown_cap = vec![
        TaskSpec::new(key("a"), cap("x")),
        TaskSpec::new(key("b"), cap("telepathy")),
    ];
    let err = swarm
        .submit(Objective::with_tasks("g", unknown_cap))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Scheduler(SchedulerError::UnknownCapability { ref task, ref capability }) if task.as_str() == "b" && capability.as_str() == "telepathy"),
        "{err}"
    );
    let bad_ref = vec![TaskSpec::new(key("a"), cap("x")).with_input(json!({"$from": "zzz"}))];
    let err = swarm
        .submit(Objective::with_tasks("g", bad_ref))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("zzz"), "{err}");
    // Nothing was accepted.
    assert_eq!(swarm.stats().await.unwrap().objectives_running, 0);
    finish(swarm).await;
}

/// Output = input number + the sum of the upstream outputs.
fn summing_agent() -> AgentFactory {
    AgentFactory::shared(FnAgent::new(|task, _ctx| async move {
        let own = task.input.as_i64().unwrap_or(0);
        let upstream: i64 = task.upstream.values().filter_map(Value::as_i64).sum();
        TaskOutcome::success(json!(own + upstream))
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_task_dag_fans_out_and_in_with_outputs_along_the_edges() {
    let (swarm, _events) = start().await;
    for i in 0..4 {
        swarm
            .register_agent(reg(&format!("sum-{i}"), &["sum"], 16), summing_agent())
            .await
            .unwrap();
    }
    swarm
        .register_agent(reg("pick", &["pick"], 4), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    // root (1) -> 997 middle tasks (i, plus root) -> join (sum of all) -> pick (via $from)
    let mut tasks = vec![TaskSpec::new(key("root"), cap("sum")).with_input(json!(1))];
    let middle: Vec<_> = (0..997).map(|i| key(&format!("m{i}"))).collect();
    for (i, k) in middle.iter().enumerate() {
        tasks.push(
            TaskSpec::new(k.clone(), cap("sum"))
                .with_input(json!(i))
                .after([key("root")]),
        );
    }
    tasks.push(TaskSpec::new(key("join"), cap("sum")).after(middle.clone()));
    tasks.push(
        TaskSpec::new(key("pick"), cap("pick"))
            .with_input(json!({"total": {"$from": "join"}}))
            .after([key("join")]),
    );
    assert_eq!(tasks.len(), 1000);
    let id = swarm
        .submit(Objective::with_tasks("dag", tasks))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(
        view.status,
        ObjectiveStatus::Succeeded,
        "{:?}",
        view.failure
    );
    let expected: i64 = (0..997).map(|i| i + 1).sum();
    assert_eq!(view.task("m5").unwrap().output, Some(json!(6)));
    assert_eq!(view.task("join").unwrap().output, Some(json!(expected)));
    let pick = view.task("pick").unwrap().output.clone().unwrap();
    assert_eq!(pick["input"], json!({"total": expected}));
    assert!(
        view.tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded && t.attempts == 1)
    );
    // Every attempt handed out is in the allocation latency histogram.
    let stats = swarm.stats().await.unwrap();
    assert_eq!(stats.allocations, 1000);
    assert_eq!(stats.allocation_latency.count, 1000);
    assert_eq!(stats.allocation_latency.counts.iter().sum::<u64>(), 1000);
    assert_eq!(stats.tasks_succeeded, 1000);
    assert_eq!((stats.tasks_failed, stats.tasks_in_review), (0, 0));
    finish(swarm).await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_and_permanent_ones_fail_the_objective() {
    let (swarm, mut events) = start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let flaky = FnAgent::new(move |task, _ctx| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match (task.key.as_str(), n) {
                ("flaky", 0 | 1) => {
                    TaskOutcome::failure(FailureKind::Transient, "503 from upstream")
                }
                ("doomed", _) => TaskOutcome::failure(FailureKind::Permanent, "401 unauthorized"),
                _ => TaskOutcome::success(json!(task.attempt)),
            }
        }
    });
    swarm
        .register_agent(reg("f", &["x"], 2), AgentFactory::shared(flaky))
        .await
        .unwrap();
    let mut spec = TaskSpec::new(key("flaky"), cap("x"));
    spec.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let id = swarm
        .submit(Objective::with_tasks("retry", vec![spec]))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    assert_eq!(view.task("flaky").unwrap().output, Some(json!(3)));
    assert_eq!(view.task("flaky").unwrap().attempts, 3);
    let retries: Vec<Duration> = events
        .drain()
        .iter()
        .filter_map(|r| match &r.event {
            Event::TaskFailed {
                retry_in: Some(d), ..
            } => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(
        retries[0] <= Duration::from_millis(5) && retries[1] <= Duration::from_millis(10),
        "{retries:?}"
    );

    let tasks = vec![
        TaskSpec::new(key("doomed"), cap("x")),
        TaskSpec::new(key("after"), cap("x")).after([key("doomed")]),
    ];
    let id = swarm
        .submit(Objective::with_tasks("fail", tasks))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let reason = view.failure.clone().unwrap();
    assert!(
        reason.contains("doomed") && reason.contains("401"),
        "{reason}"
    );
    assert_eq!(
        view.task("doomed").unwrap().attempts,
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(view.task("after").unwrap().status, TaskStatus::Cancelled);
    // Two failed attempts of `flaky` were retried; `doomed` failed for good.
    let stats = swarm.stats().await.unwrap();
    assert_eq!((stats.attempts_failed, stats.tasks_failed), (3, 1));
    assert_eq!(stats.allocations, 4);
    assert_eq!(stats.allocation_latency.count, 4);
    finish(swarm).await;
}

#[tokio::test]
async fn a_spawned_follow_up_runs_before_its_objective_ends() {
    let (swarm, mut events) = start().await;
    let planner = FnAgent::new(|task, _ctx| async move {
        if task.key.as_str() == "plan" {
            let child = |name: &str| TaskSpec::new(key(name), task.capability.clone());
            TaskOutcome::Spawned {
                output: json!("planned"),
                tasks: vec![child("step-1"), child("step-2").after([key("step-1")])],
                usage: None,
            }
        } else {
            TaskOutcome::success(json!({ "did": task.key, "parent": task.upstream.get("plan") }))
        }
    });
    swarm
        .register_agent(reg("p", &["plan"], 2), AgentFactory::shared(planner))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "grow",
            vec![TaskSpec::new(key("plan"), cap("plan"))],
        ))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    assert_eq!(view.tasks.len(), 3);
    let step2 = view.task("step-2").unwrap();
    assert_eq!(step2.status, TaskStatus::Succeeded);
    assert_eq!(step2.spawned_by, Some(view.task("plan").unwrap().id));
    assert_eq!(
        step2.output,
        Some(json!({"did": "step-2", "parent": "planned"}))
    );
    // In the log, the follow-ups succeed before the objective does.
    let end = events
        .until("objective end", |e| {
            matches!(e, Event::ObjectiveSucceeded { .. })
        })
        .await;
    assert!(matches!(end, Event::ObjectiveSucceeded { objective } if objective == id));
    let successes = events
        .seen
        .iter()
        .filter(|r| matches!(r.event, Event::TaskSucceeded { .. }))
        .count();
    assert_eq!(successes, 3);
    finish(swarm).await;
}

/// An agent whose tasks hold their slot until the test releases a permit.
fn gated(gate: Arc<Semaphore>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task, _ctx| {
        let gate = gate.clone();
        async move {
            let permit = gate.acquire().await;
            drop(permit);
            TaskOutcome::success(json!(task.key))
        }
    }))
}

#[tokio::test]
async fn a_task_waits_while_capable_agents_are_busy_down_or_gone_and_runs_when_one_turns_up() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let busy = swarm
        .register_agent(reg("busy", &["x"], 1), gated(gate.clone()))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "wait",
            vec![
                TaskSpec::new(key("first"), cap("x")),
                TaskSpec::new(key("second"), cap("x")),
            ],
        ))
        .await
        .unwrap();
    events
        .until("first task started", |e| {
            matches!(e, Event::TaskStarted { .. })
        })
        .await;
    // The only agent is busy: the other task is ready and queued, not dropped.
    let view = swarm.objective(id).await.unwrap();
    let waiting: Vec<_> = view
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Ready)
        .collect();
    assert_eq!(waiting.len(), 1);
    let waiting_key = waiting[0].key.clone();

    // An agent that registers while the objective runs takes the queued task at once.
    let fresh = swarm
        .register_agent(reg("fresh", &["x"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let started = events
        .until(
            "queued task started",
            |e| matches!(e, Event::TaskStarted { agent, .. } if *agent == fresh.id),
        )
        .await;
    let Event::TaskStarted { task, .. } = started else {
        unreachable!()
    };
    assert_eq!(
        view.tasks.iter().find(|t| t.id == task).unwrap().key,
        waiting_key
    );
    gate.add_permits(10);
    assert_eq!(
        swarm.wait(id, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );

    // Now the only capable agents are down (busy) and gone (fresh): a new task waits...
    swarm
        .set_health(busy.id, swarm_protocol::Health::Down)
        .await
        .unwrap();
    swarm.deregister_agent(fresh.id).await.unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "wait2",
            vec![TaskSpec::new(key("third"), cap("x"))],
        ))
        .await
        .unwrap();
    let view = swarm.objective(id).await.unwrap();
    assert_eq!(view.tasks[0].status, TaskStatus::Ready);
    // ...and runs as soon as its agent recovers.
    swarm
        .set_health(busy.id, swarm_protocol::Health::Up)
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    assert_eq!(view.tasks[0].agent, Some(busy.id));
    finish(swarm).await;
}

#[tokio::test]
async fn higher_priority_goes_first_and_lower_still_finishes() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    swarm
        .register_agent(reg("one", &["x"], 1), gated(gate.clone()))
        .await
        .unwrap();
    let blocker = swarm
        .submit(Objective::with_tasks(
            "block",
            vec![TaskSpec::new(key("block"), cap("x"))],
        ))
        .await
        .unwrap();
    events
        .until("blocker started", |e| {
            matches!(e, Event::TaskStarted { .. })
        })
        .await;
    let low_tasks = (0..3)
        .map(|i| TaskSpec::new(key(&format!("low{i}")), cap("x")))
        .collect();
    let low = swarm
        .submit(Objective::with_tasks("low", low_tasks))
        .await
        .unwrap();
    let mut high = Objective::with_tasks(
        "high",
        (0..3)
            .map(|i| TaskSpec::new(key(&format!("high{i}")), cap("x")))
            .collect(),
    );
    high.priority = 10;
    let high = swarm.submit(high).await.unwrap();
    gate.add_permits(100);
    for id in [blocker, low, high] {
        assert_eq!(
            swarm.wait(id, PATIENCE).await.unwrap().status,
            ObjectiveStatus::Succeeded
        );
    }
    let order: Vec<_> = events
        .drain()
        .iter()
        .filter_map(|r| match r.event {
            Event::TaskStarted { objective, .. } if objective != blocker => Some(objective),
            _ => None,
        })
        .collect();
    assert_eq!(order, [high, high, high, low, low, low]);
    finish(swarm).await;
}

#[tokio::test]
async fn cancelling_stops_allocation_and_running_attempts() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    swarm
        .register_agent(reg("one", &["x"], 1), gated(gate.clone()))
        .await
        .unwrap();
    let tasks = (0..3)
        .map(|i| TaskSpec::new(key(&format!("t{i}")), cap("x")))
        .collect();
    let id = swarm
        .submit(Objective::with_tasks("c", tasks))
        .await
        .unwrap();
    events
        .until("a task started", |e| matches!(e, Event::TaskStarted { .. }))
        .await;
    // Another objective's task queues behind the running attempt that is about to be cancelled.
    let other = swarm
        .submit(Objective::with_tasks(
            "o",
            vec![TaskSpec::new(key("o"), cap("x"))],
        ))
        .await
        .unwrap();
    swarm.cancel(id).await.unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Cancelled);
    assert!(view.tasks.iter().all(|t| t.status == TaskStatus::Cancelled));
    // The freed slot goes to the queued task at once, though the cancelled attempt never ended.
    events
        .until(
            "the other objective's task started",
            |e| matches!(e, Event::TaskStarted { objective, .. } if *objective == other),
        )
        .await;
    gate.add_permits(100);
    assert_eq!(
        swarm.wait(other, PATIENCE).await.unwrap().status,
        ObjectiveStatus::Succeeded
    );
    let stats = swarm.stats().await.unwrap();
    assert_eq!(stats.tasks_running, 0);
    finish(swarm).await;
}

#[tokio::test]
async fn a_burst_spreads_over_small_agents_and_batches_on_large_ones() {
    let (swarm, mut events) = start().await;
    let mut small = Vec::new();
    for i in 0..4 {
        let d = swarm
            .register_agent(
                reg(&format!("small-{i}"), &["small"], 2),
                AgentFactory::shared(EchoAgent),
            )
            .await
            .unwrap();
        small.push(d.id);
    }
    for i in 0..2 {
        swarm
            .register_agent(
                reg(&format!("big-{i}"), &["big"], 16),
                AgentFactory::shared(EchoAgent),
            )
            .await
            .unwrap();
    }
    let burst = |cap_name: &str, n: usize| {
        let tasks = (0..n)
            .map(|i| TaskSpec::new(key(&format!("{cap_name}{i}")), cap(cap_name)))
            .collect();
        Objective::with_tasks("burst", tasks)
    };
    let agents_of = |events: &swarm_testkit::Events, objective| {
        events
            .seen
            .iter()
            .filter_map(|r| match r.event {
                Event::TaskStarted {
                    objective: o,
                    agent,
                    ..
                } if o == objective => Some(agent),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // Agents of capacity 2 (as model agents are): least-loaded choice for every task.
    let id = swarm.submit(burst("small", 4)).await.unwrap();
    swarm.wait(id, PATIENCE).await.unwrap();
    events.drain();
    let mut used = agents_of(&events, id);
    used.sort();
    assert_eq!(used, small, "one task per small agent");

    // Agents of capacity 16: the chosen agent takes 16 / 8 = 2 tasks of the burst at once.
    let id = swarm.submit(burst("big", 2)).await.unwrap();
    swarm.wait(id, PATIENCE).await.unwrap();
    events.drain();
    let used = agents_of(&events, id);
    assert_eq!(used.len(), 2);
    assert_eq!(
        used[0], used[1],
        "both tasks of the burst went to one large agent"
    );
    finish(swarm).await;
}

#[tokio::test]
async fn a_permanent_failure_fails_over_to_another_agent_or_fails_the_task() {
    let (swarm, _events) = start().await;
    let refused = Arc::new(AtomicU32::new(0));
    let counter = refused.clone();
    let refusing = FnAgent::new(move |_task, _ctx| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { TaskOutcome::failure(FailureKind::Permanent, "401 invalid api key") }
    });
    let refuser = swarm
        .register_agent(reg("refuses", &["x"], 4), AgentFactory::shared(refusing))
        .await
        .unwrap();
    // Alone, the refusing agent fails the task at once, with its message.
    let lone = swarm
        .submit(Objective::with_tasks(
            "alone",
            vec![TaskSpec::new(key("a"), cap("x"))],
        ))
        .await
        .unwrap();
    let view = swarm.wait(lone, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let task = view.task("a").unwrap();
    assert_eq!(task.attempts, 1, "no retry on the agent that refused");
    assert!(
        task.error
            .as_deref()
            .unwrap()
            .contains("401 invalid api key")
    );

    // With a fallback agent, tasks the first one refuses move to it.
    swarm
        .register_agent(reg("works", &["x"], 4), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| TaskSpec::new(key(&format!("t{i}")), cap("x")))
        .collect();
    let before = refused.load(Ordering::SeqCst);
    let id = swarm
        .submit(Objective::with_tasks("fallback", tasks))
        .await
        .unwrap();
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert!(
        refused.load(Ordering::SeqCst) > before,
        "the refusing agent got some tasks"
    );
    for t in &view.tasks {
        assert_ne!(
            t.agent,
            Some(refuser.id),
            "{} finished on the refusing agent",
            t.key
        );
    }
    finish(swarm).await;
}

#[tokio::test]
async fn draining_lets_running_attempts_finish_and_starts_nothing_new() {
    let (swarm, mut events) = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let gated = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            let _permit = permits.acquire().await;
            TaskOutcome::success(json!("done"))
        }
    });
    swarm
        .register_agent(reg("gated", &["x"], 1), AgentFactory::shared(gated))
        .await
        .unwrap();
    let id = swarm
        .submit(Objective::with_tasks(
            "two",
            vec![
                TaskSpec::new(key("first"), cap("x")),
                TaskSpec::new(key("second"), cap("x")),
            ],
        ))
        .await
        .unwrap();
    events
        .until("the first attempt", |e| {
            matches!(e, Event::TaskStarted { .. })
        })
        .await;
    let draining = {
        let swarm = &swarm;
        async move { swarm.drain(PATIENCE).await.unwrap() }
    };
    let open = async {
        // The gate opens only once the agent is marked draining.
        events
            .until("draining", |e| {
                matches!(e, Event::AgentHealthChanged { .. })
            })
            .await;
        gate.add_permits(1);
    };
    let (still_running, ()) = tokio::join!(draining, open);
    assert_eq!(still_running, 0);
    let view = swarm.objective(id).await.unwrap();
    let started: Vec<_> = view.tasks.iter().filter(|t| t.attempts > 0).collect();
    assert_eq!(
        started.len(),
        1,
        "a draining agent took new work: {view:#?}"
    );
    assert_eq!(started[0].status, TaskStatus::Succeeded);
    finish(swarm).await;
}

/// A swarm without a log that keeps `keep_finished` finished objectives, forgetting older ones
/// only when `forget` is set; one `x` agent echoes.
async fn in_memory_keeping(keep_finished: usize, forget: bool) -> Swarm {
    let mut config = fast_restarts(2);
    config.scheduler.keep_finished = keep_finished;
    config.scheduler.forget_finished_in_memory = forget;
    let swarm = Swarm::start(config).await.unwrap();
    swarm
        .register_agent(reg("e", &["x"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    swarm
}

/// Runs `count` one-task objectives, one after the other, each to its end.
async fn run_in_turn(swarm: &Swarm, count: usize) -> Vec<ObjectiveId> {
    let mut ids = Vec::new();
    for i in 0..count {
        let objective =
            Objective::with_tasks(format!("o{i}"), vec![TaskSpec::new(key("a"), cap("x"))]);
        let id = swarm.submit(objective).await.unwrap();
        let summary = swarm.wait_summary(id, PATIENCE).await.unwrap();
        assert_eq!(summary.status, ObjectiveStatus::Succeeded);
        ids.push(id);
    }
    ids
}

/// Every task the scheduler holds in memory.
async fn tasks_held(swarm: &Swarm) -> u64 {
    let query = TaskQuery {
        status: None,
        objective: None,
        capability: None,
        agent: None,
        after: None,
        limit: 0,
        newest_first: false,
    };
    swarm.tasks(query).await.unwrap().total
}

#[tokio::test]
async fn an_in_memory_swarm_told_to_forget_drops_finished_objectives_past_its_bound() {
    let swarm = in_memory_keeping(2, true).await;
    let ids = run_in_turn(&swarm, 5).await;
    for &old in &ids[..3] {
        for asked in [
            swarm.objective(old).await.map(|view| view.status),
            swarm
                .wait_summary(old, PATIENCE)
                .await
                .map(|summary| summary.status),
        ] {
            assert!(
                matches!(
                    asked,
                    Err(Error::Scheduler(SchedulerError::UnknownObjective(id))) if id == old
                ),
                "{old} was dropped, yet asking for it answered {asked:?}"
            );
        }
    }
    for &kept in &ids[3..] {
        assert_eq!(
            swarm.objective(kept).await.unwrap().status,
            ObjectiveStatus::Succeeded
        );
    }
    assert_eq!(
        tasks_held(&swarm).await,
        2,
        "the two kept objectives' tasks only"
    );
    finish(swarm).await;
}

#[tokio::test]
async fn an_in_memory_swarm_keeps_every_finished_objective_unless_told_to_forget() {
    // The same bound, without the flag: nothing could read a dropped objective back, so none is.
    let swarm = in_memory_keeping(2, false).await;
    let ids = run_in_turn(&swarm, 5).await;
    for id in ids {
        assert_eq!(
            swarm.objective(id).await.unwrap().status,
            ObjectiveStatus::Succeeded
        );
    }
    assert_eq!(tasks_held(&swarm).await, 5);
    finish(swarm).await;
}
