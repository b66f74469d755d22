//! The append: a batch's rows in the log and its changes to the indexes, in one transaction.
//!
//! The records are turned into log rows ([`LogBatch`]) and index changes ([`IndexChanges`])
//! before the writer is locked, so the lock is held only for SQL. `BEGIN IMMEDIATE` takes
//! SQLite's write lock up front, so the counters read at the start cannot change before the
//! commit; a batch that does not follow the log's last seq is refused there. Any error rolls the
//! whole transaction back: the log, the indexes and the counters move together or not at all.

use std::path::Path;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use swarm_protocol::EventRecord;

use super::SqliteStore;
use super::apply::apply_index_changes;
use super::error::store_error;
use super::multirow::{MultiRowStatements, execute_multirow};
use super::read::read_counters;
use crate::StoreError;
use crate::log::LogBatch;
use crate::projection::IndexChanges;

impl SqliteStore {
    /// Appends `records` (see [`crate::EventStore::append`]).
    pub(super) async fn append_batch(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let log = LogBatch::encode(records).map_err(|e| e.at(&self.path))?;
        let changes = IndexChanges::of(records).map_err(|e| e.at(&self.path))?;
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(&self.path).await?;
        write_batch(conn, &self.path, &self.statements, log, changes).await?;
        writer.finish_write();
        Ok(())
    }
}

/// Writes `log` and `changes` in one transaction on the writer connection.
async fn write_batch(
    conn: &mut SqliteConnection,
    path: &Path,
    statements: &MultiRowStatements,
    log: LogBatch,
    changes: IndexChanges,
) -> Result<(), StoreError> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| store_error(path, e))?;
    let before = read_counters(&mut *tx, path).await?;
    log.check_follows(before.last_seq).map_err(|e| e.at(path))?;
    execute_multirow(&mut tx, &statements.events, log.rows, |query, row| {
        query
            .bind(row.seq)
            .bind(row.at_ms)
            .bind(row.objective)
            .bind(row.kind)
            .bind(row.body)
    })
    .await
    .map_err(|e| store_error(path, e))?;
    apply_index_changes(&mut tx, path, statements, changes, before).await?;
    tx.commit().await.map_err(|e| store_error(path, e))
}
