//! What the edges say about a swarm in words: the chain of work as timeline entries, durations
//! and times.
//!
//! The dashboard's objective page and the `swarm` CLI (`swarm replay`, `swarm demo`, the
//! schedule listings) tell the same story in the same words because both use this module. It
//! lives in the server crate because the dashboard needs it and the CLI depends on this crate
//! anyway (for `swarm serve`); the engine keeps only the data (the events and their fold).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use swarm_protocol::{DecidedBy, Event, EventRecord, TaskId};

/// A duration to a tenth of a millisecond (`6.8ms`, `1.250s`), for the chain of work and run
/// times; the dashboard's cards round theirs (`ui::format_duration_rounded`).
pub fn format_duration_precise(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// A time (ms since the Unix epoch) as `2026-11-25T17:00:00Z`; `-` for none.
pub fn utc(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?))
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// One event of the chain of work, told for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// The event's sequence number.
    pub seq: u64,
    /// Milliseconds since the first event of the chain.
    pub since_start_ms: u64,
    /// The task the event is about, if any.
    pub task: Option<TaskId>,
    /// What happened, naming the task (`T3 \`b\` attempt 1 started on A2`).
    pub text: String,
}

/// The chain of work as entries (what `swarm replay` prints and the dashboard shows).
pub fn timeline_entries(events: &[EventRecord]) -> Vec<TimelineEntry> {
    let mut names: BTreeMap<TaskId, String> = BTreeMap::new();
    let start = events.first().map_or(0, |e| e.at_ms);
    let mut out = Vec::with_capacity(events.len());
    for record in events {
        let t = record.at_ms.saturating_sub(start);
        let name = |names: &BTreeMap<TaskId, String>, id: TaskId| match names.get(&id) {
            Some(key) => format!("{id} {key}"),
            None => id.to_string(),
        };
        let line = match &record.event {
            Event::ObjectiveSubmitted {
                spec,
                first_task,
                idempotency_key,
                ..
            } => {
                for (i, s) in spec.tasks.iter().enumerate() {
                    names.insert(TaskId(first_task.0 + i as u64), format!("`{}`", s.id));
                }
                let key = idempotency_key
                    .as_ref()
                    .map(|k| format!(" (idempotency key `{k}`)"))
                    .unwrap_or_default();
                match spec.tasks.len() {
                    0 => format!("objective submitted: {:?}, to be planned{key}", spec.goal),
                    n => format!("objective submitted: {:?} with {n} tasks{key}", spec.goal),
                }
            }
            Event::TasksSpawned {
                parent,
                first_task,
                tasks,
                ..
            } => {
                let parent = name(&names, *parent);
                for (i, s) in tasks.iter().enumerate() {
                    names.insert(TaskId(first_task.0 + i as u64), format!("`{}`", s.id));
                }
                let list: Vec<&str> = tasks.iter().map(|s| s.id.as_str()).collect();
                format!("{parent} spawned {}: {}", tasks.len(), list.join(", "))
            }
            Event::PlanRequested {
                task, spec, failed, ..
            } => {
                names.insert(*task, format!("`{}`", spec.id));
                match failed {
                    Some(failed) => format!(
                        "{} asks the planner for a new plan after {} failed",
                        name(&names, *task),
                        name(&names, *failed)
                    ),
                    None => format!("{} asks the planner for a plan", name(&names, *task)),
                }
            }
            Event::PlanRejected {
                task,
                attempt,
                errors,
                repair,
                ..
            } => format!(
                "{} attempt {attempt}: plan rejected: {}; {}",
                name(&names, *task),
                errors.join("; "),
                if *repair {
                    "the planner is asked to repair it"
                } else {
                    "no repair left"
                }
            ),
            Event::CompensationStarted {
                reason,
                first_task,
                compensates,
                ..
            } => {
                let list: Vec<String> = compensates.iter().map(|t| name(&names, *t)).collect();
                for (i, original) in compensates.iter().enumerate() {
                    let label = format!("(compensating {})", name(&names, *original));
                    names.insert(TaskId(first_task.0 + i as u64), label);
                }
                format!(
                    "objective failing ({reason}); compensating, in this order: {}",
                    list.join(", ")
                )
            }
            Event::TaskReady { task, .. } => format!("{} ready", name(&names, *task)),
            Event::TaskStarted {
                task,
                attempt,
                agent,
                input,
                ..
            } => {
                let built = match input {
                    Some(_) => " (input built by the scheduler)",
                    None => "",
                };
                format!(
                    "{} attempt {attempt} started on {agent}{built}",
                    name(&names, *task)
                )
            }
            Event::TaskSucceeded {
                task,
                attempt,
                agent,
                usage,
                duration,
                ..
            } => {
                let mut s = format!(
                    "{} attempt {attempt} succeeded on {agent} in {}",
                    name(&names, *task),
                    format_duration_precise(*duration)
                );
                if let Some(u) = usage {
                    let _ = write!(
                        s,
                        ", {} in / {} out tokens",
                        u.input_tokens, u.output_tokens
                    );
                }
                s
            }
            Event::TaskFailed {
                task,
                attempt,
                kind,
                message,
                retry_in,
                duration,
                ..
            } => {
                let mut s = format!(
                    "{} attempt {attempt} failed ({kind:?}): {message}",
                    name(&names, *task)
                );
                if let Some(d) = duration {
                    let _ = write!(s, " after {}", format_duration_precise(*d));
                }
                match retry_in {
                    Some(r) => {
                        let _ = write!(s, "; retry in {}", format_duration_precise(*r));
                    }
                    None => s.push_str("; no retry"),
                }
                s
            }
            Event::AttemptLost {
                task,
                attempt,
                reason,
                ..
            } => format!("{} attempt {attempt} lost: {reason}", name(&names, *task)),
            Event::ResultFenced {
                task,
                attempt,
                agent,
                outcome,
                reason,
                ..
            } => format!(
                "{} attempt {attempt}: result from {agent} fenced ({outcome}), not committed: \
                 {reason}",
                name(&names, *task)
            ),
            Event::TaskInReview {
                task,
                reason,
                until_ms,
                ..
            } => {
                let mut s = format!("{} in review: {reason}", name(&names, *task));
                if let Some(until) = until_ms {
                    let _ = write!(
                        s,
                        "; its deadline decides in {}",
                        format_duration_precise(Duration::from_millis(
                            until.saturating_sub(record.at_ms)
                        ))
                    );
                }
                s
            }
            Event::TaskEscalated {
                task,
                escalation,
                until_ms,
                ..
            } => format!(
                "{} escalated by its deadline (escalation {escalation}): nobody decided; it \
                 stays in review, its deadline decides again in {}",
                name(&names, *task),
                format_duration_precise(Duration::from_millis(
                    until_ms.saturating_sub(record.at_ms)
                ))
            ),
            Event::TaskWaiting {
                task,
                event,
                until_ms,
                ..
            } => format!(
                "{} waits for event `{event}` (for {})",
                name(&names, *task),
                format_duration_precise(Duration::from_millis(
                    until_ms.saturating_sub(record.at_ms)
                ))
            ),
            Event::WaitSatisfied {
                task, key, event, ..
            } => format!("{} got event `{key}` ({event})", name(&names, *task)),
            Event::TaskApproved {
                task, decided_by, ..
            } => format!("{} approved{}", name(&names, *task), by_whom(*decided_by)),
            Event::TaskRejected {
                task,
                reason,
                decided_by,
                ..
            } => format!(
                "{} rejected{}: {reason}",
                name(&names, *task),
                by_whom(*decided_by)
            ),
            Event::TaskCancelled { task, .. } => format!("{} cancelled", name(&names, *task)),
            Event::ObjectiveSucceeded { .. } => "objective succeeded".to_string(),
            Event::ObjectiveFailed { reason, .. } => format!("objective failed: {reason}"),
            Event::ObjectiveCancelled { .. } => "objective cancelled".to_string(),
            Event::BudgetReached { reason, .. } => {
                format!("objective paused for a decision: {reason}")
            }
            Event::BudgetRaised { decided_by, .. } => {
                format!("budget raised by {decided_by}: the objective continues")
            }
            other => format!("{other:?}"),
        };
        out.push(TimelineEntry {
            seq: record.seq,
            since_start_ms: t,
            task: event_task(&record.event),
            text: line,
        });
    }
    out
}

/// Who took a review's decision, as the chain says it after the verb.
fn by_whom(decided_by: DecidedBy) -> &'static str {
    match decided_by {
        DecidedBy::Person => "",
        DecidedBy::Deadline => " by its deadline",
    }
}

/// The task an event is about.
fn event_task(event: &Event) -> Option<TaskId> {
    match event {
        Event::TaskReady { task, .. }
        | Event::TaskStarted { task, .. }
        | Event::TaskSucceeded { task, .. }
        | Event::TaskFailed { task, .. }
        | Event::AttemptLost { task, .. }
        | Event::ResultFenced { task, .. }
        | Event::TaskInReview { task, .. }
        | Event::TaskApproved { task, .. }
        | Event::TaskRejected { task, .. }
        | Event::TaskEscalated { task, .. }
        | Event::TaskCancelled { task, .. }
        | Event::TaskWaiting { task, .. }
        | Event::WaitSatisfied { task, .. }
        | Event::PlanRequested { task, .. }
        | Event::PlanRejected { task, .. } => Some(*task),
        Event::TasksSpawned { parent, .. } => Some(*parent),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use swarm_protocol::{
        AgentId, Capability, Compensation, DecidedBy, Event, EventRecord, FailureKind, Objective,
        ObjectiveId, OutcomeSummary, TaskId, TaskKey, TaskSpec,
    };

    use super::timeline_entries;

    fn spec(key: &str) -> TaskSpec {
        TaskSpec::new(TaskKey::new(key).unwrap(), Capability::new("work").unwrap())
    }

    /// An approval whose deadline escalated it, then rejected it: the timeline says the
    /// deadline decided.
    #[test]
    fn a_decision_of_the_deadline_is_told_as_the_deadline_s() {
        let o = ObjectiveId::new();
        let gate: TaskSpec = serde_json::from_value(json!({
            "id": "gate", "kind": "approval", "timeout": "1m", "on_timeout": "escalate"
        }))
        .unwrap();
        let events = [
            Event::ObjectiveSubmitted {
                objective: o,
                spec: Objective::with_tasks("ship", vec![gate]),
                first_task: TaskId(1),
                idempotency_key: None,
                trace: None,
            },
            Event::TaskInReview {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                output: None,
                reason: "awaiting approval".into(),
                errors: Vec::new(),
                usage: None,
                duration: None,
                until_ms: Some(120_001),
            },
            Event::TaskEscalated {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                escalation: 1,
                until_ms: 180_001,
            },
            Event::TaskRejected {
                objective: o,
                task: TaskId(1),
                reason: "no decision within 1m".into(),
                decided_by: DecidedBy::Deadline,
            },
        ];
        let records: Vec<EventRecord> = events
            .into_iter()
            .zip(1..)
            .map(|(event, seq)| EventRecord {
                seq,
                at_ms: (seq - 1) * 60_000 + 1,
                event,
            })
            .collect();
        let entries = timeline_entries(&records);
        let text: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            text[1..],
            [
                "T1 `gate` in review: awaiting approval; its deadline decides in 60.000s",
                "T1 `gate` escalated by its deadline (escalation 1): nobody decided; it stays in \
                 review, its deadline decides again in 60.000s",
                "T1 `gate` rejected by its deadline: no decision within 1m",
            ]
        );
        assert_eq!(entries[2].task, Some(TaskId(1)));
    }

    /// A fenced result is told with its task, attempt, agent, how it ended and why it did not
    /// commit, and never with an output.
    #[test]
    fn a_fenced_result_is_told_with_why_it_did_not_commit() {
        let o = ObjectiveId::new();
        let events = [
            Event::ObjectiveSubmitted {
                objective: o,
                spec: Objective::with_tasks("late", vec![spec("a")]),
                first_task: TaskId(1),
                idempotency_key: None,
                trace: None,
            },
            Event::ResultFenced {
                objective: o,
                task: TaskId(1),
                attempt: 1,
                agent: AgentId(3),
                outcome: OutcomeSummary::Failed {
                    kind: FailureKind::InvalidOutput,
                },
                reason: "attempt 1 is not current: the task runs attempt 2".into(),
            },
        ];
        let records: Vec<EventRecord> = events
            .into_iter()
            .zip(1..)
            .map(|(event, seq)| EventRecord {
                seq,
                at_ms: seq,
                event,
            })
            .collect();
        let entries = timeline_entries(&records);
        assert_eq!(
            entries[1].text,
            "T1 `a` attempt 1: result from A3 fenced (failed (invalid_output)), not committed: \
             attempt 1 is not current: the task runs attempt 2"
        );
        assert_eq!(entries[1].task, Some(TaskId(1)));
    }

    /// A saga whose `c` failed: the compensations of `b` then `a` run (T4, T5), and the
    /// timeline names each compensating task after the task it undoes.
    #[test]
    fn a_saga_is_told_with_its_compensations_named_after_what_they_undo() {
        let o = ObjectiveId::new();
        let undo = || {
            Compensation::new(
                Capability::new("revert").unwrap(),
                json!({"undo": {"$from": "x"}}),
            )
        };
        let mut a = spec("a");
        a.compensation = Some(undo());
        let mut b = spec("b");
        b.compensation = Some(undo());
        let events = [
            Event::ObjectiveSubmitted {
                objective: o,
                spec: Objective::with_tasks("saga", vec![a, b, spec("c")]),
                first_task: TaskId(1),
                idempotency_key: None,
                trace: None,
            },
            Event::CompensationStarted {
                objective: o,
                reason: "task `c` (T3) failed: 401".into(),
                first_task: TaskId(4),
                compensates: vec![TaskId(2), TaskId(1)],
            },
            Event::TaskStarted {
                objective: o,
                task: TaskId(5),
                attempt: 1,
                agent: AgentId(1),
                input: None,
            },
            Event::TaskSucceeded {
                objective: o,
                task: TaskId(5),
                attempt: 1,
                agent: AgentId(1),
                output: json!("undone"),
                usage: None,
                duration: std::time::Duration::from_millis(1),
            },
        ];
        let records: Vec<EventRecord> = events
            .into_iter()
            .zip(1..)
            .map(|(event, seq)| EventRecord {
                seq,
                at_ms: seq,
                event,
            })
            .collect();
        let entries = timeline_entries(&records);
        let text: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
        let text = text.join("\n");
        assert!(
            text.contains("compensating, in this order: T2 `b`, T1 `a`"),
            "{text}"
        );
        assert!(
            text.contains("T5 (compensating T1 `a`) attempt 1 succeeded"),
            "{text}"
        );
        assert_eq!(entries[3].task, Some(TaskId(5)));
        assert_eq!(entries[3].since_start_ms, 3);
    }
}
