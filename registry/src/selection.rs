//! The pool of agents that share one capability, and how one of them is chosen.
//!
//! Selection must cost the same whether ten or ten thousand agents share a capability, because
//! the scheduler selects once per assignment. Small pools (at most [`SCAN_MAX`] members) are
//! scanned whole, which is exact: the eligible member that is `Up` and least loaded wins.
//! Larger pools use the power of two choices: two distinct random members are compared and the
//! better one is taken, which keeps the most loaded agent within a few tasks of the average
//! (Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing") at a constant cost.
//!
//! Guarantees, whatever the pool size: only a member that accepts work and has room is
//! acquired (the acquire itself re-checks both, see `slot.rs`), and when some member is
//! eligible and no other thread is racing for it, a select finds one.

use std::sync::Arc;

use swarm_protocol::AgentId;

use crate::slot::{Load, Slot};

/// Pools with at most this many members are scanned whole on every select.
pub(crate) const SCAN_MAX: usize = 16;

/// How many pairs a large pool samples before it settles for a `Degraded` member or falls back
/// to a scan.
const SAMPLE_ROUNDS: usize = 8;

/// The agents that declared one capability.
pub(crate) struct Pool<H> {
    members: Vec<Arc<Slot<H>>>,
}

impl<H> Default for Pool<H> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
        }
    }
}

impl<H> Pool<H> {
    pub(crate) fn push(&mut self, slot: Arc<Slot<H>>) {
        self.members.push(slot);
    }

    /// Removes the member with this id, if present. Linear in the pool size; deregistration is
    /// rare and off the selection path, so it does not pay for a position index.
    pub(crate) fn remove(&mut self, id: AgentId) {
        if let Some(position) = self.members.iter().position(|slot| slot.id() == id) {
            self.members.swap_remove(position);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True if a member other than `except` accepts work (full or not).
    pub(crate) fn has_other_accepting(&self, except: AgentId) -> bool {
        self.members
            .iter()
            .any(|slot| slot.id() != except && slot.health().accepts_work() && !slot.is_retired())
    }

    /// Chooses a member and takes one of its slots; `None` when no member accepts work and has
    /// room (or, under heavy contention, when every try lost its race; see
    /// [`Pool::acquire_by_scan`]).
    pub(crate) fn acquire(&self) -> Option<&Arc<Slot<H>>> {
        if self.members.len() <= SCAN_MAX {
            self.acquire_by_scan()
        } else {
            // The sampling rounds fail only when nearly every member is full or unhealthy.
            // The scan then costs O(members), but the scheduler is expected not to select
            // while a capability's queue is non-empty (it waits for a release instead), so
            // this path is taken about once per saturation, not once per task.
            self.acquire_by_sampling()
                .or_else(|| self.acquire_by_scan())
        }
    }

    /// Scans every member, tries the best eligible one, and rescans if another thread took
    /// its last slot first. Each lost race means some member just became full or unhealthy;
    /// since releases can make members eligible again, the loop is bounded at twice the pool
    /// size and then reports `None`, which the caller treats like "all busy".
    fn acquire_by_scan(&self) -> Option<&Arc<Slot<H>>> {
        let tries = self.members.len().saturating_mul(2).max(1);
        for _ in 0..tries {
            let (slot, _) = best(self.members.iter())?;
            if slot.try_acquire() {
                return Some(slot);
            }
        }
        None
    }

    /// Like a scan, leaving out `except` (for a task that agent refused for good).
    pub(crate) fn acquire_other(&self, except: AgentId) -> Option<&Arc<Slot<H>>> {
        let tries = self.members.len().saturating_mul(2).max(1);
        for _ in 0..tries {
            let (slot, _) = best(self.members.iter().filter(|s| s.id() != except))?;
            if slot.try_acquire() {
                return Some(slot);
            }
        }
        None
    }

    /// Power of two choices. An `Up` winner is acquired at once; a `Degraded` winner is only
    /// remembered, and taken after all rounds if no `Up` member with room was sampled, so
    /// that `Degraded` agents get work only when (16 random samples suggest) no `Up` one has
    /// room. `None` when every round failed; the caller then scans.
    fn acquire_by_sampling(&self) -> Option<&Arc<Slot<H>>> {
        let count = self.members.len();
        debug_assert!(count >= 2, "sampling needs two distinct members");
        let mut fallback: Option<(&Arc<Slot<H>>, Load)> = None;
        for _ in 0..SAMPLE_ROUNDS {
            let first = fastrand::usize(..count);
            // Offset by 1..count so the second pick is a different member.
            let second = (first + 1 + fastrand::usize(..count - 1)) % count;
            let pair = [&self.members[first], &self.members[second]];
            let Some((slot, load)) = best(pair.into_iter()) else {
                continue;
            };
            if load.is_up() {
                if slot.try_acquire() {
                    return Some(slot);
                }
            } else if fallback
                .as_ref()
                .is_none_or(|(_, kept)| load.is_better_than(kept))
            {
                fallback = Some((slot, load));
            }
        }
        let (slot, _) = fallback?;
        slot.try_acquire().then_some(slot)
    }
}

/// The eligible member that should be chosen first (ties go to the earliest), with its load.
fn best<'a, H>(members: impl Iterator<Item = &'a Arc<Slot<H>>>) -> Option<(&'a Arc<Slot<H>>, Load)>
where
    H: 'a,
{
    let mut best: Option<(&Arc<Slot<H>>, Load)> = None;
    for slot in members {
        let Some(load) = slot.load() else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(_, kept)| load.is_better_than(kept))
        {
            best = Some((slot, load));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use swarm_protocol::{AgentDescriptor, Capability, Health};

    use super::*;

    fn pool(size: u64, capacity: u32) -> Pool<()> {
        let mut pool = Pool::default();
        for id in 1..=size {
            let descriptor = AgentDescriptor {
                id: AgentId(id),
                name: format!("agent-{id}"),
                capabilities: vec![Capability::new("x").unwrap_or_else(|e| panic!("{e}"))],
                max_concurrency: capacity,
                labels: BTreeMap::new(),
                cost_hint: None,
                description: None,
            };
            pool.push(Arc::new(Slot::new(descriptor, ())));
        }
        pool
    }

    #[test]
    fn scan_fills_evenly_then_reports_full() {
        let pool = pool(4, 2);
        let mut counts = BTreeMap::<AgentId, u32>::new();
        for _ in 0..8 {
            let slot = pool.acquire().unwrap_or_else(|| panic!("room left"));
            *counts.entry(slot.id()).or_default() += 1;
            // Least-loaded: nobody gets a second task before everyone has a first.
            let loads: Vec<u32> = pool.members.iter().map(|s| s.in_flight()).collect();
            let spread = loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0);
            assert!(spread <= 1, "{loads:?}");
        }
        assert!(pool.acquire().is_none());
        assert!(counts.values().all(|&n| n == 2), "{counts:?}");
    }

    #[test]
    fn sampling_prefers_up_over_degraded() {
        fastrand::seed(7);
        let pool = pool(100, 1_000);
        for slot in pool.members.iter().filter(|s| s.id().get() % 2 == 0) {
            slot.set_health(Health::Degraded);
        }
        // A round sees no up member with probability about 1/4, so all 8 rounds miss with
        // probability 1.5e-5: with a fixed seed, every pick is an up member.
        for _ in 0..200 {
            let slot = pool.acquire().unwrap_or_else(|| panic!("room left"));
            assert_eq!(slot.health(), Health::Up, "{} chosen", slot.id());
        }
    }

    #[test]
    fn sampling_falls_back_to_a_scan_when_almost_everyone_is_full() {
        fastrand::seed(7);
        let pool = pool(1_000, 1);
        for slot in &pool.members {
            if slot.id() != AgentId(777) {
                assert!(slot.try_acquire());
            }
        }
        let slot = pool
            .acquire()
            .unwrap_or_else(|| panic!("one member has room"));
        assert_eq!(slot.id(), AgentId(777));
        assert!(pool.acquire().is_none());
    }

    #[test]
    fn remove_drops_only_that_member() {
        let mut pool = pool(3, 1);
        pool.remove(AgentId(2));
        pool.remove(AgentId(42));
        let ids: Vec<AgentId> = pool.members.iter().map(|s| s.id()).collect();
        assert_eq!(ids, vec![AgentId(1), AgentId(3)]);
    }
}
