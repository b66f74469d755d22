//! Opening the log: the data directory and its lock, telling our file from anything else, and
//! bringing its schema up to date.
//!
//! The file is stamped with [`APPLICATION_ID`] when it is created. A file that is not a
//! database, that carries another program's id, or that holds tables without our id is refused
//! as [`StoreError::Foreign`] and never changed: it is identified on a connection of its own
//! before the writer's options (which switch it to WAL) touch it.

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::error::store_error;
use super::migrate::{migrate_error, migrations, newest_known_version};
use super::multirow::MultiRowStatements;
use super::writer::Writer;
use super::{SqliteOptions, SqliteStore};
use crate::StoreError;

/// Stamped in the header of every swarm event log (`PRAGMA application_id`): "SWRM" in ASCII.
pub(super) const APPLICATION_ID: i64 = 0x5357_524D;

/// The database file inside the data directory.
pub(super) const DB_FILE: &str = "events.db";
/// The data directory's lock file.
const LOCK_FILE: &str = "LOCK";

/// How long a connection waits for a lock another connection holds before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections. Reads are short and the coordinator issues few at once.
const READERS_MAX: u32 = 4;

impl SqliteStore {
    /// Opens (or creates) the log in `options.data_dir`, refusing a file that is not ours or is
    /// newer than this binary, and brings an older schema up to date.
    pub async fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| StoreError::Io {
            path: options.data_dir.clone(),
            cause: format!("cannot create the data directory: {e}"),
        })?;
        let lock = if options.lock {
            Some(lock_data_dir(&options.data_dir)?)
        } else {
            None
        };
        let path = options.data_dir.join(DB_FILE);
        let known = newest_known_version();
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(BUSY_TIMEOUT);

        // Identify the file before anything else touches it: the writer's own options switch it
        // to WAL, which would already change another program's database.
        let found = identify_file(&path, &base, known).await?;

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
            .map_err(|e| store_error(&path, e))?;
        if found == FileState::Empty {
            sqlx::query(AssertSqlSafe(format!(
                "PRAGMA application_id = {APPLICATION_ID}"
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| store_error(&path, e))?;
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
            writer: Mutex::new(Writer::new(conn, writer_options)),
            statements: MultiRowStatements::new(),
            _lock: lock,
        })
    }
}

/// Takes the data directory's lock, or says which process-wide condition prevents it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
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

/// What [`identify_file`] found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// A new or empty database: ours to stamp and migrate.
    Empty,
    /// A swarm event log at a schema this binary knows.
    Swarm,
}

/// Opens the file without changing it (beyond creating it empty when missing) and decides
/// whether it is ours.
async fn identify_file(
    path: &Path,
    base: &SqliteConnectOptions,
    known: i64,
) -> Result<FileState, StoreError> {
    let mut conn = base
        .clone()
        .create_if_missing(true)
        .connect()
        .await
        .map_err(|e| store_error(path, e))?;
    let found = read_file_state(path, &mut conn, known).await;
    // The inspection only read; if closing it fails there is nothing to undo, and the verdict
    // (or the inspection's own error) is what the caller needs.
    if let Err(e) = conn.close().await {
        warn!(path = %path.display(), %e, "closing the inspecting connection failed");
    }
    found
}

/// Reads the file's application id, its tables and its newest applied schema version.
async fn read_file_state(
    path: &Path,
    conn: &mut SqliteConnection,
    known: i64,
) -> Result<FileState, StoreError> {
    // The first statement that reads the file is where SQLite notices it is not a database.
    let application_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| store_error(path, e))?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
         ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| store_error(path, e))?;
    match application_id {
        APPLICATION_ID => {}
        0 if tables.is_empty() => return Ok(FileState::Empty),
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
            .map_err(|e| store_error(path, e))?;
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
    Ok(FileState::Swarm)
}
