//! The `plan` directive: the server plays the swarm's planner for any goal, so a planned
//! objective runs with no API key (`model = "sim:plan"` on an agent with capability `plan`).
//!
//! It reads the planner's prompt (the coordinator's `scheduler/planner.rs` writes it): the
//! `Goal:` line, the capabilities listed under `Capabilities (`, the `Limits:` line, and, when
//! re-planning, the ids of the tasks listed so far. It answers one task per capability, in the
//! order listed, as many as the limits allow: a chain (each task depends on the one before,
//! whose output a model agent is given) when the chain fits under the depth limit, else tasks
//! side by side. Each task's input is an instruction in words naming the goal; ids are the
//! capabilities' names, suffixed (`-2`, `-3`, ...) where a re-plan's earlier tasks hold them.
//! A prompt that lists no capability is answered with an empty plan, which the scheduler
//! refuses with its own words.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// The heading of the capability list in the planner's prompt.
const CAPABILITIES_HEADING: &str = "Capabilities (";
/// What the prompt lists instead of a capability when no agent is registered.
const NONE_REGISTERED: &str = "(no agent is registered";
/// The most tasks a plan holds, whatever the prompt allows.
const TASKS_MAX: usize = 64;

/// The plan for the planner's prompt `prompt` (the last user message).
pub(super) fn answer(prompt: &str) -> Value {
    let goal = prompt
        .lines()
        .find_map(|line| line.strip_prefix("Goal:"))
        .map_or("the goal", str::trim);
    let limits = Limits::read(prompt);
    let taken = listed_task_ids(prompt);
    let capabilities: Vec<&str> = capabilities(prompt)
        .into_iter()
        .take(limits.tasks.min(TASKS_MAX))
        .collect();
    let chain = capabilities.len() <= limits.depth;
    let count = capabilities.len();
    let mut ids: Vec<String> = Vec::with_capacity(count);
    let mut tasks = Vec::with_capacity(count);
    for (i, capability) in capabilities.into_iter().enumerate() {
        let id = fresh_id(capability, &taken, &ids);
        let mut task = json!({
            "id": id,
            "capability": capability,
            "input": format!(
                "Goal: {goal}. Do the `{capability}` part of it (step {} of {count}).",
                i + 1
            ),
        });
        if chain && let Some(previous) = ids.last() {
            task["depends_on"] = json!([previous]);
        }
        ids.push(id);
        tasks.push(task);
    }
    json!({ "tasks": tasks })
}

/// The capabilities listed under the heading, in order.
fn capabilities(prompt: &str) -> Vec<&str> {
    let mut lines = prompt.lines();
    if !lines.any(|line| line.starts_with(CAPABILITIES_HEADING)) {
        return Vec::new();
    }
    lines
        .map_while(|line| line.strip_prefix("- "))
        .filter(|item| !item.starts_with(NONE_REGISTERED))
        .map(name_of)
        .filter(|name| !name.is_empty())
        .collect()
}

/// What the `Limits:` line allows: tasks in the plan, and the longest chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    tasks: usize,
    depth: usize,
}

impl Limits {
    /// Reads `Limits: at most N tasks in your plan; no chain of dependent tasks longer than D;
    /// ...`; a number that is missing allows anything.
    fn read(prompt: &str) -> Self {
        let line = prompt
            .lines()
            .find(|line| line.starts_with("Limits:"))
            .unwrap_or_default();
        let number_after = |marker: &str| {
            line.split_once(marker)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.trim_end_matches([';', '.', ',']).parse::<usize>().ok())
        };
        Self {
            tasks: number_after("at most").unwrap_or(usize::MAX),
            depth: number_after("longer than").unwrap_or(usize::MAX),
        }
    }
}

/// The ids of the tasks a re-planning prompt lists (`- key: output`, `- key (status)`,
/// `- key`), which a new plan must not reuse.
fn listed_task_ids(prompt: &str) -> BTreeSet<&str> {
    let Some((_, progress)) = prompt.split_once("\nRe-planning") else {
        return BTreeSet::new();
    };
    progress
        .lines()
        .filter_map(|line| line.strip_prefix("- "))
        .map(name_of)
        .filter(|id| !id.is_empty())
        .collect()
}

/// The name a list item starts with: `name: text`, `name (text)` or `name`. A name holds no
/// space but may hold `:` (`code:rust`), so it ends at the first `": "` or space.
fn name_of(item: &str) -> &str {
    let head = item.split_once(": ").map_or(item, |(head, _)| head);
    head.split_whitespace().next().unwrap_or_default()
}

/// `base`, or `base-2`, `base-3`, ... : the first that neither `taken` nor `used` holds.
fn fresh_id(base: &str, taken: &BTreeSet<&str>, used: &[String]) -> String {
    let free = |id: &str| !taken.contains(id) && !used.iter().any(|u| u == id);
    if free(base) {
        return base.to_owned();
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| free(id))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prompt as `scheduler/planner.rs` writes it.
    const PROMPT: &str = "Goal: write a note on tides

Capabilities (each task needs exactly one of them):
- research: Finds sources. / Reads the web.
- write
- review: Checks a draft.

Limits: at most 10 tasks in your plan; no chain of dependent tasks longer than 5; no task with more than 20 tasks depending on it directly.

Answer with one JSON object of exactly this shape:
{\"tasks\": [...]}
Rules:
- `id`: 1 to 64 letters, digits or `_ - . : /`, unique.
";

    #[test]
    fn a_chain_over_every_capability() {
        let plan = answer(PROMPT);
        let tasks = plan["tasks"].as_array().unwrap();
        let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["research", "write", "review"]);
        assert_eq!(tasks[0]["capability"], "research");
        assert!(tasks[0].get("depends_on").is_none());
        assert_eq!(tasks[1]["depends_on"], json!(["research"]));
        assert_eq!(tasks[2]["depends_on"], json!(["write"]));
        let input = tasks[1]["input"].as_str().unwrap();
        assert!(input.contains("write a note on tides") && input.contains("`write`"));
    }

    #[test]
    fn the_limits_are_kept() {
        let few = PROMPT.replace("at most 10 tasks", "at most 2 tasks");
        assert_eq!(answer(&few)["tasks"].as_array().unwrap().len(), 2);
        let flat = PROMPT.replace("longer than 5", "longer than 2");
        let plan = answer(&flat);
        let tasks = plan["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 3);
        assert!(tasks.iter().all(|t| t.get("depends_on").is_none()));
    }

    #[test]
    fn a_replan_takes_new_ids() {
        let replan = PROMPT.replace(
            "\nAnswer with one JSON object",
            "\nRe-planning: task `write` failed for good, and the tasks that depended on it \
             were dropped. Plan the work that remains to reach the goal. Use new ids.\n\
             Tasks that succeeded (depend on them to use their outputs with $from):\n\
             - research: \"notes\"\n\
             Tasks that failed (do not depend on them):\n\
             - write: boom\n\
             Tasks dropped (do not depend on them; plan again what is still needed):\n\
             - review\n\
             - review-2 (ready)\n\
             \nAnswer with one JSON object",
        );
        let plan = answer(&replan);
        let ids: Vec<&str> = plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["research-2", "write-2", "review-3"]);
    }

    #[test]
    fn names_may_hold_colons() {
        assert_eq!(name_of("code:rust: Writes Rust."), "code:rust");
        assert_eq!(name_of("code:rust"), "code:rust");
        assert_eq!(name_of("a:: text"), "a:");
        assert_eq!(name_of("step:1 (ready)"), "step:1");
        assert_eq!(name_of("step:1: \"output\""), "step:1");
    }

    #[test]
    fn no_capability_no_task() {
        let none = PROMPT.replace(
            "- research: Finds sources. / Reads the web.\n- write\n- review: Checks a draft.\n",
            "- (no agent is registered yet)\n",
        );
        assert_eq!(answer(&none), json!({"tasks": []}));
        assert_eq!(answer("hello"), json!({"tasks": []}));
    }
}
