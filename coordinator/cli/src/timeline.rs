//! The chain of work as text for a terminal (`swarm replay`, `swarm demo`): one line per
//! event, in the words of [`swarm_server::text`], which the dashboard shows too.

use std::fmt::Write as _;

use swarm_protocol::EventRecord;
use swarm_server::text::timeline_entries;

/// The chain of work as lines of text: one line per event, with the time since submission, the
/// task's name, and what happened.
pub fn timeline(events: &[EventRecord]) -> String {
    let mut out = String::new();
    for entry in timeline_entries(events) {
        let _ = writeln!(
            out,
            "{:>5} +{:>8.3}s  {}",
            entry.seq,
            entry.since_start_ms as f64 / 1000.0,
            entry.text
        );
    }
    out
}
