//! What a running attempt reports: that it is alive, its partial output, streamed text and
//! the tokens spent so far.
//!
//! A [`Progress`] is what the `TaskContext` of `swarm-agents` records for a local attempt:
//! any progress is a heartbeat (it resets the idle timeout), `partial_output` is
//! `set_partial`, and `text` is `append_text`. The coordinator keeps the partial output it
//! folds from them ([`Progress::apply`]) and hands it on if the attempt stalls or runs out of
//! time, as for a local agent.
//!
//! Progress travels on plain NATS subjects, so a message may be lost or overtaken. `seq`
//! orders them (an older one changes nothing), and a text delta says where in the text it
//! starts, so a delta after a lost one is not glued to the wrong place: it is skipped, and the
//! next full `partial_output` (or the result) brings the text back in line.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attempt::AttemptId;
use super::{Invalid, Message, TEXT_DELTA_BYTES_MAX, check_value};
use crate::bounds::JsonLimits;
use crate::ids::AgentId;
use crate::outcome::Usage;

/// A report from a running attempt. With neither `partial_output` nor `text` it is a bare
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Progress {
    /// The attempt, as delivered.
    pub attempt: AttemptId,
    /// The agent running it.
    pub agent: AgentId,
    /// The report's number within the attempt, from 1 and growing: a report whose `seq` is
    /// not above the last one the coordinator took is dropped.
    #[schemars(range(min = 1))]
    pub seq: u64,
    /// The output so far; replaces the previous partial output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_output: Option<Value>,
    /// Streamed text to append to a text partial output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextDelta>,
    /// Model tokens spent by the attempt so far (a total, not an increment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A piece of streamed text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TextDelta {
    /// Where in the attempt's streamed text it starts, in bytes of UTF-8: the length of all
    /// the text streamed before it.
    pub offset: u64,
    /// The text.
    #[schemars(length(min = 1, max = TEXT_DELTA_BYTES_MAX))]
    pub delta: String,
}

impl Progress {
    /// Folds this report into the partial output kept for its attempt, as `set_partial` and
    /// `append_text` do for a local attempt: a `partial_output` replaces it; a text delta
    /// appends to a text partial output that ends exactly where the delta starts (at offset 0,
    /// it starts a new one). Returns whether the partial output changed; a delta that does not
    /// fit (one before it was lost) changes nothing.
    pub fn apply(&self, partial: &mut Option<Value>) -> bool {
        if let Some(output) = &self.partial_output {
            *partial = Some(output.clone());
            return true;
        }
        let Some(text) = &self.text else {
            return false;
        };
        match partial {
            Some(Value::String(kept)) if kept.len() as u64 == text.offset => {
                kept.push_str(&text.delta);
                true
            }
            _ if text.offset == 0 => {
                *partial = Some(Value::String(text.delta.clone()));
                true
            }
            _ => false,
        }
    }
}

impl Message for Progress {
    const NAME: &'static str = "progress";

    fn validate(&self) -> Result<(), Invalid> {
        self.attempt.validate("attempt")?;
        if self.seq == 0 {
            return Err(Invalid::new("seq", "reports are numbered from 1"));
        }
        if self.partial_output.is_some() && self.text.is_some() {
            return Err(Invalid::new(
                "text",
                "a report carries a `partial_output` or a `text` delta, not both",
            ));
        }
        if let Some(output) = &self.partial_output {
            check_value("partial_output", output)?;
        }
        if let Some(text) = &self.text {
            if text.delta.is_empty() {
                return Err(Invalid::new("text.delta", "must not be empty"));
            }
            if text.delta.len() > TEXT_DELTA_BYTES_MAX {
                return Err(Invalid::new(
                    "text.delta",
                    format!(
                        "{} bytes are more than the most accepted, {TEXT_DELTA_BYTES_MAX}",
                        text.delta.len()
                    ),
                ));
            }
            let end = text.offset.saturating_add(text.delta.len() as u64);
            let most = JsonLimits::STRING_BYTES_DEFAULT as u64;
            if end > most {
                return Err(Invalid::new(
                    "text.offset",
                    format!("the text would grow to {end} bytes, more than the most kept, {most}"),
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
    use crate::ids::{ObjectiveId, TaskId};

    fn beat(seq: u64) -> Progress {
        Progress {
            attempt: AttemptId {
                objective: ObjectiveId::new(),
                task: TaskId(42),
                number: 1,
            },
            agent: AgentId(7),
            seq,
            partial_output: None,
            text: None,
            usage: None,
        }
    }

    fn text(offset: u64, delta: &str) -> Progress {
        Progress {
            text: Some(TextDelta {
                offset,
                delta: delta.into(),
            }),
            ..beat(1)
        }
    }

    #[test]
    fn progress_folds_into_a_partial_output_as_a_local_context_does() {
        let mut partial = None;
        assert!(!beat(1).apply(&mut partial), "a heartbeat changes nothing");
        assert!(text(0, "The ").apply(&mut partial));
        assert!(text(4, "report").apply(&mut partial));
        assert_eq!(partial, Some(json!("The report")));
        assert!(!text(99, " lost").apply(&mut partial), "a gap is skipped");
        assert!(!text(4, "again").apply(&mut partial), "a repeat is skipped");
        assert_eq!(partial, Some(json!("The report")));
        let full = Progress {
            partial_output: Some(json!("The report says")),
            ..beat(2)
        };
        assert!(full.apply(&mut partial));
        assert!(text(15, " yes").apply(&mut partial), "in line again");
        assert_eq!(partial, Some(json!("The report says yes")));
        let mut structured = Some(json!({"rows": 3}));
        assert!(text(0, "fresh").apply(&mut structured));
        assert_eq!(structured, Some(json!("fresh")));
    }

    #[test]
    fn progress_over_a_ceiling_or_ambiguous_is_refused_naming_the_field() {
        let cases: Vec<(&str, Progress)> = vec![
            ("seq", beat(0)),
            (
                "attempt.number",
                Progress {
                    attempt: AttemptId {
                        number: 0,
                        ..beat(1).attempt
                    },
                    ..beat(1)
                },
            ),
            (
                "text",
                Progress {
                    partial_output: Some(json!("x")),
                    ..text(0, "y")
                },
            ),
            ("text.delta", text(0, "")),
            ("text.delta", text(0, &"x".repeat(TEXT_DELTA_BYTES_MAX + 1))),
            (
                "text.offset",
                text(JsonLimits::STRING_BYTES_DEFAULT as u64, "x"),
            ),
            (
                "partial_output",
                Progress {
                    partial_output: Some(
                        (0..=crate::bounds::JSON_DEPTH_CEILING).fold(json!(1), |v, _| json!([v])),
                    ),
                    ..beat(1)
                },
            ),
        ];
        for (field, progress) in cases {
            let err = progress.validate().unwrap_err();
            assert!(err.field.starts_with(field), "{field}: {err}");
        }
        assert_eq!(text(3, "ok").validate(), Ok(()));
    }
}
