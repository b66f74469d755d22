//! The swarm coordinator: the actors that turn objectives into tasks and allocate them to
//! agents, and the library API ([`Swarm`]) that the `swarm` binary, the tests and the benches
//! drive.
//!
//! # Layout
//! - [`coordinator`]: the root of the supervision tree.
//! - [`scheduler`]: objectives, task graphs, ready queues and allocation.
//! - [`supervisor`]: agent actors and their restart policy.
//! - [`journal`]: where the scheduler's events go.
//! - [`bench`]: the in-process allocation benchmark behind `swarm bench`.
//! - [`demo`]: the small in-process run behind `swarm demo`.
//!
//! # Invariants
//! Only this crate wires the registry to the agents; the `registry` and `agents` crates never
//! import each other. Slow work never runs inside the scheduler's handler.

pub mod bench;
pub mod coordinator;
pub mod demo;
pub mod error;
pub mod journal;
pub mod scheduler;
pub mod supervisor;

use std::time::Duration;

use ractor::{Actor, ActorRef, call_t};
use swarm_agents::AgentFactory;
use swarm_protocol::{
    AgentDescriptor, AgentId, Event, Health, Objective, ObjectiveId, ObjectiveSummary,
    ObjectiveView, ReviewDecision, SchedulerMsg, SchedulerStats, TaskId,
};
pub use swarm_registry::Registration;
use tokio::task::JoinHandle;

use crate::coordinator::{Coordinator, CoordinatorArgs, CoordinatorMsg};
pub use crate::error::Error;
use crate::journal::{Journal, NullJournal};
pub use crate::scheduler::{AgentRegistry, SchedulerConfig};
pub use crate::supervisor::RestartPolicy;
use crate::supervisor::SupervisorMsg;

/// How a swarm is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmConfig {
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Agent restart budget.
    pub restart: RestartPolicy,
    /// How long a request to an actor may take before it is given up.
    pub call_timeout: Duration,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            restart: RestartPolicy::default(),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// A running coordinator: the supervision tree and the registry, behind one handle.
pub struct Swarm {
    root: ActorRef<CoordinatorMsg>,
    root_handle: JoinHandle<()>,
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    registry: AgentRegistry,
    call_timeout: Duration,
}

impl Swarm {
    /// Starts a swarm whose events are discarded.
    pub async fn start(config: SwarmConfig) -> Result<Self, Error> {
        Self::start_with_journal(config, Box::new(NullJournal)).await
    }

    /// Starts a swarm whose events go to `journal`.
    pub async fn start_with_journal(
        config: SwarmConfig,
        journal: Box<dyn Journal>,
    ) -> Result<Self, Error> {
        let registry = AgentRegistry::new();
        let args = CoordinatorArgs {
            registry: registry.clone(),
            journal,
            scheduler: config.scheduler,
            restart: config.restart,
        };
        let (root, root_handle) = Actor::spawn(None, Coordinator, args)
            .await
            .map_err(|e| Error::Actor(format!("coordinator could not start: {e}")))?;
        let ms = millis(config.call_timeout);
        let (scheduler, supervisor) = call_t!(root, CoordinatorMsg::Children, ms)?;
        Ok(Self {
            root,
            root_handle,
            scheduler,
            supervisor,
            registry,
            call_timeout: config.call_timeout,
        })
    }

    /// Registers an agent and starts its actor; it can take work when this returns.
    pub async fn register_agent(
        &self,
        registration: Registration,
        factory: AgentFactory,
    ) -> Result<AgentDescriptor, Error> {
        call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Register {
                registration,
                factory,
                reply
            },
            self.ms()
        )?
    }

    /// Stops an agent and removes it; its in-flight attempts are re-queued.
    pub async fn deregister_agent(&self, agent: AgentId) -> Result<(), Error> {
        call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Deregister { agent, reply },
            self.ms()
        )?
    }

    /// Submits an objective.
    pub async fn submit(&self, objective: Objective) -> Result<ObjectiveId, Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Submit { objective, reply },
            self.ms()
        )??)
    }

    /// Waits, up to `timeout`, for an objective to end and returns its final state.
    pub async fn wait(
        &self,
        objective: ObjectiveId,
        timeout: Duration,
    ) -> Result<ObjectiveView, Error> {
        self.wait_summary(objective, timeout).await?;
        self.objective(objective).await
    }

    /// Waits, up to `timeout`, for an objective to end and returns how it ended.
    pub async fn wait_summary(
        &self,
        objective: ObjectiveId,
        timeout: Duration,
    ) -> Result<ObjectiveSummary, Error> {
        call_t!(
            self.scheduler,
            |reply| SchedulerMsg::AwaitEnd { objective, reply },
            millis(timeout)
        )?
        .ok_or_else(|| swarm_protocol::SchedulerError::UnknownObjective(objective).into())
    }

    /// The current state of an objective.
    pub async fn objective(&self, objective: ObjectiveId) -> Result<ObjectiveView, Error> {
        call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Get { objective, reply },
            self.ms()
        )?
        .ok_or_else(|| swarm_protocol::SchedulerError::UnknownObjective(objective).into())
    }

    /// Cancels an objective.
    pub async fn cancel(&self, objective: ObjectiveId) -> Result<(), Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Cancel { objective, reply },
            self.ms()
        )??)
    }

    /// Applies a person's decision to a task in review.
    pub async fn review(&self, task: TaskId, decision: ReviewDecision) -> Result<(), Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Review {
                task,
                decision,
                reply
            },
            self.ms()
        )??)
    }

    /// Changes an agent's health (as an operator, or a circuit breaker, would). An agent that
    /// comes back up takes queued work at once.
    pub async fn set_health(&self, agent: AgentId, health: Health) -> Result<(), Error> {
        let previous = self.registry.set_health(agent, health)?;
        if previous != health {
            self.scheduler
                .cast(SchedulerMsg::Record(Event::AgentHealthChanged {
                    agent,
                    health,
                    reason: format!("set from {previous:?}"),
                }))?;
            if health.accepts_work() {
                self.scheduler
                    .cast(SchedulerMsg::AgentAvailable { agent })?;
            }
        }
        Ok(())
    }

    /// Scheduler counters.
    pub async fn stats(&self) -> Result<SchedulerStats, Error> {
        Ok(call_t!(self.scheduler, SchedulerMsg::Stats, self.ms())?)
    }

    /// The discovery registry.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// The scheduler actor.
    pub fn scheduler(&self) -> &ActorRef<SchedulerMsg> {
        &self.scheduler
    }

    /// True while the supervision tree runs.
    pub fn is_running(&self) -> bool {
        !self.root_handle.is_finished()
    }

    /// Stops the tree (agents, then the scheduler) and waits for it.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.root.stop(None);
        self.root_handle
            .await
            .map_err(|e| Error::Actor(format!("coordinator task failed: {e}")))
    }

    fn ms(&self) -> u64 {
        millis(self.call_timeout)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
