//! The planner's side of the scheduler: the prompt a planning task is given, and the reading
//! of the plan it answers. Every word the planner is told lives in this file.
//!
//! A planner is an ordinary agent with capability `plan` (in practice an `LlmAgent` configured
//! in `swarm.toml`); nothing here calls a model. The scheduler builds a planning task's input
//! when the task starts ([`input`]), so the prompt lists the capabilities registered at that
//! moment with their agents' descriptions, and reads the answer when it succeeds
//! ([`parse_plan`]): text from a model in text mode (JSON found inside prose or a code fence by
//! [`extract_json`]) or JSON already. Checking the plan against the graph (cycles, limits,
//! capabilities, `$from` references) is the scheduler's, with the same checks a submitted graph
//! passes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Value, json};
use swarm_protocol::{Capability, TaskKey, TaskSpec, TaskStatus};
use swarm_registry::AgentSnapshot;

/// The capability of planning tasks, and of the agents that run them.
pub(crate) const PLAN_CAPABILITY: &str = "plan";
/// The key of an objective's first planning task; re-plans are `replan-1`, `replan-2`, ...
pub(crate) const PLAN_KEY: &str = "plan";

/// Tokens a planning answer may take: a plan of a few dozen tasks with their inputs.
const PLAN_MAX_TOKENS: u32 = 4096;
/// The longest planner answer read (a model told to stop at `PLAN_MAX_TOKENS` stays far below).
const ANSWER_MAX_BYTES: usize = 512 * 1024;
/// How many places in an answer are tried as the start of its JSON.
const JSON_STARTS_MAX: usize = 256;
/// How much of each earlier output, error or rejected plan a prompt quotes.
const QUOTE_MAX_CHARS: usize = 1500;
/// How many tasks of one kind (succeeded, failed, ...) a re-planning prompt lists.
const LISTED_MAX: usize = 50;

const SYSTEM: &str = "You are the planner of a swarm of AI agents. You break a goal down into a \
graph of tasks. Each task runs on an agent that has the task's capability; a task starts once \
every task it depends on has succeeded, and may use their outputs. Answer with one JSON object \
in the format you are given, and nothing else.";

const FORMAT: &str = r#"Answer with one JSON object of exactly this shape:
{"tasks": [{"id": "<unique task id>", "capability": "<one capability from the list>", "input": <any JSON: what the agent is given>, "depends_on": ["<ids of tasks that must succeed first>"], "output_schema": <optional: a JSON Schema the output must satisfy>}]}
Rules:
- `id`: 1 to 64 letters, digits or `_ - . : /`, unique.
- `capability`: exactly one of the capabilities listed above.
- `depends_on`: ids of other tasks; the dependencies must not form a cycle. Leave it out when the task needs nothing first.
- In an `input`, the object {"$from": "<task id>"} stands for that task's output (add "pointer": "/a/b" for a part of it); the task id must be in `depends_on`.
- A model agent takes its instructions as a string input, or as {"prompt": "<instructions>"}."#;

/// What the objective still allows new tasks to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Room {
    /// New tasks that fit under `max_tasks`.
    pub(crate) tasks: u64,
    /// The longest chain of new tasks that fits under `max_depth`.
    pub(crate) depth: u32,
    /// `max_fanout`.
    pub(crate) fanout: u32,
}

/// What a re-planning task is told about the work so far.
#[derive(Debug, Default)]
pub(crate) struct Progress<'a> {
    /// The task whose failure asked for the re-plan.
    pub(crate) failed_task: Option<&'a TaskKey>,
    /// Tasks that succeeded, with their outputs.
    pub(crate) succeeded: Vec<(&'a TaskKey, &'a Value)>,
    /// Tasks that failed, with their errors.
    pub(crate) failed: Vec<(&'a TaskKey, &'a str)>,
    /// Tasks dropped (cancelled) because they depended on failed work.
    pub(crate) dropped: Vec<&'a TaskKey>,
    /// Tasks still to run or running, with their status.
    pub(crate) pending: Vec<(&'a TaskKey, TaskStatus)>,
}

/// Everything a planning task's prompt says.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The objective's goal.
    pub(crate) goal: &'a str,
    /// The capabilities registered now, each with its agents' descriptions.
    pub(crate) capabilities: &'a BTreeMap<Capability, Vec<String>>,
    /// What the limits leave.
    pub(crate) room: Room,
    /// For a re-plan, the work so far.
    pub(crate) progress: Option<Progress<'a>>,
    /// The planner's previous answer, rejected, and why.
    pub(crate) rejected: Option<(&'a Value, &'a [String])>,
}

/// The capabilities of the registered agents (but `plan`), each with the distinct
/// descriptions of the agents that offer it, in order.
pub(crate) fn capabilities(agents: &[AgentSnapshot]) -> BTreeMap<Capability, Vec<String>> {
    let mut by_capability: BTreeMap<Capability, Vec<String>> = BTreeMap::new();
    for agent in agents {
        for capability in &agent.descriptor.capabilities {
            if capability.as_str() == PLAN_CAPABILITY {
                continue;
            }
            let descriptions = by_capability.entry(capability.clone()).or_default();
            if let Some(description) = &agent.descriptor.description {
                let description = description.trim();
                if !description.is_empty() && !descriptions.iter().any(|d| d == description) {
                    descriptions.push(description.to_owned());
                }
            }
        }
    }
    by_capability
}

/// A planning task's input, in the form a model agent renders (`system`, `prompt`,
/// `max_tokens`).
pub(crate) fn input(request: &Request<'_>) -> Value {
    json!({
        "system": SYSTEM,
        "prompt": prompt(request),
        "max_tokens": PLAN_MAX_TOKENS,
    })
}

fn prompt(request: &Request<'_>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Goal: {}", request.goal.trim());
    text.push_str("\nCapabilities (each task needs exactly one of them):\n");
    if request.capabilities.is_empty() {
        text.push_str("- (no agent is registered yet)\n");
    }
    for (capability, descriptions) in request.capabilities {
        if descriptions.is_empty() {
            let _ = writeln!(text, "- {capability}");
        } else {
            let _ = writeln!(text, "- {capability}: {}", descriptions.join(" / "));
        }
    }
    let room = request.room;
    let _ = writeln!(
        text,
        "\nLimits: at most {} tasks in your plan; no chain of dependent tasks longer than {}; \
         no task with more than {} tasks depending on it directly.",
        room.tasks, room.depth, room.fanout
    );
    if let Some(progress) = &request.progress {
        describe_progress(&mut text, progress);
    }
    text.push('\n');
    text.push_str(FORMAT);
    text.push('\n');
    if let Some((plan, errors)) = request.rejected {
        text.push_str("\nYour previous plan was rejected:\n");
        for error in errors {
            let _ = writeln!(text, "- {}", quote(error));
        }
        let plan = match plan {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(text, "The rejected plan:\n{}", quote(&plan));
        text.push_str("Answer with a corrected plan.\n");
    }
    text
}

fn describe_progress(text: &mut String, progress: &Progress<'_>) {
    match progress.failed_task {
        Some(key) => {
            let _ = writeln!(
                text,
                "\nRe-planning: task `{key}` failed for good, and the tasks that depended on it \
                 were dropped. Plan the work that remains to reach the goal. Use new ids."
            );
        }
        None => text.push_str("\nRe-planning: plan the work that remains to reach the goal.\n"),
    }
    let mut section = |title: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(text, "{title}");
        let more = lines.len().saturating_sub(LISTED_MAX);
        for line in lines.into_iter().take(LISTED_MAX) {
            let _ = writeln!(text, "- {line}");
        }
        if more > 0 {
            let _ = writeln!(text, "- ... and {more} more");
        }
    };
    section(
        "Tasks that succeeded (depend on them to use their outputs with $from):",
        progress
            .succeeded
            .iter()
            .map(|(key, output)| {
                let output = match output {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{key}: {}", quote(&output))
            })
            .collect(),
    );
    section(
        "Tasks that failed (do not depend on them):",
        progress
            .failed
            .iter()
            .map(|(key, error)| format!("{key}: {}", quote(error)))
            .collect(),
    );
    section(
        "Tasks dropped (do not depend on them; plan again what is still needed):",
        progress.dropped.iter().map(|key| key.to_string()).collect(),
    );
    section(
        "Tasks still to run (they will run; you may depend on them):",
        progress
            .pending
            .iter()
            .map(|(key, status)| format!("{key} ({})", status_name(*status)))
            .collect(),
    );
}

fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Backlog => "waiting for its dependencies",
        TaskStatus::Ready => "ready",
        TaskStatus::Running => "running",
        TaskStatus::Waiting => "waiting for an event",
        TaskStatus::Review => "in review",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "dropped",
    }
}

/// `text`, cut to `QUOTE_MAX_CHARS` characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        Some((at, _)) => format!("{}... (cut)", &text[..at]),
        None => text.to_owned(),
    }
}

/// A plan as the planner writes it: `{"tasks": [...]}`. Other members (a model's
/// "reasoning", say) are ignored; the tasks themselves are checked field by field.
#[derive(Debug, Deserialize)]
struct Plan {
    tasks: Vec<TaskSpec>,
}

/// Reads a planner's answer into tasks: a JSON value, or text holding one (see
/// [`extract_json`]); either `{"tasks": [...]}` or the bare list. The error names the field at
/// fault (`tasks[1].depends_on: ...`).
pub fn parse_plan(output: &Value) -> Result<Vec<TaskSpec>, String> {
    let extracted;
    let value = match output {
        Value::String(text) => {
            extracted = extract_json(text)?;
            &extracted
        }
        other => other,
    };
    match value {
        Value::Array(_) => serde_path_to_error::deserialize::<_, Vec<TaskSpec>>(value)
            .map_err(|e| format!("tasks{}: {}", path_suffix(&e), e.inner())),
        Value::Object(_) => serde_path_to_error::deserialize::<_, Plan>(value)
            .map(|plan| plan.tasks)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    format!("the plan: {}", e.inner())
                } else {
                    format!("{path}: {}", e.inner())
                }
            }),
        other => Err(format!(
            "the plan must be a JSON object {{\"tasks\": [...]}}, not {}",
            kind(other)
        )),
    }
}

/// `[1].id` for an error at `[1].id`, empty at the root.
fn path_suffix(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    if path == "." { String::new() } else { path }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON a model's text answer holds: the first fenced code block (```` ``` ```` or
/// ```` ```json ````) whose body is JSON, else the first object or array in the text that
/// parses as one, read from its `{` or `[` to its balanced end (so braces inside strings, and
/// prose after it, do no harm). A text that is JSON as a whole is that JSON.
pub fn extract_json(text: &str) -> Result<Value, String> {
    if text.len() > ANSWER_MAX_BYTES {
        return Err(format!(
            "the answer is {} bytes long; a plan is read from at most {ANSWER_MAX_BYTES}",
            text.len()
        ));
    }
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed)
        && matches!(value, Value::Object(_) | Value::Array(_))
    {
        return Ok(value);
    }
    for body in fenced_blocks(text) {
        if let Ok(value) = serde_json::from_str::<Value>(body.trim())
            && matches!(value, Value::Object(_) | Value::Array(_))
        {
            return Ok(value);
        }
    }
    let starts = text
        .char_indices()
        .filter(|(_, c)| matches!(c, '{' | '['))
        .take(JSON_STARTS_MAX);
    for (at, _) in starts {
        // Reads one value and stops at its end, whatever follows.
        let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>();
        if let Some(Ok(value)) = values.next() {
            return Ok(value);
        }
    }
    Err("the answer holds no JSON object: answer with the plan as a JSON object".into())
}

/// The bodies of the text's fenced code blocks, in order (an unclosed last fence runs to the
/// end of the text, as a cut-off answer would).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The info string (`json`, `JSON`, nothing) runs to the end of the fence's line.
        let body_start = after.find('\n').map_or(after.len(), |n| n + 1);
        let body = &after[body_start..];
        match body.find("```") {
            Some(close) => {
                blocks.push(&body[..close]);
                rest = &body[close + 3..];
            }
            None => {
                blocks.push(body);
                break;
            }
        }
    }
    blocks
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_in_prose_fences_and_as_a_whole() {
        assert_eq!(
            extract_json(r#"{"tasks": []}"#).unwrap(),
            json!({"tasks": []})
        );
        let prose = r#"Sure! Here is the plan: {"tasks": [{"id": "a"}]} Let me know."#;
        assert_eq!(
            extract_json(prose).unwrap(),
            json!({"tasks": [{"id": "a"}]})
        );
        let fenced = "I thought about it [a lot].\n```json\n{\"tasks\": [1]}\n```\nDone.";
        assert_eq!(extract_json(fenced).unwrap(), json!({"tasks": [1]}));
        let bare_fence = "```\n[{\"id\": \"x\"}]\n```";
        assert_eq!(extract_json(bare_fence).unwrap(), json!([{"id": "x"}]));
        // A fence whose body is not JSON is skipped for the next one.
        let two = "```text\nnot json\n```\nthen\n```json\n{\"n\": 2}\n```";
        assert_eq!(extract_json(two).unwrap(), json!({"n": 2}));
        // A cut-off answer's unclosed fence still counts.
        assert_eq!(
            extract_json("```json\n{\"n\": 3}").unwrap(),
            json!({"n": 3})
        );
    }

    #[test]
    fn braces_inside_strings_and_stray_braces_do_not_confuse_it() {
        let text = r#"Use {curly} braces sparingly. {"tasks": [{"id": "a", "input": "a } and a { and \"quoted\" ]"}]} trailing }"#;
        assert_eq!(
            extract_json(text).unwrap(),
            json!({"tasks": [{"id": "a", "input": "a } and a { and \"quoted\" ]"}]})
        );
        let nested = r#"plan: {"a": {"b": {"c": [1, {"d": "}"}]}}} ok"#;
        assert_eq!(
            extract_json(nested).unwrap(),
            json!({"a": {"b": {"c": [1, {"d": "}"}]}}})
        );
    }

    #[test]
    fn an_answer_without_json_is_an_error() {
        for text in [
            "",
            "I cannot plan this.",
            "{ not json at all",
            "``` ```",
            "42",
        ] {
            let err = extract_json(text).unwrap_err();
            assert!(err.contains("no JSON object"), "{text:?}: {err}");
        }
        let huge = "x".repeat(ANSWER_MAX_BYTES + 1);
        assert!(extract_json(&huge).unwrap_err().contains("bytes long"));
    }

    #[test]
    fn plans_are_read_with_the_field_at_fault_named() {
        let plan = parse_plan(&json!(
            "```json\n{\"tasks\": [{\"id\": \"a\", \"capability\": \"x\"}]}\n```"
        ))
        .unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].id.as_str(), "a");
        let bare = parse_plan(&json!([{"id": "b", "capability": "x"}])).unwrap();
        assert_eq!(bare[0].id.as_str(), "b");
        let with_reasoning =
            parse_plan(&json!({"reasoning": "why", "tasks": [{"id": "c", "capability": "x"}]}));
        assert_eq!(with_reasoning.unwrap().len(), 1);

        let err = parse_plan(&json!({"tasks": [
            {"id": "a", "capability": "x"},
            {"id": "b", "capability": "x", "depends_on": "a"}
        ]}))
        .unwrap_err();
        assert!(err.starts_with("tasks[1].depends_on: "), "{err}");
        let err = parse_plan(&json!([{"id": "a", "capability": "no spaces"}])).unwrap_err();
        assert!(err.starts_with("tasks[0].capability: "), "{err}");
        let err = parse_plan(&json!({"steps": []})).unwrap_err();
        assert!(err.contains("tasks"), "{err}");
        let err = parse_plan(&json!(7)).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        let err = parse_plan(&json!("no plan, sorry")).unwrap_err();
        assert!(err.contains("no JSON object"), "{err}");
    }

    #[test]
    fn the_prompt_lists_capabilities_limits_progress_and_the_rejection() {
        let mut capabilities = BTreeMap::new();
        capabilities.insert(
            Capability::new("research").unwrap(),
            vec!["Finds facts.".to_owned(), "Looks things up.".to_owned()],
        );
        capabilities.insert(Capability::new("write").unwrap(), vec![]);
        let done = TaskKey::new("fetch").unwrap();
        let broke = TaskKey::new("parse").unwrap();
        let output = json!({"body": "x".repeat(5000)});
        let rejected_plan = json!("{\"tasks\": 1}");
        let errors = vec!["tasks: invalid type".to_owned()];
        let input = input(&Request {
            goal: "Report on Rust",
            capabilities: &capabilities,
            room: Room {
                tasks: 9,
                depth: 4,
                fanout: 3,
            },
            progress: Some(Progress {
                failed_task: Some(&broke),
                succeeded: vec![(&done, &output)],
                failed: vec![(&broke, "exit 1")],
                ..Progress::default()
            }),
            rejected: Some((&rejected_plan, &errors)),
        });
        assert_eq!(input["max_tokens"], json!(PLAN_MAX_TOKENS));
        assert!(input["system"].as_str().unwrap().contains("planner"));
        let prompt = input["prompt"].as_str().unwrap();
        for needle in [
            "Goal: Report on Rust",
            "- research: Finds facts. / Looks things up.",
            "- write\n",
            "at most 9 tasks",
            "longer than 4",
            "more than 3 tasks",
            "task `parse` failed for good",
            "- parse: exit 1",
            "(cut)",
            r#"{"$from": "<task id>"}"#,
            "Your previous plan was rejected:\n- tasks: invalid type",
            "{\"tasks\": 1}",
        ] {
            assert!(
                prompt.contains(needle),
                "{needle:?} missing from:\n{prompt}"
            );
        }
        assert!(prompt.len() < 6000, "outputs are quoted in part");
    }
}
