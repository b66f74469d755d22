//! The trigger owner: one actor, [`Triggers`], holds the cron schedules and the webhooks a
//! swarm serves, and the firing loop's clock, and is the only one that changes them.
//!
//! **Messages.** Reads (the schedules, the hooks, one hook for a delivery) are answered at once
//! from what is applied. A change (create, pause, resume or delete a schedule; declare or
//! delete a hook) is checked against what is applied, its event is recorded through the
//! scheduler's journal (so the log keeps one order), and it is applied, and answered, once that
//! event is durable. A fire submits the schedule's objective and records `ScheduleFired` (or
//! `ScheduleSkipped`, `ScheduleFireFailed`), then is applied the same way.
//!
//! **Nothing is held across a commit.** The durable part of a change or a fire (the submit, the
//! commit of its event) never runs in the handler: the actor spawns it, marks the schedule or
//! hook *busy*, and goes on answering; the spawned work sends its result back as `Settled`,
//! which the actor applies in one place ([`TriggerState::settle`]). A request about a busy
//! name waits in that name's queue, in order, until the name is settled; requests about other
//! names, and reads, do not wait. So a slow submit delays nothing but the next change of its
//! own schedule, and `GET /v1/schedules` answers meanwhile.
//!
//! **At most one fire per slot.** A turn of the firing loop asks the book
//! ([`Schedules::due`]) what is due, leaving busy schedules out; the book moves each
//! schedule's cursor past what it hands out, so no slot is handed out twice. The actor starts
//! at most one fire per schedule and keeps the schedule busy until that fire is settled, so two
//! fires of one schedule never run at once; and a fire submits under the slot's idempotency key
//! (`schedule:<name>:<slot_ms>`), so even a fire repeated after a crash submits nothing new.
//! Turns do not overlap: a turn ends when its fires are settled, and a wake that comes during a
//! turn runs another turn after it.
//!
//! Every spawned piece of work ends within a few call timeouts (each of its calls has one); if
//! the actor has stopped meanwhile, its result is dropped, and a caller waiting for it gets an
//! error.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, call_t};
use serde_json::Value;
use swarm_agents::clock::{Clock, TokioClock};
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::{Event, ObjectiveId, ScheduleSpec, SchedulerError, SchedulerMsg};
use swarm_store::{DeclaredHook, EventStore, StoredSchedule};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;
use crate::config::HookConfig;
use crate::triggers::Error as TriggerError;
use crate::triggers::cron::Schedule;
use crate::triggers::durable::Durable;
use crate::triggers::hooks::{Hook, HookSource, HookView, Hooks};
pub(crate) use crate::triggers::messages::TriggerMsg;
use crate::triggers::messages::{Busy, Change, Settled};
use crate::triggers::schedules::{Schedules, SlotOutcome};

/// How long the firing loop sleeps when no schedule has a next slot (a change wakes it).
const IDLE_SLEEP: Duration = Duration::from_secs(3_600);

/// How many call timeouts a caller waits for a change or a fire: it waits for its own
/// durable work (a submit and a commit, each bounded by the call timeout), and possibly for
/// the work under way on the same name before it.
pub(crate) const CHANGE_CALLS: u32 = 4;

/// The trigger actor. Behaviour only.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Triggers;

/// What the triggers start from: the schedules, the schedule fires and the hooks declared
/// through the API that the durable log holds (nothing without a log).
#[derive(Debug, Default)]
pub(crate) struct TriggerSetup {
    schedules: Vec<StoredSchedule>,
    fire_keys: Vec<(String, ObjectiveId)>,
    declared_hooks: Vec<DeclaredHook>,
}

impl TriggerSetup {
    /// Reads the log's indexes of schedules and declared hooks; `keys` are the objectives
    /// submitted under idempotency keys, of which the schedule fires
    /// (`schedule:<name>:<slot_ms>`) are kept to reconcile the schedules with.
    pub(crate) async fn from_log(
        store: &dyn EventStore,
        keys: &[(String, ObjectiveId, u64)],
    ) -> Result<Self, Error> {
        Ok(Self {
            schedules: store.schedules().await?,
            fire_keys: keys
                .iter()
                .filter(|(key, ..)| key.starts_with("schedule:"))
                .map(|(key, objective, _)| (key.clone(), *objective))
                .collect(),
            declared_hooks: store.declared_hooks().await?,
        })
    }
}

/// What the trigger actor starts with.
pub(crate) struct TriggersArgs {
    /// What the log holds.
    pub(crate) setup: TriggerSetup,
    /// Where events are recorded and objectives submitted.
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    /// The durable log, to read a created schedule's time back (none without a log).
    pub(crate) store: Option<Arc<dyn EventStore>>,
    /// How long each call of the durable work may take.
    pub(crate) call_timeout: Duration,
    /// The coordinator's failure reason, once it has one (to explain a call that failed).
    pub(crate) failure: watch::Receiver<Option<String>>,
}

/// The firing loop, while it runs.
struct Firing {
    /// Counts finished turns.
    turns: watch::Sender<u64>,
    /// The fires of the turn under way still to settle, and when to wake after it (`None`
    /// while no turn is under way).
    turn: Option<(usize, Option<u64>)>,
    /// A wake came during a turn: run another when it ends.
    again: bool,
    /// Which arming of the timer is current; a `Wake` of an older one is ignored.
    timer: u64,
    /// The armed timer's task.
    wake: Option<JoinHandle<Result<(), ractor::MessagingErr<TriggerMsg>>>>,
    /// Callers waiting for the loop to stop (after the turn under way).
    stopping: Vec<RpcReplyPort<()>>,
}

impl Firing {
    /// Forgets the armed timer.
    fn disarm(&mut self) {
        self.timer += 1;
        if let Some(wake) = self.wake.take() {
            wake.abort();
        }
    }
}

/// The schedules, the hooks, and the work under way on them.
pub(crate) struct TriggerState {
    schedules: Schedules,
    hooks: Hooks,
    /// The hooks declared through the API as the log holds them (served or not): name and
    /// recorded fields.
    declared_hooks: BTreeMap<String, Value>,
    /// The firing clock (the system's until the loop starts with another).
    clock: Arc<dyn Clock>,
    durable: Durable,
    /// The names with work under way, each with the requests that wait for it.
    busy: BTreeMap<Busy, VecDeque<TriggerMsg>>,
    firing: Option<Firing>,
    /// A turn left a busy schedule out: run a turn once a schedule is settled.
    turn_after_settle: bool,
}

impl Actor for Triggers {
    type Msg = TriggerMsg;
    type State = TriggerState;
    type Arguments = TriggersArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TriggerMsg>,
        args: TriggersArgs,
    ) -> Result<TriggerState, ActorProcessingErr> {
        let TriggerSetup {
            schedules,
            fire_keys,
            declared_hooks,
        } = args.setup;
        let (schedules, unrecorded) = Schedules::restore_with(schedules, &fire_keys);
        // Fires a crash cut off after their objective was accepted: recorded now, in the
        // scheduler's mailbox before anything else of ours (`Swarm::open` waits until they are
        // durable).
        for (schedule, slot_ms, objective) in unrecorded {
            args.scheduler
                .cast(SchedulerMsg::Record(Event::ScheduleFired {
                    schedule,
                    slot_ms,
                    objective,
                }))?;
        }
        Ok(TriggerState {
            schedules,
            hooks: Hooks::default(),
            declared_hooks: declared_hooks
                .into_iter()
                .map(|hook| (hook.name, hook.config))
                .collect(),
            clock: Arc::new(TokioClock::new()),
            durable: Durable {
                scheduler: args.scheduler,
                store: args.store,
                call_timeout_ms: crate::millis(args.call_timeout),
                failure: args.failure,
            },
            busy: BTreeMap::new(),
            firing: None,
            turn_after_settle: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TriggerMsg>,
        message: TriggerMsg,
        state: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        state.handle(&myself, message);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TriggerMsg>,
        state: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(firing) = &mut state.firing {
            firing.disarm();
        }
        Ok(())
    }
}

impl TriggerState {
    /// Handles one message; a change or fire about a busy name waits for it.
    fn handle(&mut self, myself: &ActorRef<TriggerMsg>, message: TriggerMsg) {
        if let Some(busy) = message.busy()
            && let Some(waiting) = self.busy.get_mut(&busy)
        {
            waiting.push_back(message);
            return;
        }
        match message {
            TriggerMsg::CreateSchedule { spec, reply } => match checked_schedule(spec) {
                Ok(schedule) if self.schedules.contains(&schedule.spec().name) => {
                    let name = schedule.spec().name.clone();
                    let _ = reply.send(Err(TriggerError::ScheduleExists(name).into()));
                }
                Ok(schedule) => self.begin(
                    myself,
                    Change::CreateSchedule {
                        schedule: Box::new(schedule),
                        reply,
                    },
                ),
                Err(err) => {
                    let _ = reply.send(Err(err));
                }
            },
            TriggerMsg::SetSchedulePaused {
                name,
                paused,
                reply,
            } => match self.schedules.get(&name) {
                None => {
                    let _ = reply.send(Err(TriggerError::UnknownSchedule(name).into()));
                }
                Some(schedule) if schedule.spec().paused == paused => {
                    // Already so: nothing to record.
                    let view = self
                        .schedules
                        .set_paused(&name, paused, self.clock.now_ms());
                    let _ =
                        reply.send(view.ok_or_else(|| TriggerError::UnknownSchedule(name).into()));
                    self.turn(myself);
                }
                Some(_) => self.begin(
                    myself,
                    Change::SetSchedulePaused {
                        name,
                        paused,
                        reply,
                    },
                ),
            },
            TriggerMsg::DeleteSchedule { name, reply } => {
                if self.schedules.contains(&name) {
                    self.begin(myself, Change::DeleteSchedule { name, reply });
                } else {
                    let _ = reply.send(Err(TriggerError::UnknownSchedule(name).into()));
                }
            }
            TriggerMsg::FireSchedule {
                name,
                slot_ms,
                reply,
            } => self.fire_now(myself, name, slot_ms, reply),
            TriggerMsg::ListSchedules(reply) => {
                let _ = reply.send(self.schedules.views(self.clock.now_ms()));
            }
            TriggerMsg::StartFiring {
                clock,
                turns,
                reply,
            } => {
                if let Some(firing) = &mut self.firing {
                    firing.disarm();
                }
                self.clock = clock;
                self.firing = Some(Firing {
                    turns,
                    turn: None,
                    again: false,
                    timer: 0,
                    wake: None,
                    stopping: Vec::new(),
                });
                let _ = reply.send(());
                self.turn(myself);
            }
            TriggerMsg::StopFiring(reply) => match &mut self.firing {
                Some(firing) if firing.turn.is_some() => firing.stopping.push(reply),
                Some(firing) => {
                    firing.disarm();
                    self.firing = None;
                    let _ = reply.send(());
                }
                None => {
                    let _ = reply.send(());
                }
            },
            TriggerMsg::Wake { timer } => {
                if self.firing.as_ref().is_some_and(|f| f.timer == timer) {
                    self.turn(myself);
                }
            }
            TriggerMsg::ServeHooks { hooks, reply } => {
                self.hooks = hooks;
                let _ = reply.send(self.hooks.restore(&self.declared_hooks));
            }
            TriggerMsg::DeclareHook { config, reply } => self.declare_hook(myself, config, reply),
            TriggerMsg::DeleteHook { name, reply } => {
                let known = match self.hooks.source(&name) {
                    Some(HookSource::Config) => Err(TriggerError::HookConfigured(name.clone())),
                    Some(HookSource::Api) => Ok(()),
                    // Declared but left out at start (its variable was unset): deletable.
                    None if self.declared_hooks.contains_key(&name) => Ok(()),
                    None => Err(TriggerError::UnknownHook(name.clone())),
                };
                match known {
                    Ok(()) => self.begin(myself, Change::DeleteHook { name, reply }),
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            TriggerMsg::GetHook { name, reply } => {
                let _ = reply.send(self.hooks.get(&name));
            }
            TriggerMsg::ListHooks(reply) => {
                let _ = reply.send(self.hooks.views());
            }
            TriggerMsg::Settled(settled) => self.settle(myself, settled),
        }
    }

    /// Checks a hook declaration against the hooks served and starts recording it.
    fn declare_hook(
        &mut self,
        myself: &ActorRef<TriggerMsg>,
        config: HookConfig,
        reply: RpcReplyPort<Result<HookView, Error>>,
    ) {
        let checked = Hook::from_config(&config, self.hooks.env())
            .map_err(TriggerError::from)
            .and_then(|hook| match self.hooks.source(&config.name) {
                Some(HookSource::Config) => Err(TriggerError::HookConfigured(config.name.clone())),
                Some(HookSource::Api) => Err(TriggerError::HookExists(config.name.clone())),
                None => Ok(hook),
            })
            .and_then(|hook| {
                // Strings, a JSON value and a duration: this cannot fail, but say so if it did.
                let fields = serde_json::to_value(&config).map_err(|e| {
                    TriggerError::InvalidHook(crate::triggers::hooks::DeclarationError::new(
                        "template",
                        format!("the hook's fields cannot be recorded: {e}"),
                    ))
                })?;
                Ok((hook, fields))
            });
        match checked {
            Ok((hook, fields)) => self.begin(
                myself,
                Change::DeclareHook {
                    config,
                    fields,
                    hook: Box::new(hook),
                    reply,
                },
            ),
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
        }
    }

    /// Marks the change's name busy and spawns the recording of its event; it is applied
    /// when that is settled.
    fn begin(&mut self, myself: &ActorRef<TriggerMsg>, change: Change) {
        self.busy.insert(change.busy(), VecDeque::new());
        let event = change.event();
        let created = match &change {
            Change::CreateSchedule { schedule, .. } => Some(schedule.spec().name.clone()),
            _ => None,
        };
        let durable = self.durable.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let recorded = durable.record(event).await;
            let mut created_at_ms = None;
            if let (Ok(()), Some(name)) = (&recorded, created) {
                created_at_ms = durable.created_at_ms(&name).await;
            }
            let _ = myself.cast(TriggerMsg::Settled(Settled::Change {
                change,
                recorded,
                created_at_ms,
            }));
        });
    }

    /// Fires `slot_ms` of `name` for a caller, whatever the schedule's policies.
    fn fire_now(
        &mut self,
        myself: &ActorRef<TriggerMsg>,
        name: String,
        slot_ms: u64,
        reply: RpcReplyPort<Result<ObjectiveId, Error>>,
    ) {
        let Some(schedule) = self.schedules.get(&name) else {
            let _ = reply.send(Err(TriggerError::UnknownSchedule(name).into()));
            return;
        };
        let template = schedule.spec().template.clone();
        let fires = self.schedules.fires(&name);
        self.busy
            .insert(Busy::Schedule(name.clone()), VecDeque::new());
        let durable = self.durable.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let fired = durable.fire(&name, slot_ms, &template, &fires).await;
            let outcomes = match &fired {
                Ok((objective, recorded_now)) => vec![SlotOutcome::Fired {
                    slot_ms,
                    objective: *objective,
                    recorded_now: *recorded_now,
                }],
                Err(_) => Vec::new(),
            };
            let answer = fired.map(|(objective, _)| objective);
            let _ = myself.cast(TriggerMsg::Settled(Settled::Fire {
                name,
                outcomes,
                caller: Some((reply, answer)),
                of_turn: false,
            }));
        });
    }

    /// Runs a turn of the firing loop (after the turn under way, if there is one): spawns a
    /// fire for each schedule with a slot due or waiting.
    fn turn(&mut self, myself: &ActorRef<TriggerMsg>) {
        let Some(firing) = &mut self.firing else {
            return;
        };
        if !firing.stopping.is_empty() {
            return;
        }
        if firing.turn.is_some() {
            firing.again = true;
            return;
        }
        firing.disarm();
        let now_ms = self.clock.now_ms();
        let busy = &self.busy;
        let due = self.schedules.due(now_ms, |name| {
            busy.contains_key(&Busy::Schedule(name.to_owned()))
        });
        if due.left_out {
            self.turn_after_settle = true;
        }
        let pending = due.work.len();
        for work in due.work {
            self.busy
                .insert(Busy::Schedule(work.name.clone()), VecDeque::new());
            let durable = self.durable.clone();
            let myself = myself.clone();
            tokio::spawn(async move {
                let name = work.name.clone();
                let outcomes = durable.run_due(work).await;
                let _ = myself.cast(TriggerMsg::Settled(Settled::Fire {
                    name,
                    outcomes,
                    caller: None,
                    of_turn: true,
                }));
            });
        }
        if let Some(firing) = &mut self.firing {
            firing.turn = Some((pending, due.wake_ms));
        }
        if pending == 0 {
            self.end_turn(myself);
        }
    }

    /// The turn under way is over: counts it, and runs the next (asked for meanwhile) or arms
    /// the timer for the next wake.
    fn end_turn(&mut self, myself: &ActorRef<TriggerMsg>) {
        let now_ms = self.clock.now_ms();
        let Some(firing) = &mut self.firing else {
            return;
        };
        let Some((_, wake_ms)) = firing.turn.take() else {
            return;
        };
        firing.turns.send_modify(|n| *n += 1);
        if !firing.stopping.is_empty() {
            for reply in firing.stopping.drain(..) {
                let _ = reply.send(());
            }
            firing.disarm();
            self.firing = None;
            return;
        }
        if std::mem::take(&mut firing.again) {
            self.turn(myself);
            return;
        }
        let sleep = wake_ms.map_or(IDLE_SLEEP, |at| {
            Duration::from_millis(at.saturating_sub(now_ms))
        });
        firing.disarm();
        let timer = firing.timer;
        firing.wake = Some(myself.send_after(sleep, move || TriggerMsg::Wake { timer }));
    }

    /// Applies durable work that is done, answers its caller, and takes up the requests that
    /// waited for its name.
    fn settle(&mut self, myself: &ActorRef<TriggerMsg>, settled: Settled) {
        match settled {
            Settled::Change {
                change,
                recorded,
                created_at_ms,
            } => {
                let busy = change.busy();
                let schedule_changed = matches!(busy, Busy::Schedule(_));
                self.apply(change, recorded, created_at_ms);
                self.release(myself, busy);
                if schedule_changed {
                    // Its slots may have moved: look again (as after a wake).
                    self.turn_after_settle = false;
                    self.turn(myself);
                }
            }
            Settled::Fire {
                name,
                outcomes,
                caller,
                of_turn,
            } => {
                for outcome in outcomes {
                    self.schedules.apply(&name, outcome);
                }
                if let Some((reply, answer)) = caller {
                    let _ = reply.send(answer);
                }
                self.release(myself, Busy::Schedule(name));
                if of_turn {
                    let ended = match self.firing.as_mut().and_then(|f| f.turn.as_mut()) {
                        Some((pending, _)) => {
                            *pending = pending.saturating_sub(1);
                            *pending == 0
                        }
                        None => false,
                    };
                    if ended {
                        self.end_turn(myself);
                    }
                } else if std::mem::take(&mut self.turn_after_settle) {
                    self.turn(myself);
                }
            }
        }
    }

    /// Applies a change whose event is durable (`Ok`) and answers its caller; answers with the
    /// error otherwise.
    fn apply(&mut self, change: Change, recorded: Result<(), Error>, created_at_ms: Option<u64>) {
        let now_ms = self.clock.now_ms();
        match change {
            Change::CreateSchedule { schedule, reply } => {
                let view = recorded.map(|()| {
                    // The time the log gave the event, so a restart shows the same; the event is
                    // durable by now, so a failed read falls back to the clock.
                    let created_at_ms = created_at_ms.unwrap_or_else(crate::journal::now_ms);
                    self.schedules.insert(*schedule, created_at_ms, now_ms)
                });
                let _ = reply.send(view);
            }
            Change::SetSchedulePaused {
                name,
                paused,
                reply,
            } => {
                let view = recorded.and_then(|()| {
                    self.schedules
                        .set_paused(&name, paused, now_ms)
                        .ok_or_else(|| TriggerError::UnknownSchedule(name).into())
                });
                let _ = reply.send(view);
            }
            Change::DeleteSchedule { name, reply } => {
                if recorded.is_ok() {
                    self.schedules.remove(&name);
                }
                let _ = reply.send(recorded);
            }
            Change::DeclareHook {
                config,
                fields,
                hook,
                reply,
            } => {
                let view = recorded.map(|()| {
                    self.declared_hooks.insert(config.name.clone(), fields);
                    self.hooks.insert_declared(config, *hook)
                });
                let _ = reply.send(view);
            }
            Change::DeleteHook { name, reply } => {
                if recorded.is_ok() {
                    self.hooks.remove(&name);
                    self.declared_hooks.remove(&name);
                }
                let _ = reply.send(recorded);
            }
        }
    }

    /// `busy` is no longer busy: the requests that waited for it are handled, in order (the
    /// first may make it busy again, and the rest wait again behind it).
    fn release(&mut self, myself: &ActorRef<TriggerMsg>, busy: Busy) {
        let Some(waiting) = self.busy.remove(&busy) else {
            return;
        };
        for message in waiting {
            self.handle(myself, message);
        }
    }
}

/// A schedule's spec, checked: its fields (naming the one at fault), and its template's task
/// graph as a submit checks it (whether its capabilities, or a planner, are registered is left
/// to each fire, as agents come and go).
fn checked_schedule(spec: ScheduleSpec) -> Result<Schedule, Error> {
    let schedule = Schedule::new(spec).map_err(TriggerError::from)?;
    let template = &schedule.spec().template;
    if !template.tasks.is_empty() {
        graph::validate(&template.tasks, &NoTasks, &template.limits)
            .map_err(|e| Error::Scheduler(SchedulerError::Graph(e)))?;
    }
    Ok(schedule)
}

/// The firing loop started by `Swarm::start_schedule_loop`: the trigger actor fires the
/// schedules at their slots until [`ScheduleLoop::stop`].
#[derive(Debug)]
pub struct ScheduleLoop {
    triggers: Option<ActorRef<TriggerMsg>>,
    turns: watch::Receiver<u64>,
    timeout_ms: u64,
}

impl ScheduleLoop {
    /// A handle on the loop that `triggers` runs, counting turns on `turns`.
    pub(crate) fn new(
        triggers: ActorRef<TriggerMsg>,
        turns: watch::Receiver<u64>,
        timeout_ms: u64,
    ) -> Self {
        Self {
            triggers: Some(triggers),
            turns,
            timeout_ms,
        }
    }

    /// Waits until the loop has finished at least `turns` turns since it started (each turn
    /// fires what was due, the first one catching up, and ends once those fires are
    /// recorded), so a test can look at what a turn did without sleeping. Returns at once if
    /// the loop has stopped.
    pub async fn turned(&mut self, turns: u64) {
        let _ = self.turns.wait_for(|done| *done >= turns).await;
    }

    /// Stops the loop and waits for it (the fires under way complete first).
    pub async fn stop(mut self) {
        if let Some(triggers) = self.triggers.take() {
            let _ = call_t!(triggers, TriggerMsg::StopFiring, self.timeout_ms);
        }
    }
}

#[cfg(test)]
mod tests;
