//! The schedules page: each cron schedule with its expression and time zone, whether it is
//! active or paused, its overlap and catch-up policies, its next fire times (in UTC, in its
//! own zone, and relative to now), its recent fires (each a link to the objective it
//! submitted), the slots it skipped and its last failure, and a Pause or Resume button that
//! calls `POST /v1/schedules/{name}/pause|resume`.
//!
//! The page shows what `GET /v1/schedules` answers (`Swarm::schedules`). The script follows
//! `GET /v1/events` and fetches the list again (`/ui/schedules/live`) after a `schedule_*`
//! event, and when a next fire time it shows has passed (the list is then read at a new
//! "now"). The relative times tick in the page from the `data-relative-ms` of each time.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use swarm_protocol::{CatchUpPolicy, OverlapPolicy};

use super::{Badge, Layout, Visitor, clip, html};
use crate::AppState;
use crate::problem::Problem;
use swarm_coordinator::triggers::cron::parse_time_zone;
use swarm_coordinator::triggers::{MissedSlot, ScheduleView};

/// A moment, as the page shows it.
pub(crate) struct Moment {
    /// ms since the Unix epoch (for the script's relative times).
    pub(crate) ms: u64,
    /// RFC 3339 in UTC, for `<time datetime>`.
    pub(crate) iso: String,
    /// `2026-11-25 17:00:00 UTC`.
    pub(crate) utc: String,
    /// The same moment in the schedule's zone (`Tue 18:00 CET`), when that is not UTC.
    pub(crate) local: Option<String>,
    /// `in 4m`, `2h 05m ago`.
    pub(crate) relative: String,
}

impl Moment {
    fn new(ms: u64, now_ms: u64, zone: Option<chrono_tz::Tz>) -> Self {
        let at = i64::try_from(ms)
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis);
        let utc = at.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        let local = zone
            .zip(at)
            .map(|(zone, t)| t.with_timezone(&zone).format("%a %H:%M %Z").to_string());
        Self {
            ms,
            iso: crate::text::utc(Some(ms)),
            utc,
            local,
            relative: relative(ms, now_ms),
        }
    }
}

/// `at_ms` relative to `now_ms`, coarse as people say it: `in 12s`, `in 4m`, `in 2h 05m`,
/// `in 3d 4h`, `5m ago`, `now`. `app.js` (`relativeText`) says it the same way as it ticks.
pub(crate) fn relative(at_ms: u64, now_ms: u64) -> String {
    let (ms, future) = if at_ms >= now_ms {
        (at_ms - now_ms, true)
    } else {
        (now_ms - at_ms, false)
    };
    let secs = ms / 1000;
    let span = match secs {
        0 => return "now".to_owned(),
        1..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h {:02}m", secs / 3_600, (secs / 60) % 60),
        _ => format!("{}d {}h", secs / 86_400, (secs / 3_600) % 24),
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A fire of the schedule.
pub(crate) struct Fire {
    pub(crate) at: Moment,
    pub(crate) objective: String,
}

/// A slot skipped, or one that could not fire.
pub(crate) struct Missed {
    pub(crate) at: Moment,
    pub(crate) reason: String,
}

/// One schedule.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) cron: String,
    pub(crate) time_zone: String,
    /// The goal of the objective each fire submits.
    pub(crate) goal: String,
    /// How the objective is decomposed: `3 tasks`, or `planned`.
    pub(crate) graph: String,
    pub(crate) paused: bool,
    pub(crate) state: Badge,
    pub(crate) overlap: &'static str,
    pub(crate) catch_up: String,
    pub(crate) created: Moment,
    pub(crate) next_fires: Vec<Moment>,
    pub(crate) fires: Vec<Fire>,
    pub(crate) skips: Vec<Missed>,
    pub(crate) last_failure: Option<Missed>,
}

/// A schedule's state: active, or paused (an icon and a word, as every badge).
pub(crate) fn schedule_badge(paused: bool) -> Badge {
    if paused {
        Badge {
            class: "s-cancelled",
            icon: "‖",
            label: "paused",
        }
    } else {
        Badge {
            class: "s-done",
            icon: "▶",
            label: "active",
        }
    }
}

fn overlap_text(policy: OverlapPolicy) -> &'static str {
    match policy {
        OverlapPolicy::Skip => "skip the slot",
        OverlapPolicy::QueueOne => "queue one slot",
        OverlapPolicy::CancelPrevious => "cancel the previous",
    }
}

fn catch_up_text(policy: CatchUpPolicy) -> String {
    match policy {
        CatchUpPolicy::Skip => "skip missed slots".to_owned(),
        CatchUpPolicy::RunLatest { window } => format!(
            "run the latest within {}",
            humantime::format_duration(window)
        ),
    }
}

impl Row {
    pub(crate) fn new(view: ScheduleView, now_ms: u64) -> Self {
        let spec = view.spec;
        // The zone was checked when the schedule was created; one that no longer parses only
        // loses the local times.
        let zone = parse_time_zone(&spec.time_zone)
            .ok()
            .filter(|zone| *zone != chrono_tz::UTC);
        let moment = |ms| Moment::new(ms, now_ms, zone);
        let missed = |m: MissedSlot| Missed {
            at: moment(m.slot_ms),
            reason: clip(&m.reason, 500),
        };
        Self {
            graph: match spec.template.tasks.len() {
                0 => "planned".to_owned(),
                1 => "1 task".to_owned(),
                n => format!("{n} tasks"),
            },
            goal: clip(&spec.template.goal, 300),
            name: spec.name,
            cron: spec.cron,
            time_zone: spec.time_zone,
            paused: spec.paused,
            state: schedule_badge(spec.paused),
            overlap: overlap_text(spec.overlap),
            catch_up: catch_up_text(spec.catch_up),
            created: moment(view.created_at_ms),
            next_fires: view.next_fires_ms.into_iter().map(moment).collect(),
            fires: view
                .recent_fires
                .into_iter()
                .map(|f| Fire {
                    at: moment(f.slot_ms),
                    objective: f.objective.to_string(),
                })
                .collect(),
            skips: view.recent_skips.into_iter().map(missed).collect(),
            last_failure: view.last_failure.map(missed),
        }
    }
}

/// The list.
struct Live {
    rows: Vec<Row>,
}

/// The page.
#[derive(Template)]
#[template(path = "schedules.html")]
struct Page {
    layout: Layout,
    this: Live,
    after_seq: u64,
}

/// The live part alone (for the script).
#[derive(Template)]
#[template(path = "schedules_live.html")]
struct LiveFragment {
    this: Live,
}

async fn live_of(state: &AppState) -> Result<Live, Problem> {
    let views = state.swarm.schedules().await?;
    let now = swarm_coordinator::journal::now_ms();
    Ok(Live {
        rows: views.into_iter().map(|view| Row::new(view, now)).collect(),
    })
}

/// `GET /ui/schedules`.
pub(crate) async fn page(State(state): State<AppState>, visitor: Visitor) -> Response {
    let page = async {
        let after_seq = super::last_seq(&state).await?;
        Ok(html(&Page {
            layout: visitor.layout("schedules"),
            this: live_of(&state).await?,
            after_seq,
        }))
    }
    .await;
    super::page_or_error(&visitor, "schedules", page)
}

/// `GET /ui/schedules/live`.
pub(crate) async fn live(State(state): State<AppState>) -> Result<Response, Problem> {
    Ok(html(&LiveFragment {
        this: live_of(&state).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_700_000_000_000;
        assert_eq!(relative(now + 400, now), "now");
        assert_eq!(relative(now + 12_000, now), "in 12s");
        assert_eq!(relative(now + 4 * 60_000 + 59_000, now), "in 4m");
        assert_eq!(relative(now + 2 * 3_600_000 + 5 * 60_000, now), "in 2h 05m");
        assert_eq!(
            relative(now + 3 * 86_400_000 + 4 * 3_600_000, now),
            "in 3d 4h"
        );
        assert_eq!(relative(now - 5 * 60_000, now), "5m ago");
        let moment = Moment::new(
            1_764_090_000_000,
            now,
            parse_time_zone("Europe/Berlin").ok(),
        );
        assert_eq!(moment.utc, "2025-11-25 17:00:00 UTC");
        assert_eq!(moment.iso, "2025-11-25T17:00:00Z");
        assert_eq!(moment.local.as_deref(), Some("Tue 18:00 CET"));
    }
}
