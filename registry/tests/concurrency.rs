//! Many threads selecting and releasing on one registry at once: capacity must hold at every
//! moment, every slot must come back, and a health flip must be respected as soon as it is
//! visible.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use swarm_protocol::{AgentId, Capability, Health};
use swarm_registry::{Registration, Registry};

const THREADS: usize = 8;

fn cap(name: &str) -> Capability {
    Capability::new(name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn concurrent_selectors_never_exceed_capacity_and_return_every_slot() {
    const ROUNDS: usize = 20_000;
    let capabilities: Vec<Capability> = ["a", "b", "c", "d"].into_iter().map(cap).collect();
    let registry = Registry::<usize>::new();
    // 40 agents with capacities 1..=3, each with one or two of the four capabilities, so every
    // pool has 19 or 20 members and is served by sampling (with scans when it is nearly full).
    for n in 0..40usize {
        let declared = vec![
            capabilities[n % 4].clone(),
            capabilities[(n / 4) % 4].clone(),
        ];
        let capacity = 1 + (n % 3) as u32;
        registry
            .register(
                Registration::new(format!("agent-{n}"), declared, capacity),
                n,
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let acquired = AtomicUsize::new(0);
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let registry = registry.clone();
            let capabilities = &capabilities;
            let acquired = &acquired;
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(thread as u64);
                let mut held: Vec<AgentId> = Vec::new();
                for _ in 0..ROUNDS {
                    // Hold up to three leases, releasing a random one when full or at random,
                    // so agents sit at capacity often.
                    if held.len() == 3 || (!held.is_empty() && rng.bool()) {
                        let lease = held.swap_remove(rng.usize(..held.len()));
                        registry.release(lease);
                        continue;
                    }
                    let capability = &capabilities[rng.usize(..capabilities.len())];
                    let Some(lease) = registry.select(capability) else {
                        continue;
                    };
                    let snapshot = registry
                        .snapshot(lease.agent)
                        .unwrap_or_else(|| panic!("{} is registered", lease.agent));
                    assert!(
                        snapshot.in_flight >= 1
                            && snapshot.in_flight <= snapshot.descriptor.max_concurrency,
                        "{} holds {} of {}",
                        lease.agent,
                        snapshot.in_flight,
                        snapshot.descriptor.max_concurrency
                    );
                    assert!(snapshot.descriptor.capabilities.contains(capability));
                    assert_eq!(lease.handle as u64 + 1, lease.agent.get());
                    acquired.fetch_add(1, Ordering::Relaxed);
                    held.push(lease.agent);
                }
                for lease in held {
                    registry.release(lease);
                }
            });
        }
    });

    // Guards against a vacuous pass (for example, every select returning `None`).
    assert!(acquired.load(Ordering::Relaxed) > THREADS * ROUNDS / 10);
    for snapshot in registry.snapshots() {
        assert_eq!(snapshot.in_flight, 0, "{}", snapshot.descriptor.id);
    }
}

#[test]
fn no_selection_returns_an_agent_after_its_down_flip_is_visible() {
    // 12 agents form a scanned pool, 24 a sampled one.
    check_down_flips(12, 8);
    check_down_flips(24, 16);
}

/// Sets agents `A1..=A{flipped}` down one by one while selectors run on all of them.
fn check_down_flips(agents: usize, flipped: usize) {
    let x = cap("x");
    let registry = Registry::<()>::new();
    for n in 0..agents {
        registry
            .register(
                Registration::new(format!("agent-{n}"), vec![x.clone()], 4),
                (),
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Agents A1..=A{down} are down once `down` is read. The flipper publishes with Release
    // after `set_health` returned, and a selector reads it with Acquire before it selects, so
    // the select's health loads come after the flip.
    let down = AtomicUsize::new(0);
    // Each flip waits for this many more selections, so flips land while selectors are busy.
    // The selectors never wait for the flipper, so the spin always ends.
    const SELECTIONS_PER_THREAD: usize = 20_000;
    let step = SELECTIONS_PER_THREAD * THREADS / (flipped + 2);
    let selections = AtomicUsize::new(0);

    thread::scope(|scope| {
        scope.spawn(|| {
            for n in 1..=flipped {
                while selections.load(Ordering::Relaxed) < n * step {
                    thread::yield_now();
                }
                registry
                    .set_health(AgentId(n as u64), Health::Down)
                    .unwrap_or_else(|e| panic!("{e}"));
                down.store(n, Ordering::Release);
            }
        });
        for _ in 0..THREADS {
            let registry = registry.clone();
            let (down, selections, x) = (&down, &selections, &x);
            scope.spawn(move || {
                for _ in 0..SELECTIONS_PER_THREAD {
                    let known_down = down.load(Ordering::Acquire);
                    selections.fetch_add(1, Ordering::Relaxed);
                    if let Some(lease) = registry.select(x) {
                        assert!(
                            lease.agent.get() as usize > known_down,
                            "{} selected after A1..=A{known_down} were set down",
                            lease.agent
                        );
                        registry.release(lease.agent);
                    }
                }
            });
        }
    });

    for snapshot in registry.snapshots() {
        assert_eq!(snapshot.in_flight, 0, "{}", snapshot.descriptor.id);
    }
}
