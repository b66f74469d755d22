//! The schema's versions and how a failed migration is reported.
//!
//! The schema is versioned with sqlx migrations (`store/migrations/`), applied by
//! [`super::SqliteStore::open`] on the writer connection. A released migration is never edited
//! (sqlx refuses a file whose applied migration's checksum changed); a change is a new file. A
//! file that has applied a version this binary does not know is refused as
//! [`StoreError::NewerSchema`].

use std::path::Path;

use sqlx::SqlStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType};

use super::error::store_error;
use crate::StoreError;

/// Every schema version this binary knows, oldest first.
pub(super) fn migrations() -> Vec<Migration> {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            SqlStr::from_static(sql),
            false,
        )
    };
    vec![
        migration(
            1,
            "events, counters and the objective index",
            include_str!("../../migrations/0001_events.sql"),
        ),
        migration(
            2,
            "snapshots, indexes for reading and pruning, event counter",
            include_str!("../../migrations/0002_snapshots.sql"),
        ),
        migration(
            3,
            "next agent id counter",
            include_str!("../../migrations/0003_next_agent.sql"),
        ),
        migration(
            4,
            "agents declared through the API",
            include_str!("../../migrations/0004_declared_agents.sql"),
        ),
        migration(
            5,
            "schedules created through the API",
            include_str!("../../migrations/0005_schedules.sql"),
        ),
        migration(
            6,
            "events posted for wait tasks",
            include_str!("../../migrations/0006_posted_events.sql"),
        ),
        migration(
            7,
            "hooks declared through the API",
            include_str!("../../migrations/0007_declared_hooks.sql"),
        ),
    ]
}

/// The newest schema version this binary knows.
pub(super) fn newest_known_version() -> i64 {
    migrations().iter().map(|m| m.version).max().unwrap_or(0)
}

/// The store's error for a failed migration of `path`, whose binary knows versions up to
/// `known`.
pub(super) fn migrate_error(path: &Path, error: MigrateError, known: i64) -> StoreError {
    match error {
        MigrateError::VersionMissing(found) if found > known => StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            known,
        },
        MigrateError::Execute(e) => store_error(path, e),
        MigrateError::ExecuteMigration(e, version) => match store_error(path, e) {
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
