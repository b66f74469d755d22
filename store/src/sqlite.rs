//! The embedded event log: one SQLite file, `<data_dir>/events.db`, in WAL mode.
//!
//! One writer connection, behind a mutex, does every write (append, snapshot, prune), each in one
//! `BEGIN IMMEDIATE` transaction, so writes are serialized and a failed one leaves nothing
//! behind. A small pool of read-only connections serves reads; WAL lets them run beside the
//! writer without blocking it or being blocked by it.
//!
//! An append is the group-commit path, so it is built for throughput: records are encoded before
//! the writer is locked, and events go in with multi-row `INSERT`s of fixed shapes (1,024 rows,
//! then one statement per binary digit of the remainder), so each statement is prepared once per
//! connection and found again in sqlx's statement cache.
//!
//! The file is stamped with [`APPLICATION_ID`] when it is created. A file that is not a database,
//! that carries another program's id, or that holds tables without our id is refused as
//! [`StoreError::Foreign`] and never changed. The schema is versioned with sqlx migrations
//! (`store/migrations/`); a file that has applied a version this binary does not know is refused
//! as [`StoreError::NewerSchema`]. The SQL is kept to what PostgreSQL also accepts, except the
//! `PRAGMA`s, `INTEGER PRIMARY KEY`/`BLOB` and the `json_extract` backfill in the migrations.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, SqlStr};
use swarm_protocol::{
    AgentId, Event, EventConsumer, EventRecord, ObjectiveId, ObjectiveStatus, PostedEvent,
    ScheduleSpec, TaskId,
};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::{
    DeclaredAgent, DeclaredHook, EventStore, Pruned, Snapshot, StoreError, StoreInfo, StoredEvent,
    StoredObjective, StoredSchedule,
};

/// Stamped in the header of every swarm event log (`PRAGMA application_id`): "SWRM" in ASCII.
const APPLICATION_ID: i64 = 0x5357_524D;

/// The database file inside the data directory.
const DB_FILE: &str = "events.db";
/// The data directory's lock file.
const LOCK_FILE: &str = "LOCK";

/// How long a connection waits for a lock another connection holds before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections. Reads are short and the coordinator issues few at once.
const READERS_MAX: u32 = 4;

/// Snapshots kept: the newest, and the one before in case the newest cannot be decoded.
const SNAPSHOTS_KEPT: i64 = 2;

/// Statement shapes per multi-row statement: shape `k` has `2^k` rows.
const SHAPES: usize = 11;

/// Rows in the largest multi-row statement. At 6 parameters a row this stays far below SQLite's
/// limit of 32,766 bound parameters.
const CHUNK_ROWS_MAX: usize = 1 << (SHAPES - 1);

/// Every schema version this binary knows, oldest first. A released migration is never edited
/// (sqlx refuses a file whose applied migration's checksum changed); a change is a new file.
fn migrations() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "events, counters and the objective index".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0001_events.sql")),
            false,
        ),
        Migration::new(
            2,
            "snapshots, indexes for reading and pruning, event counter".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0002_snapshots.sql")),
            false,
        ),
        Migration::new(
            3,
            "next agent id counter".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0003_next_agent.sql")),
            false,
        ),
        Migration::new(
            4,
            "agents declared through the API".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0004_declared_agents.sql")),
            false,
        ),
        Migration::new(
            5,
            "schedules created through the API".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0005_schedules.sql")),
            false,
        ),
        Migration::new(
            6,
            "events posted for wait tasks".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0006_posted_events.sql")),
            false,
        ),
        Migration::new(
            7,
            "hooks declared through the API".into(),
            MigrationType::Simple,
            SqlStr::from_static(include_str!("../migrations/0007_declared_hooks.sql")),
            false,
        ),
    ]
}

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

/// Takes the data directory's lock, or says which process-wide condition prevents it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io {
            path: path.clone(),
            cause: format!("cannot open the lock file: {e}"),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Io {
            path,
            cause: "another swarm process is using this data directory".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io {
            path,
            cause: format!("cannot lock the data directory: {e}"),
        }),
    }
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
    readers: SqlitePool,
    writer: Mutex<Writer>,
    sql: Statements,
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
    /// Opens (or creates) the log in `options.data_dir`, refusing a file that is not ours or is
    /// newer than this binary, and brings an older schema up to date.
    pub async fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| StoreError::Io {
            path: options.data_dir.clone(),
            cause: format!("cannot create the data directory: {e}"),
        })?;
        let lock = if options.lock {
            Some(lock_dir(&options.data_dir)?)
        } else {
            None
        };
        let path = options.data_dir.join(DB_FILE);
        let known = migrations().iter().map(|m| m.version).max().unwrap_or(0);
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT);

        // Identify the file before anything else touches it: the writer's own options switch it
        // to WAL, which would already change another program's database.
        let found = identify(&path, &base, known).await?;

        let synchronous = if options.synchronous_full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
        let mut writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous);
        if let Some(pages) = options.max_page_count {
            writer_options = writer_options.pragma("max_page_count", pages.to_string());
        }
        let mut conn = writer_options
            .connect()
            .await
            .map_err(|e| db_error(&path, e))?;
        if found == Found::Empty {
            sqlx::query(AssertSqlSafe(format!(
                "PRAGMA application_id = {APPLICATION_ID}"
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| db_error(&path, e))?;
        }
        Migrator::with_migrations(migrations())
            .run(&mut conn)
            .await
            .map_err(|e| migrate_error(&path, e, known))?;

        let readers = SqlitePoolOptions::new()
            .max_connections(READERS_MAX)
            // A local file does not go stale between uses; skip the ping on every acquire.
            .test_before_acquire(false)
            .connect_lazy_with(base.read_only(true));
        debug!(path = %path.display(), schema = known, "event log open");
        Ok(Self {
            path,
            readers,
            writer: Mutex::new(Writer {
                conn,
                options: writer_options,
                settled: true,
            }),
            sql: Statements::new(),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, the writer last so SQLite checkpoints the WAL into the database
    /// file. Dropping the store also closes them, in the background; committed appends are
    /// durable either way.
    pub async fn close(self) -> Result<(), StoreError> {
        self.readers.close().await;
        let writer = self.writer.into_inner();
        writer
            .conn
            .close()
            .await
            .map_err(|e| db_error(&self.path, e))
    }

    async fn read_counters(&self) -> Result<Counters, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT key, value FROM meta")
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        Counters::from_rows(&self.path, rows)
    }

    async fn append_records(&self, records: &[EventRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = Batch::encode(&self.path, records)?;
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(&self.path).await?;
        append_in(conn, &self.path, &self.sql, batch).await?;
        writer.settled = true;
        Ok(())
    }

    async fn read_events(
        &self,
        query: sqlx::query::QueryAs<'_, sqlx::Sqlite, (i64, String), sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = query
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
        rows.into_iter()
            .map(|(seq, body)| decode_event(&self.path, seq, &body))
            .collect()
    }

    async fn save(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let seq = to_i64(&self.path, "snapshot seq", snapshot.seq)?;
        let at_ms = to_i64(&self.path, "snapshot time", snapshot.at_ms)?;
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(&self.path).await?;
        let path = &self.path;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(path, e))?;
        sqlx::query(
            "INSERT INTO snapshots (seq, at_ms, body) VALUES (?, ?, ?) \
             ON CONFLICT (seq) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body",
        )
        .bind(seq)
        .bind(at_ms)
        .bind(snapshot.body.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(path, e))?;
        sqlx::query(
            "DELETE FROM snapshots WHERE seq NOT IN \
             (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
        )
        .bind(SNAPSHOTS_KEPT)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(path, e))?;
        tx.commit().await.map_err(|e| db_error(path, e))?;
        writer.settled = true;
        Ok(())
    }

    async fn prune_ended(&self, ended_before_ms: u64) -> Result<Pruned, StoreError> {
        // A cutoff past the end of time prunes everything that ended.
        let cutoff = i64::try_from(ended_before_ms).unwrap_or(i64::MAX);
        let mut writer = self.writer.lock().await;
        let conn = writer.begin_write(&self.path).await?;
        let path = &self.path;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error(path, e))?;
        // The status list is every terminal `status_name`; a running objective never matches.
        let objective_events = sqlx::query(
            "DELETE FROM events WHERE objective IN (SELECT id FROM objectives \
             WHERE status IN ('succeeded', 'failed', 'cancelled') AND ended_at_ms < ?)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(path, e))?
        .rows_affected();
        let agent_events = sqlx::query("DELETE FROM events WHERE objective IS NULL AND at_ms < ?")
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(path, e))?
            .rows_affected();
        let objectives = sqlx::query(
            "DELETE FROM objectives \
             WHERE status IN ('succeeded', 'failed', 'cancelled') AND ended_at_ms < ?",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(path, e))?
        .rows_affected();
        let events = objective_events + agent_events;
        sqlx::query("UPDATE meta SET value = value - ? WHERE key = 'events'")
            .bind(to_i64(path, "pruned event count", events)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(path, e))?;
        tx.commit().await.map_err(|e| db_error(path, e))?;
        writer.settled = true;
        if objectives > 0 || events > 0 {
            debug!(objectives, events, ended_before_ms, "event log pruned");
        }
        Ok(Pruned { objectives, events })
    }
}

impl EventStore for SqliteStore {
    fn info(&self) -> BoxFuture<'_, Result<StoreInfo, StoreError>> {
        Box::pin(async move {
            let counters = self.read_counters().await?;
            Ok(StoreInfo {
                last_seq: counters.last_seq,
                next_task: counters.next_task,
                next_agent: counters.next_agent,
                events: counters.events,
            })
        })
    }

    fn append<'a>(&'a self, records: &'a [EventRecord]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.append_records(records))
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            // Past the largest storable seq there is nothing to read; a limit past i64 is no
            // limit.
            let Ok(after) = i64::try_from(after) else {
                return Ok(Vec::new());
            };
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            self.read_events(
                sqlx::query_as("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
                    .bind(after)
                    .bind(limit),
            )
            .await
        })
    }

    fn read_objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            self.read_events(
                sqlx::query_as("SELECT seq, body FROM events WHERE objective = ? ORDER BY seq")
                    .bind(objective.to_string()),
            )
            .await
        })
    }

    fn read_objective_range(
        &self,
        objective: ObjectiveId,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>> {
        Box::pin(async move {
            let Ok(after) = i64::try_from(after) else {
                return Ok(Vec::new());
            };
            let upto = i64::try_from(upto).unwrap_or(i64::MAX);
            self.read_events(
                sqlx::query_as(
                    "SELECT seq, body FROM events WHERE objective = ? AND seq > ? AND seq <= ? \
                     ORDER BY seq",
                )
                .bind(objective.to_string())
                .bind(after)
                .bind(upto),
            )
            .await
        })
    }

    fn running_objectives(&self) -> BoxFuture<'_, Result<Vec<ObjectiveId>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT id FROM objectives WHERE status = 'running' ORDER BY submitted_at_ms, id",
            )
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|(id,)| {
                    id.parse().map_err(|e| StoreError::Corrupt {
                        path: self.path.clone(),
                        what: format!("objective id {id:?}"),
                        cause: format!("{e}"),
                    })
                })
                .collect()
        })
    }

    fn objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Option<StoredObjective>, StoreError>> {
        Box::pin(async move {
            let row: Option<ObjectiveColumns> = sqlx::query_as(
                "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
                 FROM objectives WHERE id = ?",
            )
            .bind(objective.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            row.map(|row| decode_objective(&self.path, row)).transpose()
        })
    }

    fn keyed_objectives(&self) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<ObjectiveColumns> = sqlx::query_as(
                "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
                 FROM objectives WHERE idempotency_key IS NOT NULL ORDER BY submitted_at_ms, id",
            )
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|row| decode_objective(&self.path, row))
                .collect()
        })
    }

    fn list_objectives(
        &self,
        status: Option<ObjectiveStatus>,
        after: Option<ObjectiveId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>> {
        Box::pin(async move {
            // Ids are stored as lowercase hyphenated UUIDs, whose text order is the UUID's
            // order, so the primary key serves both the cursor and the ordering. The empty
            // string sorts before every id.
            let after = after.map(|id| id.to_string()).unwrap_or_default();
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows: Vec<ObjectiveColumns> = sqlx::query_as(
                "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
                 FROM objectives WHERE id > ? AND (? IS NULL OR status = ?) \
                 ORDER BY id LIMIT ?",
            )
            .bind(after)
            .bind(status.map(status_name))
            .bind(status.map(status_name))
            .bind(limit)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|row| decode_objective(&self.path, row))
                .collect()
        })
    }

    fn save_snapshot<'a>(
        &'a self,
        snapshot: &'a Snapshot,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.save(snapshot))
    }

    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        Box::pin(async move {
            let row: Option<(i64, i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, at_ms, body FROM snapshots ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&self.readers)
                    .await
                    .map_err(|e| db_error(&self.path, e))?;
            let Some((seq, at_ms, body)) = row else {
                return Ok(None);
            };
            let what = || format!("snapshot {seq}");
            Ok(Some(Snapshot {
                seq: to_u64(&self.path, what, seq)?,
                at_ms: to_u64(&self.path, what, at_ms)?,
                body,
            }))
        })
    }

    fn prune(&self, ended_before_ms: u64) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        Box::pin(self.prune_ended(ended_before_ms))
    }

    fn schedules(&self) -> BoxFuture<'_, Result<Vec<StoredSchedule>, StoreError>> {
        Box::pin(async move {
            type Row = (String, String, bool, i64, i64, Option<i64>, Option<String>);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT name, spec, paused, created_at_ms, changed_at_ms, last_slot_ms, \
                 last_objective FROM schedules ORDER BY name",
            )
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|(name, spec, paused, created, changed, slot, objective)| {
                    let what = || format!("schedule `{name}`");
                    let corrupt = |cause: String| StoreError::Corrupt {
                        path: self.path.clone(),
                        what: what(),
                        cause,
                    };
                    let mut spec: ScheduleSpec =
                        serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
                    spec.paused = paused;
                    let last_fire = match (slot, objective) {
                        (Some(slot), Some(objective)) => Some((
                            to_u64(&self.path, what, slot)?,
                            objective
                                .parse::<ObjectiveId>()
                                .map_err(|e| corrupt(e.to_string()))?,
                        )),
                        _ => None,
                    };
                    Ok(StoredSchedule {
                        spec,
                        created_at_ms: to_u64(&self.path, what, created)?,
                        changed_at_ms: to_u64(&self.path, what, changed)?,
                        last_fire,
                    })
                })
                .collect()
        })
    }

    fn posted_events(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            type Row = (
                String,
                String,
                String,
                i64,
                i64,
                Option<String>,
                Option<String>,
                Option<i64>,
            );
            let now = to_i64(&self.path, "time", now_ms)?;
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, key, payload, received_at_ms, expires_at_ms, idempotency_key, \
                 consumed_objective, consumed_task FROM posted_events \
                 WHERE expires_at_ms > ? ORDER BY received_seq",
            )
            .bind(now)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(
                    |(id, key, payload, received, expires, idem, objective, task)| {
                        let what = || format!("posted event {id}");
                        let corrupt = |cause: String| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: what(),
                            cause,
                        };
                        let consumed_by = match (objective, task) {
                            (Some(objective), Some(task)) => Some(EventConsumer {
                                objective: objective
                                    .parse::<ObjectiveId>()
                                    .map_err(|e| corrupt(e.to_string()))?,
                                task: TaskId(to_u64(&self.path, what, task)?),
                            }),
                            _ => None,
                        };
                        Ok(StoredEvent {
                            event: PostedEvent {
                                id: id
                                    .parse()
                                    .map_err(|e: uuid::Error| corrupt(e.to_string()))?,
                                key,
                                payload: serde_json::from_str(&payload)
                                    .map_err(|e| corrupt(e.to_string()))?,
                                received_at_ms: to_u64(&self.path, what, received)?,
                                expires_at_ms: to_u64(&self.path, what, expires)?,
                                consumed_by,
                            },
                            idempotency_key: idem,
                        })
                    },
                )
                .collect()
        })
    }

    fn declared_hooks(&self) -> BoxFuture<'_, Result<Vec<DeclaredHook>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT name, config FROM declared_hooks ORDER BY name")
                    .fetch_all(&self.readers)
                    .await
                    .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|(name, config)| {
                    let config =
                        serde_json::from_str(&config).map_err(|e| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: format!("declared hook `{name}`"),
                            cause: e.to_string(),
                        })?;
                    Ok(DeclaredHook { name, config })
                })
                .collect()
        })
    }

    fn declared_agents(&self) -> BoxFuture<'_, Result<Vec<DeclaredAgent>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT name, agent, config FROM declared_agents ORDER BY declared_seq",
            )
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error(&self.path, e))?;
            rows.into_iter()
                .map(|(name, agent, config)| {
                    let what = || format!("declared agent `{name}`");
                    let agent = AgentId(to_u64(&self.path, what, agent)?);
                    let config =
                        serde_json::from_str(&config).map_err(|e| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: what(),
                            cause: e.to_string(),
                        })?;
                    Ok(DeclaredAgent {
                        name,
                        agent,
                        config,
                    })
                })
                .collect()
        })
    }
}

/// What [`identify`] found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A new or empty database: ours to stamp and migrate.
    Empty,
    /// A swarm event log at a schema this binary knows.
    Swarm,
}

/// Opens the file without changing it (beyond creating it empty when missing) and decides
/// whether it is ours.
async fn identify(
    path: &Path,
    base: &SqliteConnectOptions,
    known: i64,
) -> Result<Found, StoreError> {
    let mut conn = base
        .clone()
        .create_if_missing(true)
        .connect()
        .await
        .map_err(|e| db_error(path, e))?;
    let found = probe(path, &mut conn, known).await;
    // The probe only read; if closing it fails there is nothing to undo, and the verdict (or
    // the probe's own error) is what the caller needs.
    if let Err(e) = conn.close().await {
        warn!(path = %path.display(), %e, "closing the probe connection failed");
    }
    found
}

async fn probe(path: &Path, conn: &mut SqliteConnection, known: i64) -> Result<Found, StoreError> {
    // The first statement that reads the file is where SQLite notices it is not a database.
    let application_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error(path, e))?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
         ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error(path, e))?;
    match application_id {
        APPLICATION_ID => {}
        0 if tables.is_empty() => return Ok(Found::Empty),
        0 => {
            let mut names = tables
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if tables.len() > 5 {
                names.push_str(", …");
            }
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                cause: format!(
                    "an SQLite database without the swarm application_id, holding tables {names}"
                ),
            });
        }
        other => {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                cause: format!(
                    "an SQLite database with application_id {other:#x} (swarm's is \
                     {APPLICATION_ID:#x})"
                ),
            });
        }
    }
    if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| db_error(path, e))?;
        if let Some(found) = found
            && found > known
        {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found,
                known,
            });
        }
    }
    Ok(Found::Swarm)
}

/// The writer connection and what it takes to replace it.
struct Writer {
    conn: SqliteConnection,
    /// To reconnect when a failed write left the connection inside a transaction.
    options: SqliteConnectOptions,
    /// False from the start of a write until it finished cleanly. A write that failed, or whose
    /// future was dropped halfway, may have left a transaction open (its rollback is queued on
    /// the connection, and may itself fail if SQLite already rolled back); the next write
    /// checks before it begins.
    settled: bool,
}

impl Writer {
    /// The connection, with no transaction left over from an earlier write; marks a write as
    /// begun.
    async fn begin_write(&mut self, path: &Path) -> Result<&mut SqliteConnection, StoreError> {
        if !self.settled {
            // A ping queues behind any rollback a dropped transaction left, so afterwards the
            // transaction depth is what SQLite has.
            let stuck = match self.conn.ping().await {
                Ok(()) => self.conn.is_in_transaction(),
                Err(_) => true,
            };
            if stuck {
                warn!(path = %path.display(), "the writer was left inside a transaction; reconnecting");
                let fresh = self
                    .options
                    .connect()
                    .await
                    .map_err(|e| db_error(path, e))?;
                let stale = std::mem::replace(&mut self.conn, fresh);
                // Closing rolls back whatever the old connection still had open.
                if let Err(e) = stale.close().await {
                    warn!(path = %path.display(), %e, "closing the stale writer failed");
                }
            }
        }
        self.settled = false;
        Ok(&mut self.conn)
    }
}

/// The counters in `meta`.
struct Counters {
    last_seq: u64,
    next_task: u64,
    next_agent: u64,
    events: u64,
}

impl Counters {
    fn from_rows(path: &Path, rows: Vec<(String, i64)>) -> Result<Self, StoreError> {
        let mut last_seq = None;
        let mut next_task = None;
        let mut next_agent = None;
        let mut events = None;
        for (key, value) in rows {
            let slot = match key.as_str() {
                "last_seq" => &mut last_seq,
                "next_task" => &mut next_task,
                "next_agent" => &mut next_agent,
                "events" => &mut events,
                _ => continue,
            };
            *slot = Some(to_u64(path, || format!("counter {key}"), value)?);
        }
        let missing = |what: &str| StoreError::Corrupt {
            path: path.to_owned(),
            what: format!("counter {what}"),
            cause: "missing".into(),
        };
        Ok(Self {
            last_seq: last_seq.ok_or_else(|| missing("last_seq"))?,
            next_task: next_task.ok_or_else(|| missing("next_task"))?,
            next_agent: next_agent.ok_or_else(|| missing("next_agent"))?,
            events: events.ok_or_else(|| missing("events"))?,
        })
    }
}

/// An append, encoded before the writer is locked.
struct Batch {
    first_seq: u64,
    last_seq: u64,
    events: Vec<EventRow>,
    submitted: Vec<ObjectiveRow>,
    ended: Vec<EndRow>,
    /// One past the highest task id the batch allocates (0 if it allocates none).
    next_task: u64,
    /// One past the highest agent id the batch registers (0 if it registers none).
    next_agent: u64,
    /// Changes to the declared agents, in log order (rare: one statement each).
    declared: Vec<Declaration>,
    /// Changes to the schedules, in log order (rare: one statement each).
    schedules: Vec<ScheduleChange>,
    /// Changes to the posted events, in log order.
    posted: Vec<PostedChange>,
    /// Changes to the declared hooks, in log order (rare: one statement each).
    hooks: Vec<HookChange>,
}

/// A change to the `posted_events` index.
enum PostedChange {
    Received {
        id: String,
        key: String,
        payload: String,
        seq: i64,
        at_ms: i64,
        expires_at_ms: i64,
        idempotency_key: Option<String>,
    },
    Consumed {
        id: String,
        objective: String,
        task: i64,
    },
}

/// A change to the `declared_hooks` index.
enum HookChange {
    Declare {
        name: String,
        config: String,
        seq: i64,
    },
    Delete {
        name: String,
    },
}

/// A change to the `schedules` index.
enum ScheduleChange {
    Create {
        name: String,
        spec: String,
        paused: bool,
        seq: i64,
        at_ms: i64,
    },
    SetPaused {
        name: String,
        paused: bool,
        at_ms: i64,
    },
    Delete {
        name: String,
    },
    Fired {
        name: String,
        slot_ms: i64,
        objective: String,
    },
}

/// A change to the `declared_agents` index.
enum Declaration {
    Declare {
        name: String,
        agent: i64,
        config: String,
        seq: i64,
    },
    Undeclare {
        name: String,
    },
}

struct EventRow {
    seq: i64,
    at_ms: i64,
    objective: Option<String>,
    kind: &'static str,
    body: String,
}

struct ObjectiveRow {
    id: String,
    idempotency_key: Option<String>,
    fingerprint: i64,
    status: &'static str,
    submitted_at_ms: i64,
    ended_at_ms: Option<i64>,
}

struct EndRow {
    id: String,
    status: &'static str,
    ended_at_ms: i64,
}

impl Batch {
    /// Encodes `records` (not empty), refusing sequence numbers that are not consecutive.
    fn encode(path: &Path, records: &[EventRecord]) -> Result<Self, StoreError> {
        let mut events = Vec::with_capacity(records.len());
        let mut submitted = Vec::new();
        let mut ended = Vec::new();
        // Where each objective's row is in `submitted` or `ended`, so an objective that ends in
        // the batch that submits it is inserted ended, and one that ends twice is updated once.
        let mut submitted_at: HashMap<ObjectiveId, usize> = HashMap::new();
        let mut ended_at: HashMap<ObjectiveId, usize> = HashMap::new();
        let mut next_task = 0_u64;
        let mut next_agent = 0_u64;
        let mut declared = Vec::new();
        let mut schedules = Vec::new();
        let mut posted = Vec::new();
        let mut hooks = Vec::new();
        let mut previous: Option<u64> = None;
        for record in records {
            if let Some(previous) = previous
                && previous.checked_add(1) != Some(record.seq)
            {
                return Err(out_of_order(
                    path,
                    format!("seq {} follows seq {previous} within the batch", record.seq),
                ));
            }
            previous = Some(record.seq);
            let seq = to_i64(path, "seq", record.seq)?;
            let at_ms = to_i64(path, "event time", record.at_ms)?;
            let body = serde_json::to_string(record).map_err(|e| StoreError::Io {
                path: path.to_owned(),
                cause: format!("event {} could not be encoded: {e}", record.seq),
            })?;
            let terminal = match &record.event {
                Event::ObjectiveSubmitted {
                    objective,
                    spec,
                    first_task,
                    idempotency_key,
                } => {
                    next_task = next_task.max(first_task.0.saturating_add(spec.tasks.len() as u64));
                    submitted_at.insert(*objective, submitted.len());
                    submitted.push(ObjectiveRow {
                        id: objective.to_string(),
                        idempotency_key: idempotency_key.clone(),
                        // Stored bit for bit: SQL has no unsigned 64-bit integer. Only a keyed
                        // submit is ever compared with it (it costs a serialization).
                        fingerprint: if idempotency_key.is_some() {
                            spec.fingerprint() as i64
                        } else {
                            0
                        },
                        status: status_name(ObjectiveStatus::Running),
                        submitted_at_ms: at_ms,
                        ended_at_ms: None,
                    });
                    None
                }
                Event::TasksSpawned {
                    first_task, tasks, ..
                } => {
                    next_task = next_task.max(first_task.0.saturating_add(tasks.len() as u64));
                    None
                }
                Event::PlanRequested { task, .. } => {
                    next_task = next_task.max(task.0.saturating_add(1));
                    None
                }
                Event::CompensationStarted {
                    first_task,
                    compensates,
                    ..
                } => {
                    next_task =
                        next_task.max(first_task.0.saturating_add(compensates.len() as u64));
                    None
                }
                Event::AgentRegistered { descriptor } => {
                    next_agent = next_agent.max(descriptor.id.0.saturating_add(1));
                    None
                }
                Event::AgentDeclared {
                    agent,
                    name,
                    config,
                } => {
                    declared.push(Declaration::Declare {
                        name: name.clone(),
                        agent: to_i64(path, "agent id", agent.0)?,
                        config: config.to_string(),
                        seq,
                    });
                    None
                }
                Event::AgentUndeclared { name, .. } => {
                    declared.push(Declaration::Undeclare { name: name.clone() });
                    None
                }
                Event::ScheduleCreated { spec } => {
                    let mut stored = spec.clone();
                    stored.paused = false;
                    schedules.push(ScheduleChange::Create {
                        name: spec.name.clone(),
                        spec: serde_json::to_string(&stored).map_err(|e| StoreError::Io {
                            path: path.to_owned(),
                            cause: format!("event {} could not be encoded: {e}", record.seq),
                        })?,
                        paused: spec.paused,
                        seq,
                        at_ms,
                    });
                    None
                }
                Event::SchedulePaused { schedule } | Event::ScheduleResumed { schedule } => {
                    schedules.push(ScheduleChange::SetPaused {
                        name: schedule.clone(),
                        paused: matches!(record.event, Event::SchedulePaused { .. }),
                        at_ms,
                    });
                    None
                }
                Event::ScheduleDeleted { schedule } => {
                    schedules.push(ScheduleChange::Delete {
                        name: schedule.clone(),
                    });
                    None
                }
                Event::ScheduleFired {
                    schedule,
                    slot_ms,
                    objective,
                } => {
                    schedules.push(ScheduleChange::Fired {
                        name: schedule.clone(),
                        slot_ms: to_i64(path, "slot time", *slot_ms)?,
                        objective: objective.to_string(),
                    });
                    None
                }
                Event::EventReceived {
                    id,
                    key,
                    payload,
                    expires_at_ms,
                    idempotency_key,
                } => {
                    posted.push(PostedChange::Received {
                        id: id.to_string(),
                        key: key.clone(),
                        payload: payload.to_string(),
                        seq,
                        at_ms,
                        expires_at_ms: to_i64(path, "expiry time", *expires_at_ms)?,
                        idempotency_key: idempotency_key.clone(),
                    });
                    None
                }
                Event::WaitSatisfied {
                    objective,
                    task,
                    event,
                    ..
                } => {
                    posted.push(PostedChange::Consumed {
                        id: event.to_string(),
                        objective: objective.to_string(),
                        task: to_i64(path, "task id", task.0)?,
                    });
                    None
                }
                Event::HookDeclared { name, config } => {
                    hooks.push(HookChange::Declare {
                        name: name.clone(),
                        config: config.to_string(),
                        seq,
                    });
                    None
                }
                Event::HookDeleted { name } => {
                    hooks.push(HookChange::Delete { name: name.clone() });
                    None
                }
                Event::ObjectiveSucceeded { objective } => {
                    Some((*objective, ObjectiveStatus::Succeeded))
                }
                Event::ObjectiveFailed { objective, .. } => {
                    Some((*objective, ObjectiveStatus::Failed))
                }
                Event::ObjectiveCancelled { objective } => {
                    Some((*objective, ObjectiveStatus::Cancelled))
                }
                _ => None,
            };
            if let Some((objective, status)) = terminal {
                let status = status_name(status);
                if let Some(&i) = submitted_at.get(&objective) {
                    submitted[i].status = status;
                    submitted[i].ended_at_ms = Some(at_ms);
                } else if let Some(&i) = ended_at.get(&objective) {
                    ended[i] = EndRow {
                        id: objective.to_string(),
                        status,
                        ended_at_ms: at_ms,
                    };
                } else {
                    ended_at.insert(objective, ended.len());
                    ended.push(EndRow {
                        id: objective.to_string(),
                        status,
                        ended_at_ms: at_ms,
                    });
                }
            }
            events.push(EventRow {
                seq,
                at_ms,
                objective: record.event.objective().map(|o| o.to_string()),
                kind: kind(&record.event),
                body,
            });
        }
        Ok(Self {
            first_seq: records.first().map_or(0, |r| r.seq),
            last_seq: previous.unwrap_or(0),
            events,
            submitted,
            ended,
            next_task,
            next_agent,
            declared,
            schedules,
            posted,
            hooks,
        })
    }
}

/// Writes `batch` in one transaction on the writer connection.
async fn append_in(
    conn: &mut SqliteConnection,
    path: &Path,
    sql: &Statements,
    batch: Batch,
) -> Result<(), StoreError> {
    let err = |e| db_error(path, e);
    // IMMEDIATE takes the write lock up front, so the counters read below cannot change before
    // the inserts.
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT key, value FROM meta")
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
    let counters = Counters::from_rows(path, rows)?;
    if counters.last_seq.checked_add(1) != Some(batch.first_seq) {
        return Err(out_of_order(
            path,
            format!(
                "the batch starts at seq {} but the log ends at seq {}",
                batch.first_seq, counters.last_seq
            ),
        ));
    }

    let count = batch.events.len();
    let mut rows = batch.events.into_iter();
    for shape in shapes(count) {
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(&sql.events[shape])));
        for row in rows.by_ref().take(1 << shape) {
            query = query
                .bind(row.seq)
                .bind(row.at_ms)
                .bind(row.objective)
                .bind(row.kind)
                .bind(row.body);
        }
        query.execute(&mut *tx).await.map_err(err)?;
    }

    let mut rows = batch.submitted.into_iter();
    for shape in shapes(rows.len()) {
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(&sql.objectives[shape])));
        for row in rows.by_ref().take(1 << shape) {
            query = query
                .bind(row.id)
                .bind(row.idempotency_key)
                .bind(row.fingerprint)
                .bind(row.status)
                .bind(row.submitted_at_ms)
                .bind(row.ended_at_ms);
        }
        query.execute(&mut *tx).await.map_err(err)?;
    }

    let mut rows = batch.ended.into_iter();
    for shape in shapes(rows.len()) {
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(&sql.ends[shape])));
        for row in rows.by_ref().take(1 << shape) {
            query = query.bind(row.id).bind(row.status).bind(row.ended_at_ms);
        }
        query.execute(&mut *tx).await.map_err(err)?;
    }

    for declaration in batch.declared {
        let query = match declaration {
            // A name declared again (the agent registered anew at a restart) keeps its place.
            Declaration::Declare {
                name,
                agent,
                config,
                seq,
            } => sqlx::query(
                "INSERT INTO declared_agents (name, agent, config, declared_seq) \
                 VALUES (?, ?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET agent = excluded.agent, config = excluded.config",
            )
            .bind(name)
            .bind(agent)
            .bind(config)
            .bind(seq),
            Declaration::Undeclare { name } => {
                sqlx::query("DELETE FROM declared_agents WHERE name = ?").bind(name)
            }
        };
        query.execute(&mut *tx).await.map_err(err)?;
    }

    for change in batch.schedules {
        let query = match change {
            ScheduleChange::Create {
                name,
                spec,
                paused,
                seq,
                at_ms,
            } => sqlx::query(
                "INSERT INTO schedules \
                 (name, spec, paused, created_seq, created_at_ms, changed_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
                 paused = excluded.paused, created_seq = excluded.created_seq, \
                 created_at_ms = excluded.created_at_ms, changed_at_ms = excluded.changed_at_ms, \
                 last_slot_ms = NULL, last_objective = NULL",
            )
            .bind(name)
            .bind(spec)
            .bind(paused)
            .bind(seq)
            .bind(at_ms)
            .bind(at_ms),
            // A pause keeps `changed_at_ms`: only a resume moves the time slots count from.
            ScheduleChange::SetPaused {
                name,
                paused,
                at_ms,
            } => sqlx::query(
                "UPDATE schedules SET paused = ?, \
                 changed_at_ms = CASE WHEN ? THEN changed_at_ms ELSE ? END WHERE name = ?",
            )
            .bind(paused)
            .bind(paused)
            .bind(at_ms)
            .bind(name),
            ScheduleChange::Delete { name } => {
                sqlx::query("DELETE FROM schedules WHERE name = ?").bind(name)
            }
            ScheduleChange::Fired {
                name,
                slot_ms,
                objective,
            } => sqlx::query(
                "UPDATE schedules SET last_slot_ms = ?, last_objective = ? \
                 WHERE name = ? AND (last_slot_ms IS NULL OR last_slot_ms < ?)",
            )
            .bind(slot_ms)
            .bind(objective)
            .bind(name)
            .bind(slot_ms),
        };
        query.execute(&mut *tx).await.map_err(err)?;
    }

    for change in batch.posted {
        match change {
            PostedChange::Received {
                id,
                key,
                payload,
                seq,
                at_ms,
                expires_at_ms,
                idempotency_key,
            } => {
                sqlx::query("DELETE FROM posted_events WHERE expires_at_ms <= ?")
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                sqlx::query(
                    "INSERT INTO posted_events (id, key, payload, received_seq, received_at_ms, \
                     expires_at_ms, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(key)
                .bind(payload)
                .bind(seq)
                .bind(at_ms)
                .bind(expires_at_ms)
                .bind(idempotency_key)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
            PostedChange::Consumed {
                id,
                objective,
                task,
            } => {
                sqlx::query(
                    "UPDATE posted_events SET consumed_objective = ?, consumed_task = ? \
                     WHERE id = ?",
                )
                .bind(objective)
                .bind(task)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
        }
    }

    for change in batch.hooks {
        let query = match change {
            HookChange::Declare { name, config, seq } => sqlx::query(
                "INSERT INTO declared_hooks (name, config, declared_seq) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config, \
                 declared_seq = excluded.declared_seq",
            )
            .bind(name)
            .bind(config)
            .bind(seq),
            HookChange::Delete { name } => {
                sqlx::query("DELETE FROM declared_hooks WHERE name = ?").bind(name)
            }
        };
        query.execute(&mut *tx).await.map_err(err)?;
    }

    sqlx::query(
        "UPDATE meta SET value = CASE key \
         WHEN 'last_seq' THEN ? WHEN 'next_task' THEN ? WHEN 'next_agent' THEN ? \
         ELSE value + ? END \
         WHERE key IN ('last_seq', 'next_task', 'next_agent', 'events')",
    )
    .bind(to_i64(path, "seq", batch.last_seq)?)
    .bind(to_i64(
        path,
        "task id",
        counters.next_task.max(batch.next_task),
    )?)
    .bind(to_i64(
        path,
        "agent id",
        counters.next_agent.max(batch.next_agent),
    )?)
    .bind(to_i64(path, "event count", count as u64)?)
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// The multi-row statements of an append, one per shape (index `k` has `2^k` rows), built once.
struct Statements {
    events: Vec<Arc<str>>,
    objectives: Vec<Arc<str>>,
    ends: Vec<Arc<str>>,
}

impl Statements {
    fn new() -> Self {
        let build = |head: &str, tuple: &str, tail: &str| -> Vec<Arc<str>> {
            (0..SHAPES)
                .map(|shape| {
                    let rows = 1_usize << shape;
                    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2));
                    sql.push_str(head);
                    for row in 0..rows {
                        if row > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(tuple);
                    }
                    sql.push_str(tail);
                    Arc::from(sql)
                })
                .collect()
        };
        Self {
            events: build(
                "INSERT INTO events (seq, at_ms, objective, kind, body) VALUES ",
                "(?, ?, ?, ?, ?)",
                "",
            ),
            objectives: build(
                "INSERT INTO objectives \
                 (id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms) VALUES ",
                "(?, ?, ?, ?, ?, ?)",
                "",
            ),
            // VALUES names its columns column1, column2, … in SQLite and PostgreSQL alike.
            ends: build(
                "UPDATE objectives SET status = v.column2, ended_at_ms = v.column3 FROM (VALUES ",
                "(?, ?, ?)",
                ") AS v WHERE objectives.id = v.column1",
            ),
        }
    }
}

/// The statement shapes that cover `rows` rows: full chunks first, then one statement per binary
/// digit of the remainder, largest first.
fn shapes(rows: usize) -> impl Iterator<Item = usize> {
    let rest = rows % CHUNK_ROWS_MAX;
    std::iter::repeat_n(SHAPES - 1, rows / CHUNK_ROWS_MAX)
        .chain((0..SHAPES - 1).rev().filter(move |k| rest & (1 << k) != 0))
}

type ObjectiveColumns = (String, Option<String>, i64, String, i64, Option<i64>);

fn decode_objective(path: &Path, row: ObjectiveColumns) -> Result<StoredObjective, StoreError> {
    let (id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms) = row;
    let what = || format!("objective {id}");
    let corrupt = |cause: String| StoreError::Corrupt {
        path: path.to_owned(),
        what: what(),
        cause,
    };
    Ok(StoredObjective {
        id: ObjectiveId::from_str(&id).map_err(|e| corrupt(e.to_string()))?,
        idempotency_key,
        // The bits stored by `Batch::encode`.
        fingerprint: fingerprint as u64,
        status: status_from_name(&status)
            .ok_or_else(|| corrupt(format!("unknown status `{status}`")))?,
        submitted_at_ms: to_u64(path, what, submitted_at_ms)?,
        ended_at_ms: ended_at_ms.map(|t| to_u64(path, what, t)).transpose()?,
    })
}

fn decode_event(path: &Path, seq: i64, body: &str) -> Result<EventRecord, StoreError> {
    let corrupt = |cause: String| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("event {seq}"),
        cause,
    };
    let record: EventRecord = serde_json::from_str(body).map_err(|e| corrupt(e.to_string()))?;
    if i64::try_from(record.seq) != Ok(seq) {
        return Err(corrupt(format!("its body says seq {}", record.seq)));
    }
    Ok(record)
}

/// The event's `type` tag, as serde writes it (a test checks that they agree).
fn kind(event: &Event) -> &'static str {
    match event {
        Event::ObjectiveSubmitted { .. } => "objective_submitted",
        Event::TaskReady { .. } => "task_ready",
        Event::TaskStarted { .. } => "task_started",
        Event::TaskSucceeded { .. } => "task_succeeded",
        Event::TaskFailed { .. } => "task_failed",
        Event::AttemptLost { .. } => "attempt_lost",
        Event::TaskInReview { .. } => "task_in_review",
        Event::TaskApproved { .. } => "task_approved",
        Event::TaskRejected { .. } => "task_rejected",
        Event::TasksSpawned { .. } => "tasks_spawned",
        Event::PlanRequested { .. } => "plan_requested",
        Event::PlanRejected { .. } => "plan_rejected",
        Event::CompensationStarted { .. } => "compensation_started",
        Event::TaskCancelled { .. } => "task_cancelled",
        Event::ObjectiveSucceeded { .. } => "objective_succeeded",
        Event::ObjectiveFailed { .. } => "objective_failed",
        Event::ObjectiveCancelled { .. } => "objective_cancelled",
        Event::AgentRegistered { .. } => "agent_registered",
        Event::AgentHealthChanged { .. } => "agent_health_changed",
        Event::AgentRestarted { .. } => "agent_restarted",
        Event::AgentDeregistered { .. } => "agent_deregistered",
        Event::AgentDeclared { .. } => "agent_declared",
        Event::AgentUndeclared { .. } => "agent_undeclared",
        Event::ScheduleCreated { .. } => "schedule_created",
        Event::SchedulePaused { .. } => "schedule_paused",
        Event::ScheduleResumed { .. } => "schedule_resumed",
        Event::ScheduleDeleted { .. } => "schedule_deleted",
        Event::ScheduleFired { .. } => "schedule_fired",
        Event::ScheduleSkipped { .. } => "schedule_skipped",
        Event::ScheduleFireFailed { .. } => "schedule_fire_failed",
        Event::TaskWaiting { .. } => "task_waiting",
        Event::WaitSatisfied { .. } => "wait_satisfied",
        Event::EventReceived { .. } => "event_received",
        Event::HookDeclared { .. } => "hook_declared",
        Event::HookDeleted { .. } => "hook_deleted",
    }
}

/// The stored form of a status, as serde writes it (a test checks that they agree).
fn status_name(status: ObjectiveStatus) -> &'static str {
    match status {
        ObjectiveStatus::Running => "running",
        // Never stored: the index keeps a compensating objective as running until it ends.
        ObjectiveStatus::Compensating => "compensating",
        ObjectiveStatus::Succeeded => "succeeded",
        ObjectiveStatus::Failed => "failed",
        ObjectiveStatus::Cancelled => "cancelled",
    }
}

fn status_from_name(name: &str) -> Option<ObjectiveStatus> {
    [
        ObjectiveStatus::Running,
        ObjectiveStatus::Succeeded,
        ObjectiveStatus::Failed,
        ObjectiveStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| status_name(*s) == name)
}

fn out_of_order(path: &Path, detail: String) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        cause: format!("append out of order: {detail}; nothing was written"),
    }
}

fn to_i64(path: &Path, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Io {
        path: path.to_owned(),
        cause: format!("{what} {value} is beyond the log's 63-bit integers"),
    })
}

fn to_u64(path: &Path, what: impl Fn() -> String, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        path: path.to_owned(),
        what: what(),
        cause: format!("negative value {value}"),
    })
}

/// SQLite's primary result codes that get their own variant (the low byte of an extended code).
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_NOTADB: i32 = 26;

fn db_error(path: &Path, error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        let cause = db.message().to_owned();
        match code & 0xff {
            SQLITE_FULL => {
                return StoreError::Full {
                    path: path.to_owned(),
                    cause,
                };
            }
            SQLITE_NOTADB | SQLITE_CORRUPT => {
                return StoreError::Foreign {
                    path: path.to_owned(),
                    cause,
                };
            }
            _ => {}
        }
    }
    StoreError::Io {
        path: path.to_owned(),
        cause: error.to_string(),
    }
}

fn migrate_error(path: &Path, error: MigrateError, known: i64) -> StoreError {
    match error {
        MigrateError::VersionMissing(found) if found > known => StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            known,
        },
        MigrateError::Execute(e) => db_error(path, e),
        MigrateError::ExecuteMigration(e, version) => match db_error(path, e) {
            StoreError::Io { path, cause } => StoreError::Io {
                path,
                cause: format!("applying schema version {version}: {cause}"),
            },
            other => other,
        },
        other => StoreError::Io {
            path: path.to_owned(),
            cause: format!("migrating the schema: {other}"),
        },
    }
}

#[cfg(test)]
mod tests;
