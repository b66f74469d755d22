//! The durable side of the triggers, run off the actor in spawned tasks: recording events
//! through the scheduler's journal (every trigger event is recorded by [`Durable::record`]),
//! and submitting, looking at and cancelling a schedule's objectives. Each call has the call
//! timeout, so each piece of work ends.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, call_t};
use swarm_protocol::schedule::{OverlapPolicy, fire_idempotency_key};
use swarm_protocol::{Event, Objective, ObjectiveId, SchedulerMsg};
use swarm_store::EventStore;
use tokio::sync::watch;

use crate::Error;
use crate::triggers::schedules::{DueWork, ScheduleFire, SlotOutcome};

/// The durable side of the triggers, run in spawned tasks: recording events through the
/// scheduler's journal, and submitting, looking at and cancelling a schedule's objectives.
#[derive(Clone)]
pub(crate) struct Durable {
    /// Where events are recorded and objectives submitted.
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    /// The durable log, to read a created schedule's time back (none without a log).
    pub(crate) store: Option<Arc<dyn EventStore>>,
    /// Each call's timeout.
    pub(crate) call_timeout_ms: u64,
    /// The coordinator's failure reason, once it has one (to explain a call that failed).
    pub(crate) failure: watch::Receiver<Option<String>>,
}

impl Durable {
    fn explain(&self, err: Error) -> Error {
        err.explained(self.failure.borrow().clone())
    }

    /// Records `event` through the scheduler's journal, so the log keeps one order, and waits
    /// until it is durable. Every trigger event is recorded here.
    pub(crate) async fn record(&self, event: Event) -> Result<(), Error> {
        self.scheduler
            .cast(SchedulerMsg::Record(event))
            .map_err(|e| self.explain(e.into()))?;
        call_t!(self.scheduler, SchedulerMsg::Flush, self.call_timeout_ms)
            .map_err(|e| self.explain(e.into()))
            .and_then(|flushed| flushed.map_err(Error::from))
    }

    /// The time the log stamped the creation of the schedule `name` with (none without a log,
    /// or if it cannot be read).
    pub(crate) async fn created_at_ms(&self, name: &str) -> Option<u64> {
        let stored = self.store.as_ref()?.schedules().await.ok()?;
        stored
            .into_iter()
            .find(|s| s.spec.name == name)
            .map(|s| s.created_at_ms)
    }

    /// True while `objective` has not ended (an objective the scheduler no longer holds ended
    /// before the coordinator last started, or was never known, and one that cannot be read
    /// counts as ended, so a schedule is never blocked for good).
    async fn still_running(&self, objective: ObjectiveId) -> bool {
        call_t!(
            self.scheduler,
            |reply| SchedulerMsg::Get { objective, reply },
            self.call_timeout_ms
        )
        .ok()
        .flatten()
        .is_some_and(|view| !view.status.is_terminal())
    }

    /// Fires `slot_ms` of `name`: submits `template` under the slot's idempotency key, then
    /// records `ScheduleFired` unless `fires` shows this fire already (firing a slot again
    /// returns the objective of its first fire and submits nothing, which makes a fire that a
    /// crash interrupted safe to repeat). Returns the objective, and whether this fire recorded
    /// its `ScheduleFired`.
    pub(crate) async fn fire(
        &self,
        name: &str,
        slot_ms: u64,
        template: &Objective,
        fires: &[ScheduleFire],
    ) -> Result<(ObjectiveId, bool), Error> {
        // As `Swarm::submit`: the scheduler refuses the submit past the call timeout, so a
        // fire recorded as failed never has an objective accepted after it.
        let objective = crate::submit::submit(
            &self.scheduler,
            self.store.as_deref(),
            template.clone(),
            Some(fire_idempotency_key(name, slot_ms)),
            None,
            Duration::from_millis(self.call_timeout_ms),
            |e| self.explain(e),
        )
        .await?;
        let recorded = fires
            .iter()
            .any(|f| f.slot_ms == slot_ms && f.objective == objective);
        if !recorded {
            self.record(Event::ScheduleFired {
                schedule: name.to_owned(),
                slot_ms,
                objective,
            })
            .await?;
        }
        Ok((objective, !recorded))
    }

    /// A slot that was not fired, recorded: skipped under the overlap policy
    /// (`ScheduleSkipped`), or unable to submit its objective (`ScheduleFireFailed`; the slot
    /// is not tried again). Returns `missed`, to be applied.
    async fn missed(&self, name: &str, missed: SlotOutcome) -> SlotOutcome {
        let schedule = name.to_owned();
        let event = match &missed {
            SlotOutcome::Skipped { slot_ms, reason } => {
                // The policy at work: not something to alert on.
                tracing::debug!(schedule = %name, slot_ms, %reason, "slot skipped");
                Event::ScheduleSkipped {
                    schedule,
                    slot_ms: *slot_ms,
                    reason: reason.clone(),
                }
            }
            SlotOutcome::Failed { slot_ms, reason } => {
                tracing::warn!(schedule = %name, slot_ms, %reason, "fire failed");
                Event::ScheduleFireFailed {
                    schedule,
                    slot_ms: *slot_ms,
                    reason: reason.clone(),
                }
            }
            _ => return missed,
        };
        if let Err(err) = self.record(event).await {
            tracing::warn!(schedule = %name, %err, "the missed slot was not recorded");
        }
        missed
    }

    /// Fires `slot_ms` of `name` for the firing loop, reporting a failure as a missed slot.
    async fn fire_or_fail(&self, work: &DueWork, slot_ms: u64) -> SlotOutcome {
        match self
            .fire(&work.name, slot_ms, &work.template, &work.fires)
            .await
        {
            Ok((objective, recorded_now)) => SlotOutcome::Fired {
                slot_ms,
                objective,
                recorded_now,
            },
            Err(err) => {
                let failed = SlotOutcome::Failed {
                    slot_ms,
                    reason: err.to_string(),
                };
                self.missed(&work.name, failed).await
            }
        }
    }

    /// A turn's work for one schedule: first its slot that waits (`queue_one`), which fires
    /// once the objective it waited for has ended; then its due slot, as its overlap policy
    /// says given the previous fire. Returns what became of the slots, in order.
    pub(crate) async fn run_due(&self, work: DueWork) -> Vec<SlotOutcome> {
        let mut outcomes = Vec::new();
        let mut previous = work.previous;
        let mut queued = work.queued_ms;
        if let Some(slot_ms) = queued {
            let waits = match previous {
                Some(previous) => self.still_running(previous).await,
                None => false,
            };
            if !waits {
                outcomes.push(SlotOutcome::Dequeued);
                queued = None;
                let fired = self.fire_or_fail(&work, slot_ms).await;
                if let SlotOutcome::Fired { objective, .. } = &fired {
                    previous = Some(*objective);
                }
                outcomes.push(fired);
            }
        }
        let Some(slot_ms) = work.due_ms else {
            return outcomes;
        };
        if let Some(previous) = previous
            && self.still_running(previous).await
        {
            match work.overlap {
                OverlapPolicy::Skip => {
                    let reason = format!("the previous fire's objective {previous} still runs");
                    let skipped = SlotOutcome::Skipped { slot_ms, reason };
                    outcomes.push(self.missed(&work.name, skipped).await);
                    return outcomes;
                }
                OverlapPolicy::QueueOne => {
                    if let Some(replaced) = queued {
                        let reason = format!(
                            "queued behind objective {previous}, and the slot at {slot_ms} took \
                             its place"
                        );
                        let skipped = SlotOutcome::Skipped {
                            slot_ms: replaced,
                            reason,
                        };
                        outcomes.push(self.missed(&work.name, skipped).await);
                    }
                    outcomes.push(SlotOutcome::Queued { slot_ms });
                    return outcomes;
                }
                OverlapPolicy::CancelPrevious => {
                    // Already ended meanwhile is as good as cancelled.
                    let _ = call_t!(
                        self.scheduler,
                        |reply| SchedulerMsg::Cancel {
                            objective: previous,
                            reply
                        },
                        self.call_timeout_ms
                    );
                }
            }
        }
        outcomes.push(self.fire_or_fail(&work, slot_ms).await);
        outcomes
    }
}
