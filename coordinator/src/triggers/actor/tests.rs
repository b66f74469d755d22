//! The trigger actor against a scheduler whose submits hang until the test lets them go:
//! what waits for a slow fire, and what does not.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;

use swarm_protocol::Objective;
use swarm_protocol::schedule::{CatchUpPolicy, OverlapPolicy};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::*;

/// A scheduler that keeps the events recorded, answers `Flush` at once, and holds every
/// `Submit` until the test gives a permit (one objective per idempotency key, as the real
/// one).
struct SlowSubmits;

struct SlowState {
    events: Arc<Mutex<Vec<Event>>>,
    gate: Arc<Semaphore>,
    submitted: mpsc::UnboundedSender<()>,
    objectives: HashMap<String, ObjectiveId>,
}

impl Actor for SlowSubmits {
    type Msg = SchedulerMsg;
    type State = SlowState;
    type Arguments = SlowState;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        state: SlowState,
    ) -> Result<SlowState, ActorProcessingErr> {
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SlowState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::Record(event) => state.events.lock().unwrap().push(event),
            SchedulerMsg::Flush(reply) => {
                let _ = reply.send(Ok(()));
            }
            SchedulerMsg::Get { reply, .. } => {
                let _ = reply.send(None);
            }
            SchedulerMsg::Submit {
                idempotency_key,
                reply,
                ..
            } => {
                let key = idempotency_key.unwrap_or_default();
                let objective = *state.objectives.entry(key).or_default();
                let gate = state.gate.clone();
                let _ = state.submitted.send(());
                // Answered off the handler, so this scheduler goes on taking records.
                tokio::spawn(async move {
                    gate.acquire().await.unwrap().forget();
                    let _ = reply.send(Ok(objective));
                });
            }
            _ => {}
        }
        Ok(())
    }
}

fn spec(name: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "*/5 * * * * *".into(),
        time_zone: "UTC".into(),
        template: Objective::with_tasks("tick", Vec::new()),
        overlap: OverlapPolicy::Skip,
        catch_up: CatchUpPolicy::Skip,
        paused: false,
    }
}

/// The schedule events recorded so far, each as `<what> <schedule>`.
fn recorded(events: &Mutex<Vec<Event>>) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::ScheduleCreated { spec } => format!("created {}", spec.name),
            Event::ScheduleFired { schedule, .. } => format!("fired {schedule}"),
            Event::SchedulePaused { schedule } => format!("paused {schedule}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// While a fire's submit hangs, the schedules are listed and other schedules change; a
/// change of the firing schedule waits for the fire and is recorded after it; the slot
/// fired again returns the same objective and records nothing new.
#[tokio::test]
async fn a_slow_fire_blocks_neither_reads_nor_other_schedules() {
    const MS: u64 = 10_000;
    let events = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let (submitted, mut submits) = mpsc::unbounded_channel();
    let (scheduler, scheduler_task) = Actor::spawn(
        None,
        SlowSubmits,
        SlowState {
            events: events.clone(),
            gate: gate.clone(),
            submitted,
            objectives: HashMap::new(),
        },
    )
    .await
    .unwrap();
    let (_failure, failure) = watch::channel(None);
    let args = TriggersArgs {
        setup: TriggerSetup::default(),
        scheduler: scheduler.clone(),
        store: None,
        call_timeout: Duration::from_secs(10),
        failure,
    };
    let (triggers, triggers_task) = Actor::spawn(None, Triggers, args).await.unwrap();
    let create = |name: &str| {
        let spec = spec(name);
        let triggers = triggers.clone();
        async move {
            call_t!(
                triggers,
                |reply| TriggerMsg::CreateSchedule { spec, reply },
                MS
            )
            .unwrap()
            .unwrap()
        }
    };
    create("s").await;

    let fire = {
        let triggers = triggers.clone();
        tokio::spawn(async move {
            call_t!(
                triggers,
                |reply| TriggerMsg::FireSchedule {
                    name: "s".into(),
                    slot_ms: 5_000,
                    reply
                },
                MS
            )
            .unwrap()
            .unwrap()
        })
    };
    submits.recv().await.unwrap();
    // The pause is sent before the list below (one sender's messages arrive in order), so
    // once the list is answered the pause has been handled: it waits for the fire.
    let (paused_tx, mut paused) = oneshot::channel();
    triggers
        .cast(TriggerMsg::SetSchedulePaused {
            name: "s".into(),
            paused: true,
            reply: paused_tx.into(),
        })
        .unwrap();
    let views = call_t!(triggers, TriggerMsg::ListSchedules, MS).unwrap();
    assert_eq!(views.len(), 1);
    assert!(views[0].recent_fires.is_empty());
    assert!(paused.try_recv().is_err(), "the pause waits for the fire");
    create("t").await;
    assert_eq!(recorded(&events), ["created s", "created t"]);

    gate.add_permits(1);
    let objective = fire.await.unwrap();
    let view = paused.await.unwrap().unwrap();
    assert!(view.spec.paused);
    assert_eq!(view.recent_fires[0].objective, objective);
    assert_eq!(
        recorded(&events),
        ["created s", "created t", "fired s", "paused s"]
    );

    // The same slot again: the same objective, nothing recorded.
    gate.add_permits(1);
    let again = call_t!(
        triggers,
        |reply| TriggerMsg::FireSchedule {
            name: "s".into(),
            slot_ms: 5_000,
            reply
        },
        MS
    )
    .unwrap()
    .unwrap();
    assert_eq!(again, objective);
    assert_eq!(recorded(&events).len(), 4);

    triggers.stop(None);
    triggers_task.await.unwrap();
    scheduler.stop(None);
    scheduler_task.await.unwrap();
}
