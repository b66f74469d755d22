//! The spawn convention: how any agent adds follow-up tasks through its output alone.
//!
//! An agent written in Rust can return `TaskOutcome::Spawned`. One that can only produce an
//! output (a model agent answering JSON, a remote worker) uses this convention instead: a
//! successful output that is a JSON object with a `"spawn"` member,
//!
//! ```json
//! { "spawn": [ { "id": "part-1", "capability": "write", "input": "..." } ],
//!   "output": "what this task produced" }
//! ```
//!
//! is read as `Spawned`: `spawn` is the list of follow-up `TaskSpec`s (each depends on this
//! task, and may depend on any other task of the objective), and the task's own output is the
//! `output` member, or, without one, the object's other members. The scheduler applies it to
//! every successful output of every kind of agent (not to planning tasks, whose whole output
//! is a plan), so agents need no support of their own. A `spawn` member that is not a list of
//! valid task specs fails the task for good, naming the field (`spawn[1].capability: ...`);
//! the objective's limits apply to the follow-ups as to any spawn. Outputs that are not
//! objects, text included, are never read for `spawn`.

use serde_json::Value;
use swarm_protocol::TaskSpec;

/// The member that carries follow-up tasks.
const SPAWN: &str = "spawn";
/// The member that carries the task's own output beside `spawn`.
const OUTPUT: &str = "output";

/// An output read by the convention.
#[derive(Debug, PartialEq)]
pub(crate) struct Split {
    /// The task's own output.
    pub(crate) output: Value,
    /// The follow-ups it asks for; `None` when it asks for none.
    pub(crate) spawn: Option<Vec<TaskSpec>>,
}

/// An output whose `spawn` could not be read.
#[derive(Debug, PartialEq)]
pub(crate) struct Malformed {
    /// What is wrong, naming the field.
    pub(crate) message: String,
    /// The output as it was.
    pub(crate) output: Value,
}

/// Splits an output by the convention.
pub(crate) fn split(output: Value) -> Result<Split, Malformed> {
    let Value::Object(mut map) = output else {
        return Ok(Split {
            output,
            spawn: None,
        });
    };
    let Some(spawn) = map.remove(SPAWN) else {
        return Ok(Split {
            output: Value::Object(map),
            spawn: None,
        });
    };
    let tasks: Result<Vec<TaskSpec>, String> =
        serde_path_to_error::deserialize(&spawn).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            format!("output field `{SPAWN}{path}`: {}", e.inner())
        });
    let extra = map
        .contains_key(OUTPUT)
        .then(|| map.keys().find(|k| k.as_str() != OUTPUT).cloned())
        .flatten();
    let message = match (tasks, extra) {
        (Ok(tasks), None) => {
            let own = map.remove(OUTPUT).unwrap_or(Value::Object(map));
            return Ok(Split {
                output: own,
                spawn: Some(tasks),
            });
        }
        (Err(message), _) => message,
        (Ok(_), Some(other)) => format!(
            "output field `{other}`: an output with `{SPAWN}` and `{OUTPUT}` may hold nothing \
             else (put it inside `{OUTPUT}`)"
        ),
    };
    map.insert(SPAWN.to_owned(), spawn);
    Err(Malformed {
        message,
        output: Value::Object(map),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outputs_without_spawn_pass_through() {
        for output in [
            json!("text with {\"spawn\": []} inside"),
            json!({"answer": 1}),
            json!([1, 2]),
            Value::Null,
        ] {
            let read = split(output.clone()).unwrap();
            assert_eq!(
                read,
                Split {
                    output,
                    spawn: None
                }
            );
        }
    }

    #[test]
    fn spawn_with_output_or_with_the_rest() {
        let Split {
            output: own,
            spawn: tasks,
        } = split(json!({
            "spawn": [{"id": "a", "capability": "x"}, {"id": "b", "capability": "x", "depends_on": ["a"]}],
            "output": "split in two"
        }))
        .unwrap();
        assert_eq!(own, json!("split in two"));
        let tasks = tasks.unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].depends_on[0].as_str(), "a");

        let Split {
            output: own,
            spawn: tasks,
        } = split(json!({"spawn": [], "summary": "nothing to add", "n": 0})).unwrap();
        assert_eq!(own, json!({"summary": "nothing to add", "n": 0}));
        assert_eq!(tasks.unwrap().len(), 0);
    }

    #[test]
    fn a_malformed_spawn_names_the_field() {
        let bad = json!({"spawn": [{"id": "a", "capability": "x"}, {"id": "b"}]});
        let Malformed {
            message: err,
            output: back,
        } = split(bad.clone()).unwrap_err();
        assert_eq!(back, bad, "the output is given back whole");
        assert!(err.starts_with("output field `spawn[1]`"), "{err}");
        assert!(err.contains("capability"), "{err}");
        let err = split(json!({"spawn": [{"id": "a", "capability": "x", "retries": 3}]}))
            .unwrap_err()
            .message;
        assert!(err.contains("spawn[0]") && err.contains("retries"), "{err}");
        let err = split(json!({"spawn": "a, b"})).unwrap_err().message;
        assert!(err.starts_with("output field `spawn`"), "{err}");
        let err = split(json!({"spawn": [], "output": 1, "extra": 2}))
            .unwrap_err()
            .message;
        assert!(err.contains("`extra`"), "{err}");
    }
}
