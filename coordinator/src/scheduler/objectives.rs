//! An objective's life: submitted and ended (succeeded, failed or cancelled).
//!
//! A submit is checked whole before anything is recorded (graph limits, then `checks.rs`); an
//! idempotency key used before answers with the objective first submitted with it. Ending a
//! running objective cancels its unfinished tasks (running attempts too) and frees their
//! slots for other objectives' queued tasks; a failure first runs its saga (`sagas.rs`). Once
//! its end is durable, a finished objective may be dropped from memory (the log keeps it).

use std::time::Duration;

use ractor::RpcReplyPort;
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::{
    AgentId, Event, Limits, Objective, ObjectiveId, ObjectiveStatus, ObjectiveSummary, OnBudget,
    SchedulerError, SchedulerMsg, TaskId, TaskStatus, TraceContext,
    objective::check_idempotency_key,
};

use super::checks;
use super::graph::{BatchExtras, ObjectiveRun};
use super::idempotency::Keyed;
use super::planner::PLAN_KEY;
use super::sagas::Saga;
use super::state::SchedulerState;

impl SchedulerState {
    /// Validates and accepts an objective; its tasks without dependencies become ready. A key
    /// used before returns the objective first submitted with it (if the objective is the
    /// same).
    pub(crate) fn submit(
        &mut self,
        mut objective: Objective,
        idempotency_key: Option<String>,
        key_index_as_of: Option<u64>,
        trace: Option<TraceContext>,
    ) -> Result<ObjectiveId, SchedulerError> {
        objective.limits.max_tasks = objective.limits.max_tasks.min(Limits::MAX_TASKS_CEILING);
        let fingerprint = match &idempotency_key {
            Some(key) => {
                check_idempotency_key(key).map_err(SchedulerError::BadIdempotencyKey)?;
                let fingerprints = objective.fingerprints();
                if let Some(first) = self.keys.get(key) {
                    // Matches a fingerprint stored by any version (see `fingerprint`).
                    return if fingerprints.matches(first.fingerprint) {
                        Ok(first.objective)
                    } else {
                        Err(SchedulerError::IdempotencyConflict {
                            key: key.clone(),
                            existing: first.objective,
                        })
                    };
                }
                if !self.keys.is_new(key_index_as_of) {
                    return Err(SchedulerError::KeyNotChecked(key.clone()));
                }
                fingerprints.value()
            }
            None => 0,
        };
        if self.stats.objectives_running as usize >= self.config.max_objectives_running {
            return Err(SchedulerError::Overloaded(
                self.config.max_objectives_running,
            ));
        }
        let planned = objective.tasks.is_empty();
        let (depths, extras) = if planned {
            // The goal alone: a planning task decomposes it, on an agent with capability `plan`.
            let plan = checks::planning_spec(PLAN_KEY).ok_or(SchedulerError::NoPlanner)?;
            if !self.registry.knows_capability(&plan.capability) {
                return Err(SchedulerError::NoPlanner);
            }
            // The planning task counts against the limits like any task.
            graph::validate(std::slice::from_ref(&plan), &NoTasks, &objective.limits)?;
            (Vec::new(), BatchExtras::new())
        } else {
            let depths = graph::validate(&objective.tasks, &NoTasks, &objective.limits)?;
            let extras = checks::check_tasks(&self.registry, &objective.tasks)?;
            (depths, extras)
        };

        let id = ObjectiveId::new();
        let first = TaskId(self.graph.next_task);
        let mut run = ObjectiveRun::new(
            objective.goal.clone(),
            objective.priority,
            objective.limits,
            objective.tasks.len().max(1),
        );
        run.planned = planned;
        run.span = swarm_agents::trace::workflow_span(id, trace.as_ref());
        let new_ids = self
            .graph
            .add_tasks(id, &mut run, &objective.tasks, &depths, None, extras);
        self.graph.objectives.insert(id, run);
        let pausable = objective.limits.on_budget == OnBudget::Approve;
        self.dispatch
            .limit(id, objective.limits.max_concurrency, pausable);
        self.arm_deadline(id, objective.limits.deadline);
        self.stats.objectives_running += 1;
        let key = idempotency_key.clone();
        self.emit(Event::ObjectiveSubmitted {
            objective: id,
            spec: objective,
            first_task: first,
            idempotency_key,
            trace,
        });
        if let Some(key) = key {
            self.take_key(key, id, fingerprint);
        }
        if planned {
            if self.request_plan(id, 0, None).is_none() {
                // Validated above, so this does not happen; but an objective must not be left
                // running with nothing to run.
                let reason = "the planning task could not be added".to_owned();
                self.end_objective(id, ObjectiveStatus::Failed, Some(reason));
            }
            return Ok(id);
        }
        for task in new_ids {
            if self
                .graph
                .tasks
                .get(task)
                .is_some_and(|n| n.waiting_on == 0)
            {
                self.make_ready(task);
            }
        }
        Ok(id)
    }

    /// Sets the timer of an objective's deadline.
    /// Holds `key` for objective `id`, whose `ObjectiveSubmitted` was just recorded, and drops
    /// the oldest keys past the bound (see `idempotency`).
    fn take_key(&mut self, key: String, id: ObjectiveId, fingerprint: u64) {
        let keyed = Keyed {
            objective: id,
            fingerprint,
        };
        match self.journal.progress() {
            Some((recorded, durable)) => {
                self.keys.take(key, keyed, recorded);
                self.keys.drop_oldest(durable, true);
            }
            None => {
                self.keys.take(key, keyed, 0);
                // Without a log the keys are as bounded as the objectives kept in memory.
                if self.config.forget_finished_in_memory {
                    self.keys.drop_oldest(u64::MAX, false);
                }
            }
        }
    }

    pub(super) fn arm_deadline(&self, objective: ObjectiveId, deadline: Option<Duration>) {
        if let Some(deadline) = deadline {
            self.myself
                .send_after(deadline, move || SchedulerMsg::DeadlinePassed { objective });
        }
    }

    /// An objective's deadline passed: a running objective fails.
    pub(crate) fn on_deadline(&mut self, objective: ObjectiveId) {
        let Some(run) = self.graph.objectives.get(&objective) else {
            return;
        };
        if run.status != ObjectiveStatus::Running {
            return;
        }
        let deadline = run.limits.deadline.unwrap_or_default();
        let reason = format!(
            "the objective passed its `deadline` of {} after submission",
            humantime::format_duration(deadline)
        );
        self.end_objective(objective, ObjectiveStatus::Failed, Some(reason));
    }

    /// Ends a running objective: every unfinished task is cancelled (running attempts too).
    /// A failure first runs the compensations of the tasks that succeeded, if any have one;
    /// the objective then ends when the last compensation has (`next_compensation`).
    pub(super) fn end_objective(
        &mut self,
        id: ObjectiveId,
        status: ObjectiveStatus,
        reason: Option<String>,
    ) {
        let Some(run) = self.graph.objectives.get_mut(&id) else {
            return;
        };
        if run.status != ObjectiveStatus::Running {
            return;
        }
        run.status = status;
        run.failure = reason.clone();
        run.budget_pause = None;
        let tasks = run.tasks.clone();
        self.dispatch.close(id);
        // Slots freed by cancelled attempts go to other objectives' queued tasks, once every
        // task of this one is marked (so none of its own is handed out again).
        let freed: Vec<AgentId> = tasks
            .into_iter()
            .filter_map(|t| self.cancel_task(t))
            .collect();
        for agent in freed {
            self.pull_for(agent);
        }
        if status == ObjectiveStatus::Failed
            && let Some(reason) = &reason
            && self.start_compensation(id, reason)
        {
            return;
        }
        self.finish_objective(id, status, reason);
    }

    /// Records the end of an objective and answers whoever waits for it.
    pub(super) fn finish_objective(
        &mut self,
        id: ObjectiveId,
        status: ObjectiveStatus,
        reason: Option<String>,
    ) {
        if let Some(run) = self.graph.objectives.get_mut(&id) {
            run.status = status;
            run.failure = reason.clone();
            run.saga = None;
            // The workflow span ends with the objective, even if the objective stays in memory.
            let span = std::mem::replace(&mut run.span, tracing::Span::none());
            match status {
                ObjectiveStatus::Succeeded => {}
                ObjectiveStatus::Cancelled => swarm_agents::trace::record_error(&span, "cancelled"),
                _ => swarm_agents::trace::record_error(&span, "failed"),
            }
        }
        self.emit(match status {
            ObjectiveStatus::Succeeded => Event::ObjectiveSucceeded { objective: id },
            ObjectiveStatus::Cancelled => Event::ObjectiveCancelled { objective: id },
            _ => Event::ObjectiveFailed {
                objective: id,
                reason: reason.unwrap_or_default(),
            },
        });
        self.stats.objectives_running = self.stats.objectives_running.saturating_sub(1);
        self.stats.objectives_ended += 1;
        if let Some(waiters) = self.waiters.remove(&id) {
            let summary = self.graph.summary(id);
            for reply in waiters {
                let summary = summary.clone();
                self.effects.replies.push(Box::new(move |_durable| {
                    let _ = reply.send(summary);
                }));
            }
        }
        // Without a log, every event is as final as it will ever be: `(0, 0)` lets the oldest
        // go at once when the in-memory swarm is asked to forget.
        let progress = self
            .journal
            .progress()
            .or(self.config.forget_finished_in_memory.then_some((0, 0)));
        if let Some((recorded, durable)) = progress {
            self.finished.push_back((id, recorded));
            // Only an objective whose end is durable may be dropped: until then the log would
            // still show it running.
            while self.finished.len() > self.config.keep_finished
                && self
                    .finished
                    .front()
                    .is_some_and(|&(_, end)| end <= durable)
            {
                if let Some((old, _)) = self.finished.pop_front() {
                    self.graph.forget(old);
                    self.dispatch.forget(old);
                }
            }
        }
    }

    /// Marks a task cancelled; returns the agent whose slot its running attempt freed.
    pub(super) fn cancel_task(&mut self, id: TaskId) -> Option<AgentId> {
        let node = self.graph.tasks.get_mut(id)?;
        if node.record.status.is_terminal() {
            return None;
        }
        let was = node.record.status;
        node.retry_due = false;
        let (objective, attempt, agent, queued) = (
            node.objective,
            node.record.attempt,
            node.record.agent,
            node.queued.take(),
        );
        self.emit(Event::TaskCancelled {
            objective,
            task: id,
        });
        let node = self.graph.tasks.get(id)?;
        if was == TaskStatus::Review {
            self.stats.tasks_in_review = self.stats.tasks_in_review.saturating_sub(1);
        }
        if was == TaskStatus::Waiting
            && let Some((key, _)) = node.wait_for()
        {
            self.waits.stop_waiting(key, id);
        }
        if queued.is_some() {
            self.dispatch.unqueued(&node.record.capability, id);
        }
        let mut freed = None;
        if was == TaskStatus::Running
            && let Some(agent) = agent
        {
            self.release(agent, id);
            self.dispatch.withdraw(&self.registry, agent, id, attempt);
            freed = Some(agent);
        }
        freed
    }

    /// A user cancels an objective.
    pub(crate) fn cancel(&mut self, id: ObjectiveId) -> Result<(), SchedulerError> {
        let run = self
            .graph
            .objectives
            .get(&id)
            .ok_or(SchedulerError::UnknownObjective(id))?;
        match run.status {
            ObjectiveStatus::Running => self.end_objective(id, ObjectiveStatus::Cancelled, None),
            // It failed already: the compensations left are cancelled, and it ends failed.
            ObjectiveStatus::Compensating => {
                let reason = run.saga.as_ref().map_or("", Saga::reason).to_owned();
                let tasks = run.tasks.clone();
                let freed: Vec<AgentId> = tasks
                    .into_iter()
                    .filter_map(|t| self.cancel_task(t))
                    .collect();
                for agent in freed {
                    self.pull_for(agent);
                }
                let reason = format!("{reason}; its remaining compensations were cancelled");
                self.finish_objective(id, ObjectiveStatus::Failed, Some(reason));
            }
            _ => {}
        }
        Ok(())
    }

    /// Answers now if the objective ended (or is unknown), else when it ends.
    pub(crate) fn await_end(
        &mut self,
        id: ObjectiveId,
        reply: RpcReplyPort<Option<ObjectiveSummary>>,
    ) {
        match self.graph.objectives.get(&id) {
            Some(run) if !run.status.is_terminal() => {
                self.waiters.entry(id).or_default().push(reply)
            }
            _ => {
                // The end may have been recorded in a turn not yet durable.
                let summary = self.graph.summary(id);
                self.effects.replies.push(Box::new(move |_durable| {
                    let _ = reply.send(summary);
                }));
            }
        }
    }
}
