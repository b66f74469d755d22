//! How an attempt ended, as its worker reports it.
//!
//! An [`Outcome`] is the wire form of the [`TaskOutcome`] a local agent returns, variant for
//! variant and field for field ([`From`] both ways): the same [`FailureKind`]s, [`Usage`] and
//! follow-up [`TaskSpec`]s (the task format of the HTTP API, humantime durations included).
//! Only `retry_after` differs: whole milliseconds (`retry_after_ms`), which every language
//! writes without a formatter, rather than humantime text.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attempt::AttemptId;
use super::{
    FAILURE_MESSAGE_BYTES_MAX, Invalid, Message, SPAWNED_TASKS_MAX, check_ms, check_text,
    check_value, millis,
};
use crate::ids::AgentId;
use crate::messages::FencedResult;
use crate::outcome::{FailureKind, OutcomeSummary, TaskOutcome, Usage};
use crate::task::TaskSpec;

/// The end of one attempt. It commits only if `attempt` is still the task's current attempt
/// on `agent`; otherwise (the attempt timed out, was cancelled, or was run again after a lost
/// lease or a coordinator restart) it is dropped and recorded as fenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttemptResult {
    /// The attempt, as delivered.
    pub attempt: AttemptId,
    /// The agent that ran it.
    pub agent: AgentId,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran on the worker, in milliseconds.
    #[serde(default)]
    #[schemars(range(max = super::DURATION_MS_MAX))]
    pub duration_ms: u64,
}

impl Message for AttemptResult {
    const NAME: &'static str = "result";

    fn validate(&self) -> Result<(), Invalid> {
        self.attempt.validate("attempt")?;
        check_ms("duration_ms", self.duration_ms, false)?;
        self.outcome.validate().map_err(|e| Invalid {
            field: format!("outcome.{}", e.field),
            problem: e.problem,
        })
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The attempt produced its output.
    Succeeded {
        /// The output, passed to dependents.
        output: Value,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The attempt failed; `kind` decides what happens next.
    Failed {
        /// How it failed: `transient` and `timeout` are retried under the task's retry policy;
        /// `permanent` is not retried on this agent; `invalid_output` goes to a person's
        /// review; `declined` means nothing ran (the agent cannot take work now) and the task
        /// goes back to the queue without using up a retry.
        kind: FailureKind,
        /// What went wrong, for people.
        #[schemars(length(max = FAILURE_MESSAGE_BYTES_MAX))]
        message: String,
        /// Output produced before the failure (e.g. the text streamed before a stall).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial_output: Option<Value>,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// The earliest a retry may start, in milliseconds from now (e.g. a provider's
        /// `Retry-After`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(max = super::DURATION_MS_MAX))]
        retry_after_ms: Option<u64>,
    },
    /// The attempt succeeded and asks for follow-up tasks to be added to its objective's
    /// graph. Each follow-up depends on this task; it may also depend on any other task of
    /// the objective.
    Spawned {
        /// This task's own output.
        output: Value,
        /// The tasks to add, in the format of the HTTP API's task graphs.
        #[schemars(length(max = SPAWNED_TASKS_MAX))]
        tasks: Vec<TaskSpec>,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
}

impl Outcome {
    /// Checks the ceilings; the error names the field within the outcome.
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Succeeded { output, .. } => check_value("output", output),
            Self::Failed {
                message,
                partial_output,
                retry_after_ms,
                ..
            } => {
                check_text("message", message, FAILURE_MESSAGE_BYTES_MAX)?;
                if let Some(partial) = partial_output {
                    check_value("partial_output", partial)?;
                }
                if let Some(ms) = retry_after_ms {
                    check_ms("retry_after_ms", *ms, false)?;
                }
                Ok(())
            }
            Self::Spawned { output, tasks, .. } => {
                check_value("output", output)?;
                if tasks.len() > SPAWNED_TASKS_MAX {
                    return Err(Invalid::new(
                        "tasks",
                        format!(
                            "{} follow-ups are more than the most accepted, {SPAWNED_TASKS_MAX}",
                            tasks.len()
                        ),
                    ));
                }
                for (i, task) in tasks.iter().enumerate() {
                    task.check_bounds()
                        .map_err(|e| Invalid::from(e.within(&format!("tasks[{i}]"))))?;
                }
                Ok(())
            }
        }
    }
}

impl From<&Outcome> for OutcomeSummary {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { .. } => Self::Succeeded,
            Outcome::Failed { kind, .. } => Self::Failed { kind: *kind },
            Outcome::Spawned { tasks, .. } => Self::Spawned {
                tasks: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
            },
        }
    }
}

impl AttemptResult {
    /// The result as the scheduler records it when it is fenced: its attempt's identity and
    /// how it ended, without its output.
    pub fn fenced(&self) -> FencedResult {
        FencedResult {
            objective: self.attempt.objective,
            task: self.attempt.task,
            attempt: self.attempt.number,
            agent: self.agent,
            outcome: OutcomeSummary::from(&self.outcome),
        }
    }
}

impl From<TaskOutcome> for Outcome {
    fn from(outcome: TaskOutcome) -> Self {
        match outcome {
            TaskOutcome::Succeeded { output, usage } => Self::Succeeded { output, usage },
            TaskOutcome::Failed {
                kind,
                message,
                partial_output,
                usage,
                retry_after,
            } => Self::Failed {
                kind,
                message,
                partial_output,
                usage,
                retry_after_ms: retry_after.map(millis),
            },
            TaskOutcome::Spawned {
                output,
                tasks,
                usage,
            } => Self::Spawned {
                output,
                tasks,
                usage,
            },
        }
    }
}

impl From<Outcome> for TaskOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded { output, usage } => Self::Succeeded { output, usage },
            Outcome::Failed {
                kind,
                message,
                partial_output,
                usage,
                retry_after_ms,
            } => Self::Failed {
                kind,
                message,
                partial_output,
                usage,
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            Outcome::Spawned {
                output,
                tasks,
                usage,
            } => Self::Spawned {
                output,
                tasks,
                usage,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bounds::JSON_DEPTH_CEILING;
    use crate::ids::{Capability, ObjectiveId, TaskId, TaskKey};
    use crate::remote::{DURATION_MS_MAX, decode, encode};

    fn result(outcome: Outcome) -> AttemptResult {
        AttemptResult {
            attempt: AttemptId {
                objective: ObjectiveId::new(),
                task: TaskId(42),
                number: 1,
            },
            agent: AgentId(7),
            outcome,
            duration_ms: 1250,
        }
    }

    fn usage() -> Usage {
        Usage {
            input_tokens: 812,
            output_tokens: 96,
            cached_input_tokens: 0,
            cost_usd_micros: Some(410),
        }
    }

    fn follow_up() -> TaskSpec {
        TaskSpec::new(
            TaskKey::new("translate").unwrap(),
            Capability::new("translate").unwrap(),
        )
    }

    /// A result as the scheduler records it when fenced: its attempt's identity and the same
    /// summary as the local outcome it stands for, without the output.
    #[test]
    fn a_fenced_result_keeps_the_identity_and_the_summary_of_its_outcome() {
        let outcomes = [
            TaskOutcome::success(json!({"long": "output"})),
            TaskOutcome::failure(FailureKind::Permanent, "401"),
            TaskOutcome::Spawned {
                output: json!(null),
                tasks: vec![follow_up(), follow_up()],
                usage: None,
            },
        ];
        for outcome in outcomes {
            let sent = result(Outcome::from(outcome.clone()));
            let fenced = sent.fenced();
            assert_eq!(
                (fenced.objective, fenced.task, fenced.attempt, fenced.agent),
                (sent.attempt.objective, TaskId(42), 1, AgentId(7))
            );
            assert_eq!(fenced.outcome, OutcomeSummary::from(&outcome));
        }
        assert_eq!(
            OutcomeSummary::from(&Outcome::from(TaskOutcome::failure(
                FailureKind::Declined,
                "open breaker"
            )))
            .to_string(),
            "failed (declined)"
        );
    }

    #[test]
    fn every_local_outcome_crosses_the_wire_and_back_unchanged() {
        let outcomes = [
            TaskOutcome::Succeeded {
                output: json!({"summary": "short"}),
                usage: Some(usage()),
            },
            TaskOutcome::Failed {
                kind: FailureKind::Transient,
                message: "429 from the provider".into(),
                partial_output: Some(json!("The rep")),
                usage: Some(usage()),
                retry_after: Some(Duration::from_millis(2500)),
            },
            TaskOutcome::failure(FailureKind::InvalidOutput, "not JSON"),
            TaskOutcome::Spawned {
                output: json!(null),
                tasks: vec![follow_up()],
                usage: None,
            },
        ];
        for outcome in outcomes {
            let sent = result(Outcome::from(outcome.clone()));
            let read: AttemptResult = decode(&encode(&sent).unwrap()).unwrap();
            assert_eq!(read, sent);
            assert_eq!(TaskOutcome::from(read.outcome), outcome);
        }
        let text = serde_json::to_value(result(Outcome::Failed {
            kind: FailureKind::Timeout,
            message: "idle".into(),
            partial_output: None,
            usage: None,
            retry_after_ms: Some(2000),
        }))
        .unwrap();
        assert_eq!(text["outcome"]["status"], "failed");
        assert_eq!(text["outcome"]["kind"], "timeout");
        assert_eq!(text["outcome"]["retry_after_ms"], 2000);
    }

    #[test]
    fn a_result_over_a_ceiling_is_refused_naming_the_field() {
        let deep = (0..=JSON_DEPTH_CEILING).fold(json!(1), |v, _| json!([v]));
        let failed = |message: String, retry_after_ms| Outcome::Failed {
            kind: FailureKind::Permanent,
            message,
            partial_output: None,
            usage: None,
            retry_after_ms,
        };
        let mut late = follow_up();
        late.hard_timeout = Some(Duration::from_secs(DURATION_MS_MAX));
        let cases = [
            (
                "outcome.output",
                result(Outcome::Succeeded {
                    output: deep.clone(),
                    usage: None,
                }),
            ),
            (
                "outcome.message",
                result(failed("m".repeat(FAILURE_MESSAGE_BYTES_MAX + 1), None)),
            ),
            (
                "outcome.retry_after_ms",
                result(failed("m".into(), Some(DURATION_MS_MAX + 1))),
            ),
            (
                "outcome.partial_output",
                result(Outcome::Failed {
                    kind: FailureKind::Timeout,
                    message: "idle".into(),
                    partial_output: Some(deep.clone()),
                    usage: None,
                    retry_after_ms: None,
                }),
            ),
            (
                "outcome.tasks",
                result(Outcome::Spawned {
                    output: json!(1),
                    tasks: vec![follow_up(); SPAWNED_TASKS_MAX + 1],
                    usage: None,
                }),
            ),
            (
                "outcome.tasks[1].hard_timeout",
                result(Outcome::Spawned {
                    output: json!(1),
                    tasks: vec![follow_up(), late],
                    usage: None,
                }),
            ),
            (
                "attempt.number",
                AttemptResult {
                    attempt: AttemptId {
                        number: 0,
                        ..result(failed("m".into(), None)).attempt
                    },
                    ..result(failed("m".into(), None))
                },
            ),
            (
                "duration_ms",
                AttemptResult {
                    duration_ms: DURATION_MS_MAX + 1,
                    ..result(failed("m".into(), None))
                },
            ),
        ];
        for (field, result) in cases {
            let err = result.validate().unwrap_err();
            assert!(err.field.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_spawned_task_is_read_as_the_http_api_reads_it() {
        let read: AttemptResult = serde_json::from_value(json!({
            "attempt": {"objective": ObjectiveId::new(), "task": "T42", "number": 1},
            "agent": "A7",
            "outcome": {"status": "spawned", "output": null,
                        "tasks": [{"id": "t", "capability": "x", "hard_timeout": "2m"}]}
        }))
        .unwrap();
        let Outcome::Spawned { tasks, .. } = &read.outcome else {
            panic!("{read:?}")
        };
        assert_eq!(tasks[0].hard_timeout, Some(Duration::from_secs(120)));
        let err = serde_json::from_value::<AttemptResult>(json!({
            "attempt": {"objective": ObjectiveId::new(), "task": "T42", "number": 1},
            "agent": "A7",
            "outcome": {"status": "spawned", "output": null,
                        "tasks": [{"id": "t", "capability": "x", "hard_timout": "2m"}]}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("hard_timout"), "{err}");
    }
}
