//! The discovery registry: which agents exist, what they can do, how busy and how healthy they
//! are, and which one should take the next task.
//!
//! The scheduler asks "who can do `summarize` right now?" for every assignment, while agents'
//! load and health change underneath it. So the index is shared memory (sharded maps and
//! atomics) rather than an actor: a selection is a handful of atomic loads and one
//! compare-and-swap, with no mailbox round-trip, and any number of threads may select at once.
//! [`Registry`] is generic over the handle `H` used to reach an agent (the coordinator uses
//! `ractor::ActorRef<AgentMsg>`, the tests use `()`), so this crate knows nothing about ractor.
//!
//! # Guarantees
//! - **Capacity is never exceeded.** A slot is taken by a compare-and-swap that succeeds only
//!   while `in_flight < capacity`, so concurrent selectors cannot push an agent past its
//!   capacity. (Lowering the capacity with [`Registry::set_capacity`] below the current
//!   `in_flight` leaves the excess running; no new work is given until it drains.)
//! - **Unhealthy or incapable agents are never selected.** [`Registry::select`] looks only in
//!   the capability's own pool, and health is re-checked inside the compare-and-swap loop:
//!   once `set_health(id, Down)` (or `Draining`) has returned, no selection that starts after
//!   it (on the same thread, or after a message from that thread) returns `id`.
//!   `Up` agents are preferred over `Degraded` ones: strictly in pools of up to 16 members,
//!   and in larger pools a `Degraded` agent is chosen only when 16 random samples found no
//!   `Up` agent with room.
//! - **Selection cost does not depend on the number of agents.** Pools of up to 16 members
//!   are scanned; larger ones use the power of two choices, at most 8 rounds. Only when those
//!   rounds find nothing (nearly every member full or unhealthy) does a selection scan the
//!   pool; the scheduler is expected not to select while a capability's queue is non-empty,
//!   so that happens about once per saturation. Selecting, acquiring and releasing allocate
//!   nothing beyond cloning `H`.
//!
//! A lease is not released on drop: the holder calls [`Registry::release`] once the task
//! ends. A lease taken while its agent is being deregistered may name an agent that is
//! already gone; its release is then a no-op.
//!
//! # Layout
//! - `lib.rs`: [`Registry`] and the values it takes and returns ([`Registration`], [`Lease`],
//!   [`AgentSnapshot`]).
//! - `error.rs`: [`Error`].
//! - `slot.rs`: one agent's live state (atomics for load, capacity and health; the handle)
//!   and the compare-and-swap acquire.
//! - `selection.rs`: the per-capability pool and the selection policy (scan or power of two
//!   choices).

mod error;
mod selection;
mod slot;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::mapref::entry::Entry;
use dashmap::{DashMap, DashSet};
use swarm_protocol::{AgentDescriptor, AgentId, Capability, Health};

pub use crate::error::Error;
use crate::selection::Pool;
use crate::slot::Slot;

/// The shared index of agents by id and by capability. Cloning is cheap and every clone sees
/// the same agents.
pub struct Registry<H> {
    inner: Arc<Inner<H>>,
}

/// What an agent declares when it registers; the registry adds the id.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// A unique, human-chosen name, e.g. `gpt-4o-mini-1`.
    pub name: String,
    /// What it can do; must not be empty. Duplicates are dropped.
    pub capabilities: Vec<Capability>,
    /// How many tasks it runs at once; at least 1.
    pub max_concurrency: u32,
    /// Free-form labels (region, model family, ...).
    pub labels: BTreeMap<String, String>,
    /// Relative cost of one task on this agent; informational.
    pub cost_hint: Option<f64>,
    /// What the agent is good at, in a sentence (the planner's prompt shows it).
    pub description: Option<String>,
}

/// One slot acquired on an agent: its `in_flight` has already been incremented, and the
/// holder must call [`Registry::release`] with `agent` when the task ends.
#[derive(Debug)]
pub struct Lease<H> {
    /// The agent the slot belongs to.
    pub agent: AgentId,
    /// The agent's handle at the moment of acquisition.
    pub handle: H,
    /// The agent's capacity at the moment of acquisition.
    pub capacity: u32,
}

/// An agent's registration together with its live health and load.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    /// The registration, with the current capacity in `max_concurrency`.
    pub descriptor: AgentDescriptor,
    /// Its current health.
    pub health: Health,
    /// How many slots are held on it.
    pub in_flight: u32,
}

struct Inner<H> {
    agents: DashMap<AgentId, Arc<Slot<H>>>,
    pools: DashMap<Capability, Pool<H>>,
    /// Names of registered agents, so uniqueness is checked (and reserved) atomically.
    names: DashMap<String, AgentId>,
    /// Every capability ever declared; never shrinks.
    known: DashSet<Capability>,
    /// Ids drawn by `reserve_id` and not yet registered.
    reserved: DashSet<AgentId>,
    /// The number of the next agent id; starts at 1 unless given by `starting_at`.
    next_id: AtomicU64,
}

impl Registration {
    /// A registration with no labels and no cost hint.
    pub fn new(
        name: impl Into<String>,
        capabilities: Vec<Capability>,
        max_concurrency: u32,
    ) -> Self {
        Self {
            name: name.into(),
            capabilities,
            max_concurrency,
            labels: BTreeMap::new(),
            cost_hint: None,
            description: None,
        }
    }

    /// The same registration with a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

impl<H> Clone for Registry<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H> fmt::Debug for Registry<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("agents", &self.inner.agents.len())
            .field("capabilities", &self.inner.known.len())
            .finish_non_exhaustive()
    }
}

impl<H: Clone + Send + Sync + 'static> Default for Registry<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Clone + Send + Sync + 'static> Registry<H> {
    /// An empty registry that hands out ids from `A1`.
    pub fn new() -> Self {
        Self::starting_at(AgentId(1))
    }

    /// An empty registry whose first id is `first_id` (`A1` if given `A0`); later ids count up
    /// from there. A coordinator that restarts on a durable log starts past every id the log
    /// names, so that an id means one agent across the whole log, not only within one run.
    pub fn starting_at(first_id: AgentId) -> Self {
        Self {
            inner: Arc::new(Inner {
                agents: DashMap::new(),
                pools: DashMap::new(),
                names: DashMap::new(),
                known: DashSet::new(),
                reserved: DashSet::new(),
                next_id: AtomicU64::new(first_id.0.max(1)),
            }),
        }
    }

    /// Adds an agent under the next id (`A1`, `A2`, ..., or on from the first id given to
    /// [`Registry::starting_at`]), `Up` with nothing in flight, and returns its descriptor.
    /// Refuses an empty capability list, a `max_concurrency` of 0 and a name already in use, in
    /// that order; a refused registration uses up no id.
    pub fn register(&self, reg: Registration, handle: H) -> Result<AgentDescriptor, Error> {
        self.insert(reg, handle, IdSource::Next)
    }

    /// Draws the next agent id without registering anything, for a caller that must know the
    /// id before it has the handle (the supervisor spawns the agent's actor with its id).
    /// Complete with [`Registry::register_as`]. A reservation that is never completed stays
    /// recorded (one id's worth of memory) and the id is never handed out again.
    pub fn reserve_id(&self) -> AgentId {
        let id = self.next_id();
        self.inner.reserved.insert(id);
        id
    }

    /// Like [`Registry::register`], under an id from [`Registry::reserve_id`]. Refuses, besides
    /// what `register` refuses, an id that was not reserved or has been registered already
    /// ([`Error::UnreservedId`]). A refused registration keeps the reservation, so it can be
    /// retried with the mistake fixed.
    pub fn register_as(
        &self,
        id: AgentId,
        reg: Registration,
        handle: H,
    ) -> Result<AgentDescriptor, Error> {
        self.insert(reg, handle, IdSource::Reserved(id))
    }

    /// Removes an agent from every index and returns its descriptor. Its leases stay valid as
    /// values, but releasing them is a no-op; its name may be registered again.
    pub fn deregister(&self, id: AgentId) -> Result<AgentDescriptor, Error> {
        let (_, slot) = self
            .inner
            .agents
            .remove(&id)
            .ok_or(Error::UnknownAgent(id))?;
        // Retire before unlinking, so a selector that already holds the pool sees an agent
        // that accepts no work (and `register` can detect the race, see there).
        slot.retire();
        self.unlink(&slot);
        self.inner.names.remove(slot.name());
        Ok(slot.current_descriptor())
    }

    /// Sets an agent's health and returns the previous one. From the moment this returns
    /// `Down` or `Draining`, no selection returns the agent.
    pub fn set_health(&self, id: AgentId, health: Health) -> Result<Health, Error> {
        self.slot(id)?
            .set_health(health)
            .ok_or(Error::UnknownAgent(id))
    }

    /// Replaces the handle that later leases on this agent carry (after its actor restarted).
    pub fn set_handle(&self, id: AgentId, handle: H) -> Result<(), Error> {
        self.slot(id)?.set_handle(handle);
        Ok(())
    }

    /// A clone of the agent's current handle, to reach it outside a lease (e.g. to cancel a
    /// task it is running).
    pub fn handle(&self, id: AgentId) -> Option<H> {
        self.inner.agents.get(&id).map(|slot| slot.handle())
    }

    /// Changes how many tasks the agent runs at once. Lowering it below the current
    /// `in_flight` takes nothing away; the agent gets no new work until it is below again.
    pub fn set_capacity(&self, id: AgentId, max_concurrency: u32) -> Result<(), Error> {
        let slot = self.slot(id)?;
        if max_concurrency == 0 {
            return Err(Error::ZeroConcurrency {
                name: slot.name().to_owned(),
            });
        }
        slot.set_capacity(max_concurrency);
        Ok(())
    }

    /// Chooses an agent that has the capability, accepts work and has room, and takes one of
    /// its slots. `Up` agents come before `Degraded` ones, then the lowest
    /// `in_flight / capacity`. `None` when no such agent exists (or, under heavy contention,
    /// every try lost its race; the caller treats that as "all busy").
    pub fn select(&self, capability: &Capability) -> Option<Lease<H>> {
        let pool = self.inner.pools.get(capability)?;
        let slot = pool.acquire()?;
        Some(Lease {
            agent: slot.id(),
            handle: slot.handle(),
            capacity: slot.capacity(),
        })
    }

    /// Like [`Registry::select`], never choosing `except`: where a task goes after that agent
    /// refused it for good. Scans the capability's pool; for failure paths, not the hot path.
    pub fn select_other(&self, capability: &Capability, except: AgentId) -> Option<Lease<H>> {
        let pool = self.inner.pools.get(capability)?;
        let slot = pool.acquire_other(except)?;
        Some(Lease {
            agent: slot.id(),
            handle: slot.handle(),
            capacity: slot.capacity(),
        })
    }

    /// Takes a slot on this agent if it accepts work and has room.
    pub fn try_acquire(&self, id: AgentId) -> Option<Lease<H>> {
        let slot = self.inner.agents.get(&id)?;
        slot.try_acquire().then(|| Lease {
            agent: id,
            handle: slot.handle(),
            capacity: slot.capacity(),
        })
    }

    /// Gives back one slot on this agent. Saturates at zero; a no-op for an unknown
    /// (for example deregistered) agent.
    pub fn release(&self, id: AgentId) {
        if let Some(slot) = self.inner.agents.get(&id) {
            slot.release();
        }
    }

    /// True if an agent other than `except` has the capability and accepts work now (it may
    /// be full): where a task that `except` refused for good can go instead. Linear in the
    /// capability's pool; for failure paths, not for selection.
    pub fn has_other_available(&self, capability: &Capability, except: AgentId) -> bool {
        self.inner
            .pools
            .get(capability)
            .is_some_and(|pool| pool.has_other_accepting(except))
    }

    /// True if any agent ever declared this capability, even if none is registered now; a
    /// task needing an unknown capability can be rejected at once instead of waiting.
    pub fn knows_capability(&self, capability: &Capability) -> bool {
        self.inner.known.contains(capability)
    }

    /// One agent's registration, health and load.
    pub fn snapshot(&self, id: AgentId) -> Option<AgentSnapshot> {
        self.inner.agents.get(&id).map(|slot| snapshot_of(&slot))
    }

    /// Every registered agent's snapshot, sorted by id.
    pub fn snapshots(&self) -> Vec<AgentSnapshot> {
        let mut all: Vec<AgentSnapshot> = self
            .inner
            .agents
            .iter()
            .map(|entry| snapshot_of(entry.value()))
            .collect();
        all.sort_by_key(|snapshot| snapshot.descriptor.id);
        all
    }

    /// The capabilities the agent declared (without duplicates, in declaration order).
    pub fn capabilities(&self, id: AgentId) -> Option<Vec<Capability>> {
        self.inner
            .agents
            .get(&id)
            .map(|slot| slot.descriptor().capabilities.clone())
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.inner.agents.len()
    }

    /// True when no agent is registered.
    pub fn is_empty(&self) -> bool {
        self.inner.agents.is_empty()
    }

    /// Validates a registration, takes its name and id, and links the agent into every
    /// index.
    fn insert(
        &self,
        reg: Registration,
        handle: H,
        source: IdSource,
    ) -> Result<AgentDescriptor, Error> {
        let Registration {
            name,
            capabilities,
            max_concurrency,
            labels,
            cost_hint,
            description,
        } = reg;
        let capabilities = dedup(capabilities);
        if capabilities.is_empty() {
            return Err(Error::NoCapabilities { name });
        }
        if max_concurrency == 0 {
            return Err(Error::ZeroConcurrency { name });
        }
        // The id is taken while the name's entry is held, so a refused name uses up no id
        // (and no reservation). No other map is locked while `reserved` is, so this cannot
        // deadlock.
        let id = match self.inner.names.entry(name.clone()) {
            Entry::Occupied(_) => return Err(Error::DuplicateName(name)),
            Entry::Vacant(vacant) => {
                let id = match source {
                    IdSource::Next => self.next_id(),
                    IdSource::Reserved(id) => {
                        self.inner
                            .reserved
                            .remove(&id)
                            .ok_or(Error::UnreservedId(id))?;
                        id
                    }
                };
                vacant.insert(id);
                id
            }
        };
        let descriptor = AgentDescriptor {
            id,
            name,
            capabilities,
            max_concurrency,
            labels,
            cost_hint,
            description,
        };
        let slot = Arc::new(Slot::new(descriptor.clone(), handle));
        // The id index first, so that a lease handed out by a pool can always be released.
        self.inner.agents.insert(id, Arc::clone(&slot));
        for capability in &descriptor.capabilities {
            self.inner.known.insert(capability.clone());
            self.inner
                .pools
                .entry(capability.clone())
                .or_default()
                .push(Arc::clone(&slot));
        }
        // A deregister racing with this registration (possible once the id is in the agents
        // index, which a holder of a reserved id may call with) may have unlinked the pools
        // before we filled them. It retired the slot before taking any pool lock, and we took
        // those locks after it, so we see the retirement here and undo our own links.
        if slot.is_retired() {
            self.unlink(&slot);
        }
        Ok(descriptor)
    }

    fn next_id(&self) -> AgentId {
        AgentId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The slot of a registered agent. The `Arc` is cloned so no map guard is held while the
    /// caller works on it.
    fn slot(&self, id: AgentId) -> Result<Arc<Slot<H>>, Error> {
        self.inner
            .agents
            .get(&id)
            .map(|slot| Arc::clone(&slot))
            .ok_or(Error::UnknownAgent(id))
    }

    /// Removes the slot from the pool of each of its capabilities, dropping pools left empty.
    fn unlink(&self, slot: &Slot<H>) {
        for capability in &slot.descriptor().capabilities {
            if let Some(mut pool) = self.inner.pools.get_mut(capability) {
                pool.remove(slot.id());
            }
            self.inner
                .pools
                .remove_if(capability, |_, pool| pool.is_empty());
        }
    }
}

/// Where a registration's id comes from.
enum IdSource {
    /// The next unused id.
    Next,
    /// An id drawn earlier by `reserve_id`.
    Reserved(AgentId),
}

fn snapshot_of<H>(slot: &Slot<H>) -> AgentSnapshot {
    AgentSnapshot {
        descriptor: slot.current_descriptor(),
        health: slot.health(),
        in_flight: slot.in_flight(),
    }
}

/// Drops repeated capabilities, keeping the first occurrence's position. Quadratic, but an
/// agent declares a handful of capabilities.
fn dedup(capabilities: Vec<Capability>) -> Vec<Capability> {
    let mut unique: Vec<Capability> = Vec::with_capacity(capabilities.len());
    for capability in capabilities {
        if !unique.contains(&capability) {
            unique.push(capability);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(name: &str) -> Capability {
        Capability::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn register<H: Clone + Send + Sync + 'static>(
        registry: &Registry<H>,
        name: &str,
        capabilities: &[&str],
        max_concurrency: u32,
        handle: H,
    ) -> AgentId {
        let capabilities = capabilities.iter().map(|c| cap(c)).collect();
        registry
            .register(
                Registration::new(name, capabilities, max_concurrency),
                handle,
            )
            .unwrap_or_else(|e| panic!("register {name}: {e}"))
            .id
    }

    fn in_flight<H: Clone + Send + Sync + 'static>(registry: &Registry<H>, id: AgentId) -> u32 {
        registry
            .snapshot(id)
            .unwrap_or_else(|| panic!("{id} is registered"))
            .in_flight
    }

    fn selected<H: Clone + Send + Sync + 'static>(
        registry: &Registry<H>,
        capability: &str,
    ) -> AgentId {
        registry
            .select(&cap(capability))
            .unwrap_or_else(|| panic!("an agent can take `{capability}`"))
            .agent
    }

    #[test]
    fn register_assigns_increasing_ids_and_dedups_capabilities() {
        let registry = Registry::<()>::new();
        let first = registry
            .register(
                Registration::new("a", vec![cap("x"), cap("y"), cap("x")], 2),
                (),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.id, AgentId(1));
        assert_eq!(first.capabilities, vec![cap("x"), cap("y")]);
        assert_eq!(register(&registry, "b", &["x"], 1, ()), AgentId(2));
        assert_eq!(registry.len(), 2);
        let snapshot = registry
            .snapshot(AgentId(1))
            .unwrap_or_else(|| panic!("A1 is registered"));
        assert_eq!(snapshot.health, Health::Up);
        assert_eq!(snapshot.in_flight, 0);
        assert_eq!(snapshot.descriptor, first);
        assert_eq!(
            registry.capabilities(AgentId(1)),
            Some(vec![cap("x"), cap("y")])
        );
    }

    #[test]
    fn a_registry_starting_at_an_id_hands_out_ids_from_there() {
        let registry = Registry::<()>::starting_at(AgentId(8));
        assert_eq!(register(&registry, "a", &["x"], 1, ()), AgentId(8));
        assert_eq!(registry.reserve_id(), AgentId(9));
        assert_eq!(register(&registry, "b", &["x"], 1, ()), AgentId(10));
        // There is no A0: ids start at 1 whatever the caller asks.
        let registry = Registry::<()>::starting_at(AgentId(0));
        assert_eq!(register(&registry, "a", &["x"], 1, ()), AgentId(1));
    }

    #[test]
    fn another_available_agent_is_found_only_if_it_accepts_work() {
        let registry = Registry::<()>::new();
        let a = register(&registry, "a", &["x"], 1, ());
        assert!(!registry.has_other_available(&cap("x"), a), "alone");
        let b = register(&registry, "b", &["x"], 1, ());
        assert!(registry.has_other_available(&cap("x"), a));
        // Full still counts (the task waits for it); down does not.
        let lease = registry.try_acquire(b);
        assert!(lease.is_some());
        assert!(registry.has_other_available(&cap("x"), a));
        registry.release(b);
        assert_eq!(
            registry.select_other(&cap("x"), a).map(|l| l.agent),
            Some(b)
        );
        assert_eq!(
            registry.select_other(&cap("x"), b).map(|l| l.agent),
            Some(a)
        );
        registry
            .set_health(b, Health::Down)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!registry.has_other_available(&cap("x"), a));
        assert!(registry.select_other(&cap("x"), a).is_none());
        assert!(!registry.has_other_available(&cap("nope"), a));
    }

    #[test]
    fn register_rejects_bad_registrations_naming_them() {
        let registry = Registry::<()>::new();
        register(&registry, "taken", &["x"], 1, ());

        let duplicate = registry.register(Registration::new("taken", vec![cap("x")], 1), ());
        assert_eq!(duplicate, Err(Error::DuplicateName("taken".to_owned())));
        let err = duplicate
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("`taken`"), "{err}");

        let none = registry.register(Registration::new("empty", vec![], 1), ());
        assert_eq!(
            none,
            Err(Error::NoCapabilities {
                name: "empty".to_owned()
            })
        );
        let err = none
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`empty`") && err.contains("capabilities"),
            "{err}"
        );

        let zero = registry.register(Registration::new("idle", vec![cap("x")], 0), ());
        assert_eq!(
            zero,
            Err(Error::ZeroConcurrency {
                name: "idle".to_owned()
            })
        );
        let err = zero
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`idle`") && err.contains("max_concurrency"),
            "{err}"
        );

        // Refused registrations use up no id.
        assert_eq!(register(&registry, "next", &["x"], 1, ()), AgentId(2));
        assert_eq!(registry.len(), 2);

        let err = registry.set_health(AgentId(9), Health::Down);
        assert_eq!(err, Err(Error::UnknownAgent(AgentId(9))));
        let message = err
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("A9"), "{message}");
    }

    #[test]
    fn select_picks_the_least_loaded() {
        let registry = Registry::<()>::new();
        let small = register(&registry, "small", &["x"], 2, ());
        let big = register(&registry, "big", &["x"], 10, ());
        // Both idle: the first wins the tie.
        assert_eq!(selected(&registry, "x"), small);
        // small is at 1/2, big at 0/10.
        assert_eq!(selected(&registry, "x"), big);
        // small 1/2 against big 1/10: big, until it reaches 5/10.
        for _ in 0..4 {
            assert_eq!(selected(&registry, "x"), big);
        }
        // 1/2 against 5/10 is a tie again, which goes to the first member.
        assert_eq!(selected(&registry, "x"), small);
        assert_eq!(in_flight(&registry, small), 2);
        assert_eq!(in_flight(&registry, big), 5);
    }

    #[test]
    fn select_prefers_up_over_degraded() {
        let registry = Registry::<()>::new();
        let shaky = register(&registry, "shaky", &["x"], 10, ());
        let steady = register(&registry, "steady", &["x"], 2, ());
        registry
            .set_health(shaky, Health::Degraded)
            .unwrap_or_else(|e| panic!("{e}"));
        // steady is chosen even when it is more loaded, until it is full.
        assert_eq!(selected(&registry, "x"), steady);
        assert_eq!(selected(&registry, "x"), steady);
        assert_eq!(selected(&registry, "x"), shaky);
    }

    #[test]
    fn down_and_draining_agents_are_never_selected() {
        let registry = Registry::<()>::new();
        let down = register(&registry, "down", &["x"], 5, ());
        let draining = register(&registry, "draining", &["x"], 5, ());
        assert_eq!(registry.set_health(down, Health::Down), Ok(Health::Up));
        assert_eq!(
            registry.set_health(draining, Health::Draining),
            Ok(Health::Up)
        );
        assert!(registry.select(&cap("x")).is_none());
        assert!(registry.try_acquire(down).is_none());
        assert!(registry.try_acquire(draining).is_none());
        assert_eq!(registry.set_health(down, Health::Up), Ok(Health::Down));
        assert_eq!(selected(&registry, "x"), down);
    }

    #[test]
    fn full_agents_are_never_selected_and_incapable_ones_never_considered() {
        let registry = Registry::<()>::new();
        let a = register(&registry, "a", &["x"], 1, ());
        register(&registry, "b", &["y"], 5, ());
        assert_eq!(selected(&registry, "x"), a);
        assert!(registry.select(&cap("x")).is_none());
        assert!(registry.select(&cap("never-declared")).is_none());
        registry.release(a);
        assert_eq!(selected(&registry, "x"), a);
    }

    #[test]
    fn deregister_removes_from_selection_and_later_release_is_a_no_op() {
        let registry = Registry::<()>::new();
        let gone = register(&registry, "gone", &["x", "y"], 3, ());
        let stays = register(&registry, "stays", &["y"], 3, ());
        assert_eq!(selected(&registry, "x"), gone);

        let descriptor = registry.deregister(gone).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(descriptor.name, "gone");
        assert_eq!(registry.deregister(gone), Err(Error::UnknownAgent(gone)));
        assert!(registry.snapshot(gone).is_none());
        assert!(registry.select(&cap("x")).is_none());
        assert_eq!(selected(&registry, "y"), stays);
        registry.release(gone);
        assert_eq!(registry.len(), 1);
        assert_eq!(
            registry.set_health(gone, Health::Up),
            Err(Error::UnknownAgent(gone))
        );

        // The name is free again, under a new id.
        assert_eq!(register(&registry, "gone", &["x"], 1, ()), AgentId(3));
    }

    #[test]
    fn knows_capability_stays_true_after_deregister() {
        let registry = Registry::<()>::new();
        assert!(!registry.knows_capability(&cap("x")));
        let id = register(&registry, "a", &["x"], 1, ());
        assert!(registry.knows_capability(&cap("x")));
        registry.deregister(id).unwrap_or_else(|e| panic!("{e}"));
        assert!(registry.knows_capability(&cap("x")));
        assert!(registry.is_empty());
    }

    #[test]
    fn set_handle_changes_what_the_next_lease_carries() {
        let registry = Registry::<u32>::new();
        let id = register(&registry, "a", &["x"], 2, 1);
        let before = registry
            .select(&cap("x"))
            .unwrap_or_else(|| panic!("room left"));
        assert_eq!(before.handle, 1);
        registry.set_handle(id, 2).unwrap_or_else(|e| panic!("{e}"));
        let after = registry
            .try_acquire(id)
            .unwrap_or_else(|| panic!("room left"));
        assert_eq!((after.agent, after.handle), (id, 2));
        assert_eq!(
            registry.set_handle(AgentId(99), 3),
            Err(Error::UnknownAgent(AgentId(99)))
        );
    }

    #[test]
    fn reserved_ids_register_once_and_are_never_reused() {
        let registry = Registry::<u32>::new();
        let reserved = registry.reserve_id();
        assert_eq!(reserved, AgentId(1));
        assert_eq!(register(&registry, "plain", &["x"], 1, 0), AgentId(2));
        assert_eq!(registry.handle(reserved), None);

        // A refusal for another reason keeps the reservation.
        let duplicate =
            registry.register_as(reserved, Registration::new("plain", vec![cap("x")], 1), 1);
        assert_eq!(duplicate, Err(Error::DuplicateName("plain".to_owned())));
        let descriptor = registry
            .register_as(reserved, Registration::new("late", vec![cap("x")], 1), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(descriptor.id, reserved);
        assert_eq!(registry.handle(reserved), Some(1));

        let again =
            registry.register_as(reserved, Registration::new("again", vec![cap("x")], 1), 2);
        assert_eq!(again, Err(Error::UnreservedId(reserved)));
        let message = again
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("A1") && message.contains("reserve_id"),
            "{message}"
        );
        let never = registry.register_as(AgentId(99), Registration::new("n", vec![cap("x")], 1), 2);
        assert_eq!(never, Err(Error::UnreservedId(AgentId(99))));

        // A deregistered id cannot come back, so a stale release cannot hit a newcomer.
        registry
            .deregister(reserved)
            .unwrap_or_else(|e| panic!("{e}"));
        let revived =
            registry.register_as(reserved, Registration::new("late", vec![cap("x")], 1), 3);
        assert_eq!(revived, Err(Error::UnreservedId(reserved)));
        assert_eq!(registry.handle(reserved), None);
        assert_eq!(register(&registry, "late", &["x"], 1, 4), AgentId(3));
    }

    #[test]
    fn try_acquire_respects_capacity_and_health() {
        let registry = Registry::<()>::new();
        let id = register(&registry, "a", &["x"], 2, ());
        assert!(registry.try_acquire(id).is_some());
        assert!(registry.try_acquire(id).is_some());
        assert!(registry.try_acquire(id).is_none());
        registry.release(id);
        registry
            .set_health(id, Health::Degraded)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(registry.try_acquire(id).is_some());
        registry.release(id);
        registry
            .set_health(id, Health::Down)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(registry.try_acquire(id).is_none());
        assert!(registry.try_acquire(AgentId(99)).is_none());
        assert_eq!(in_flight(&registry, id), 1);
    }

    #[test]
    fn set_capacity_applies_to_new_acquisitions_only() {
        let registry = Registry::<()>::new();
        let id = register(&registry, "a", &["x"], 3, ());
        for _ in 0..3 {
            assert!(registry.try_acquire(id).is_some());
        }
        registry
            .set_capacity(id, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            registry.set_capacity(id, 0),
            Err(Error::ZeroConcurrency {
                name: "a".to_owned()
            })
        );
        let snapshot = registry
            .snapshot(id)
            .unwrap_or_else(|| panic!("registered"));
        assert_eq!(
            (snapshot.in_flight, snapshot.descriptor.max_concurrency),
            (3, 1)
        );
        registry.release(id);
        registry.release(id);
        assert!(registry.select(&cap("x")).is_none());
        registry.release(id);
        assert_eq!(selected(&registry, "x"), id);
    }

    #[test]
    fn snapshots_are_sorted_by_id() {
        let registry = Registry::<()>::new();
        for n in 0..40 {
            register(&registry, &format!("agent-{n}"), &["x"], 1, ());
        }
        let ids: Vec<u64> = registry
            .snapshots()
            .iter()
            .map(|s| s.descriptor.id.get())
            .collect();
        assert_eq!(ids, (1..=40).collect::<Vec<u64>>());
    }

    #[test]
    fn a_large_pool_spreads_load_and_fills_completely() {
        const AGENTS: u32 = 10_000;
        const CAPACITY: u32 = 8;
        fastrand::seed(42);
        let registry = Registry::<()>::new();
        for n in 0..AGENTS {
            register(
                &registry,
                &format!("agent-{n}"),
                &["x", "other"],
                CAPACITY,
                (),
            );
        }
        let spread = |registry: &Registry<()>| {
            let loads: Vec<u32> = registry.snapshots().iter().map(|s| s.in_flight).collect();
            let max = loads.iter().copied().max().unwrap_or(0);
            let min = loads.iter().copied().min().unwrap_or(0);
            (min, max)
        };

        // Half full: the power of two choices keeps everyone close to the average of 4.
        for _ in 0..AGENTS * CAPACITY / 2 {
            selected(&registry, "x");
        }
        let mut histogram = [0u32; CAPACITY as usize + 1];
        for snapshot in registry.snapshots() {
            histogram[snapshot.in_flight as usize] += 1;
        }
        // Random placement (Poisson, mean 4) would reach about 13 and leave only about 73% of
        // the agents within 2 of the average; two choices stay within 3 above it and keep
        // nearly everyone within 2 (99% with this seed).
        let max = histogram.iter().rposition(|&n| n > 0).unwrap_or(0);
        let near_average: u32 = histogram[2..=6].iter().sum();
        assert!(max <= 7, "loads by in_flight: {histogram:?}");
        assert!(
            near_average >= AGENTS * 98 / 100,
            "loads by in_flight: {histogram:?}"
        );

        // Filling up ends in scans, which find every last slot.
        let mut taken = AGENTS * CAPACITY / 2;
        while registry.select(&cap("x")).is_some() {
            taken += 1;
        }
        assert_eq!(taken, AGENTS * CAPACITY);
        assert_eq!(spread(&registry), (CAPACITY, CAPACITY));
        assert!(registry.select(&cap("other")).is_none());
    }
}
