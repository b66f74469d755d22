//! The scheduler actor: it owns every objective's task graph and the ready queues, and
//! allocates ready tasks to agents through the registry.
//!
//! The handler does only in-memory work; agents run attempts off their own mailboxes and retry
//! backoffs are timers that send a message back. Assignments made while handling one message go
//! out as one batch per agent when the handler ends.

pub mod planner;
mod queue;
mod record;
mod schema;
mod slab;
mod spawn;
mod state;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use swarm_agents::ReportInbox;
use swarm_protocol::SchedulerMsg;

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
    /// The most objectives that may be unfinished at once; a submit past it is refused.
    pub max_objectives_running: usize,
    /// When many tasks of one capability become ready at once, the least-loaded agent chosen
    /// for the first takes up to `capacity / burst_divisor` of them (at least one) in the same
    /// message before the registry chooses again. `1` hands a whole burst to one agent up to
    /// its capacity; a value above every capacity gives strict one-task-per-choice balance.
    pub burst_divisor: u32,
    /// With a durable log, the most finished objectives kept in memory; older ones are
    /// dropped and read back from the log when asked for. Without a log all are kept.
    pub keep_finished: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_lost_attempts: 5,
            max_objectives_running: 100_000,
            burst_divisor: 8,
            keep_finished: 10_000,
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
                reply,
            } => {
                let result = state.submit(objective, idempotency_key);
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
            SchedulerMsg::Review {
                task,
                decision,
                reply,
            } => {
                let result = state.review(task, decision);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::Get { objective, reply } => {
                let _ = reply.send(state.view(objective));
            }
            SchedulerMsg::AwaitEnd { objective, reply } => state.await_end(objective, reply),
            SchedulerMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            SchedulerMsg::QueueDepths(reply) => {
                let _ = reply.send(state.queue_depths());
            }
            SchedulerMsg::Tasks { query, reply } => {
                let _ = reply.send(state.task_page(&query));
            }
            SchedulerMsg::PostEvent { event, reply } => {
                let result = state.post_event(event);
                state.reply_after_commit(reply, result);
            }
            SchedulerMsg::PendingEvents(reply) => {
                let _ = reply.send(state.pending_events());
            }
            SchedulerMsg::WaitExpired { task, attempt } => state.on_wait_expired(task, attempt),
            SchedulerMsg::EventExpired { id, key } => state.on_event_expired(id, &key),
            SchedulerMsg::Record(event) => state.record(event),
            SchedulerMsg::Flush(reply) => state.reply_after_commit(reply, Ok(())),
        }
        state.flush();
        Ok(())
    }
}
