//! How agent actors hand reports to the scheduler.
//!
//! Reports go into one shared queue, and the scheduler's mailbox gets a single `ReportsReady`
//! doorbell however many reports pile up before it drains them. With thousands of agents each
//! finishing a task at a time, this turns one scheduler message per report into one per batch
//! of reports, which is what keeps allocation throughput flat as the fleet grows. The scheduler
//! drains the queue at the start of every message it handles, so a report pushed before an
//! agent crashed is always seen before the `AgentLost` that follows the crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::ActorRef;
use swarm_protocol::{AgentId, Report, SchedulerMsg};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The sending side, one clone per agent actor.
#[derive(Debug, Clone)]
pub struct ReportSink {
    tx: UnboundedSender<(AgentId, Vec<Report>)>,
    doorbell: Arc<AtomicBool>,
    scheduler: ActorRef<SchedulerMsg>,
}

/// The receiving side, owned by the scheduler.
#[derive(Debug)]
pub struct ReportInbox {
    rx: UnboundedReceiver<(AgentId, Vec<Report>)>,
    doorbell: Arc<AtomicBool>,
}

/// A new queue: the inbox for the scheduler, and a function that makes the sink once the
/// scheduler's actor ref exists.
pub fn report_queue() -> (
    ReportInbox,
    impl FnOnce(ActorRef<SchedulerMsg>) -> ReportSink,
) {
    let (tx, rx) = unbounded_channel();
    let doorbell = Arc::new(AtomicBool::new(false));
    let inbox = ReportInbox {
        rx,
        doorbell: doorbell.clone(),
    };
    (inbox, move |scheduler| ReportSink {
        tx,
        doorbell,
        scheduler,
    })
}

impl ReportSink {
    /// Queues reports and rings the scheduler unless a ring is already pending. Returns false
    /// when the scheduler is gone.
    pub fn send(&self, agent: AgentId, reports: Vec<Report>) -> bool {
        if self.tx.send((agent, reports)).is_err() {
            return false;
        }
        if !self.doorbell.swap(true, Ordering::AcqRel) {
            return self.scheduler.cast(SchedulerMsg::ReportsReady).is_ok();
        }
        true
    }
}

impl ReportInbox {
    /// Re-arms the doorbell; call on `ReportsReady`, before draining, so that a report queued
    /// after the drain rings again.
    pub fn rearm(&self) {
        self.doorbell.store(false, Ordering::Release);
    }

    /// The next queued batch, if any.
    pub fn try_next(&mut self) -> Option<(AgentId, Vec<Report>)> {
        self.rx.try_recv().ok()
    }
}
