//! Benchmarks of swarm, run with `cargo bench -p swarm-benches`: `selection` measures the
//! registry's choice of an agent alone, `allocation` the whole path from a ready task to a
//! completed one through the real actors. The library itself is empty; the benches live in
//! `benches/`.
