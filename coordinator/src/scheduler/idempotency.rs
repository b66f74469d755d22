//! The idempotency keys of submitted objectives the scheduler holds in memory: the newest
//! ones, up to a bound. Its rules:
//! - a key is held from the turn that accepts its objective, so two submits under one key
//!   never both create one;
//! - past the bound, the oldest key is dropped, but only once the event that submitted its
//!   objective is durable: from then on the log's objective index answers for it (until the
//!   objective is pruned after the retention period);
//! - a key not held is new only if the caller read the index as of a commit that holds every
//!   dropped key ([`Keys::is_new`]); otherwise the submit is refused, with nothing accepted.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use swarm_protocol::ObjectiveId;

/// The objective a key was first used for, and its fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Keyed {
    pub(super) objective: ObjectiveId,
    pub(super) fingerprint: u64,
}

/// The newest idempotency keys, oldest first, up to a bound.
#[derive(Debug)]
pub(super) struct Keys {
    held: FxHashMap<String, Keyed>,
    /// Keys in the order they were taken, with the sequence number of the event that took
    /// each (0 without a durable log).
    order: VecDeque<(String, u64)>,
    bound: usize,
    /// The sequence number of the newest key dropped (0: none): an index read as of this
    /// commit or a later one finds every dropped key.
    dropped_through: u64,
}

impl Keys {
    pub(super) fn new(bound: usize) -> Self {
        Self {
            held: FxHashMap::default(),
            order: VecDeque::new(),
            bound: bound.max(1),
            dropped_through: 0,
        }
    }

    /// The objective `key` was taken for, if the key is held.
    pub(super) fn get(&self, key: &str) -> Option<Keyed> {
        self.held.get(key).copied()
    }

    /// Whether a key that is not held is new, for a caller that did not find it in the log's
    /// index read as of commit `index_as_of` (`None`: not read): true when no key was dropped,
    /// or the read covered every dropped key.
    pub(super) fn is_new(&self, index_as_of: Option<u64>) -> bool {
        self.dropped_through == 0 || index_as_of.is_some_and(|seq| seq >= self.dropped_through)
    }

    /// Takes `key` for `keyed`, by the event with sequence number `seq`.
    pub(super) fn take(&mut self, key: String, keyed: Keyed, seq: u64) {
        if self.held.insert(key.clone(), keyed).is_none() {
            self.order.push_back((key, seq));
        }
    }

    /// Drops the oldest keys past the bound whose events are durable (`durable`: the last
    /// durable sequence number). `indexed`: the log's index holds the dropped keys; without a
    /// log (`false`, and `durable` is `u64::MAX`) a dropped key is forgotten, and a later
    /// submit under it is new. Returns how many were dropped.
    pub(super) fn drop_oldest(&mut self, durable: u64, indexed: bool) -> usize {
        let mut dropped = 0;
        while self.order.len() > self.bound
            && self.order.front().is_some_and(|&(_, seq)| seq <= durable)
        {
            if let Some((key, seq)) = self.order.pop_front() {
                self.held.remove(&key);
                if indexed {
                    self.dropped_through = self.dropped_through.max(seq);
                }
                dropped += 1;
            }
        }
        dropped
    }

    /// Keys in the log up to `last_seq` were left out of memory at start: a key not held must
    /// be read from the index.
    pub(super) fn dropped_before_start(&mut self, last_seq: u64) {
        self.dropped_through = self.dropped_through.max(last_seq);
    }

    /// How many keys are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> Keyed {
        Keyed {
            objective: ObjectiveId::new(),
            fingerprint: 7,
        }
    }

    #[test]
    fn the_oldest_keys_past_the_bound_go_once_durable() {
        let mut keys = Keys::new(2);
        let (a, b, c) = (keyed(), keyed(), keyed());
        keys.take("a".into(), a, 1);
        keys.take("b".into(), b, 2);
        keys.take("c".into(), c, 3);
        // Nothing durable yet: all three held, past the bound.
        assert_eq!(keys.drop_oldest(0, true), 0);
        assert_eq!(keys.len(), 3);
        assert!(keys.is_new(None));
        // `a` is durable: it goes, the others stay.
        assert_eq!(keys.drop_oldest(1, true), 1);
        assert_eq!(keys.get("a"), None);
        assert_eq!(keys.get("b"), Some(b));
        assert_eq!(keys.get("c"), Some(c));
        assert_eq!(keys.drop_oldest(3, true), 0, "at the bound");
    }

    #[test]
    fn once_a_key_was_dropped_a_miss_is_new_only_for_an_index_read_that_holds_it() {
        let mut keys = Keys::new(1);
        keys.take("a".into(), keyed(), 5);
        keys.take("b".into(), keyed(), 6);
        assert!(
            keys.is_new(None),
            "nothing dropped: the memory knows every key"
        );
        keys.drop_oldest(u64::MAX, true);
        assert!(!keys.is_new(None), "`a` may be asked for: read the index");
        assert!(!keys.is_new(Some(4)), "read before `a` was committed");
        assert!(keys.is_new(Some(5)));
    }

    #[test]
    fn keys_left_out_at_start_are_read_from_the_index() {
        let mut keys = Keys::new(10);
        keys.dropped_before_start(40);
        assert!(!keys.is_new(None));
        assert!(!keys.is_new(Some(39)));
        assert!(keys.is_new(Some(40)));
    }

    #[test]
    fn taking_a_held_key_again_keeps_one_entry() {
        let mut keys = Keys::new(1);
        let a = keyed();
        keys.take("a".into(), a, 1);
        keys.take("a".into(), a, 2);
        assert_eq!(keys.order.len(), 1);
        assert_eq!(keys.drop_oldest(u64::MAX, true), 0);
    }

    #[test]
    fn without_a_log_a_dropped_key_is_forgotten() {
        let mut keys = Keys::new(1);
        keys.take("a".into(), keyed(), 0);
        keys.take("b".into(), keyed(), 0);
        assert_eq!(keys.drop_oldest(u64::MAX, false), 1);
        assert_eq!(keys.get("a"), None);
        assert!(
            keys.is_new(None),
            "no index to read: a forgotten key is new"
        );
    }
}
