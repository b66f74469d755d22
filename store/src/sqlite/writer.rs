//! The one writer connection, and how a write begins on it.
//!
//! Every write (append, snapshot, prune) runs in one `BEGIN IMMEDIATE` transaction on this
//! connection, behind the store's mutex, so writes are serialized and a failed one leaves nothing
//! behind. A write that failed, or whose future was dropped halfway, may have left its
//! transaction open (its rollback is queued on the connection, and may itself fail if SQLite
//! already rolled back): the next write checks, and replaces a connection that is stuck.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tracing::warn;

use super::error::store_error;
use crate::StoreError;

/// The writer connection and what it takes to replace it.
pub(super) struct Writer {
    /// The connection; tests reach it to damage the file on purpose.
    pub(super) conn: SqliteConnection,
    /// To reconnect when a failed write left the connection inside a transaction.
    options: SqliteConnectOptions,
    /// False from the start of a write until it finished cleanly.
    settled: bool,
}

impl Writer {
    /// A writer on `conn`, opened with `options`.
    pub(super) fn new(conn: SqliteConnection, options: SqliteConnectOptions) -> Self {
        Self {
            conn,
            options,
            settled: true,
        }
    }

    /// The connection, with no transaction left over from an earlier write; marks a write as
    /// begun until [`Writer::finish_write`].
    pub(super) async fn begin_write(
        &mut self,
        path: &Path,
    ) -> Result<&mut SqliteConnection, StoreError> {
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
                    .map_err(|e| store_error(path, e))?;
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

    /// Marks the write begun by [`Writer::begin_write`] as finished cleanly (committed).
    pub(super) fn finish_write(&mut self) {
        self.settled = true;
    }

    /// Closes the connection; SQLite checkpoints the WAL into the database file.
    pub(super) async fn close(self, path: &Path) -> Result<(), StoreError> {
        self.conn.close().await.map_err(|e| store_error(path, e))
    }
}
