//! Submitting an objective to the scheduler, as every path does (the API, schedule fires,
//! webhook deliveries): with an idempotency key and a durable log, the log's objective index
//! is read first, because the scheduler holds only the newest keys in memory (see
//! `scheduler::idempotency`).

use std::time::Duration;

use ractor::ActorRef;
use swarm_protocol::objective::check_idempotency_key;
use swarm_protocol::{Objective, ObjectiveId, SchedulerError, SchedulerMsg, TraceContext};
use swarm_store::EventStore;

use crate::Error;

/// Submits `objective` under `idempotency_key` and returns once it is accepted (and durable
/// with a log), or refused. A key the index holds answers with its objective (or a conflict)
/// without reaching the scheduler. The scheduler refuses a submit it reaches later than
/// `patience` from now, so a submit answered with an error is never accepted afterwards.
/// `explain` turns a failed call into the coordinator's reason. The objective's spans continue
/// the caller's `trace`, if given.
pub(crate) async fn submit(
    scheduler: &ActorRef<SchedulerMsg>,
    store: Option<&dyn EventStore>,
    objective: Objective,
    idempotency_key: Option<String>,
    trace: Option<TraceContext>,
    patience: Duration,
    explain: impl Fn(Error) -> Error,
) -> Result<ObjectiveId, Error> {
    let accept_by = std::time::Instant::now()
        .checked_add(patience)
        .unwrap_or_else(std::time::Instant::now);
    let mut key_index_as_of = None;
    if let (Some(key), Some(store)) = (&idempotency_key, store) {
        check_idempotency_key(key).map_err(SchedulerError::BadIdempotencyKey)?;
        let lookup = store.objective_by_key(key).await?;
        if let Some(first) = lookup.objective {
            // Matches a fingerprint stored by any version (see `fingerprint`).
            return if objective.fingerprints().matches(first.fingerprint) {
                Ok(first.id)
            } else {
                Err(SchedulerError::IdempotencyConflict {
                    key: key.clone(),
                    existing: first.id,
                }
                .into())
            };
        }
        key_index_as_of = Some(lookup.as_of_seq);
    }
    Ok(ractor::call!(scheduler, |reply| SchedulerMsg::Submit {
        objective,
        idempotency_key,
        key_index_as_of,
        trace,
        accept_by,
        reply
    })
    .map_err(|e| explain(e.into()))??)
}
