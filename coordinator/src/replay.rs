//! Rebuilding state from the event log alone.
//!
//! [`Replay`] folds events, in order, into a model of each objective: its task batches (as
//! submitted and as spawned) and every task's status, attempts, outputs, errors, usage and run
//! time. The same fold serves three readers:
//! - recovery: a restarted coordinator rebuilds every unfinished objective from it
//!   ([`crate::scheduler::SchedulerState`] restores from a [`Recovered`]);
//! - snapshots: the fold of unfinished objectives is what a snapshot stores, so a restart reads
//!   only the snapshot and the events after it;
//! - the chain of work: `swarm replay` folds one objective's events into its final state and
//!   prints its timeline.
//!
//! Each task's part of the model is the scheduler's own [`TaskRecord`], changed by the same
//! fold ([`TaskRecord::apply`]) the live scheduler runs as it records events, and views are
//! built from it by the same functions: replaying a finished objective gives exactly the view
//! the live scheduler had of it (a test compares them), so the log is a complete record.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use swarm_protocol::{
    Event, EventRecord, Limits, ObjectiveId, ObjectiveStatus, ObjectiveView, TaskId, TaskKey,
    TaskSpec,
};
use swarm_store::{EventStore, StoreError, StoredEvent};

use crate::scheduler::{TaskRecord, link, objective_view, task_of};

/// Tasks added to an objective at once: the submitted graph, or one spawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBatch {
    /// The id of `specs[0]`; the others follow consecutively.
    pub first_task: TaskId,
    /// The task whose output spawned the batch (each spawned task also depends on it).
    pub parent: Option<TaskId>,
    /// The tasks as declared.
    pub specs: Vec<TaskSpec>,
}

/// An index of an objective's task names, kept beside its model to link each new batch as the
/// scheduler links it. It is derived from the batches (and rebuilt from them after a snapshot
/// is read), so it takes no part in comparing models.
#[derive(Debug, Clone, Default)]
struct KeyIndex {
    ids: FxHashMap<TaskKey, TaskId>,
    /// Batches indexed so far.
    batches: usize,
}

impl PartialEq for KeyIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl KeyIndex {
    /// Indexes the batches not yet indexed.
    fn catch_up(&mut self, batches: &[TaskBatch]) {
        for batch in batches.iter().skip(self.batches) {
            for (i, spec) in batch.specs.iter().enumerate() {
                self.ids
                    .insert(spec.id.clone(), TaskId(batch.first_task.0 + i as u64));
            }
        }
        self.batches = batches.len();
    }
}

/// One objective as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveModel {
    /// The objective.
    pub id: ObjectiveId,
    /// Its goal.
    pub goal: String,
    /// Its priority.
    pub priority: i32,
    /// Its limits (as accepted).
    pub limits: Limits,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// Its status.
    pub status: ObjectiveStatus,
    /// Why it failed.
    pub failure: Option<String>,
    /// When it was accepted.
    pub submitted_at_ms: u64,
    /// When it ended.
    pub ended_at_ms: Option<u64>,
    /// Submitted without tasks, for the planner to decompose.
    #[serde(default)]
    pub planned: bool,
    /// Re-plans asked for so far.
    #[serde(default)]
    pub replans: u32,
    /// Its task batches, in the order they were added (a planning task is a batch of one).
    pub batches: Vec<TaskBatch>,
    /// Its tasks, by increasing id.
    pub tasks: Vec<TaskRecord>,
    /// Succeeded tasks that have a compensation, in the order they succeeded (the reverse of
    /// the order their compensations run in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensable: Vec<TaskId>,
    /// Events folded into this model.
    #[serde(default)]
    pub events: u64,
    /// Its task names, to link new batches.
    #[serde(skip)]
    keys: KeyIndex,
}

impl ObjectiveModel {
    /// The task with this id.
    pub fn task(&self, id: TaskId) -> Option<&TaskRecord> {
        self.tasks
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .and_then(|i| self.tasks.get(i))
    }

    fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskRecord> {
        self.tasks
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .and_then(|i| self.tasks.get_mut(i))
    }

    /// The spec of a task of one of its batches (not of a compensation).
    pub fn spec(&self, id: TaskId) -> Option<&TaskSpec> {
        let i = self.batches.partition_point(|b| b.first_task <= id);
        let batch = self.batches.get(i.checked_sub(1)?)?;
        let offset = usize::try_from(id.0.checked_sub(batch.first_task.0)?).ok()?;
        batch.specs.get(offset)
    }

    /// Adds a batch, each task linked to its dependencies as the scheduler links it.
    fn add_batch(&mut self, first_task: TaskId, parent: Option<TaskId>, specs: Vec<TaskSpec>) {
        if specs.is_empty() {
            return;
        }
        self.keys.catch_up(&self.batches);
        for (i, spec) in specs.iter().enumerate() {
            self.keys
                .ids
                .insert(spec.id.clone(), TaskId(first_task.0 + i as u64));
        }
        self.tasks.reserve(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let deps = link(&spec.depends_on, parent, |k| self.keys.ids.get(k).copied());
            let id = TaskId(first_task.0 + i as u64);
            self.tasks
                .push(TaskRecord::declared(id, spec, self.id, parent, deps));
        }
        self.batches.push(TaskBatch {
            first_task,
            parent,
            specs,
        });
        self.keys.batches = self.batches.len();
    }

    /// The objective as the scheduler shows it.
    pub fn view(&self) -> ObjectiveView {
        objective_view(
            self.id,
            &self.goal,
            self.status,
            self.failure.as_deref(),
            &self.tasks,
        )
    }
}

/// The fold of a log (or of part of one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The last event folded in.
    pub seq: u64,
    /// One past the highest task id seen.
    pub next_task: u64,
    /// The objectives (unfinished ones only, unless made with [`Replay::keeping_finished`]).
    pub objectives: FxHashMap<ObjectiveId, ObjectiveModel>,
    #[serde(skip)]
    keep_finished: bool,
}

impl Replay {
    /// A fold that keeps objectives once they end (for reading the chain of work).
    pub fn keeping_finished() -> Self {
        Self {
            keep_finished: true,
            ..Self::default()
        }
    }

    /// Folds in one event.
    pub fn apply(&mut self, record: EventRecord) {
        self.seq = self.seq.max(record.seq);
        let at = record.at_ms;
        let Some(id) = record.event.objective() else {
            return;
        };
        if let Event::ObjectiveSubmitted {
            objective,
            spec,
            first_task,
            idempotency_key,
        } = record.event
        {
            self.next_task = self.next_task.max(first_task.0 + spec.tasks.len() as u64);
            let mut model = ObjectiveModel {
                id: objective,
                goal: spec.goal,
                priority: spec.priority,
                limits: spec.limits,
                idempotency_key,
                status: ObjectiveStatus::Running,
                failure: None,
                submitted_at_ms: at,
                ended_at_ms: None,
                planned: spec.tasks.is_empty(),
                replans: 0,
                batches: Vec::with_capacity(1),
                tasks: Vec::new(),
                compensable: Vec::new(),
                events: 1,
                keys: KeyIndex::default(),
            };
            model.add_batch(first_task, None, spec.tasks);
            self.objectives.insert(objective, model);
            return;
        }
        match &record.event {
            Event::TasksSpawned {
                first_task, tasks, ..
            } => self.next_task = self.next_task.max(first_task.0 + tasks.len() as u64),
            Event::PlanRequested { task, .. } => self.next_task = self.next_task.max(task.0 + 1),
            Event::CompensationStarted {
                first_task,
                compensates,
                ..
            } => self.next_task = self.next_task.max(first_task.0 + compensates.len() as u64),
            _ => {}
        }
        let Some(model) = self.objectives.get_mut(&id) else {
            // An objective whose submission was pruned (or lies before a snapshot that did not
            // keep it, because it had ended).
            return;
        };
        model.events += 1;
        let ended = apply_to(model, record.event, at);
        if ended && !self.keep_finished {
            self.objectives.remove(&id);
        }
    }

    /// The unfinished objectives, oldest first.
    pub fn unfinished(&self) -> Vec<&ObjectiveModel> {
        let mut list: Vec<&ObjectiveModel> = self
            .objectives
            .values()
            .filter(|m| !m.status.is_terminal())
            .collect();
        list.sort_by_key(|m| (m.submitted_at_ms, m.id));
        list
    }
}

/// Applies one event of the objective to its model; true when the objective ended. What an
/// event does to a task is [`TaskRecord::apply`], the fold the live scheduler runs too.
fn apply_to(model: &mut ObjectiveModel, event: Event, at: u64) -> bool {
    if let Some(task) = task_of(&event) {
        match &event {
            Event::PlanRequested {
                task, spec, replan, ..
            } => {
                model.add_batch(*task, None, vec![TaskSpec::clone(spec)]);
                model.replans = model.replans.max(*replan);
            }
            // A payload that reached review was no success: the task is compensable once it
            // is approved.
            Event::TaskInReview { task, .. } => model.compensable.retain(|t| t != task),
            _ => {}
        }
        if let Some(t) = model.task_mut(task) {
            t.apply(&event, at);
        }
        if matches!(
            event,
            Event::TaskSucceeded { .. } | Event::WaitSatisfied { .. } | Event::TaskApproved { .. }
        ) {
            note_success(model, task);
        }
        return false;
    }
    match event {
        Event::TasksSpawned {
            parent,
            first_task,
            tasks,
            ..
        } => model.add_batch(first_task, Some(parent), tasks),
        Event::CompensationStarted {
            reason,
            first_task,
            compensates,
            ..
        } => {
            model.status = ObjectiveStatus::Compensating;
            model.failure = Some(reason);
            for (i, original) in compensates.into_iter().enumerate() {
                let Some((key, compensation)) = model
                    .spec(original)
                    .and_then(|s| Some((s.id.clone(), s.compensation.as_ref()?)))
                else {
                    continue;
                };
                let id = TaskId(first_task.0 + i as u64);
                let capability = compensation.capability.clone();
                model
                    .tasks
                    .push(TaskRecord::compensation(id, key, capability, original));
            }
        }
        Event::ObjectiveSucceeded { .. } => {
            return end(model, ObjectiveStatus::Succeeded, None, at);
        }
        Event::ObjectiveFailed { reason, .. } => {
            return end(model, ObjectiveStatus::Failed, Some(reason), at);
        }
        Event::ObjectiveCancelled { .. } => {
            return end(model, ObjectiveStatus::Cancelled, None, at);
        }
        // The rejection is followed by the task's final `TaskFailed`.
        Event::TaskRejected { .. }
        | Event::ObjectiveSubmitted { .. }
        | Event::TaskReady { .. }
        | Event::TaskStarted { .. }
        | Event::TaskSucceeded { .. }
        | Event::TaskFailed { .. }
        | Event::AttemptLost { .. }
        | Event::TaskInReview { .. }
        | Event::TaskWaiting { .. }
        | Event::WaitSatisfied { .. }
        | Event::TaskApproved { .. }
        | Event::TaskCancelled { .. }
        | Event::PlanRequested { .. }
        | Event::PlanRejected { .. }
        | Event::AgentRegistered { .. }
        | Event::AgentHealthChanged { .. }
        | Event::AgentRestarted { .. }
        | Event::AgentDeregistered { .. }
        | Event::AgentDeclared { .. }
        | Event::AgentUndeclared { .. }
        | Event::EventReceived { .. }
        | Event::ScheduleCreated { .. }
        | Event::SchedulePaused { .. }
        | Event::ScheduleResumed { .. }
        | Event::ScheduleDeleted { .. }
        | Event::ScheduleSkipped { .. }
        | Event::ScheduleFireFailed { .. }
        | Event::ScheduleFired { .. }
        | Event::HookDeclared { .. }
        | Event::HookDeleted { .. } => {}
    }
    false
}

/// Keeps the order in which tasks with a compensation succeeded.
fn note_success(model: &mut ObjectiveModel, task: TaskId) {
    let compensable = model.task(task).is_some_and(|t| t.compensates.is_none())
        && model.spec(task).is_some_and(|s| s.compensation.is_some());
    if compensable {
        model.compensable.push(task);
    }
}

fn end(
    model: &mut ObjectiveModel,
    status: ObjectiveStatus,
    failure: Option<String>,
    at: u64,
) -> bool {
    model.status = status;
    model.failure = failure;
    model.ended_at_ms = Some(at);
    true
}

/// What a restarting coordinator rebuilds from: the fold of the log and its counters.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The fold (unfinished objectives only).
    pub replay: Replay,
    /// The last committed sequence number.
    pub last_seq: u64,
    /// The next task id to hand out.
    pub next_task: u64,
    /// The next agent id to hand out: past every agent the log registered, so an id names one
    /// agent across restarts.
    pub next_agent: u64,
    /// Idempotency keys of every objective still in the log: key, objective, fingerprint.
    pub keys: Vec<(String, ObjectiveId, u64)>,
    /// Events read after the snapshot.
    pub events_read: u64,
    /// The sequence number of the snapshot recovery started from (0 when none).
    pub snapshot_seq: u64,
    /// The posted events not yet expired (consumed ones too: their idempotency keys still
    /// answer), in the order they were received.
    pub posted: Vec<StoredEvent>,
}

/// How many events recovery reads per query.
const PAGE: usize = 20_000;

/// Reads the log as a restart does and folds it: every objective the index holds as
/// unfinished, from the newest snapshot's model of it plus its events after the snapshot (or
/// from all its events when the snapshot does not have it). Finished objectives are not read
/// at all, so restart time follows the unfinished work, not the length of the history.
pub async fn recover(store: &dyn EventStore) -> Result<Recovered, StoreError> {
    let info = store.info().await?;
    let (replay, snapshot_seq, events_read) = fold_running(store, info.last_seq).await?;
    let keys = store
        .keyed_objectives()
        .await?
        .into_iter()
        .filter_map(|o| o.idempotency_key.map(|k| (k, o.id, o.fingerprint)))
        .collect();
    let posted = store.posted_events(crate::journal::now_ms()).await?;
    Ok(Recovered {
        posted,
        next_task: info.next_task.max(replay.next_task).max(1),
        next_agent: info.next_agent.max(1),
        last_seq: info.last_seq,
        replay,
        keys,
        events_read,
        snapshot_seq,
    })
}

/// The newest snapshot, decoded (an empty fold at 0 when there is none).
async fn latest(store: &dyn EventStore) -> Result<(Replay, u64), StoreError> {
    match store.latest_snapshot().await? {
        Some(snapshot) => {
            let replay: Replay =
                serde_json::from_slice(&snapshot.body).map_err(|e| StoreError::Corrupt {
                    path: "snapshot".into(),
                    what: format!("snapshot at {}", snapshot.seq),
                    cause: e.to_string(),
                })?;
            Ok((replay, snapshot.seq))
        }
        None => Ok((Replay::default(), 0)),
    }
}

/// The fold, as of event `upto`, of every objective the index holds as unfinished; returns it
/// with the snapshot it started from and the number of events read. Every event at or below
/// `upto` must be committed.
pub async fn fold_running(
    store: &dyn EventStore,
    upto: u64,
) -> Result<(Replay, u64, u64), StoreError> {
    let (mut snapshot, snapshot_seq) = latest(store).await?;
    let mut replay = Replay {
        next_task: snapshot.next_task,
        ..Replay::default()
    };
    let mut read = 0;
    for id in store.running_objectives().await? {
        let after = match snapshot.objectives.remove(&id) {
            Some(model) => {
                replay.objectives.insert(id, model);
                snapshot_seq
            }
            None => 0,
        };
        for record in store.read_objective_range(id, after, upto).await? {
            read += 1;
            replay.apply(record);
        }
    }
    replay.seq = upto;
    Ok((replay, snapshot_seq, read))
}

/// Folds every event after `replay.seq` up to `until` into `replay`; returns how many were
/// read and the last sequence number folded.
pub async fn fold_after(
    store: &dyn EventStore,
    replay: &mut Replay,
    until: u64,
) -> Result<(u64, u64), StoreError> {
    let mut read = 0;
    loop {
        if replay.seq >= until {
            break;
        }
        let page = store.read_after(replay.seq, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for record in page {
            if record.seq > until {
                return Ok((read, replay.seq));
            }
            read += 1;
            replay.apply(record);
        }
    }
    Ok((read, replay.seq))
}

/// One objective rebuilt from its events alone, with the events (its chain of work).
pub async fn replay_objective(
    store: &dyn EventStore,
    objective: ObjectiveId,
) -> Result<Option<(ObjectiveModel, Vec<EventRecord>)>, StoreError> {
    let events = store.read_objective(objective).await?;
    let mut replay = Replay::keeping_finished();
    for record in &events {
        replay.apply(record.clone());
    }
    Ok(replay
        .objectives
        .remove(&objective)
        .map(|model| (model, events)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};
    use swarm_protocol::{
        AgentDescriptor, AgentId, Capability, Compensation, Event, EventRecord, FailureKind,
        Health, Objective, ObjectiveId, ObjectiveStatus, OutputError, TaskId, TaskKey, TaskSpec,
        TaskStatus, Usage,
    };

    use super::{Replay, TaskBatch};
    use crate::scheduler::{Planning, RejectedPlan, TaskRecord};

    fn spec(key: &str, capability: &str) -> TaskSpec {
        TaskSpec::new(
            TaskKey::new(key).unwrap(),
            Capability::new(capability).unwrap(),
        )
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A task as just submitted: what each expectation below starts from.
    fn fresh(id: u64, key: &str, capability: &str, spawned_by: Option<TaskId>) -> TaskRecord {
        TaskRecord {
            id: TaskId(id),
            key: TaskKey::new(key).unwrap(),
            capability: Capability::new(capability).unwrap(),
            status: TaskStatus::Backlog,
            attempt: 0,
            lost: 0,
            agent: None,
            output: None,
            error: None,
            partial: None,
            usage: Usage::default(),
            run_time: Duration::ZERO,
            spawned_by,
            retry_at_ms: None,
            started_at_ms: None,
            planning: None,
            compensates: None,
            review_errors: Vec::new(),
            kind: swarm_protocol::TaskKind::Agent,
            event: None,
            wait_until_ms: None,
            deps: spawned_by.into_iter().collect(),
        }
    }

    /// The objectives of the hand-written log.
    struct Ids {
        /// Fails: a retried task, a lost attempt, a review approved and one rejected, a spawn,
        /// cancelled leftovers.
        failed: ObjectiveId,
        /// Cancelled by its user while a task ran.
        cancelled: ObjectiveId,
        /// Succeeds.
        succeeded: ObjectiveId,
        /// Still running at the end of the log, with a retry pending.
        open: ObjectiveId,
    }

    /// Numbers and timestamps events as a log would.
    #[derive(Default)]
    struct Log(Vec<EventRecord>);

    impl Log {
        fn at(&mut self, at_ms: u64, event: Event) {
            let seq = self.0.len() as u64 + 1;
            self.0.push(EventRecord { seq, at_ms, event });
        }
    }

    /// A log with every kind of event, four objectives interleaved, and agent events between
    /// them. Task ids: `failed` has T10..T13 and spawns T20, T21; `cancelled` T30; `succeeded`
    /// T40; `open` T50, T51.
    fn story() -> (Ids, Vec<EventRecord>) {
        let ids = Ids {
            failed: ObjectiveId::new(),
            cancelled: ObjectiveId::new(),
            succeeded: ObjectiveId::new(),
            open: ObjectiveId::new(),
        };
        let o = ids.failed;
        let (a, b, c, d) = (TaskId(10), TaskId(11), TaskId(12), TaskId(13));
        let (s1, s2) = (TaskId(20), TaskId(21));
        let mut log = Log::default();
        let mut objective = Objective::with_tasks(
            "every kind",
            vec![
                spec("a", "work"),
                spec("b", "review"),
                spec("c", "work"),
                spec("d", "work"),
            ],
        );
        objective.priority = 3;
        log.at(
            1_000,
            Event::ObjectiveSubmitted {
                objective: o,
                spec: objective,
                first_task: a,
                idempotency_key: Some("key-1".into()),
            },
        );
        log.at(
            1_001,
            Event::AgentRegistered {
                descriptor: AgentDescriptor {
                    id: AgentId(1),
                    name: "one".into(),
                    capabilities: vec![Capability::new("work").unwrap()],
                    max_concurrency: 4,
                    labels: Default::default(),
                    cost_hint: None,
                    description: None,
                },
            },
        );
        // `a`: fails transiently (with partial output), is retried, and succeeds.
        log.at(
            1_002,
            Event::TaskReady {
                objective: o,
                task: a,
            },
        );
        log.at(
            1_003,
            Event::TaskStarted {
                objective: o,
                task: a,
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            2_000,
            Event::TaskFailed {
                objective: o,
                task: a,
                attempt: 1,
                agent: Some(AgentId(1)),
                kind: FailureKind::Transient,
                message: "503".into(),
                partial_output: Some(json!("half")),
                usage: usage(1, 2),
                duration: Some(ms(40)),
                retry_in: Some(ms(250)),
            },
        );
        log.at(
            2_300,
            Event::TaskStarted {
                objective: o,
                task: a,
                attempt: 2,
                agent: AgentId(2),
                input: None,
            },
        );
        // The other objectives start meanwhile.
        log.at(
            2_301,
            Event::ObjectiveSubmitted {
                objective: ids.cancelled,
                spec: Objective::with_tasks("cancel me", vec![spec("x", "work")]),
                first_task: TaskId(30),
                idempotency_key: None,
            },
        );
        log.at(
            2_302,
            Event::TaskReady {
                objective: ids.cancelled,
                task: TaskId(30),
            },
        );
        log.at(
            2_303,
            Event::TaskStarted {
                objective: ids.cancelled,
                task: TaskId(30),
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            2_400,
            Event::TaskSucceeded {
                objective: o,
                task: a,
                attempt: 2,
                agent: AgentId(2),
                output: json!({"sum": 1}),
                usage: usage(3, 4),
                duration: ms(60),
            },
        );
        // `b`: its agent crashes; the next attempt goes to review and is approved, edited.
        log.at(
            2_401,
            Event::TaskReady {
                objective: o,
                task: b,
            },
        );
        log.at(
            2_402,
            Event::TaskStarted {
                objective: o,
                task: b,
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            2_500,
            Event::AgentHealthChanged {
                agent: AgentId(1),
                health: Health::Down,
                reason: "failed: panic".into(),
            },
        );
        log.at(
            2_501,
            Event::AttemptLost {
                objective: o,
                task: b,
                attempt: 1,
                agent: Some(AgentId(1)),
                reason: "agent A1 crashed".into(),
            },
        );
        log.at(
            2_502,
            Event::AgentRestarted {
                agent: AgentId(1),
                restarts: 1,
                reason: "restarted by its supervisor".into(),
            },
        );
        log.at(
            2_503,
            Event::TaskStarted {
                objective: o,
                task: b,
                attempt: 2,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            2_600,
            Event::TaskInReview {
                objective: o,
                task: b,
                attempt: 2,
                output: Some(json!({"draft": 1})),
                reason: "schema".into(),
                errors: vec![OutputError {
                    path: "/draft".into(),
                    message: "1 is not of type \"string\"".into(),
                }],
                usage: usage(5, 5),
                duration: Some(ms(10)),
            },
        );
        log.at(
            3_000,
            Event::TaskApproved {
                objective: o,
                task: b,
                output: json!({"final": 1}),
            },
        );
        // `c` spawns `s1` and `s2`.
        log.at(
            3_001,
            Event::TaskReady {
                objective: o,
                task: c,
            },
        );
        log.at(
            3_002,
            Event::TaskStarted {
                objective: o,
                task: c,
                attempt: 1,
                agent: AgentId(2),
                input: None,
            },
        );
        log.at(
            3_100,
            Event::TasksSpawned {
                objective: o,
                parent: c,
                first_task: s1,
                tasks: vec![spec("s1", "review"), spec("s2", "work")],
            },
        );
        log.at(
            3_100,
            Event::TaskSucceeded {
                objective: o,
                task: c,
                attempt: 1,
                agent: AgentId(2),
                output: json!({"sum": 3}),
                usage: None,
                duration: ms(5),
            },
        );
        log.at(
            3_200,
            Event::ObjectiveSubmitted {
                objective: ids.succeeded,
                spec: Objective::with_tasks("fine", vec![spec("y", "work")]),
                first_task: TaskId(40),
                idempotency_key: None,
            },
        );
        log.at(
            3_201,
            Event::TaskReady {
                objective: ids.succeeded,
                task: TaskId(40),
            },
        );
        // `s1` goes to review without output and is rejected, so the objective fails.
        log.at(
            3_300,
            Event::TaskReady {
                objective: o,
                task: s1,
            },
        );
        log.at(
            3_301,
            Event::TaskStarted {
                objective: o,
                task: s1,
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            3_400,
            Event::TaskInReview {
                objective: o,
                task: s1,
                attempt: 1,
                output: None,
                reason: "no output".into(),
                errors: Vec::new(),
                usage: None,
                duration: None,
            },
        );
        log.at(
            3_500,
            Event::TaskRejected {
                objective: o,
                task: s1,
                reason: "no".into(),
            },
        );
        log.at(
            3_500,
            Event::TaskFailed {
                objective: o,
                task: s1,
                attempt: 1,
                agent: None,
                kind: FailureKind::Permanent,
                message: "rejected in review: no".into(),
                partial_output: None,
                usage: None,
                duration: None,
                retry_in: None,
            },
        );
        log.at(
            3_500,
            Event::TaskCancelled {
                objective: o,
                task: d,
            },
        );
        log.at(
            3_500,
            Event::TaskCancelled {
                objective: o,
                task: s2,
            },
        );
        log.at(
            3_500,
            Event::ObjectiveFailed {
                objective: o,
                reason: "task `s1` (T20) failed: rejected in review: no".into(),
            },
        );
        // An event of an objective the log no longer holds (pruned) creates nothing.
        log.at(
            3_502,
            Event::TaskReady {
                objective: ObjectiveId::new(),
                task: TaskId(99),
            },
        );
        log.at(
            3_600,
            Event::TaskStarted {
                objective: ids.succeeded,
                task: TaskId(40),
                attempt: 1,
                agent: AgentId(2),
                input: None,
            },
        );
        log.at(
            3_700,
            Event::TaskSucceeded {
                objective: ids.succeeded,
                task: TaskId(40),
                attempt: 1,
                agent: AgentId(2),
                output: json!("y"),
                usage: None,
                duration: ms(100),
            },
        );
        log.at(
            3_700,
            Event::ObjectiveSucceeded {
                objective: ids.succeeded,
            },
        );
        log.at(
            4_000,
            Event::TaskCancelled {
                objective: ids.cancelled,
                task: TaskId(30),
            },
        );
        log.at(
            4_000,
            Event::ObjectiveCancelled {
                objective: ids.cancelled,
            },
        );
        log.at(
            4_100,
            Event::ObjectiveSubmitted {
                objective: ids.open,
                spec: Objective::with_tasks(
                    "still open",
                    vec![spec("z", "work"), spec("w", "work")],
                ),
                first_task: TaskId(50),
                idempotency_key: Some("key-2".into()),
            },
        );
        log.at(
            4_101,
            Event::TaskReady {
                objective: ids.open,
                task: TaskId(50),
            },
        );
        log.at(
            4_102,
            Event::TaskStarted {
                objective: ids.open,
                task: TaskId(50),
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
        );
        log.at(
            5_000,
            Event::TaskFailed {
                objective: ids.open,
                task: TaskId(50),
                attempt: 1,
                agent: Some(AgentId(1)),
                kind: FailureKind::Timeout,
                message: "stalled".into(),
                partial_output: None,
                usage: None,
                duration: Some(ms(900)),
                retry_in: Some(Duration::from_secs(1)),
            },
        );
        log.at(5_001, Event::AgentDeregistered { agent: AgentId(2) });
        (ids, log.0)
    }

    /// Folds `records` into a fold that keeps finished objectives.
    fn fold_all(records: &[EventRecord]) -> Replay {
        let mut replay = Replay::keeping_finished();
        for record in records {
            replay.apply(record.clone());
        }
        replay
    }

    /// The fold up to and including the first event matching `pred`.
    fn fold_through(records: &[EventRecord], pred: impl Fn(&Event) -> bool) -> Replay {
        let end = records.iter().position(|r| pred(&r.event)).unwrap();
        fold_all(&records[..=end])
    }

    #[test]
    fn replay_of_every_event_kind_gives_the_model_of_each_objective() {
        let (ids, records) = story();
        let o = ids.failed;

        // Mid-way states that the end state no longer shows.
        let after_failure = fold_through(&records, |e| {
            matches!(
                e,
                Event::TaskFailed {
                    task: TaskId(10),
                    ..
                }
            )
        });
        let a = after_failure.objectives[&o].task(TaskId(10)).unwrap();
        assert_eq!(a.status, TaskStatus::Ready, "a retry is pending");
        assert_eq!(a.retry_at_ms, Some(2_250), "at_ms + retry_in");
        assert_eq!(a.error.as_deref(), Some("503"));
        let restarted = fold_through(&records, |e| {
            matches!(
                e,
                Event::TaskStarted {
                    task: TaskId(10),
                    attempt: 2,
                    ..
                }
            )
        });
        let a = restarted.objectives[&o].task(TaskId(10)).unwrap();
        assert_eq!(
            (a.status, a.attempt, a.retry_at_ms),
            (TaskStatus::Running, 2, None)
        );
        let lost = fold_through(&records, |e| matches!(e, Event::AttemptLost { .. }));
        let b = lost.objectives[&o].task(TaskId(11)).unwrap();
        assert_eq!((b.status, b.lost), (TaskStatus::Ready, 1));
        assert_eq!(b.error.as_deref(), Some("agent A1 crashed"));
        let in_review = fold_through(&records, |e| {
            matches!(
                e,
                Event::TaskInReview {
                    task: TaskId(11),
                    ..
                }
            )
        });
        let b = in_review.objectives[&o].task(TaskId(11)).unwrap();
        assert_eq!(b.status, TaskStatus::Review);
        assert_eq!(b.output, Some(json!({"draft": 1})));
        assert_eq!(b.error.as_deref(), Some("schema"));
        assert_eq!(b.review_errors.len(), 1);
        assert_eq!(b.review_errors[0].path, "/draft");

        let all = fold_all(&records);
        assert_eq!(all.seq, records.len() as u64);
        assert_eq!(
            all.next_task, 52,
            "one past the highest task id of any batch"
        );
        assert_eq!(
            all.objectives.len(),
            4,
            "the pruned objective's event created nothing"
        );

        let failed = &all.objectives[&o];
        assert_eq!(failed.goal, "every kind");
        assert_eq!(failed.priority, 3);
        assert_eq!(failed.idempotency_key.as_deref(), Some("key-1"));
        assert_eq!(failed.status, ObjectiveStatus::Failed);
        assert_eq!(
            failed.failure.as_deref(),
            Some("task `s1` (T20) failed: rejected in review: no")
        );
        assert_eq!(
            (failed.submitted_at_ms, failed.ended_at_ms),
            (1_000, Some(3_500))
        );
        assert_eq!(
            failed.batches,
            vec![
                TaskBatch {
                    first_task: TaskId(10),
                    parent: None,
                    specs: vec![
                        spec("a", "work"),
                        spec("b", "review"),
                        spec("c", "work"),
                        spec("d", "work"),
                    ],
                },
                TaskBatch {
                    first_task: TaskId(20),
                    parent: Some(TaskId(12)),
                    specs: vec![spec("s1", "review"), spec("s2", "work")],
                },
            ]
        );
        let expected = vec![
            TaskRecord {
                status: TaskStatus::Succeeded,
                attempt: 2,
                agent: Some(AgentId(2)),
                output: Some(json!({"sum": 1})),
                partial: Some(json!("half")),
                usage: Usage {
                    input_tokens: 4,
                    output_tokens: 6,
                },
                run_time: ms(100),
                ..fresh(10, "a", "work", None)
            },
            TaskRecord {
                status: TaskStatus::Succeeded,
                attempt: 2,
                lost: 1,
                agent: Some(AgentId(1)),
                output: Some(json!({"final": 1})),
                usage: Usage {
                    input_tokens: 5,
                    output_tokens: 5,
                },
                run_time: ms(10),
                ..fresh(11, "b", "review", None)
            },
            TaskRecord {
                status: TaskStatus::Succeeded,
                attempt: 1,
                agent: Some(AgentId(2)),
                output: Some(json!({"sum": 3})),
                run_time: ms(5),
                ..fresh(12, "c", "work", None)
            },
            TaskRecord {
                status: TaskStatus::Cancelled,
                ..fresh(13, "d", "work", None)
            },
            TaskRecord {
                status: TaskStatus::Failed,
                attempt: 1,
                agent: Some(AgentId(1)),
                error: Some("rejected in review: no".into()),
                ..fresh(20, "s1", "review", Some(TaskId(12)))
            },
            TaskRecord {
                status: TaskStatus::Cancelled,
                ..fresh(21, "s2", "work", Some(TaskId(12)))
            },
        ];
        assert_eq!(failed.tasks, expected);

        let view = failed.view();
        assert_eq!((view.id, view.status), (o, ObjectiveStatus::Failed));
        assert_eq!(view.failure, failed.failure);
        let a = view.task("a").unwrap();
        assert_eq!(a.attempts, 2);
        assert_eq!(a.partial_output, Some(json!("half")));
        assert_eq!(a.run_time, ms(100));
        assert_eq!(view.task("s2").unwrap().spawned_by, Some(TaskId(12)));
        let keys: Vec<&str> = view.tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "s1", "s2"]);

        let cancelled = &all.objectives[&ids.cancelled];
        assert_eq!(cancelled.status, ObjectiveStatus::Cancelled);
        assert_eq!(cancelled.failure, None);
        assert_eq!(cancelled.ended_at_ms, Some(4_000));
        assert_eq!(cancelled.tasks[0].status, TaskStatus::Cancelled);
        assert_eq!(cancelled.tasks[0].agent, Some(AgentId(1)));
        let succeeded = &all.objectives[&ids.succeeded];
        assert_eq!(succeeded.status, ObjectiveStatus::Succeeded);
        assert_eq!(succeeded.tasks[0].output, Some(json!("y")));
        assert_eq!(succeeded.tasks[0].run_time, ms(100));

        let open = &all.objectives[&ids.open];
        assert_eq!(open.status, ObjectiveStatus::Running);
        assert_eq!(open.ended_at_ms, None);
        assert_eq!(open.idempotency_key.as_deref(), Some("key-2"));
        let z = &open.tasks[0];
        assert_eq!(z.status, TaskStatus::Ready);
        assert_eq!(z.retry_at_ms, Some(6_000));
        assert_eq!(z.run_time, ms(900));
        assert_eq!(open.tasks[1].status, TaskStatus::Backlog);
        let unfinished: Vec<ObjectiveId> = all.unfinished().iter().map(|m| m.id).collect();
        assert_eq!(unfinished, [ids.open]);

        // The default fold drops each objective as it ends and keeps the rest exactly alike.
        let mut plain = Replay::default();
        for record in &records {
            plain.apply(record.clone());
        }
        assert_eq!(plain.seq, all.seq);
        assert_eq!(plain.next_task, all.next_task);
        assert_eq!(plain.objectives.len(), 1);
        assert_eq!(plain.objectives[&ids.open], *open);
    }

    #[test]
    fn agent_events_change_no_objective() {
        let (_, records) = story();
        let mut replay = Replay::keeping_finished();
        let mut agent_events = 0;
        for record in records {
            let before = replay.clone();
            let is_agent_event = record.event.objective().is_none();
            let seq = record.seq;
            replay.apply(record);
            assert_eq!(replay.seq, seq);
            if is_agent_event {
                agent_events += 1;
                assert_eq!(replay.objectives, before.objectives);
                assert_eq!(replay.next_task, before.next_task);
            }
        }
        assert_eq!(
            agent_events, 4,
            "the story has each of the four kinds of agent event"
        );
    }

    #[test]
    fn a_fold_resumed_from_its_json_snapshot_equals_one_fold_of_the_whole_log() {
        let (_, records) = story();
        let mut whole = Replay::default();
        for record in &records {
            whole.apply(record.clone());
        }
        // Snapshot after every prefix, so each kind of event is the first one folded after a
        // snapshot once.
        for cut in 0..=records.len() {
            let mut head = Replay::default();
            for record in &records[..cut] {
                head.apply(record.clone());
            }
            let body = serde_json::to_vec(&head).unwrap();
            let mut resumed: Replay = serde_json::from_slice(&body).unwrap();
            assert_eq!(resumed, head, "the snapshot after {cut} events round-trips");
            let as_value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                as_value["seq"],
                json!(cut),
                "a snapshot names its last event"
            );
            for record in &records[cut..] {
                resumed.apply(record.clone());
            }
            assert_eq!(
                resumed, whole,
                "resumed from the snapshot after {cut} events"
            );
        }
    }

    /// A planned objective: its planning task rejected once and repaired, its plan's first
    /// task failing for good, the dependent dropped, and a re-plan requested. Task ids: the
    /// plan T60, its tasks T61 and T62, the re-plan T63.
    fn planning_story() -> (ObjectiveId, Vec<EventRecord>) {
        let o = ObjectiveId::new();
        let mut log = Log::default();
        log.at(
            100,
            Event::ObjectiveSubmitted {
                objective: o,
                spec: Objective::with_tasks("plan it", vec![]),
                first_task: TaskId(60),
                idempotency_key: None,
            },
        );
        log.at(
            100,
            Event::PlanRequested {
                objective: o,
                task: TaskId(60),
                spec: Box::new(spec("plan", "plan")),
                replan: 0,
                failed: None,
            },
        );
        log.at(
            100,
            Event::TaskReady {
                objective: o,
                task: TaskId(60),
            },
        );
        for attempt in [1, 2] {
            log.at(
                110,
                Event::TaskStarted {
                    objective: o,
                    task: TaskId(60),
                    attempt,
                    agent: AgentId(1),
                    input: Some(json!({"prompt": format!("attempt {attempt}")})),
                },
            );
            if attempt == 1 {
                log.at(
                    120,
                    Event::PlanRejected {
                        objective: o,
                        task: TaskId(60),
                        attempt,
                        agent: AgentId(1),
                        plan: json!("nonsense"),
                        errors: vec!["no JSON".into(), "no tasks".into()],
                        repair: true,
                        usage: Some(Usage {
                            input_tokens: 7,
                            output_tokens: 1,
                        }),
                        duration: ms(10),
                    },
                );
                log.at(
                    120,
                    Event::TaskReady {
                        objective: o,
                        task: TaskId(60),
                    },
                );
            }
        }
        log.at(
            130,
            Event::TasksSpawned {
                objective: o,
                parent: TaskId(60),
                first_task: TaskId(61),
                tasks: vec![
                    spec("a", "work"),
                    spec("b", "work").after([TaskKey::new("a").unwrap()]),
                ],
            },
        );
        log.at(
            130,
            Event::TaskSucceeded {
                objective: o,
                task: TaskId(60),
                attempt: 2,
                agent: AgentId(1),
                output: json!("{\"tasks\": [...]}"),
                usage: None,
                duration: ms(20),
            },
        );
        log.at(
            140,
            Event::TaskStarted {
                objective: o,
                task: TaskId(61),
                attempt: 1,
                agent: AgentId(2),
                input: None,
            },
        );
        log.at(
            150,
            Event::TaskFailed {
                objective: o,
                task: TaskId(61),
                attempt: 1,
                agent: Some(AgentId(2)),
                kind: FailureKind::Permanent,
                message: "400".into(),
                partial_output: None,
                usage: None,
                duration: Some(ms(5)),
                retry_in: None,
            },
        );
        log.at(
            150,
            Event::TaskCancelled {
                objective: o,
                task: TaskId(62),
            },
        );
        log.at(
            150,
            Event::PlanRequested {
                objective: o,
                task: TaskId(63),
                spec: Box::new(spec("replan-1", "plan")),
                replan: 1,
                failed: Some(TaskId(61)),
            },
        );
        (o, log.0)
    }

    /// A saga: `a` and `b` (both with a compensation) succeed, `b` by approval; `c` fails, so
    /// the compensations of `b` then `a` run (T4, T5); `b`'s fails, `a`'s succeeds.
    fn saga() -> (ObjectiveId, Vec<EventRecord>) {
        let o = ObjectiveId::new();
        let undo = |capability: &str| {
            Compensation::new(
                Capability::new(capability).unwrap(),
                json!({"undo": {"$from": "x"}}),
            )
        };
        let mut a = spec("a", "work");
        a.compensation = Some(undo("revert"));
        let mut b = spec("b", "work");
        b.compensation = Some(undo("revert"));
        let mut log = Log(Vec::new());
        log.at(
            1,
            Event::ObjectiveSubmitted {
                objective: o,
                spec: Objective::with_tasks("saga", vec![a, b, spec("c", "work")]),
                first_task: TaskId(1),
                idempotency_key: None,
            },
        );
        let started = |task, attempt| Event::TaskStarted {
            objective: o,
            task: TaskId(task),
            attempt,
            agent: AgentId(1),
            input: None,
        };
        log.at(2, started(2, 1));
        log.at(
            3,
            Event::TaskInReview {
                objective: o,
                task: TaskId(2),
                attempt: 1,
                output: Some(json!(2)),
                reason: "schema".into(),
                errors: Vec::new(),
                usage: None,
                duration: None,
            },
        );
        log.at(4, started(1, 1));
        log.at(
            5,
            Event::TaskSucceeded {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                agent: AgentId(1),
                output: json!(1),
                usage: None,
                duration: ms(1),
            },
        );
        log.at(
            6,
            Event::TaskApproved {
                objective: o,
                task: TaskId(2),
                output: json!(2),
            },
        );
        log.at(7, started(3, 1));
        let failed = |task, message: &str| Event::TaskFailed {
            objective: o,
            task: TaskId(task),
            attempt: 1,
            agent: Some(AgentId(1)),
            kind: FailureKind::Permanent,
            message: message.into(),
            partial_output: None,
            usage: None,
            duration: None,
            retry_in: None,
        };
        log.at(8, failed(3, "401"));
        log.at(
            8,
            Event::CompensationStarted {
                objective: o,
                reason: "task `c` (T3) failed: 401".into(),
                first_task: TaskId(4),
                compensates: vec![TaskId(2), TaskId(1)],
            },
        );
        log.at(
            8,
            Event::TaskReady {
                objective: o,
                task: TaskId(4),
            },
        );
        log.at(9, started(4, 1));
        log.at(10, failed(4, "cannot undo"));
        log.at(
            10,
            Event::TaskReady {
                objective: o,
                task: TaskId(5),
            },
        );
        log.at(11, started(5, 1));
        log.at(
            12,
            Event::TaskSucceeded {
                objective: o,
                task: TaskId(5),
                attempt: 1,
                agent: AgentId(1),
                output: json!("undone"),
                usage: None,
                duration: ms(1),
            },
        );
        log.at(
            12,
            Event::ObjectiveFailed {
                objective: o,
                reason: "task `c` (T3) failed: 401".into(),
            },
        );
        (o, log.0)
    }

    #[test]
    fn planning_events_replay_into_planning_tasks() {
        let (o, records) = planning_story();
        let rejected = fold_through(&records, |e| matches!(e, Event::PlanRejected { .. }));
        let plan = rejected.objectives[&o].task(TaskId(60)).unwrap();
        assert_eq!(
            (plan.status, plan.attempt),
            (TaskStatus::Ready, 1),
            "a repair attempt follows"
        );
        assert_eq!(
            plan.error.as_deref(),
            Some("plan rejected: no JSON; no tasks")
        );
        assert_eq!(plan.partial, Some(json!("nonsense")));

        let all = fold_all(&records);
        assert_eq!(all.next_task, 64, "one past the re-planning task");
        let model = &all.objectives[&o];
        assert!(model.planned);
        assert_eq!(model.replans, 1);
        assert_eq!(model.status, ObjectiveStatus::Running);
        let firsts: Vec<(TaskId, Option<TaskId>, usize)> = model
            .batches
            .iter()
            .map(|b| (b.first_task, b.parent, b.specs.len()))
            .collect();
        assert_eq!(
            firsts,
            [
                (TaskId(60), None, 1),
                (TaskId(61), Some(TaskId(60)), 2),
                (TaskId(63), None, 1)
            ],
            "the planning tasks are batches of their own; the submission added none"
        );
        let expected_plan = TaskRecord {
            status: TaskStatus::Succeeded,
            attempt: 2,
            agent: Some(AgentId(1)),
            output: Some(json!("{\"tasks\": [...]}")),
            partial: Some(json!("nonsense")),
            usage: Usage {
                input_tokens: 7,
                output_tokens: 1,
            },
            run_time: ms(30),
            planning: Some(Box::new(Planning {
                replan: 0,
                failed: None,
                rejections: 1,
                rejected: Some(RejectedPlan {
                    plan: json!("nonsense"),
                    errors: vec!["no JSON".into(), "no tasks".into()],
                }),
            })),
            ..fresh(60, "plan", "plan", None)
        };
        assert_eq!(model.task(TaskId(60)), Some(&expected_plan));
        assert_eq!(model.task(TaskId(61)).unwrap().status, TaskStatus::Failed);
        assert_eq!(
            model.task(TaskId(62)).unwrap().status,
            TaskStatus::Cancelled
        );
        let replan = model.task(TaskId(63)).unwrap();
        assert_eq!(replan.key.as_str(), "replan-1");
        assert_eq!(replan.status, TaskStatus::Backlog);
        assert_eq!(
            replan.planning,
            Some(Box::new(Planning {
                replan: 1,
                failed: Some(TaskId(61)),
                ..Planning::default()
            }))
        );
        assert_eq!(all.unfinished().len(), 1);

        // Snapshots taken anywhere in the story resume to the same fold.
        let mut whole = Replay::default();
        for record in &records {
            whole.apply(record.clone());
        }
        for cut in 0..=records.len() {
            let mut head = Replay::default();
            for record in &records[..cut] {
                head.apply(record.clone());
            }
            let mut resumed: Replay =
                serde_json::from_slice(&serde_json::to_vec(&head).unwrap()).unwrap();
            for record in &records[cut..] {
                resumed.apply(record.clone());
            }
            assert_eq!(
                resumed, whole,
                "resumed from the snapshot after {cut} events"
            );
        }
    }

    #[test]
    fn a_saga_replays_with_its_compensations_as_tasks() {
        let (o, records) = saga();
        let mid = fold_through(&records, |e| matches!(e, Event::CompensationStarted { .. }));
        let model = &mid.objectives[&o];
        assert_eq!(model.status, ObjectiveStatus::Compensating);
        assert_eq!(
            model.compensable,
            [TaskId(1), TaskId(2)],
            "in the order they succeeded"
        );
        assert_eq!(mid.next_task, 6);
        let undo_b = model.task(TaskId(4)).unwrap();
        assert_eq!(
            (
                undo_b.key.as_str(),
                undo_b.capability.as_str(),
                undo_b.compensates
            ),
            ("b", "revert", Some(TaskId(2)))
        );
        assert_eq!(model.task(TaskId(5)).unwrap().compensates, Some(TaskId(1)));
        // A compensating objective is unfinished: recovery resumes it.
        assert_eq!(mid.unfinished().len(), 1);
        let mut plain = Replay::default();
        for record in records.iter().take_while(|r| r.at_ms <= 11) {
            plain.apply(record.clone());
        }
        let resumed = &plain.objectives[&o];
        assert_eq!(resumed.task(TaskId(4)).unwrap().status, TaskStatus::Failed);
        assert_eq!(resumed.task(TaskId(5)).unwrap().status, TaskStatus::Running);

        let all = fold_all(&records);
        let model = &all.objectives[&o];
        assert_eq!(model.status, ObjectiveStatus::Failed);
        assert_eq!(model.failure.as_deref(), Some("task `c` (T3) failed: 401"));
        let view = model.view();
        let undo: Vec<_> = view
            .tasks
            .iter()
            .filter_map(|t| Some((t.compensates?, t.status)))
            .collect();
        assert_eq!(
            undo,
            [
                (TaskId(2), TaskStatus::Failed),
                (TaskId(1), TaskStatus::Succeeded)
            ]
        );
    }
}
