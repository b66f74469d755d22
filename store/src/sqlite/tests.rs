#![allow(clippy::unwrap_used)]

use std::time::Duration;

use swarm_protocol::{
    AgentDescriptor, AgentId, Capability, Health, Objective, TaskId, TaskKey, TaskSpec,
};

use super::*;

fn spec(tasks: usize) -> Objective {
    let cap = Capability::new("echo").unwrap();
    let tasks = (0..tasks)
        .map(|i| TaskSpec::new(TaskKey::new(format!("t{i}")).unwrap(), cap.clone()))
        .collect();
    Objective::with_tasks("g", tasks)
}

/// One event of every kind.
fn every_kind() -> Vec<Event> {
    swarm_protocol::samples::every_event_kind()
}

/// Numbers `events` from `first`, at `at_ms`.
fn records(first: u64, at_ms: u64, events: Vec<Event>) -> Vec<EventRecord> {
    events
        .into_iter()
        .zip(first..)
        .map(|(event, seq)| EventRecord { seq, at_ms, event })
        .collect()
}

fn record(seq: u64, at_ms: u64, event: Event) -> EventRecord {
    EventRecord { seq, at_ms, event }
}

fn submitted(objective: ObjectiveId, first_task: u64, key: Option<&str>) -> Event {
    Event::ObjectiveSubmitted {
        objective,
        spec: spec(2),
        first_task: TaskId(first_task),
        idempotency_key: key.map(Into::into),
    }
}

fn registered(agent: u64) -> Event {
    Event::AgentRegistered {
        descriptor: AgentDescriptor {
            id: AgentId(agent),
            name: format!("agent-{agent}"),
            capabilities: vec![Capability::new("echo").unwrap()],
            max_concurrency: 1,
            labels: Default::default(),
            cost_hint: None,
            description: None,
        },
    }
}

fn agent_event(agent: u64) -> Event {
    Event::AgentHealthChanged {
        agent: AgentId(agent),
        health: Health::Degraded,
        reason: "slow".into(),
    }
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
        .bind(kind(&record.event))
        .bind(serde_json::to_string(record).unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn
}

async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(dir)).await.unwrap()
}

async fn open_err(options: SqliteOptions) -> StoreError {
    SqliteStore::open(options).await.unwrap_err()
}

#[tokio::test]
async fn every_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: 0,
            next_task: 1,
            next_agent: 1,
            events: 0
        }
    );
    assert!(store.read_after(0, 100).await.unwrap().is_empty());

    let batch = records(1, 1_700_000_000_000, every_kind());
    store.append(&batch).await.unwrap();
    assert_eq!(store.read_after(0, 100).await.unwrap(), batch);
    assert_eq!(store.read_after(5, 3).await.unwrap(), batch[5..8]);
    let count = batch.len() as u64;
    assert!(store.read_after(count, 10).await.unwrap().is_empty());
    assert!(store.read_after(u64::MAX, 10).await.unwrap().is_empty());
    // The submit allocates T3 (one task); the spawn T9 and T10; the re-plan T11; the
    // compensations T11 and T12; the registration A1.
    assert_eq!(
        store.info().await.unwrap(),
        StoreInfo {
            last_seq: count,
            next_task: 13,
            next_agent: 2,
            events: count
        }
    );
    store.close().await.unwrap();
}

#[test]
fn kinds_and_statuses_are_the_serde_names() {
    for event in every_kind() {
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["type"], kind(&event), "{value}");
    }
    for status in [
        ObjectiveStatus::Running,
        ObjectiveStatus::Succeeded,
        ObjectiveStatus::Failed,
        ObjectiveStatus::Cancelled,
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), status_name(status));
        assert_eq!(status_from_name(status_name(status)), Some(status));
    }
}

#[test]
fn shapes_cover_every_row_once_with_few_statements() {
    for rows in [0, 1, 2, 3, 1000, 1023, 1024, 1025, 5000, 10_000] {
        let sizes: Vec<usize> = shapes(rows).map(|k| 1 << k).collect();
        assert_eq!(sizes.iter().sum::<usize>(), rows);
        assert!(sizes.iter().all(|&s| s <= CHUNK_ROWS_MAX));
        assert!(sizes.len() < rows / CHUNK_ROWS_MAX + SHAPES);
    }
}

#[tokio::test]
async fn read_objective_returns_its_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = (ObjectiveId::new(), ObjectiveId::new());
    let first = vec![
        submitted(a, 1, None),
        agent_event(1),
        submitted(b, 3, None),
        Event::TaskReady {
            objective: a,
            task: TaskId(1),
        },
    ];
    let second = vec![
        Event::TaskReady {
            objective: b,
            task: TaskId(3),
        },
        Event::ObjectiveSucceeded { objective: a },
    ];
    let first = records(1, 10, first);
    let second = records(5, 20, second);
    store.append(&first).await.unwrap();
    store.append(&second).await.unwrap();

    let of_a = store.read_objective(a).await.unwrap();
    assert_eq!(
        of_a,
        vec![first[0].clone(), first[3].clone(), second[1].clone()]
    );
    let of_b = store.read_objective(b).await.unwrap();
    assert_eq!(of_b, vec![first[2].clone(), second[0].clone()]);
    assert!(
        store
            .read_objective(ObjectiveId::new())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_objective_index_follows_status_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b, c, d) = (
        ObjectiveId::new(),
        ObjectiveId::new(),
        ObjectiveId::new(),
        ObjectiveId::new(),
    );
    store
        .append(&records(
            1,
            100,
            vec![
                submitted(a, 1, Some("key-a")),
                submitted(b, 3, None),
                submitted(c, 5, Some("key-c")),
                // Submitted and ended in one batch: inserted ended.
                submitted(d, 7, None),
                Event::ObjectiveCancelled { objective: d },
            ],
        ))
        .await
        .unwrap();
    let stored_a = store.objective(a).await.unwrap().unwrap();
    assert_eq!(
        stored_a,
        StoredObjective {
            id: a,
            idempotency_key: Some("key-a".into()),
            fingerprint: spec(2).fingerprint(),
            status: ObjectiveStatus::Running,
            submitted_at_ms: 100,
            ended_at_ms: None,
        }
    );
    let stored_d = store.objective(d).await.unwrap().unwrap();
    assert_eq!(stored_d.status, ObjectiveStatus::Cancelled);
    assert_eq!(stored_d.ended_at_ms, Some(100));
    assert_eq!(store.info().await.unwrap().next_task, 9);

    store
        .append(&[
            record(6, 200, Event::ObjectiveSucceeded { objective: a }),
            record(
                7,
                300,
                Event::ObjectiveFailed {
                    objective: b,
                    reason: "T3 failed".into(),
                },
            ),
        ])
        .await
        .unwrap();
    let stored_a = store.objective(a).await.unwrap().unwrap();
    assert_eq!(stored_a.status, ObjectiveStatus::Succeeded);
    assert_eq!(stored_a.ended_at_ms, Some(200));
    let stored_b = store.objective(b).await.unwrap().unwrap();
    assert_eq!(stored_b.status, ObjectiveStatus::Failed);
    assert_eq!(stored_b.ended_at_ms, Some(300));
    let stored_c = store.objective(c).await.unwrap().unwrap();
    assert_eq!(stored_c.status, ObjectiveStatus::Running);

    let keyed = store.keyed_objectives().await.unwrap();
    let keys: Vec<_> = keyed.iter().map(|o| o.idempotency_key.as_deref()).collect();
    assert_eq!(keys, [Some("key-a"), Some("key-c")]);
    assert_eq!(keyed[0], stored_a);
    assert!(store.objective(ObjectiveId::new()).await.unwrap().is_none());
}

#[tokio::test]
async fn list_objectives_pages_by_id_and_filters_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut ids: Vec<ObjectiveId> = (0..5).map(|_| ObjectiveId::new()).collect();
    // Appended out of id order: the listing follows the ids, not the log.
    ids.reverse();
    let mut events: Vec<Event> = ids
        .iter()
        .zip(1..)
        .map(|(id, i)| submitted(*id, i * 2, (i == 1).then_some("key")))
        .collect();
    events.push(Event::ObjectiveSucceeded { objective: ids[1] });
    events.push(Event::ObjectiveCancelled { objective: ids[3] });
    store.append(&records(1, 100, events)).await.unwrap();
    ids.sort_by_key(ToString::to_string);

    let all = store.list_objectives(None, None, 10).await.unwrap();
    assert_eq!(all.iter().map(|o| o.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        all.iter().filter(|o| o.idempotency_key.is_some()).count(),
        1
    );
    assert_eq!(all[0], store.objective(all[0].id).await.unwrap().unwrap());

    // Pages of two: the last id of a page is the cursor of the next.
    let first = store.list_objectives(None, None, 2).await.unwrap();
    let second = store
        .list_objectives(None, Some(first[1].id), 2)
        .await
        .unwrap();
    let third = store
        .list_objectives(None, Some(second[1].id), 2)
        .await
        .unwrap();
    let paged: Vec<_> = [first, second, third].concat();
    assert_eq!(paged, all);
    assert!(
        store
            .list_objectives(None, Some(ids[4]), 2)
            .await
            .unwrap()
            .is_empty()
    );

    let running = store
        .list_objectives(Some(ObjectiveStatus::Running), None, 10)
        .await
        .unwrap();
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|o| o.status == ObjectiveStatus::Running));
    let cancelled = store
        .list_objectives(Some(ObjectiveStatus::Cancelled), None, 10)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].ended_at_ms, Some(100));
    let failed = store
        .list_objectives(Some(ObjectiveStatus::Failed), None, 10)
        .await
        .unwrap();
    assert!(failed.is_empty());
    assert!(
        store
            .list_objectives(None, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn append_refuses_gaps_and_duplicates_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.append(&[]).await.unwrap();
    store
        .append(&records(
            1,
            1,
            vec![agent_event(1), agent_event(2), agent_event(3)],
        ))
        .await
        .unwrap();
    let before = store.info().await.unwrap();

    let refused = [
        // A gap after the log.
        records(5, 2, vec![agent_event(5)]),
        // A repeat of the last event.
        records(3, 2, vec![agent_event(3), agent_event(4)]),
        // Starts right, then skips.
        vec![record(4, 2, agent_event(4)), record(6, 2, agent_event(6))],
        // Starts right, then repeats.
        vec![record(4, 2, agent_event(4)), record(4, 2, agent_event(4))],
    ];
    for batch in refused {
        let err = store.append(&batch).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { cause, .. } if cause.contains("out of order")),
            "{err}"
        );
        assert_eq!(store.info().await.unwrap(), before);
        assert_eq!(store.read_after(0, 100).await.unwrap().len(), 3);
    }

    store
        .append(&records(4, 3, vec![agent_event(4)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().last_seq, 4);
}

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
        .bind(spec(2).fingerprint() as i64)
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
    assert_eq!(stored.fingerprint, spec(2).fingerprint());
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
async fn next_agent_follows_the_highest_registration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .append(&records(1, 1, vec![registered(4), registered(2)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().next_agent, 5);
    store
        .append(&records(3, 2, vec![registered(3), agent_event(4)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().next_agent, 5);
    store.close().await.unwrap();

    // The counter survives a reopen, and a prune of the registrations.
    let store = open(dir.path()).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 4);
    let info = store.info().await.unwrap();
    assert_eq!((info.events, info.next_agent), (0, 5));
}

fn declared(agent: u64, name: &str) -> Event {
    Event::AgentDeclared {
        agent: AgentId(agent),
        name: name.into(),
        config: serde_json::json!({ "name": name, "model": format!("m-{agent}") }),
    }
}

fn undeclared(agent: u64, name: &str) -> Event {
    Event::AgentUndeclared {
        agent: AgentId(agent),
        name: name.into(),
    }
}

/// The declared agents as (name, id, model).
async fn declarations(store: &SqliteStore) -> Vec<(String, u64, String)> {
    store
        .declared_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let model = d.config["model"].as_str().unwrap().to_owned();
            (d.name, d.agent.0, model)
        })
        .collect()
}

#[tokio::test]
async fn the_declared_agents_follow_declarations_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.declared_agents().await.unwrap().is_empty());
    // Declared, declared and undeclared within one batch, declared.
    store
        .append(&records(
            1,
            1,
            vec![
                declared(1, "a"),
                declared(2, "b"),
                undeclared(2, "b"),
                declared(3, "c"),
            ],
        ))
        .await
        .unwrap();
    let expected = |a: u64, ma: &str| {
        vec![
            ("a".to_owned(), a, ma.to_owned()),
            ("c".to_owned(), 3, "m-3".to_owned()),
        ]
    };
    assert_eq!(declarations(&store).await, expected(1, "m-1"));
    // Declared again under a new id (a restart registered it anew): it keeps its place.
    store
        .append(&records(5, 2, vec![declared(7, "a")]))
        .await
        .unwrap();
    assert_eq!(declarations(&store).await, expected(7, "m-7"));
    // A failed append changes nothing.
    let gap = store.append(&records(9, 3, vec![undeclared(7, "a")])).await;
    assert!(gap.is_err());
    assert_eq!(declarations(&store).await, expected(7, "m-7"));
    store.close().await.unwrap();

    // The index survives a reopen and a prune of every agent event.
    let store = open(dir.path()).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 5);
    assert_eq!(declarations(&store).await, expected(7, "m-7"));
    store
        .append(&records(6, 4, vec![undeclared(7, "a")]))
        .await
        .unwrap();
    assert_eq!(
        declarations(&store).await,
        [("c".to_owned(), 3, "m-3".to_owned())]
    );
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
        declarations(&store).await,
        [("api".to_owned(), 4, "m-4".to_owned())]
    );
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
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

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let err = open_err(SqliteOptions::new(&file)).await;
    assert!(
        matches!(&err, StoreError::Io { path, .. } if *path == file),
        "{err}"
    );
    assert!(err.to_string().contains(&file.display().to_string()));
}

#[tokio::test]
async fn a_second_writer_of_one_data_dir_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let err = open_err(SqliteOptions::new(dir.path())).await;
    assert!(
        matches!(&err, StoreError::Io { path, cause } if path.ends_with("LOCK") && cause.contains("another swarm process")),
        "{err}"
    );
    // A reader that takes no lock may look meanwhile.
    let mut look = SqliteOptions::new(dir.path());
    look.lock = false;
    let reader = SqliteStore::open(look).await.unwrap();
    assert_eq!(reader.info().await.unwrap().last_seq, 0);
    drop(first);
    SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_text_file_is_foreign_and_left_alone() {
    for text in ["hello\n", &"not a database, just words\n".repeat(200)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, text).unwrap();
        let err = open_err(SqliteOptions::new(dir.path())).await;
        assert!(
            matches!(&err, StoreError::Foreign { path: p, .. } if *p == path),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}

#[tokio::test]
async fn another_programs_database_is_foreign_and_left_alone() {
    for (setup, expect) in [
        ("CREATE TABLE users (id INTEGER PRIMARY KEY)", "users"),
        ("PRAGMA application_id = 42", "0x2a"),
        (
            "PRAGMA application_id = 42; CREATE TABLE events (seq INTEGER)",
            "0x2a",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(setup).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let before = std::fs::read(&path).unwrap();

        let err = open_err(SqliteOptions::new(dir.path())).await;
        assert!(
            matches!(&err, StoreError::Foreign { cause, .. } if cause.contains(expect)),
            "{setup}: {err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before, "{setup}");
        assert!(!dir.path().join("events.db-wal").exists());
    }
}

/// Appends batches of `per_batch` agent events at `at_ms` until one fails; returns the seqs
/// committed and the error.
async fn fill(store: &SqliteStore, per_batch: usize, at_ms: u64) -> (u64, StoreError) {
    let mut last = store.info().await.unwrap().last_seq;
    for _ in 0..10_000 {
        let batch = records(
            last + 1,
            at_ms,
            (0..per_batch).map(|_| agent_event(7)).collect(),
        );
        match store.append(&batch).await {
            Ok(()) => last += per_batch as u64,
            Err(e) => return (last, e),
        }
    }
    panic!("the capped file never filled up");
}

#[tokio::test]
async fn a_full_disk_loses_nothing_committed_and_writes_nothing_of_the_failed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::new(dir.path());
    options.max_page_count = Some(64);
    let store = SqliteStore::open(options).await.unwrap();
    let (committed, err) = fill(&store, 50, 1).await;
    assert!(matches!(&err, StoreError::Full { .. }), "{err}");
    assert!(err.to_string().contains("nothing of the last batch"));
    assert!(committed > 0);
    // Reads still work, and the writer too, for what fits.
    assert_eq!(store.info().await.unwrap().last_seq, committed);
    drop(store);

    let store = open(dir.path()).await;
    let info = store.info().await.unwrap();
    assert_eq!(info.last_seq, committed);
    assert_eq!(info.events, committed);
    let events = store.read_after(0, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=committed).collect::<Vec<_>>());
    store
        .append(&records(committed + 1, 1, vec![agent_event(1)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_writer_recovers_once_a_full_disk_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::new(dir.path());
    options.max_page_count = Some(64);
    let store = SqliteStore::open(options).await.unwrap();
    let (committed, err) = fill(&store, 50, 1).await;
    assert!(matches!(&err, StoreError::Full { .. }), "{err}");

    // Pruning the old agent events frees pages that the next append reuses.
    let pruned = store.prune(2).await.unwrap();
    assert_eq!(pruned.events, committed);
    store
        .append(&records(
            committed + 1,
            5,
            (0..50).map(|_| agent_event(8)).collect(),
        ))
        .await
        .unwrap();
    let info = store.info().await.unwrap();
    assert_eq!((info.last_seq, info.events), (committed + 50, 50));
}

#[tokio::test]
async fn snapshots_keep_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.latest_snapshot().await.unwrap().is_none());
    for seq in [10, 20, 30] {
        let snapshot = Snapshot {
            seq,
            at_ms: seq * 100,
            body: vec![seq as u8; 3],
        };
        store.save_snapshot(&snapshot).await.unwrap();
        assert_eq!(store.latest_snapshot().await.unwrap(), Some(snapshot));
    }
    let kept: Vec<i64> = sqlx::query_scalar("SELECT seq FROM snapshots ORDER BY seq")
        .fetch_all(&store.readers)
        .await
        .unwrap();
    assert_eq!(kept, [20, 30]);

    // Saving at the same seq again replaces it.
    let again = Snapshot {
        seq: 30,
        at_ms: 1,
        body: b"new".to_vec(),
    };
    store.save_snapshot(&again).await.unwrap();
    assert_eq!(store.latest_snapshot().await.unwrap(), Some(again));
}

#[tokio::test]
async fn prune_removes_old_finished_objectives_and_old_agent_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (old_done, old_running, recent_done) =
        (ObjectiveId::new(), ObjectiveId::new(), ObjectiveId::new());
    let batch = vec![
        record(1, 100, agent_event(1)),
        record(2, 500, submitted(old_done, 1, Some("gone"))),
        record(3, 500, submitted(old_running, 3, None)),
        record(
            4,
            600,
            Event::TaskReady {
                objective: old_done,
                task: TaskId(1),
            },
        ),
        record(
            5,
            1000,
            Event::ObjectiveSucceeded {
                objective: old_done,
            },
        ),
        record(6, 1000, submitted(recent_done, 5, None)),
        record(
            7,
            5000,
            Event::ObjectiveFailed {
                objective: recent_done,
                reason: "r".into(),
            },
        ),
        record(8, 6000, agent_event(2)),
    ];
    store.append(&batch).await.unwrap();

    let pruned = store.prune(3000).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            objectives: 1,
            events: 4
        }
    );
    assert!(store.objective(old_done).await.unwrap().is_none());
    assert!(store.read_objective(old_done).await.unwrap().is_empty());
    assert!(store.keyed_objectives().await.unwrap().is_empty());
    assert_eq!(
        store.read_objective(old_running).await.unwrap(),
        [batch[2].clone()]
    );
    assert_eq!(
        store.read_objective(recent_done).await.unwrap(),
        [batch[5].clone(), batch[6].clone()]
    );
    let left: Vec<u64> = store
        .read_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, [3, 6, 7, 8]);
    let info = store.info().await.unwrap();
    assert_eq!((info.last_seq, info.events), (8, 4));

    // A running objective stays whatever the cutoff; everything finished goes.
    let pruned = store.prune(u64::MAX).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            objectives: 1,
            events: 3
        }
    );
    assert_eq!(
        store.objective(old_running).await.unwrap().unwrap().status,
        ObjectiveStatus::Running
    );
    assert_eq!(store.prune(u64::MAX).await.unwrap(), Pruned::default());
    // The log goes on from where it was.
    store
        .append(&records(9, 7000, vec![agent_event(3)]))
        .await
        .unwrap();
}

#[tokio::test]
async fn appends_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = records(1, 1, every_kind());
    let store = open(dir.path()).await;
    store.append(&first).await.unwrap();
    // Dropped, not closed: the commit alone must make it durable.
    drop(store);

    let store = open(dir.path()).await;
    assert_eq!(store.read_after(0, 100).await.unwrap(), first);
    let after = first.len() as u64;
    let second = records(after + 1, 2, vec![agent_event(1)]);
    store.append(&second).await.unwrap();
    store.close().await.unwrap();

    let store = open(dir.path()).await;
    assert_eq!(store.info().await.unwrap().last_seq, after + 1);
    assert_eq!(store.read_after(after, 100).await.unwrap(), second);
}

#[tokio::test]
async fn reads_do_not_block_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .append(&records(1, 1, vec![agent_event(1)]))
        .await
        .unwrap();

    // A reader holds a read transaction open across an append.
    let mut reader = store.readers.acquire().await.unwrap();
    let mut read = reader.begin().await.unwrap();
    let count = || sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events");
    assert_eq!(count().fetch_one(&mut *read).await.unwrap(), 1);
    tokio::time::timeout(
        Duration::from_secs(2),
        store.append(&records(2, 1, vec![agent_event(2)])),
    )
    .await
    .unwrap()
    .unwrap();
    // The reader still sees its snapshot; a new read sees the append.
    assert_eq!(count().fetch_one(&mut *read).await.unwrap(), 1);
    read.commit().await.unwrap();
    drop(reader);
    assert_eq!(store.read_after(0, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn reader_connections_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let err = sqlx::query("DELETE FROM events")
        .execute(&store.readers)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

#[tokio::test]
async fn a_damaged_event_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .append(&records(1, 1, vec![agent_event(1), agent_event(2)]))
        .await
        .unwrap();
    {
        let mut writer = store.writer.lock().await;
        sqlx::query("UPDATE events SET body = '{\"seq\": 2' WHERE seq = 2")
            .execute(&mut writer.conn)
            .await
            .unwrap();
    }
    let err = store.read_after(0, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { what, .. } if what == "event 2"),
        "{err}"
    );
    assert_eq!(store.read_after(0, 1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_writer_left_in_a_transaction_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    {
        // What a write cancelled halfway (or a failed rollback) leaves behind.
        let mut writer = store.writer.lock().await;
        let conn = writer.begin_write(&store.path).await.unwrap();
        let tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        std::mem::forget(tx);
        assert!(writer.conn.is_in_transaction());
    }
    store
        .append(&records(1, 1, vec![agent_event(1)]))
        .await
        .unwrap();
    assert_eq!(store.info().await.unwrap().last_seq, 1);
}

#[tokio::test]
async fn large_batches_use_every_statement_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // 1,500 objectives submitted, then all ended in one batch: events, objective inserts and
    // end updates each need a 1,024-row statement and several smaller ones.
    let ids: Vec<ObjectiveId> = (0..1500).map(|_| ObjectiveId::new()).collect();
    let submits = ids
        .iter()
        .zip((1..).step_by(2))
        .map(|(id, first)| submitted(*id, first, Some(&format!("k{first}"))))
        .collect();
    let submits = records(1, 10, submits);
    store.append(&submits).await.unwrap();
    let ends = records(
        1501,
        20,
        ids.iter()
            .map(|id| Event::ObjectiveSucceeded { objective: *id })
            .collect(),
    );
    store.append(&ends).await.unwrap();

    let info = store.info().await.unwrap();
    assert_eq!(
        (info.last_seq, info.events, info.next_task),
        (3000, 3000, 3001)
    );
    let all = store.read_after(0, 5000).await.unwrap();
    assert_eq!(all.len(), 3000);
    assert_eq!(all[..1500], submits[..]);
    assert_eq!(all[1500..], ends[..]);
    let keyed = store.keyed_objectives().await.unwrap();
    assert_eq!(keyed.len(), 1500);
    assert!(
        keyed
            .iter()
            .all(|o| o.status == ObjectiveStatus::Succeeded && o.ended_at_ms == Some(20))
    );
}

fn schedule_spec(name: &str, paused: bool) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "*/5 * * * * *".into(),
        time_zone: "UTC".into(),
        template: swarm_protocol::Objective::with_tasks("g", Vec::new()),
        overlap: swarm_protocol::OverlapPolicy::Skip,
        catch_up: swarm_protocol::CatchUpPolicy::Skip,
        paused,
    }
}

#[tokio::test]
async fn the_schedules_follow_their_events_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.schedules().await.unwrap().is_empty());
    let o1 = ObjectiveId::new();
    let o2 = ObjectiveId::new();
    // Created (one of them paused), one fired twice (the later slot first: the index keeps
    // the latest), one created and deleted within the batch.
    store
        .append(&records(
            1,
            1_000,
            vec![
                Event::ScheduleCreated {
                    spec: Box::new(schedule_spec("b", false)),
                },
                Event::ScheduleCreated {
                    spec: Box::new(schedule_spec("a", true)),
                },
                Event::ScheduleCreated {
                    spec: Box::new(schedule_spec("gone", false)),
                },
                Event::ScheduleFired {
                    schedule: "b".into(),
                    slot_ms: 10_000,
                    objective: o2,
                },
                Event::ScheduleFired {
                    schedule: "b".into(),
                    slot_ms: 5_000,
                    objective: o1,
                },
                Event::ScheduleDeleted {
                    schedule: "gone".into(),
                },
            ],
        ))
        .await
        .unwrap();
    let schedules = store.schedules().await.unwrap();
    assert_eq!(
        schedules,
        [
            StoredSchedule {
                spec: schedule_spec("a", true),
                created_at_ms: 1_000,
                changed_at_ms: 1_000,
                last_fire: None,
            },
            StoredSchedule {
                spec: schedule_spec("b", false),
                created_at_ms: 1_000,
                changed_at_ms: 1_000,
                last_fire: Some((10_000, o2)),
            },
        ]
    );
    // A resume moves the time slots count from; a pause does not.
    store
        .append(&records(
            7,
            2_000,
            vec![
                Event::ScheduleResumed {
                    schedule: "a".into(),
                },
                Event::SchedulePaused {
                    schedule: "b".into(),
                },
            ],
        ))
        .await
        .unwrap();
    store.close().await.unwrap();

    // The index survives a reopen and a prune of every event of no objective.
    let store = open(dir.path()).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 8);
    let schedules = store.schedules().await.unwrap();
    assert_eq!(schedules[0].spec, schedule_spec("a", false));
    assert_eq!(schedules[0].changed_at_ms, 2_000);
    assert_eq!(schedules[1].spec, schedule_spec("b", true));
    assert_eq!(schedules[1].changed_at_ms, 1_000);
    assert_eq!(schedules[1].last_fire, Some((10_000, o2)));
    store
        .append(&records(
            9,
            3_000,
            vec![Event::ScheduleDeleted {
                schedule: "a".into(),
            }],
        ))
        .await
        .unwrap();
    let names: Vec<String> = store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["b"]);
}

fn received(id: uuid::Uuid, key: &str, expires_at_ms: u64, idem: Option<&str>) -> Event {
    Event::EventReceived {
        id,
        key: key.into(),
        payload: serde_json::json!({"key": key}),
        expires_at_ms,
        idempotency_key: idem.map(Into::into),
    }
}

#[tokio::test]
async fn the_posted_events_follow_their_events_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.posted_events(0).await.unwrap().is_empty());
    let (a, b, c) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let objective = ObjectiveId::new();
    // Two events received, one of them consumed in the same batch.
    store
        .append(&records(
            1,
            1_000,
            vec![
                received(a, "build", 10_000, Some("ci-1")),
                received(b, "deploy", 5_000, None),
                Event::WaitSatisfied {
                    objective,
                    task: TaskId(4),
                    event: a,
                    key: "build".into(),
                    payload: serde_json::json!({"key": "build"}),
                },
            ],
        ))
        .await
        .unwrap();
    let events = store.posted_events(1_000).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.id, a);
    assert_eq!(events[0].event.key, "build");
    assert_eq!(events[0].event.received_at_ms, 1_000);
    assert_eq!(events[0].idempotency_key.as_deref(), Some("ci-1"));
    assert_eq!(
        events[0].event.consumed_by,
        Some(EventConsumer {
            objective,
            task: TaskId(4)
        })
    );
    assert_eq!(events[1].event.id, b);
    assert_eq!(events[1].event.consumed_by, None);
    assert_eq!(
        events[1].event.payload,
        serde_json::json!({"key": "deploy"})
    );
    // What expired by the time asked about is not returned...
    let later = store.posted_events(5_000).await.unwrap();
    assert_eq!(later.iter().map(|e| e.event.id).collect::<Vec<_>>(), [a]);
    store.close().await.unwrap();

    // ...and is deleted by the next append that receives an event; the rest survives a
    // reopen and a prune of every event of no objective.
    let store = open(dir.path()).await;
    store
        .append(&records(4, 6_000, vec![received(c, "later", 60_000, None)]))
        .await
        .unwrap();
    store.prune(u64::MAX).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM posted_events")
        .fetch_one(&store.readers)
        .await
        .unwrap();
    assert_eq!(rows, 2, "the expired event is deleted");
    let ids: Vec<_> = store
        .posted_events(6_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, [a, c]);
}

fn hook_declared(name: &str, secret_env: &str) -> Event {
    Event::HookDeclared {
        name: name.into(),
        config: serde_json::json!({
            "name": name,
            "secret_env": secret_env,
            "template": { "goal": { "$payload": "/message" } },
        }),
    }
}

fn hook_deleted(name: &str) -> Event {
    Event::HookDeleted { name: name.into() }
}

/// The declared hooks as (name, secret_env).
async fn hooks(store: &SqliteStore) -> Vec<(String, String)> {
    store
        .declared_hooks()
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            let env = h.config["secret_env"].as_str().unwrap().to_owned();
            (h.name, env)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_declared_hooks_follow_their_events_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.declared_hooks().await.unwrap().is_empty());
    // Declared, declared and deleted within one batch, declared; listed by name.
    store
        .append(&records(
            1,
            1_000,
            vec![
                hook_declared("deploy", "DEPLOY_SECRET"),
                hook_declared("gone", "GONE_SECRET"),
                hook_deleted("gone"),
                hook_declared("build", "BUILD_SECRET"),
            ],
        ))
        .await
        .unwrap();
    let both = pairs(&[("build", "BUILD_SECRET"), ("deploy", "DEPLOY_SECRET")]);
    assert_eq!(hooks(&store).await, both);
    // A failed append (a gap in the sequence) changes nothing, though it deletes one and
    // declares another.
    let gap = store
        .append(&records(
            9,
            2_000,
            vec![hook_deleted("deploy"), hook_declared("new", "NEW_SECRET")],
        ))
        .await;
    assert!(gap.is_err());
    assert_eq!(hooks(&store).await, both);
    // Declared again after its deletion, with another variable: the latest configuration.
    store
        .append(&records(
            5,
            3_000,
            vec![
                hook_deleted("build"),
                hook_declared("build", "ROTATED_SECRET"),
            ],
        ))
        .await
        .unwrap();
    let rotated = pairs(&[("build", "ROTATED_SECRET"), ("deploy", "DEPLOY_SECRET")]);
    assert_eq!(hooks(&store).await, rotated);
    let deploy = &store.declared_hooks().await.unwrap()[1];
    assert_eq!(deploy.config["template"]["goal"]["$payload"], "/message");
    store.close().await.unwrap();

    // The index survives a reopen and a prune of every event of no objective.
    let store = open(dir.path()).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 6);
    assert_eq!(hooks(&store).await, rotated);
    store
        .append(&records(7, 4_000, vec![hook_deleted("deploy")]))
        .await
        .unwrap();
    assert_eq!(hooks(&store).await, pairs(&[("build", "ROTATED_SECRET")]));
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
    assert_eq!(hooks(&store).await, pairs(&[("deploy", "S")]));
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&store.readers)
            .await
            .unwrap();
    assert_eq!(versions, known_versions());
    store.close().await.unwrap();
}
