//! The checks of the indexes a store keeps beside the log: each follows its events in the same
//! transaction as their append (a refused append changes none), and survives a reopen and a
//! prune of the events it was built from.

use swarm_protocol::{Event, EventConsumer, ObjectiveId, ObjectiveStatus, TaskId};

use super::Backend;
use super::fixtures::{
    agent_event, declared, declared_agent_models, declared_hook_secrets, hook_declared,
    hook_deleted, objective_spec, pairs, received, record, records, registered, schedule_spec,
    submitted, undeclared,
};
use crate::{EventStore, StoredObjective, StoredSchedule};

/// The objective index records each submit with its key and fingerprint, and each end; an
/// objective submitted and ended in one batch is indexed ended.
pub async fn the_objective_index_follows_status_and_keys(backend: &mut impl Backend) {
    let store = backend.empty().await;
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
            fingerprint: objective_spec(2).fingerprint(),
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
    assert_eq!(
        store.objective_by_key("key-a").await.unwrap().objective,
        Some(stored_a)
    );
    assert_eq!(
        store.objective_by_key("key-c").await.unwrap().objective,
        Some(stored_c)
    );
    let missing = store.objective_by_key("key-b").await.unwrap();
    assert_eq!((missing.objective, missing.as_of_seq), (None, 7));
    assert!(store.objective(ObjectiveId::new()).await.unwrap().is_none());
}

/// `running_objectives` lists the unfinished objectives, oldest submission first, whatever
/// their ids' order.
pub async fn running_objectives_are_the_unfinished_oldest_first(backend: &mut impl Backend) {
    let store = backend.empty().await;
    assert!(store.running_objectives().await.unwrap().is_empty());
    let mut ids: Vec<ObjectiveId> = (0..4).map(|_| ObjectiveId::new()).collect();
    // Submitted in the reverse of their ids' order, at increasing times.
    ids.reverse();
    for (seq, id) in (1..).zip(&ids) {
        store
            .append(&[record(seq, seq * 10, submitted(*id, seq * 2, None))])
            .await
            .unwrap();
    }
    store
        .append(&records(
            5,
            100,
            vec![
                Event::ObjectiveSucceeded { objective: ids[1] },
                Event::ObjectiveCancelled { objective: ids[3] },
            ],
        ))
        .await
        .unwrap();
    assert_eq!(store.running_objectives().await.unwrap(), [ids[0], ids[2]]);
}

/// `list_objectives` pages by id (the last id of a page is the cursor of the next) and filters
/// by status.
pub async fn list_objectives_pages_by_id_and_filters_by_status(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

/// The next agent id is one past the highest registration, only grows, and survives a reopen
/// and a prune of the registrations.
pub async fn next_agent_follows_the_highest_registration(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

    let store = backend.reopen(store).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 4);
    let info = store.info().await.unwrap();
    assert_eq!((info.events, info.next_agent), (0, 5));
}

/// The declared agents follow declarations in order of first declaration; a failed append
/// changes none; they survive a reopen and a prune of every agent event.
pub async fn the_declared_agents_follow_declarations_in_the_same_transaction(
    backend: &mut impl Backend,
) {
    let store = backend.empty().await;
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
    assert_eq!(declared_agent_models(&store).await, expected(1, "m-1"));
    // Declared again under a new id (a restart registered it anew): it keeps its place.
    store
        .append(&records(5, 2, vec![declared(7, "a")]))
        .await
        .unwrap();
    assert_eq!(declared_agent_models(&store).await, expected(7, "m-7"));
    // A failed append changes nothing.
    let gap = store.append(&records(9, 3, vec![undeclared(7, "a")])).await;
    assert!(gap.is_err());
    assert_eq!(declared_agent_models(&store).await, expected(7, "m-7"));

    let store = backend.reopen(store).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 5);
    assert_eq!(declared_agent_models(&store).await, expected(7, "m-7"));
    store
        .append(&records(6, 4, vec![undeclared(7, "a")]))
        .await
        .unwrap();
    assert_eq!(
        declared_agent_models(&store).await,
        [("c".to_owned(), 3, "m-3".to_owned())]
    );
}

/// The schedules follow creation, pause, resume, deletion and fires (the latest slot wins);
/// they survive a reopen and a prune of every event of no objective.
pub async fn the_schedules_follow_their_events_in_the_same_transaction(backend: &mut impl Backend) {
    let store = backend.empty().await;
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

    let store = backend.reopen(store).await;
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

/// Posted events are listed from their receipt until they expire, consumed or not, in the
/// order received; they survive a reopen and a prune of every event of no objective.
pub async fn the_posted_events_follow_their_events_and_expire(backend: &mut impl Backend) {
    let store = backend.empty().await;
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
    assert_eq!(events[0].event.expires_at_ms, 10_000);
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
    // What expired by the time asked about is not returned.
    let later = store.posted_events(5_000).await.unwrap();
    assert_eq!(later.iter().map(|e| e.event.id).collect::<Vec<_>>(), [a]);

    let store = backend.reopen(store).await;
    store
        .append(&records(4, 6_000, vec![received(c, "later", 60_000, None)]))
        .await
        .unwrap();
    store.prune(u64::MAX).await.unwrap();
    let ids: Vec<_> = store
        .posted_events(6_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id)
        .collect();
    assert_eq!(ids, [a, c]);
}

/// The declared hooks follow declarations and deletions, by name with their latest
/// configuration; a failed append changes none; they survive a reopen and a prune of every
/// event of no objective.
pub async fn the_declared_hooks_follow_their_events_in_the_same_transaction(
    backend: &mut impl Backend,
) {
    let store = backend.empty().await;
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
    assert_eq!(declared_hook_secrets(&store).await, both);
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
    assert_eq!(declared_hook_secrets(&store).await, both);
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
    assert_eq!(declared_hook_secrets(&store).await, rotated);
    let deploy = &store.declared_hooks().await.unwrap()[1];
    assert_eq!(deploy.config["template"]["goal"]["$payload"], "/message");

    let store = backend.reopen(store).await;
    assert_eq!(store.prune(u64::MAX).await.unwrap().events, 6);
    assert_eq!(declared_hook_secrets(&store).await, rotated);
    store
        .append(&records(7, 4_000, vec![hook_deleted("deploy")]))
        .await
        .unwrap();
    assert_eq!(
        declared_hook_secrets(&store).await,
        pairs(&[("build", "ROTATED_SECRET")])
    );
}
