//! Agents that ship with swarm, for tests, benchmarks and wiring checks.

use std::future::Future;

use serde_json::{Value, json};
use swarm_protocol::{Task, TaskOutcome};

use crate::agent::Agent;
use crate::context::TaskContext;

/// Succeeds at once with a null output. The benchmark's agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopAgent;

impl Agent for NoopAgent {
    async fn run(&self, _task: Task, _ctx: TaskContext) -> TaskOutcome {
        TaskOutcome::success(Value::Null)
    }
}

/// Succeeds at once, echoing its input and its dependencies' outputs:
/// `{"task": key, "input": ..., "upstream": {dep: output}}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    async fn run(&self, task: Task, _ctx: TaskContext) -> TaskOutcome {
        TaskOutcome::success(json!({
            "task": task.key,
            "input": *task.input,
            "upstream": task.upstream,
        }))
    }
}

/// An agent made from an async closure, for small plug-ins and tests.
///
/// ```
/// use swarm_agents::FnAgent;
/// use swarm_protocol::TaskOutcome;
///
/// let double = FnAgent::new(|task, _ctx| async move {
///     let n = task.input.as_i64().unwrap_or(0);
///     TaskOutcome::success((n * 2).into())
/// });
/// ```
pub struct FnAgent<F>(F);

impl<F, Fut> FnAgent<F>
where
    F: Fn(Task, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskOutcome> + Send + 'static,
{
    /// Wraps the closure.
    pub fn new(f: F) -> Self {
        Self(f)
    }
}

impl<F, Fut> Agent for FnAgent<F>
where
    F: Fn(Task, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskOutcome> + Send + 'static,
{
    fn run(&self, task: Task, ctx: TaskContext) -> impl Future<Output = TaskOutcome> + Send {
        (self.0)(task, ctx)
    }
}
