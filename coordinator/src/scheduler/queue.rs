//! Ready tasks waiting for an agent of one capability: highest priority first, then oldest.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use swarm_protocol::TaskId;

/// A queued task. Entries are never removed from the middle: a task that is cancelled or
/// re-queued leaves a stale entry behind, recognised by its `seq` no longer matching the task's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) priority: i32,
    pub(crate) seq: u64,
    pub(crate) task: TaskId,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then the lower (older) sequence number.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The ready queue of one capability.
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue {
    heap: BinaryHeap<Entry>,
    /// Live (non-stale) entries; the heap may hold more.
    live: usize,
}

impl ReadyQueue {
    pub(crate) fn push(&mut self, entry: Entry) {
        self.heap.push(entry);
        self.live += 1;
    }

    /// True when no live entry waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Records that a queued task left the queue without being popped (cancelled).
    pub(crate) fn forget_one(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// The first live entry, dropping stale ones on the way. `is_live` says whether an entry
    /// still stands for its task.
    pub(crate) fn peek(&mut self, is_live: impl Fn(&Entry) -> bool) -> Option<Entry> {
        while let Some(top) = self.heap.peek() {
            if is_live(top) {
                return Some(*top);
            }
            self.heap.pop();
        }
        self.live = 0;
        None
    }

    /// Removes the entry `peek` returned.
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let entry = self.heap.pop()?;
        self.live = self.live.saturating_sub(1);
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_then_age() {
        let mut q = ReadyQueue::default();
        for (priority, seq) in [(0, 1), (5, 2), (0, 0), (5, 3)] {
            q.push(Entry {
                priority,
                seq,
                task: TaskId(seq),
            });
        }
        let mut order = Vec::new();
        while q.peek(|_| true).is_some() {
            order.push(q.pop().map(|e| e.seq).unwrap_or(99));
        }
        assert_eq!(order, vec![2, 3, 0, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn stale_entries_are_skipped() {
        let mut q = ReadyQueue::default();
        q.push(Entry {
            priority: 0,
            seq: 1,
            task: TaskId(1),
        });
        q.push(Entry {
            priority: 0,
            seq: 2,
            task: TaskId(2),
        });
        q.forget_one();
        let head = q.peek(|e| e.task != TaskId(1));
        assert_eq!(head.map(|e| e.task), Some(TaskId(2)));
        assert_eq!(q.len(), 1);
    }
}
