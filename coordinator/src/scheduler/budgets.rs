//! Spending limits: an objective's `token_budget` and `cost_budget`, charged per attempt.
//!
//! An attempt's tokens and known cost are charged to its objective when it ends, before its
//! outcome is applied. Passing a budget either fails the objective naming the limit
//! (`on_budget: fail`, the default), or pauses it (`approve`): it starts no new attempt
//! (running ones finish and are charged), records `BudgetReached`, and waits for a person's
//! [`BudgetDecision`]. `continue` raises each budget it passed and records `BudgetRaised`;
//! `stop` fails it with the text `fail` would have given. The pause is in the log, so a
//! restart keeps it; the objective's `deadline` still runs while it waits. A pause never
//! holds back an objective whose tasks have all finished: it succeeds.

use swarm_protocol::{
    BudgetChoice, BudgetDecision, BudgetPause, Event, ObjectiveId, ObjectiveStatus,
    PausedObjective, SchedulerError, Usage, Usd,
};

use super::state::SchedulerState;

impl SchedulerState {
    /// Adds an attempt's tokens and known cost to its objective; the limit passed, with the
    /// reason naming it, when that takes a running objective (not already paused) over its
    /// `token_budget` or `cost_budget`.
    pub(super) fn charge(&mut self, objective: ObjectiveId, usage: &Usage) -> Option<BudgetPause> {
        if usage.tokens() == 0 && usage.cost_usd_micros.is_none() {
            return None;
        }
        let run = self.graph.objectives.get_mut(&objective)?;
        run.tokens = run.tokens.saturating_add(usage.tokens());
        run.cost_usd_micros = run.cost_usd_micros.saturating_add(usage.budget_cost());
        if run.status == ObjectiveStatus::Running && run.budget_pause.is_none() {
            run.over_budget()
        } else {
            None
        }
    }

    /// A running objective passed a budget. With `on_budget: fail`, the reason it fails (the
    /// caller ends it once the attempt's outcome is applied). With `approve` it pauses now,
    /// before the outcome is applied, so the outcome starts no attempt.
    pub(super) fn budget_passed(
        &mut self,
        objective: ObjectiveId,
        passed: BudgetPause,
    ) -> Option<String> {
        let run = self.graph.objectives.get(&objective)?;
        if run.fails_over_budget() {
            return Some(passed.reason);
        }
        self.pause_at_budget(objective, passed);
        None
    }

    fn pause_at_budget(&mut self, objective: ObjectiveId, passed: BudgetPause) {
        let Some(run) = self.graph.objectives.get_mut(&objective) else {
            return;
        };
        run.budget_pause = Some(passed.clone());
        self.dispatch.pause(objective);
        self.emit(Event::BudgetReached {
            objective,
            limit: passed.limit,
            reason: passed.reason,
        });
    }

    /// The objectives paused at a budget, oldest first (ids are time-ordered). Linear in the
    /// objectives held: for people looking, not for the hot path.
    pub(crate) fn budget_pauses(&self) -> Vec<PausedObjective> {
        let mut paused: Vec<PausedObjective> = self
            .graph
            .objectives
            .iter()
            .filter_map(|(id, run)| {
                Some(PausedObjective {
                    id: *id,
                    goal: run.goal.clone(),
                    pause: run.budget_pause.clone()?,
                })
            })
            .collect();
        paused.sort_by_key(|p| p.id);
        paused
    }

    /// A person's decision on an objective paused at a budget (see the module doc).
    pub(crate) fn decide_budget(
        &mut self,
        objective: ObjectiveId,
        decision: BudgetDecision,
    ) -> Result<(), SchedulerError> {
        let run = self
            .graph
            .objectives
            .get_mut(&objective)
            .ok_or(SchedulerError::UnknownObjective(objective))?;
        let pause = match (&run.budget_pause, run.status) {
            (Some(pause), ObjectiveStatus::Running) => pause.clone(),
            _ => return Err(SchedulerError::NotPausedAtBudget(objective)),
        };
        if decision.decision == BudgetChoice::Stop {
            self.end_objective(objective, ObjectiveStatus::Failed, Some(pause.reason));
            return Ok(());
        }
        // Each budget passed grows by what the person adds, or else by its submitted amount.
        let mut budgets = run.budgets();
        if let Some(budget) = budgets.token_budget
            && run.tokens > budget
        {
            let add = decision.add_tokens.or(run.limits.token_budget).unwrap_or(0);
            budgets.token_budget = Some(budget.saturating_add(add));
        }
        if let Some(budget) = budgets.cost_budget
            && run.cost_usd_micros > budget.micros()
        {
            let add = decision
                .add_cost
                .or(run.limits.cost_budget)
                .unwrap_or(Usd(0));
            budgets.cost_budget = Some(Usd(budget.micros().saturating_add(add.micros())));
        }
        run.raised = Some(budgets);
        run.budget_pause = None;
        let still_over = run.over_budget();
        self.emit(Event::BudgetRaised {
            objective,
            budgets,
            decided_by: decision.by,
        });
        match still_over {
            // Not raised enough: it waits for another decision.
            Some(passed) => self.pause_at_budget(objective, passed),
            None => self.dispatch.resume(&mut self.graph.tasks, objective),
        }
        Ok(())
    }
}
