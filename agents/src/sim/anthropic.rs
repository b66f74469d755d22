//! The Anthropic front end: `POST /v1/messages`, its request and answer shapes, its stream of
//! named events, and its error bodies and rate-limit headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::output::{Message, Shape};
use super::state::{Plan, RateInfo, Refusal, SimRequest, SimState, Step, unix_now};
use super::stats::Endpoint;

/// The fields of a Messages request the server reads; others are ignored.
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    /// A string or an array of text blocks.
    #[serde(default)]
    system: Value,
    messages: Vec<InputMessage>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: String,
    /// A string or an array of content blocks.
    content: Value,
}

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decided = decide(&state, &headers, &body);
    let status = decided
        .as_ref()
        .map_or_else(|refusal| refusal.status, |_| 200);
    state.record(Endpoint::Messages, status, &headers);
    if let Ok((plan, _)) = &decided {
        state.note_served(Endpoint::Messages, plan);
    }
    match decided {
        Err(refusal) => error_response(&refusal),
        Ok((plan, true)) if !plan.no_stream => {
            let steps = stream_steps(&plan);
            (
                rate_headers(plan.rate),
                state.event_stream(steps, plan.stalls()),
            )
                .into_response()
        }
        Ok((plan, _)) => complete(&state, &plan).await,
    }
}

/// The plan and whether to stream it.
fn decide(state: &SimState, headers: &HeaderMap, body: &[u8]) -> Result<(Plan, bool), Refusal> {
    check_key(state, headers)?;
    let request: MessagesRequest = serde_json::from_slice(body)
        .map_err(|err| Refusal::invalid(format!("invalid request body: {err}"), None))?;
    let Some(max_tokens) = request.max_tokens else {
        return Err(Refusal::invalid(
            "max_tokens: Field required".into(),
            Some("max_tokens"),
        ));
    };
    if request.messages.is_empty() {
        return Err(Refusal::invalid(
            "messages: at least one message is required".into(),
            Some("messages"),
        ));
    }
    let system = super::output::text_of(&request.system);
    let messages = (!system.is_empty())
        .then(|| Message {
            role: "system".into(),
            text: system,
        })
        .into_iter()
        .chain(request.messages.iter().map(|message| Message {
            role: message.role.clone(),
            text: super::output::text_of(&message.content),
        }))
        .collect();
    let plan = state.decide(SimRequest {
        model: &request.model,
        messages,
        max_tokens: Some(max_tokens),
        shape: Shape::Text,
        headers,
    })?;
    Ok((plan, request.stream.unwrap_or(false)))
}

fn check_key(state: &SimState, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(key) = &state.config().api_key else {
        return Ok(());
    };
    let given = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok());
    if given != Some(key.as_str()) {
        return Err(Refusal {
            message: "invalid x-api-key (simulated)".into(),
            ..Refusal::status(401)
        });
    }
    if !headers.contains_key("anthropic-version") {
        return Err(Refusal::invalid(
            "anthropic-version: header is required".into(),
            None,
        ));
    }
    Ok(())
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
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": plan.content()}],
        "stop_reason": stop_reason(plan),
        "stop_sequence": null,
        "usage": {
            "input_tokens": plan.prompt_tokens,
            "output_tokens": plan.completion_tokens(),
        },
    });
    (rate_headers(plan.rate), axum::Json(body)).into_response()
}

fn stream_steps(plan: &Plan) -> Vec<Step> {
    let event =
        |name: &'static str, data: Value| Event::default().event(name).data(data.to_string());
    // With `late_usage`, as LiteLLM's `/v1/messages` does: 0 at the start, the count at the end.
    let start_input_tokens = if plan.late_usage {
        0
    } else {
        plan.prompt_tokens
    };
    let mut end_usage = json!({"output_tokens": plan.completion_tokens()});
    if plan.late_usage {
        end_usage["input_tokens"] = json!(plan.prompt_tokens);
    }
    let start = json!({
        "type": "message_start",
        "message": {
            "id": id(plan),
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": start_input_tokens, "output_tokens": 1},
        },
    });
    let mut steps = vec![
        (plan.first_token, event("message_start", start)),
        (
            Duration::ZERO,
            event(
                "content_block_start",
                json!({
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }),
            ),
        ),
        (Duration::ZERO, event("ping", json!({"type": "ping"}))),
    ];
    steps.extend(plan.streamed_pieces().map(|(delay, piece)| {
        let delta = json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        });
        (delay, event("content_block_delta", delta))
    }));
    if !plan.stalls() {
        let end = [
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(plan), "stop_sequence": null},
                    "usage": end_usage,
                }),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        steps.extend(end.map(|(name, data)| (Duration::ZERO, event(name, data))));
    }
    steps
}

fn id(plan: &Plan) -> String {
    format!("msg_sim{:08x}", plan.sequence)
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// `{"type": "error", "error": {"type", "message"}}` with Anthropic's type for the status,
/// plus `retry-after` and the rate-limit headers on a 429.
fn error_response(refusal: &Refusal) -> Response {
    let kind = match refusal.status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        status if status >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": refusal.message},
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
            HeaderName::from_static("anthropic-ratelimit-requests-limit"),
            HeaderValue::from(limit),
        );
    }
    headers.insert(
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderValue::from(rate.remaining),
    );
    if let Ok(reset) = HeaderValue::from_str(&rfc3339(unix_now().saturating_add(rate.reset_secs))) {
        headers.insert(
            HeaderName::from_static("anthropic-ratelimit-requests-reset"),
            reset,
        );
    }
    headers
}

/// `secs` since the Unix epoch as an RFC 3339 UTC time, `2026-11-03T09:05:00Z` (the civil
/// date from days, after Howard Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
