//! The reads: the log, the counters and the indexes, on the pool of read-only connections.
//!
//! WAL lets the readers run beside the writer without blocking it or being blocked by it. Every
//! stored value is checked as it is decoded: a row that does not decode is reported as
//! [`StoreError::Corrupt`], naming the record, rather than skipped.

use std::path::Path;
use std::str::FromStr;

use sqlx::Sqlite;
use sqlx::sqlite::SqliteArguments;
use swarm_protocol::{
    AgentId, EventConsumer, EventRecord, ExternalEvent, ObjectiveId, ObjectiveStatus, ScheduleSpec,
    TaskId,
};

use super::SqliteStore;
use super::error::{sql_int, store_error, stored_u64};
use crate::projection::{status_from_name, status_name};
use crate::{
    DeclaredAgent, DeclaredHook, KeyLookup, Snapshot, StoreError, StoreInfo, StoredEvent,
    StoredObjective, StoredSchedule,
};

/// The counters in `meta`, read on `executor` (a reader, or the writer inside a transaction).
pub(super) async fn read_counters<'e>(
    executor: impl sqlx::Executor<'e, Database = Sqlite>,
    path: &Path,
) -> Result<StoreInfo, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT key, value FROM meta")
        .fetch_all(executor)
        .await
        .map_err(|e| store_error(path, e))?;
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
        *slot = Some(stored_u64(path, || format!("counter {key}"), value)?);
    }
    let missing = |what: &str| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("counter {what}"),
        cause: "missing".into(),
    };
    Ok(StoreInfo {
        last_seq: last_seq.ok_or_else(|| missing("last_seq"))?,
        next_task: next_task.ok_or_else(|| missing("next_task"))?,
        next_agent: next_agent.ok_or_else(|| missing("next_agent"))?,
        events: events.ok_or_else(|| missing("events"))?,
    })
}

/// A query for `(seq, body)` rows of the `events` table.
type EventsQuery<'q> = sqlx::query::QueryAs<'q, Sqlite, (i64, String), SqliteArguments>;

/// The columns of the objective index, in the order the reads select them.
type ObjectiveColumns = (String, Option<String>, i64, String, i64, Option<i64>);

impl SqliteStore {
    /// The counters (see [`crate::EventStore::info`]).
    pub(super) async fn load_info(&self) -> Result<StoreInfo, StoreError> {
        read_counters(&self.readers, &self.path).await
    }

    /// Runs `query` and decodes the events it selects.
    async fn load_events(&self, query: EventsQuery<'_>) -> Result<Vec<EventRecord>, StoreError> {
        let rows = query
            .fetch_all(&self.readers)
            .await
            .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(seq, body)| decode_event(&self.path, seq, &body))
            .collect()
    }

    /// See [`crate::EventStore::read_after`].
    pub(super) async fn load_events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // Past the largest storable seq there is nothing to read; a limit past i64 is no limit.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.load_events(
            sqlx::query_as("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(after)
                .bind(limit),
        )
        .await
    }

    /// See [`crate::EventStore::read_objective`].
    pub(super) async fn load_objective_events(
        &self,
        objective: ObjectiveId,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.load_events(
            sqlx::query_as("SELECT seq, body FROM events WHERE objective = ? ORDER BY seq")
                .bind(objective.to_string()),
        )
        .await
    }

    /// See [`crate::EventStore::read_objective_range`].
    pub(super) async fn load_objective_range(
        &self,
        objective: ObjectiveId,
        after: u64,
        upto: u64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.load_events(
            sqlx::query_as(
                "SELECT seq, body FROM events WHERE objective = ? AND seq > ? AND seq <= ? \
                 ORDER BY seq",
            )
            .bind(objective.to_string())
            .bind(after)
            .bind(upto),
        )
        .await
    }

    /// See [`crate::EventStore::running_objectives`].
    pub(super) async fn load_running_objectives(&self) -> Result<Vec<ObjectiveId>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM objectives WHERE status = 'running' ORDER BY submitted_at_ms, id",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(id,)| {
                id.parse().map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("objective id {id:?}"),
                    cause: format!("{e}"),
                })
            })
            .collect()
    }

    /// See [`crate::EventStore::objective`].
    pub(super) async fn load_objective(
        &self,
        objective: ObjectiveId,
    ) -> Result<Option<StoredObjective>, StoreError> {
        let row: Option<ObjectiveColumns> = sqlx::query_as(
            "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
             FROM objectives WHERE id = ?",
        )
        .bind(objective.to_string())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
        row.map(|row| decode_objective(&self.path, row)).transpose()
    }

    /// See [`crate::EventStore::keyed_objectives`].
    pub(super) async fn load_keyed_objectives(&self) -> Result<Vec<StoredObjective>, StoreError> {
        let rows: Vec<ObjectiveColumns> = sqlx::query_as(
            "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
             FROM objectives WHERE idempotency_key IS NOT NULL ORDER BY submitted_at_ms, id",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|row| decode_objective(&self.path, row))
            .collect()
    }

    /// See [`crate::EventStore::objective_by_key`].
    pub(super) async fn load_objective_by_key(&self, key: &str) -> Result<KeyLookup, StoreError> {
        let error = |e| store_error(&self.path, e);
        // One read transaction: both reads see the same commit.
        let mut tx = self.readers.begin().await.map_err(error)?;
        let (last_seq,): (i64,) = sqlx::query_as("SELECT value FROM meta WHERE key = 'last_seq'")
            .fetch_one(&mut *tx)
            .await
            .map_err(error)?;
        let row: Option<ObjectiveColumns> = sqlx::query_as(
            "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
             FROM objectives WHERE idempotency_key = ?",
        )
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error)?;
        tx.commit().await.map_err(error)?;
        Ok(KeyLookup {
            objective: row
                .map(|row| decode_objective(&self.path, row))
                .transpose()?,
            as_of_seq: stored_u64(&self.path, || "the counter last_seq".into(), last_seq)?,
        })
    }

    /// See [`crate::EventStore::list_objectives`].
    pub(super) async fn load_objective_page(
        &self,
        status: Option<ObjectiveStatus>,
        after: Option<ObjectiveId>,
        limit: usize,
    ) -> Result<Vec<StoredObjective>, StoreError> {
        // Ids are stored as lowercase hyphenated UUIDs, whose text order is the UUID's order, so
        // the primary key serves both the cursor and the ordering. The empty string sorts before
        // every id.
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<ObjectiveColumns> = sqlx::query_as(
            "SELECT id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms \
             FROM objectives WHERE id > ? AND (? IS NULL OR status = ?) ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(status.map(status_name))
        .bind(status.map(status_name))
        .bind(limit)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|row| decode_objective(&self.path, row))
            .collect()
    }

    /// See [`crate::EventStore::latest_snapshot`].
    pub(super) async fn load_latest_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<(i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, at_ms, body FROM snapshots ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| store_error(&self.path, e))?;
        let Some((seq, at_ms, body)) = row else {
            return Ok(None);
        };
        let what = || format!("snapshot {seq}");
        Ok(Some(Snapshot {
            seq: stored_u64(&self.path, what, seq)?,
            at_ms: stored_u64(&self.path, what, at_ms)?,
            body,
        }))
    }

    /// See [`crate::EventStore::declared_agents`].
    pub(super) async fn load_declared_agents(&self) -> Result<Vec<DeclaredAgent>, StoreError> {
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT name, agent, config FROM declared_agents ORDER BY declared_seq")
                .fetch_all(&self.readers)
                .await
                .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(name, agent, config)| {
                let what = || format!("declared agent `{name}`");
                let agent = AgentId(stored_u64(&self.path, what, agent)?);
                let config = serde_json::from_str(&config).map_err(|e| StoreError::Corrupt {
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
    }

    /// See [`crate::EventStore::schedules`].
    pub(super) async fn load_schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        type Row = (String, String, bool, i64, i64, Option<i64>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT name, spec, paused, created_at_ms, changed_at_ms, last_slot_ms, \
             last_objective FROM schedules ORDER BY name",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
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
                        stored_u64(&self.path, what, slot)?,
                        objective
                            .parse::<ObjectiveId>()
                            .map_err(|e| corrupt(e.to_string()))?,
                    )),
                    _ => None,
                };
                Ok(StoredSchedule {
                    spec,
                    created_at_ms: stored_u64(&self.path, what, created)?,
                    changed_at_ms: stored_u64(&self.path, what, changed)?,
                    last_fire,
                })
            })
            .collect()
    }

    /// See [`crate::EventStore::posted_events`].
    pub(super) async fn load_posted_events(
        &self,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
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
        let now = sql_int(&self.path, "time", now_ms)?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, key, payload, received_at_ms, expires_at_ms, idempotency_key, \
             consumed_objective, consumed_task FROM posted_events \
             WHERE expires_at_ms > ? ORDER BY received_seq",
        )
        .bind(now)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(
                |(id, key, payload, received, expires, idempotency_key, objective, task)| {
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
                            task: TaskId(stored_u64(&self.path, what, task)?),
                        }),
                        _ => None,
                    };
                    Ok(StoredEvent {
                        event: ExternalEvent {
                            id: id
                                .parse()
                                .map_err(|e: uuid::Error| corrupt(e.to_string()))?,
                            key,
                            payload: serde_json::from_str(&payload)
                                .map_err(|e| corrupt(e.to_string()))?,
                            received_at_ms: stored_u64(&self.path, what, received)?,
                            expires_at_ms: stored_u64(&self.path, what, expires)?,
                            consumed_by,
                        },
                        idempotency_key,
                    })
                },
            )
            .collect()
    }

    /// See [`crate::EventStore::declared_hooks`].
    pub(super) async fn load_declared_hooks(&self) -> Result<Vec<DeclaredHook>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, config FROM declared_hooks ORDER BY name")
                .fetch_all(&self.readers)
                .await
                .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(name, config)| {
                let config = serde_json::from_str(&config).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("declared hook `{name}`"),
                    cause: e.to_string(),
                })?;
                Ok(DeclaredHook { name, config })
            })
            .collect()
    }
}

/// An objective index row, checked.
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
        // The bits stored by the objective projection: the cast is the storage format.
        fingerprint: fingerprint as u64,
        status: status_from_name(&status)
            .ok_or_else(|| corrupt(format!("unknown status `{status}`")))?,
        submitted_at_ms: stored_u64(path, what, submitted_at_ms)?,
        ended_at_ms: ended_at_ms.map(|t| stored_u64(path, what, t)).transpose()?,
    })
}

/// An event's body, checked against the seq it is stored under.
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
