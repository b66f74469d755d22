//! How the SQLite backend reclaims space: snapshots beyond the newest two, and posted events
//! once expired, are deleted from the file (the trait only says they are no longer returned).

use swarm_protocol::{EventConsumer, ObjectiveId};

use super::open;
use crate::EventStore;
use crate::Snapshot;
use crate::conformance::fixtures::{received, records};

#[tokio::test]
async fn snapshots_keep_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for seq in [10, 20, 30] {
        let snapshot = Snapshot {
            seq,
            at_ms: seq * 100,
            body: vec![seq as u8; 3],
        };
        store.save_snapshot(&snapshot).await.unwrap();
    }
    let kept: Vec<i64> = sqlx::query_scalar("SELECT seq FROM snapshots ORDER BY seq")
        .fetch_all(&store.readers)
        .await
        .unwrap();
    assert_eq!(kept, [20, 30]);
}

#[tokio::test]
async fn expired_posted_events_are_deleted_by_the_next_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b, c) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let objective = ObjectiveId::new();
    store
        .append(&records(
            1,
            1_000,
            vec![
                received(a, "build", 10_000, Some("ci-1")),
                received(b, "deploy", 5_000, None),
                swarm_protocol::Event::WaitSatisfied {
                    objective,
                    task: swarm_protocol::TaskId(4),
                    event: a,
                    key: "build".into(),
                    payload: serde_json::json!({"key": "build"}),
                },
            ],
        ))
        .await
        .unwrap();
    let rows = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM posted_events")
            .fetch_one(&store.readers)
            .await
            .unwrap()
    };
    // Expired by the time asked about, but not yet deleted: nothing received since.
    assert_eq!(store.posted_events(5_000).await.unwrap().len(), 1);
    assert_eq!(rows().await, 2);
    // The next receipt deletes what expired by its time; a consumed event stays until it
    // expires, and a prune of every event of no objective leaves the index alone.
    store
        .append(&records(4, 6_000, vec![received(c, "later", 60_000, None)]))
        .await
        .unwrap();
    store.prune(u64::MAX).await.unwrap();
    assert_eq!(rows().await, 2, "the expired event is deleted");
    let kept = store.posted_events(6_000).await.unwrap();
    assert_eq!(
        kept[0].event.consumed_by,
        Some(EventConsumer {
            objective,
            task: swarm_protocol::TaskId(4)
        })
    );
}
