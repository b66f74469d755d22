//! One task's record: what is known and shown of a task, folded from the task's events.
//!
//! The live scheduler and the replay of the log hold the same [`TaskRecord`] and change it by
//! the same fold, [`TaskRecord::apply`]: the scheduler folds every event about a task into
//! the task's record as it hands the event to the journal, and the replay folds the events it
//! reads. Views are built from the record alone ([`TaskRecord::view`], [`objective_view`]),
//! so a replayed view equals the live one by construction. When and which events the
//! scheduler records is the scheduler's business; what each event does to a task is decided
//! here, once.
//!
//! A record also carries what only a restart needs (`retry_at_ms`, `lost`, a planning task's
//! rejected plans), since the replay hands the restarting scheduler exactly these records.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use swarm_protocol::{
    AgentId, Capability, Event, ObjectiveId, ObjectiveStatus, ObjectiveView, OutputError, TaskId,
    TaskKey, TaskKind, TaskSpec, TaskStatus, TaskView, Usage,
};

/// One task as its events tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
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
    /// For a compensation: the task it compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<TaskId>,
    /// While in review for not matching its schema: where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub review_errors: Vec<OutputError>,
    /// While an attempt runs (or a `wait` task waits): when it started (ms since the Unix
    /// epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Set on planning tasks (`plan`, `replan-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planning: Option<Box<Planning>>,
    /// Who runs it.
    #[serde(default, skip_serializing_if = "TaskKind::is_agent")]
    pub kind: TaskKind,
    /// For a `wait` task: the key of the event it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// While a `wait` task waits: when it stops waiting (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until_ms: Option<u64>,
    /// The tasks it waits for, as [`link`] resolved them when it joined the graph (a
    /// compensation: the task it undoes). Empty in a snapshot written before records kept
    /// them; a restart links the graph again from the batches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<TaskId>,
}

/// What a planning task carries beyond a task's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Planning {
    /// 0 for `plan`, N for `replan-N`.
    pub replan: u32,
    /// The task whose failure asked for the re-plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<TaskId>,
    /// Plans rejected so far; only the first is sent back for repair.
    #[serde(default)]
    pub rejections: u32,
    /// The latest rejected plan and why (its repair prompt quotes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedPlan>,
}

/// A plan the scheduler refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedPlan {
    /// As the planner gave it.
    pub plan: Value,
    /// What was wrong with it.
    pub errors: Vec<String>,
}

/// A task's dependencies by id, as the graph links them: each name of `depends_on` that
/// `id_of` knows (names of the task's own batch included), then `parent` unless named already
/// (follow-ups and a plan's tasks run after the task that produced them).
pub(crate) fn link(
    depends_on: &[TaskKey],
    parent: Option<TaskId>,
    id_of: impl Fn(&TaskKey) -> Option<TaskId>,
) -> Vec<TaskId> {
    let mut deps: Vec<TaskId> = depends_on.iter().filter_map(id_of).collect();
    if let Some(p) = parent
        && !deps.contains(&p)
    {
        deps.push(p);
    }
    deps
}

/// The task an event is about, for the events [`TaskRecord::apply`] folds.
pub(crate) fn task_of(event: &Event) -> Option<TaskId> {
    match event {
        Event::TaskReady { task, .. }
        | Event::TaskStarted { task, .. }
        | Event::TaskSucceeded { task, .. }
        | Event::TaskFailed { task, .. }
        | Event::AttemptLost { task, .. }
        | Event::TaskInReview { task, .. }
        | Event::TaskWaiting { task, .. }
        | Event::WaitSatisfied { task, .. }
        | Event::TaskApproved { task, .. }
        | Event::TaskCancelled { task, .. }
        | Event::PlanRequested { task, .. }
        | Event::PlanRejected { task, .. } => Some(*task),
        _ => None,
    }
}

fn add(total: &mut Usage, usage: Option<Usage>) {
    if let Some(u) = usage {
        total.input_tokens += u.input_tokens;
        total.output_tokens += u.output_tokens;
    }
}

impl TaskRecord {
    /// A task of a batch as declared (submitted, spawned, or a planning task), linked to
    /// `deps`: nothing has run yet. (Always inlined: built straight into the graph's node,
    /// it is not copied there.)
    #[inline(always)]
    pub(crate) fn declared(
        id: TaskId,
        spec: &TaskSpec,
        objective: ObjectiveId,
        spawned_by: Option<TaskId>,
        deps: Vec<TaskId>,
    ) -> Self {
        let event = match spec.kind {
            TaskKind::Wait => spec.event_key(objective),
            _ => None,
        };
        Self {
            id,
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
            spawned_by,
            retry_at_ms: None,
            compensates: None,
            review_errors: Vec::new(),
            started_at_ms: None,
            planning: None,
            kind: spec.kind,
            event,
            wait_until_ms: None,
            deps,
        }
    }

    /// The compensation of `original`: it carries the compensated task's name, runs on an
    /// agent of `capability`, and takes its input from `original`'s output.
    pub(crate) fn compensation(
        id: TaskId,
        key: TaskKey,
        capability: Capability,
        original: TaskId,
    ) -> Self {
        Self {
            id,
            key,
            capability,
            status: TaskStatus::Backlog,
            attempt: 0,
            lost: 0,
            agent: None,
            output: None,
            error: None,
            partial: None,
            usage: Usage::default(),
            run_time: Duration::ZERO,
            spawned_by: None,
            retry_at_ms: None,
            compensates: Some(original),
            review_errors: Vec::new(),
            started_at_ms: None,
            planning: None,
            kind: TaskKind::Agent,
            event: None,
            wait_until_ms: None,
            deps: vec![original],
        }
    }

    /// Folds in one event about this task, recorded at `at_ms`; events about other things
    /// change nothing. Each event kind has its step below; the scheduler's hot path (a task
    /// made ready, started, succeeded) calls the step itself with the values it puts in the
    /// event, which it then builds in place, so no event is moved twice.
    pub fn apply(&mut self, event: &Event, at_ms: u64) {
        match event {
            Event::TaskReady { .. } => self.ready(),
            Event::TaskStarted { attempt, agent, .. } => self.started(*attempt, *agent, at_ms),
            Event::TaskSucceeded {
                output,
                usage,
                duration,
                ..
            } => self.succeeded(output, *usage, *duration),
            Event::TaskFailed {
                message,
                partial_output,
                usage,
                duration,
                retry_in,
                ..
            } => {
                let retry_at_ms = retry_in.map(|delay| {
                    at_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
                });
                self.failed(message, partial_output, *usage, *duration, retry_at_ms);
            }
            Event::AttemptLost { reason, .. } => self.lost(reason),
            Event::TaskInReview {
                attempt,
                output,
                reason,
                errors,
                usage,
                duration,
                ..
            } => self.in_review(*attempt, output, reason, errors, *usage, *duration),
            Event::TaskWaiting {
                event, until_ms, ..
            } => self.waiting(event, *until_ms, at_ms),
            Event::WaitSatisfied { payload, .. } => self.satisfied(payload),
            Event::TaskApproved { output, .. } => self.approved(output),
            Event::TaskCancelled { .. } => self.cancelled(),
            Event::PlanRequested { replan, failed, .. } => self.plan_requested(*replan, *failed),
            Event::PlanRejected {
                plan,
                errors,
                repair,
                usage,
                duration,
                ..
            } => self.plan_rejected(plan, errors, *repair, *usage, *duration),
            _ => {}
        }
    }

    /// `TaskReady`: its dependencies succeeded (or it is retried, or sent back by a review).
    #[inline]
    pub(crate) fn ready(&mut self) {
        self.status = TaskStatus::Ready;
        self.retry_at_ms = None;
        self.review_errors.clear();
    }

    /// `TaskStarted`: attempt `attempt` runs on `agent` from `at_ms`.
    #[inline]
    pub(crate) fn started(&mut self, attempt: u32, agent: AgentId, at_ms: u64) {
        self.status = TaskStatus::Running;
        self.attempt = attempt;
        self.agent = Some(agent);
        self.retry_at_ms = None;
        self.started_at_ms = Some(at_ms);
    }

    /// `TaskSucceeded`: the attempt's output, and what it cost.
    #[inline]
    pub(crate) fn succeeded(&mut self, output: &Value, usage: Option<Usage>, duration: Duration) {
        self.started_at_ms = None;
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(output.clone());
        add(&mut self.usage, usage);
        self.run_time += duration;
    }

    /// `TaskFailed`: retried at `retry_at_ms` if set, else failed for good.
    fn failed(
        &mut self,
        message: &str,
        partial: &Option<Value>,
        usage: Option<Usage>,
        duration: Option<Duration>,
        retry_at_ms: Option<u64>,
    ) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        add(&mut self.usage, usage);
        self.run_time += duration.unwrap_or_default();
        self.error = Some(message.to_owned());
        self.review_errors.clear();
        if partial.is_some() {
            self.partial.clone_from(partial);
        }
        self.status = match retry_at_ms {
            Some(_) => TaskStatus::Ready,
            None => TaskStatus::Failed,
        };
        self.retry_at_ms = retry_at_ms;
    }

    /// `AttemptLost`: its agent (or the coordinator) went away while it ran; it runs again.
    fn lost(&mut self, reason: &str) {
        self.started_at_ms = None;
        self.status = TaskStatus::Ready;
        self.lost += 1;
        self.error = Some(reason.to_owned());
        self.retry_at_ms = None;
    }

    /// `TaskInReview`: it waits for a person, with `output` to decide on.
    fn in_review(
        &mut self,
        attempt: u32,
        output: &Option<Value>,
        reason: &str,
        errors: &[OutputError],
        usage: Option<Usage>,
        duration: Option<Duration>,
    ) {
        // An approval's request is its attempt (no `TaskStarted` precedes it).
        self.attempt = self.attempt.max(attempt);
        self.started_at_ms = None;
        self.status = TaskStatus::Review;
        self.output.clone_from(output);
        self.error = Some(reason.to_owned());
        self.review_errors = errors.to_vec();
        add(&mut self.usage, usage);
        self.run_time += duration.unwrap_or_default();
    }

    /// `TaskWaiting`: a `wait` task waits for `event` until `until_ms`.
    fn waiting(&mut self, event: &str, until_ms: u64, at_ms: u64) {
        // Each wait is an attempt: a wait sent back by a review waits again as the next one,
        // so a timer of the earlier wait is recognised as stale.
        self.status = TaskStatus::Waiting;
        self.attempt += 1;
        if self.event.as_deref() != Some(event) {
            self.event = Some(event.to_owned());
        }
        self.wait_until_ms = Some(until_ms);
        self.started_at_ms = Some(at_ms);
    }

    /// `WaitSatisfied`: the event's payload is its output.
    fn satisfied(&mut self, payload: &Value) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(payload.clone());
    }

    /// `TaskApproved`: a person approved it, with this output.
    fn approved(&mut self, output: &Value) {
        self.status = TaskStatus::Succeeded;
        self.error = None;
        self.output = Some(output.clone());
        self.review_errors.clear();
    }

    /// `TaskCancelled`.
    fn cancelled(&mut self) {
        self.started_at_ms = None;
        self.wait_until_ms = None;
        self.status = TaskStatus::Cancelled;
        self.review_errors.clear();
    }

    /// `PlanRequested`: it is the planning task `plan` (`replan` 0) or `replan-N`.
    fn plan_requested(&mut self, replan: u32, failed: Option<TaskId>) {
        self.planning = Some(Box::new(Planning {
            replan,
            failed,
            ..Planning::default()
        }));
    }

    /// `PlanRejected`: its plan did not pass the checks; `repair` runs it again at once.
    fn plan_rejected(
        &mut self,
        plan: &Value,
        errors: &[String],
        repair: bool,
        usage: Option<Usage>,
        duration: Duration,
    ) {
        self.started_at_ms = None;
        add(&mut self.usage, usage);
        self.run_time += duration;
        self.error = Some(format!("plan rejected: {}", errors.join("; ")));
        self.partial = Some(plan.clone());
        if repair {
            self.status = TaskStatus::Ready;
            self.retry_at_ms = None;
        }
        let planning = self.planning.get_or_insert_default();
        planning.rejections += 1;
        planning.rejected = Some(RejectedPlan {
            plan: plan.clone(),
            errors: errors.to_vec(),
        });
    }

    /// The task as the scheduler shows it.
    pub fn view(&self) -> TaskView {
        TaskView {
            id: self.id,
            key: self.key.clone(),
            capability: self.capability.clone(),
            kind: self.kind,
            event: self.event.clone(),
            waiting_until_ms: self
                .wait_until_ms
                .filter(|_| self.status == TaskStatus::Waiting),
            status: self.status,
            attempts: self.attempt,
            agent: self.agent,
            output: self.output.clone(),
            error: self.error.clone(),
            partial_output: self.partial.clone(),
            spawned_by: self.spawned_by,
            compensates: self.compensates,
            depends_on: self.deps.clone(),
            running_since_ms: self
                .started_at_ms
                .filter(|_| self.status == TaskStatus::Running),
            review_errors: self.review_errors.clone(),
            usage: self.usage,
            run_time: self.run_time,
        }
    }
}

/// An objective as the scheduler shows it: its own fields and its tasks' records, in order.
pub fn objective_view<'a>(
    id: ObjectiveId,
    goal: &str,
    status: ObjectiveStatus,
    failure: Option<&str>,
    tasks: impl IntoIterator<Item = &'a TaskRecord>,
) -> ObjectiveView {
    ObjectiveView {
        id,
        goal: goal.to_owned(),
        status,
        failure: failure.map(str::to_owned),
        tasks: tasks.into_iter().map(TaskRecord::view).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use swarm_protocol::FailureKind;

    use super::*;

    fn key(name: &str) -> TaskKey {
        TaskKey::new(name).unwrap()
    }

    fn spec(name: &str) -> TaskSpec {
        TaskSpec::new(key(name), Capability::new("work").unwrap())
    }

    fn record(id: u64) -> TaskRecord {
        TaskRecord::declared(TaskId(id), &spec("t"), ObjectiveId::new(), None, Vec::new())
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    /// Folds events about task 1 of objective `o`, each at its time.
    fn fold(record: &mut TaskRecord, events: impl IntoIterator<Item = (u64, Event)>) {
        for (at, event) in events {
            record.apply(&event, at);
        }
    }

    fn started(o: ObjectiveId, attempt: u32) -> Event {
        Event::TaskStarted {
            objective: o,
            task: TaskId(1),
            attempt,
            agent: AgentId(7),
            input: None,
        }
    }

    fn ready(o: ObjectiveId) -> Event {
        Event::TaskReady {
            objective: o,
            task: TaskId(1),
        }
    }

    #[test]
    fn a_retried_attempt_and_its_success_fold_into_one_record() {
        let o = ObjectiveId::new();
        let mut r = record(1);
        fold(
            &mut r,
            [
                (10, ready(o)),
                (20, started(o, 1)),
                (
                    30,
                    Event::TaskFailed {
                        objective: o,
                        task: TaskId(1),
                        attempt: 1,
                        agent: Some(AgentId(7)),
                        kind: FailureKind::Transient,
                        message: "503".into(),
                        partial_output: Some(json!("half")),
                        usage: usage(1, 2),
                        duration: Some(Duration::from_millis(5)),
                        retry_in: Some(Duration::from_millis(100)),
                    },
                ),
            ],
        );
        assert_eq!(r.status, TaskStatus::Ready);
        assert_eq!(r.retry_at_ms, Some(130), "due when the backoff ends");
        assert_eq!(r.error.as_deref(), Some("503"));
        fold(
            &mut r,
            [
                (130, ready(o)),
                (140, started(o, 2)),
                (
                    150,
                    Event::TaskSucceeded {
                        objective: o,
                        task: TaskId(1),
                        attempt: 2,
                        agent: AgentId(7),
                        output: json!({"sum": 3}),
                        usage: usage(3, 4),
                        duration: Duration::from_millis(10),
                    },
                ),
            ],
        );
        assert_eq!(r.status, TaskStatus::Succeeded);
        assert_eq!((r.attempt, r.agent), (2, Some(AgentId(7))));
        assert_eq!(r.output, Some(json!({"sum": 3})));
        assert_eq!(r.error, None, "a success clears the failure");
        assert_eq!(r.partial, Some(json!("half")), "the partial output stays");
        assert_eq!(r.usage, usage(4, 6).unwrap());
        assert_eq!(r.run_time, Duration::from_millis(15));
        assert_eq!((r.retry_at_ms, r.started_at_ms), (None, None));
    }

    #[test]
    fn the_view_shows_times_only_in_the_status_they_belong_to() {
        let o = ObjectiveId::new();
        let mut r = record(1);
        r.apply(&started(o, 1), 42);
        assert_eq!(r.view().running_since_ms, Some(42));
        r.apply(
            &Event::AttemptLost {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                agent: Some(AgentId(7)),
                reason: "crashed".into(),
            },
            50,
        );
        let view = r.view();
        assert_eq!(view.running_since_ms, None);
        assert_eq!((view.status, r.lost), (TaskStatus::Ready, 1));
        assert_eq!(view.error.as_deref(), Some("crashed"));

        let mut wait_spec = spec("w");
        wait_spec.kind = TaskKind::Wait;
        wait_spec.event = Some("go".into());
        let mut wait = TaskRecord::declared(TaskId(2), &wait_spec, o, None, Vec::new());
        assert_eq!(wait.view().event.as_deref(), Some("go"));
        wait.apply(
            &Event::TaskWaiting {
                objective: o,
                task: TaskId(2),
                event: "go".into(),
                until_ms: 1_000,
            },
            0,
        );
        assert_eq!(wait.view().waiting_until_ms, Some(1_000));
        wait.apply(
            &Event::TaskCancelled {
                objective: o,
                task: TaskId(2),
            },
            5,
        );
        assert_eq!(wait.view().waiting_until_ms, None);
        assert_eq!(wait.view().status, TaskStatus::Cancelled);
    }

    #[test]
    fn a_wait_sent_back_by_a_review_waits_again_as_its_next_attempt() {
        let o = ObjectiveId::new();
        let mut r = record(1);
        let waiting = Event::TaskWaiting {
            objective: o,
            task: TaskId(1),
            event: "go".into(),
            until_ms: 100,
        };
        r.apply(&waiting, 0);
        r.apply(
            &Event::TaskInReview {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                output: Some(json!(1)),
                reason: "does not match".into(),
                errors: vec![OutputError {
                    path: "/x".into(),
                    message: "missing".into(),
                }],
                usage: None,
                duration: None,
            },
            10,
        );
        assert_eq!(r.view().review_errors.len(), 1);
        r.apply(&ready(o), 20);
        assert!(
            r.review_errors.is_empty(),
            "leaving review clears the errors"
        );
        r.apply(&waiting, 30);
        assert_eq!(
            r.attempt, 2,
            "the live scheduler names its wait timers by attempt"
        );
    }

    #[test]
    fn an_approval_request_is_its_attempt_and_a_cancel_clears_its_review() {
        let o = ObjectiveId::new();
        let mut r = record(1);
        r.apply(
            &Event::TaskInReview {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                output: Some(json!("draft")),
                reason: "awaiting approval".into(),
                errors: vec![OutputError {
                    path: String::new(),
                    message: "?".into(),
                }],
                usage: None,
                duration: None,
            },
            0,
        );
        assert_eq!((r.attempt, r.status), (1, TaskStatus::Review));
        r.apply(
            &Event::TaskCancelled {
                objective: o,
                task: TaskId(1),
            },
            1,
        );
        assert!(r.review_errors.is_empty());
        assert_eq!(r.output, Some(json!("draft")), "what was reviewed stays");
    }

    #[test]
    fn a_rejected_plan_is_kept_for_the_repair_and_counted() {
        let o = ObjectiveId::new();
        let mut r = record(1);
        r.apply(
            &Event::PlanRequested {
                objective: o,
                task: TaskId(1),
                spec: Box::new(spec("plan")),
                replan: 2,
                failed: Some(TaskId(9)),
            },
            0,
        );
        let rejected = |repair| Event::PlanRejected {
            objective: o,
            task: TaskId(1),
            attempt: 1,
            agent: AgentId(7),
            plan: json!("nonsense"),
            errors: vec!["no JSON".into(), "no tasks".into()],
            repair,
            usage: usage(1, 1),
            duration: Duration::from_millis(3),
        };
        r.apply(&started(o, 1), 1);
        r.apply(&rejected(true), 2);
        assert_eq!(r.status, TaskStatus::Ready, "a repair runs at once");
        assert_eq!(r.error.as_deref(), Some("plan rejected: no JSON; no tasks"));
        r.apply(&rejected(false), 3);
        let planning = r.planning.as_deref().unwrap();
        assert_eq!((planning.replan, planning.failed), (2, Some(TaskId(9))));
        assert_eq!(planning.rejections, 2);
        assert_eq!(
            planning.rejected.as_ref().map(|p| &p.plan),
            Some(&json!("nonsense"))
        );
        assert_eq!(r.usage, usage(2, 2).unwrap());
    }

    #[test]
    fn links_are_names_then_the_parent_once() {
        let ids = |k: &TaskKey| match k.as_str() {
            "a" => Some(TaskId(1)),
            "p" => Some(TaskId(3)),
            _ => None,
        };
        assert_eq!(
            link(&[key("a"), key("unknown")], Some(TaskId(3)), ids),
            [TaskId(1), TaskId(3)]
        );
        assert_eq!(
            link(&[key("p"), key("a")], Some(TaskId(3)), ids),
            [TaskId(3), TaskId(1)],
            "a parent named already keeps its place"
        );
        let compensation = TaskRecord::compensation(
            TaskId(8),
            key("a"),
            Capability::new("undo").unwrap(),
            TaskId(1),
        );
        assert_eq!(compensation.view().depends_on, [TaskId(1)]);
        assert_eq!(compensation.view().compensates, Some(TaskId(1)));
    }

    #[test]
    fn only_events_about_one_task_name_it() {
        let o = ObjectiveId::new();
        assert_eq!(task_of(&ready(o)), Some(TaskId(1)));
        assert_eq!(task_of(&Event::ObjectiveSucceeded { objective: o }), None);
        let before = record(1);
        let mut after = before.clone();
        after.apply(&Event::ObjectiveSucceeded { objective: o }, 1);
        assert_eq!(after, before, "an objective's event changes no task");
    }

    #[test]
    fn a_record_reads_back_from_json_and_from_a_snapshot_without_links() {
        let mut r = TaskRecord::declared(
            TaskId(4),
            &spec("t"),
            ObjectiveId::new(),
            Some(TaskId(2)),
            vec![TaskId(2)],
        );
        r.planning = Some(Box::default());
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<TaskRecord>(&text).unwrap(), r);
        let mut old: Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("deps");
        let read: TaskRecord = serde_json::from_value(old).unwrap();
        assert!(read.deps.is_empty());
        assert_eq!(read.spawned_by, Some(TaskId(2)));
    }

    #[test]
    fn an_objective_view_lists_its_tasks_in_order() {
        let o = ObjectiveId::new();
        let tasks = [record(1), record(2)];
        let view = objective_view(o, "goal", ObjectiveStatus::Failed, Some("why"), &tasks);
        assert_eq!(view.goal, "goal");
        assert_eq!(view.failure.as_deref(), Some("why"));
        let ids: Vec<TaskId> = view.tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, [TaskId(1), TaskId(2)]);
    }
}
