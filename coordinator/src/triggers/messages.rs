//! The trigger actor's messages: what callers ask (`TriggerMsg`), and what its spawned
//! durable work reports back (`Settled`), with the change or fire it was for.
//!
//! A change or a fire is about one name (`Busy`): the actor handles one at a time per name,
//! and keeps the requests about a busy name in order until it is settled.

use std::sync::Arc;

use ractor::RpcReplyPort;
use serde_json::Value;
use swarm_agents::clock::Clock;
use swarm_protocol::{Event, ObjectiveId, ScheduleSpec};
use tokio::sync::watch;

use crate::Error;
use crate::config::HookConfig;
use crate::triggers::cron::Schedule;
use crate::triggers::hooks::{Hook, HookView, Hooks};
use crate::triggers::schedules::{ScheduleView, SlotOutcome};

/// Messages to the trigger actor.
pub(crate) enum TriggerMsg {
    /// Creates a schedule (answered once `ScheduleCreated` is durable).
    CreateSchedule {
        /// Its spec.
        spec: ScheduleSpec,
        /// Its view, or why not.
        reply: RpcReplyPort<Result<ScheduleView, Error>>,
    },
    /// Pauses or resumes a schedule (answered once its event is durable).
    SetSchedulePaused {
        /// The schedule.
        name: String,
        /// Paused (true) or running.
        paused: bool,
        /// Its view, or why not.
        reply: RpcReplyPort<Result<ScheduleView, Error>>,
    },
    /// Deletes a schedule (answered once `ScheduleDeleted` is durable).
    DeleteSchedule {
        /// The schedule.
        name: String,
        /// Done, or why not.
        reply: RpcReplyPort<Result<(), Error>>,
    },
    /// Fires a slot of a schedule now, whatever its policies (answered once `ScheduleFired` is
    /// durable).
    FireSchedule {
        /// The schedule.
        name: String,
        /// The slot.
        slot_ms: u64,
        /// The objective, or why not.
        reply: RpcReplyPort<Result<ObjectiveId, Error>>,
    },
    /// Every schedule, as of now on the firing clock.
    ListSchedules(RpcReplyPort<Vec<ScheduleView>>),
    /// Starts the firing loop on `clock` (also the clock of creations, resumes and the next
    /// fire times shown); each finished turn adds one to `turns`.
    StartFiring {
        /// The clock.
        clock: Arc<dyn Clock>,
        /// Counts finished turns.
        turns: watch::Sender<u64>,
        /// Answered once started.
        reply: RpcReplyPort<()>,
    },
    /// Stops the firing loop, answered once the fires under way are settled.
    StopFiring(RpcReplyPort<()>),
    /// The firing loop's timer (a stale `timer` is ignored).
    Wake {
        /// Which arming of the timer sent it.
        timer: u64,
    },
    /// Serves `hooks` (those of `swarm.toml`) and, after them, the hooks declared through the
    /// API that the log holds; answered with the names of the declared ones served.
    ServeHooks {
        /// The configured hooks, and the environment secrets are read in.
        hooks: Hooks,
        /// The names of the declared hooks served again.
        reply: RpcReplyPort<Vec<String>>,
    },
    /// Declares a hook through the API (answered once `HookDeclared` is durable).
    DeclareHook {
        /// Its fields.
        config: HookConfig,
        /// Its view, or why not.
        reply: RpcReplyPort<Result<HookView, Error>>,
    },
    /// Deletes a hook declared through the API (answered once `HookDeleted` is durable).
    DeleteHook {
        /// The hook.
        name: String,
        /// Done, or why not.
        reply: RpcReplyPort<Result<(), Error>>,
    },
    /// The hook named `name`, if it is served (for a delivery).
    GetHook {
        /// The hook.
        name: String,
        /// The hook.
        reply: RpcReplyPort<Option<Arc<Hook>>>,
    },
    /// Every hook served, by name.
    ListHooks(RpcReplyPort<Vec<HookView>>),
    /// Durable work the actor spawned is done.
    Settled(Settled),
}

/// What a name is busy with: a change or a fire under way. Requests about it wait.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Busy {
    Schedule(String),
    Hook(String),
}

impl TriggerMsg {
    /// The name a change or a fire is about (none for reads and the loop's own messages).
    pub(crate) fn busy(&self) -> Option<Busy> {
        match self {
            Self::CreateSchedule { spec, .. } => Some(Busy::Schedule(spec.name.clone())),
            Self::SetSchedulePaused { name, .. }
            | Self::DeleteSchedule { name, .. }
            | Self::FireSchedule { name, .. } => Some(Busy::Schedule(name.clone())),
            Self::DeclareHook { config, .. } => Some(Busy::Hook(config.name.clone())),
            Self::DeleteHook { name, .. } => Some(Busy::Hook(name.clone())),
            _ => None,
        }
    }
}

/// A change checked and waiting for its event to be durable, with its caller.
pub(crate) enum Change {
    CreateSchedule {
        schedule: Box<Schedule>,
        reply: RpcReplyPort<Result<ScheduleView, Error>>,
    },
    SetSchedulePaused {
        name: String,
        paused: bool,
        reply: RpcReplyPort<Result<ScheduleView, Error>>,
    },
    DeleteSchedule {
        name: String,
        reply: RpcReplyPort<Result<(), Error>>,
    },
    DeclareHook {
        config: HookConfig,
        fields: Value,
        hook: Box<Hook>,
        reply: RpcReplyPort<Result<HookView, Error>>,
    },
    DeleteHook {
        name: String,
        reply: RpcReplyPort<Result<(), Error>>,
    },
}

impl Change {
    /// The name it changes.
    pub(crate) fn busy(&self) -> Busy {
        match self {
            Self::CreateSchedule { schedule, .. } => Busy::Schedule(schedule.spec().name.clone()),
            Self::SetSchedulePaused { name, .. } | Self::DeleteSchedule { name, .. } => {
                Busy::Schedule(name.clone())
            }
            Self::DeclareHook { config, .. } => Busy::Hook(config.name.clone()),
            Self::DeleteHook { name, .. } => Busy::Hook(name.clone()),
        }
    }

    /// The event that records it.
    pub(crate) fn event(&self) -> Event {
        match self {
            Self::CreateSchedule { schedule, .. } => Event::ScheduleCreated {
                spec: Box::new(schedule.spec().clone()),
            },
            Self::SetSchedulePaused { name, paused, .. } => {
                let schedule = name.clone();
                if *paused {
                    Event::SchedulePaused { schedule }
                } else {
                    Event::ScheduleResumed { schedule }
                }
            }
            Self::DeleteSchedule { name, .. } => Event::ScheduleDeleted {
                schedule: name.clone(),
            },
            Self::DeclareHook { config, fields, .. } => Event::HookDeclared {
                name: config.name.clone(),
                config: fields.clone(),
            },
            Self::DeleteHook { name, .. } => Event::HookDeleted { name: name.clone() },
        }
    }
}

/// A caller of `FireSchedule`, and its answer.
pub(crate) type FireAnswer = (
    RpcReplyPort<Result<ObjectiveId, Error>>,
    Result<ObjectiveId, Error>,
);

/// The result of durable work the actor spawned.
pub(crate) enum Settled {
    /// A change's event is durable (`Ok`), or could not be made durable.
    Change {
        change: Change,
        recorded: Result<(), Error>,
        /// A created schedule's time, as the log stamped it (when it could be read).
        created_at_ms: Option<u64>,
    },
    /// A fire of `name` is over: what became of its slots, in order, and for a fire asked
    /// for by a caller, the caller and its answer.
    Fire {
        name: String,
        outcomes: Vec<SlotOutcome>,
        caller: Option<FireAnswer>,
        /// True for a fire of the firing loop's current turn.
        of_turn: bool,
    },
}

impl std::fmt::Debug for TriggerMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a hook carries its secret.
        let name = match self {
            Self::CreateSchedule { .. } => "CreateSchedule",
            Self::SetSchedulePaused { .. } => "SetSchedulePaused",
            Self::DeleteSchedule { .. } => "DeleteSchedule",
            Self::FireSchedule { .. } => "FireSchedule",
            Self::ListSchedules(_) => "ListSchedules",
            Self::StartFiring { .. } => "StartFiring",
            Self::StopFiring(_) => "StopFiring",
            Self::Wake { .. } => "Wake",
            Self::ServeHooks { .. } => "ServeHooks",
            Self::DeclareHook { .. } => "DeclareHook",
            Self::DeleteHook { .. } => "DeleteHook",
            Self::GetHook { .. } => "GetHook",
            Self::ListHooks(_) => "ListHooks",
            Self::Settled(_) => "Settled",
        };
        f.write_str(name)
    }
}
