//! The scheduler's planning tasks: asking the planner for a plan, taking its answer in, and
//! re-planning after a task fails for good.
//!
//! An objective submitted without tasks starts with a `plan` task on an agent of capability
//! `plan`; its prompt (`planner.rs`) is built when it starts, from the agents registered then.
//! A valid plan's tasks join the graph as the planning task's children; an invalid one goes
//! back to the planner once with its errors (`checks.rs` collects them all), then fails the
//! objective. A task that fails for good may, within the objective's `max_replans`, drop the
//! tasks that depended on it and ask a `replan-N` task for the rest of the work.

use serde_json::Value;
use swarm_protocol::graph::{self};
use swarm_protocol::{Event, FailureKind, ObjectiveId, TaskId, TaskSpec};

use super::checks;
use super::failures::AttemptCost;
use super::graph::{BatchExtras, ObjectiveTasks};
use super::outcomes::SuccessfulAttempt;
use super::planner::{self, PLAN_KEY};
use super::state::SchedulerState;

impl SchedulerState {
    /// Adds a planning task to a running objective (`plan`, or `replan-N` after `failed`
    /// failed for good) and makes it ready. `None` when the objective's limits leave no room.
    pub(super) fn request_plan(
        &mut self,
        objective: ObjectiveId,
        replan: u32,
        failed: Option<TaskId>,
    ) -> Option<TaskId> {
        let mut run = self.graph.objectives.remove(&objective)?;
        let base = if replan == 0 {
            PLAN_KEY.to_owned()
        } else {
            format!("replan-{replan}")
        };
        // A user's graph may already use the name.
        let spec = (1..=100u32)
            .map(|n| match n {
                1 => base.clone(),
                n => format!("{base}-{n}"),
            })
            .filter_map(|key| checks::planning_spec(&key))
            .find(|spec| !run.keys.contains_key(&spec.id));
        let checked = spec.and_then(|spec| {
            let existing = ObjectiveTasks {
                run: &run,
                tasks: &self.graph.tasks,
            };
            graph::validate(std::slice::from_ref(&spec), &existing, &run.limits)
                .ok()
                .map(|depths| (spec, depths))
        });
        let Some((spec, depths)) = checked else {
            self.graph.objectives.insert(objective, run);
            return None;
        };
        let ids = self.graph.add_tasks(
            objective,
            &mut run,
            std::slice::from_ref(&spec),
            &depths,
            None,
            BatchExtras::new(),
        );
        run.replans = run.replans.max(replan);
        self.graph.objectives.insert(objective, run);
        let task = *ids.first()?;
        self.emit(Event::PlanRequested {
            objective,
            task,
            spec: Box::new(spec),
            replan,
            failed,
        });
        self.make_ready(task);
        Some(task)
    }

    /// A planning task's input: the goal, the capabilities registered now with their agents'
    /// descriptions, the room the limits leave, for a re-plan the work so far, and after a
    /// rejection the rejected plan and why. `None` for any other task.
    pub(super) fn plan_input(&self, id: TaskId) -> Option<Value> {
        let node = self.graph.tasks.get(id)?;
        let planning = node.record.planning.as_deref()?;
        let run = self.graph.objectives.get(&node.objective)?;
        let capabilities = planner::capabilities(&self.registry.snapshots());
        let room = planner::Room {
            tasks: u64::from(run.limits.max_tasks).saturating_sub(run.tasks.len() as u64),
            depth: run.limits.max_depth.saturating_sub(node.depth),
            fanout: run.limits.max_fanout,
        };
        let progress = (planning.replan > 0).then(|| self.graph.progress(run, planning.failed));
        Some(planner::input(&planner::Request {
            goal: &run.goal,
            capabilities: &capabilities,
            room,
            progress,
            rejected: planning
                .rejected
                .as_ref()
                .map(|r| (&r.plan, r.errors.as_slice())),
        }))
    }

    /// A planning task answered: a valid plan's tasks join the graph as its children; an
    /// invalid one goes back to the planner once, with what is wrong with it.
    pub(super) fn plan_answered(
        &mut self,
        id: TaskId,
        answer: SuccessfulAttempt,
        given: Option<Vec<TaskSpec>>,
    ) {
        let specs = match given {
            Some(tasks) => Ok(tasks),
            None => planner::parse_plan(&answer.output).map_err(|e| vec![e]),
        };
        match specs.and_then(|specs| checks::check_plan(&self.graph, &self.registry, id, specs)) {
            Ok(plan) => self.grow(
                id,
                answer,
                plan.specs,
                &plan.with_parent,
                &plan.depths,
                plan.extras,
            ),
            Err(errors) => self.reject_plan(id, answer, errors),
        }
    }

    /// A plan was invalid. The first time, the planning task runs again at once (a repair
    /// attempt, its prompt holding the errors and the rejected plan); the second time it
    /// fails, and with it the objective, naming the errors.
    pub(super) fn reject_plan(
        &mut self,
        id: TaskId,
        answer: SuccessfulAttempt,
        errors: Vec<String>,
    ) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let Some(planning) = node.record.planning.as_deref() else {
            return;
        };
        let repair = planning.rejections == 0;
        let summary = errors.join("; ");
        let (objective, attempt) = (node.objective, node.record.attempt);
        self.emit(Event::PlanRejected {
            objective,
            task: id,
            attempt,
            agent: answer.agent,
            plan: answer.output,
            errors,
            repair,
            usage: answer.usage,
            duration: answer.duration,
        });
        self.stats.attempts_failed += 1;
        if repair {
            self.mark_ready(objective, id);
        } else {
            self.fail_task_with(
                id,
                Some(answer.agent),
                FailureKind::Permanent,
                format!("its plan was rejected again: {summary}"),
                None,
                AttemptCost::default(),
                false,
            );
        }
    }

    /// A task of the objective failed for good: if re-planning is allowed and left, the tasks
    /// that depended on it (which can never run) are dropped and a `replan-N` task asks the
    /// planner for the rest of the work. False when the objective must fail instead.
    pub(super) fn replan(&mut self, objective: ObjectiveId, failed: TaskId) -> bool {
        if self
            .graph
            .tasks
            .get(failed)
            .is_none_or(|n| n.record.planning.is_some())
        {
            return false;
        }
        let Some(run) = self.graph.objectives.get(&objective) else {
            return false;
        };
        let allowed = run.limits.replans(run.planned);
        let room = (run.tasks.len() as u64) < u64::from(run.limits.max_tasks);
        let planner_known = checks::planning_spec(PLAN_KEY)
            .is_some_and(|spec| self.registry.knows_capability(&spec.capability));
        if run.status.is_terminal() || run.replans >= allowed || !room || !planner_known {
            return false;
        }
        let replan = run.replans + 1;
        let mut freed = Vec::new();
        for task in self.graph.dependents_of(failed) {
            if self
                .graph
                .tasks
                .get(task)
                .is_some_and(|n| !n.record.status.is_terminal())
            {
                freed.extend(self.cancel_task(task));
                if let Some(run) = self.graph.objectives.get_mut(&objective) {
                    run.unfinished = run.unfinished.saturating_sub(1);
                }
            }
        }
        let requested = self.request_plan(objective, replan, Some(failed)).is_some();
        for agent in freed {
            self.pull_for(agent);
        }
        requested
    }
}
