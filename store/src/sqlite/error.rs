//! How SQLite's errors and the log's integers become [`StoreError`]s that name the file.

use std::path::Path;

use crate::StoreError;
use crate::log::to_sql_int;

/// SQLite's primary result codes that get their own variant (the low byte of an extended code).
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_NOTADB: i32 = 26;

/// The store's error for what sqlx said about `path`: a full disk and a file that is not a
/// database get their own variants; the rest is I/O.
pub(super) fn store_error(path: &Path, error: sqlx::Error) -> StoreError {
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

/// `value` as the log's signed 64-bit integer, or an error naming `what` and the file.
pub(super) fn sql_int(path: &Path, what: &'static str, value: u64) -> Result<i64, StoreError> {
    to_sql_int(what, value).map_err(|e| e.at(path))
}

/// A stored integer that must not be negative, or [`StoreError::Corrupt`] naming the record
/// `what` describes.
pub(super) fn stored_u64(
    path: &Path,
    what: impl Fn() -> String,
    value: i64,
) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        path: path.to_owned(),
        what: what(),
        cause: format!("negative value {value}"),
    })
}
