//! The index changes of an append ([`IndexChanges`]), as SQLite statements inside the append's
//! transaction.
//!
//! What changes is decided by [`crate::projection`], for every backend; this file only says how
//! in SQLite's SQL. New objectives and objective ends, as many as there are events in a busy
//! batch, go in multi-row statements; the other indexes change rarely (an API call each) and take
//! one statement per change, in log order, so a later change to the same name wins.

use std::path::Path;

use sqlx::sqlite::SqliteConnection;

use super::error::{sql_int, store_error};
use super::multirow::{MultiRowStatements, SqliteQuery, execute_multirow};
use crate::projection::{
    DeclaredAgentChange, DeclaredHookChange, ExternalEventChange, IndexChanges, ScheduleChange,
    status_name,
};
use crate::{StoreError, StoreInfo};

/// Applies `changes` on `conn` (inside the append's transaction), given the counters `before`
/// the batch.
pub(super) async fn apply_index_changes(
    conn: &mut SqliteConnection,
    path: &Path,
    statements: &MultiRowStatements,
    changes: IndexChanges,
    before: StoreInfo,
) -> Result<(), StoreError> {
    let err = |e| store_error(path, e);
    let after = changes.counters.applied_to(before);

    execute_multirow(
        conn,
        &statements.objectives,
        changes.objectives.submitted,
        |query, row| {
            query
                .bind(row.id)
                .bind(row.idempotency_key)
                .bind(row.fingerprint)
                .bind(status_name(row.status))
                .bind(row.submitted_at_ms)
                .bind(row.ended_at_ms)
        },
    )
    .await
    .map_err(err)?;
    execute_multirow(
        conn,
        &statements.objective_ends,
        changes.objectives.ended,
        |query, end| {
            query
                .bind(end.id)
                .bind(status_name(end.status))
                .bind(end.ended_at_ms)
        },
    )
    .await
    .map_err(err)?;

    for change in changes.declared_agents {
        declared_agent_statement(change)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
    }
    for change in changes.schedules {
        schedule_statement(change)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
    }
    for change in changes.posted_events {
        posted_event_statement(change)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
    }
    for change in changes.declared_hooks {
        declared_hook_statement(change)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
    }

    sqlx::query(
        "UPDATE meta SET value = CASE key \
         WHEN 'last_seq' THEN ? WHEN 'next_task' THEN ? WHEN 'next_agent' THEN ? ELSE ? END \
         WHERE key IN ('last_seq', 'next_task', 'next_agent', 'events')",
    )
    .bind(sql_int(path, "seq", after.last_seq)?)
    .bind(sql_int(path, "task id", after.next_task)?)
    .bind(sql_int(path, "agent id", after.next_agent)?)
    .bind(sql_int(path, "event count", after.events)?)
    .execute(&mut *conn)
    .await
    .map_err(err)?;
    Ok(())
}

/// The statement for a change to the declared agents.
fn declared_agent_statement(change: DeclaredAgentChange) -> SqliteQuery {
    match change {
        // On a conflict `declared_seq` stays: a name declared again keeps its place.
        DeclaredAgentChange::Declare {
            name,
            agent,
            config,
            declared_seq,
        } => sqlx::query(
            "INSERT INTO declared_agents (name, agent, config, declared_seq) \
             VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET agent = excluded.agent, config = excluded.config",
        )
        .bind(name)
        .bind(agent)
        .bind(config)
        .bind(declared_seq),
        DeclaredAgentChange::Undeclare { name } => {
            sqlx::query("DELETE FROM declared_agents WHERE name = ?").bind(name)
        }
    }
}

/// The statement for a change to the schedules.
fn schedule_statement(change: ScheduleChange) -> SqliteQuery {
    match change {
        ScheduleChange::Create {
            name,
            spec,
            paused,
            created_seq,
            created_at_ms,
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
        .bind(created_seq)
        .bind(created_at_ms)
        .bind(created_at_ms),
        ScheduleChange::Pause { name } => {
            sqlx::query("UPDATE schedules SET paused = ? WHERE name = ?")
                .bind(true)
                .bind(name)
        }
        ScheduleChange::Resume { name, at_ms } => {
            sqlx::query("UPDATE schedules SET paused = ?, changed_at_ms = ? WHERE name = ?")
                .bind(false)
                .bind(at_ms)
                .bind(name)
        }
        ScheduleChange::Delete { name } => {
            sqlx::query("DELETE FROM schedules WHERE name = ?").bind(name)
        }
        ScheduleChange::Fire {
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
    }
}

/// The statement for a change to the posted events.
fn posted_event_statement(change: ExternalEventChange) -> SqliteQuery {
    match change {
        ExternalEventChange::Expire { now_ms } => {
            sqlx::query("DELETE FROM posted_events WHERE expires_at_ms <= ?").bind(now_ms)
        }
        ExternalEventChange::Receive {
            id,
            key,
            payload,
            received_seq,
            received_at_ms,
            expires_at_ms,
            idempotency_key,
        } => sqlx::query(
            "INSERT INTO posted_events (id, key, payload, received_seq, received_at_ms, \
             expires_at_ms, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(key)
        .bind(payload)
        .bind(received_seq)
        .bind(received_at_ms)
        .bind(expires_at_ms)
        .bind(idempotency_key),
        ExternalEventChange::Consume {
            id,
            objective,
            task,
        } => sqlx::query(
            "UPDATE posted_events SET consumed_objective = ?, consumed_task = ? WHERE id = ?",
        )
        .bind(objective)
        .bind(task)
        .bind(id),
    }
}

/// The statement for a change to the declared hooks.
fn declared_hook_statement(change: DeclaredHookChange) -> SqliteQuery {
    match change {
        DeclaredHookChange::Declare {
            name,
            config,
            declared_seq,
        } => sqlx::query(
            "INSERT INTO declared_hooks (name, config, declared_seq) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, \
             declared_seq = excluded.declared_seq",
        )
        .bind(name)
        .bind(config)
        .bind(declared_seq),
        DeclaredHookChange::Delete { name } => {
            sqlx::query("DELETE FROM declared_hooks WHERE name = ?").bind(name)
        }
    }
}
