//! How to plug a new kind of agent into swarm without touching the scheduler.
//!
//! [`WordCount`] is defined here, outside every swarm crate: it only implements
//! [`swarm_agents::Agent`]. [`run`] starts a swarm, registers it at run time next to a built-in
//! [`EchoAgent`], and runs a small objective in which two "fetch" tasks feed one "count" task.
//! The `custom_agent` example prints the result; the integration test checks it.
//!
//! [`remote_worker`] hosts the same agent in a worker process of its own, for a swarm reached
//! through NATS (the `remote_worker` example).

pub mod remote_worker;

use std::time::Duration;

use serde_json::{Value, json};
use swarm_agents::{Agent, AgentFactory, EchoAgent, TaskContext};
use swarm_coordinator::{Registration, Swarm, SwarmConfig};
use swarm_protocol::{
    Capability, FailureKind, Objective, ObjectiveView, Task, TaskKey, TaskOutcome, TaskSpec,
};

/// The text the first fetch task echoes.
pub const FIRST_TEXT: &str = "the quick brown fox";
/// The text the second fetch task echoes.
pub const SECOND_TEXT: &str = "jumps over the lazy dog";

/// How long [`run`] waits for the objective to end.
const OBJECTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts words (runs of non-whitespace) and answers `{"words": n}`.
///
/// A string input is counted on its own. Otherwise the agent counts the outputs of the tasks
/// it depends on: a string output is counted as is, and an object output is counted by its
/// `input` field, which is where [`EchoAgent`] puts the text it echoes. Any other upstream
/// output is a permanent failure, since trying again would not change it.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCount;

impl Agent for WordCount {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        if let Some(text) = task.input.as_str() {
            return words(count_words(text));
        }
        let mut total = 0;
        for (dependency, output) in &task.upstream {
            let text = match output {
                Value::String(text) => text.as_str(),
                Value::Object(fields) => match fields.get("input").and_then(Value::as_str) {
                    Some(text) => text,
                    None => return no_text(dependency),
                },
                _ => return no_text(dependency),
            };
            total += count_words(text);
            // Long inputs would make this worth streaming; here it just shows the API.
            ctx.set_partial(json!({ "words": total }));
        }
        words(total)
    }
}

fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn words(n: usize) -> TaskOutcome {
    TaskOutcome::success(json!({ "words": n }))
}

fn no_text(dependency: &TaskKey) -> TaskOutcome {
    TaskOutcome::failure(
        FailureKind::Permanent,
        format!("the output of `{dependency}` holds no text to count"),
    )
}

fn registration(name: &str, capability: &str) -> anyhow::Result<Registration> {
    Ok(Registration {
        name: name.to_owned(),
        capabilities: vec![Capability::new(capability)?],
        max_concurrency: 4,
        labels: Default::default(),
        cost_hint: None,
        description: None,
    })
}

/// Starts a swarm, plugs in [`WordCount`], runs an objective that fetches two texts and counts
/// their words, shuts the swarm down and returns the objective's final state.
pub async fn run() -> anyhow::Result<ObjectiveView> {
    let swarm = Swarm::start(SwarmConfig::default()).await?;
    swarm
        .register_agent(
            registration("fetcher", "fetch")?,
            AgentFactory::shared(EchoAgent),
        )
        .await?;
    swarm
        .register_agent(
            registration("counter", "count")?,
            AgentFactory::shared(WordCount),
        )
        .await?;

    let (fetch, count) = (Capability::new("fetch")?, Capability::new("count")?);
    let (first, second) = (TaskKey::new("fetch-first")?, TaskKey::new("fetch-second")?);
    let tasks = vec![
        TaskSpec::new(first.clone(), fetch.clone()).with_input(json!(FIRST_TEXT)),
        TaskSpec::new(second.clone(), fetch).with_input(json!(SECOND_TEXT)),
        TaskSpec::new(TaskKey::new("count")?, count).after([first, second]),
    ];
    let id = swarm
        .submit(Objective::with_tasks("count the words of two texts", tasks))
        .await?;
    // Shut down even when waiting failed, then report the first error.
    let view = swarm.wait(id, OBJECTIVE_TIMEOUT).await;
    swarm.shutdown().await?;
    Ok(view?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use swarm_agents::{Agent, TaskContext};
    use swarm_protocol::{
        Capability, FailureKind, ObjectiveId, Task, TaskId, TaskKey, TaskOutcome,
    };

    use super::WordCount;

    fn task(input: Value, upstream: &[(&str, Value)]) -> Task {
        Task {
            id: TaskId(1),
            objective: ObjectiveId::new(),
            key: TaskKey::new("count").unwrap(),
            capability: Capability::new("count").unwrap(),
            attempt: 1,
            input: Arc::new(input),
            upstream: upstream
                .iter()
                .map(|(k, v)| (TaskKey::new(k).unwrap(), v.clone()))
                .collect(),
            idle_timeout: None,
            hard_timeout: None,
            priority: 0,
        }
    }

    async fn count(task: Task) -> TaskOutcome {
        WordCount
            .run(task, TaskContext::new(std::time::Instant::now()))
            .await
    }

    #[tokio::test]
    async fn a_string_input_is_counted_and_upstream_is_ignored() {
        let outcome = count(task(json!("  one two\tthree\n"), &[("a", json!("x y"))])).await;
        assert_eq!(outcome, TaskOutcome::success(json!({ "words": 3 })));
    }

    #[tokio::test]
    async fn upstream_strings_and_echoed_inputs_are_summed() {
        let upstream = [
            ("a", json!("one two")),
            ("b", json!({ "task": "b", "input": "three four five" })),
        ];
        let outcome = count(task(Value::Null, &upstream)).await;
        assert_eq!(outcome, TaskOutcome::success(json!({ "words": 5 })));
    }

    #[tokio::test]
    async fn an_upstream_output_without_text_fails_for_good() {
        let outcome = count(task(Value::Null, &[("a", json!({ "input": 3 }))])).await;
        let TaskOutcome::Failed { kind, message, .. } = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(kind, FailureKind::Permanent);
        assert!(message.contains("`a`"), "{message}");
    }
}
