//! The writer connection and the readers: reads run beside the writer and cannot write, a
//! damaged row is reported, a writer left inside a transaction is replaced, and a commit is
//! durable without a clean close.

use std::time::Duration;

use sqlx::Connection;
use swarm_protocol::samples::every_event_kind;

use super::open;
use crate::conformance::fixtures::{agent_event, records};
use crate::{EventStore, StoreError};

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
async fn a_dropped_store_keeps_what_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let first = records(1, 1, every_event_kind());
    let store = open(dir.path()).await;
    store.append(&first).await.unwrap();
    // Dropped, not closed: the commit alone must make it durable.
    drop(store);

    let store = open(dir.path()).await;
    assert_eq!(store.read_after(0, 100).await.unwrap(), first);
    let after = first.len() as u64;
    let second = records(after + 1, 2, vec![agent_event(1)]);
    store.append(&second).await.unwrap();
    drop(store);

    let store = open(dir.path()).await;
    assert_eq!(store.info().await.unwrap().last_seq, after + 1);
    assert_eq!(store.read_after(after, 100).await.unwrap(), second);
}
