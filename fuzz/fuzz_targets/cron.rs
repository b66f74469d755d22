//! Cron schedules with time zones: a `ScheduleSpec`'s cron expression and zone checked as
//! `POST /v1/schedules` checks them, then its slots computed from an arbitrary instant.
//!
//! Input: 8 bytes `after_ms` (little endian), 1 byte `n`, 4 bytes `span_ms`, then UTF-8 text:
//! the cron expression, a newline, the time zone name.
//!
//! Properties: nothing panics; slots are whole seconds, strictly after `after_ms`, strictly
//! increasing, at most `n`; the latest slot in `(after_ms, after_ms + span_ms]` lies in that
//! interval, and the first slot after `after_ms` is the latest one up to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_coordinator::triggers::cron::Schedule;
use swarm_protocol::schedule::{CatchUpPolicy, OverlapPolicy};
use swarm_protocol::{Objective, ScheduleSpec};

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let (head, text) = data.split_at(13);
    let after_ms = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let n = usize::from(head[8] % 32);
    let span_ms = u64::from(u32::from_le_bytes(head[9..13].try_into().expect("4 bytes")));
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (cron, time_zone) = text.split_once('\n').unwrap_or((text, "UTC"));
    let spec = ScheduleSpec {
        name: "fuzz".into(),
        cron: cron.into(),
        time_zone: time_zone.into(),
        template: Objective::with_tasks("fuzz", Vec::new()),
        overlap: OverlapPolicy::default(),
        catch_up: CatchUpPolicy::default(),
        paused: false,
    };
    let Ok(schedule) = Schedule::new(spec) else {
        return;
    };
    let slots = schedule.next_slots(after_ms, n);
    assert!(slots.len() <= n);
    for (i, &slot) in slots.iter().enumerate() {
        assert!(slot > after_ms, "slot {slot} not after {after_ms}");
        assert_eq!(slot % 1000, 0, "slot {slot} is not a whole second");
        if i > 0 {
            assert!(slots[i - 1] < slot, "slots out of order: {slots:?}");
        }
    }
    let at_ms = after_ms.saturating_add(span_ms);
    if let Some(latest) = schedule.latest_slot_between(after_ms, at_ms) {
        assert!(
            after_ms < latest && latest <= at_ms,
            "{latest} not in ({after_ms}, {at_ms}]"
        );
    }
    if let Some(&first) = schedule.next_slots(after_ms, 1).first() {
        assert_eq!(
            schedule.latest_slot_between(after_ms, first),
            Some(first),
            "the first slot after {after_ms} is the latest up to itself"
        );
    }
});
