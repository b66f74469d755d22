//! The root of the supervision tree: it starts the store writer (with a durable log), the
//! scheduler and the agent supervisor linked to itself, and stops them in order (agents, then
//! the scheduler, then the writer, so every turn the scheduler made becomes durable) when it
//! stops. A child that fails stops the whole tree, and the reason is published to the
//! [`crate::Swarm`] handle.

use std::sync::Arc;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use swarm_agents::report_queue;
use swarm_protocol::SchedulerMsg;

use swarm_store::EventStore;
use tokio::sync::watch;

use crate::journal::Journal;
use crate::replay::Recovered;
use crate::scheduler::{AgentRegistry, Scheduler, SchedulerArgs, SchedulerConfig};
use crate::supervisor::{
    AgentSupervisor, LiveAgents, RestartPolicy, SupervisorArgs, SupervisorMsg,
};
use crate::writer::{StoreWriter, WriterConfig, WriterMsg, durable_pair};

/// Messages to the root.
#[derive(Debug)]
pub enum CoordinatorMsg {
    /// The children's refs.
    Children(RpcReplyPort<(ActorRef<SchedulerMsg>, ActorRef<SupervisorMsg>)>),
}

/// The root actor. Behaviour only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Coordinator;

/// What the root starts with.
pub struct CoordinatorArgs {
    /// The discovery registry.
    pub registry: AgentRegistry,
    /// Where events go.
    pub journal: JournalSetup,
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Agent restart budget.
    pub restart: RestartPolicy,
    /// Where the reason goes when a child fails and the tree stops.
    pub fatal: watch::Sender<Option<String>>,
    /// Where the supervisor publishes the agents' live instances.
    pub live: LiveAgents,
}

/// Where the scheduler's events go.
pub enum JournalSetup {
    /// A journal that keeps nothing durable.
    InMemory(Box<dyn Journal>),
    /// The durable log, and what was recovered from it.
    Durable {
        /// The store.
        store: Arc<dyn EventStore>,
        /// Where committed events go for live readers.
        feed: crate::writer::EventFeed,
        /// The fold of the log as it was found.
        recovered: Box<Recovered>,
        /// The writer's settings.
        config: WriterConfig,
    },
}

/// The root's state: its children.
pub struct CoordinatorState {
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    writer: Option<ActorRef<WriterMsg>>,
    fatal: watch::Sender<Option<String>>,
}

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let (inbox, make_sink) = report_queue();
        let (journal, restore, writer): (Box<dyn Journal>, _, _) = match args.journal {
            JournalSetup::InMemory(journal) => (journal, None, None),
            JournalSetup::Durable {
                store,
                feed,
                recovered,
                config,
            } => {
                let (writer_args, make_journal) = durable_pair(
                    store,
                    feed,
                    config,
                    recovered.last_seq,
                    recovered.snapshot_seq,
                );
                let (writer, _) =
                    Actor::spawn_linked(None, StoreWriter, writer_args, myself.get_cell()).await?;
                (
                    Box::new(make_journal(writer.clone())),
                    Some(recovered),
                    Some(writer),
                )
            }
        };
        let scheduler_args = SchedulerArgs {
            registry: args.registry.clone(),
            journal,
            config: args.scheduler,
            reports: inbox,
            restore,
        };
        let (scheduler, _) =
            Actor::spawn_linked(None, Scheduler, scheduler_args, myself.get_cell()).await?;
        let supervisor_args = SupervisorArgs {
            registry: args.registry,
            scheduler: scheduler.clone(),
            reports: make_sink(scheduler.clone()),
            policy: args.restart,
            live: args.live,
        };
        let (supervisor, _) =
            Actor::spawn_linked(None, AgentSupervisor, supervisor_args, myself.get_cell()).await?;
        Ok(CoordinatorState {
            scheduler,
            supervisor,
            writer,
            fatal: args.fatal,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        // Agents first (they report to the scheduler), then the scheduler.
        let grace = Some(Duration::from_secs(10));
        let _ = state.supervisor.stop_and_wait(None, grace).await;
        let _ = state.scheduler.stop_and_wait(None, grace).await;
        if let Some(writer) = &state.writer {
            let _ = writer.stop_and_wait(None, grace).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<CoordinatorMsg>,
        message: CoordinatorMsg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CoordinatorMsg::Children(reply) => {
                let _ = reply.send((state.scheduler.clone(), state.supervisor.clone()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        event: SupervisionEvent,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &event {
            // A failed child ends the coordinator rather than run on half a tree: a scheduler
            // or writer that failed may hold state the log does not, and a restart rebuilds
            // everything accepted from the log.
            tracing::error!(actor = %cell.get_id(), %err, "coordinator child failed; stopping");
            let _ = state.fatal.send(Some(err.to_string()));
            myself.stop(Some(format!("child failed: {err}")));
        }
        Ok(())
    }
}
