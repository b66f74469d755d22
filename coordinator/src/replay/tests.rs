//! Tests of the fold, each on a hand-written log: one with every kind of event, a planned
//! objective, and a saga. Each log numbers and timestamps its events as the store would.

mod every_kind_log;
mod fold;
mod planning;
mod saga;

use std::time::Duration;

use swarm_protocol::{
    Capability, Event, EventRecord, TaskId, TaskKey, TaskSpec, TaskStatus, Usage,
};

use super::Replay;
use crate::scheduler::TaskRecord;

fn spec(key: &str, capability: &str) -> TaskSpec {
    TaskSpec::new(
        TaskKey::new(key).unwrap(),
        Capability::new(capability).unwrap(),
    )
}

fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A task as just submitted: what each expectation below starts from.
fn declared_task(id: u64, key: &str, capability: &str, spawned_by: Option<TaskId>) -> TaskRecord {
    TaskRecord {
        id: TaskId(id),
        key: TaskKey::new(key).unwrap(),
        capability: Capability::new(capability).unwrap(),
        status: TaskStatus::Backlog,
        attempt: 0,
        lost: 0,
        declined: 0,
        agent: None,
        output: None,
        error: None,
        partial: None,
        usage: Usage::default(),
        budget_cost_usd_micros: 0,
        run_time: Duration::ZERO,
        spawned_by,
        retry_at_ms: None,
        started_at_ms: None,
        planning: None,
        compensates: None,
        review_errors: Vec::new(),
        kind: swarm_protocol::TaskKind::Agent,
        event: None,
        wait_until_ms: None,
        review_until_ms: None,
        escalations: 0,
        deps: spawned_by.into_iter().collect(),
    }
}

/// Numbers and timestamps events as a log would.
#[derive(Default)]
struct Log(Vec<EventRecord>);

impl Log {
    fn at(&mut self, at_ms: u64, event: Event) {
        let seq = self.0.len() as u64 + 1;
        self.0.push(EventRecord { seq, at_ms, event });
    }
}

/// Folds `records` into a fold that keeps finished objectives.
fn fold_all(records: &[EventRecord]) -> Replay {
    let mut replay = Replay::keeping_finished();
    for record in records {
        replay.apply(record.clone());
    }
    replay
}

/// The fold up to and including the first event matching `pred`.
fn fold_through(records: &[EventRecord], pred: impl Fn(&Event) -> bool) -> Replay {
    let end = records.iter().position(|r| pred(&r.event)).unwrap();
    fold_all(&records[..=end])
}
