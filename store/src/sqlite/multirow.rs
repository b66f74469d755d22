//! Multi-row statements of fixed shapes, for the rows an append writes in bulk: events, new
//! objectives and objective ends.
//!
//! The append is the group-commit path, so it is built for throughput: rows go in with
//! multi-row statements of 1,024 rows, then one statement per binary digit of the remainder.
//! There are only [`STATEMENT_SHAPES`] shapes per statement, so each is prepared once per
//! connection and found again in sqlx's statement cache, however the batches are sized.

use std::sync::Arc;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{AssertSqlSafe, Sqlite};

/// Statement shapes per multi-row statement: shape `k` has `2^k` rows.
const STATEMENT_SHAPES: usize = 11;

/// Rows in the largest multi-row statement. At 6 parameters a row this stays far below SQLite's
/// limit of 32,766 bound parameters.
const CHUNK_ROWS_MAX: usize = 1 << (STATEMENT_SHAPES - 1);

/// A statement being bound.
pub(super) type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;

/// The multi-row statements of an append, one per shape (index `k` has `2^k` rows), built once
/// per store.
pub(super) struct MultiRowStatements {
    /// Into the `events` table: the log.
    pub(super) events: Vec<Arc<str>>,
    /// Into the objective index: objectives submitted.
    pub(super) objectives: Vec<Arc<str>>,
    /// Of the objective index: objectives ended.
    pub(super) objective_ends: Vec<Arc<str>>,
}

impl MultiRowStatements {
    /// Builds every shape of every statement.
    pub(super) fn new() -> Self {
        Self {
            events: every_shape(
                "INSERT INTO events (seq, at_ms, objective, kind, body) VALUES ",
                "(?, ?, ?, ?, ?)",
                "",
            ),
            objectives: every_shape(
                "INSERT INTO objectives \
                 (id, idempotency_key, fingerprint, status, submitted_at_ms, ended_at_ms) VALUES ",
                "(?, ?, ?, ?, ?, ?)",
                "",
            ),
            // VALUES names its columns column1, column2, … in SQLite and PostgreSQL alike.
            objective_ends: every_shape(
                "UPDATE objectives SET status = v.column2, ended_at_ms = v.column3 FROM (VALUES ",
                "(?, ?, ?)",
                ") AS v WHERE objectives.id = v.column1",
            ),
        }
    }
}

/// `head`, then `tuple` repeated `2^k` times with commas, then `tail`, for each shape `k`.
fn every_shape(head: &str, tuple: &str, tail: &str) -> Vec<Arc<str>> {
    (0..STATEMENT_SHAPES)
        .map(|shape| {
            let rows = 1_usize << shape;
            let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 2) + tail.len());
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
}

/// Runs `statements` (one per shape) over `rows`, binding each row with `bind`, in as few
/// statements as the shapes allow.
pub(super) async fn execute_multirow<T>(
    conn: &mut SqliteConnection,
    statements: &[Arc<str>],
    rows: Vec<T>,
    bind: impl Fn(SqliteQuery, T) -> SqliteQuery,
) -> Result<(), sqlx::Error> {
    let count = rows.len();
    let mut rows = rows.into_iter();
    for shape in statement_shapes(count) {
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(&statements[shape])));
        for row in rows.by_ref().take(1 << shape) {
            query = bind(query, row);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The statement shapes that cover `rows` rows: full chunks first, then one statement per binary
/// digit of the remainder, largest first.
fn statement_shapes(rows: usize) -> impl Iterator<Item = usize> {
    let rest = rows % CHUNK_ROWS_MAX;
    std::iter::repeat_n(STATEMENT_SHAPES - 1, rows / CHUNK_ROWS_MAX).chain(
        (0..STATEMENT_SHAPES - 1)
            .rev()
            .filter(move |k| rest & (1 << k) != 0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_every_row_once_with_few_statements() {
        for rows in [0, 1, 2, 3, 1000, 1023, 1024, 1025, 5000, 10_000] {
            let sizes: Vec<usize> = statement_shapes(rows).map(|k| 1 << k).collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows);
            assert!(sizes.iter().all(|&s| s <= CHUNK_ROWS_MAX));
            assert!(sizes.len() < rows / CHUNK_ROWS_MAX + STATEMENT_SHAPES);
        }
    }

    #[test]
    fn shape_k_binds_two_to_the_k_rows() {
        let statements = MultiRowStatements::new();
        for (list, columns) in [
            (&statements.events, 5),
            (&statements.objectives, 6),
            (&statements.objective_ends, 3),
        ] {
            assert_eq!(list.len(), STATEMENT_SHAPES);
            for (shape, sql) in list.iter().enumerate() {
                assert_eq!(sql.matches('?').count(), (1 << shape) * columns, "{sql}");
            }
        }
    }
}
