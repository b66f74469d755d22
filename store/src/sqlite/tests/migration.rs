//! Logs written by older binaries open, keep their events and indexes, and are brought up to
//! the current schema; a log of a newer binary is refused.

use std::path::Path;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use swarm_protocol::{AgentId, Event, ObjectiveId, TaskId};

use super::{known_versions, old_log, open, open_err};
use crate::conformance::fixtures::{
    agent_event, declared, declared_agent_models, declared_hook_secrets, hook_declared,
    objective_spec, pairs, record, records, registered, schedule_spec, submitted,
};
use crate::sqlite::SqliteOptions;
use crate::sqlite::migrate::{migrate_error, migrations};
use crate::sqlite::open::{APPLICATION_ID, DB_FILE};
use crate::{EventStore, StoreError, StoreInfo};

#[tokio::test]
async fn a_schema_1_log_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let objective = ObjectiveId::new();
    let event = record(1, 1000, submitted(objective, 1, Some("old-key")));
    {
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
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
        let first = migrations().into_iter().take(1).collect();
        Migrator::with_migrations(first)
            .run(&mut conn)
            .await
            .unwrap();
        // Rows as schema 1 wrote them.
        sqlx::query(
            "INSERT INTO events (seq, at_ms, objective, kind, body) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(1_i64)
        .bind(1000_i64)
        .bind(objective.to_string())
        .bind("objective_submitted")
        .bind(serde_json::to_string(&event).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO objectives \
             (id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms) \
             VALUES (?, 'old-key', ?, 'running', 1000, NULL)",
        )
        .bind(objective.to_string())
        .bind(objective_spec(2).fingerprint() as i64)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE meta SET value = CASE key WHEN 'last_seq' THEN 1 ELSE 3 END \
             WHERE key IN ('last_seq', 'next_task')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    let store = open(dir.path()).await;
    // Migration 2 backfilled the event counter; migration 3 found no agent.
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: 1,
            next_task: 3,
            next_agent: 1,
            events: 1
        }
    );
    assert_eq!(
        store.read_after(0, 10).await.unwrap(),
        std::slice::from_ref(&event)
    );
    assert_eq!(store.read_objective(objective).await.unwrap(), [event]);
    let stored = store.objective(objective).await.unwrap().unwrap();
    assert_eq!(stored.fingerprint, objective_spec(2).fingerprint());
    assert_eq!(store.keyed_objectives().await.unwrap(), [stored]);
    assert!(store.latest_snapshot().await.unwrap().is_none());
    store
        .append(&records(
            2,
            2000,
            vec![Event::ObjectiveSucceeded { objective }],
        ))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().events, 2);
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
}

#[tokio::test]
async fn a_schema_2_log_is_migrated_with_the_next_agent_backfilled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let objective = ObjectiveId::new();
    let old = vec![
        registered(3),
        registered(5),
        agent_event(5),
        submitted(objective, 1, None),
        // A7's registration was pruned; the running objective still names it.
        Event::TaskStarted {
            objective,
            task: TaskId(1),
            attempt: 1,
            agent: AgentId(7),
            input: None,
        },
    ];
    let old = records(1, 1000, old);
    {
        // Rows as schema 2 wrote them (the objective index is not needed here).
        let mut conn = old_log(&path, 2, &old).await;
        sqlx::query(
            "UPDATE meta SET value = CASE key WHEN 'next_task' THEN 3 ELSE 5 END \
             WHERE key IN ('last_seq', 'next_task', 'events')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    let store = open(dir.path()).await;
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: 5,
            next_task: 3,
            next_agent: 8,
            events: 5
        }
    );
    assert_eq!(store.read_after(0, 10).await.unwrap(), old);
    // A lower registration leaves the counter; a higher one raises it.
    store
        .append(&records(6, 2000, vec![registered(2)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().next_agent, 8);
    store
        .append(&records(7, 2000, vec![registered(10)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().next_agent, 11);
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
}

#[tokio::test]
async fn a_schema_3_log_is_migrated_with_no_declared_agents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let old = records(1, 1000, vec![registered(3), agent_event(3)]);
    {
        // Rows as schema 3 wrote them.
        let mut conn = old_log(&path, 3, &old).await;
        sqlx::query(
            "UPDATE meta SET value = CASE key WHEN 'next_agent' THEN 4 ELSE 2 END \
             WHERE key IN ('last_seq', 'next_agent', 'events')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    let store = open(dir.path()).await;
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: 2,
            next_task: 1,
            next_agent: 4,
            events: 2
        }
    );
    assert_eq!(store.read_after(0, 10).await.unwrap(), old);
    assert!(store.declared_agents().await.unwrap().is_empty());
    store
        .append(&records(3, 2000, vec![registered(4), declared(4, "api")]))
        .await
        .unwrap();
    assert_eq!(
        declared_agent_models(&store).await,
        [("api".to_owned(), 4, "m-4".to_owned())]
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
}

/// A log as schema 5 left it (the latest before the declared hooks) opens with no declared
/// hook, keeps its events and schedules, and takes hook events from then on.
#[tokio::test]
async fn a_schema_5_log_is_migrated_with_no_declared_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let old = records(
        1,
        1000,
        vec![
            registered(3),
            Event::ScheduleCreated {
                spec: Box::new(schedule_spec("nightly", false)),
            },
        ],
    );
    {
        let mut conn = old_log(&path, 5, &old).await;
        sqlx::query(
            "INSERT INTO schedules (name, spec, paused, created_seq, created_at_ms, \
             changed_at_ms) VALUES ('nightly', ?, FALSE, 2, 1000, 1000)",
        )
        .bind(serde_json::to_string(&schedule_spec("nightly", false)).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE meta SET value = CASE key WHEN 'next_agent' THEN 4 ELSE 2 END \
             WHERE key IN ('last_seq', 'next_agent', 'events')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    let store = open(dir.path()).await;
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: 2,
            next_task: 1,
            next_agent: 4,
            events: 2
        }
    );
    assert_eq!(store.read_after(0, 10).await.unwrap(), old);
    assert_eq!(store.schedules().await.unwrap().len(), 1);
    assert!(store.declared_hooks().await.unwrap().is_empty());
    assert!(store.posted_events(0).await.unwrap().is_empty());
    store
        .append(&records(3, 2000, vec![hook_declared("deploy", "S")]))
        .await
        .unwrap();
    assert_eq!(
        declared_hook_secrets(&store).await,
        pairs(&[("deploy", "S")])
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .append(&records(1, 1, vec![agent_event(1)]))
        .await
        .unwrap();
    {
        let mut writer = store.writer.lock().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations \
             (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&mut writer.conn)
        .await
        .unwrap();
    }
    store.close().await.unwrap();

    let err = open_err(SqliteOptions::new(dir.path())).await;
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 999,
                known,
                ..
            } if known == migrations().len() as i64
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&dir.path().join(DB_FILE).display().to_string())
    );

    // The mapping of sqlx's own refusal, should the probe ever miss it.
    let mapped = migrate_error(Path::new("x"), MigrateError::VersionMissing(999), 2);
    assert!(matches!(mapped, StoreError::NewerSchema { found: 999, .. }));
}
