//! Events posted from outside and the `wait` tasks that wait for them.
//!
//! [`Waits`] owns the posted events the scheduler keeps, each key's mailbox of events no task
//! took yet, each key's waiting tasks, and the idempotency keys of kept events. Its rules:
//! - an event goes to the first task still waiting for its key; with none waiting, it waits
//!   in its key's mailbox, and the next task to wait for the key takes the oldest one (first
//!   in, first out) that is still within its time;
//! - an event is kept until a task consumes it or it expires; one posted with an idempotency
//!   key is kept, consumed or not, until it expires, and a repeat of its key answers with it
//!   (the same key and payload) or is refused (anything else).
//!
//! The scheduler's part (below [`Waits`]) runs `wait` tasks: it starts them, satisfies them
//! with an event or fails them when their time is up, and arms the timers.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde_json::Value;
use swarm_protocol::{
    Event, EventConsumer, ExternalEvent, FailureKind, NewExternalEvent, SchedulerError,
    SchedulerMsg, TaskId, TaskStatus, objective::check_idempotency_key,
};
use uuid::Uuid;

use super::failures::AttemptCost;
use super::schema::review_reason;
use super::state::SchedulerState;

/// A posted event the scheduler keeps: until a `wait` task consumes it, or (when the sender
/// gave an idempotency key, which keeps answering with it) until it expires.
#[derive(Debug)]
struct KeptEvent {
    event: ExternalEvent,
    idempotency_key: Option<String>,
}

/// The posted events kept and the tasks waiting for them.
#[derive(Debug, Default)]
pub(super) struct Waits {
    /// Posted events kept, by id.
    posted: FxHashMap<Uuid, KeptEvent>,
    /// Per key, the kept events no task consumed yet, oldest first.
    mailbox: FxHashMap<String, VecDeque<Uuid>>,
    /// Per key, the `wait` tasks waiting, in the order they started; a task leaves when it
    /// takes an event, times out or is cancelled.
    waiting: FxHashMap<String, VecDeque<TaskId>>,
    /// Idempotency keys of kept events: the event and its fingerprint.
    event_keys: FxHashMap<String, (Uuid, u64)>,
}

/// Takes `item` out of the queue of `key` (waiting tasks, or kept events), and drops the
/// queue once it is empty.
fn remove_from<T: PartialEq>(queues: &mut FxHashMap<String, VecDeque<T>>, key: &str, item: &T) {
    if let Some(queue) = queues.get_mut(key) {
        queue.retain(|t| t != item);
        if queue.is_empty() {
            queues.remove(key);
        }
    }
}

/// What an event's idempotency key is compared by: its key and payload.
fn event_fingerprint(key: &str, payload: &Value) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(key.as_bytes());
    hasher.write_u8(0);
    hasher.write(&serde_json::to_vec(payload).unwrap_or_default());
    hasher.finish()
}

impl Waits {
    /// For an event posted again with an idempotency key still kept: the event first posted
    /// with it (the same key and payload), or why not. `None` for a key not kept (or none).
    pub(super) fn repeated(
        &self,
        new: &NewExternalEvent,
    ) -> Option<Result<ExternalEvent, SchedulerError>> {
        let idem = new.idempotency_key.as_ref()?;
        let &(existing, first) = self.event_keys.get(idem)?;
        let kept = self.posted.get(&existing)?;
        Some(if first == event_fingerprint(&new.key, &new.payload) {
            Ok(kept.event.clone())
        } else {
            Err(SchedulerError::EventConflict {
                key: idem.clone(),
                existing,
                event: kept.event.key.clone(),
            })
        })
    }

    /// Keeps a posted event (an unconsumed one in its key's mailbox). Returns how long it is
    /// kept (its expiry timer), or `None` when it is not kept: past its time, or consumed
    /// with no idempotency key to answer.
    pub(super) fn keep(
        &mut self,
        event: ExternalEvent,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Option<Duration> {
        if event.expires_at_ms <= now {
            return None;
        }
        let id = event.id;
        if let Some(idem) = &idempotency_key {
            let fingerprint = event_fingerprint(&event.key, &event.payload);
            self.event_keys.insert(idem.clone(), (id, fingerprint));
        }
        if event.consumed_by.is_none() {
            self.mailbox
                .entry(event.key.clone())
                .or_default()
                .push_back(id);
        } else if idempotency_key.is_none() {
            return None;
        }
        let ttl = Duration::from_millis(event.expires_at_ms - now);
        self.posted.insert(
            id,
            KeptEvent {
                event,
                idempotency_key,
            },
        );
        Some(ttl)
    }

    /// The oldest kept event of `key` still within its time, taken out of the mailbox. (An
    /// event past its time whose expiry timer has not run yet is not taken.)
    pub(super) fn take(&mut self, key: &str, now: u64) -> Option<Uuid> {
        let queue = self.mailbox.get_mut(key)?;
        let mut found = None;
        while let Some(event) = queue.pop_front() {
            if self
                .posted
                .get(&event)
                .is_some_and(|k| k.event.expires_at_ms > now)
            {
                found = Some(event);
                break;
            }
        }
        if queue.is_empty() {
            self.mailbox.remove(key);
        }
        found
    }

    /// Takes an event consumed on arrival out of its key's mailbox.
    pub(super) fn unqueue(&mut self, key: &str, id: Uuid) {
        remove_from(&mut self.mailbox, key, &id);
    }

    /// `task` waits for `key`, after the tasks waiting already.
    pub(super) fn wait(&mut self, key: String, task: TaskId) {
        self.waiting.entry(key).or_default().push_back(task);
    }

    /// The first task waiting for `key` that `still_waits`, taken off the key's waiters
    /// (with any before it that no longer wait).
    pub(super) fn next_waiter(
        &mut self,
        key: &str,
        still_waits: impl Fn(TaskId) -> bool,
    ) -> Option<TaskId> {
        let queue = self.waiting.get_mut(key)?;
        let mut found = None;
        while let Some(task) = queue.pop_front() {
            if still_waits(task) {
                found = Some(task);
                break;
            }
        }
        if queue.is_empty() {
            self.waiting.remove(key);
        }
        found
    }

    /// `task` no longer waits for `key` (its time is up, or it was cancelled).
    pub(super) fn stop_waiting(&mut self, key: &str, task: TaskId) {
        remove_from(&mut self.waiting, key, &task);
    }

    /// `by` consumes a kept event: returns the event's key and payload. The event is
    /// forgotten unless its idempotency key keeps answering with it (and so with its
    /// consumer).
    pub(super) fn consume(&mut self, id: Uuid, by: EventConsumer) -> Option<(String, Value)> {
        let kept = self.posted.get_mut(&id)?;
        kept.event.consumed_by = Some(by);
        let taken = (kept.event.key.clone(), kept.event.payload.clone());
        if kept.idempotency_key.is_none() {
            // Nothing asks about it again.
            self.posted.remove(&id);
        }
        Some(taken)
    }

    /// A kept event's time is up: it is forgotten, with its idempotency key.
    pub(super) fn expire(&mut self, id: Uuid, key: &str) {
        if let Some(kept) = self.posted.remove(&id)
            && let Some(idem) = kept.idempotency_key
        {
            self.event_keys.remove(&idem);
        }
        remove_from(&mut self.mailbox, key, &id);
    }

    /// The kept events no task consumed yet, oldest first.
    pub(super) fn pending(&self) -> Vec<ExternalEvent> {
        let mut events: Vec<ExternalEvent> = self
            .posted
            .values()
            .filter(|k| k.event.consumed_by.is_none())
            .map(|k| k.event.clone())
            .collect();
        events.sort_unstable_by_key(|e| e.id);
        events
    }

    /// Events in the mailboxes (kept, not consumed).
    pub(super) fn kept(&self) -> u64 {
        self.mailbox.values().map(|q| q.len() as u64).sum()
    }

    /// Tasks waiting for an event (every waiting task is among its key's waiters, and only
    /// while it waits).
    pub(super) fn waiting(&self) -> u64 {
        self.waiting.values().map(|q| q.len() as u64).sum()
    }
}

impl SchedulerState {
    /// A `wait` task is ready: it waits for its event (for at most its timeout), and takes
    /// one posted before, if one is kept.
    pub(super) fn start_wait(&mut self, id: TaskId) {
        let now = self.turn_ms;
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let Some((key, timeout)) = node.wait_for() else {
            return;
        };
        let (objective, key) = (node.objective, key.to_owned());
        let until = now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self.emit(Event::TaskWaiting {
            objective,
            task: id,
            event: key.clone(),
            until_ms: until,
        });
        // The wait is the task's next attempt; its timer names it.
        let attempt = self.graph.tasks.get(id).map_or(0, |n| n.record.attempt);
        self.myself
            .send_after(timeout, move || SchedulerMsg::WaitExpired {
                task: id,
                attempt,
            });
        self.take_or_wait(id, key);
    }

    /// The waiting task takes the oldest kept event of its key, or joins the key's waiters.
    pub(super) fn take_or_wait(&mut self, id: TaskId, key: String) {
        match self.waits.take(&key, self.turn_ms) {
            Some(event) => self.satisfy(id, event),
            None => self.waits.wait(key, id),
        }
    }

    /// A waiting task consumes a kept event: its payload is the task's output (or goes to
    /// review, when it does not match the task's `output_schema`).
    fn satisfy(&mut self, id: TaskId, event: Uuid) {
        let Some(objective) = self.graph.tasks.get(id).map(|n| n.objective) else {
            return;
        };
        let by = EventConsumer {
            objective,
            task: id,
        };
        let Some((key, payload)) = self.waits.consume(event, by) else {
            return;
        };
        self.emit(Event::WaitSatisfied {
            objective,
            task: id,
            event,
            key,
            payload,
        });
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        let checked = match (node.schema(), &node.record.output) {
            (Some(schema), Some(payload)) => schema.check(payload),
            _ => Ok(()),
        };
        match checked {
            Err(errors) => {
                let (payload, reason) = (node.record.output.clone(), review_reason(&errors));
                self.send_to_review(id, payload, reason, errors, AttemptCost::default(), false);
            }
            Ok(()) => {
                self.stats.tasks_succeeded += 1;
                self.task_done(id);
            }
        }
    }

    /// A `wait` task's time is up: if it still waits, it fails with a timeout.
    pub(crate) fn on_wait_expired(&mut self, id: TaskId, attempt: u32) {
        let Some(node) = self.graph.tasks.get(id) else {
            return;
        };
        if node.record.attempt != attempt || node.record.status != TaskStatus::Waiting {
            return;
        }
        let Some((key, timeout)) = node.wait_for() else {
            return;
        };
        let message = format!(
            "no event `{key}` arrived within {}",
            humantime::format_duration(timeout)
        );
        self.waits.stop_waiting(key, id);
        self.fail_task(
            id,
            None,
            FailureKind::Timeout,
            message,
            None,
            AttemptCost::default(),
        );
    }

    /// An event posted from outside: recorded, then consumed by the first task waiting for its
    /// key, or kept until one comes or it expires. A repeated idempotency key returns the
    /// event first posted with it.
    pub(crate) fn post_event(
        &mut self,
        new: NewExternalEvent,
    ) -> Result<ExternalEvent, SchedulerError> {
        if let Some(idem) = &new.idempotency_key {
            check_idempotency_key(idem).map_err(SchedulerError::BadIdempotencyKey)?;
        }
        if let Some(answer) = self.waits.repeated(&new) {
            return answer;
        }
        let now = self.turn_ms;
        let mut answer = ExternalEvent {
            id: Uuid::now_v7(),
            key: new.key,
            payload: new.payload,
            received_at_ms: now,
            expires_at_ms: now
                .saturating_add(u64::try_from(new.ttl.as_millis()).unwrap_or(u64::MAX)),
            consumed_by: None,
        };
        self.emit(Event::EventReceived {
            id: answer.id,
            key: answer.key.clone(),
            payload: answer.payload.clone(),
            expires_at_ms: answer.expires_at_ms,
            idempotency_key: new.idempotency_key.clone(),
        });
        let id = answer.id;
        self.keep(answer.clone(), new.idempotency_key, now);
        // The first task still waiting for the key takes it.
        let tasks = &self.graph.tasks;
        let waiter = self.waits.next_waiter(&answer.key, |task| {
            tasks
                .get(task)
                .is_some_and(|n| n.record.status == TaskStatus::Waiting)
        });
        if let Some(task) = waiter {
            self.waits.unqueue(&answer.key, id);
            answer.consumed_by = self.graph.tasks.get(task).map(|n| EventConsumer {
                objective: n.objective,
                task,
            });
            self.satisfy(task, id);
        }
        Ok(answer)
    }

    /// Keeps a posted event and arms its expiry.
    pub(super) fn keep(&mut self, event: ExternalEvent, idempotency_key: Option<String>, now: u64) {
        let (id, key) = (event.id, event.key.clone());
        if let Some(ttl) = self.waits.keep(event, idempotency_key, now) {
            self.myself
                .send_after(ttl, move || SchedulerMsg::EventExpired { id, key });
        }
    }

    /// A kept event's time is up: it is dropped (no record: its expiry was in its
    /// `EventReceived`).
    pub(crate) fn on_event_expired(&mut self, id: Uuid, key: &str) {
        self.waits.expire(id, key);
    }

    /// The kept events no task consumed yet, oldest first.
    pub(crate) fn pending_events(&self) -> Vec<ExternalEvent> {
        self.waits.pending()
    }
}

#[cfg(test)]
mod tests;
