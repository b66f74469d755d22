//! What a restarting coordinator reads: the newest snapshot, the events of every unfinished
//! objective after it, and the log's counters.
//!
//! Finished objectives are not read at all, so restart time follows the unfinished work, not
//! the length of the history.

use swarm_protocol::ObjectiveId;
use swarm_store::{EventStore, StoreError, StoredEvent};

use super::Replay;

/// What a restarting coordinator rebuilds from: the fold of the log and its counters.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The fold (unfinished objectives only).
    pub replay: Replay,
    /// The last committed sequence number.
    pub last_seq: u64,
    /// The next task id to hand out.
    pub next_task: u64,
    /// The next agent id to hand out: past every agent the log registered, so an id names one
    /// agent across restarts.
    pub next_agent: u64,
    /// Idempotency keys of every objective still in the log: key, objective, fingerprint.
    pub keys: Vec<(String, ObjectiveId, u64)>,
    /// Events read after the snapshot.
    pub events_read: u64,
    /// The sequence number of the snapshot recovery started from (0 when none).
    pub snapshot_seq: u64,
    /// The posted events not yet expired (consumed ones too: their idempotency keys still
    /// answer), in the order they were received.
    pub posted: Vec<StoredEvent>,
}

/// Reads the log as a restart does and folds it: every objective the index holds as
/// unfinished, from the newest snapshot's model of it plus its events after the snapshot (or
/// from all its events when the snapshot does not have it).
pub async fn recover(store: &dyn EventStore) -> Result<Recovered, StoreError> {
    let info = store.info().await?;
    let (replay, snapshot_seq, events_read) = fold_running(store, info.last_seq).await?;
    let keys = store
        .keyed_objectives()
        .await?
        .into_iter()
        .filter_map(|o| o.idempotency_key.map(|k| (k, o.id, o.fingerprint)))
        .collect();
    let posted = store.posted_events(crate::journal::now_ms()).await?;
    Ok(Recovered {
        posted,
        next_task: info.next_task.max(replay.next_task).max(1),
        next_agent: info.next_agent.max(1),
        last_seq: info.last_seq,
        replay,
        keys,
        events_read,
        snapshot_seq,
    })
}

/// The fold, as of event `upto`, of every objective the index holds as unfinished; returns it
/// with the snapshot it started from and the number of events read. Every event at or below
/// `upto` must be committed.
pub async fn fold_running(
    store: &dyn EventStore,
    upto: u64,
) -> Result<(Replay, u64, u64), StoreError> {
    let (mut snapshot, snapshot_seq) = latest_snapshot(store).await?;
    let mut replay = Replay {
        next_task: snapshot.next_task,
        ..Replay::default()
    };
    let mut read = 0;
    for id in store.running_objectives().await? {
        let after = match snapshot.objectives.remove(&id) {
            Some(model) => {
                replay.objectives.insert(id, model);
                snapshot_seq
            }
            None => 0,
        };
        match store.read_objective_range(id, after, upto).await {
            Ok(records) => {
                for record in records {
                    read += 1;
                    replay.apply(record);
                }
            }
            // One objective's undecodable record leaves that objective out, not the log.
            Err(err @ StoreError::Corrupt { .. }) => {
                tracing::error!(objective = %id, %err, "an unfinished objective cannot be read back; it is left out");
                replay.objectives.remove(&id);
                replay.unreadable.push((id, err.to_string()));
            }
            Err(err) => return Err(err),
        }
    }
    replay.seq = upto;
    Ok((replay, snapshot_seq, read))
}

/// The newest snapshot, decoded, with its sequence number (an empty fold at 0 when there is
/// none).
async fn latest_snapshot(store: &dyn EventStore) -> Result<(Replay, u64), StoreError> {
    match store.latest_snapshot().await? {
        Some(snapshot) => match serde_json::from_slice::<Replay>(&snapshot.body) {
            Ok(replay) => Ok((replay, snapshot.seq)),
            // An undecodable snapshot is only a shortcut lost: fold from the events instead.
            Err(err) => {
                tracing::error!(seq = snapshot.seq, %err, "the snapshot cannot be read back; folding the log from its start");
                Ok((Replay::default(), 0))
            }
        },
        None => Ok((Replay::default(), 0)),
    }
}
