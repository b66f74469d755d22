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
/// `{"task": key, "input": ..., "upstream": {dep: output}}`, where a dependency that is an
/// echo shows its `task` and `input` only (not its own `upstream`), so a chain of echoes
/// answers equally deep at every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoAgent;

impl Agent for EchoAgent {
    async fn run(&self, task: Task, _ctx: TaskContext) -> TaskOutcome {
        // An echo's answer among the dependencies' outputs is shown without its own
        // `upstream`: repeating it would nest each answer of a chain of echoes one level deeper
        // than the one before, past what the log can read back.
        let upstream: serde_json::Map<String, Value> = task
            .upstream
            .into_iter()
            .map(|(key, mut output)| {
                if let Value::Object(answer) = &mut output
                    && answer.contains_key("task")
                    && answer.contains_key("input")
                {
                    answer.remove("upstream");
                }
                (key.as_str().to_owned(), output)
            })
            .collect();
        TaskOutcome::success(json!({
            "task": task.key,
            "input": *task.input,
            "upstream": upstream,
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

/// Simulated work, for the demo, the crash test and load runs: it waits `input.ms`
/// milliseconds (default 0), then outputs `{"sum": n + Σ upstream sums}` where `n` is
/// `input.n` (default 1), so a graph's final outputs depend on every task having run once with
/// its dependencies' real outputs. With `input.spawn = k` it also spawns `k` follow-up tasks
/// (`<key>-s0` … with `n` = 1 … k), which depend on it.
///
/// With an execution log, every attempt it begins is appended to that file as one line,
/// `<objective> <task> <attempt> <key>`, written with one `write` call on a file opened for
/// appending, so lines from concurrent attempts never interleave and a killed process loses
/// none that were written: an audit, outside the event log, of what actually ran.
#[derive(Debug, Clone, Default)]
pub struct WorkAgent {
    exec_log: Option<std::sync::Arc<std::fs::File>>,
}

impl WorkAgent {
    /// An agent that keeps no execution log.
    pub fn new() -> Self {
        Self::default()
    }

    /// An agent that appends every attempt it begins to `file` (opened for appending).
    pub fn with_exec_log(file: std::sync::Arc<std::fs::File>) -> Self {
        Self {
            exec_log: Some(file),
        }
    }
}

impl Agent for WorkAgent {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        use std::io::Write as _;
        if let Some(log) = &self.exec_log {
            let line = format!(
                "{} {} {} {}\n",
                task.objective, task.id.0, task.attempt, task.key
            );
            if let Err(err) = (&**log).write_all(line.as_bytes()) {
                return TaskOutcome::failure(
                    swarm_protocol::FailureKind::Transient,
                    format!("execution log not written: {err}"),
                );
            }
        }
        let ms = task.input.get("ms").and_then(Value::as_u64).unwrap_or(0);
        if ms > 0 {
            ctx.heartbeat();
            tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
        }
        let n = task.input.get("n").and_then(Value::as_u64).unwrap_or(1);
        let sum = task
            .upstream
            .values()
            .filter_map(|v| v.get("sum").and_then(Value::as_u64))
            .fold(n, u64::wrapping_add);
        let output = json!({ "sum": sum });
        let spawn = task.input.get("spawn").and_then(Value::as_u64).unwrap_or(0);
        if spawn == 0 {
            return TaskOutcome::success(output);
        }
        let mut tasks = Vec::new();
        for i in 0..spawn.min(100) {
            let key = match swarm_protocol::TaskKey::new(format!("{}-s{i}", task.key)) {
                Ok(key) => key,
                Err(err) => {
                    return TaskOutcome::failure(
                        swarm_protocol::FailureKind::Permanent,
                        err.to_string(),
                    );
                }
            };
            let mut spec = swarm_protocol::TaskSpec::new(key, task.capability.clone());
            spec.input = json!({ "n": i + 1, "ms": ms });
            tasks.push(spec);
        }
        TaskOutcome::Spawned {
            output,
            tasks,
            usage: None,
        }
    }
}
