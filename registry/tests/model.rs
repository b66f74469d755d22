//! Random operation sequences checked against a plain model of the registry.
//!
//! The model is a map of agents with their capabilities, capacity, health and in-flight count.
//! After every operation the registry must agree with it, and every selection must be one the
//! model allows: the agent has the capability, accepts work and has room, and (in pools small
//! enough to be scanned) it is the best choice. A `None` from `select` must mean the model has
//! no eligible agent either; this runs single-threaded, so no race can excuse a miss.

use std::collections::BTreeMap;

use proptest::prelude::*;
use swarm_protocol::{AgentId, Capability, Health};
use swarm_registry::{Registration, Registry};

const CAPABILITIES: [&str; 4] = ["a", "b", "c", "d"];
/// Pools up to this size are scanned, so their choice is exact (see `selection.rs`).
const SCAN_MAX: usize = 16;

#[derive(Debug, Clone)]
enum Op {
    /// `mask`'s low four bits pick the capabilities; 0 tests the refusal.
    Register {
        mask: u8,
        capacity: u32,
    },
    SetHealth {
        agent: usize,
        health: u8,
    },
    SetCapacity {
        agent: usize,
        capacity: u32,
    },
    Select {
        capability: usize,
    },
    TryAcquire {
        agent: usize,
    },
    Release {
        lease: usize,
    },
    Deregister {
        agent: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..16, 0u32..4).prop_map(|(mask, capacity)| Op::Register { mask, capacity }),
        2 => (any::<usize>(), 0u8..4).prop_map(|(agent, health)| Op::SetHealth { agent, health }),
        1 => (any::<usize>(), 1u32..4).prop_map(|(agent, capacity)| Op::SetCapacity { agent, capacity }),
        6 => (0..CAPABILITIES.len()).prop_map(|capability| Op::Select { capability }),
        1 => any::<usize>().prop_map(|agent| Op::TryAcquire { agent }),
        4 => any::<usize>().prop_map(|lease| Op::Release { lease }),
        1 => any::<usize>().prop_map(|agent| Op::Deregister { agent }),
    ]
}

#[derive(Debug)]
struct ModelAgent {
    capabilities: Vec<Capability>,
    capacity: u32,
    health: Health,
    in_flight: u32,
}

impl ModelAgent {
    fn eligible(&self) -> bool {
        self.health.accepts_work() && self.in_flight < self.capacity
    }

    /// (degraded, in_flight, capacity): lower is better, like the registry's own ordering.
    fn better_than(&self, other: &ModelAgent) -> bool {
        let (a, b) = (
            self.health == Health::Degraded,
            other.health == Health::Degraded,
        );
        if a != b {
            return !a;
        }
        u64::from(self.in_flight) * u64::from(other.capacity)
            < u64::from(other.in_flight) * u64::from(self.capacity)
    }
}

#[derive(Default)]
struct Model {
    agents: BTreeMap<AgentId, ModelAgent>,
    /// Leases taken and not yet released; may name agents deregistered since.
    leases: Vec<AgentId>,
    next_name: usize,
}

impl Model {
    /// The `index`-th live agent, wrapping; a made-up id when there is none.
    fn pick(&self, index: usize) -> AgentId {
        if self.agents.is_empty() {
            return AgentId(1_000_000);
        }
        self.agents
            .keys()
            .nth(index % self.agents.len())
            .copied()
            .unwrap_or(AgentId(1_000_000))
    }

    /// Records an acquisition and checks it was allowed.
    fn acquired(&mut self, id: AgentId, capability: Option<&Capability>) {
        let agent = self
            .agents
            .get(&id)
            .unwrap_or_else(|| panic!("{id} was acquired but is not registered"));
        assert!(
            agent.eligible(),
            "{id} acquired while ineligible: {agent:?}"
        );
        if let Some(capability) = capability {
            assert!(
                agent.capabilities.contains(capability),
                "{id} lacks {capability}"
            );
            let pool: Vec<&ModelAgent> = self
                .agents
                .values()
                .filter(|a| a.capabilities.contains(capability))
                .collect();
            if pool.len() <= SCAN_MAX {
                let better = pool.iter().find(|a| a.eligible() && a.better_than(agent));
                assert!(better.is_none(), "{id} ({agent:?}) chosen over {better:?}");
            }
        }
        if let Some(agent) = self.agents.get_mut(&id) {
            agent.in_flight += 1;
            assert!(agent.in_flight <= agent.capacity);
        }
        self.leases.push(id);
    }

    fn apply(&mut self, registry: &Registry<u64>, op: Op) {
        match op {
            Op::Register { mask, capacity } => {
                let capabilities: Vec<Capability> = CAPABILITIES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, name)| Capability::new(name).unwrap_or_else(|e| panic!("{e}")))
                    .collect();
                let name = format!("agent-{}", self.next_name);
                self.next_name += 1;
                let result = registry.register(
                    Registration::new(name, capabilities.clone(), capacity),
                    self.next_name as u64,
                );
                if capabilities.is_empty() || capacity == 0 {
                    assert!(result.is_err());
                    return;
                }
                let descriptor = result.unwrap_or_else(|e| panic!("{e}"));
                assert!(!self.agents.contains_key(&descriptor.id));
                for capability in &capabilities {
                    assert!(registry.knows_capability(capability));
                }
                self.agents.insert(
                    descriptor.id,
                    ModelAgent {
                        capabilities,
                        capacity,
                        health: Health::Up,
                        in_flight: 0,
                    },
                );
            }
            Op::SetHealth { agent, health } => {
                let id = self.pick(agent);
                let health = Health::from_u8(health);
                let result = registry.set_health(id, health);
                match self.agents.get_mut(&id) {
                    Some(agent) => {
                        assert_eq!(result, Ok(agent.health));
                        agent.health = health;
                    }
                    None => assert!(result.is_err()),
                }
            }
            Op::SetCapacity { agent, capacity } => {
                let id = self.pick(agent);
                let result = registry.set_capacity(id, capacity);
                match self.agents.get_mut(&id) {
                    Some(agent) => {
                        assert_eq!(result, Ok(()));
                        agent.capacity = capacity;
                    }
                    None => assert!(result.is_err()),
                }
            }
            Op::Select { capability } => {
                let capability =
                    Capability::new(CAPABILITIES[capability]).unwrap_or_else(|e| panic!("{e}"));
                match registry.select(&capability) {
                    Some(lease) => self.acquired(lease.agent, Some(&capability)),
                    None => {
                        let eligible = self
                            .agents
                            .iter()
                            .find(|(_, a)| a.capabilities.contains(&capability) && a.eligible());
                        assert!(
                            eligible.is_none(),
                            "select found nothing but {eligible:?} is free"
                        );
                    }
                }
            }
            Op::TryAcquire { agent } => {
                let id = self.pick(agent);
                let expected = self.agents.get(&id).is_some_and(ModelAgent::eligible);
                let lease = registry.try_acquire(id);
                assert_eq!(lease.is_some(), expected, "try_acquire({id})");
                if let Some(lease) = lease {
                    self.acquired(lease.agent, None);
                }
            }
            Op::Release { lease } => {
                if self.leases.is_empty() {
                    return;
                }
                let id = self.leases.swap_remove(lease % self.leases.len());
                registry.release(id);
                if let Some(agent) = self.agents.get_mut(&id) {
                    agent.in_flight -= 1;
                }
            }
            Op::Deregister { agent } => {
                let id = self.pick(agent);
                let result = registry.deregister(id);
                match self.agents.remove(&id) {
                    Some(agent) => {
                        let descriptor = result.unwrap_or_else(|e| panic!("{e}"));
                        assert_eq!(descriptor.capabilities, agent.capabilities);
                        for capability in &agent.capabilities {
                            assert!(registry.knows_capability(capability));
                        }
                    }
                    None => assert!(result.is_err()),
                }
            }
        }
    }

    /// The registry and the model agree on every agent.
    fn check(&self, registry: &Registry<u64>) {
        let snapshots = registry.snapshots();
        assert_eq!(snapshots.len(), self.agents.len());
        for (snapshot, (id, agent)) in snapshots.iter().zip(&self.agents) {
            assert_eq!(snapshot.descriptor.id, *id);
            assert_eq!(snapshot.descriptor.capabilities, agent.capabilities);
            assert_eq!(snapshot.descriptor.max_concurrency, agent.capacity);
            assert_eq!(snapshot.health, agent.health);
            assert_eq!(snapshot.in_flight, agent.in_flight, "{id}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn selections_respect_capability_health_and_capacity(ops in prop::collection::vec(op(), 1..200)) {
        let registry = Registry::<u64>::new();
        let mut model = Model::default();
        for op in ops {
            model.apply(&registry, op);
            model.check(&registry);
        }
        for id in std::mem::take(&mut model.leases) {
            registry.release(id);
        }
        prop_assert!(registry.snapshots().iter().all(|s| s.in_flight == 0));
    }
}
