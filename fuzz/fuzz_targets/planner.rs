//! The planner's answer: JSON found in a model's text (prose, code fences, or JSON as a
//! whole) and read as a plan, then checked as the scheduler checks a plan's graph.
//!
//! Properties: nothing panics; what `extract_json` finds is an object or an array, and found
//! again in its own serialization; reading the text and reading the JSON found in it give the
//! same plan; a plan's tasks re-serialize and parse back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarm_coordinator::scheduler::planner::{extract_json, parse_plan};
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::{Limits, TaskSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plan = parse_plan(&Value::String(text.to_owned()));
    let Ok(found) = extract_json(text) else {
        assert!(plan.is_err(), "a plan without JSON: {plan:?}");
        return;
    };
    assert!(found.is_object() || found.is_array(), "found {found}");
    assert_eq!(extract_json(&found.to_string()).as_ref(), Ok(&found));
    assert_eq!(parse_plan(&found), plan, "the text and its JSON read alike");
    if let Ok(tasks) = plan {
        let text = serde_json::to_string(&tasks).expect("tasks serialize");
        let back: Vec<TaskSpec> = serde_json::from_str(&text).expect("tasks parse back");
        assert_eq!(back, tasks);
        let _ = graph::validate(&tasks, &NoTasks, &Limits::default());
    }
});
