//! A streamed answer folded event by event: what each server-sent event of either format adds
//! to the completion.

use serde_json::Value;
use swarm_protocol::Usage;

use super::{Completion, Provider, anthropic_input, error_message, model_of, openai_usage};

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
                if self.completion.model.is_none() {
                    self.completion.model = model_of(&chunk);
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
                        let (input, cached) = value
                            .pointer("/message/usage")
                            .map_or((0, 0), anthropic_input);
                        let usage = self.completion.usage.get_or_insert_with(Usage::default);
                        usage.input_tokens = input;
                        usage.cached_input_tokens = cached;
                        self.completion.model = value.get("message").and_then(model_of);
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
                        // The counts here are cumulative. Anthropic sends the input count in
                        // `message_start`; LiteLLM's `/v1/messages` sends 0 there and the real
                        // count here. Either way the larger count is the whole prompt.
                        if let Some(input) =
                            value.pointer("/usage/input_tokens").and_then(Value::as_u64)
                        {
                            let usage = self.completion.usage.get_or_insert_with(Usage::default);
                            usage.input_tokens = usage.input_tokens.max(input);
                        }
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
    fn anthropic_input_tokens_may_come_late() {
        // LiteLLM's `/v1/messages`: 0 at the start, the count in `message_delta`.
        let mut s = StreamState::default();
        let events = [
            (
                "message_start",
                r#"{"message":{"usage":{"input_tokens":0,"output_tokens":0}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"delta":{"type":"text_delta","text":"x"}}"#,
            ),
            (
                "message_delta",
                r#"{"delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":17,"output_tokens":1}}"#,
            ),
            ("message_stop", "{}"),
        ];
        for (event, data) in events {
            s.step(Provider::Anthropic, event, data).unwrap();
        }
        let usage = s.completion.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (17, 1));
        // A delta without the count keeps the start's.
        let mut s = StreamState::default();
        s.step(
            Provider::Anthropic,
            "message_start",
            r#"{"message":{"usage":{"input_tokens":9}}}"#,
        )
        .unwrap();
        s.step(
            Provider::Anthropic,
            "message_delta",
            r#"{"delta":{},"usage":{"output_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(s.completion.usage.unwrap().input_tokens, 9);
    }
}
