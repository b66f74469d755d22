//! One registered agent's live state: its load, capacity, health and handle.
//!
//! A [`Slot`] is shared (through an `Arc`) by the id index and by the pool of every capability
//! the agent declares, so a load or health change is seen by all of them at once. Everything a
//! selector reads is an atomic; only the handle sits behind a lock.
//!
//! The one invariant this file keeps: `in_flight` only grows through [`Slot::try_acquire`],
//! whose compare-and-swap succeeds only while the agent accepts work and
//! `in_flight < capacity`. Concurrent selectors therefore never push an agent past its
//! capacity.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{PoisonError, RwLock};

use swarm_protocol::{AgentDescriptor, AgentId, Health};

/// The value stored in [`Slot::health`] once the agent has been deregistered. It is not a
/// [`Health`] discriminant, and `Health::from_u8` maps it to `Draining`, so a retired slot that
/// a selector still holds is never acquired, and `set_health` cannot bring it back.
const RETIRED: u8 = u8::MAX;

/// A registered agent as the registry keeps it.
pub(crate) struct Slot<H> {
    /// The registration as accepted. Its `max_concurrency` is the value given at registration;
    /// the live value is `capacity`.
    descriptor: AgentDescriptor,
    in_flight: AtomicU32,
    capacity: AtomicU32,
    /// A `Health` as `u8`, or [`RETIRED`].
    health: AtomicU8,
    /// An `RwLock` rather than a `Mutex` because the handle is read (cloned) once per lease by
    /// any number of concurrent selectors and written only when the agent's actor restarts:
    /// readers must not queue behind each other. A lock-free swap (`arc_swap`) would save the
    /// reader's lock word update but costs a dependency for a path that is already one atomic
    /// increment.
    handle: RwLock<H>,
}

/// An eligible agent's standing, as seen by one selector at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    degraded: bool,
    in_flight: u32,
    capacity: u32,
}

impl Load {
    /// True when `self` should be chosen over `other`: healthier first (`Up` before
    /// `Degraded`), then the lower `in_flight / capacity`, compared as cross-multiplied
    /// integers so there is no rounding and no float.
    pub(crate) fn is_better_than(&self, other: &Load) -> bool {
        if self.degraded != other.degraded {
            return !self.degraded;
        }
        u64::from(self.in_flight) * u64::from(other.capacity)
            < u64::from(other.in_flight) * u64::from(self.capacity)
    }

    /// True when the agent was `Up` (not `Degraded`).
    pub(crate) fn is_up(&self) -> bool {
        !self.degraded
    }
}

impl<H> Slot<H> {
    /// A fresh slot: `Up`, nothing in flight, capacity from the descriptor.
    pub(crate) fn new(descriptor: AgentDescriptor, handle: H) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            capacity: AtomicU32::new(descriptor.max_concurrency),
            health: AtomicU8::new(Health::Up as u8),
            handle: RwLock::new(handle),
            descriptor,
        }
    }

    pub(crate) fn id(&self) -> AgentId {
        self.descriptor.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.descriptor.name
    }

    pub(crate) fn descriptor(&self) -> &AgentDescriptor {
        &self.descriptor
    }

    /// The descriptor with the live capacity in `max_concurrency`.
    pub(crate) fn current_descriptor(&self) -> AgentDescriptor {
        AgentDescriptor {
            max_concurrency: self.capacity(),
            ..self.descriptor.clone()
        }
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Acquire)
    }

    pub(crate) fn set_capacity(&self, capacity: u32) {
        self.capacity.store(capacity, Ordering::Release);
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Stores `health` and returns the previous value, or `None` if the slot was retired
    /// (deregistered) meanwhile, in which case nothing changes.
    pub(crate) fn set_health(&self, health: Health) -> Option<Health> {
        self.health
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (old != RETIRED).then_some(health as u8)
            })
            .ok()
            .map(Health::from_u8)
    }

    /// Marks the slot deregistered: it never accepts work again.
    pub(crate) fn retire(&self) {
        self.health.store(RETIRED, Ordering::Release);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.health.load(Ordering::Acquire) == RETIRED
    }

    /// The agent's standing if it could take one more task right now, `None` if it is
    /// unhealthy or full.
    pub(crate) fn load(&self) -> Option<Load> {
        let health = self.health();
        if !health.accepts_work() {
            return None;
        }
        let in_flight = self.in_flight();
        let capacity = self.capacity();
        (in_flight < capacity).then_some(Load {
            degraded: health == Health::Degraded,
            in_flight,
            capacity,
        })
    }

    /// Takes one slot if the agent accepts work and has room. Health and capacity are re-read
    /// on every turn of the loop, so a selector that loses a race sees the latest state, and a
    /// turn only repeats when another thread changed `in_flight` (lock-free progress).
    pub(crate) fn try_acquire(&self) -> bool {
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            if !self.health().accepts_work() || current >= self.capacity() {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives one slot back; saturates at zero so a double release cannot wrap the counter.
    pub(crate) fn release(&self) {
        // `Err` means the count was already zero: nothing to give back.
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl<H: Clone> Slot<H> {
    /// A clone of the current handle.
    pub(crate) fn handle(&self) -> H {
        // A poisoned lock only means a writer panicked while dropping the old handle; the
        // stored value is still a whole `H` (either the old or the new one), so it is safe
        // to read.
        self.handle
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_handle(&self, handle: H) {
        *self.handle.write().unwrap_or_else(PoisonError::into_inner) = handle;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use swarm_protocol::Capability;

    use super::*;

    fn slot(capacity: u32) -> Slot<()> {
        let descriptor = AgentDescriptor {
            id: AgentId(1),
            name: "a".to_owned(),
            capabilities: vec![Capability::new("x").unwrap_or_else(|e| panic!("{e}"))],
            max_concurrency: capacity,
            labels: BTreeMap::new(),
            cost_hint: None,
            description: None,
        };
        Slot::new(descriptor, ())
    }

    #[test]
    fn acquire_stops_at_capacity_and_release_saturates() {
        let slot = slot(2);
        assert!(slot.try_acquire());
        assert!(slot.try_acquire());
        assert!(!slot.try_acquire());
        assert_eq!(slot.in_flight(), 2);
        slot.release();
        slot.release();
        slot.release();
        assert_eq!(slot.in_flight(), 0);
    }

    #[test]
    fn a_retired_slot_is_never_acquired_nor_revived() {
        let slot = slot(2);
        slot.retire();
        assert!(!slot.try_acquire());
        assert_eq!(slot.set_health(Health::Up), None);
        assert!(slot.load().is_none());
    }

    #[test]
    fn load_orders_health_first_then_ratio() {
        let up = |in_flight, capacity| Load {
            degraded: false,
            in_flight,
            capacity,
        };
        let degraded = Load {
            degraded: true,
            in_flight: 0,
            capacity: 10,
        };
        assert!(up(9, 10).is_better_than(&degraded));
        assert!(!degraded.is_better_than(&up(9, 10)));
        assert!(up(1, 4).is_better_than(&up(1, 2)));
        // Equal ratios: neither is better.
        assert!(!up(1, 2).is_better_than(&up(5, 10)));
        assert!(!up(5, 10).is_better_than(&up(1, 2)));
        // Large values do not overflow.
        assert!(up(u32::MAX - 1, u32::MAX).is_better_than(&up(u32::MAX - 1, u32::MAX - 1)));
    }
}
