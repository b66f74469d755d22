//! Ceilings on what outside input may hold, so that nothing a client, a planner or a model
//! sends can panic an actor or write an event the log cannot read back.
//!
//! - Durations (timeouts, deadlines, backoffs, cool-downs) are at most [`DURATION_MAX`]: an
//!   `Instant` plus any accepted duration stays representable on every platform.
//! - JSON values are at most [`JSON_DEPTH_CEILING`] levels deep. A stored event wraps a value in
//!   a few levels of its own, and `serde_json` refuses to read anything past 128 levels, so a
//!   value within the ceiling always reads back. [`JsonLimits`] are the server's configurable
//!   ceilings on JSON input (depth, string and array sizes), never above the hard ones here.
//!
//! Checks return [`OutOfBounds`], which names the field at fault relative to the value checked
//! (`hard_timeout`, `input.a[3]`), so the edge can prefix it with where the value sat.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::outcome::{FailureKind, TaskOutcome};
use crate::task::TaskSpec;

/// The longest duration any input may give (a year): timeouts, deadlines, backoffs,
/// cool-downs.
pub const DURATION_MAX: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The deepest any JSON value taken from outside (input, output, payload) may nest: an
/// object or array is one level, a scalar none. Stored events add at most
/// [`EVENT_WRAPPING_DEPTH_MAX`] levels around a value, and the log reads up to 128.
pub const JSON_DEPTH_CEILING: u32 = 64;

/// The most levels a stored event puts around a value it carries (the record, the event, the
/// objective, `tasks`, the task, and room to spare).
pub const EVENT_WRAPPING_DEPTH_MAX: u32 = 16;

/// A field whose value is past its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct OutOfBounds {
    /// The field at fault, relative to what was checked (`hard_timeout`, `input.a[3]`).
    pub field: String,
    /// What is wrong with it, naming the ceiling.
    pub message: String,
}

impl OutOfBounds {
    /// The same problem, with `prefix` in front of its field (`tasks[2]` + `hard_timeout`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = join(prefix, &self.field);
        self
    }
}

/// Checks one duration against [`DURATION_MAX`].
pub fn check_duration(field: &str, duration: Duration) -> Result<(), OutOfBounds> {
    if duration > DURATION_MAX {
        return Err(OutOfBounds {
            field: field.to_owned(),
            message: format!(
                "{} is longer than the most accepted, {}",
                humantime_serde::re::humantime::format_duration(duration),
                humantime_serde::re::humantime::format_duration(DURATION_MAX)
            ),
        });
    }
    Ok(())
}

impl TaskSpec {
    /// Checks the task's durations against [`DURATION_MAX`] and its `input` and
    /// `output_schema` against [`JSON_DEPTH_CEILING`]; the error names the field within the
    /// task.
    pub fn check_bounds(&self) -> Result<(), OutOfBounds> {
        let durations = [
            ("timeout", self.timeout),
            ("review_timeout", self.review_timeout),
            ("idle_timeout", self.idle_timeout),
            ("hard_timeout", self.hard_timeout),
            ("retry.initial_backoff", Some(self.retry.initial_backoff)),
            ("retry.max_backoff", Some(self.retry.max_backoff)),
            (
                "compensation.hard_timeout",
                self.compensation.as_ref().and_then(|c| c.hard_timeout),
            ),
        ];
        for (field, duration) in durations {
            if let Some(duration) = duration {
                check_duration(field, duration)?;
            }
        }
        let hard = JsonLimits::default();
        check_json(&self.input, &hard).map_err(|e| e.within("input"))?;
        if let Some(schema) = &self.output_schema {
            check_json(schema, &hard).map_err(|e| e.within("output_schema"))?;
        }
        if let Some(compensation) = &self.compensation {
            check_json(&compensation.input, &hard).map_err(|e| e.within("compensation.input"))?;
        }
        Ok(())
    }
}

impl TaskOutcome {
    /// The outcome as it may be recorded: an output nested deeper than
    /// [`JSON_DEPTH_CEILING`] could not be read back from the log, so such a success (or
    /// spawn) becomes a permanent failure saying so, and such a partial output is dropped.
    pub fn bounded(self) -> Self {
        let too_deep = |value: &Value| json_depth(value) > JSON_DEPTH_CEILING;
        match self {
            Self::Succeeded { ref output, usage }
            | Self::Spawned {
                ref output, usage, ..
            } if too_deep(output) => Self::Failed {
                kind: FailureKind::Permanent,
                message: format!(
                    "the output nests {} levels deep, more than the most recorded, \
                         {JSON_DEPTH_CEILING}",
                    json_depth(output)
                ),
                partial_output: None,
                usage,
                retry_after: None,
            },
            Self::Failed {
                kind,
                message,
                partial_output: Some(partial),
                usage,
                retry_after,
            } if too_deep(&partial) => Self::Failed {
                kind,
                message,
                partial_output: None,
                usage,
                retry_after,
            },
            outcome => outcome,
        }
    }
}

/// Ceilings on the shape of JSON input: `[limits]` of `swarm.toml` sets them for the server's
/// request bodies. The defaults are the hard ceilings; a configuration may only lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonLimits {
    /// The deepest a value may nest (at most [`JSON_DEPTH_CEILING`]).
    pub json_depth_max: u32,
    /// The longest string (an object's keys included), in bytes.
    pub string_bytes_max: usize,
    /// The most items of one array or entries of one object.
    pub array_items_max: usize,
}

impl JsonLimits {
    /// The longest string of the defaults: the request body limit is 1 MiB by default.
    pub const STRING_BYTES_DEFAULT: usize = 1024 * 1024;
    /// The most items of an array or entries of an object, by default.
    pub const ARRAY_ITEMS_DEFAULT: usize = 100_000;

    /// Checks that these limits stay within the hard ceilings; the error names the key.
    pub fn check(&self) -> Result<(), OutOfBounds> {
        if self.json_depth_max == 0 || self.json_depth_max > JSON_DEPTH_CEILING {
            return Err(OutOfBounds {
                field: "json_depth_max".into(),
                message: format!(
                    "{} is not between 1 and {JSON_DEPTH_CEILING}",
                    self.json_depth_max
                ),
            });
        }
        Ok(())
    }
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            json_depth_max: JSON_DEPTH_CEILING,
            string_bytes_max: Self::STRING_BYTES_DEFAULT,
            array_items_max: Self::ARRAY_ITEMS_DEFAULT,
        }
    }
}

/// How deep a value nests: a scalar is 0, `[]` and `{}` are 1, `[[1]]` is 2.
pub fn json_depth(value: &Value) -> u32 {
    // Iterative: a value built in memory (not parsed) may be deeper than the stack allows.
    let mut deepest = 0;
    let mut stack = vec![(value, 0u32)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let depth = depth + 1;
        deepest = deepest.max(depth);
        stack.extend(children.map(|child| (child, depth)));
    }
    deepest
}

/// Checks a value against `limits`; the error names the first node at fault, by its path
/// from the value (`a.b[2]`; empty for the value itself).
pub fn check_json(value: &Value, limits: &JsonLimits) -> Result<(), OutOfBounds> {
    // Depth-first and iterative. Each node's step from its parent goes into `steps`, and its
    // path is put together from them only when it is at fault.
    let mut steps: Vec<(Option<usize>, Step<'_>)> = Vec::new();
    let mut stack: Vec<(&Value, u32, Option<usize>)> = vec![(value, 0, None)];
    while let Some((value, depth, at)) = stack.pop() {
        let fault = |message: String| OutOfBounds {
            field: path_text(&steps, at),
            message,
        };
        match value {
            Value::String(text) if text.len() > limits.string_bytes_max => {
                return Err(fault(format!(
                    "a string of {} bytes is longer than the most accepted, {}",
                    text.len(),
                    limits.string_bytes_max
                )));
            }
            Value::Array(_) | Value::Object(_) if depth >= limits.json_depth_max => {
                return Err(fault(format!(
                    "nests deeper than the most accepted, {} levels",
                    limits.json_depth_max
                )));
            }
            Value::Array(items) => {
                if items.len() > limits.array_items_max {
                    return Err(fault(format!(
                        "{} items are more than the most accepted, {}",
                        items.len(),
                        limits.array_items_max
                    )));
                }
                for (i, item) in items.iter().enumerate().rev() {
                    steps.push((at, Step::Index(i)));
                    stack.push((item, depth + 1, Some(steps.len() - 1)));
                }
            }
            Value::Object(map) => {
                if map.len() > limits.array_items_max {
                    return Err(fault(format!(
                        "{} entries are more than the most accepted, {}",
                        map.len(),
                        limits.array_items_max
                    )));
                }
                for (key, item) in map.iter().rev() {
                    steps.push((at, Step::Key(key)));
                    let here = Some(steps.len() - 1);
                    if key.len() > limits.string_bytes_max {
                        return Err(OutOfBounds {
                            field: path_text(&steps, here),
                            message: format!(
                                "a key of {} bytes is longer than the most accepted, {}",
                                key.len(),
                                limits.string_bytes_max
                            ),
                        });
                    }
                    stack.push((item, depth + 1, here));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path to the node whose step is `steps[at]` (`None`: the root), as `a.b[2]`.
fn path_text(steps: &[(Option<usize>, Step<'_>)], mut at: Option<usize>) -> String {
    let mut path = Vec::new();
    while let Some(i) = at {
        let (parent, step) = steps[i];
        path.push(step);
        at = parent;
    }
    let mut text = String::new();
    for step in path.iter().rev() {
        match step {
            Step::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: u32) -> Value {
        let mut value = json!(1);
        for _ in 0..levels {
            value = json!({ "a": value });
        }
        value
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, [2]]})), 3);
        assert_eq!(json_depth(&nested(300)), 300);
    }

    #[test]
    fn the_first_node_past_a_ceiling_is_named() {
        let limits = JsonLimits::default();
        assert_eq!(check_json(&nested(JSON_DEPTH_CEILING), &limits), Ok(()));
        let err = check_json(&nested(JSON_DEPTH_CEILING + 1), &limits).unwrap_err();
        assert_eq!(err.field, vec!["a"; 64].join("."));
        assert!(err.message.contains("64 levels"), "{err}");

        let small = JsonLimits {
            json_depth_max: 3,
            string_bytes_max: 4,
            array_items_max: 2,
        };
        let err = check_json(&json!({"x": [1, "long!"]}), &small).unwrap_err();
        assert_eq!(err.field, "x[1]");
        let err = check_json(&json!({"x": [1, 2, 3]}), &small).unwrap_err();
        assert_eq!(err.field, "x");
        let err = check_json(&json!({"long!": 1}), &small).unwrap_err();
        assert_eq!(err.field, "long!");
        assert_eq!(err.within("input").field, "input.long!");
    }

    #[test]
    fn durations_past_a_year_are_named() {
        let mut spec: TaskSpec =
            serde_json::from_value(json!({"id": "t", "capability": "work"})).unwrap();
        assert_eq!(spec.check_bounds(), Ok(()));
        spec.hard_timeout = Some(Duration::from_secs(10_000_000_000_000_000_000));
        assert_eq!(spec.check_bounds().unwrap_err().field, "hard_timeout");
        spec.hard_timeout = Some(DURATION_MAX);
        spec.retry.max_backoff = DURATION_MAX + Duration::from_secs(1);
        assert_eq!(spec.check_bounds().unwrap_err().field, "retry.max_backoff");
        spec.retry.max_backoff = DURATION_MAX;
        spec.review_timeout = Some(Duration::from_secs(u64::MAX));
        assert_eq!(spec.check_bounds().unwrap_err().field, "review_timeout");
    }

    #[test]
    fn an_output_too_deep_to_read_back_is_a_permanent_failure() {
        let fine = TaskOutcome::success(nested(JSON_DEPTH_CEILING));
        assert_eq!(fine.clone().bounded(), fine);
        let deep = TaskOutcome::success(nested(JSON_DEPTH_CEILING + 1)).bounded();
        assert!(
            matches!(&deep, TaskOutcome::Failed { kind: FailureKind::Permanent, message, .. }
                if message.contains("65 levels")),
            "{deep:?}"
        );
        let partial = TaskOutcome::Failed {
            kind: FailureKind::Timeout,
            message: "slow".into(),
            partial_output: Some(nested(JSON_DEPTH_CEILING + 1)),
            usage: None,
            retry_after: None,
        };
        assert!(matches!(
            partial.bounded(),
            TaskOutcome::Failed {
                kind: FailureKind::Timeout,
                partial_output: None,
                ..
            }
        ));
    }

    #[test]
    fn a_configuration_may_not_raise_the_depth_ceiling() {
        assert_eq!(JsonLimits::default().check(), Ok(()));
        let raised = JsonLimits {
            json_depth_max: JSON_DEPTH_CEILING + 1,
            ..JsonLimits::default()
        };
        assert_eq!(raised.check().unwrap_err().field, "json_depth_max");
    }
}
