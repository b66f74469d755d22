//! What the store keeps and drops: snapshots of the recovery state, and pruning of finished
//! objectives and old agent events.
//!
//! Both are writes: each runs in one `BEGIN IMMEDIATE` transaction on the writer connection, so
//! a failed one leaves nothing behind. Pruning keeps the counters (`next_task`, `next_agent`
//! only grow) and every index but the objective one: the declared agents, the schedules, the
//! posted events and the declared hooks are kept exactly so that pruning their events loses
//! nothing.

use sqlx::Connection;
use tracing::debug;

use super::SqliteStore;
use super::error::{sql_int, store_error};
use crate::{Pruned, Snapshot, StoreError};

/// Snapshots kept: the newest, and the one before in case the newest cannot be decoded.
const SNAPSHOTS_KEPT: i64 = 2;

impl SqliteStore {
    /// See [`crate::EventStore::save_snapshot`].
    pub(super) async fn store_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let path = &self.path;
        let err = |e| store_error(path, e);
        let seq = sql_int(path, "snapshot seq", snapshot.seq)?;
        let at_ms = sql_int(path, "snapshot time", snapshot.at_ms)?;
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(path).await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        sqlx::query(
            "INSERT INTO snapshots (seq, at_ms, body) VALUES (?, ?, ?) \
             ON CONFLICT (seq) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body",
        )
        .bind(seq)
        .bind(at_ms)
        .bind(snapshot.body.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query(
            "DELETE FROM snapshots WHERE seq NOT IN \
             (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
        )
        .bind(SNAPSHOTS_KEPT)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        writer.finish_write();
        Ok(())
    }

    /// See [`crate::EventStore::prune`].
    pub(super) async fn prune_ended(&self, ended_before_ms: u64) -> Result<Pruned, StoreError> {
        let path = &self.path;
        let err = |e| store_error(path, e);
        // A cutoff past the end of time prunes everything that ended.
        let cutoff = i64::try_from(ended_before_ms).unwrap_or(i64::MAX);
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(path).await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        // The status list is every terminal `status_name`; a running objective never matches.
        let objective_events = sqlx::query(
            "DELETE FROM events WHERE objective IN (SELECT id FROM objectives \
             WHERE status IN ('succeeded', 'failed', 'cancelled') AND ended_at_ms < ?)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        let agent_events = sqlx::query("DELETE FROM events WHERE objective IS NULL AND at_ms < ?")
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
        let objectives = sqlx::query(
            "DELETE FROM objectives \
             WHERE status IN ('succeeded', 'failed', 'cancelled') AND ended_at_ms < ?",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(err)?
        .rows_affected();
        let events = objective_events + agent_events;
        sqlx::query("UPDATE meta SET value = value - ? WHERE key = 'events'")
            .bind(sql_int(path, "pruned event count", events)?)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        writer.finish_write();
        if objectives > 0 || events > 0 {
            debug!(objectives, events, ended_before_ms, "event log pruned");
        }
        Ok(Pruned { objectives, events })
    }
}
