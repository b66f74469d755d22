#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus};
use serde_json::{Value, json};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, Capability, FailureKind, ObjectiveId, Report, SchedulerMsg,
    Task, TaskId, TaskKey, TaskOutcome,
};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use super::{AgentActor, AgentArgs};
use crate::agent::{Agent, AgentFactory};
use crate::builtin::FnAgent;
use crate::sink::{ReportInbox, report_queue};

/// Stands in for the scheduler: it forwards each `ReportsReady` doorbell to the test.
struct Doorbell;

impl Actor for Doorbell {
    type Msg = SchedulerMsg;
    type State = UnboundedSender<()>;
    type Arguments = UnboundedSender<()>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        rings: UnboundedSender<()>,
    ) -> Result<UnboundedSender<()>, ActorProcessingErr> {
        Ok(rings)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        rings: &mut UnboundedSender<()>,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(message, SchedulerMsg::ReportsReady) {
            let _ = rings.send(());
        }
        Ok(())
    }
}

/// One agent actor wired to a stand-in scheduler.
struct Harness {
    agent: ActorRef<AgentMsg>,
    agent_handle: JoinHandle<()>,
    inbox: ReportInbox,
    rings: UnboundedReceiver<()>,
    // Kept so the stand-in scheduler lives as long as the test.
    _scheduler: ActorRef<SchedulerMsg>,
}

const AGENT: AgentId = AgentId(1);

impl Harness {
    async fn start(agent: impl Agent, max_concurrency: u32) -> Self {
        let (rings_tx, rings) = unbounded_channel();
        let (scheduler, _) = Actor::spawn(None, Doorbell, rings_tx).await.unwrap();
        let (inbox, make_sink) = report_queue();
        let args = AgentArgs {
            id: AGENT,
            name: Arc::from("tested"),
            agent: AgentFactory::shared(agent).make(),
            reports: make_sink(scheduler.clone()),
            max_concurrency,
        };
        let (agent, agent_handle) = Actor::spawn(None, AgentActor, args).await.unwrap();
        Self {
            agent,
            agent_handle,
            inbox,
            rings,
            _scheduler: scheduler,
        }
    }

    fn run(&self, batch: Vec<Assignment>) {
        self.agent.cast(AgentMsg::Run(batch)).unwrap();
    }

    /// The next batch of reports, waiting for the doorbell if none is queued.
    async fn next_reports(&mut self) -> Vec<Report> {
        loop {
            if let Some((agent, reports)) = self.inbox.try_next() {
                assert_eq!(agent, AGENT);
                return reports;
            }
            self.rings.recv().await.unwrap();
            self.inbox.rearm();
        }
    }

    async fn in_flight(&self) -> usize {
        ractor::call!(self.agent, AgentMsg::InFlight).unwrap()
    }
}

fn assignment(id: u64, input: Value) -> Assignment {
    assignment_with_timeouts(id, input, None, None)
}

fn assignment_with_timeouts(
    id: u64,
    input: Value,
    idle_timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
) -> Assignment {
    Assignment {
        task: Task {
            id: TaskId(id),
            objective: ObjectiveId::new(),
            key: TaskKey::new("t").unwrap(),
            capability: Capability::new("x").unwrap(),
            attempt: 1,
            input: Arc::new(input),
            upstream: Default::default(),
            idle_timeout,
            hard_timeout,
            priority: 0,
        },
        ready_at: std::time::Instant::now(),
        parent_span: None,
    }
}

/// Fails the test unless `outcome` is a timeout; returns its message and partial output.
fn timeout_of(outcome: &TaskOutcome) -> (&str, Option<&Value>) {
    match outcome {
        TaskOutcome::Failed {
            kind: FailureKind::Timeout,
            message,
            partial_output,
            ..
        } => (message, partial_output.as_ref()),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// Sends on its channel when dropped, which shows that an attempt's future was dropped.
struct DropSignal(UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[tokio::test]
async fn attempts_that_answer_at_once_share_one_report_batch() {
    let agent = FnAgent::new(|task, _ctx| async move {
        TaskOutcome::success(json!(task.input.as_i64().unwrap() * 10))
    });
    let mut harness = Harness::start(agent, 4).await;
    harness.run(vec![
        assignment(1, json!(1)),
        assignment(2, json!(2)),
        assignment(3, json!(3)),
    ]);
    let reports = harness.next_reports().await;
    let got: Vec<(TaskId, TaskOutcome)> =
        reports.into_iter().map(|r| (r.task, r.outcome)).collect();
    assert_eq!(
        got,
        [
            (TaskId(1), TaskOutcome::success(json!(10))),
            (TaskId(2), TaskOutcome::success(json!(20))),
            (TaskId(3), TaskOutcome::success(json!(30))),
        ]
    );
    // Nothing ran off the mailbox, and nothing else was reported.
    assert_eq!(harness.in_flight().await, 0);
    assert!(harness.inbox.try_next().is_none());
}

#[tokio::test]
async fn an_async_attempt_holds_a_slot_until_it_reports() {
    let gate = Arc::new(Semaphore::new(0));
    let agent_gate = gate.clone();
    let agent = FnAgent::new(move |_task, _ctx| {
        let gate = agent_gate.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            TaskOutcome::success(json!("done"))
        }
    });
    let mut harness = Harness::start(agent, 4).await;
    harness.run(vec![assignment(7, Value::Null)]);
    assert_eq!(harness.in_flight().await, 1);
    assert!(harness.inbox.try_next().is_none());

    gate.add_permits(1);
    let reports = harness.next_reports().await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].task, TaskId(7));
    assert_eq!(reports[0].attempt, 1);
    assert_eq!(reports[0].outcome, TaskOutcome::success(json!("done")));
    // The slot is freed before the report goes out.
    assert_eq!(harness.in_flight().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_attempt_times_out_idle_keeping_its_streamed_text() {
    let agent = FnAgent::new(|_task, ctx| async move {
        for _ in 0..3 {
            ctx.append_text("a");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<TaskOutcome>().await
    });
    let mut harness = Harness::start(agent, 1).await;
    let start = tokio::time::Instant::now();
    harness.run(vec![assignment_with_timeouts(
        1,
        Value::Null,
        Some(Duration::from_secs(5)),
        None,
    )]);
    let reports = harness.next_reports().await;
    assert_eq!(reports.len(), 1);
    let (message, partial) = timeout_of(&reports[0].outcome);
    assert!(message.contains("idle"), "{message}");
    assert_eq!(partial, Some(&json!("aaa")));
    // The last chunk came at 2s, so the attempt was given up 5s later.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(harness.in_flight().await, 0);
}

/// Timeouts too long for an `Instant` (as a client once sent: `10000000000000000000s`)
/// never come; the attempt runs to its end and the actor lives on.
#[tokio::test(start_paused = true)]
async fn timeouts_past_what_an_instant_holds_never_fire_and_never_panic() {
    let agent = FnAgent::new(|_task, ctx| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        ctx.heartbeat();
        tokio::time::sleep(Duration::from_secs(3)).await;
        TaskOutcome::success(json!("done"))
    });
    let mut harness = Harness::start(agent, 2).await;
    let huge = Duration::from_secs(10_000_000_000_000_000_000);
    harness.run(vec![
        assignment_with_timeouts(1, Value::Null, Some(huge), Some(huge)),
        assignment_with_timeouts(2, Value::Null, Some(Duration::MAX), None),
    ]);
    let mut reports = harness.next_reports().await;
    while reports.len() < 2 {
        reports.extend(harness.next_reports().await);
    }
    for report in &reports {
        assert_eq!(report.outcome, TaskOutcome::success(json!("done")));
    }
    assert_eq!(harness.in_flight().await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_busy_attempt_is_stopped_at_its_hard_timeout() {
    let agent = FnAgent::new(|_task, ctx| async move {
        ctx.set_partial(json!({"draft": 1}));
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.heartbeat();
        }
    });
    let mut harness = Harness::start(agent, 1).await;
    let start = tokio::time::Instant::now();
    // Heartbeats keep the idle timeout from firing; only the hard timeout can.
    harness.run(vec![assignment_with_timeouts(
        1,
        Value::Null,
        Some(Duration::from_secs(5)),
        Some(Duration::from_secs(10)),
    )]);
    let reports = harness.next_reports().await;
    assert_eq!(reports.len(), 1);
    let (message, partial) = timeout_of(&reports[0].outcome);
    assert!(message.contains("hard timeout"), "{message}");
    assert_eq!(partial, Some(&json!({"draft": 1})));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_spawned_attempt_fails_the_actor() {
    let agent = FnAgent::new(|_task, _ctx| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        panic!("plug-in bug");
    });
    let mut harness = Harness::start(agent, 1).await;
    harness.run(vec![assignment(1, Value::Null)]);
    (&mut harness.agent_handle).await.unwrap();
    assert_eq!(harness.agent.get_status(), ActorStatus::Stopped);
    // The crashed attempt never reports: the scheduler re-queues it when it hears of the loss.
    assert!(harness.inbox.try_next().is_none());
}

#[tokio::test]
async fn a_panic_on_the_first_poll_fails_the_actor_after_reporting_earlier_attempts() {
    let agent = FnAgent::new(|task, _ctx| async move {
        assert!(task.id != TaskId(2), "plug-in bug");
        TaskOutcome::success(Value::Null)
    });
    let mut harness = Harness::start(agent, 4).await;
    harness.run(vec![
        assignment(1, Value::Null),
        assignment(2, Value::Null),
        assignment(3, Value::Null),
    ]);
    (&mut harness.agent_handle).await.unwrap();
    assert_eq!(harness.agent.get_status(), ActorStatus::Stopped);
    let reports = harness.next_reports().await;
    let tasks: Vec<TaskId> = reports.iter().map(|r| r.task).collect();
    assert_eq!(tasks, [TaskId(1)]);
    assert!(harness.inbox.try_next().is_none());
}

#[tokio::test]
async fn a_cancelled_attempt_is_aborted_and_never_reports() {
    let gate = Arc::new(Semaphore::new(0));
    let (dropped_tx, mut dropped) = unbounded_channel();
    let agent_gate = gate.clone();
    let agent = FnAgent::new(move |task, _ctx| {
        let gate = agent_gate.clone();
        let guard = DropSignal(dropped_tx.clone());
        async move {
            if task.input.as_str() == Some("slow") {
                let _guard = guard;
                let _permit = gate.acquire().await.unwrap();
            }
            TaskOutcome::success(json!(task.id.get()))
        }
    });
    let mut harness = Harness::start(agent, 4).await;
    harness.run(vec![assignment(1, json!("slow"))]);
    assert_eq!(harness.in_flight().await, 1);

    harness
        .agent
        .cast(AgentMsg::Cancel {
            task: TaskId(1),
            attempt: 1,
        })
        .unwrap();
    assert_eq!(harness.in_flight().await, 0);
    // The attempt's future was dropped, not merely forgotten.
    dropped.recv().await.unwrap();
    // Opening the gate now has no attempt left to wake.
    gate.add_permits(1);

    harness.run(vec![assignment(2, json!("quick"))]);
    let reports = harness.next_reports().await;
    let got: Vec<(TaskId, TaskOutcome)> =
        reports.into_iter().map(|r| (r.task, r.outcome)).collect();
    assert_eq!(got, [(TaskId(2), TaskOutcome::success(json!(2)))]);
    assert!(harness.inbox.try_next().is_none());
    assert_eq!(harness.in_flight().await, 0);
}

#[tokio::test]
async fn drain_is_answered_once_the_last_running_attempt_reported() {
    let gate = Arc::new(Semaphore::new(0));
    let agent_gate = gate.clone();
    let agent = FnAgent::new(move |_task, _ctx| {
        let gate = agent_gate.clone();
        async move {
            // Each permit lets exactly one attempt finish.
            gate.acquire().await.unwrap().forget();
            TaskOutcome::success(json!("finished"))
        }
    });
    let harness = Harness::start(agent, 4).await;
    // Idle: answered at once.
    ractor::call!(harness.agent, AgentMsg::Drain).unwrap();

    harness.run(vec![assignment(1, Value::Null), assignment(2, Value::Null)]);
    let (tx, mut drained) = tokio::sync::oneshot::channel();
    harness.agent.cast(AgentMsg::Drain(tx.into())).unwrap();
    // The round trip comes after the drain in the mailbox: it was handled, not answered.
    assert_eq!(harness.in_flight().await, 2);
    assert!(drained.try_recv().is_err());
    gate.add_permits(1);
    // One attempt left: still waiting.
    let mut harness = harness;
    let first = harness.next_reports().await;
    assert_eq!(first.len(), 1);
    assert_eq!(harness.in_flight().await, 1);
    assert!(drained.try_recv().is_err());
    gate.add_permits(1);
    drained.await.unwrap();
    // The last report was in the queue before the answer.
    let (_, last) = harness.inbox.try_next().unwrap();
    assert_eq!(last.len(), 1);
    assert_ne!(last[0].task, first[0].task);
    assert_eq!(last[0].outcome, TaskOutcome::success(json!("finished")));
}

#[tokio::test]
async fn an_attempt_beyond_the_concurrency_limit_fails_as_transient() {
    let gate = Arc::new(Semaphore::new(0));
    let agent_gate = gate.clone();
    let agent = FnAgent::new(move |_task, _ctx| {
        let gate = agent_gate.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            TaskOutcome::success(Value::Null)
        }
    });
    let mut harness = Harness::start(agent, 1).await;
    harness.run(vec![assignment(1, Value::Null), assignment(2, Value::Null)]);
    let reports = harness.next_reports().await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].task, TaskId(2));
    assert!(
        matches!(
            reports[0].outcome,
            TaskOutcome::Failed {
                kind: FailureKind::Transient,
                ..
            }
        ),
        "{:?}",
        reports[0].outcome
    );
    assert_eq!(harness.in_flight().await, 1);
    gate.add_permits(1);
    let reports = harness.next_reports().await;
    assert_eq!(reports[0].task, TaskId(1));
    assert_eq!(harness.in_flight().await, 0);
}
