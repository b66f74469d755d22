//! The checks of the log itself: appending, reading back, refusing what is out of order,
//! surviving a restart, pruning and snapshots.

use swarm_protocol::samples::every_event_kind;
use swarm_protocol::{Event, ObjectiveId, ObjectiveStatus, TaskId};

use super::Backend;
use super::fixtures::{agent_event, record, records, submitted};
use crate::{EventStore, Pruned, Snapshot, StoreError, StoreInfo};

/// An empty log counts nothing; one event of every kind reads back as appended, whole and in
/// ranges, and moves the counters.
pub async fn every_kind_round_trips(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

    let batch = records(1, 1_700_000_000_000, every_event_kind());
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
}

/// `read_objective` returns one objective's events across batches, in order, and nothing of an
/// unknown objective.
pub async fn read_objective_returns_its_events_in_order(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

/// `read_objective_range` returns the objective's events with `after < seq <= upto`, and
/// nothing past the largest storable seq.
pub async fn read_objective_range_returns_the_events_between(backend: &mut impl Backend) {
    let store = backend.empty().await;
    let (a, b) = (ObjectiveId::new(), ObjectiveId::new());
    let ready = |objective, task| Event::TaskReady {
        objective,
        task: TaskId(task),
    };
    let batch = records(
        1,
        10,
        vec![
            submitted(a, 1, None),
            submitted(b, 3, None),
            ready(a, 1),
            ready(b, 3),
            ready(a, 2),
            Event::ObjectiveSucceeded { objective: a },
        ],
    );
    store.append(&batch).await.unwrap();
    let range = async |after, upto| {
        let events = store.read_objective_range(a, after, upto).await.unwrap();
        events.into_iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    assert_eq!(range(0, u64::MAX).await, [1, 3, 5, 6]);
    assert_eq!(range(1, 5).await, [3, 5]);
    assert_eq!(range(3, 4).await, Vec::<u64>::new());
    assert_eq!(range(5, 5).await, Vec::<u64>::new());
    assert_eq!(range(6, 100).await, Vec::<u64>::new());
    assert_eq!(range(u64::MAX, u64::MAX).await, Vec::<u64>::new());
    assert_eq!(
        store.read_objective_range(b, 0, 6).await.unwrap(),
        [batch[1].clone(), batch[3].clone()]
    );
}

/// An append that leaves a gap, repeats a seq, or skips or repeats within itself is refused as
/// out of order, and writes nothing; the log then goes on from where it was.
pub async fn append_refuses_gaps_and_duplicates_and_writes_nothing(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

/// Batches of thousands of events, objectives and ends (as the coordinator's group commit hands
/// over) are appended and indexed whole.
pub async fn large_batches_are_appended_and_indexed_whole(backend: &mut impl Backend) {
    let store = backend.empty().await;
    // 1,500 objectives submitted, then all ended in one batch.
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

/// What was appended reads back the same after a reopen, and the log goes on from there.
pub async fn appends_survive_a_reopen(backend: &mut impl Backend) {
    let first = records(1, 1, every_event_kind());
    let store = backend.empty().await;
    store.append(&first).await.unwrap();
    let info = store.info().await.unwrap();

    let store = backend.reopen(store).await;
    assert_eq!(store.read_after(0, 100).await.unwrap(), first);
    assert_eq!(store.info().await.unwrap(), info);
    let after = first.len() as u64;
    let second = records(after + 1, 2, vec![agent_event(1)]);
    store.append(&second).await.unwrap();

    let store = backend.reopen(store).await;
    assert_eq!(store.info().await.unwrap().last_seq, after + 1);
    assert_eq!(store.read_after(after, 100).await.unwrap(), second);
}

/// A prune removes the objectives that ended before the cutoff with all their events, and the
/// agent events older than it; never a running objective, and never the counters.
pub async fn prune_removes_old_finished_objectives_and_old_agent_events_only(
    backend: &mut impl Backend,
) {
    let store = backend.empty().await;
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
    assert!(
        store
            .objective_by_key("gone")
            .await
            .unwrap()
            .objective
            .is_some()
    );

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
    assert!(
        store
            .objective_by_key("gone")
            .await
            .unwrap()
            .objective
            .is_none()
    );
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

/// The latest snapshot is the one of the highest seq saved; saving at the same seq again
/// replaces it.
pub async fn the_latest_snapshot_is_the_newest_saved(backend: &mut impl Backend) {
    let store = backend.empty().await;
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
    let again = Snapshot {
        seq: 30,
        at_ms: 1,
        body: b"new".to_vec(),
    };
    store.save_snapshot(&again).await.unwrap();
    assert_eq!(store.latest_snapshot().await.unwrap(), Some(again));
    let store = backend.reopen(store).await;
    assert_eq!(
        store.latest_snapshot().await.unwrap().map(|s| s.seq),
        Some(30)
    );
}
