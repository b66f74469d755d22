//! A property-based state-machine test of the scheduler, through `Swarm` on a real SQLite log.
//!
//! proptest generates a run: random submits of small graphs whose tasks follow a script per
//! attempt (success, transient and permanent failures, stalls that hit the hard timeout,
//! output that fails its schema and goes to review, where a review deadline may decide it,
//! agent crashes, spawned follow-ups, and attempts held until the run releases them), agent
//! registrations, releases, cancels, review decisions and restarts of the whole swarm from
//! its log. After every step the events committed since the last one are checked against a
//! model:
//! - capacity is never exceeded: an agent never has more attempts started and not ended than
//!   it registered for;
//! - no task starts before each of its dependencies succeeded (or was approved), and a task
//!   never runs two attempts at once;
//! - no outcome of a stale attempt commits: every end of an attempt names the attempt that is
//!   running, on the agent it runs on, and a fenced result never does;
//! - an objective succeeds only with every task done.
//!
//! At the end every accepted objective must end, and each one's view rebuilt from the log
//! alone must equal the live one.
//!
//! `PROPTEST_CASES` (default 24, split over four tests that run at once) and `SWARM_SM_STEPS`
//! (default 200) set the size; CI runs 1,000 cases of 200 steps (`scripts/battery.sh`). A
//! failing case prints its seed and is saved in `tests/state_machine.proptest-regressions`,
//! which replays it first. When objectives never end, `SWARM_SM_DUMP=<file>` writes the whole
//! log there for reading.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::replay::replay_objective;
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{
    AgentId, Event, EventRecord, Objective, ObjectiveId, ReviewDecision, Task, TaskId, TaskKey,
    TaskOutcome, TaskQuery, TaskStatus,
};
use swarm_protocol::{FailureKind, TaskSpec};
use swarm_testkit::{PATIENCE, reg};
use tokio::sync::oneshot;

const CAPABILITIES: [&str; 2] = ["a", "b"];

/// What a task does on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Ok,
    Transient,
    Permanent,
    /// Never answers: the task's hard timeout ends the attempt.
    Stall,
    /// Answers output its schema refuses: the task goes to review.
    Invalid,
    /// The agent panics: its actor fails and is restarted, the attempt is lost.
    Crash,
    /// Succeeds with one follow-up task in its output's `spawn` member.
    Spawn,
    /// Waits until the run releases it (or the swarm stops).
    Hold,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Stall => "stall",
            Self::Invalid => "invalid",
            Self::Crash => "crash",
            Self::Spawn => "spawn",
            Self::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone)]
struct TaskPlan {
    capability: usize,
    /// Indices of earlier tasks of the same objective.
    depends_on: Vec<usize>,
    script: Vec<Step>,
    /// For a task whose output may go to review: a review deadline of a few milliseconds
    /// and what it decides (`ON_REVIEW_TIMEOUT`), or none.
    review_deadline: Option<usize>,
}

/// The decisions a review deadline may take.
const ON_REVIEW_TIMEOUT: [&str; 3] = ["approve", "reject", "escalate"];

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<TaskPlan>),
    Register { capability: usize, capacity: u32 },
    Release,
    Cancel(usize),
    Review { pick: usize, decision: u8 },
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Ok),
        2 => Just(Step::Transient),
        1 => Just(Step::Permanent),
        1 => Just(Step::Stall),
        1 => Just(Step::Invalid),
        1 => Just(Step::Crash),
        1 => Just(Step::Spawn),
        2 => Just(Step::Hold),
    ]
}

fn graph() -> impl Strategy<Value = Vec<TaskPlan>> {
    prop::collection::vec(
        (
            0..CAPABILITIES.len(),
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            prop::collection::vec(step(), 1..4),
            prop::option::of(0..ON_REVIEW_TIMEOUT.len()),
        ),
        1..5,
    )
    .prop_map(|tasks| {
        tasks
            .into_iter()
            .enumerate()
            .map(|(i, (capability, deps, script, review_deadline))| {
                let mut depends_on: Vec<usize> = if i == 0 {
                    Vec::new()
                } else {
                    deps.iter().map(|d| d.index(i)).collect()
                };
                depends_on.sort_unstable();
                depends_on.dedup();
                TaskPlan {
                    capability,
                    depends_on,
                    script,
                    review_deadline,
                }
            })
            .collect()
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => graph().prop_map(Op::Submit),
        2 => (0..CAPABILITIES.len(), 1..4u32)
            .prop_map(|(capability, capacity)| Op::Register { capability, capacity }),
        12 => Just(Op::Release),
        2 => any::<usize>().prop_map(Op::Cancel),
        4 => (any::<usize>(), 0..3u8).prop_map(|(pick, decision)| Op::Review { pick, decision }),
        // About three restarts in a run of 200 steps: each reopens the log and recovers.
        1 => Just(Op::Restart),
    ]
}

fn objective_of(plans: &[TaskPlan]) -> Objective {
    let tasks = plans
        .iter()
        .enumerate()
        .map(|(i, plan)| {
            let script: Vec<&str> = plan.script.iter().map(|s| s.name()).collect();
            let mut spec = json!({
                "id": format!("t{i}"),
                "capability": CAPABILITIES[plan.capability],
                "input": {"script": script},
                "depends_on": plan.depends_on.iter().map(|d| format!("t{d}")).collect::<Vec<_>>(),
                "retry": {"max_attempts": 3, "initial_backoff": "1ms", "max_backoff": "2ms"},
            });
            if plan.script.contains(&Step::Stall) {
                spec["hard_timeout"] = json!("5ms");
            }
            if plan.script.contains(&Step::Invalid) {
                spec["output_schema"] = json!({"type": "object"});
                if let Some(then) = plan.review_deadline {
                    spec["review_timeout"] = json!("3ms");
                    spec["on_review_timeout"] = json!(ON_REVIEW_TIMEOUT[then]);
                }
            }
            serde_json::from_value::<TaskSpec>(spec).unwrap()
        })
        .collect();
    Objective::with_tasks("state machine", tasks)
}

/// Attempts held until the run releases them, and a bell rung when one is added.
#[derive(Default)]
struct Held {
    waiting: Mutex<VecDeque<oneshot::Sender<()>>>,
    added: tokio::sync::Notify,
}

impl Held {
    fn hold(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().push_back(tx);
        self.added.notify_one();
        rx
    }

    fn release_one(&self) -> bool {
        let mut held = self.waiting.lock().unwrap();
        while let Some(waiter) = held.pop_front() {
            if waiter.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

fn scripted(held: Arc<Held>) -> AgentFactory {
    AgentFactory::shared(FnAgent::new(move |task: Task, _ctx| {
        let held = held.clone();
        async move {
            let script = task.input["script"].as_array().cloned().unwrap_or_default();
            let at = (task.attempt as usize)
                .saturating_sub(1)
                .min(script.len().saturating_sub(1));
            let step = script.get(at).and_then(Value::as_str).unwrap_or("ok");
            match step {
                "transient" => TaskOutcome::failure(FailureKind::Transient, "scripted 503"),
                "permanent" => TaskOutcome::failure(FailureKind::Permanent, "scripted 401"),
                "stall" => std::future::pending().await,
                "invalid" => TaskOutcome::success(json!("not an object")),
                "crash" => {
                    tokio::task::yield_now().await;
                    panic!("scripted crash of {}", task.id);
                }
                "spawn" => TaskOutcome::success(json!({
                    "output": {"spawned_by": task.id.get()},
                    "spawn": [{"id": format!("s{}", task.id.get()), "capability": "a",
                               "input": {"script": ["ok"]}}],
                })),
                "hold" => {
                    let _ = held.hold().await;
                    TaskOutcome::success(json!({"held": task.attempt}))
                }
                _ => TaskOutcome::success(json!({"attempt": task.attempt})),
            }
        }
    }))
}

/// What the committed log says, checked event by event.
#[derive(Default)]
struct Model {
    capacity: HashMap<AgentId, u32>,
    running: HashMap<AgentId, u32>,
    open: HashMap<TaskId, (u32, AgentId)>,
    last_ended: HashMap<TaskId, (u32, AgentId)>,
    done: HashSet<TaskId>,
    deps: HashMap<TaskId, Vec<TaskId>>,
    tasks_of: HashMap<ObjectiveId, Vec<TaskId>>,
    keys: HashMap<(ObjectiveId, TaskKey), TaskId>,
    ended: HashSet<ObjectiveId>,
    seq: u64,
}

impl Model {
    fn add_tasks(&mut self, objective: ObjectiveId, first: TaskId, tasks: &[TaskSpec]) {
        for (i, spec) in tasks.iter().enumerate() {
            let id = TaskId(first.get() + i as u64);
            self.keys.insert((objective, spec.id.clone()), id);
            self.tasks_of.entry(objective).or_default().push(id);
        }
        for (i, spec) in tasks.iter().enumerate() {
            let id = TaskId(first.get() + i as u64);
            let deps = spec
                .depends_on
                .iter()
                .map(|key| self.keys[&(objective, key.clone())])
                .collect();
            self.deps.insert(id, deps);
        }
    }

    fn end_attempt(&mut self, task: TaskId, attempt: u32, agent: AgentId, what: &str) {
        let open = self.open.remove(&task);
        self.last_ended.insert(task, (attempt, agent));
        assert_eq!(
            open,
            Some((attempt, agent)),
            "{what} of {task} attempt {attempt} on {agent}, but the attempt running is {open:?}"
        );
        if let Some(n) = self.running.get_mut(&agent) {
            *n -= 1;
        }
    }

    fn close(&mut self, task: TaskId) {
        if let Some((attempt, agent)) = self.open.remove(&task) {
            self.last_ended.insert(task, (attempt, agent));
            if let Some(n) = self.running.get_mut(&agent) {
                *n -= 1;
            }
        }
    }

    fn apply(&mut self, record: &EventRecord) {
        assert!(
            record.seq > self.seq,
            "events out of order at {}",
            record.seq
        );
        self.seq = record.seq;
        match &record.event {
            Event::AgentRegistered { descriptor } => {
                self.capacity
                    .insert(descriptor.id, descriptor.max_concurrency);
            }
            Event::ObjectiveSubmitted {
                objective,
                spec,
                first_task,
                ..
            } => self.add_tasks(*objective, *first_task, &spec.tasks),
            Event::TasksSpawned {
                objective,
                first_task,
                tasks,
                ..
            } => self.add_tasks(*objective, *first_task, tasks),
            Event::TaskStarted {
                task,
                attempt,
                agent,
                ..
            } => {
                assert!(
                    !self.open.contains_key(task),
                    "{task} started attempt {attempt} while {:?} runs",
                    self.open[task]
                );
                for dep in self.deps.get(task).into_iter().flatten() {
                    assert!(
                        self.done.contains(dep),
                        "{task} started before its dependency {dep} succeeded"
                    );
                }
                let running = self.running.entry(*agent).or_default();
                *running += 1;
                let capacity = self.capacity.get(agent).copied().unwrap_or(0);
                assert!(
                    *running <= capacity,
                    "{agent} runs {running} attempts; its capacity is {capacity}"
                );
                self.open.insert(*task, (*attempt, *agent));
            }
            Event::TaskSucceeded {
                task,
                attempt,
                agent,
                ..
            } => {
                self.end_attempt(*task, *attempt, *agent, "a success");
                self.done.insert(*task);
            }
            // A task failed for losing too many attempts names the last one, already ended.
            Event::TaskFailed {
                task,
                attempt,
                agent: Some(agent),
                ..
            } if !self.open.contains_key(task) => assert_eq!(
                self.last_ended.get(task),
                Some(&(*attempt, *agent)),
                "a failure of {task} attempt {attempt} on {agent}, which is not the last ended"
            ),
            Event::TaskFailed {
                task,
                attempt,
                agent: Some(agent),
                ..
            } => self.end_attempt(*task, *attempt, *agent, "a failure"),
            Event::TaskFailed { task, .. } => assert!(
                !self.open.contains_key(task),
                "{task} failed without an agent while an attempt runs"
            ),
            Event::AttemptLost {
                task,
                attempt,
                agent: Some(agent),
                ..
            } => self.end_attempt(*task, *attempt, *agent, "a loss"),
            Event::AttemptLost { task, .. } => self.close(*task),
            Event::TaskInReview { task, attempt, .. } => {
                if let Some((running, agent)) = self.open.get(task).copied() {
                    self.end_attempt(*task, *attempt, agent, "a review");
                    assert_eq!(running, *attempt);
                }
            }
            Event::TaskApproved { task, .. } => {
                self.done.insert(*task);
            }
            Event::TaskCancelled { task, .. } => self.close(*task),
            Event::ResultFenced {
                task,
                attempt,
                agent,
                reason,
                ..
            } => assert_ne!(
                self.open.get(task),
                Some(&(*attempt, *agent)),
                "the result of {task}'s running attempt was fenced: {reason}"
            ),
            Event::ObjectiveSucceeded { objective } => {
                for task in self.tasks_of.get(objective).into_iter().flatten() {
                    assert!(
                        self.done.contains(task),
                        "{objective} succeeded with {task} not done"
                    );
                }
                assert!(self.ended.insert(*objective), "{objective} ended twice");
            }
            Event::ObjectiveFailed { objective, .. } | Event::ObjectiveCancelled { objective } => {
                assert!(self.ended.insert(*objective), "{objective} ended twice");
            }
            _ => {}
        }
    }
}

struct Run {
    dir: tempfile::TempDir,
    agents_named: usize,
    swarm: Option<Swarm>,
    held: Arc<Held>,
    model: Model,
    accepted: Vec<ObjectiveId>,
}

fn config() -> SwarmConfig {
    let mut config = swarm_testkit::fast_restarts(1_000);
    // Finished objectives stay in memory, so the live view is the scheduler's, not the log's.
    config.scheduler.keep_finished = 100_000;
    config
}

async fn open(dir: &Path, held: &Arc<Held>, model: &mut Model) -> Swarm {
    // Restarts here are orderly and the machine never loses power: no fsync is needed for
    // what this test checks, and without it a run costs a fraction of the time.
    let mut store = StoreConfig::new(dir);
    store.fsync = false;
    let swarm = Swarm::open(config(), store).await.unwrap();
    for (i, capability) in CAPABILITIES.iter().enumerate() {
        let descriptor = swarm
            .register_agent(
                reg(&format!("{capability}{i}"), &[capability], 2),
                scripted(held.clone()),
            )
            .await
            .unwrap();
        model
            .capacity
            .insert(descriptor.id, descriptor.max_concurrency);
    }
    swarm
}

impl Run {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(Held::default());
        let mut model = Model::default();
        let swarm = open(dir.path(), &held, &mut model).await;
        Self {
            dir,
            agents_named: 0,
            swarm: Some(swarm),
            held,
            model,
            accepted: Vec::new(),
        }
    }

    fn swarm(&self) -> &Swarm {
        self.swarm.as_ref().unwrap()
    }

    /// Checks every event committed since the last check.
    async fn check(&mut self) {
        let store = self.swarm().store().unwrap().clone();
        let events = store.read_after(self.model.seq, usize::MAX).await.unwrap();
        for record in &events {
            self.model.apply(record);
        }
        assert_eq!(self.swarm().failure(), None, "the swarm stopped");
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit(plans) => {
                let id = self.swarm().submit(objective_of(plans)).await.unwrap();
                self.accepted.push(id);
            }
            Op::Register {
                capability,
                capacity,
            } => {
                let name = CAPABILITIES[*capability];
                self.agents_named += 1;
                let registration = reg(
                    &format!("{name}-extra-{}", self.agents_named),
                    &[name],
                    *capacity,
                );
                let descriptor = self
                    .swarm()
                    .register_agent(registration, scripted(self.held.clone()))
                    .await
                    .unwrap();
                self.model
                    .capacity
                    .insert(descriptor.id, descriptor.max_concurrency);
            }
            Op::Release => {
                self.held.release_one();
            }
            Op::Cancel(pick) => {
                if !self.accepted.is_empty() {
                    let id = self.accepted[pick % self.accepted.len()];
                    // Cancelling an objective that already ended is refused; either is fine.
                    let _ = self.swarm().cancel(id).await;
                }
            }
            Op::Review { pick, decision } => {
                let page = self
                    .swarm()
                    .tasks(TaskQuery::status(TaskStatus::Review, 100))
                    .await
                    .unwrap();
                if !page.tasks.is_empty() {
                    let task = page.tasks[pick % page.tasks.len()].task.id;
                    let decision = match decision {
                        0 => ReviewDecision::Approve { output: None },
                        1 => ReviewDecision::Reject {
                            reason: "scripted".into(),
                        },
                        _ => ReviewDecision::Retry,
                    };
                    let _ = self.swarm().review(task, decision).await;
                }
            }
            Op::Restart => {
                let swarm = self.swarm.take().unwrap();
                swarm.shutdown().await.unwrap();
                // Held attempts ended with their actors.
                self.held.waiting.lock().unwrap().clear();
                self.swarm = Some(open(self.dir.path(), &self.held, &mut self.model).await);
            }
        }
        self.check().await;
    }

    /// Lets every accepted objective end: holds released, reviews approved, then waits for the
    /// next committed event until none is left unfinished.
    async fn settle(&mut self) {
        let mut feed = self.swarm().subscribe().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            while self.held.release_one() {}
            let page = self
                .swarm()
                .tasks(TaskQuery::status(TaskStatus::Review, 1_000))
                .await
                .unwrap();
            for task in page.tasks {
                let _ = self
                    .swarm()
                    .review(task.task.id, ReviewDecision::Approve { output: None })
                    .await;
            }
            self.check().await;
            let open: Vec<ObjectiveId> = self
                .accepted
                .iter()
                .copied()
                .filter(|id| !self.model.ended.contains(id))
                .collect();
            if open.is_empty() {
                return;
            }
            // Wake on the next committed event, or on an attempt held after its start was
            // committed (which no event follows until it is released).
            let next = async {
                tokio::select! {
                    event = feed.recv() => match event {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(closed) => panic!("event feed: {closed}"),
                    },
                    () = self.held.added.notified() => {}
                }
            };
            if tokio::time::timeout_at(deadline, next).await.is_err() {
                let mut views = Vec::new();
                for id in &open {
                    let view = self.swarm().objective(*id).await.unwrap();
                    let tasks: Vec<String> = view
                        .tasks
                        .iter()
                        .map(|t| {
                            format!(
                                "{} {} [{}]: {:?} attempt {}",
                                t.id, t.key, t.capability, t.status, t.attempts
                            )
                        })
                        .collect();
                    views.push(format!("{id} {:?}: {tasks:?}", view.status));
                }
                let agents = self.swarm().registry().snapshots();
                let depths = self.swarm().queue_depths().await.unwrap();
                let stats = self.swarm().stats().await.unwrap();
                eprintln!("queue depths {depths:?}; stats {stats:?}");
                let store = self.swarm().store().unwrap().clone();
                let log = store.read_after(0, usize::MAX).await.unwrap();
                if let Ok(path) = std::env::var("SWARM_SM_DUMP") {
                    let all: Vec<String> = log
                        .iter()
                        .map(|r| format!("{} {:?}", r.seq, r.event))
                        .collect();
                    std::fs::write(path, all.join("\n")).unwrap();
                }
                panic!(
                    "objectives never ended:\n{}\nagents: {agents:?}",
                    views.join("\n")
                );
            }
        }
    }

    /// Each objective's view rebuilt from the log equals the live one.
    async fn compare_views(&self) {
        let store = self.swarm().store().unwrap().clone();
        for id in &self.accepted {
            let live = self.swarm().objective(*id).await.unwrap();
            assert!(live.status.is_terminal(), "{id} is {:?}", live.status);
            let (model, _) = replay_objective(store.as_ref(), *id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(model.view(), live, "the replayed view of {id} differs");
        }
    }
}

/// Scripted crashes are expected: their panics are not printed, every other one is.
fn quiet_scripted_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            if !message.starts_with("scripted crash") {
                print(info);
            }
        }));
    });
}

/// The runs of the whole test, split over [`SHARDS`] tests that run at once (a run mostly
/// waits on its swarm, so they share the cores well).
fn cases() -> u32 {
    let total: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    total.div_ceil(SHARDS)
}

const SHARDS: u32 = 4;

fn steps() -> usize {
    std::env::var("SWARM_SM_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One run: the ops in order, then every objective brought to its end and compared with its
/// replay.
fn run(ops: &[Op]) {
    quiet_scripted_crashes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut run = Run::start().await;
        run.check().await;
        for op in ops {
            run.apply(op).await;
        }
        run.settle().await;
        run.compare_views().await;
        run.swarm.take().unwrap().shutdown().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/state_machine.proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_scheduler_keeps_its_invariants_shard_1(
        ops in prop::collection::vec(op(), steps()..=steps())
    ) {
        run(&ops);
    }

    #[test]
    fn the_scheduler_keeps_its_invariants_shard_2(
        ops in prop::collection::vec(op(), steps()..=steps())
    ) {
        run(&ops);
    }

    #[test]
    fn the_scheduler_keeps_its_invariants_shard_3(
        ops in prop::collection::vec(op(), steps()..=steps())
    ) {
        run(&ops);
    }

    #[test]
    fn the_scheduler_keeps_its_invariants_shard_4(
        ops in prop::collection::vec(op(), steps()..=steps())
    ) {
        run(&ops);
    }
}
