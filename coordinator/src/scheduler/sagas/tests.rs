//! [`Saga`] on plain values: the order compensations run in, and where a saga goes on after a
//! restart.

use swarm_protocol::{Capability, TaskKey};

use super::*;

/// The record of compensation `id` (of task `original`) in `status`.
fn compensation(id: u64, original: u64, status: TaskStatus) -> TaskRecord {
    let key = TaskKey::new(format!("t{original}")).expect("a valid key");
    let capability = Capability::new("undo").expect("a valid capability");
    let mut record = TaskRecord::compensation(TaskId(id), key, capability, TaskId(original));
    record.status = status;
    record
}

#[test]
fn the_newest_success_is_compensated_first() {
    let compensable = [TaskId(1), TaskId(4), TaskId(2), TaskId(7)];
    // Task 2 no longer counts (say, its success was taken back).
    let order = Saga::compensations(&compensable, |t| t != TaskId(2));
    assert_eq!(order, vec![TaskId(7), TaskId(4), TaskId(1)]);
    let mut saga = Saga::new("it broke".into(), order.into_iter().collect());
    assert_eq!(saga.reason(), "it broke");
    assert_eq!(saga.next(), Some(TaskId(7)));
    assert_eq!(saga.next(), Some(TaskId(4)));
    assert_eq!(saga.next(), Some(TaskId(1)));
    assert_eq!(saga.next(), None, "then the objective ends");
}

#[test]
fn after_a_restart_the_started_compensation_goes_on_and_the_rest_follow() {
    let mut declared = TaskRecord::compensation(
        TaskId(9),
        TaskKey::new("plain").expect("a valid key"),
        Capability::new("code").expect("a valid capability"),
        TaskId(1),
    );
    // Not a compensation: left out.
    declared.compensates = None;
    declared.status = TaskStatus::Backlog;
    let tasks = [
        declared,
        compensation(10, 3, TaskStatus::Succeeded),
        compensation(11, 2, TaskStatus::Running),
        compensation(12, 1, TaskStatus::Backlog),
        compensation(13, 0, TaskStatus::Backlog),
    ];
    let (current, pending) = Saga::resumed(&tasks);
    assert_eq!(current.map(|t| t.id), Some(TaskId(11)));
    assert_eq!(pending, VecDeque::from([TaskId(12), TaskId(13)]));
    let (current, pending) = Saga::resumed(&tasks[..2]);
    assert!(current.is_none(), "the next one starts");
    assert!(pending.is_empty());
}
