//! Where the scheduler's events go.
//!
//! The scheduler records every state change as an [`Event`] through a [`Journal`], in the order
//! the changes happen. The journal gives each a sequence number and a timestamp. This issue's
//! journals keep events in memory or hand them to a channel; the durable log is a journal too.

use std::time::{SystemTime, UNIX_EPOCH};

use swarm_protocol::{Event, EventRecord};
use tokio::sync::mpsc::UnboundedSender;

/// Receives every event the scheduler records, in order.
pub trait Journal: Send + 'static {
    /// Records one event.
    fn record(&mut self, event: Event);
}

/// Discards events (benchmarks of the allocation path alone).
#[derive(Debug, Default)]
pub struct NullJournal;

impl Journal for NullJournal {
    fn record(&mut self, _event: Event) {}
}

/// Numbers and timestamps events and sends them down a channel (tests await them there).
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
