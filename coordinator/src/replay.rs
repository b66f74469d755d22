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
//! Replaying a finished objective gives exactly the view the live scheduler had of it (a test
//! compares them), so the log is a complete record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarm_protocol::{
    AgentId, Capability, Event, EventRecord, Limits, ObjectiveId, ObjectiveStatus, ObjectiveView,
    TaskId, TaskKey, TaskSpec, TaskStatus, TaskView, Usage,
};
use swarm_store::{EventStore, StoreError};

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

/// One task as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskModel {
    /// The task.
    pub id: TaskId,
    /// Its name.
    pub key: TaskKey,
    /// What it needs.
    pub capability: Capability,
    /// Its status.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempt: u32,
    /// Attempts lost to crashes (agents or the coordinator).
    pub lost: u32,
    /// The agent of the latest attempt.
    pub agent: Option<AgentId>,
    /// Its output (succeeded or in review).
    pub output: Option<Value>,
    /// The latest failure message.
    pub error: Option<String>,
    /// Output kept from a failed attempt.
    pub partial: Option<Value>,
    /// Tokens over all attempts.
    pub usage: Usage,
    /// Run time over all attempts.
    pub run_time: Duration,
    /// The task that spawned it.
    pub spawned_by: Option<TaskId>,
    /// When a pending retry is due (ms since the Unix epoch).
    pub retry_at_ms: Option<u64>,
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
    /// Its task batches, in the order they were added.
    pub batches: Vec<TaskBatch>,
    /// Its tasks, by increasing id.
    pub tasks: Vec<TaskModel>,
}

impl ObjectiveModel {
    /// The task with this id.
    pub fn task(&self, id: TaskId) -> Option<&TaskModel> {
        self.tasks
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .and_then(|i| self.tasks.get(i))
    }

    fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskModel> {
        self.tasks
            .binary_search_by_key(&id, |t| t.id)
            .ok()
            .and_then(|i| self.tasks.get_mut(i))
    }

    fn add_batch(&mut self, first_task: TaskId, parent: Option<TaskId>, specs: Vec<TaskSpec>) {
        self.tasks.reserve(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            self.tasks.push(TaskModel {
                id: TaskId(first_task.0 + i as u64),
                key: spec.id.clone(),
                capability: spec.capability.clone(),
                status: TaskStatus::Backlog,
                attempt: 0,
                lost: 0,
                agent: None,
                output: None,
                error: None,
                partial: None,
                usage: Usage::default(),
                run_time: Duration::ZERO,
                spawned_by: parent,
                retry_at_ms: None,
            });
        }
        self.batches.push(TaskBatch {
            first_task,
            parent,
            specs,
        });
    }

    /// The objective as the scheduler shows it.
    pub fn view(&self) -> ObjectiveView {
        ObjectiveView {
            id: self.id,
            goal: self.goal.clone(),
            status: self.status,
            failure: self.failure.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskView {
                    id: t.id,
                    key: t.key.clone(),
                    capability: t.capability.clone(),
                    status: t.status,
                    attempts: t.attempt,
                    agent: t.agent,
                    output: t.output.clone(),
                    error: t.error.clone(),
                    partial_output: t.partial.clone(),
                    spawned_by: t.spawned_by,
                    usage: t.usage,
                    run_time: t.run_time,
                })
                .collect(),
        }
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

fn add(total: &mut Usage, usage: Option<Usage>) {
    if let Some(u) = usage {
        total.input_tokens += u.input_tokens;
        total.output_tokens += u.output_tokens;
    }
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
                batches: Vec::with_capacity(1),
                tasks: Vec::new(),
            };
            model.add_batch(first_task, None, spec.tasks);
            self.objectives.insert(objective, model);
            return;
        }
        if let Event::TasksSpawned {
            first_task, tasks, ..
        } = &record.event
        {
            self.next_task = self.next_task.max(first_task.0 + tasks.len() as u64);
        }
        let Some(model) = self.objectives.get_mut(&id) else {
            // An objective whose submission was pruned (or lies before a snapshot that did not
            // keep it, because it had ended).
            return;
        };
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

/// Applies one event of the objective to its model; true when the objective ended.
fn apply_to(model: &mut ObjectiveModel, event: Event, at: u64) -> bool {
    match event {
        Event::ObjectiveSubmitted { .. } => {}
        Event::TasksSpawned {
            parent,
            first_task,
            tasks,
            ..
        } => model.add_batch(first_task, Some(parent), tasks),
        Event::TaskReady { task, .. } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Ready;
                t.retry_at_ms = None;
            }
        }
        Event::TaskStarted {
            task,
            attempt,
            agent,
            ..
        } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Running;
                t.attempt = attempt;
                t.agent = Some(agent);
                t.retry_at_ms = None;
            }
        }
        Event::TaskSucceeded {
            task,
            output,
            usage,
            duration,
            ..
        } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Succeeded;
                t.error = None;
                t.output = Some(output);
                add(&mut t.usage, usage);
                t.run_time += duration;
            }
        }
        Event::TaskFailed {
            task,
            message,
            partial_output,
            usage,
            duration,
            retry_in,
            ..
        } => {
            if let Some(t) = model.task_mut(task) {
                add(&mut t.usage, usage);
                t.run_time += duration.unwrap_or_default();
                t.error = Some(message);
                if partial_output.is_some() {
                    t.partial = partial_output;
                }
                match retry_in {
                    Some(delay) => {
                        t.status = TaskStatus::Ready;
                        let delay = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                        t.retry_at_ms = Some(at.saturating_add(delay));
                    }
                    None => {
                        t.status = TaskStatus::Failed;
                        t.retry_at_ms = None;
                    }
                }
            }
        }
        Event::AttemptLost { task, reason, .. } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Ready;
                t.lost += 1;
                t.error = Some(reason);
                t.retry_at_ms = None;
            }
        }
        Event::TaskInReview {
            task,
            output,
            reason,
            usage,
            duration,
            ..
        } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Review;
                t.output = output;
                t.error = Some(reason);
                add(&mut t.usage, usage);
                t.run_time += duration.unwrap_or_default();
            }
        }
        Event::TaskApproved { task, output, .. } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Succeeded;
                t.error = None;
                t.output = Some(output);
            }
        }
        // The rejection is followed by the task's final `TaskFailed`.
        Event::TaskRejected { .. } => {}
        Event::TaskCancelled { task, .. } => {
            if let Some(t) = model.task_mut(task) {
                t.status = TaskStatus::Cancelled;
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
        Event::AgentRegistered { .. }
        | Event::AgentHealthChanged { .. }
        | Event::AgentRestarted { .. }
        | Event::AgentDeregistered { .. } => {}
    }
    false
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
    /// Idempotency keys of every objective still in the log: key, objective, fingerprint.
    pub keys: Vec<(String, ObjectiveId, u64)>,
    /// Events read after the snapshot.
    pub events_read: u64,
    /// The sequence number of the snapshot recovery started from (0 when none).
    pub snapshot_seq: u64,
}

/// How many events recovery reads per query.
const PAGE: usize = 20_000;

/// Reads the newest snapshot and every event after it, and folds them.
pub async fn recover(store: &dyn EventStore) -> Result<Recovered, StoreError> {
    let info = store.info().await?;
    let (mut replay, snapshot_seq) = match store.latest_snapshot().await? {
        Some(snapshot) => {
            let replay: Replay =
                serde_json::from_slice(&snapshot.body).map_err(|e| StoreError::Corrupt {
                    path: "snapshot".into(),
                    what: format!("snapshot at {}", snapshot.seq),
                    cause: e.to_string(),
                })?;
            (replay, snapshot.seq)
        }
        None => (Replay::default(), 0),
    };
    replay.seq = replay.seq.max(snapshot_seq);
    let (events_read, _) = fold_after(store, &mut replay, info.last_seq).await?;
    let keys = store
        .keyed_objectives()
        .await?
        .into_iter()
        .filter_map(|o| o.idempotency_key.map(|k| (k, o.id, o.fingerprint)))
        .collect();
    Ok(Recovered {
        next_task: info.next_task.max(replay.next_task).max(1),
        last_seq: info.last_seq.max(replay.seq),
        replay,
        keys,
        events_read,
        snapshot_seq,
    })
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

/// A duration to a tenth of a millisecond (`6.8ms`, `1.250s`).
pub fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// The chain of work as lines of text: one line per event, with the time since submission, the
/// task's name, and what happened.
pub fn timeline(events: &[EventRecord]) -> String {
    let mut names: BTreeMap<TaskId, TaskKey> = BTreeMap::new();
    let start = events.first().map_or(0, |e| e.at_ms);
    let mut out = String::new();
    for record in events {
        let t = record.at_ms.saturating_sub(start);
        let name = |names: &BTreeMap<TaskId, TaskKey>, id: TaskId| match names.get(&id) {
            Some(key) => format!("{id} `{key}`"),
            None => id.to_string(),
        };
        let line = match &record.event {
            Event::ObjectiveSubmitted {
                spec,
                first_task,
                idempotency_key,
                ..
            } => {
                for (i, s) in spec.tasks.iter().enumerate() {
                    names.insert(TaskId(first_task.0 + i as u64), s.id.clone());
                }
                let key = idempotency_key
                    .as_ref()
                    .map(|k| format!(" (idempotency key `{k}`)"))
                    .unwrap_or_default();
                format!(
                    "objective submitted: {:?} with {} tasks{key}",
                    spec.goal,
                    spec.tasks.len()
                )
            }
            Event::TasksSpawned {
                parent,
                first_task,
                tasks,
                ..
            } => {
                let parent = name(&names, *parent);
                for (i, s) in tasks.iter().enumerate() {
                    names.insert(TaskId(first_task.0 + i as u64), s.id.clone());
                }
                let list: Vec<&str> = tasks.iter().map(|s| s.id.as_str()).collect();
                format!("{parent} spawned {}: {}", tasks.len(), list.join(", "))
            }
            Event::TaskReady { task, .. } => format!("{} ready", name(&names, *task)),
            Event::TaskStarted {
                task,
                attempt,
                agent,
                ..
            } => format!(
                "{} attempt {attempt} started on {agent}",
                name(&names, *task)
            ),
            Event::TaskSucceeded {
                task,
                attempt,
                agent,
                usage,
                duration,
                ..
            } => {
                let mut s = format!(
                    "{} attempt {attempt} succeeded on {agent} in {}",
                    name(&names, *task),
                    short(*duration)
                );
                if let Some(u) = usage {
                    let _ = write!(
                        s,
                        ", {} in / {} out tokens",
                        u.input_tokens, u.output_tokens
                    );
                }
                s
            }
            Event::TaskFailed {
                task,
                attempt,
                kind,
                message,
                retry_in,
                duration,
                ..
            } => {
                let mut s = format!(
                    "{} attempt {attempt} failed ({kind:?}): {message}",
                    name(&names, *task)
                );
                if let Some(d) = duration {
                    let _ = write!(s, " after {}", short(*d));
                }
                match retry_in {
                    Some(r) => {
                        let _ = write!(s, "; retry in {}", short(*r));
                    }
                    None => s.push_str("; no retry"),
                }
                s
            }
            Event::AttemptLost {
                task,
                attempt,
                reason,
                ..
            } => format!("{} attempt {attempt} lost: {reason}", name(&names, *task)),
            Event::TaskInReview { task, reason, .. } => {
                format!("{} in review: {reason}", name(&names, *task))
            }
            Event::TaskApproved { task, .. } => format!("{} approved", name(&names, *task)),
            Event::TaskRejected { task, reason, .. } => {
                format!("{} rejected: {reason}", name(&names, *task))
            }
            Event::TaskCancelled { task, .. } => format!("{} cancelled", name(&names, *task)),
            Event::ObjectiveSucceeded { .. } => "objective succeeded".to_string(),
            Event::ObjectiveFailed { reason, .. } => format!("objective failed: {reason}"),
            Event::ObjectiveCancelled { .. } => "objective cancelled".to_string(),
            other => format!("{other:?}"),
        };
        let _ = writeln!(
            out,
            "{:>5} +{:>8.3}s  {line}",
            record.seq,
            t as f64 / 1000.0
        );
    }
    out
}
