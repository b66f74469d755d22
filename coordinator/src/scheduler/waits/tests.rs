//! [`Waits`] on plain values: mailboxes, waiters and idempotency keys.

use serde_json::json;
use swarm_protocol::ObjectiveId;

use super::*;

/// An event posted at `now` for `ttl_ms`.
fn posted(key: &str, payload: Value, now: u64, ttl_ms: u64) -> ExternalEvent {
    ExternalEvent {
        id: Uuid::now_v7(),
        key: key.into(),
        payload,
        received_at_ms: now,
        expires_at_ms: now + ttl_ms,
        consumed_by: None,
    }
}

fn new_event(key: &str, payload: Value, idempotency_key: &str) -> NewExternalEvent {
    NewExternalEvent {
        key: key.into(),
        payload,
        ttl: Duration::from_secs(60),
        idempotency_key: Some(idempotency_key.into()),
    }
}

fn consumer(task: u64) -> EventConsumer {
    EventConsumer {
        objective: ObjectiveId::new(),
        task: TaskId(task),
    }
}

#[test]
fn a_key_s_mailbox_is_first_in_first_out() {
    let mut waits = Waits::default();
    let first = posted("k", json!(1), 0, 100);
    let second = posted("k", json!(2), 0, 100);
    let other = posted("other", json!(3), 0, 100);
    let ids = (first.id, second.id);
    for event in [first, other, second] {
        assert_eq!(
            waits.keep(event, None, 0),
            Some(Duration::from_millis(100)),
            "kept for its time to live"
        );
    }
    assert_eq!(waits.kept(), 3);
    assert_eq!(waits.take("k", 10), Some(ids.0));
    assert_eq!(waits.take("k", 10), Some(ids.1));
    assert_eq!(waits.take("k", 10), None);
    assert_eq!(waits.kept(), 1, "the other key's event waits on");
}

#[test]
fn an_event_past_its_time_is_not_taken_before_its_timer_runs() {
    let mut waits = Waits::default();
    let old = posted("k", json!("old"), 0, 10);
    let fresh = posted("k", json!("fresh"), 5, 100);
    let fresh_id = fresh.id;
    waits.keep(old, None, 0);
    waits.keep(fresh, None, 5);
    assert_eq!(waits.take("k", 20), Some(fresh_id));
    assert_eq!(
        waits.keep(posted("k", json!(0), 0, 10), None, 10),
        None,
        "an event already past its time is not kept"
    );
    assert_eq!(waits.kept(), 0);
}

#[test]
fn a_repeated_idempotency_key_answers_with_its_event_or_is_refused() {
    let mut waits = Waits::default();
    let new = new_event("k", json!({"a": 1}), "idem-1");
    assert!(waits.repeated(&new).is_none(), "a new key");
    let event = posted("k", json!({"a": 1}), 0, 100);
    let id = event.id;
    waits.keep(event, Some("idem-1".into()), 0);
    let again = waits.repeated(&new).map(|r| r.map(|e| e.id));
    assert!(matches!(again, Some(Ok(found)) if found == id));
    let changed = new_event("k", json!({"a": 2}), "idem-1");
    assert!(matches!(
        waits.repeated(&changed),
        Some(Err(SchedulerError::EventConflict { existing, .. })) if existing == id
    ));
    // Consumed, the event still answers (with its consumer) until it expires.
    assert_eq!(waits.take("k", 1), Some(id));
    assert_eq!(
        waits.consume(id, consumer(7)).map(|(k, _)| k),
        Some("k".into())
    );
    let consumed = waits.repeated(&new).and_then(Result::ok);
    assert_eq!(
        consumed.and_then(|e| e.consumed_by).map(|c| c.task),
        Some(TaskId(7))
    );
    assert!(
        waits.pending().is_empty(),
        "a consumed event is not pending"
    );
    waits.expire(id, "k");
    assert!(
        waits.repeated(&new).is_none(),
        "the key goes with its event"
    );
}

#[test]
fn an_event_without_an_idempotency_key_is_forgotten_once_consumed() {
    let mut waits = Waits::default();
    let event = posted("k", json!("go"), 0, 100);
    let id = event.id;
    waits.keep(event, None, 0);
    assert_eq!(waits.pending().len(), 1);
    assert_eq!(waits.take("k", 1), Some(id));
    assert_eq!(
        waits.consume(id, consumer(1)),
        Some(("k".into(), json!("go")))
    );
    assert_eq!(waits.consume(id, consumer(2)), None, "consumed once");
    assert!(waits.pending().is_empty());
    let mut consumed = posted("k", json!(0), 0, 100);
    consumed.consumed_by = Some(consumer(3));
    assert_eq!(
        waits.keep(consumed, None, 0),
        None,
        "a consumed event is kept only to answer its idempotency key"
    );
}

#[test]
fn waiters_are_served_in_order_skipping_those_that_stopped() {
    let mut waits = Waits::default();
    for task in [1, 2, 3, 4] {
        waits.wait("k".into(), TaskId(task));
    }
    waits.stop_waiting("k", TaskId(3));
    assert_eq!(waits.waiting(), 3);
    // Task 1 no longer waits (say it was cancelled and its status shows it).
    let still = |t: TaskId| t != TaskId(1);
    assert_eq!(waits.next_waiter("k", still), Some(TaskId(2)));
    assert_eq!(waits.next_waiter("k", still), Some(TaskId(4)));
    assert_eq!(waits.next_waiter("k", still), None);
    assert_eq!(waits.waiting(), 0);
    assert_eq!(waits.next_waiter("other", still), None);
}

#[test]
fn an_event_consumed_on_arrival_leaves_the_mailbox() {
    let mut waits = Waits::default();
    let event = posted("k", json!(1), 0, 100);
    let id = event.id;
    waits.keep(event, None, 0);
    waits.unqueue("k", id);
    assert_eq!(waits.kept(), 0);
    assert_eq!(waits.take("k", 1), None);
    assert!(
        waits.consume(id, consumer(1)).is_some(),
        "still kept until consumed"
    );
}
