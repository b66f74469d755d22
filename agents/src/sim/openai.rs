//! The OpenAI-compatible front end: `POST /v1/chat/completions`, its request and answer
//! shapes, its stream of `chat.completion.chunk`s, and its error bodies and rate-limit
//! headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::output::{Message, Shape};
use super::state::{Plan, RateInfo, Refusal, SimRequest, SimState, Step, unix_now};
use super::stats::Endpoint;

/// The fields of a chat completion request the server reads; others are ignored, as a
/// compatible server would.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    /// A string, an array of content parts, or null.
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Debug, Deserialize)]
struct JsonSchemaFormat {
    #[serde(default)]
    schema: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// How the answer is delivered.
struct Delivery {
    stream: bool,
    include_usage: bool,
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decided = decide(&state, &headers, &body);
    let status = decided
        .as_ref()
        .map_or_else(|refusal| refusal.status, |_| 200);
    state.record(Endpoint::ChatCompletions, status, &headers);
    if let Ok((plan, _)) = &decided {
        state.note_served(Endpoint::ChatCompletions, plan);
    }
    match decided {
        Err(refusal) => error_response(&refusal),
        Ok((plan, delivery)) if delivery.stream && !plan.no_stream => {
            let steps = stream_steps(&plan, delivery.include_usage);
            (
                rate_headers(plan.rate),
                state.event_stream(steps, plan.stalls()),
            )
                .into_response()
        }
        Ok((plan, _)) => complete(&state, &plan).await,
    }
}

fn decide(state: &SimState, headers: &HeaderMap, body: &[u8]) -> Result<(Plan, Delivery), Refusal> {
    check_key(state, headers)?;
    let request: ChatRequest = serde_json::from_slice(body)
        .map_err(|err| Refusal::invalid(format!("invalid request body: {err}"), None))?;
    if request.messages.is_empty() {
        return Err(Refusal::invalid(
            "messages must not be empty".into(),
            Some("messages"),
        ));
    }
    // As OpenAI answers for its reasoning models.
    let name = request.model.split(':').next().unwrap_or_default();
    if request.max_tokens.is_some() && crate::model::provider::is_reasoning_model(name) {
        return Err(Refusal::invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. \
             Use 'max_completion_tokens' instead."
                .into(),
            Some("max_tokens"),
        ));
    }
    let shape = match request.response_format {
        None | Some(ResponseFormat::Text) => Shape::Text,
        Some(ResponseFormat::JsonObject) => Shape::JsonObject,
        Some(ResponseFormat::JsonSchema { json_schema }) => json_schema
            .schema
            .map_or(Shape::JsonObject, Shape::JsonSchema),
    };
    let messages = request
        .messages
        .iter()
        .map(|message| Message {
            role: message.role.clone(),
            text: super::output::text_of(&message.content),
        })
        .collect();
    let plan = state.decide(SimRequest {
        model: &request.model,
        messages,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        shape,
        headers,
    })?;
    let delivery = Delivery {
        stream: request.stream.unwrap_or(false),
        include_usage: request.stream_options.unwrap_or_default().include_usage,
    };
    Ok((plan, delivery))
}

fn check_key(state: &SimState, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(key) = &state.config().api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(Refusal {
            message: "Incorrect API key provided (simulated)".into(),
            ..Refusal::status(401)
        })
    }
}

async fn complete(state: &SimState, plan: &Plan) -> Response {
    if !state.delivered(plan).await {
        return error_response(&Refusal {
            message: "the sim model server is stopping".into(),
            ..Refusal::status(503)
        });
    }
    let body = json!({
        "id": id(plan),
        "object": "chat.completion",
        "created": unix_now(),
        "model": plan.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": plan.content()},
            "finish_reason": finish_reason(plan),
        }],
        "usage": usage(plan),
    });
    (rate_headers(plan.rate), axum::Json(body)).into_response()
}

fn stream_steps(plan: &Plan, include_usage: bool) -> Vec<Step> {
    let id = id(plan);
    let created = unix_now();
    let chunk = |choices: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": plan.model,
            "choices": choices,
        })
    };
    let delta = |delta: Value, finish: Value| {
        let choices = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
        Event::default().data(chunk(choices).to_string())
    };
    let mut steps = vec![(
        plan.first_token,
        delta(json!({"role": "assistant"}), Value::Null),
    )];
    steps.extend(
        plan.streamed_pieces()
            .map(|(delay, piece)| (delay, delta(json!({"content": piece}), Value::Null))),
    );
    if !plan.stalls() {
        steps.push((Duration::ZERO, delta(json!({}), json!(finish_reason(plan)))));
        if include_usage {
            let mut last = chunk(json!([]));
            last["usage"] = usage(plan);
            steps.push((Duration::ZERO, Event::default().data(last.to_string())));
        }
        steps.push((Duration::ZERO, Event::default().data("[DONE]")));
    }
    steps
}

fn id(plan: &Plan) -> String {
    format!("chatcmpl-sim{:08x}", plan.sequence)
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.truncated { "length" } else { "stop" }
}

fn usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens(),
        "total_tokens": plan.prompt_tokens.saturating_add(plan.completion_tokens()),
    })
}

/// `{"error": {"message", "type", "param", "code"}}` with OpenAI's type and code for the
/// status, plus `Retry-After` and the rate-limit headers on a 429.
fn error_response(refusal: &Refusal) -> Response {
    let (kind, code) = match refusal.status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("invalid_request_error", json!("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        529 => ("server_error", json!("overloaded")),
        status if status >= 500 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    let body = json!({
        "error": {
            "message": refusal.message,
            "type": kind,
            "param": refusal.param,
            "code": code,
        }
    });
    super::state::refusal_response(refusal, rate_headers(refusal.rate), body)
}

fn rate_headers(rate: Option<RateInfo>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let Some(rate) = rate else {
        return headers;
    };
    if let Some(limit) = rate.limit {
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderValue::from(limit),
        );
    }
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderValue::from(rate.remaining),
    );
    if let Ok(reset) = HeaderValue::from_str(&reset_duration(rate.reset_secs)) {
        headers.insert(HeaderName::from_static("x-ratelimit-reset-requests"), reset);
    }
    headers
}

/// OpenAI's reset format: `2s`, `1m30s`.
fn reset_duration(secs: u64) -> String {
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}
