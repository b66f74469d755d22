//! The full allocation path under criterion: the real scheduler, registry and agent actors
//! in-process, no-op agents, objectives of independent tasks (the same run as `swarm bench`,
//! smaller, repeated). Throughput is in tasks allocated and completed per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use swarm_cli::bench::{BenchConfig, run};

const TASKS: u64 = 20_000;

fn allocation(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => panic!("tokio runtime: {err}"),
    };
    let mut group = c.benchmark_group("allocate_complete");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TASKS));
    for agents in [64usize, 1_000] {
        let config = BenchConfig {
            agents,
            capabilities: 8,
            tasks: TASKS,
            objective_size: 1_000,
            objectives_in_flight: None,
            concurrency: 64,
            data_dir: None,
        };
        group.bench_with_input(BenchmarkId::from_parameter(agents), &config, |b, config| {
            b.to_async(&runtime).iter(|| async {
                match run(config.clone()).await {
                    Ok(report) => report.tasks_per_s,
                    Err(err) => panic!("bench run failed: {err}"),
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, allocation);
criterion_main!(benches);
