//! One attempt of a task, as the coordinator delivers it to a worker, and the identity that
//! every answer about it carries.
//!
//! An [`Attempt`] is the wire form of the [`Task`] a local agent receives, field for field;
//! [`Attempt::new`] and [`Attempt::task`] convert both ways, so a Rust worker runs the same
//! `Agent` implementations as the coordinator. Durations travel as whole milliseconds, which
//! every language reads without a parser, rather than as the humantime text (`"2m"`) of
//! [`Task`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Invalid, Message, TRACESTATE_BYTES_MAX, UPSTREAM_MAX, check_ms, check_value, millis};
use crate::ids::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use crate::task::Task;

/// Which attempt of which task: carried by the attempt and by every answer about it, so a
/// progress report or a result from an attempt that is no longer current is recognised and
/// dropped (fenced).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub struct AttemptId {
    /// The objective the task belongs to.
    pub objective: ObjectiveId,
    /// The task.
    pub task: TaskId,
    /// Which attempt of the task, from 1. A task that runs again (a retry, a lost lease, a
    /// coordinator restart) runs with the next number.
    #[schemars(range(min = 1))]
    pub number: u32,
}

impl AttemptId {
    /// The attempt a local agent would receive as `task`.
    pub fn of(task: &Task) -> Self {
        Self {
            objective: task.objective,
            task: task.id,
            number: task.attempt,
        }
    }

    /// The attempt's idempotency key, `{objective}/{task}/{number}`: the same for every
    /// delivery of this attempt (also after a coordinator restart), different for every other
    /// attempt. The same key as [`Task::idempotency_key`].
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}/{}", self.objective, self.task, self.number)
    }

    /// Checks the number; the error names `field` within it.
    pub(super) fn validate(&self, field: &str) -> Result<(), Invalid> {
        if self.number == 0 {
            return Err(Invalid::new(
                format!("{field}.number"),
                "attempts are numbered from 1",
            ));
        }
        Ok(())
    }
}

/// One attempt of a task, delivered to the worker of the agent the coordinator chose.
///
/// A delivery may repeat (at least once): the same attempt comes with the same
/// `idempotency_key`, which the worker uses to run it once and to pass on to what it calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    /// Which attempt this is; every answer about it carries it unchanged.
    pub attempt: AttemptId,
    /// The agent it was given to.
    pub agent: AgentId,
    /// The task's name in its objective's graph.
    pub key: TaskKey,
    /// The capability it was allocated by.
    pub capability: Capability,
    /// `{objective}/{task}/{number}` of `attempt`, for the worker to deduplicate deliveries
    /// and to pass to the models and tools it calls.
    #[schemars(regex(pattern = r"^[0-9a-f-]{36}/T[0-9]+/[1-9][0-9]*$"))]
    pub idempotency_key: String,
    /// The input, with its `$from` references to dependencies' outputs resolved.
    #[serde(default)]
    #[schemars(with = "Value")]
    pub input: Arc<Value>,
    /// The outputs of the tasks it depends on, by their names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = UPSTREAM_MAX))]
    pub upstream: BTreeMap<TaskKey, Value>,
    /// The attempt is cancelled after this long without progress, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::DURATION_MS_MAX))]
    pub idle_timeout_ms: Option<u64>,
    /// The attempt is cancelled after running this long, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = super::DURATION_MS_MAX))]
    pub hard_timeout_ms: Option<u64>,
    /// Its objective's priority (higher first), for a worker that queues calls to a shared
    /// quota.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The trace the attempt belongs to, so the worker's spans join the coordinator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

fn is_zero(priority: &i32) -> bool {
    *priority == 0
}

impl Attempt {
    /// The attempt that delivers `task` to `agent`.
    pub fn new(task: &Task, agent: AgentId, trace: Option<TraceContext>) -> Self {
        let attempt = AttemptId::of(task);
        Self {
            attempt,
            agent,
            key: task.key.clone(),
            capability: task.capability.clone(),
            idempotency_key: attempt.idempotency_key(),
            input: task.input.clone(),
            upstream: task.upstream.clone(),
            idle_timeout_ms: task.idle_timeout.map(millis),
            hard_timeout_ms: task.hard_timeout.map(millis),
            priority: task.priority,
            trace,
        }
    }

    /// The task a local agent would receive for this attempt.
    pub fn task(&self) -> Task {
        Task {
            id: self.attempt.task,
            objective: self.attempt.objective,
            key: self.key.clone(),
            capability: self.capability.clone(),
            attempt: self.attempt.number,
            input: self.input.clone(),
            upstream: self.upstream.clone(),
            idle_timeout: self.idle_timeout_ms.map(Duration::from_millis),
            hard_timeout: self.hard_timeout_ms.map(Duration::from_millis),
            priority: self.priority,
        }
    }
}

impl Message for Attempt {
    const NAME: &'static str = "attempt";

    fn validate(&self) -> Result<(), Invalid> {
        self.attempt.validate("attempt")?;
        let expected = self.attempt.idempotency_key();
        if self.idempotency_key != expected {
            return Err(Invalid::new(
                "idempotency_key",
                format!("must be `{expected}`, the attempt's `{{objective}}/{{task}}/{{number}}`"),
            ));
        }
        check_value("input", &self.input)?;
        if self.upstream.len() > UPSTREAM_MAX {
            return Err(Invalid::new(
                "upstream",
                format!(
                    "{} outputs are more than the most accepted, {UPSTREAM_MAX}",
                    self.upstream.len()
                ),
            ));
        }
        for (key, output) in &self.upstream {
            check_value(&format!("upstream.{key}"), output)?;
        }
        if let Some(ms) = self.idle_timeout_ms {
            check_ms("idle_timeout_ms", ms, true)?;
        }
        if let Some(ms) = self.hard_timeout_ms {
            check_ms("hard_timeout_ms", ms, true)?;
        }
        if let Some(trace) = &self.trace {
            trace.validate()?;
        }
        Ok(())
    }
}

/// A W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` and
/// `tracestate` of the coordinator's span for the attempt, as the HTTP headers of those names
/// would carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TraceContext {
    /// `00-{trace id: 32 hex}-{parent span id: 16 hex}-{flags: 2 hex}`, lowercase, neither id
    /// all zeros.
    #[schemars(regex(pattern = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"))]
    pub traceparent: String,
    /// Vendor-specific trace data, passed on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = TRACESTATE_BYTES_MAX))]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Checks the `traceparent` (version `00`) and the `tracestate`'s size; the error names
    /// `trace.traceparent` or `trace.tracestate`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |problem: &str| Err(Invalid::new("trace.traceparent", problem));
        let parts: Vec<&str> = self.traceparent.split('-').collect();
        let hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let zeros = |part: &str| part.bytes().all(|b| b == b'0');
        match parts.as_slice() {
            ["00", trace, parent, flags] if hex(trace, 32) && hex(parent, 16) && hex(flags, 2) => {
                if zeros(trace) {
                    return bad("the trace id is all zeros");
                }
                if zeros(parent) {
                    return bad("the parent id is all zeros");
                }
            }
            _ => {
                return bad(
                    "expected `00-{32 lowercase hex}-{16 lowercase hex}-{2 lowercase hex}`",
                );
            }
        }
        if let Some(state) = &self.tracestate {
            if state.len() > TRACESTATE_BYTES_MAX {
                return Err(Invalid::new(
                    "trace.tracestate",
                    format!(
                        "{} bytes are more than the most accepted, {TRACESTATE_BYTES_MAX}",
                        state.len()
                    ),
                ));
            }
            if let Some(c) = state.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
                return Err(Invalid::new(
                    "trace.tracestate",
                    format!("contains {c:?}; only printable ASCII is allowed"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::remote::{DURATION_MS_MAX, decode, encode};

    /// A change that breaks one field of a valid message.
    type Breakage = Box<dyn Fn(&mut Attempt)>;

    fn task() -> Task {
        Task {
            id: TaskId(42),
            objective: ObjectiveId::new(),
            key: TaskKey::new("sum").unwrap(),
            capability: Capability::new("summarize").unwrap(),
            attempt: 2,
            input: Arc::new(json!({"text": "the report"})),
            upstream: BTreeMap::from([(TaskKey::new("fetch").unwrap(), json!({"body": "x"}))]),
            idle_timeout: Some(Duration::from_secs(30)),
            hard_timeout: Some(Duration::from_secs(120)),
            priority: 5,
        }
    }

    fn trace() -> TraceContext {
        TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("vendor=opaque".into()),
        }
    }

    #[test]
    fn an_attempt_carries_the_task_a_local_agent_receives_field_for_field() {
        let task = task();
        let attempt = Attempt::new(&task, AgentId(7), Some(trace()));
        assert_eq!(attempt.idempotency_key, task.idempotency_key());
        assert_eq!(attempt.idle_timeout_ms, Some(30_000));
        assert_eq!(attempt.task(), task);
        assert_eq!(attempt.validate(), Ok(()));
        let read: Attempt = decode(&encode(&attempt).unwrap()).unwrap();
        assert_eq!(read, attempt);
        let text = serde_json::to_value(&attempt).unwrap();
        assert_eq!(text["attempt"]["task"], "T42");
        assert_eq!(text["attempt"]["number"], 2);
        assert_eq!(text["hard_timeout_ms"], 120_000);
    }

    #[test]
    fn an_attempt_over_a_ceiling_or_inconsistent_is_refused_naming_the_field() {
        let good = Attempt::new(&task(), AgentId(7), Some(trace()));
        let deep = (0..=crate::bounds::JSON_DEPTH_CEILING).fold(json!(1), |v, _| json!([v]));
        let cases: Vec<(&str, Breakage)> = vec![
            ("attempt.number", Box::new(|a| a.attempt.number = 0)),
            ("idempotency_key", Box::new(|a| a.attempt.number = 3)),
            ("idempotency_key", Box::new(|a| a.idempotency_key.push('x'))),
            (
                "input.text",
                Box::new(|a| {
                    a.input = Arc::new(
                        json!({"text": "x".repeat(crate::bounds::JsonLimits::STRING_BYTES_DEFAULT + 1)}),
                    );
                }),
            ),
            ("upstream.fetch", {
                let deep = deep.clone();
                Box::new(move |a| {
                    a.upstream
                        .insert(TaskKey::new("fetch").unwrap(), deep.clone());
                })
            }),
            (
                "upstream",
                Box::new(|a| {
                    a.upstream = (0..=UPSTREAM_MAX)
                        .map(|i| (TaskKey::new(format!("t{i}")).unwrap(), Value::Null))
                        .collect();
                }),
            ),
            ("idle_timeout_ms", Box::new(|a| a.idle_timeout_ms = Some(0))),
            (
                "hard_timeout_ms",
                Box::new(|a| a.hard_timeout_ms = Some(DURATION_MS_MAX + 1)),
            ),
            (
                "trace.traceparent",
                Box::new(|a| {
                    a.trace = Some(TraceContext {
                        traceparent: "00-abc".into(),
                        tracestate: None,
                    })
                }),
            ),
            (
                "trace.tracestate",
                Box::new(|a| {
                    a.trace = Some(TraceContext {
                        tracestate: Some("k=v,".repeat(TRACESTATE_BYTES_MAX)),
                        ..trace()
                    });
                }),
            ),
        ];
        for (field, break_it) in cases {
            let mut attempt = good.clone();
            break_it(&mut attempt);
            let err = attempt.validate().unwrap_err();
            assert!(err.field.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_traceparent_is_version_00_with_nonzero_ids() {
        assert_eq!(trace().validate(), Ok(()));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "",
        ] {
            let context = TraceContext {
                traceparent: bad.into(),
                tracestate: None,
            };
            assert_eq!(
                context.validate().unwrap_err().field,
                "trace.traceparent",
                "{bad}"
            );
        }
    }
}
