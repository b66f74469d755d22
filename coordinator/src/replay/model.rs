//! One objective as the log tells it, and what each of its events does to it.
//!
//! An [`ObjectiveModel`] holds an objective's batches (as submitted and as spawned) and its
//! tasks as the scheduler's own [`TaskRecord`]s. [`ObjectiveModel::apply`] changes a task
//! through [`TaskRecord::apply`], the fold the live scheduler runs as it records events, and
//! links each new batch as the scheduler links it, so a model and the live view agree.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use swarm_protocol::{
    BudgetPause, Budgets, Event, Limits, Objective, ObjectiveId, ObjectiveStatus, ObjectiveView,
    TaskId, TaskKey, TaskSpec, TraceContext,
};

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
    /// Set while it is paused at a spending limit, waiting for a person's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_pause: Option<BudgetPause>,
    /// Its budgets as a person last raised them (`None`: as submitted, in `limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised: Option<Budgets>,
    /// Events folded into this model.
    #[serde(default)]
    pub events: u64,
    /// Its task names, to link new batches.
    #[serde(skip)]
    keys: KeyIndex,
    /// The caller's W3C trace context, which its workflow span continues after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl ObjectiveModel {
    /// The objective as its `ObjectiveSubmitted` event accepted it at `at_ms`: running, with
    /// the submitted tasks as its first batch (none when the planner is to decompose it).
    pub(super) fn submitted(
        id: ObjectiveId,
        spec: Objective,
        first_task: TaskId,
        idempotency_key: Option<String>,
        trace: Option<TraceContext>,
        at_ms: u64,
    ) -> Self {
        let mut model = Self {
            id,
            goal: spec.goal,
            priority: spec.priority,
            limits: spec.limits,
            idempotency_key,
            status: ObjectiveStatus::Running,
            failure: None,
            submitted_at_ms: at_ms,
            ended_at_ms: None,
            planned: spec.tasks.is_empty(),
            replans: 0,
            batches: Vec::with_capacity(1),
            tasks: Vec::new(),
            compensable: Vec::new(),
            budget_pause: None,
            raised: None,
            events: 1,
            keys: KeyIndex::default(),
            trace,
        };
        model.add_batch(first_task, None, spec.tasks);
        model
    }

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

    /// The objective as the scheduler shows it.
    pub fn view(&self) -> ObjectiveView {
        objective_view(
            self.id,
            &self.goal,
            self.status,
            self.failure.as_deref(),
            self.budget_pause.as_ref(),
            &self.tasks,
        )
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

    /// Applies one event of the objective, recorded at `at_ms`, other than its submission;
    /// true when the objective ended. What an event does to a task is [`TaskRecord::apply`],
    /// the fold the live scheduler runs too.
    pub(super) fn apply(&mut self, event: Event, at_ms: u64) -> bool {
        if let Some(task) = task_of(&event) {
            match &event {
                Event::PlanRequested {
                    task, spec, replan, ..
                } => {
                    self.add_batch(*task, None, vec![TaskSpec::clone(spec)]);
                    self.replans = self.replans.max(*replan);
                }
                // A payload that reached review was no success: the task is compensable once
                // it is approved.
                Event::TaskInReview { task, .. } => self.compensable.retain(|t| t != task),
                _ => {}
            }
            if let Some(t) = self.task_mut(task) {
                t.apply(&event, at_ms);
            }
            if matches!(
                event,
                Event::TaskSucceeded { .. }
                    | Event::WaitSatisfied { .. }
                    | Event::TaskApproved { .. }
            ) {
                self.note_success(task);
            }
            return false;
        }
        match event {
            Event::TasksSpawned {
                parent,
                first_task,
                tasks,
                ..
            } => self.add_batch(first_task, Some(parent), tasks),
            Event::CompensationStarted {
                reason,
                first_task,
                compensates,
                ..
            } => {
                self.status = ObjectiveStatus::Compensating;
                self.failure = Some(reason);
                for (i, original) in compensates.into_iter().enumerate() {
                    let Some((key, compensation)) = self
                        .spec(original)
                        .and_then(|s| Some((s.id.clone(), s.compensation.as_ref()?)))
                    else {
                        continue;
                    };
                    let id = TaskId(first_task.0 + i as u64);
                    let capability = compensation.capability.clone();
                    self.tasks
                        .push(TaskRecord::compensation(id, key, capability, original));
                }
            }
            Event::BudgetReached { limit, reason, .. } => {
                self.budget_pause = Some(BudgetPause { limit, reason });
            }
            Event::BudgetRaised { budgets, .. } => {
                self.budget_pause = None;
                self.raised = Some(budgets);
            }
            Event::ObjectiveSucceeded { .. } => {
                return self.end(ObjectiveStatus::Succeeded, None, at_ms);
            }
            Event::ObjectiveFailed { reason, .. } => {
                return self.end(ObjectiveStatus::Failed, Some(reason), at_ms);
            }
            Event::ObjectiveCancelled { .. } => {
                return self.end(ObjectiveStatus::Cancelled, None, at_ms);
            }
            // The rejection is followed by the task's final `TaskFailed`.
            Event::TaskRejected { .. }
            | Event::ObjectiveSubmitted { .. }
            | Event::TaskReady { .. }
            | Event::TaskStarted { .. }
            | Event::TaskSucceeded { .. }
            | Event::TaskFailed { .. }
            | Event::AttemptLost { .. }
            | Event::ResultFenced { .. }
            | Event::TaskInReview { .. }
            | Event::TaskWaiting { .. }
            | Event::WaitSatisfied { .. }
            | Event::TaskApproved { .. }
            | Event::TaskEscalated { .. }
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
    fn note_success(&mut self, task: TaskId) {
        let compensable = self.task(task).is_some_and(|t| t.compensates.is_none())
            && self.spec(task).is_some_and(|s| s.compensation.is_some());
        if compensable {
            self.compensable.push(task);
        }
    }

    /// Ends the objective at `at_ms`; always true (the objective ended).
    fn end(&mut self, status: ObjectiveStatus, failure: Option<String>, at_ms: u64) -> bool {
        self.status = status;
        self.budget_pause = None;
        self.failure = failure;
        self.ended_at_ms = Some(at_ms);
        true
    }
}
