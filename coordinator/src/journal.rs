//! Where the scheduler's events go, and what waits for them to be durable.
//!
//! The scheduler records every state change as an [`Event`] through a [`Journal`], in the order
//! the changes happen, and ends each handler turn with [`Journal::commit`], handing over the
//! turn's [`Effects`]: the messages to agents and the answers to callers that must not happen
//! before the turn's events are durable. An in-memory journal runs them at once; the durable
//! journal ([`crate::writer`]) runs them once the store has committed the events, so nothing is
//! acknowledged, and no attempt starts, that a crash could take back.

use std::sync::Arc;

use ractor::ActorRef;
use swarm_protocol::{AgentId, AgentMsg, Event, EventRecord, Health, SchedulerMsg};
use tokio::sync::mpsc::UnboundedSender;

use crate::scheduler::AgentRegistry;

/// Receives every event the scheduler records, in order.
pub trait Journal: Send + 'static {
    /// Records one event.
    fn record(&mut self, event: Event);

    /// Ends a handler turn: `effects` happen once every event recorded so far is durable.
    fn commit(&mut self, effects: Effects);

    /// For a journal whose events can be read back later (so finished objectives need not
    /// stay in memory): the sequence number of the last event recorded, and of the last one
    /// durable. `None` for a journal that keeps nothing.
    fn progress(&self) -> Option<(u64, u64)> {
        None
    }
}

/// An answer to a caller, given whether the turn became durable (`Err` names why not).
pub type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Where effects are delivered: the registry (to mark an unreachable agent down) and the
/// scheduler (to take back what such an agent was given).
#[derive(Clone)]
pub struct Delivery {
    registry: AgentRegistry,
    scheduler: ActorRef<SchedulerMsg>,
}

impl Delivery {
    /// Delivery through `registry` and `scheduler`.
    pub fn new(registry: AgentRegistry, scheduler: ActorRef<SchedulerMsg>) -> Self {
        Self {
            registry,
            scheduler,
        }
    }
}

/// What one scheduler turn does outside itself once its events are durable.
pub struct Effects {
    delivery: Arc<Delivery>,
    /// Messages to agents (assignments and cancellations), in order.
    pub sends: Vec<(AgentId, ActorRef<AgentMsg>, AgentMsg)>,
    /// Answers to callers.
    pub replies: Vec<Reply>,
}

impl Effects {
    /// No effects yet, delivered through `delivery`.
    pub fn new(delivery: Arc<Delivery>) -> Self {
        Self {
            delivery,
            sends: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.replies.is_empty()
    }

    /// Carries the effects out once the turn is durable (`Ok`), or tells every caller why it
    /// could not be (`Err`); in that case no agent is sent anything.
    pub fn run(self, durable: Result<(), String>) {
        if durable.is_ok() {
            for (agent, actor, msg) in self.sends {
                if actor.cast(msg).is_err() {
                    // An actor its supervisor has replaced since this turn chose it: the
                    // supervisor marked the agent down before telling the scheduler, so the
                    // scheduler took back everything that incarnation held when it heard of
                    // the crash, and the agent now runs as a new actor that must not be marked
                    // down for its predecessor.
                    let current = self.delivery.registry.handle(agent);
                    if current.is_some_and(|now| now.get_id() != actor.get_id()) {
                        continue;
                    }
                    // Down first, so the tasks taken back cannot be handed to the same dead
                    // actor again (its supervisor brings it back up when it restarts it).
                    let _ = self.delivery.registry.set_health(agent, Health::Down);
                    let _ = self.delivery.scheduler.cast(SchedulerMsg::AgentLost {
                        agent,
                        reason: "the agent's actor was gone".into(),
                    });
                }
            }
        }
        for reply in self.replies {
            reply(durable.clone());
        }
    }
}

/// Discards events and carries effects out at once (benchmarks of the allocation path alone).
#[derive(Debug, Default)]
pub struct NullJournal;

impl Journal for NullJournal {
    fn record(&mut self, _event: Event) {}

    fn commit(&mut self, effects: Effects) {
        effects.run(Ok(()));
    }
}

/// Numbers and timestamps events and sends them down a channel (tests await them there);
/// carries effects out at once.
#[derive(Debug)]
pub struct ChannelJournal {
    seq: u64,
    tx: UnboundedSender<EventRecord>,
}

impl ChannelJournal {
    /// A journal that sends to `tx`.
    pub fn new(tx: UnboundedSender<EventRecord>) -> Self {
        Self { seq: 0, tx }
    }
}

impl Journal for ChannelJournal {
    fn record(&mut self, event: Event) {
        self.seq += 1;
        let record = EventRecord {
            seq: self.seq,
            at_ms: now_ms(),
            event,
        };
        // A receiver that went away wants no more events.
        let _ = self.tx.send(record);
    }

    fn commit(&mut self, effects: Effects) {
        effects.run(Ok(()));
    }
}

/// Wall time for the log's stamps (`EventRecord::at_ms`, the scheduler's turn time):
/// milliseconds since the Unix epoch on the system's clock, read through the workspace's one
/// clock ([`swarm_agents::clock`]). The stamps are real time even in a test on paused tokio
/// time, as a log read back later must be.
pub fn now_ms() -> u64 {
    swarm_agents::clock::system_now_ms()
}
