//! A task rendered into a model prompt.

use serde_json::Value;
use swarm_protocol::Task;

use super::ModelSpec;
use crate::model::provider::{Message, Prompt};

/// Renders a task into a prompt. The input may be a string (the user message), or an object
/// with `prompt` (a string) or `messages` (`[{role, content}]`), and optionally `system`,
/// `max_tokens` and `json: true`; any other input is sent as JSON text. Outputs of the task's
/// dependencies are appended to the last user message.
pub fn render(spec: &ModelSpec, task: &Task) -> Result<Prompt, String> {
    let input = &*task.input;
    let mut system = spec.system_prompt.clone();
    let mut max_tokens = spec.max_tokens;
    let mut json = false;
    let mut messages = match input {
        Value::String(text) => vec![user(text.clone())],
        Value::Object(map) => {
            if let Some(s) = map.get("system") {
                system = Some(
                    s.as_str()
                        .ok_or("input field `system` must be a string")?
                        .to_owned(),
                );
            }
            if let Some(m) = map.get("max_tokens") {
                max_tokens = m
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .filter(|m| *m > 0)
                    .ok_or("input field `max_tokens` must be a positive integer")?;
            }
            if let Some(j) = map.get("json") {
                json = j
                    .as_bool()
                    .ok_or("input field `json` must be true or false")?;
            }
            if let Some(list) = map.get("messages") {
                serde_json::from_value::<Vec<Message>>(list.clone()).map_err(|e| {
                    format!("input field `messages` must be [{{\"role\", \"content\"}}]: {e}")
                })?
            } else if let Some(p) = map.get("prompt") {
                vec![user(
                    p.as_str()
                        .ok_or("input field `prompt` must be a string")?
                        .to_owned(),
                )]
            } else {
                vec![user(input.to_string())]
            }
        }
        Value::Null => vec![user(format!("Task `{}`.", task.key))],
        other => vec![user(other.to_string())],
    };
    if !task.upstream.is_empty() {
        let mut context = String::from("\n\nResults of the tasks this one depends on:");
        for (key, output) in &task.upstream {
            let text = match output {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            context.push_str(&format!("\n- {key}: {text}"));
        }
        match messages.iter_mut().rev().find(|m| m.role == "user") {
            Some(last) => last.content.push_str(&context),
            None => messages.push(user(context.trim_start().to_owned())),
        }
    }
    if messages.is_empty() {
        return Err("input field `messages` is empty".into());
    }
    Ok(Prompt {
        system,
        messages,
        max_tokens,
        temperature: spec.temperature,
        json,
        stream: spec.stream,
    })
}

fn user(content: String) -> Message {
    Message {
        role: "user".into(),
        content,
    }
}
