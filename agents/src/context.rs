//! What a running attempt uses to show it is alive and to keep its partial output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// Handed to each attempt. Every call counts as progress for the idle timeout; partial output
/// is kept in the failure outcome if the attempt stalls or runs out of time, so what was
/// streamed so far is not lost.
#[derive(Clone, Debug)]
pub struct TaskContext {
    inner: Arc<Progress>,
}

#[derive(Debug)]
struct Progress {
    /// Tokio time (which tests can pause) at which the attempt started.
    started: tokio::time::Instant,
    /// Nanoseconds after `started` of the latest sign of life.
    last_beat_ns: AtomicU64,
    /// When the task became ready to run, in real time (for allocation latency).
    ready_at: Instant,
    partial: Mutex<Option<Value>>,
}

impl TaskContext {
    /// A context for an attempt starting now.
    pub fn new(ready_at: Instant) -> Self {
        Self {
            inner: Arc::new(Progress {
                started: tokio::time::Instant::now(),
                last_beat_ns: AtomicU64::new(0),
                ready_at,
                partial: Mutex::new(None),
            }),
        }
    }

    /// Marks the attempt alive without new output.
    pub fn heartbeat(&self) {
        let ns = self.inner.started.elapsed().as_nanos();
        self.inner
            .last_beat_ns
            .fetch_max(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Replaces the partial output, and counts as a heartbeat.
    pub fn set_partial(&self, output: Value) {
        *self.lock_partial() = Some(output);
        self.heartbeat();
    }

    /// Appends streamed text to a string partial output, and counts as a heartbeat.
    pub fn append_text(&self, chunk: &str) {
        {
            let mut partial = self.lock_partial();
            match &mut *partial {
                Some(Value::String(text)) => text.push_str(chunk),
                other => *other = Some(Value::String(chunk.to_owned())),
            }
        }
        self.heartbeat();
    }

    /// The partial output so far.
    pub fn partial(&self) -> Option<Value> {
        self.lock_partial().clone()
    }

    /// When the task became ready (before it waited for and was sent to this agent).
    pub fn ready_at(&self) -> Instant {
        self.inner.ready_at
    }

    /// When the attempt started, in tokio time.
    pub fn started(&self) -> tokio::time::Instant {
        self.inner.started
    }

    /// The tokio time of the latest sign of life (the start, if none yet).
    pub fn last_beat(&self) -> tokio::time::Instant {
        let ns = self.inner.last_beat_ns.load(Ordering::Relaxed);
        self.inner.started + std::time::Duration::from_nanos(ns)
    }

    fn lock_partial(&self) -> std::sync::MutexGuard<'_, Option<Value>> {
        // A panic while holding this lock can only come from `String::push_str` running out of
        // memory; the value is still a valid JSON value, so the poison is ignored.
        self.inner
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
