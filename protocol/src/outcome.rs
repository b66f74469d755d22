//! What an agent reports at the end of an attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::TaskSpec;

/// The end of one attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskOutcome {
    /// The attempt produced its output.
    Succeeded {
        /// The output, passed to dependents.
        output: Value,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The attempt failed.
    Failed {
        /// How it failed, which decides whether it is retried.
        kind: FailureKind,
        /// What went wrong, for people.
        message: String,
        /// Output produced before the failure (e.g. tokens streamed before a stall).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial_output: Option<Value>,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// The earliest a retry may start (e.g. a provider's `Retry-After`).
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after: Option<Duration>,
    },
    /// The attempt succeeded and asks for follow-up tasks to be added to the graph. Each
    /// follow-up implicitly depends on this task; it may also depend on any other task of the
    /// objective.
    Spawned {
        /// This task's own output.
        output: Value,
        /// The tasks to add.
        tasks: Vec<TaskSpec>,
        /// Model tokens spent, where known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
}

impl TaskOutcome {
    /// A success with this output.
    pub fn success(output: Value) -> Self {
        Self::Succeeded {
            output,
            usage: None,
        }
    }

    /// A failure of this kind.
    pub fn failure(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            message: message.into(),
            partial_output: None,
            usage: None,
            retry_after: None,
        }
    }

    /// The tokens this attempt spent, where known.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Self::Succeeded { usage, .. }
            | Self::Failed { usage, .. }
            | Self::Spawned { usage, .. } => *usage,
        }
    }
}

/// How an attempt ended, in short: what the chain of work says of a result that was not
/// committed ([`crate::Event::ResultFenced`]), which keeps neither its output nor its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OutcomeSummary {
    /// The attempt produced its output.
    Succeeded,
    /// The attempt failed.
    Failed {
        /// How.
        kind: FailureKind,
    },
    /// The attempt succeeded and asked for follow-up tasks.
    Spawned {
        /// How many.
        tasks: u32,
    },
}

impl From<&TaskOutcome> for OutcomeSummary {
    fn from(outcome: &TaskOutcome) -> Self {
        match outcome {
            TaskOutcome::Succeeded { .. } => Self::Succeeded,
            TaskOutcome::Failed { kind, .. } => Self::Failed { kind: *kind },
            TaskOutcome::Spawned { tasks, .. } => Self::Spawned {
                tasks: u32::try_from(tasks.len()).unwrap_or(u32::MAX),
            },
        }
    }
}

impl std::fmt::Display for OutcomeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::Failed { kind } => write!(f, "failed ({})", kind.name()),
            Self::Spawned { tasks } => write!(f, "succeeded with {tasks} follow-up tasks"),
        }
    }
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Might work if tried again (rate limit, 5xx, connection reset, agent crash).
    Transient,
    /// Will not work if tried again on this agent (bad request, unauthorized).
    Permanent,
    /// The attempt stalled (idle timeout) or ran too long (hard timeout).
    Timeout,
    /// The output is not what the task's schema asks for; a person reviews it.
    InvalidOutput,
    /// The agent did not attempt the task because it cannot take work now (its circuit
    /// breaker is open, its provider account's quota is spent). Nothing ran: the task goes back
    /// to the queue for another agent (or this one once it recovers), and neither the retry
    /// policy nor the task's lost attempts are used up. An agent declines only after it
    /// reported itself unable to take work (its health), so it is not handed the task again
    /// at once; the scheduler bounds the declines of one task all the same.
    Declined,
}

impl FailureKind {
    /// True when the retry policy applies.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Timeout)
    }

    /// Its name in the JSON (`transient`, `invalid_output`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::InvalidOutput => "invalid_output",
            Self::Declined => "declined",
        }
    }
}

/// Model tokens spent by an attempt.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Tokens sent to the model.
    pub input_tokens: u64,
    /// Tokens the model produced.
    pub output_tokens: u64,
    /// Of `input_tokens`, those the provider served from its prompt cache (where it says).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// What the tokens cost, in millionths of a US dollar: set by an agent whose model has a
    /// price. Absent means unknown, never free. In an aggregate (a task's attempts, an
    /// objective's tasks) it is known only when every part's is (see [`Usage::add`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd_micros: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The cost in micro-dollars where it is known: the priced cost, or zero when no token
    /// was spent (nothing to price); `None` when tokens were spent at an unknown price.
    pub fn known_cost(&self) -> Option<u64> {
        match self.cost_usd_micros {
            Some(cost) => Some(cost),
            None if self.tokens() == 0 => Some(0),
            None => None,
        }
    }

    /// What a `cost_budget` is charged for this usage: its cost when priced, nothing when the
    /// price is unknown (such tokens count against `token_budget` only). The scheduler charges
    /// a running objective and rebuilds the charge after a restart with this one rule, per
    /// attempt: a task's summed usage cannot serve, as one unpriced attempt makes its cost
    /// unknown, and with it the priced attempts' cost.
    pub fn budget_cost(&self) -> u64 {
        self.cost_usd_micros.unwrap_or(0)
    }

    /// Adds `other` in: the tokens add up, and the cost stays known only while both are.
    pub fn add(&mut self, other: &Usage) {
        let cost = self
            .known_cost()
            .zip(other.known_cost())
            .map(|(a, b)| a.saturating_add(b));
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cost_usd_micros = cost;
    }

    /// This usage as views show it: the cost [known](Usage::known_cost), or absent.
    pub fn shown(self) -> Self {
        Self {
            cost_usd_micros: self.known_cost(),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_round_trip_in_their_json_form() {
        let cases = [
            TaskOutcome::success(json!({"answer": 42})),
            TaskOutcome::Failed {
                kind: FailureKind::Timeout,
                message: "idle for 30s".into(),
                partial_output: Some(json!("the first three")),
                usage: Some(Usage {
                    input_tokens: 10,
                    output_tokens: 3,
                    cached_input_tokens: 4,
                    cost_usd_micros: Some(7),
                }),
                retry_after: Some(Duration::from_secs(2)),
            },
            TaskOutcome::Spawned {
                output: json!(null),
                tasks: vec![],
                usage: None,
            },
        ];
        for outcome in cases {
            let text = serde_json::to_string(&outcome).unwrap_or_default();
            let back: TaskOutcome = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, outcome, "{text}");
        }
        let hand: TaskOutcome = serde_json::from_value(
            json!({"status": "failed", "kind": "permanent", "message": "401"}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hand, TaskOutcome::failure(FailureKind::Permanent, "401"));
    }

    #[test]
    fn a_sum_of_usages_has_a_cost_only_while_every_part_has_one() {
        let priced = |tokens, cost| Usage {
            input_tokens: tokens,
            output_tokens: 0,
            cached_input_tokens: 0,
            cost_usd_micros: cost,
        };
        let mut total = Usage::default();
        total.add(&priced(10, Some(5)));
        total.add(&priced(0, None));
        assert_eq!(total.known_cost(), Some(5));
        total.add(&priced(10, None));
        assert_eq!((total.tokens(), total.known_cost()), (20, None));
        total.add(&priced(10, Some(5)));
        assert_eq!(total.known_cost(), None, "unknown stays unknown");
        // An old log's usage (no cost) reads back unchanged: its cost is unknown.
        let old: Usage = serde_json::from_value(json!({"input_tokens": 3, "output_tokens": 1}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.known_cost(), None);
        assert_eq!(
            serde_json::to_value(old).unwrap_or_default(),
            json!({"input_tokens": 3, "output_tokens": 1})
        );
    }
}
