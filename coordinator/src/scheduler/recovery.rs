//! Recovery: the scheduler rebuilt from the durable log when it starts.
//!
//! Every unfinished objective comes back with the tasks of its batches, linked again, and each
//! task's record as the log tells it. Then each task is taken up where it was: a succeeded
//! task keeps its output and never runs again; an attempt that was running is recorded as
//! lost and runs again with the next attempt (so the next idempotency key); a pending retry
//! waits out the rest of its backoff; a `wait` task waits for the rest of its time, and a
//! review with a deadline until its deadline (or is decided now, if it passed); a saga
//! goes on with the compensation that had started. What taking them up changes (attempts
//! lost, tasks made ready, ends that fell due while the coordinator was down) is recorded, as
//! in any turn.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use swarm_protocol::graph;
use swarm_protocol::{
    AgentId, Event, FailureKind, ObjectiveId, ObjectiveStatus, OnBudget, SchedulerMsg, TaskId,
    TaskStatus,
};

use super::checks;
use super::failures::AttemptCost;
use super::graph::{ObjectiveRun, ObjectiveTasks};
use super::idempotency::Keyed;
use super::sagas::Saga;
use super::state::SchedulerState;
use crate::journal::now_ms;
use crate::replay::{ObjectiveModel, Recovered};

impl SchedulerState {
    /// Rebuilds every unfinished objective from the log. Tasks recorded as succeeded keep their
    /// output and never run again; an attempt that was running when the coordinator stopped is
    /// recorded as lost and the task runs again with the next attempt (and so the next
    /// idempotency key); a pending retry waits out the rest of its backoff.
    pub(crate) fn restore(&mut self, recovered: Recovered) {
        // The newest keys (the list is oldest first); older ones are read from the index.
        let skip = recovered
            .keys
            .len()
            .saturating_sub(self.config.idempotency_keys_in_memory);
        if skip > 0 {
            self.keys.dropped_before_start(recovered.last_seq);
        }
        for (key, objective, fingerprint) in recovered.keys.into_iter().skip(skip) {
            let keyed = Keyed {
                objective,
                fingerprint,
            };
            self.keys.take(key, keyed, 0);
        }
        let now = now_ms();
        // Events first, so a task that was waiting finds one posted before the restart.
        for stored in recovered.posted {
            self.keep(stored.event, stored.idempotency_key, now);
        }
        for model in recovered.replay.unfinished() {
            self.restore_objective(model, now);
        }
        self.graph.next_task = self.graph.next_task.max(recovered.next_task);
    }

    pub(super) fn restore_objective(&mut self, model: &ObjectiveModel, now: u64) {
        let id = model.id;
        let mut run = ObjectiveRun::new(
            model.goal.clone(),
            model.priority,
            model.limits,
            model.tasks.len(),
        );
        run.planned = model.planned;
        run.replans = model.replans;
        run.span = swarm_agents::trace::workflow_span(id, model.trace.as_ref());
        for batch in &model.batches {
            let mut specs = batch.specs.clone();
            if let Some(parent) = batch.parent.and_then(|p| model.task(p)) {
                for spec in &mut specs {
                    if !spec.depends_on.contains(&parent.key) {
                        spec.depends_on.push(parent.key.clone());
                    }
                }
            }
            let depths = {
                let existing = ObjectiveTasks {
                    run: &run,
                    tasks: &self.graph.tasks,
                };
                // Accepted once, so valid; depths only bound later spawns.
                graph::validate(&specs, &existing, &run.limits)
                    .unwrap_or_else(|_| vec![1; specs.len()])
            };
            self.graph.next_task = batch.first_task.0;
            let extras = checks::restored_extras(&specs);
            self.graph
                .add_tasks(id, &mut run, &specs, &depths, batch.parent, extras);
        }
        run.compensable = model.compensable.clone();
        run.raised = model.raised;
        run.budget_pause = model.budget_pause.clone();
        run.tokens = model.tasks.iter().map(|t| t.usage.tokens()).sum();
        // Per attempt, as `charge` charged them live (see `Usage::budget_cost`).
        run.cost_usd_micros = model.tasks.iter().fold(0, |sum: u64, t| {
            sum.saturating_add(t.budget_cost_usd_micros)
        });
        let compensating = model.status == ObjectiveStatus::Compensating;
        if compensating {
            run.status = ObjectiveStatus::Compensating;
            run.failure = model.failure.clone();
            run.saga = Some(Saga::new(
                model.failure.clone().unwrap_or_default(),
                VecDeque::new(),
            ));
        }
        self.graph.objectives.insert(id, run);
        if !compensating {
            let pausable = model.limits.on_budget == OnBudget::Approve;
            self.dispatch
                .limit(id, model.limits.max_concurrency, pausable);
            // Paused at a budget when it stopped: it still waits for a person's decision.
            if model.budget_pause.is_some() {
                self.dispatch.pause(id);
            }
        }
        self.stats.objectives_running += 1;
        // Compensation tasks are not in any batch: they are built again from the specs of the
        // tasks they compensate.
        for t in &model.tasks {
            if let Some(original) = t.compensates {
                self.graph.add_compensation(id, original, t.id);
            }
        }
        // Outcomes first, so dependents count only unfinished dependencies.
        for t in &model.tasks {
            let Some(node) = self.graph.tasks.get_mut(t.id) else {
                continue;
            };
            // The record as the log tells it, but with the graph's own links (made again
            // from the batches above; a snapshot written before records kept them has none).
            // A task that was on its way (ready, running, waiting) is taken up again below;
            // until then it is in the backlog, holding no slot.
            let mut record = t.clone();
            record.deps = std::mem::take(&mut node.record.deps);
            if !matches!(
                t.status,
                TaskStatus::Succeeded
                    | TaskStatus::Review
                    | TaskStatus::Failed
                    | TaskStatus::Cancelled
            ) {
                record.status = TaskStatus::Backlog;
            }
            node.record = record;
            match t.status {
                TaskStatus::Succeeded => {
                    if t.compensates.is_some() {
                        continue;
                    }
                    let dependents = node.dependents.clone();
                    for d in dependents {
                        if let Some(dep) = self.graph.tasks.get_mut(d) {
                            dep.waiting_on = dep.waiting_on.saturating_sub(1);
                        }
                    }
                    if let Some(run) = self.graph.objectives.get_mut(&id) {
                        run.unfinished = run.unfinished.saturating_sub(1);
                    }
                }
                TaskStatus::Review => self.stats.tasks_in_review += 1,
                _ => {}
            }
        }
        if compensating {
            self.resume_saga(model, now);
            return;
        }
        for t in &model.tasks {
            match t.status {
                TaskStatus::Running => self.restore_running(id, t.id, t.attempt, t.agent, now),
                TaskStatus::Ready => self.restore_ready(t.id, t.retry_at_ms, now),
                TaskStatus::Waiting => self.restore_wait(t.id, t.wait_until_ms, now),
                TaskStatus::Review => self.restore_review(t.id, t.review_until_ms, now),
                TaskStatus::Backlog
                    if self.graph.tasks.get(t.id).is_some_and(|n| {
                        n.record.status == TaskStatus::Backlog && n.waiting_on == 0
                    }) =>
                {
                    self.make_ready(t.id);
                }
                _ => {}
            }
            if self
                .graph
                .objectives
                .get(&id)
                .is_none_or(|run| run.status != ObjectiveStatus::Running)
            {
                return;
            }
        }
        if self
            .graph
            .objectives
            .get(&id)
            .is_some_and(|run| run.unfinished == 0)
        {
            self.end_objective(id, ObjectiveStatus::Succeeded, None);
            return;
        }
        if let Some(deadline) = model.limits.deadline {
            let due = model
                .submitted_at_ms
                .saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
            if due <= now {
                self.on_deadline(id);
            } else {
                self.arm_deadline(id, Some(Duration::from_millis(due - now)));
            }
        }
    }

    /// An attempt that was running when the coordinator stopped: recorded as lost, and the
    /// task runs again (or fails, past `max_lost_attempts`).
    pub(super) fn restore_running(
        &mut self,
        objective: ObjectiveId,
        id: TaskId,
        attempt: u32,
        agent: Option<AgentId>,
        now: u64,
    ) {
        let reason = "the coordinator stopped while the attempt ran";
        self.emit(Event::AttemptLost {
            objective,
            task: id,
            attempt,
            agent,
            reason: reason.into(),
            declined: false,
        });
        let lost = self.graph.tasks.get(id).map_or(0, |n| n.record.lost);
        if lost > self.config.max_lost_attempts {
            let message = format!("{reason} (the task's attempts were lost {lost} times)");
            self.fail_task(
                id,
                agent,
                FailureKind::Transient,
                message,
                None,
                AttemptCost::default(),
            );
        } else {
            self.restore_ready(id, None, now);
        }
    }

    /// A recovered task that was ready: queue it now, or when its retry backoff ends.
    pub(super) fn restore_ready(&mut self, id: TaskId, retry_at_ms: Option<u64>, now: u64) {
        if self.resolve(id).is_none() {
            return;
        }
        let Some(node) = self.graph.tasks.get_mut(id) else {
            return;
        };
        node.record.status = TaskStatus::Ready;
        node.ready_at = Instant::now();
        match retry_at_ms {
            Some(at) if at > now => {
                node.retry_due = true;
                let attempt = node.record.attempt;
                self.myself
                    .send_after(Duration::from_millis(at - now), move || {
                        SchedulerMsg::RetryDue { task: id, attempt }
                    });
            }
            _ => self.dispatch_ready(id),
        }
    }

    /// A recovered `wait` task that was waiting: it waits on for the rest of its time (and
    /// takes an event posted meanwhile), or fails now if its time is up.
    pub(super) fn restore_wait(&mut self, id: TaskId, until_ms: Option<u64>, now: u64) {
        let Some(node) = self.graph.tasks.get_mut(id) else {
            return;
        };
        // The record as the log left it (no event: the wait goes on).
        node.record.status = TaskStatus::Waiting;
        node.record.started_at_ms = Some(now);
        let attempt = node.record.attempt;
        let Some((key, _)) = node.wait_for() else {
            return;
        };
        let key = key.to_owned();
        let until = until_ms.unwrap_or(now);
        node.record.wait_until_ms = Some(until);
        self.myself.send_after(
            Duration::from_millis(until.saturating_sub(now)),
            move || SchedulerMsg::WaitExpired { task: id, attempt },
        );
        self.take_or_wait(id, key);
    }
}
