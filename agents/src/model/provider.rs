//! The two wire formats model agents speak: OpenAI-compatible chat completions (OpenAI, vLLM,
//! Ollama, llama.cpp, LiteLLM, ...) and Anthropic Messages, each streaming (SSE) or not.
//!
//! This module only builds request bodies and reads responses; sending, timeouts, the breaker
//! and the limiter are the agent's (`super::LlmAgent`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use swarm_protocol::Usage;

/// Which API a model agent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// `POST {base_url}/chat/completions`, bearer auth.
    #[serde(alias = "openai-compatible", alias = "open_ai")]
    Openai,
    /// `POST {base_url}/messages`, `x-api-key` and `anthropic-version` headers.
    Anthropic,
}

impl Provider {
    /// The endpoint under the base URL.
    pub fn url(self, base_url: &str) -> String {
        let base = base_url.trim_end_matches('/');
        match self {
            Self::Openai => format!("{base}/chat/completions"),
            Self::Anthropic => format!("{base}/messages"),
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

/// The JSON body of a request.
pub fn body(provider: Provider, model: &str, prompt: &Prompt) -> Value {
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
                "max_tokens": prompt.max_tokens,
                "stream": prompt.stream,
            });
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

/// OpenAI's `usage` object.
fn openai_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        output_tokens: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
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
            let usage = body.get("usage").map(|u| Usage {
                input_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
                output_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
            });
            let finish = body
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Completion {
                text,
                usage,
                finish,
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

/// What one server-sent event of a streaming answer adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStep {
    /// Generated text.
    Text(String),
    /// Nothing to keep (role announcements, pings, block starts).
    Nothing,
    /// The answer is complete.
    Done,
}

/// Folds streamed events into the completion as they arrive.
#[derive(Debug, Default)]
pub struct StreamState {
    /// What has been generated so far, and the usage and finish reason seen so far.
    pub completion: Completion,
    done: bool,
}

impl StreamState {
    /// True once the provider said the answer is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads one event (`event` is the SSE event name, empty when none was given).
    pub fn step(
        &mut self,
        provider: Provider,
        event: &str,
        data: &str,
    ) -> Result<StreamStep, String> {
        match provider {
            Provider::Openai => {
                if data.trim() == "[DONE]" {
                    self.done = true;
                    return Ok(StreamStep::Done);
                }
                let chunk: Value = serde_json::from_str(data)
                    .map_err(|e| format!("a streamed chunk is not JSON ({e}): {data}"))?;
                if chunk.get("error").is_some() {
                    return Err(error_message(data));
                }
                if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
                    self.completion.usage = Some(openai_usage(u));
                }
                if let Some(reason) = chunk
                    .pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
                {
                    self.completion.finish = Some(reason.to_owned());
                }
                match chunk
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    Some(text) if !text.is_empty() => {
                        self.completion.text.push_str(text);
                        Ok(StreamStep::Text(text.to_owned()))
                    }
                    _ => Ok(StreamStep::Nothing),
                }
            }
            Provider::Anthropic => {
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| format!("a streamed event is not JSON ({e}): {data}"))?;
                let kind = if event.is_empty() {
                    value
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                } else {
                    event
                };
                match kind {
                    "message_start" => {
                        let input = value
                            .pointer("/message/usage/input_tokens")
                            .and_then(Value::as_u64)
                            .unwrap_or(0);
                        let usage = self.completion.usage.get_or_insert_with(Usage::default);
                        usage.input_tokens = input;
                        Ok(StreamStep::Nothing)
                    }
                    "content_block_delta" => {
                        match value.pointer("/delta/text").and_then(Value::as_str) {
                            Some(text) if !text.is_empty() => {
                                self.completion.text.push_str(text);
                                Ok(StreamStep::Text(text.to_owned()))
                            }
                            _ => Ok(StreamStep::Nothing),
                        }
                    }
                    "message_delta" => {
                        if let Some(out) = value
                            .pointer("/usage/output_tokens")
                            .and_then(Value::as_u64)
                        {
                            let usage = self.completion.usage.get_or_insert_with(Usage::default);
                            usage.output_tokens = out;
                        }
                        if let Some(reason) =
                            value.pointer("/delta/stop_reason").and_then(Value::as_str)
                        {
                            self.completion.finish = Some(reason.to_owned());
                        }
                        Ok(StreamStep::Nothing)
                    }
                    "message_stop" => {
                        self.done = true;
                        Ok(StreamStep::Done)
                    }
                    "error" => Err(error_message(data)),
                    _ => Ok(StreamStep::Nothing),
                }
            }
        }
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
        let body = body(Provider::Openai, "m", &prompt(true));
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hello there");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["response_format"]["type"], "json_object");
    }

    #[test]
    fn anthropic_body_keeps_the_system_prompt_apart() {
        let body = body(Provider::Anthropic, "m", &prompt(false));
        assert!(body["system"].as_str().unwrap().starts_with("be brief"));
        assert!(body["system"].as_str().unwrap().contains(JSON_INSTRUCTION));
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["max_tokens"], 64);
    }

    #[test]
    fn completions_parse_in_both_formats() {
        let openai = json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let c = parse_completion(Provider::Openai, &openai).unwrap();
        assert_eq!((c.text.as_str(), c.finish.as_deref()), ("hi", Some("stop")));
        assert_eq!(c.usage.unwrap().input_tokens, 3);
        let anthropic = json!({"content": [{"type": "text", "text": "hi"}],
                               "stop_reason": "end_turn",
                               "usage": {"input_tokens": 3, "output_tokens": 1}});
        let c = parse_completion(Provider::Anthropic, &anthropic).unwrap();
        assert_eq!(c.text, "hi");
        assert_eq!(c.usage.unwrap().output_tokens, 1);
        assert!(parse_completion(Provider::Openai, &json!({})).is_err());
    }

    #[test]
    fn streams_fold_text_usage_and_the_end() {
        let mut s = StreamState::default();
        let steps = [
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":{"content":"b"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            "[DONE]",
        ];
        for data in steps {
            s.step(Provider::Openai, "", data).unwrap();
        }
        assert!(s.is_done());
        assert_eq!(s.completion.text, "ab");
        assert_eq!(s.completion.usage.unwrap().output_tokens, 2);

        let mut s = StreamState::default();
        let events = [
            (
                "message_start",
                r#"{"message":{"usage":{"input_tokens":4}}}"#,
            ),
            ("ping", "{}"),
            (
                "content_block_delta",
                r#"{"delta":{"type":"text_delta","text":"x"}}"#,
            ),
            (
                "message_delta",
                r#"{"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}"#,
            ),
            ("message_stop", "{}"),
        ];
        for (event, data) in events {
            s.step(Provider::Anthropic, event, data).unwrap();
        }
        assert!(s.is_done());
        assert_eq!(s.completion.text, "x");
        assert_eq!(s.completion.usage.unwrap().input_tokens, 4);
        assert_eq!(s.completion.finish.as_deref(), Some("end_turn"));
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
