//! The data directory and its files: its lock, what is refused as not ours (and left alone),
//! and a full disk, which loses nothing committed.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{open, open_err};
use crate::conformance::fixtures::{agent_event, records};
use crate::sqlite::open::DB_FILE;
use crate::sqlite::{SqliteOptions, SqliteStore};
use crate::{EventStore, StoreError};

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
