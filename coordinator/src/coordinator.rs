//! The root of the supervision tree: it starts the scheduler and the agent supervisor linked
//! to itself, and stops them in order (agents first) when it stops.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use swarm_agents::report_queue;
use swarm_protocol::SchedulerMsg;

use crate::journal::Journal;
use crate::scheduler::{AgentRegistry, Scheduler, SchedulerArgs, SchedulerConfig};
use crate::supervisor::{AgentSupervisor, RestartPolicy, SupervisorArgs, SupervisorMsg};

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
    pub journal: Box<dyn Journal>,
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Agent restart budget.
    pub restart: RestartPolicy,
}

/// The root's state: its two children.
pub struct CoordinatorState {
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<SupervisorMsg>,
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
        let scheduler_args = SchedulerArgs {
            registry: args.registry.clone(),
            journal: args.journal,
            config: args.scheduler,
            reports: inbox,
        };
        let (scheduler, _) =
            Actor::spawn_linked(None, Scheduler, scheduler_args, myself.get_cell()).await?;
        let supervisor_args = SupervisorArgs {
            registry: args.registry,
            scheduler: scheduler.clone(),
            reports: make_sink(scheduler.clone()),
            policy: args.restart,
        };
        let (supervisor, _) =
            Actor::spawn_linked(None, AgentSupervisor, supervisor_args, myself.get_cell()).await?;
        Ok(CoordinatorState {
            scheduler,
            supervisor,
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
        _state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &event {
            // The scheduler's state is rebuilt from the durable log; without one, a failed
            // scheduler or supervisor ends the coordinator rather than run on half a tree.
            tracing::error!(actor = %cell.get_id(), %err, "coordinator child failed; stopping");
            myself.stop(Some(format!("child failed: {err}")));
        }
        Ok(())
    }
}
