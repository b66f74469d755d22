//! The plug-in trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use swarm_protocol::{AgentStatus, Health, Task, TaskOutcome};

use crate::context::TaskContext;

/// A kind of agent: given one attempt of a task, produce its outcome.
///
/// Implement this to plug a new kind of agent into the swarm; the scheduler needs no change.
/// `run` is polled on the agent's actor first and moved to a task of its own if it does not
/// finish at once, so it must not block the thread (use async I/O, or `spawn_blocking` for CPU
/// work). Failures are values ([`TaskOutcome::Failed`]); a panic counts as a crash of the agent,
/// which its supervisor restarts, and the attempt is retried elsewhere.
///
/// ```
/// use swarm_agents::{Agent, TaskContext};
/// use swarm_protocol::{Task, TaskOutcome};
///
/// struct Shout;
/// impl Agent for Shout {
///     async fn run(&self, task: Task, _ctx: TaskContext) -> TaskOutcome {
///         let text = task.input.as_str().unwrap_or_default().to_uppercase();
///         TaskOutcome::success(text.into())
///     }
/// }
/// ```
pub trait Agent: Send + Sync + 'static {
    /// Runs one attempt.
    fn run(&self, task: Task, ctx: TaskContext) -> impl Future<Output = TaskOutcome> + Send;

    /// Where the agent reports its own health (a model agent's circuit breaker opening, or a
    /// rejected API key): the coordinator marks the agent in the registry accordingly, so work
    /// goes to other agents with the capability. `None` (the default): the agent has no health
    /// of its own beyond crashing.
    fn health(&self) -> Option<HealthFeed> {
        None
    }

    /// What the agent can say about itself now beyond its health (a model agent: its breaker
    /// and its limiter's use), for operators (`GET /v1/agents`, `/metrics`). Called off the
    /// hot path, at the time of asking; the default says nothing.
    fn status(&self) -> AgentStatus {
        AgentStatus::default()
    }
}

/// An agent's health as the agent itself sees it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The health.
    pub health: Health,
    /// Why (e.g. `circuit open: ... answered 500`).
    pub reason: String,
}

/// The latest [`HealthReport`] of an agent, and every change.
pub type HealthFeed = tokio::sync::watch::Receiver<HealthReport>;

/// The future of one attempt, boxed so agents of every kind fit one actor type.
pub type AgentFuture = Pin<Box<dyn Future<Output = TaskOutcome> + Send + 'static>>;

/// [`Agent`] with its future boxed, so that plug-ins can be chosen at run time. Implemented for
/// every [`Agent`]; implement `Agent`, not this.
pub trait DynAgent: Send + Sync + 'static {
    /// Starts one attempt.
    fn start(self: Arc<Self>, task: Task, ctx: TaskContext) -> AgentFuture;

    /// See [`Agent::health`].
    fn health_feed(&self) -> Option<HealthFeed>;

    /// See [`Agent::status`].
    fn agent_status(&self) -> AgentStatus;
}

impl<A: Agent> DynAgent for A {
    fn start(self: Arc<Self>, task: Task, ctx: TaskContext) -> AgentFuture {
        Box::pin(async move { self.run(task, ctx).await })
    }

    fn health_feed(&self) -> Option<HealthFeed> {
        self.health()
    }

    fn agent_status(&self) -> AgentStatus {
        self.status()
    }
}

/// Makes the plug-in instance for an agent actor, each time the actor starts: a restarted
/// agent gets a fresh instance, so a panic cannot leave it with broken state.
#[derive(Clone)]
pub struct AgentFactory(Arc<dyn Fn() -> Arc<dyn DynAgent> + Send + Sync>);

impl AgentFactory {
    /// A factory that makes a new instance with `make` on every start.
    pub fn new<A: Agent>(make: impl Fn() -> A + Send + Sync + 'static) -> Self {
        Self(Arc::new(move || Arc::new(make()) as Arc<dyn DynAgent>))
    }

    /// A factory that hands out the same instance on every start (for stateless agents).
    pub fn shared<A: Agent>(agent: A) -> Self {
        let agent: Arc<dyn DynAgent> = Arc::new(agent);
        Self(Arc::new(move || agent.clone()))
    }

    /// Makes an instance.
    pub fn make(&self) -> Arc<dyn DynAgent> {
        (self.0)()
    }
}

impl std::fmt::Debug for AgentFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentFactory")
    }
}
