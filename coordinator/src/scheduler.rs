//! The scheduler actor: it owns every objective's task graph and the ready queues, and
//! allocates ready tasks to agents through the registry.
//!
//! The handler does only in-memory work; agents run attempts off their own mailboxes and retry
//! backoffs are timers that send a message back. Assignments made while handling one message go
//! out as one batch per agent when the handler ends.
//!
//! # Layout
//!
//! [`SchedulerState`] (`state.rs`) is composed of parts that each own their data, keep their
//! rules in one place, and are tested on plain values, without an actor:
//! - `graph.rs`: the objectives, the task nodes and the task ids; edges, inputs, views and
//!   pages of tasks.
//! - `dispatch.rs`: the ready queues, the objectives' concurrency caps and parked tasks, the
//!   turn's bursts and outbox, who runs what, and the tasks an agent refused for good. The
//!   *allocation invariant* (a queued task never waits while a capable agent has room) and
//!   *fairness* (priority then age; an objective at its `max_concurrency` parks its tasks,
//!   keeping their places) live here.
//! - `waits.rs`: external events (posted for `wait` tasks), each key's mailbox and waiting
//!   tasks, and the events' idempotency keys (first waiter first, oldest event first).
//! - `sagas.rs`: the *saga* rule: a failed objective's compensations run one at a time,
//!   newest success first, and it ends `Failed` after the last.
//! - `checks.rs`: the planning checks, functions of the registry and the graph.
//! - `record.rs`: one task's record, folded from its events by the same code live and in
//!   replay; `queue.rs` and `slab.rs`: a ready queue and the task slab.
//!
//! The transitions that take several parts are the state's, a file per concern:
//! `objectives.rs` (submit, end, cancel), `reviews.rs` (a person's decisions on a review and
//! the review deadline's), `outcomes.rs` (reports and successes), `fencing.rs` (results of
//! attempts that are not current), `failures.rs` (retries, review, failing for good),
//! `plans.rs` (planning tasks and re-planning), `recovery.rs` (the restore from the log) and
//! the second half of `waits.rs` (`wait` tasks). `planner.rs` writes the planner's prompt and reads its plan, `schema.rs`
//! checks outputs, and `spawn.rs` reads follow-up tasks out of an output.

mod budgets;
mod checks;
mod dispatch;
mod failures;
mod fencing;
mod graph;
mod idempotency;
mod objectives;
mod outcomes;
pub mod planner;
mod plans;
mod queue;
mod record;
mod recovery;
mod reviews;
mod sagas;
mod schema;
mod slab;
mod spawn;
mod state;
mod waits;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use swarm_agents::ReportInbox;
use swarm_protocol::{SchedulerError, SchedulerMsg};

pub use record::{Planning, RejectedPlan, TaskRecord, objective_view};
pub use state::{AgentRegistry, SchedulerState};

pub(crate) use record::{link, task_of};

use crate::journal::Journal;
use crate::replay::Recovered;

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// A task whose attempts are lost to crashing agents more often than this fails (so a task
    /// that crashes every agent cannot loop for ever). Such losses do not use up the task's
    /// retry policy.
    pub max_lost_attempts: u32,
    /// A task whose attempts are declined more often than this fails. An agent declines only
    /// while it reports itself unable to take work (its breaker open, its account out of
    /// quota), so declines come one per agent slot each time such an agent comes back and
    /// the bound is far above `max_lost_attempts`; it keeps a plug-in that declines while it
    /// says it is up from looping a task for ever. Declines do not use up the retry policy.
    pub max_declined_attempts: u32,
    /// The most objectives that may be unfinished at once; a submit past it is refused.
    pub max_objectives_running: usize,
    /// When many tasks of one capability become ready at once, the least-loaded agent chosen
    /// for the first takes up to `capacity / burst_divisor` of them (at least one) in the same
    /// message before the registry chooses again. `1` hands a whole burst to one agent up to
    /// its capacity; a value above every capacity gives strict one-task-per-choice balance.
    pub burst_divisor: u32,
    /// With a durable log, the most finished objectives kept in memory; older ones are
    /// dropped and read back from the log when asked for. Without a log all are kept, unless
    /// `forget_finished_in_memory` is set.
    pub keep_finished: usize,
    /// Without a durable log, drop finished objectives past `keep_finished` too. Nothing can
    /// read a dropped objective back then (asking for it answers that it is unknown), so this
    /// is off by default; it bounds the memory of an in-memory swarm that runs for long, such
    /// as `swarm bench`.
    pub forget_finished_in_memory: bool,
    /// The most idempotency keys of submitted objectives held in memory. With a durable log,
    /// older keys (once durable) are answered from the log's objective index, until their
    /// objectives are pruned; without one, they are forgotten.
    pub idempotency_keys_in_memory: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_lost_attempts: 5,
            max_declined_attempts: 1_000,
            max_objectives_running: 100_000,
            burst_divisor: 8,
            keep_finished: 10_000,
            forget_finished_in_memory: false,
            idempotency_keys_in_memory: 100_000,
        }
    }
}

/// The scheduler actor. Behaviour only; its state is [`SchedulerState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Scheduler;

/// What the scheduler starts with.
pub struct SchedulerArgs {
    /// The discovery registry it allocates through.
    pub registry: AgentRegistry,
    /// Where its events go.
    pub journal: Box<dyn Journal>,
    /// Its limits.
    pub config: SchedulerConfig,
    /// Where agents' reports arrive.
    pub reports: ReportInbox,
    /// What to rebuild from the durable log, if anything.
    pub restore: Option<Box<Recovered>>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let mut state = SchedulerState::new(
            args.registry,
            myself,
            args.journal,
            args.config,
            args.reports,
        );
        if let Some(recovered) = args.restore {
            state.restore(*recovered);
        }
        state.flush();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        // A reply port whose asker stopped waiting is not an error of the scheduler's: replies
        // are sent with `let _ =`.
        state.begin_turn();
        // Reports queued before this message was sent come first (see `swarm_agents::sink`).
        state.drain_reports();
        match message {
            SchedulerMsg::ReportsReady => {
                state.rearm_reports();
                state.drain_reports();
            }
            SchedulerMsg::Submit {
                objective,
                idempotency_key,
                key_index_as_of,
                trace,
                accept_by,
                reply,
            } => {
                // Reached after the caller's deadline: refused, nothing recorded, so a caller
                // told that its submit failed never finds it accepted later.
                let result = if std::time::Instant::now() > accept_by {
                    Err(SchedulerError::NotTaken)
                } else {
                    state.submit(objective, idempotency_key, key_index_as_of, trace)
                };
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::Reports { agent, reports } => state.on_reports(agent, reports),
            SchedulerMsg::RetryDue { task, attempt } => state.on_retry_due(task, attempt),
            SchedulerMsg::DeadlinePassed { objective } => state.on_deadline(objective),
            SchedulerMsg::AgentAvailable { agent } => state.on_agent_available(agent),
            SchedulerMsg::AgentLost { agent, reason } => state.on_agent_lost(agent, &reason),
            SchedulerMsg::Cancel { objective, reply } => {
                let result = state.cancel(objective);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::Budget {
                objective,
                decision,
                reply,
            } => {
                let result = state.decide_budget(objective, decision);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::BudgetPauses(reply) => {
                let _ = reply.send(state.budget_pauses());
            }
            SchedulerMsg::Review {
                task,
                decision,
                reply,
            } => {
                let result = state.review(task, decision);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::Get { objective, reply } => {
                let _ = reply.send(state.graph.view(objective));
            }
            SchedulerMsg::AwaitEnd { objective, reply } => state.await_end(objective, reply),
            SchedulerMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            SchedulerMsg::QueueDepths(reply) => {
                let _ = reply.send(state.queue_depths());
            }
            SchedulerMsg::Tasks { query, reply } => {
                let _ = reply.send(state.graph.task_page(&query));
            }
            SchedulerMsg::PostEvent { event, reply } => {
                let result = state.post_event(event);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::PendingEvents(reply) => {
                let _ = reply.send(state.pending_events());
            }
            SchedulerMsg::WaitExpired { task, attempt } => state.on_wait_expired(task, attempt),
            SchedulerMsg::ReviewExpired { task, until_ms } => {
                state.on_review_expired(task, until_ms)
            }
            SchedulerMsg::EventExpired { id, key } => state.on_event_expired(id, &key),
            SchedulerMsg::Fence { result, reply } => {
                let result = state.fence(result);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::Record(event) => state.record(event),
            SchedulerMsg::Flush(reply) => state.reply_after_commit(reply, Ok(())),
        }
        state.flush();
        Ok(())
    }
}
