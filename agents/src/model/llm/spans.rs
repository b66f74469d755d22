//! The inference span of a model call (OpenTelemetry GenAI semantic conventions) and what is
//! recorded on it.

use serde_json::Value;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::ModelSpec;
use crate::model::provider::{self, Prompt, Provider};
use crate::trace;

/// The inference span of one model call (GenAI semantic conventions: `chat {model}`, a
/// client span); what the answer tells is recorded by [`finish`].
pub(super) fn inference_span(spec: &ModelSpec, prompt: &Prompt) -> Span {
    tracing::info_span!(
        target: trace::TARGET,
        "chat",
        otel.name = %format_args!("chat {}", spec.model),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider_name(spec.provider),
        gen_ai.request.model = %spec.model,
        gen_ai.request.max_tokens = i64::from(prompt.max_tokens),
        gen_ai.request.temperature = prompt.temperature.map(f64::from),
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = Empty,
        server.port = Empty,
        gen_ai.system_instructions = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        "error.type" = Empty,
    )
}

/// A count of tokens as the `i64` an OpenTelemetry integer attribute is.
fn tokens(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// `gen_ai.provider.name` of a wire format.
fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "openai",
        Provider::Anthropic => "anthropic",
    }
}

/// Records where a call goes and, with `capture` on, its prompt (as the conventions' JSON
/// message parts).
pub(super) fn record_request(span: &Span, target: &reqwest::Url, prompt: &Prompt, capture: bool) {
    if let Some(host) = target.host_str() {
        span.record("server.address", host);
    }
    if let Some(port) = target.port_or_known_default() {
        span.record("server.port", i64::from(port));
    }
    if !capture {
        return;
    }
    if let Some(system) = &prompt.system {
        let parts = serde_json::json!([{"type": "text", "content": system}]);
        span.record("gen_ai.system_instructions", parts.to_string().as_str());
    }
    let messages: Vec<Value> = prompt
        .messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "role": m.role,
                "parts": [{"type": "text", "content": m.content}],
            })
        })
        .collect();
    span.record(
        "gen_ai.input.messages",
        Value::Array(messages).to_string().as_str(),
    );
}

/// Records what an answer tells: the model that answered, why it stopped, the tokens, and,
/// with `capture` on, the answer itself.
pub(super) fn record_completion(span: &Span, completion: &provider::Completion, capture: bool) {
    if let Some(model) = &completion.model {
        span.record("gen_ai.response.model", model.as_str());
    }
    if let Some(usage) = &completion.usage {
        span.record("gen_ai.usage.input_tokens", tokens(usage.input_tokens));
        span.record("gen_ai.usage.output_tokens", tokens(usage.output_tokens));
    }
    if let Some(reason) = &completion.finish {
        // A string array, which a `tracing` field cannot hold.
        span.set_attribute(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(
                vec![opentelemetry::StringValue::from(reason.clone())].into(),
            ),
        );
    }
    if capture {
        let message = serde_json::json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": completion.text}],
            "finish_reason": completion.finish.as_deref().unwrap_or(""),
        }]);
        span.record("gen_ai.output.messages", message.to_string().as_str());
    }
}
