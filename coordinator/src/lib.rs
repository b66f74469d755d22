//! The swarm engine: the actors that turn objectives into tasks and allocate them to agents,
//! and the library API ([`Swarm`]) that the edges (the `swarm-server` HTTP API and dashboard,
//! the `swarm-cli` binary), the tests and the benches drive.
//!
//! # Layout
//! - [`coordinator`]: the root of the supervision tree.
//! - [`scheduler`]: objectives, task graphs, ready queues and allocation.
//! - [`supervisor`]: agent actors and their restart policy.
//! - [`journal`]: where the scheduler's events go, and what waits for them to be durable.
//! - [`writer`]: the durable journal and the `StoreWriter` actor (group commit, snapshots,
//!   pruning) over a [`swarm_store::EventStore`].
//! - [`triggers`]: cron schedules and webhooks, owned by one actor spawned with the swarm.
//! - [`replay`]: rebuilding objectives from the log (recovery, snapshots, `swarm replay`).
//! - [`config`]: `swarm.toml` (the store, model agents and hooks), as data;
//!   `model_agents` (feature `model-agents`): a model agent built from its configuration.
//! - `startup.rs`: how a [`Swarm`] starts ([`SwarmConfig`], [`StoreConfig`], the durable open
//!   and its [`RecoveryReport`]); this file holds the [`Swarm`] handle, whose methods ask the
//!   actors.
//!
//! The edges live in packages of their own, so this one builds without an HTTP server, a
//! template engine or a command-line parser (CI checks its dependency tree):
//! `coordinator/server` (`swarm-server`: the HTTP API and the dashboard behind `swarm serve`,
//! and the wording of the chain of work), `coordinator/cli` (`swarm-cli`: the `swarm` binary,
//! its HTTP client, `swarm demo` and `swarm bench`), and `coordinator/testkit` (the tests'
//! shared harness).
//!
//! # Invariants
//! Only this crate wires the registry to the agents; the `registry` and `agents` crates never
//! import each other. Slow work never runs inside the scheduler's handler.

pub mod config;
pub mod coordinator;
pub mod error;
pub mod journal;
#[cfg(feature = "model-agents")]
pub mod model_agents;
pub mod replay;
pub mod scheduler;
mod startup;
mod submit;
pub mod supervisor;
pub mod triggers;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort, call_t};
use swarm_agents::AgentFactory;
use swarm_agents::clock::Clock;
use swarm_protocol::{
    AgentDescriptor, AgentId, BudgetDecision, Capability, Event, EventRecord, ExternalEvent,
    FencedResult, Health, NewExternalEvent, Objective, ObjectiveId, ObjectiveStatus,
    ObjectiveSummary, ObjectiveView, PausedObjective, ReviewDecision, ScheduleSpec, SchedulerError,
    SchedulerMsg, SchedulerStats, TaskId, TaskPage, TaskQuery, TraceContext,
};
pub use swarm_registry::Registration;
pub use swarm_store::{DeclaredAgent, DeclaredHook};
use swarm_store::{EventStore, StoredObjective};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordinator::CoordinatorMsg;
pub use crate::error::Error;
use crate::replay::replay_objective;
pub use crate::scheduler::{AgentRegistry, SchedulerConfig};
pub use crate::startup::{RecoveryReport, StoreConfig, SwarmConfig};
use crate::supervisor::SupervisorMsg;
pub use crate::supervisor::{AgentLive, LiveAgents, RestartPolicy};
use crate::triggers::actor::{CHANGE_CALLS, TriggerMsg};
use crate::triggers::{Hook, HookView, Hooks, ScheduleLoop, ScheduleView};
pub use crate::writer::WriterConfig;

/// A running coordinator: the supervision tree and the registry, behind one handle.
pub struct Swarm {
    root: ActorRef<CoordinatorMsg>,
    root_handle: JoinHandle<()>,
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<SupervisorMsg>,
    registry: AgentRegistry,
    live: LiveAgents,
    call_timeout: Duration,
    store: Option<Arc<dyn EventStore>>,
    fatal: watch::Receiver<Option<String>>,
    recovery: Option<RecoveryReport>,
    resumed: Vec<ObjectiveId>,
    feed: Option<crate::writer::EventFeed>,
    /// The owner of the schedules and the hooks (`triggers::actor`).
    triggers: ActorRef<TriggerMsg>,
}

impl Swarm {
    /// Every event from now on, as soon as it is committed, in log order (`None` without a
    /// durable log). A reader that falls behind by more than the feed holds gets
    /// `RecvError::Lagged` and reads the gap from [`Swarm::store`].
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<EventRecord>>> {
        self.feed
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }

    /// The unfinished objectives recovered from the log when the swarm opened, oldest first.
    pub fn resumed(&self) -> &[ObjectiveId] {
        &self.resumed
    }

    /// What the durable start found in the log (`None` without a log).
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.recovery.as_ref()
    }

    /// The event log, when the swarm keeps one.
    pub fn store(&self) -> Option<&Arc<dyn EventStore>> {
        self.store.as_ref()
    }

    /// Up to `limit` objectives from the durable log's index with an id after `after`, of
    /// `status` only when given, oldest first (ids are UUIDv7s, so id order is submission
    /// order and the last id of a page is the cursor of the next).
    pub async fn list_objectives(
        &self,
        status: Option<ObjectiveStatus>,
        after: Option<ObjectiveId>,
        limit: usize,
    ) -> Result<Vec<StoredObjective>, Error> {
        let store = self.store.as_ref().ok_or(Error::NoStore)?;
        Ok(store.list_objectives(status, after, limit).await?)
    }

    /// An objective's chain of work: every event of it, in order, from the durable log.
    pub async fn chain(&self, objective: ObjectiveId) -> Result<Vec<EventRecord>, Error> {
        let store = self.store.as_ref().ok_or(Error::NoStore)?;
        let events = store.read_objective(objective).await?;
        if events.is_empty() {
            return Err(SchedulerError::UnknownObjective(objective).into());
        }
        Ok(events)
    }

    /// Resolves when the coordinator stopped because a part of it failed, with the reason
    /// (for example, the event log could not be written).
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.clone();
        match fatal.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the coordinator stopped".into(),
        }
    }

    /// The reason the coordinator stopped, if a part of it failed.
    pub fn failure(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// Turns an actor error into the coordinator's failure reason when it has one.
    fn explain(&self, err: Error) -> Error {
        err.explained(self.failure())
    }

    /// Waits until every event recorded so far is durable.
    async fn flush(&self) -> Result<(), Error> {
        call_t!(self.scheduler, SchedulerMsg::Flush, self.call_timeout_ms())
            .map_err(|e| self.explain(e.into()))?
            .map_err(Error::from)
    }

    /// An objective the scheduler no longer holds (it ended before a restart), from the log.
    async fn view_from_log(&self, objective: ObjectiveId) -> Result<Option<ObjectiveView>, Error> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        Ok(replay_objective(&**store, objective)
            .await?
            .map(|(model, _)| model.view()))
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
                declared: None,
                reply
            },
            self.call_timeout_ms()
        )?
    }

    /// Registers an agent as [`Swarm::register_agent`] does, and records `config` with it
    /// (`AgentDeclared`), so that a restart on the same log can register it again (see
    /// [`Swarm::declared_agents`]) until it is removed. Returns once that record is durable;
    /// if it cannot be made durable, the agent is removed again and the error returned.
    pub async fn register_declared_agent(
        &self,
        registration: Registration,
        factory: AgentFactory,
        config: serde_json::Value,
    ) -> Result<AgentDescriptor, Error> {
        let descriptor = call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Register {
                registration,
                factory,
                declared: Some(config),
                reply
            },
            self.call_timeout_ms()
        )??;
        match self.flush().await {
            Ok(()) => Ok(descriptor),
            Err(err) => {
                let _ = self.deregister_agent(descriptor.id).await;
                Err(err)
            }
        }
    }

    /// The agents registered through [`Swarm::register_declared_agent`] and not removed since,
    /// as the durable log holds them, in the order they were first declared (none without a
    /// log).
    pub async fn declared_agents(&self) -> Result<Vec<DeclaredAgent>, Error> {
        match &self.store {
            Some(store) => Ok(store.declared_agents().await?),
            None => Ok(Vec::new()),
        }
    }

    /// Stops an agent and removes it at once; its in-flight attempts are re-queued. See
    /// [`Swarm::remove_agent`] for the graceful way.
    pub async fn deregister_agent(&self, agent: AgentId) -> Result<(), Error> {
        call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Deregister { agent, reply },
            self.call_timeout_ms()
        )?
    }

    /// Removes an agent gracefully: from when this returns it is `Draining` (recorded, and
    /// durable with a durable log) and gets no new work; the attempts it runs may finish for
    /// up to `grace`, then it is stopped and removed (`AgentDeregistered`), and what still runs
    /// is re-queued. Returns at once, without waiting for the drain; asking again while it
    /// drains is harmless.
    pub async fn remove_agent(&self, agent: AgentId, grace: Duration) -> Result<(), Error> {
        call_t!(
            self.supervisor,
            |reply| SupervisorMsg::Drain {
                agent,
                grace,
                reply
            },
            self.call_timeout_ms()
        )??;
        // The supervisor recorded the change before it answered; wait until it is durable.
        self.flush().await
    }

    /// Submits an objective; it returns once the objective is accepted (and, with a durable
    /// store, recorded).
    pub async fn submit(&self, objective: Objective) -> Result<ObjectiveId, Error> {
        self.submit_with_key(objective, None).await
    }

    /// Submits an objective under a client's idempotency key: a submit with a key used before
    /// returns the objective first submitted with it, and creates nothing.
    pub async fn submit_with_key(
        &self,
        objective: Objective,
        idempotency_key: Option<String>,
    ) -> Result<ObjectiveId, Error> {
        self.submit_traced(objective, idempotency_key, None).await
    }

    /// Submits an objective as [`Swarm::submit_with_key`] does, continuing the caller's trace:
    /// the objective's workflow span gets the caller's span as its parent, and the trace
    /// context is recorded with the objective, so a restart continues the same trace.
    pub async fn submit_traced(
        &self,
        objective: Objective,
        idempotency_key: Option<String>,
        trace: Option<TraceContext>,
    ) -> Result<ObjectiveId, Error> {
        // No timeout of our own: the scheduler refuses a submit it reaches after the call
        // timeout, and otherwise answers once the objective is durable, so the answer is the
        // outcome (a submit that timed out here could still be accepted later).
        submit::submit(
            &self.scheduler,
            self.store.as_deref(),
            objective,
            idempotency_key,
            trace,
            self.call_timeout,
            |e| self.explain(e),
        )
        .await
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
        let summary = call_t!(
            self.scheduler,
            |reply| SchedulerMsg::AwaitEnd { objective, reply },
            millis(timeout)
        )
        .map_err(|e| self.explain(e.into()))?;
        if let Some(summary) = summary {
            return Ok(summary);
        }
        match self.view_from_log(objective).await? {
            Some(view) if view.status.is_terminal() => Ok(ObjectiveSummary {
                id: view.id,
                status: view.status,
                failure: view.failure,
                tasks: view.tasks.len() as u64,
            }),
            _ => Err(SchedulerError::UnknownObjective(objective).into()),
        }
    }

    /// The current state of an objective (from the log, for one that ended before the
    /// coordinator last started).
    pub async fn objective(&self, objective: ObjectiveId) -> Result<ObjectiveView, Error> {
        let view = call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Get { objective, reply },
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))?;
        match view {
            Some(view) => Ok(view),
            None => self
                .view_from_log(objective)
                .await?
                .ok_or_else(|| SchedulerError::UnknownObjective(objective).into()),
        }
    }

    /// Cancels an objective.
    pub async fn cancel(&self, objective: ObjectiveId) -> Result<(), Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Cancel { objective, reply },
            self.call_timeout_ms()
        )??)
    }

    /// Applies a person's decision to an objective paused at a spending limit: continue with
    /// larger budgets, or stop (it fails naming the limit).
    pub async fn decide_budget(
        &self,
        objective: ObjectiveId,
        decision: BudgetDecision,
    ) -> Result<(), Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Budget {
                objective,
                decision,
                reply
            },
            self.call_timeout_ms()
        )??)
    }

    /// The objectives paused at a spending limit, waiting for a person's decision, oldest
    /// first.
    pub async fn budget_pauses(&self) -> Result<Vec<PausedObjective>, Error> {
        call_t!(
            self.scheduler,
            SchedulerMsg::BudgetPauses,
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
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
            self.call_timeout_ms()
        )??)
    }

    /// Posts an event from outside: the first `wait` task waiting for its key consumes it (its
    /// payload becomes the task's output), or it is kept until one does or `ttl` passes.
    /// Answers once the event is durable. A repeated `idempotency_key` returns the event first
    /// posted with it (a different key or payload under it is a conflict).
    pub async fn post_event(&self, event: NewExternalEvent) -> Result<ExternalEvent, Error> {
        Ok(call_t!(
            self.scheduler,
            |reply| SchedulerMsg::PostEvent { event, reply },
            self.call_timeout_ms()
        )??)
    }

    /// The posted events no `wait` task consumed yet (and not expired), oldest first.
    pub async fn pending_events(&self) -> Result<Vec<ExternalEvent>, Error> {
        call_t!(
            self.scheduler,
            SchedulerMsg::PendingEvents,
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// Records a result that reached the coordinator with nobody waiting for it (a remote
    /// worker's late result, one from before a restart) as fenced: an
    /// [`Event::ResultFenced`] in its objective's chain of work, with the reason the
    /// scheduler finds (the attempt timed out, was lost or cancelled, the task ended), and no
    /// other change. Answers once the event is durable.
    ///
    /// When the scheduler no longer holds the task, the result is recorded if the log's index
    /// knows its objective (it ended, and was dropped from memory); otherwise nothing is
    /// recorded and the answer is [`SchedulerError::UnknownTask`]. A result whose attempt is
    /// the one running on its agent is not fenced: [`SchedulerError::AttemptCurrent`] (the
    /// scheduler still waits for it, as a report).
    pub async fn record_fenced(&self, result: FencedResult) -> Result<(), Error> {
        let answer = call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Fence { result, reply },
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))?;
        match answer {
            Err(SchedulerError::UnknownTask(task)) => {
                let ended = match &self.store {
                    Some(store) => store.objective(result.objective).await?,
                    None => None,
                };
                let Some(ended) = ended else {
                    return Err(SchedulerError::UnknownTask(task).into());
                };
                let reason = format!(
                    "task {task} is no longer held: its objective is {}",
                    format!("{:?}", ended.status).to_lowercase()
                );
                self.scheduler
                    .cast(SchedulerMsg::Record(Event::ResultFenced {
                        objective: result.objective,
                        task,
                        attempt: result.attempt,
                        agent: result.agent,
                        outcome: result.outcome,
                        reason,
                    }))
                    .map_err(|e| self.explain(e.into()))?;
                self.flush().await
            }
            answer => Ok(answer?),
        }
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

    /// One page of the tasks the scheduler holds, across objectives (every unfinished
    /// objective's, and those of the finished objectives still in memory: see
    /// `SchedulerConfig::keep_finished`), by task id. `GET /v1/tasks` and the dashboard's board
    /// both list tasks through this.
    pub async fn tasks(&self, query: TaskQuery) -> Result<TaskPage, Error> {
        call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Tasks { query, reply },
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// Stops allocating (every agent is marked `Draining`) and waits, up to `grace`, for the
    /// attempts already running to end; returns how many still run. Used before a graceful
    /// shutdown: what finishes is recorded, what does not is retried on the next start.
    pub async fn drain(&self, grace: Duration) -> Result<u64, Error> {
        for agent in self.registry.snapshots() {
            // Recorded like any health change; an agent deregistered meanwhile is skipped.
            let _ = self.set_health(agent.descriptor.id, Health::Draining).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let running = self.stats().await?.tasks_running;
            if running == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(running);
            }
            // Attempts end on the agents' own time; look again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Scheduler counters.
    pub async fn stats(&self) -> Result<SchedulerStats, Error> {
        Ok(call_t!(
            self.scheduler,
            SchedulerMsg::Stats,
            self.call_timeout_ms()
        )?)
    }

    /// Tasks waiting for an agent, per capability (every capability that has had a queue),
    /// ordered by capability.
    pub async fn queue_depths(&self) -> Result<Vec<(Capability, u64)>, Error> {
        call_t!(
            self.scheduler,
            SchedulerMsg::QueueDepths,
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// The discovery registry.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// Each agent's live plug-in instance and restart count.
    pub fn live_agents(&self) -> &LiveAgents {
        &self.live
    }

    /// The scheduler actor.
    pub fn scheduler(&self) -> &ActorRef<SchedulerMsg> {
        &self.scheduler
    }

    /// True while the supervision tree runs.
    pub fn is_running(&self) -> bool {
        !self.root_handle.is_finished()
    }

    /// Stops the triggers (a fire under way completes first), then the tree (agents, then the
    /// scheduler), and waits for it.
    pub async fn shutdown(self) -> Result<(), Error> {
        let grace = self.call_timeout * CHANGE_CALLS;
        let _ = self.triggers.stop_and_wait(None, Some(grace)).await;
        self.root.stop(None);
        self.root_handle
            .await
            .map_err(|e| Error::Actor(format!("coordinator task failed: {e}")))
    }

    /// Creates a schedule: checks `spec` (a bad field is [`Error::Invalid`], naming it; a
    /// template whose task graph is not valid is [`Error::Scheduler`] with
    /// [`SchedulerError::Graph`]; a name in use is [`Error::Exists`]), records
    /// `ScheduleCreated` and returns once it is durable (with a durable log). A restart
    /// restores the schedule from the store's index of the schedule events.
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<ScheduleView, Error> {
        self.change_triggers(|reply| TriggerMsg::CreateSchedule { spec, reply })
            .await
    }

    /// Every schedule, by name, with its next fire times as of now and its recent fires.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, Error> {
        call_t!(
            self.triggers,
            TriggerMsg::ListSchedules,
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// Pauses (`paused`) or resumes a schedule, recording `SchedulePaused` or
    /// `ScheduleResumed` (durable before it returns); asking for the state it is in records
    /// nothing. A resumed schedule fires from its next slot and catches nothing up.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleView, Error> {
        let name = name.to_owned();
        self.change_triggers(|reply| TriggerMsg::SetSchedulePaused {
            name,
            paused,
            reply,
        })
        .await
    }

    /// Deletes a schedule, recording `ScheduleDeleted` (durable before it returns). The
    /// objectives it submitted are not touched.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.change_triggers(|reply| TriggerMsg::DeleteSchedule { name, reply })
            .await
    }

    /// Fires `name` for the slot at `slot_ms` now: submits its template under the idempotency
    /// key `schedule:<name>:<slot_ms>`, then records `ScheduleFired` (durable before it
    /// returns), and returns the objective. Firing a slot again returns the objective of its
    /// first fire and submits nothing. This fires even a paused schedule: whether a slot is
    /// due, and the overlap and catch-up policies, are the firing loop's business.
    pub async fn fire_schedule(&self, name: &str, slot_ms: u64) -> Result<ObjectiveId, Error> {
        let name = name.to_owned();
        self.change_triggers(|reply| TriggerMsg::FireSchedule {
            name,
            slot_ms,
            reply,
        })
        .await
    }

    /// Starts the loop that fires the schedules at their slots on `clock` (which from now on
    /// is also the clock of creations, resumes and the next fire times shown). Stop it with
    /// [`ScheduleLoop::stop`] before the swarm is shut down. If the swarm has stopped, the
    /// loop it returns has stopped too.
    ///
    /// At its first turn, the slots missed while the coordinator was down (after a schedule's
    /// latest fire, creation or resume, up to now) are caught up as the schedule's
    /// `catch_up` says. Afterwards each due slot fires under the `overlap` policy; a turn
    /// that woke late fires the latest due slot once.
    pub async fn start_schedule_loop(&self, clock: Arc<dyn Clock>) -> ScheduleLoop {
        let (turns_tx, turns) = tokio::sync::watch::channel(0);
        let started = call_t!(
            self.triggers,
            |reply| TriggerMsg::StartFiring {
                clock,
                turns: turns_tx,
                reply
            },
            self.call_timeout_ms()
        );
        if let Err(err) = started {
            tracing::warn!(%err, "the schedules' firing loop did not start");
        }
        ScheduleLoop::new(self.triggers.clone(), turns, self.change_timeout_ms())
    }

    /// Serves `hooks` (those of `swarm.toml`, with the environment their secrets are read
    /// in), then again the hooks declared through the API and not deleted before the last stop
    /// (see `Hooks` for which are left out, with a warning, without failing); returns the
    /// names of those declared hooks served.
    pub async fn serve_hooks(&self, hooks: Hooks) -> Result<Vec<String>, Error> {
        call_t!(
            self.triggers,
            |reply| TriggerMsg::ServeHooks { hooks, reply },
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// Declares a hook through the API: checks `config` and reads its secret (a bad field is
    /// [`Error::Invalid`], naming it; a name in use is [`Error::Exists`], or
    /// [`Error::Configured`] for one of `swarm.toml`), records `HookDeclared` and serves it
    /// once that is durable.
    pub async fn declare_hook(&self, config: crate::config::HookConfig) -> Result<HookView, Error> {
        self.change_triggers(|reply| TriggerMsg::DeclareHook { config, reply })
            .await
    }

    /// Deletes a hook declared through the API: records `HookDeleted`, and stops serving it
    /// once that is durable. A hook of `swarm.toml` is [`Error::Configured`]; an unknown name
    /// [`Error::NotFound`]. A declared hook left out at start (its variable was unset) is not
    /// served but can still be deleted.
    pub async fn delete_hook(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.change_triggers(|reply| TriggerMsg::DeleteHook { name, reply })
            .await
    }

    /// The hook named `name`, if it is served (a delivery checks its signature with it).
    pub async fn hook(&self, name: &str) -> Result<Option<Arc<Hook>>, Error> {
        let name = name.to_owned();
        call_t!(
            self.triggers,
            |reply| TriggerMsg::GetHook { name, reply },
            self.call_timeout_ms()
        )
        .map_err(|e| self.explain(e.into()))
    }

    /// Every hook served, by name (each secret only by its variable).
    pub async fn hooks(&self) -> Result<Vec<HookView>, Error> {
        call_t!(self.triggers, TriggerMsg::ListHooks, self.call_timeout_ms())
            .map_err(|e| self.explain(e.into()))
    }

    /// The hooks declared through the API and not deleted since, as the durable log's index
    /// holds them, by name (none without a log).
    pub async fn declared_hooks(&self) -> Result<Vec<DeclaredHook>, Error> {
        match &self.store {
            Some(store) => Ok(store.declared_hooks().await?),
            None => Ok(Vec::new()),
        }
    }

    /// Asks the triggers for a change (or a fire), which answers once it is durable.
    async fn change_triggers<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, Error>>) -> TriggerMsg,
    ) -> Result<T, Error> {
        call_t!(self.triggers, message, self.change_timeout_ms())
            .map_err(|e| self.explain(e.into()))?
    }

    /// How long a request to an actor may take, in ms.
    fn call_timeout_ms(&self) -> u64 {
        millis(self.call_timeout)
    }

    /// How long a change of the triggers may take, in ms: it waits for its own durable work
    /// and for the work under way on its name before it.
    fn change_timeout_ms(&self) -> u64 {
        millis(self.call_timeout * CHANGE_CALLS)
    }
}

/// `d` in whole milliseconds (saturating), as `call_t!` takes a timeout.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
