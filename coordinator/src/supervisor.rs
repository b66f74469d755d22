//! The agent supervisor: spawns every agent actor linked to itself and restarts one that
//! fails, within a restart budget.
//!
//! ractor has no restart strategies, so the policy lives here: on a child's failure the agent is
//! marked down in the registry *before* the scheduler is told it was lost (so the scheduler can
//! no longer pick it and re-queues what it had in flight), then it is started again after a
//! backoff that doubles with each restart in the window. An agent that fails more than
//! `max_restarts` times within `window` stays down until it is registered again.
//!
//! Removing an agent gracefully (`Drain`) marks it `Draining` in the registry, so the scheduler
//! gives it nothing new, and returns at once; a task of its own waits, up to the grace period,
//! for the agent actor to say its running attempts ended (`AgentMsg::Drain`), then the agent
//! is stopped and removed, and what still ran is re-queued. A draining agent that crashes is
//! removed, not restarted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rustc_hash::FxHashMap;
use swarm_agents::{AgentActor, AgentArgs, AgentFactory, DynAgent, HealthFeed, ReportSink};
use swarm_protocol::{AgentDescriptor, AgentId, AgentMsg, Event, Health, SchedulerMsg};
use swarm_registry::Registration;
use tokio::time::Instant;

use crate::scheduler::AgentRegistry;

/// How often an agent may be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more failure marks the agent down.
    pub max_restarts: u32,
    /// The window restarts are counted in.
    pub window: Duration,
    /// The delay before the first restart in a window; it doubles with each further one.
    pub initial_backoff: Duration,
    /// The delay never grows past this.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Messages to the agent supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Register a new agent and start its actor.
    Register {
        /// What the registry should know.
        registration: Registration,
        /// Makes its plug-in.
        factory: AgentFactory,
        /// For an agent registered through the API: its configuration, recorded
        /// (`AgentDeclared`) so that a restart registers it again.
        declared: Option<serde_json::Value>,
        /// Answered once the agent can take work.
        reply: RpcReplyPort<Result<AgentDescriptor, crate::Error>>,
    },
    /// Stop an agent and remove it at once; its in-flight attempts are re-queued.
    Deregister {
        /// The agent.
        agent: AgentId,
        /// Answered once removed.
        reply: RpcReplyPort<Result<(), crate::Error>>,
    },
    /// Give the agent no new work, let its running attempts finish for up to `grace`, then
    /// remove it (what still runs then is re-queued). Asking again while it drains changes
    /// nothing.
    Drain {
        /// The agent.
        agent: AgentId,
        /// How long its running attempts may take to finish.
        grace: Duration,
        /// Answered once it is marked draining. The change has been sent to the scheduler to
        /// record by then, so a `SchedulerMsg::Flush` sent after the answer waits until it is
        /// durable.
        reply: RpcReplyPort<Result<(), crate::Error>>,
    },
    /// A drain ended; the agent is removed now. Sent by the drain's own task.
    Drained {
        /// The agent.
        agent: AgentId,
        /// How the drain ended.
        end: DrainEnd,
        /// The grace it was given.
        grace: Duration,
    },
    /// A restart backoff passed.
    Respawn {
        /// The agent.
        agent: AgentId,
    },
}

/// The plug-in instance each supervised agent's actor runs now, and how often the supervisor
/// restarted it, for operators (`GET /v1/agents`, `/metrics`). Only the supervisor writes it:
/// at registration, at each restart (a fresh instance from the agent's factory) and at
/// removal. Readers take a clone of the entry and ask the instance at the time of asking;
/// neither the scheduler nor the agent actors touch it, so it adds nothing to their paths.
#[derive(Clone, Default)]
pub struct LiveAgents(Arc<DashMap<AgentId, AgentLive>>);

/// One agent in [`LiveAgents`].
#[derive(Clone)]
pub struct AgentLive {
    /// The instance its actor runs.
    pub instance: Arc<dyn DynAgent>,
    /// Restarts by the supervisor since the agent was registered (not only within the
    /// restart window).
    pub restarts: u32,
}

impl LiveAgents {
    /// The agent's entry, if it is supervised: a clone, so asking its instance for its status
    /// holds no lock of the map.
    pub fn get(&self, agent: AgentId) -> Option<AgentLive> {
        self.0.get(&agent).map(|entry| entry.value().clone())
    }

    fn insert(&self, agent: AgentId, instance: Arc<dyn DynAgent>) {
        self.0.insert(
            agent,
            AgentLive {
                instance,
                restarts: 0,
            },
        );
    }

    fn restarted(&self, agent: AgentId, instance: Arc<dyn DynAgent>) {
        if let Some(mut live) = self.0.get_mut(&agent) {
            live.instance = instance;
            live.restarts = live.restarts.saturating_add(1);
        }
    }

    fn remove(&self, agent: AgentId) {
        self.0.remove(&agent);
    }
}

/// How an agent's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every attempt it ran finished.
    Idle,
    /// Attempts still ran when the grace elapsed.
    GraceElapsed,
    /// Its actor stopped before it said it was idle.
    ActorGone,
}

/// The agent supervisor actor. Behaviour only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentSupervisor;

/// What the supervisor starts with.
pub struct SupervisorArgs {
    /// The registry agents are registered in.
    pub registry: AgentRegistry,
    /// The scheduler, told of agents joining, failing and leaving.
    pub scheduler: ActorRef<SchedulerMsg>,
    /// Where agents put their reports.
    pub reports: ReportSink,
    /// The restart budget.
    pub policy: RestartPolicy,
    /// Where the live instances are published.
    pub live: LiveAgents,
}

struct Supervised {
    name: String,
    /// Registered through the API and not yet undeclared (see `Event::AgentDeclared`).
    declared: bool,
    factory: AgentFactory,
    max_concurrency: u32,
    actor: Option<ActorRef<AgentMsg>>,
    /// The agent's own health reports (a model agent's breaker), if it makes any.
    feed: Option<HealthFeed>,
    /// Forwards `feed` to the registry and the log.
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// Restart times within the current window.
    restarts: VecDeque<Instant>,
    /// Set while the agent drains before its removal: the task waiting for it.
    draining: Option<tokio::task::JoinHandle<()>>,
}

/// The supervisor's state.
pub struct SupervisorState {
    registry: AgentRegistry,
    scheduler: ActorRef<SchedulerMsg>,
    reports: ReportSink,
    policy: RestartPolicy,
    live: LiveAgents,
    agents: FxHashMap<AgentId, Supervised>,
    by_actor: FxHashMap<ActorId, AgentId>,
}

impl Actor for AgentSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            registry: args.registry,
            scheduler: args.scheduler,
            reports: args.reports,
            policy: args.policy,
            live: args.live,
            agents: FxHashMap::default(),
            by_actor: FxHashMap::default(),
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A stopping supervisor would kill its linked children without running their
        // `post_stop`; stop them gracefully first.
        state.by_actor.clear();
        for supervised in state.agents.values() {
            for task in [&supervised.forwarder, &supervised.draining]
                .into_iter()
                .flatten()
            {
                task.abort();
            }
        }
        myself
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Register {
                registration,
                factory,
                declared,
                reply,
            } => {
                let result = state
                    .register(&myself, registration, factory, declared)
                    .await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Deregister { agent, reply } => {
                let _ = reply.send(state.remove(agent, "deregistered"));
            }
            SupervisorMsg::Drain {
                agent,
                grace,
                reply,
            } => {
                let result = state.drain(&myself, agent, grace).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Drained { agent, end, grace } => {
                let reason = match end {
                    DrainEnd::Idle => "deregistered after draining".to_owned(),
                    DrainEnd::GraceElapsed => format!(
                        "deregistered: attempts still ran when its grace of {} elapsed",
                        humantime::format_duration(grace)
                    ),
                    DrainEnd::ActorGone => "deregistered: its actor stopped while draining".into(),
                };
                // Already gone if it crashed while draining.
                let _ = state.remove(agent, &reason);
            }
            SupervisorMsg::Respawn { agent } => state.respawn(&myself, agent).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state.on_child_down(&myself, cell.get_id(), err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Agent actors only stop when told to (deregistration removes them from
                // `by_actor` first); any other stop is treated as a failure.
                let reason = reason.unwrap_or_else(|| "stopped".to_owned());
                state.on_child_down(&myself, cell.get_id(), reason);
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    async fn register(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        registration: Registration,
        factory: AgentFactory,
        declared: Option<serde_json::Value>,
    ) -> Result<AgentDescriptor, crate::Error> {
        let max_concurrency = registration.max_concurrency;
        let name = registration.name.clone();
        let id = self.registry.reserve_id();
        let instance = factory.make();
        let actor = spawn_agent(
            myself,
            id,
            &name,
            instance.clone(),
            &self.reports,
            max_concurrency,
        )
        .await?;
        let descriptor = match self.registry.register_as(id, registration, actor.clone()) {
            Ok(d) => d,
            Err(err) => {
                actor.stop(None);
                return Err(err.into());
            }
        };
        self.by_actor.insert(actor.get_id(), id);
        let feed = instance.health_feed();
        self.live.insert(id, instance);
        self.record(Event::AgentRegistered {
            descriptor: descriptor.clone(),
        });
        let is_declared = declared.is_some();
        if let Some(config) = declared {
            self.record(Event::AgentDeclared {
                agent: id,
                name: name.clone(),
                config,
            });
        }
        let forwarder = feed.clone().map(|feed| self.forward_health(id, feed));
        self.agents.insert(
            id,
            Supervised {
                name,
                declared: is_declared,
                factory,
                max_concurrency,
                actor: Some(actor),
                feed,
                forwarder,
                restarts: VecDeque::new(),
                draining: None,
            },
        );
        self.tell(SchedulerMsg::AgentAvailable { agent: id });
        Ok(descriptor)
    }

    /// Marks the agent draining and starts the task that waits for it to be idle (see the
    /// module docs). A second request while it drains is a no-op.
    async fn drain(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        agent: AgentId,
        grace: Duration,
    ) -> Result<(), crate::Error> {
        let supervised = self
            .agents
            .get_mut(&agent)
            .ok_or(crate::Error::UnknownAgent(agent))?;
        if supervised.draining.is_some() {
            return Ok(());
        }
        // Its own health reports stop counting: a breaker closing must not make a draining
        // agent take work again. Awaited, so no report lands after `Draining` below.
        let forwarder = supervised.forwarder.take();
        let actor = supervised.actor.clone();
        // Forgotten now, not when the drain ends: a restart in between must not bring back an
        // agent whose removal was asked for.
        let undeclare = std::mem::take(&mut supervised.declared).then(|| supervised.name.clone());
        if let Some(forwarder) = forwarder {
            forwarder.abort();
            let _ = forwarder.await;
        }
        let _ = self.registry.set_health(agent, Health::Draining);
        self.record(Event::AgentHealthChanged {
            agent,
            health: Health::Draining,
            reason: format!(
                "removal requested: draining for up to {}",
                humantime::format_duration(grace)
            ),
        });
        if let Some(name) = undeclare {
            self.record(Event::AgentUndeclared { agent, name });
        }
        let Some(actor) = actor else {
            // Down between a crash and its restart: nothing runs there.
            return self.remove(agent, "deregistered while down");
        };
        let scheduler = self.scheduler.clone();
        let myself = myself.clone();
        let waiter = tokio::spawn(async move {
            let end = tokio::time::timeout(grace, async {
                // Every batch the scheduler gave the agent before it was marked draining is
                // sent once the turns before this flush are durable: after it, those batches
                // are in the agent's mailbox ahead of `Drain`.
                let _ = ractor::call!(scheduler, SchedulerMsg::Flush);
                match ractor::call!(actor, AgentMsg::Drain) {
                    Ok(()) => DrainEnd::Idle,
                    Err(_) => DrainEnd::ActorGone,
                }
            })
            .await
            .unwrap_or(DrainEnd::GraceElapsed);
            let _ = myself.cast(SupervisorMsg::Drained { agent, end, grace });
        });
        if let Some(supervised) = self.agents.get_mut(&agent) {
            supervised.draining = Some(waiter);
        }
        Ok(())
    }

    /// Stops the agent and removes it from the registry (so nothing new reaches it); the
    /// scheduler takes back whatever it still had in flight (`AgentLost`, with `reason`).
    fn remove(&mut self, agent: AgentId, reason: &str) -> Result<(), crate::Error> {
        let supervised = self
            .agents
            .remove(&agent)
            .ok_or(crate::Error::UnknownAgent(agent))?;
        // Out of the registry first, so nothing new is allocated to it.
        let _ = self.registry.deregister(agent);
        for task in [&supervised.forwarder, &supervised.draining]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        if let Some(actor) = supervised.actor {
            self.by_actor.remove(&actor.get_id());
            actor.stop(Some("deregistered".to_owned()));
        }
        self.live.remove(agent);
        self.tell(SchedulerMsg::AgentLost {
            agent,
            reason: reason.to_owned(),
        });
        if supervised.declared {
            self.record(Event::AgentUndeclared {
                agent,
                name: supervised.name,
            });
        }
        self.record(Event::AgentDeregistered { agent });
        Ok(())
    }

    fn on_child_down(&mut self, myself: &ActorRef<SupervisorMsg>, actor: ActorId, reason: String) {
        let Some(agent) = self.by_actor.remove(&actor) else {
            return;
        };
        let Some(supervised) = self.agents.get_mut(&agent) else {
            return;
        };
        supervised.actor = None;
        if supervised.draining.is_some() {
            // It was leaving anyway: removed, not restarted; what it ran is re-queued.
            tracing::warn!(agent_id = %agent, %reason, "agent actor failed while draining");
            let _ = self.remove(agent, &format!("failed while draining: {reason}"));
            return;
        }
        // Down before the scheduler hears of it: from here on nothing is allocated to it.
        let _ = self.registry.set_health(agent, Health::Down);
        tracing::warn!(agent_id = %agent, %reason, "agent actor failed");
        let now = Instant::now();
        while supervised
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            supervised.restarts.pop_front();
        }
        let restarts = supervised.restarts.len() as u32;
        let give_up = restarts >= self.policy.max_restarts;
        if !give_up {
            supervised.restarts.push_back(now);
        }
        self.record(Event::AgentHealthChanged {
            agent,
            health: Health::Down,
            reason: if give_up {
                format!(
                    "failed {} times within {:?}; not restarted: {reason}",
                    restarts + 1,
                    self.policy.window
                )
            } else {
                format!("failed: {reason}")
            },
        });
        self.tell(SchedulerMsg::AgentLost {
            agent,
            reason: reason.clone(),
        });
        if !give_up {
            let backoff = self
                .policy
                .initial_backoff
                .saturating_mul(1u32 << restarts.min(20))
                .min(self.policy.max_backoff);
            myself.send_after(backoff, move || SupervisorMsg::Respawn { agent });
        }
    }

    async fn respawn(&mut self, myself: &ActorRef<SupervisorMsg>, agent: AgentId) {
        let Some(supervised) = self.agents.get(&agent) else {
            return; // deregistered in the meantime
        };
        if supervised.actor.is_some() || supervised.draining.is_some() {
            return;
        }
        let max_concurrency = supervised.max_concurrency;
        let name = supervised.name.clone();
        let restarts = supervised.restarts.len() as u32;
        // A fresh instance, so a panic cannot leave the agent with broken state (unless its
        // factory shares one instance on purpose, as a model agent's does for its breaker).
        let instance = supervised.factory.make();
        match spawn_agent(
            myself,
            agent,
            &name,
            instance.clone(),
            &self.reports,
            max_concurrency,
        )
        .await
        {
            Ok(actor) => {
                self.by_actor.insert(actor.get_id(), agent);
                let _ = self.registry.set_handle(agent, actor.clone());
                let feed = instance.health_feed();
                self.live.restarted(agent, instance);
                let forwarder = feed.clone().map(|feed| self.forward_health(agent, feed));
                if let Some(s) = self.agents.get_mut(&agent) {
                    s.actor = Some(actor);
                    // Follow the new instance's reports (the old one's feed ended with it).
                    if let Some(old) = std::mem::replace(&mut s.forwarder, forwarder) {
                        old.abort();
                    }
                    s.feed = feed;
                }
                // Back to what the agent itself reports (an open breaker stays open).
                let health = self
                    .agents
                    .get(&agent)
                    .and_then(|s| s.feed.as_ref())
                    .map_or(Health::Up, |feed| feed.borrow().health);
                let _ = self.registry.set_health(agent, health);
                self.record(Event::AgentRestarted {
                    agent,
                    restarts,
                    reason: "restarted by its supervisor".to_owned(),
                });
                self.tell(SchedulerMsg::AgentAvailable { agent });
            }
            Err(err) => {
                tracing::error!(agent_id = %agent, %err, "agent could not be restarted; it stays down");
            }
        }
    }

    /// Follows an agent's own health reports: each change marks it in the registry and is
    /// recorded (a report that arrives while the actor is down for a restart is overridden
    /// by the restart, which reapplies the latest report); one that lets it take work again wakes the
    /// scheduler for it.
    fn forward_health(&self, agent: AgentId, mut feed: HealthFeed) -> tokio::task::JoinHandle<()> {
        let registry = self.registry.clone();
        let scheduler = self.scheduler.clone();
        tokio::spawn(async move {
            while feed.changed().await.is_ok() {
                let report = feed.borrow_and_update().clone();
                let Ok(previous) = registry.set_health(agent, report.health) else {
                    break; // deregistered
                };
                if previous == report.health {
                    continue;
                }
                let _ = scheduler.cast(SchedulerMsg::Record(Event::AgentHealthChanged {
                    agent,
                    health: report.health,
                    reason: report.reason,
                }));
                if report.health.accepts_work() {
                    let _ = scheduler.cast(SchedulerMsg::AgentAvailable { agent });
                }
            }
        })
    }

    fn record(&self, event: Event) {
        self.tell(SchedulerMsg::Record(event));
    }

    fn tell(&self, msg: SchedulerMsg) {
        if let Err(err) = self.scheduler.cast(msg) {
            tracing::debug!(%err, "scheduler gone");
        }
    }
}

async fn spawn_agent(
    myself: &ActorRef<SupervisorMsg>,
    id: AgentId,
    name: &str,
    agent: Arc<dyn DynAgent>,
    reports: &ReportSink,
    max_concurrency: u32,
) -> Result<ActorRef<AgentMsg>, crate::Error> {
    let args = AgentArgs {
        id,
        name: Arc::from(name),
        agent,
        reports: reports.clone(),
        max_concurrency,
    };
    let (actor, _join) = Actor::spawn_linked(None, AgentActor, args, myself.get_cell())
        .await
        .map_err(|e| crate::Error::ActorStart {
            actor: format!("agent {id}"),
            cause: e.to_string(),
        })?;
    Ok(actor)
}
