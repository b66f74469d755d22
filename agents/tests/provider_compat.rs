//! Provider compatibility over real HTTP on loopback: an `LlmAgent` against the simulated model
//! server (or wiremock, for what the sim cannot say) speaking what real providers and gateways
//! send: an Anthropic base URL without `/v1`, OpenAI's reasoning models that refuse
//! `max_tokens`, Azure OpenAI's `api-key` header and `api-version` query, input tokens reported
//! late (LiteLLM's `/v1/messages`), and a streamed request answered with plain JSON.
//!
//! The sim tests run on the real clock: the sim answers at once (no latency configured), so
//! nothing here waits on time. wiremock serves from a runtime of its own, so its tests run on
//! the real clock too.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use swarm_agents::clock::TokioClock;
use swarm_agents::model::breaker::{BreakerConfig, ConsecutiveBreaker};
use swarm_agents::model::limiter::{RateLimiter, RateLimits};
use swarm_agents::model::provider::{MaxTokensField, Provider};
use swarm_agents::model::{LlmAgent, ModelSpec};
use swarm_agents::sim::{Endpoint, SimConfig, SimHandle, SimServer};
use swarm_agents::{Agent, TaskContext};
use swarm_protocol::{
    Capability, FailureKind, ObjectiveId, Task, TaskId, TaskKey, TaskOutcome, Usage,
};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn sim() -> SimHandle {
    SimServer::start(SimConfig::default()).await.unwrap()
}

fn agent(spec: ModelSpec) -> LlmAgent {
    let clock = TokioClock::new();
    LlmAgent::new(
        spec,
        Arc::new(ConsecutiveBreaker::new(BreakerConfig::default(), clock)),
        RateLimiter::new(RateLimits::default(), clock),
    )
    .unwrap()
}

fn task(input: Value) -> Task {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Task {
        id: TaskId(NEXT.fetch_add(1, Ordering::Relaxed)),
        objective: ObjectiveId::new(),
        key: TaskKey::new("t").unwrap(),
        capability: Capability::new("write").unwrap(),
        attempt: 1,
        input: Arc::new(input),
        upstream: BTreeMap::new(),
        idle_timeout: None,
        hard_timeout: None,
        priority: 0,
    }
}

async fn run(agent: &LlmAgent, input: Value) -> TaskOutcome {
    agent
        .run(task(input), TaskContext::new(std::time::Instant::now()))
        .await
}

#[track_caller]
fn success(outcome: TaskOutcome) -> (Value, Usage) {
    match outcome {
        TaskOutcome::Succeeded {
            output,
            usage: Some(usage),
        } => (output, usage),
        other => panic!("expected a success with usage, got {other:?}"),
    }
}

#[track_caller]
fn failure(outcome: TaskOutcome) -> (FailureKind, String) {
    match outcome {
        TaskOutcome::Failed { kind, message, .. } => (kind, message),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_anthropic_base_url_works_with_or_without_v1() {
    let sim = sim().await;
    // `root_url` is what `ANTHROPIC_BASE_URL` holds for the official SDKs: no `/v1`.
    for base in [
        sim.root_url(),
        format!("{}/", sim.root_url()),
        sim.base_url(),
    ] {
        let agent = agent(ModelSpec::new(Provider::Anthropic, base.clone(), "sim"));
        let (output, _) = success(run(&agent, json!("hello")).await);
        assert!(output.as_str().is_some_and(|t| !t.is_empty()), "{base}");
    }
    assert_eq!(sim.stats().count_status(Endpoint::Messages, 200), 3);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn reasoning_models_get_max_completion_tokens() {
    let sim = sim().await;
    for stream in [true, false] {
        // By the model's name: the sim, like OpenAI, refuses `max_tokens` for `o3-mini`.
        let mut spec = ModelSpec::new(Provider::Openai, sim.base_url(), "o3-mini:tokens=3");
        spec.stream = stream;
        let (output, usage) = success(run(&agent(spec.clone()), json!("hi")).await);
        assert!(output.as_str().is_some(), "{output}");
        assert_eq!(usage.output_tokens, 3);

        // Forced the other way, the provider's refusal is permanent and says why.
        spec.max_tokens_field = MaxTokensField::MaxTokens;
        let (kind, message) = failure(run(&agent(spec), json!("hi")).await);
        assert_eq!(kind, FailureKind::Permanent, "{message}");
        assert!(message.contains("max_completion_tokens"), "{message}");

        // By the config key, for a model whose name does not say (a deployment, an alias).
        let mut spec = ModelSpec::new(Provider::Openai, sim.base_url(), "sim:tokens=2");
        spec.stream = stream;
        spec.max_tokens_field = MaxTokensField::MaxCompletionTokens;
        spec.max_tokens = 1;
        let (_, usage) = success(run(&agent(spec), json!("hi")).await);
        assert_eq!(usage.output_tokens, 1, "cut at max_completion_tokens");
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn extra_headers_and_query_reach_the_server_and_stay_secret() {
    let server = MockServer::start().await;
    let secret = "azure-secret-0123456789";
    Mock::given(method("POST"))
        .and(path("/openai/deployments/gpt4o/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", secret))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": "fine"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        })))
        .mount(&server)
        .await;
    // Any other request (no header, another key) gets a 401 quoting what it was sent.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"message": format!("Access denied: key {secret}-x is not valid")},
        })))
        .mount(&server)
        .await;
    let base = format!("{}/openai/deployments/gpt4o", server.uri());
    let mut spec = ModelSpec::new(Provider::Openai, base.clone(), "gpt-4o");
    spec.stream = false;
    spec.extras.add_secret_header("api-key", secret).unwrap();
    spec.extras.add_query("api-version", "2024-10-21");
    let shown = format!("{spec:?}");
    assert!(
        shown.contains("api-key") && !shown.contains(secret),
        "{shown}"
    );
    let (output, _) = success(run(&agent(spec.clone()), json!("hi")).await);
    assert_eq!(output, json!("fine"));

    let mut wrong = ModelSpec::new(Provider::Openai, base, "gpt-4o");
    wrong.stream = false;
    wrong.extras.add_secret_header("api-key", secret).unwrap();
    wrong.extras.add_query("api-version", "2099-01-01");
    let (kind, message) = failure(run(&agent(wrong), json!("hi")).await);
    assert_eq!(kind, FailureKind::Permanent, "{message}");
    assert!(
        message.contains("Access denied") && !message.contains(secret),
        "{message}"
    );
}

#[tokio::test]
async fn input_tokens_reported_late_are_counted() {
    let sim = sim().await;
    let input = json!("a prompt of some forty characters, more or less");
    let usage_of = |model: &str| {
        let spec = ModelSpec::new(Provider::Anthropic, sim.base_url(), model);
        let input = input.clone();
        async move { success(run(&agent(spec), input).await).1 }
    };
    let early = usage_of("sim:tokens=4").await;
    let late = usage_of("sim:tokens=4:late_usage").await;
    assert!(early.input_tokens > 0, "{early:?}");
    assert_eq!(late, early);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_streamed_request_answered_with_plain_json_is_read() {
    let sim = sim().await;
    for provider in [Provider::Openai, Provider::Anthropic] {
        let streamed = ModelSpec::new(provider, sim.base_url(), "sim:tokens=5");
        let plain = ModelSpec::new(provider, sim.base_url(), "sim:tokens=5:nostream");
        assert!(plain.stream);
        let (a, a_usage) = success(run(&agent(streamed), json!("same")).await);
        let (b, b_usage) = success(run(&agent(plain), json!("same")).await);
        // Same content: the directive is not part of the content hash's name.
        assert_eq!(a, b, "{provider:?}");
        assert_eq!(a_usage.output_tokens, b_usage.output_tokens, "{provider:?}");
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_streamed_request_answered_with_something_else_names_its_content_type() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<html>Sign in to the proxy</html>",
            "text/html; charset=utf-8",
        ))
        .mount(&server)
        .await;
    for provider in [Provider::Openai, Provider::Anthropic] {
        let spec = ModelSpec::new(provider, format!("{}/v1", server.uri()), "m");
        let (kind, message) = failure(run(&agent(spec), json!("hi")).await);
        assert_eq!(kind, FailureKind::Permanent, "{message}");
        assert!(
            message.contains("text/html") && !message.contains("ended before"),
            "{message}"
        );
    }
}
