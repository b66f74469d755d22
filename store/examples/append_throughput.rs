//! Measures how fast [`SqliteStore`] appends: 200,000 small events in batches of 1,000 (as the
//! coordinator's group commit hands them over), with `synchronous` FULL and NORMAL.
//!
//! `cargo run --release -p swarm-store --example append_throughput -- [events] [batch]`

use std::error::Error;
use std::time::{Duration, Instant};

use serde_json::json;
use swarm_protocol::{
    AgentId, Capability, Event, EventRecord, Objective, ObjectiveId, TaskId, TaskKey, TaskSpec,
};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let batch: u64 = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let log = life_of_objectives(events)?;
    for synchronous_full in [true, false] {
        let dir = tempfile::tempdir()?;
        let mut options = SqliteOptions::new(dir.path());
        options.synchronous_full = synchronous_full;
        let store = SqliteStore::open(options).await?;
        let mut slowest = Duration::ZERO;
        let start = Instant::now();
        for chunk in log.chunks(usize::try_from(batch)?) {
            let began = Instant::now();
            store.append(chunk).await?;
            slowest = slowest.max(began.elapsed());
        }
        let elapsed = start.elapsed();
        let info = store.info().await?;
        assert_eq!(info.last_seq, events);
        println!(
            "synchronous {}: {events} events in batches of {batch}: {:.0} events/s \
             ({:.2?} in all, slowest batch {slowest:.2?}, file {} KiB)",
            if synchronous_full { "FULL  " } else { "NORMAL" },
            events as f64 / elapsed.as_secs_f64(),
            elapsed,
            std::fs::metadata(store.path())?.len() / 1024
                + std::fs::metadata(store.path().with_extension("db-wal"))
                    .map_or(0, |m| m.len() / 1024),
        );
        store.close().await?;
    }
    Ok(())
}

/// `events` events of one-task objectives: submitted, ready, started, succeeded, objective
/// succeeded.
fn life_of_objectives(events: u64) -> Result<Vec<EventRecord>, Box<dyn Error>> {
    let spec = Objective::with_tasks(
        "echo",
        vec![TaskSpec::new(TaskKey::new("t")?, Capability::new("echo")?)],
    );
    let mut log = Vec::new();
    let mut task = 1;
    while (log.len() as u64) < events {
        let objective = ObjectiveId::new();
        let t = TaskId(task);
        task += 1;
        for event in [
            Event::ObjectiveSubmitted {
                objective,
                spec: spec.clone(),
                first_task: t,
                idempotency_key: None,
                trace: None,
            },
            Event::TaskReady { objective, task: t },
            Event::TaskStarted {
                objective,
                task: t,
                attempt: 1,
                agent: AgentId(task % 64),
                input: None,
            },
            Event::TaskSucceeded {
                objective,
                task: t,
                attempt: 1,
                agent: AgentId(task % 64),
                output: json!({"echo": task}),
                usage: None,
                duration: Duration::from_micros(250),
            },
            Event::ObjectiveSucceeded { objective },
        ] {
            let seq = log.len() as u64 + 1;
            if seq > events {
                break;
            }
            log.push(EventRecord {
                seq,
                at_ms: 1_700_000_000_000 + seq,
                event,
            });
        }
    }
    Ok(log)
}
