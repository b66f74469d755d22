//! The SQLite backend's tests: the conformance suite (the trait's contract, shared with every
//! backend) on SQLite files, then what only this backend shows, by area: schema migrations
//! (`migration`), the data directory and its files (`files`), the writer and reader connections
//! (`connections`), and how it reclaims space (`retention`).

#![allow(clippy::unwrap_used)]

mod connections;
mod files;
mod migration;
mod retention;

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
use sqlx::{AssertSqlSafe, ConnectOptions};
use swarm_protocol::EventRecord;
use tempfile::TempDir;

use super::migrate::migrations;
use super::open::APPLICATION_ID;
use super::{SqliteOptions, SqliteStore};
use crate::StoreError;
use crate::conformance::Backend;
use crate::log::event_kind_name;

/// SQLite logs in temporary directories, removed when the backend is dropped (after the test).
#[derive(Default)]
struct SqliteBackend {
    dirs: Vec<TempDir>,
}

impl Backend for SqliteBackend {
    type Store = SqliteStore;

    async fn empty(&mut self) -> SqliteStore {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        self.dirs.push(dir);
        store
    }

    async fn reopen(&mut self, store: SqliteStore) -> SqliteStore {
        let dir = store.path().parent().unwrap().to_owned();
        store.close().await.unwrap();
        open(&dir).await
    }
}

crate::conformance_tests!(SqliteBackend::default());

/// The store in `dir`, with the default options.
async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(dir)).await.unwrap()
}

/// Why the store with `options` does not open.
async fn open_err(options: SqliteOptions) -> StoreError {
    SqliteStore::open(options).await.unwrap_err()
}

/// Every schema version this binary knows, as `_sqlx_migrations` lists them once applied.
fn known_versions() -> Vec<i64> {
    migrations().iter().map(|m| m.version).collect()
}

/// A log file at `path` as a binary of schema version `schema` left it, holding `rows`;
/// returns the connection, for the rows of that schema's indexes.
async fn old_log(path: &Path, schema: usize, rows: &[EventRecord]) -> SqliteConnection {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "PRAGMA application_id = {APPLICATION_ID}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let first = migrations().into_iter().take(schema).collect();
    Migrator::with_migrations(first)
        .run(&mut conn)
        .await
        .unwrap();
    for record in rows {
        sqlx::query(
            "INSERT INTO events (seq, at_ms, objective, kind, body) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(record.seq as i64)
        .bind(record.at_ms as i64)
        .bind(record.event.objective().map(|o| o.to_string()))
        .bind(event_kind_name(&record.event))
        .bind(serde_json::to_string(record).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn
}
