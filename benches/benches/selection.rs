//! The cost of choosing an agent: one `select` plus the matching `release` on registries of 64
//! and 10,000 agents spread over 8 capabilities.
//!
//! Each agent declares two neighbouring capabilities, so the 64-agent registry has pools of 16
//! (scanned whole) and the 10,000-agent one pools of 2,500 (power of two choices). Every agent
//! starts a quarter full, so the load comparison has differences to look at. The two figures
//! should be close: selection cost must not grow with the number of agents.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use swarm_protocol::Capability;
use swarm_registry::{Registration, Registry};

const CAPABILITIES: usize = 8;
const CAPACITY: u32 = 8;

/// A registry of `agents` agents, each a quarter full, and the capabilities they declare.
fn registry(agents: usize) -> (Registry<u64>, Vec<Capability>) {
    let capabilities: Vec<Capability> = (0..CAPABILITIES)
        .map(|n| Capability::new(format!("cap-{n}")).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let registry = Registry::new();
    for n in 0..agents {
        let declared = vec![
            capabilities[n % CAPABILITIES].clone(),
            capabilities[(n + 1) % CAPABILITIES].clone(),
        ];
        let id = registry
            .register(
                Registration::new(format!("agent-{n}"), declared, CAPACITY),
                n as u64,
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .id;
        for _ in 0..CAPACITY / 4 {
            registry
                .try_acquire(id)
                .unwrap_or_else(|| panic!("a fresh agent has room"));
        }
    }
    (registry, capabilities)
}

fn select_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_release");
    for agents in [64, 10_000] {
        let (registry, capabilities) = registry(agents);
        let mut next = 0;
        group.bench_with_input(
            BenchmarkId::from_parameter(agents),
            &registry,
            |b, registry| {
                b.iter(|| {
                    let capability = &capabilities[next % CAPABILITIES];
                    next = next.wrapping_add(1);
                    let lease = registry.select(black_box(capability));
                    if let Some(lease) = lease {
                        registry.release(black_box(lease.agent));
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, select_release);
criterion_main!(benches);
