//! Rebuilding state from the event log alone.
//!
//! [`Replay`] folds events, in order, into a model of each objective: its task batches (as
//! submitted and as spawned) and every task's status, attempts, outputs, errors, usage and run
//! time. The same fold serves three readers:
//! - recovery: a restarted coordinator rebuilds every unfinished objective from it
//!   ([`crate::scheduler::SchedulerState`] restores from a [`Recovered`]);
//! - snapshots: the fold of unfinished objectives is what a snapshot stores, so a restart reads
//!   only the snapshot and the events after it;
//! - the chain of work: `swarm replay` folds one objective's events into its final state and
//!   prints its timeline.
//!
//! Each task's part of the model is the scheduler's own [`crate::scheduler::TaskRecord`],
//! changed by the same fold the live scheduler runs as it records events, and views are built
//! from it by the same functions: replaying a finished objective gives exactly the view the
//! live scheduler had of it (a test compares them), so the log is a complete record.
//!
//! # Layout
//! - this file: [`Replay`], the fold of a log, and the readers that fold a log's events into
//!   it ([`fold_after`], [`replay_objective`]);
//! - `model.rs`: [`ObjectiveModel`], one objective, and what each of its events does to it;
//! - `recovery.rs`: [`recover`], what a restart reads (the newest snapshot and the unfinished
//!   objectives' events after it) into a [`Recovered`].

mod model;
mod recovery;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use swarm_protocol::{Event, EventRecord, ObjectiveId};
use swarm_store::{EventStore, StoreError};

pub use model::{ObjectiveModel, TaskBatch};
pub use recovery::{Recovered, fold_running, recover};

/// The fold of a log (or of part of one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The last event folded in.
    pub seq: u64,
    /// One past the highest task id seen.
    pub next_task: u64,
    /// The objectives (unfinished ones only, unless made with [`Replay::keeping_finished`]).
    pub objectives: FxHashMap<ObjectiveId, ObjectiveModel>,
    /// Unfinished objectives left out because a record of theirs could not be decoded (one
    /// written by an older version, say), with the reason: the rest of the log is served.
    #[serde(skip)]
    pub unreadable: Vec<(ObjectiveId, String)>,
    #[serde(skip)]
    keep_finished: bool,
}

impl Replay {
    /// A fold that keeps objectives once they end (for reading the chain of work).
    pub fn keeping_finished() -> Self {
        Self {
            keep_finished: true,
            ..Self::default()
        }
    }

    /// Folds in one event.
    pub fn apply(&mut self, record: EventRecord) {
        self.seq = self.seq.max(record.seq);
        let at_ms = record.at_ms;
        let Some(id) = record.event.objective() else {
            return;
        };
        match &record.event {
            Event::ObjectiveSubmitted {
                spec, first_task, ..
            } => self.next_task = self.next_task.max(first_task.0 + spec.tasks.len() as u64),
            Event::TasksSpawned {
                first_task, tasks, ..
            } => self.next_task = self.next_task.max(first_task.0 + tasks.len() as u64),
            Event::PlanRequested { task, .. } => self.next_task = self.next_task.max(task.0 + 1),
            Event::CompensationStarted {
                first_task,
                compensates,
                ..
            } => self.next_task = self.next_task.max(first_task.0 + compensates.len() as u64),
            _ => {}
        }
        if let Event::ObjectiveSubmitted {
            objective,
            spec,
            first_task,
            idempotency_key,
            trace,
        } = record.event
        {
            let model = ObjectiveModel::submitted(
                objective,
                spec,
                first_task,
                idempotency_key,
                trace,
                at_ms,
            );
            self.objectives.insert(objective, model);
            return;
        }
        let Some(model) = self.objectives.get_mut(&id) else {
            // An objective whose submission was pruned (or lies before a snapshot that did not
            // keep it, because it had ended).
            return;
        };
        model.events += 1;
        let ended = model.apply(record.event, at_ms);
        if ended && !self.keep_finished {
            self.objectives.remove(&id);
        }
    }

    /// The unfinished objectives, oldest first.
    pub fn unfinished(&self) -> Vec<&ObjectiveModel> {
        let mut list: Vec<&ObjectiveModel> = self
            .objectives
            .values()
            .filter(|m| !m.status.is_terminal())
            .collect();
        list.sort_by_key(|m| (m.submitted_at_ms, m.id));
        list
    }
}

/// How many events [`fold_after`] reads per query, so a long log is never held in memory at
/// once.
const EVENTS_PER_READ: usize = 20_000;

/// Folds every event after `replay.seq` up to `until` into `replay`; returns how many were
/// read and the last sequence number folded.
pub async fn fold_after(
    store: &dyn EventStore,
    replay: &mut Replay,
    until: u64,
) -> Result<(u64, u64), StoreError> {
    let mut read = 0;
    loop {
        if replay.seq >= until {
            break;
        }
        let page = store.read_after(replay.seq, EVENTS_PER_READ).await?;
        if page.is_empty() {
            break;
        }
        for record in page {
            if record.seq > until {
                return Ok((read, replay.seq));
            }
            read += 1;
            replay.apply(record);
        }
    }
    Ok((read, replay.seq))
}

/// One objective rebuilt from its events alone, with the events (its chain of work).
pub async fn replay_objective(
    store: &dyn EventStore,
    objective: ObjectiveId,
) -> Result<Option<(ObjectiveModel, Vec<EventRecord>)>, StoreError> {
    let events = store.read_objective(objective).await?;
    let mut replay = Replay::keeping_finished();
    for record in &events {
        replay.apply(record.clone());
    }
    Ok(replay
        .objectives
        .remove(&objective)
        .map(|model| (model, events)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
