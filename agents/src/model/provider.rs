//! The two wire formats model agents speak: OpenAI-compatible chat completions (OpenAI, vLLM,
//! Ollama, llama.cpp, LiteLLM, ...) and Anthropic Messages, each streaming (SSE) or not.
//!
//! This module only builds request bodies and reads responses; sending, timeouts, the breaker
//! and the limiter are the agent's (`super::LlmAgent`).

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use swarm_protocol::Usage;

mod stream;

pub use stream::{StreamState, StreamStep};

/// Which API a model agent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// `POST {base_url}/chat/completions`, bearer auth.
    #[serde(alias = "openai-compatible", alias = "open_ai")]
    Openai,
    /// `POST {base_url}/messages` (`{base_url}/v1/messages` when the base URL does not end in
    /// `/v1`), `x-api-key` and `anthropic-version` headers.
    Anthropic,
}

impl Provider {
    /// The endpoint under the base URL. An Anthropic base URL may end in `/v1` or not: the
    /// official SDKs (and `ANTHROPIC_BASE_URL`) take the server's root and append
    /// `/v1/messages`, so both `https://api.anthropic.com` and `https://api.anthropic.com/v1`
    /// reach `https://api.anthropic.com/v1/messages`. An OpenAI base URL is taken as it is
    /// (the OpenAI SDKs' base ends in `/v1`; some compatible servers have another prefix).
    pub fn url(self, base_url: &str) -> String {
        let base = base_url.trim_end_matches('/');
        match self {
            Self::Openai => format!("{base}/chat/completions"),
            Self::Anthropic if base.ends_with("/v1") => format!("{base}/messages"),
            Self::Anthropic => format!("{base}/v1/messages"),
        }
    }
}

/// Which field of an OpenAI request carries the most tokens to generate. OpenAI's reasoning
/// models (the o1, o3 and o4 families, gpt-5) refuse `max_tokens` and need
/// `max_completion_tokens`; many compatible servers (older vLLM, llama.cpp) know only
/// `max_tokens`. Anthropic's Messages API always takes `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_completion_tokens` for a reasoning model (by its name, see
    /// [`is_reasoning_model`]), `max_tokens` for any other.
    #[default]
    Auto,
    /// Always `max_tokens`.
    MaxTokens,
    /// Always `max_completion_tokens`.
    MaxCompletionTokens,
}

impl MaxTokensField {
    /// The field's name in a request of `provider` to `model`.
    pub fn name(self, provider: Provider, model: &str) -> &'static str {
        match (provider, self) {
            (Provider::Anthropic, _) | (Provider::Openai, Self::MaxTokens) => "max_tokens",
            (Provider::Openai, Self::MaxCompletionTokens) => "max_completion_tokens",
            (Provider::Openai, Self::Auto) if is_reasoning_model(model) => "max_completion_tokens",
            (Provider::Openai, Self::Auto) => "max_tokens",
        }
    }
}

/// Whether `model` names one of OpenAI's reasoning models, which take `max_completion_tokens`
/// only: `o1`, `o3`, `o4` and `gpt-5` and their variants (`o3-mini`, `o4-mini-2025-04-16`,
/// `gpt-5-nano`), also behind a routing prefix such as `openai/` (LiteLLM, OpenRouter).
pub fn is_reasoning_model(model: &str) -> bool {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    ["o1", "o3", "o4", "gpt-5"].iter().any(|family| {
        name.strip_prefix(family)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.', ':']))
    })
}

/// Headers and query parameters added to every request of an agent: Azure OpenAI's `api-key`
/// header and `api-version` parameter, a gateway's routing or tenant header. They are sent
/// after the provider's own headers, so a header named here replaces the agent's (an
/// `authorization` of a gateway's own scheme, say).
///
/// A header's value may be a secret ([`Extras::add_secret_header`]): it is marked sensitive
/// (HTTP/2 never indexes it) and taken out of the agent's error messages. `Debug` shows header
/// names only. Query values are not secret (yet an error message shows a URL without its
/// query).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extras {
    headers: HeaderMap,
    query: Vec<(String, String)>,
}

impl Extras {
    /// Adds header `name: value`; the error names the header, never the value.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.insert(name, value, false)
    }

    /// Adds header `name: value` where the value is a secret (read from the environment).
    pub fn add_secret_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.insert(name, value, true)
    }

    fn insert(&mut self, name: &str, value: &str, secret: bool) -> Result<(), String> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            format!("the value of header `{name}` is not valid in HTTP (visible ASCII only)")
        })?;
        value.set_sensitive(secret);
        self.headers.append(header, value);
        Ok(())
    }

    /// Adds the query parameter `name=value`.
    pub fn add_query(&mut self, name: &str, value: &str) {
        self.query.push((name.to_owned(), value.to_owned()));
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The query parameters, in the order added.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The secret header values, to take out of error messages (some servers quote what they
    /// were sent).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.headers
            .values()
            .filter(|value| value.is_sensitive())
            .filter_map(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
    }

    /// Whether nothing is added.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty()
    }
}

impl fmt::Debug for Extras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extras")
            .field(
                "headers",
                &self
                    .headers
                    .keys()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("query", &self.query)
            .finish()
    }
}

/// How the body of a successful answer to a streamed request is read, by its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamedBody {
    /// Server-sent events (`text/event-stream`, or no content type at all).
    Events,
    /// One whole JSON answer (`application/json` or `…+json`): the server does not stream,
    /// as some proxies and gateways do not.
    Json,
    /// Anything else (an HTML page of a proxy, say): named in the error.
    Other(String),
}

impl StreamedBody {
    /// Reads a `Content-Type` header's value.
    pub fn of(content_type: Option<&str>) -> Self {
        let Some(content_type) = content_type else {
            return Self::Events;
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence.is_empty() || essence == "text/event-stream" {
            Self::Events
        } else if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else {
            Self::Other(content_type.trim().to_owned())
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant` (a system prompt is passed apart).
    pub role: String,
    /// The text.
    pub content: String,
}

/// What one request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The system prompt, if any.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature, if set.
    pub temperature: Option<f32>,
    /// Ask for a JSON object as the answer.
    pub json: bool,
    /// Stream the answer.
    pub stream: bool,
}

impl Prompt {
    /// A rough count of the prompt's tokens (four characters a token), for the token limiter.
    pub fn estimated_tokens(&self) -> u32 {
        let chars: usize = self.system.as_ref().map_or(0, String::len)
            + self.messages.iter().map(|m| m.content.len()).sum::<usize>();
        u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
    }
}

/// What a model without a JSON mode is told when a task asks for JSON.
pub const JSON_INSTRUCTION: &str = "Answer with a single JSON object and nothing else.";

/// The JSON body of a request; `max_tokens_field` says which field carries
/// [`Prompt::max_tokens`] in an OpenAI request.
pub fn body(
    provider: Provider,
    model: &str,
    prompt: &Prompt,
    max_tokens_field: MaxTokensField,
) -> Value {
    match provider {
        Provider::Openai => {
            let mut messages = Vec::with_capacity(prompt.messages.len() + 1);
            if let Some(system) = &prompt.system {
                messages.push(json!({ "role": "system", "content": system }));
            }
            messages.extend(
                prompt
                    .messages
                    .iter()
                    .map(|m| json!({ "role": m.role, "content": m.content })),
            );
            let mut body = json!({
                "model": model,
                "messages": messages,
                "stream": prompt.stream,
            });
            body[max_tokens_field.name(provider, model)] = json!(prompt.max_tokens);
            if prompt.stream {
                body["stream_options"] = json!({ "include_usage": true });
            }
            if let Some(t) = prompt.temperature {
                body["temperature"] = json!(t);
            }
            if prompt.json {
                body["response_format"] = json!({ "type": "json_object" });
            }
            body
        }
        Provider::Anthropic => {
            let mut body = json!({
                "model": model,
                "max_tokens": prompt.max_tokens,
                "messages": prompt.messages,
                "stream": prompt.stream,
            });
            // Messages has no JSON mode: the instruction goes in the system prompt.
            let system = match (&prompt.system, prompt.json) {
                (Some(system), true) => Some(format!("{system}\n\n{JSON_INSTRUCTION}")),
                (None, true) => Some(JSON_INSTRUCTION.to_owned()),
                (system, false) => system.clone(),
            };
            if let Some(system) = system {
                body["system"] = json!(system);
            }
            if let Some(t) = prompt.temperature {
                body["temperature"] = json!(t);
            }
            body
        }
    }
}

/// OpenAI's `usage` object (`prompt_tokens_details.cached_tokens` is part of `prompt_tokens`).
fn openai_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cached_input_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cost_usd_micros: None,
    }
}

/// The input counts of Anthropic's `usage` object: all input tokens, and those read from the
/// prompt cache. Anthropic counts cache reads and cache writes apart from `input_tokens`.
fn anthropic_input(u: &Value) -> (u64, u64) {
    let count = |field: &str| u.get(field).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let input = count("input_tokens")
        .saturating_add(cached)
        .saturating_add(count("cache_creation_input_tokens"));
    (input, cached)
}

/// A finished answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// Tokens, when the provider said.
    pub usage: Option<Usage>,
    /// Why generation stopped (`stop`, `length`, `end_turn`, `max_tokens`, ...).
    pub finish: Option<String>,
    /// The model that answered, as the provider names it (often a dated version of the name
    /// asked for, e.g. `gpt-4o-mini-2024-07-18`).
    pub model: Option<String>,
}

/// The `model` field of an answer (or of a streamed chunk).
fn model_of(value: &Value) -> Option<String> {
    value
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Reads a non-streaming answer.
pub fn parse_completion(provider: Provider, body: &Value) -> Result<Completion, String> {
    match provider {
        Provider::Openai => {
            let choice = body
                .pointer("/choices/0")
                .ok_or("the answer has no `choices[0]`")?;
            let text = choice
                .pointer("/message/content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let usage = body.get("usage").map(openai_usage);
            let finish = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Completion {
                text,
                usage,
                finish,
                model: model_of(body),
            })
        }
        Provider::Anthropic => {
            let blocks = body
                .get("content")
                .and_then(Value::as_array)
                .ok_or("the answer has no `content` array")?;
            let text = blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<String>();
            let usage = body.get("usage").map(|u| {
                let (input_tokens, cached_input_tokens) = anthropic_input(u);
                Usage {
                    input_tokens,
                    output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
                    cached_input_tokens,
                    cost_usd_micros: None,
                }
            });
            let finish = body
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Completion {
                text,
                usage,
                finish,
                model: model_of(body),
            })
        }
    }
}

/// The provider's own words from an error body (`{"error": {"message": ...}}` in both
/// formats), or the body itself, shortened.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .and_then(Value::as_str)
            .or_else(|| v.get("message").and_then(Value::as_str))
            .or_else(|| v.get("error").and_then(Value::as_str))
    });
    let text = message.unwrap_or(body).trim();
    if text.is_empty() {
        return "(no error message in the body)".to_owned();
    }
    if text.len() > 500 {
        let mut end = 500;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn prompt(stream: bool) -> Prompt {
        Prompt {
            system: Some("be brief".into()),
            messages: vec![Message {
                role: "user".into(),
                content: "hello there".into(),
            }],
            max_tokens: 64,
            temperature: None,
            json: true,
            stream,
        }
    }

    #[test]
    fn openai_body_carries_system_first_and_asks_for_usage_when_streaming() {
        let body = body(Provider::Openai, "m", &prompt(true), MaxTokensField::Auto);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hello there");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["response_format"]["type"], "json_object");
    }

    #[test]
    fn anthropic_body_keeps_the_system_prompt_apart() {
        let body = body(
            Provider::Anthropic,
            "m",
            &prompt(false),
            MaxTokensField::MaxCompletionTokens,
        );
        assert!(body["system"].as_str().unwrap().starts_with("be brief"));
        assert!(body["system"].as_str().unwrap().contains(JSON_INSTRUCTION));
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["max_tokens"], 64);
    }

    #[test]
    fn an_anthropic_base_url_may_leave_out_v1() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/",
        ] {
            assert_eq!(
                Provider::Anthropic.url(base),
                "https://api.anthropic.com/v1/messages",
                "{base}"
            );
        }
        assert_eq!(
            Provider::Anthropic.url("http://gw:4000/anthropic"),
            "http://gw:4000/anthropic/v1/messages"
        );
        // OpenAI-compatible servers have prefixes of their own: the base is taken as given.
        assert_eq!(
            Provider::Openai.url("http://127.0.0.1:11434/v1/"),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert_eq!(
            Provider::Openai.url("https://x.openai.azure.com/openai/deployments/d"),
            "https://x.openai.azure.com/openai/deployments/d/chat/completions"
        );
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        for model in [
            "o1",
            "o3-mini",
            "o4-mini-2025-04-16",
            "gpt-5",
            "gpt-5-nano",
            "openai/o3",
        ] {
            assert!(is_reasoning_model(model), "{model}");
        }
        for model in [
            "gpt-4o-mini",
            "o1x",
            "gpt-50",
            "llama3",
            "claude-sonnet-4-5",
            "sim:o3",
        ] {
            assert!(!is_reasoning_model(model), "{model}");
        }
        let fields = |model: &str, field: MaxTokensField| {
            let body = body(Provider::Openai, model, &prompt(false), field);
            (
                body.get("max_tokens").is_some(),
                body.get("max_completion_tokens").is_some(),
            )
        };
        assert_eq!(fields("gpt-4o", MaxTokensField::Auto), (true, false));
        assert_eq!(fields("o3-mini", MaxTokensField::Auto), (false, true));
        assert_eq!(fields("o3-mini", MaxTokensField::MaxTokens), (true, false));
        assert_eq!(
            fields("vllm-model", MaxTokensField::MaxCompletionTokens),
            (false, true)
        );
        let openai = body(Provider::Openai, "o3", &prompt(false), MaxTokensField::Auto);
        assert_eq!(openai["max_completion_tokens"], 64);
        // Messages knows only `max_tokens`.
        let anthropic = body(
            Provider::Anthropic,
            "o3",
            &prompt(false),
            MaxTokensField::MaxCompletionTokens,
        );
        assert_eq!(anthropic["max_tokens"], 64);
        assert!(anthropic.get("max_completion_tokens").is_none());
    }

    #[test]
    fn extras_check_header_names_and_hide_values() {
        let mut extras = Extras::default();
        extras.add_secret_header("api-key", "s3cret-value").unwrap();
        extras.add_header("x-team", "blue").unwrap();
        extras.add_query("api-version", "2024-10-21");
        let shown = format!("{extras:?}");
        assert!(
            shown.contains("api-key") && shown.contains("x-team") && shown.contains("api-version"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("blue"),
            "{shown}"
        );
        assert!(extras.headers()["api-key"].is_sensitive());
        assert!(!extras.headers()["x-team"].is_sensitive());
        assert_eq!(extras.secrets().collect::<Vec<_>>(), ["s3cret-value"]);
        let err = extras.add_header("bad header", "v").unwrap_err();
        assert!(err.contains("`bad header`"), "{err}");
        let err = extras
            .add_secret_header("x-ok", "line\nbreak-s3cret")
            .unwrap_err();
        assert!(err.contains("x-ok") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_streamed_answers_body_is_read_by_its_content_type() {
        assert_eq!(StreamedBody::of(None), StreamedBody::Events);
        assert_eq!(
            StreamedBody::of(Some("text/event-stream; charset=utf-8")),
            StreamedBody::Events
        );
        assert_eq!(
            StreamedBody::of(Some("Application/JSON; charset=utf-8")),
            StreamedBody::Json
        );
        assert_eq!(
            StreamedBody::of(Some("application/vnd.api+json")),
            StreamedBody::Json
        );
        assert_eq!(
            StreamedBody::of(Some("text/html")),
            StreamedBody::Other("text/html".into())
        );
    }

    #[test]
    fn completions_parse_in_both_formats() {
        let openai = json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let c = parse_completion(Provider::Openai, &openai).unwrap();
        assert_eq!((c.text.as_str(), c.finish.as_deref()), ("hi", Some("stop")));
        assert_eq!(c.model, None);
        assert_eq!(c.usage.unwrap().input_tokens, 3);
        let anthropic = json!({"content": [{"type": "text", "text": "hi"}],
                               "stop_reason": "end_turn",
                               "usage": {"input_tokens": 3, "output_tokens": 1}});
        let c = parse_completion(Provider::Anthropic, &anthropic).unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(c.usage.unwrap().output_tokens, 1);
        assert!(parse_completion(Provider::Openai, &json!({})).is_err());
        // Cached input: part of OpenAI's prompt count, apart from Anthropic's.
        let openai = json!({"choices": [{"message": {"content": "hi"}}], "model": "m-2025",
                            "usage": {"prompt_tokens": 10, "completion_tokens": 1,
                                      "prompt_tokens_details": {"cached_tokens": 4}}});
        let c = parse_completion(Provider::Openai, &openai).unwrap();
        assert_eq!(c.model.as_deref(), Some("m-2025"));
        let u = c.usage.unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (10, 4));
        let anthropic = json!({"content": [], "usage": {"input_tokens": 6, "output_tokens": 1,
                               "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}});
        let u = parse_completion(Provider::Anthropic, &anthropic)
            .unwrap()
            .usage
            .unwrap();
        assert_eq!((u.input_tokens, u.cached_input_tokens), (12, 4));
    }

    #[test]
    fn error_messages_are_the_providers_words() {
        assert_eq!(
            error_message(r#"{"error":{"message":"Incorrect API key provided","type":"x"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(
            error_message(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }
}
