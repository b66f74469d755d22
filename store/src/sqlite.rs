//! The embedded event log: one SQLite file, `<data_dir>/events.db`, in WAL mode.
//!
//! One writer connection, behind a mutex, does every write (append, snapshot, prune), each in
//! one `BEGIN IMMEDIATE` transaction, so writes are serialized and a failed one leaves nothing
//! behind. A small pool of read-only connections serves reads; WAL lets them run beside the
//! writer without blocking it or being blocked by it.
//!
//! What a batch writes is decided by the backend-neutral [`crate::log`] (the rows of the log)
//! and [`crate::projection`] (the changes to the indexes); this backend only says it in SQL:
//! - `open.rs`: the data directory's lock, identifying the file, opening the connections;
//! - `migrate.rs`: the schema versions (`store/migrations/`);
//! - `writer.rs`: the writer connection, replaced when a failed write left it stuck;
//! - `append.rs`: the append's transaction (log rows, then index changes, then counters);
//! - `multirow.rs`: the multi-row statements of fixed shapes the append's bulk rows use;
//! - `apply.rs`: the index changes as SQL;
//! - `read.rs`: the reads, each row checked as it is decoded;
//! - `retention.rs`: snapshots and pruning;
//! - `error.rs`: SQLite's errors as [`StoreError`]s naming the file.
//!
//! The SQL is kept to what PostgreSQL also accepts, except the `PRAGMA`s, `INTEGER PRIMARY
//! KEY`/`BLOB` and the `json_extract` backfill in the migrations.

mod append;
mod apply;
mod error;
mod migrate;
mod multirow;
mod open;
mod read;
mod retention;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use sqlx::sqlite::SqlitePool;
use swarm_protocol::{EventRecord, ObjectiveId, ObjectiveStatus};
use tokio::sync::Mutex;

use self::multirow::MultiRowStatements;
use self::writer::Writer;
use crate::{
    DeclaredAgent, DeclaredHook, EventStore, KeyLookup, Pruned, Snapshot, StoreError, StoreInfo,
    StoredEvent, StoredObjective, StoredSchedule,
};

/// Where [`SqliteStore`] keeps its file and how hard it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The directory that holds `events.db`; created if missing.
    pub data_dir: PathBuf,
    /// `PRAGMA synchronous = FULL` (the default): a committed append survives a power loss.
    /// `false` selects `NORMAL`: commits survive a crash of the process, but a power loss may
    /// undo the last few.
    pub synchronous_full: bool,
    /// Caps the file at this many pages (`PRAGMA max_page_count`; a page is 4 KiB) so tests can
    /// fill the "disk". `None`, the default, leaves SQLite's own limit.
    pub max_page_count: Option<u64>,
    /// Take the data directory's lock (`LOCK`, an advisory file lock the OS releases when the
    /// process dies), so that no two processes write one log. The default; readers that only
    /// look (`swarm replay`) leave it off.
    pub lock: bool,
}

impl SqliteOptions {
    /// A log in `data_dir`, synced fully, without a size cap.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            synchronous_full: true,
            max_page_count: None,
            lock: true,
        }
    }
}

/// The embedded [`EventStore`]: an SQLite file with one writer connection and a small pool of
/// readers.
pub struct SqliteStore {
    /// The database file, named in every error.
    path: PathBuf,
    /// Read-only connections.
    readers: SqlitePool,
    /// The one connection that writes.
    writer: Mutex<Writer>,
    /// The append's multi-row statements, built once.
    statements: MultiRowStatements,
    /// The data directory's lock, held while the store is open.
    _lock: Option<std::fs::File>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, the writer last so SQLite checkpoints the WAL into the database
    /// file. Dropping the store also closes them, in the background; committed appends are
    /// durable either way.
    pub async fn close(self) -> Result<(), StoreError> {
        self.readers.close().await;
        self.writer.into_inner().close(&self.path).await
    }
}

impl EventStore for SqliteStore {
    fn info(&self) -> BoxFuture<'_, Result<StoreInfo, StoreError>> {
        Box::pin(self.load_info())
    }

    fn append<'a>(&'a self, records: &'a [EventRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.append_batch(records))
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(self.load_events_after(after, limit))
    }

    fn read_objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(self.load_objective_events(objective))
    }

    fn read_objective_range(
        &self,
        objective: ObjectiveId,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(self.load_objective_range(objective, after, upto))
    }

    fn running_objectives(&self) -> BoxFuture<'_, Result<Vec<ObjectiveId>, StoreError>> {
        Box::pin(self.load_running_objectives())
    }

    fn objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Option<StoredObjective>, StoreError>> {
        Box::pin(self.load_objective(objective))
    }

    fn keyed_objectives(&self) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>> {
        Box::pin(self.load_keyed_objectives())
    }

    fn objective_by_key<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<KeyLookup, StoreError>> {
        Box::pin(self.load_objective_by_key(key))
    }

    fn list_objectives(
        &self,
        status: Option<ObjectiveStatus>,
        after: Option<ObjectiveId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>> {
        Box::pin(self.load_objective_page(status, after, limit))
    }

    fn save_snapshot<'a>(
        &'a self,
        snapshot: &'a Snapshot,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.store_snapshot(snapshot))
    }

    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        Box::pin(self.load_latest_snapshot())
    }

    fn prune(&self, ended_before_ms: u64) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        Box::pin(self.prune_ended(ended_before_ms))
    }

    fn declared_agents(&self) -> BoxFuture<'_, Result<Vec<DeclaredAgent>, StoreError>> {
        Box::pin(self.load_declared_agents())
    }

    fn schedules(&self) -> BoxFuture<'_, Result<Vec<StoredSchedule>, StoreError>> {
        Box::pin(self.load_schedules())
    }

    fn posted_events(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.load_posted_events(now_ms))
    }

    fn declared_hooks(&self) -> BoxFuture<'_, Result<Vec<DeclaredHook>, StoreError>> {
        Box::pin(self.load_declared_hooks())
    }
}

#[cfg(test)]
mod tests;
