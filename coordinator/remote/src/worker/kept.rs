//! The results of the attempts an agent finished recently, to answer a repeated delivery
//! without running the attempt again: bounded by count and by bytes, oldest dropped first.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::{KEPT_BYTES_MAX, KEPT_RESULTS_MAX};

/// The finished results one agent keeps, oldest dropped first.
#[derive(Default)]
pub(super) struct Kept {
    order: VecDeque<String>,
    results: HashMap<String, Bytes>,
    bytes: usize,
}

impl Kept {
    pub(super) fn keep(&mut self, key: String, result: Bytes) {
        if key.is_empty() || result.len() > KEPT_BYTES_MAX {
            return;
        }
        if let Some(old) = self.results.insert(key.clone(), result.clone()) {
            self.bytes -= old.len();
        } else {
            self.order.push_back(key);
        }
        self.bytes += result.len();
        while self.order.len() > KEPT_RESULTS_MAX || self.bytes > KEPT_BYTES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.results.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<Bytes> {
        self.results.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_results_are_bounded_and_the_oldest_go_first() {
        let mut kept = Kept::default();
        for i in 0..KEPT_RESULTS_MAX + 10 {
            kept.keep(format!("k{i}"), Bytes::from_static(b"{}"));
        }
        assert_eq!(kept.results.len(), KEPT_RESULTS_MAX);
        assert!(kept.get("k0").is_none());
        assert!(kept.get(&format!("k{}", KEPT_RESULTS_MAX + 9)).is_some());

        let mut kept = Kept::default();
        let big = Bytes::from(vec![b' '; KEPT_BYTES_MAX / 2 + 1]);
        kept.keep("a".into(), big.clone());
        kept.keep("b".into(), big.clone());
        assert!(kept.get("a").is_none() && kept.get("b").is_some());
        assert_eq!(kept.bytes, big.len());
        kept.keep("b".into(), Bytes::from_static(b"1"));
        assert_eq!(kept.bytes, 1, "a result kept again replaces the old one");
    }
}
