//! The soak's figures: RSS drift and peaks, each phase's answers and latencies, how the
//! accepted objectives ended, the verdict, and the report as text.

use std::collections::{BTreeMap, HashMap};

use super::*;

/// The soak's phases, as RSS samples are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Objectives at the soak rate.
    Soak,
    /// The batch that measures the sustainable rate.
    Calibration,
    /// Objectives at a multiple of the sustainable rate.
    Overload,
    /// Waiting for every accepted objective to end.
    Drain,
}

/// One reading of the server's resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RssSample {
    /// Seconds since the soak started.
    pub at_s: f64,
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// The phase it was read in.
    pub phase: Phase,
}

/// The RSS at the end of the warm-up and at the end of the soak, each the mean of the samples
/// of a window (a tenth of the measured span, at least one sample), and the growth between.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Drift {
    /// After the warm-up, bytes.
    pub after_warmup_bytes: u64,
    /// At the end, bytes.
    pub end_bytes: u64,
    /// `end / after_warmup - 1` (0.05: grew 5%).
    pub drift: f64,
}

/// The drift of the soak's samples taken from `warmup_end_s` to `soak_end_s`; `None` without
/// samples in that span.
pub fn rss_drift(samples: &[RssSample], warmup_end_s: f64, soak_end_s: f64) -> Option<Drift> {
    let measured: Vec<&RssSample> = samples
        .iter()
        .filter(|s| s.phase == Phase::Soak && s.at_s >= warmup_end_s && s.at_s <= soak_end_s)
        .collect();
    let (first, last) = (measured.first()?, measured.last()?);
    let window = ((last.at_s - first.at_s) / 10.0).max(0.0);
    let mean = |picked: Vec<u64>| picked.iter().sum::<u64>() / (picked.len().max(1) as u64);
    let start: Vec<u64> = measured
        .iter()
        .filter(|s| s.at_s <= first.at_s + window)
        .map(|s| s.rss_bytes)
        .collect();
    let end: Vec<u64> = measured
        .iter()
        .filter(|s| s.at_s >= last.at_s - window)
        .map(|s| s.rss_bytes)
        .collect();
    let (after_warmup_bytes, end_bytes) = (mean(start), mean(end));
    Some(Drift {
        after_warmup_bytes,
        end_bytes,
        drift: end_bytes as f64 / after_warmup_bytes.max(1) as f64 - 1.0,
    })
}

/// The highest RSS read in `phase`, bytes (0 without samples).
pub fn rss_peak(samples: &[RssSample], phase: Phase) -> u64 {
    samples
        .iter()
        .filter(|s| s.phase == phase)
        .map(|s| s.rss_bytes)
        .max()
        .unwrap_or(0)
}

/// `VmRSS` of a `/proc/<pid>/status` text, bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The value of an unlabelled Prometheus metric, or the sum over its labels.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest.trim(),
            Some('{') => rest.rsplit_once('}').map_or("", |(_, v)| v.trim()),
            _ => continue,
        };
        if let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// One phase's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    /// How long objectives were offered, seconds.
    pub seconds: f64,
    /// Objectives offered per second.
    pub rate: u64,
    /// Objectives offered.
    pub offered: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Answered 429, by the problem's kind.
    pub refused_429: BTreeMap<String, u64>,
    /// Answered 503.
    pub refused_503: u64,
    /// Refusals without `Retry-After`.
    pub refused_without_retry_after: u64,
    /// Other answers and requests without one.
    pub failed: u64,
    /// The first request without an answer, if any.
    pub first_error: Option<String>,
    /// 202 latency from the scheduled send, milliseconds: median.
    pub accept_p50_ms: f64,
    /// 99th percentile.
    pub accept_p99_ms: f64,
    /// The slowest.
    pub accept_max_ms: f64,
    /// 99th percentile of the refusals' latency, milliseconds.
    pub refuse_p99_ms: f64,
    /// The furthest the sender fell behind its schedule, milliseconds.
    pub send_lag_max_ms: f64,
}

impl PhaseReport {
    pub(super) fn of(tally: &Tally, duration: Duration, rate: u64) -> Self {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
        let mut refused_429 = BTreeMap::new();
        let mut refused_503 = 0;
        for ((status, kind), n) in &tally.refused_by {
            if *status == 429 {
                *refused_429.entry(kind.clone()).or_default() += n;
            } else {
                refused_503 += n;
            }
        }
        Self {
            seconds: duration.as_secs_f64(),
            rate,
            offered: tally.offered,
            accepted: tally.accepted_ids.len() as u64,
            refused_429,
            refused_503,
            refused_without_retry_after: tally.refused_without_retry_after,
            failed: tally.failed_count(),
            first_error: tally.first_error.clone(),
            accept_p50_ms: ms(&tally.accepted, 0.50),
            accept_p99_ms: ms(&tally.accepted, 0.99),
            accept_max_ms: tally.accepted.max() as f64 / 1e6,
            refuse_p99_ms: ms(&tally.refused, 0.99),
            send_lag_max_ms: tally.send_lag_max.as_secs_f64() * 1e3,
        }
    }

    /// Answered 429.
    pub fn refused_429_count(&self) -> u64 {
        self.refused_429.values().sum()
    }
}

/// How the accepted objectives ended, from the event log's listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endings {
    /// Objectives answered 202.
    pub accepted: u64,
    /// Of those: succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Missing from the log or not ended: lost.
    pub lost: u64,
    /// Objectives in the log that no 202 named (a submit whose answer did not arrive).
    pub unacknowledged: u64,
}

/// Looks each accepted objective up in the log's listing (`id -> status`).
pub fn endings(accepted: &[String], listed: &HashMap<String, ObjectiveStatus>) -> Endings {
    let mut endings = Endings {
        accepted: accepted.len() as u64,
        ..Endings::default()
    };
    let mut seen = std::collections::HashSet::with_capacity(accepted.len());
    for id in accepted {
        seen.insert(id.as_str());
        match listed.get(id) {
            Some(ObjectiveStatus::Succeeded) => endings.succeeded += 1,
            Some(ObjectiveStatus::Failed) => endings.failed += 1,
            Some(ObjectiveStatus::Cancelled) => endings.cancelled += 1,
            Some(ObjectiveStatus::Running | ObjectiveStatus::Compensating) | None => {
                endings.lost += 1
            }
        }
    }
    endings.unacknowledged = listed
        .keys()
        .filter(|id| !seen.contains(id.as_str()))
        .count() as u64;
    endings
}

/// What a soak run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakReport {
    /// The soak phase.
    pub soak: PhaseReport,
    /// Its warm-up, seconds.
    pub warmup_s: f64,
    /// The fraction of model calls failed on purpose.
    pub fault_rate: f64,
    /// Model calls the simulated server received, and those it failed.
    pub model_calls: u64,
    /// Of those, answered with an error.
    pub model_faults: u64,
    /// Agent restarts after crashes (`swarm_agent_restarts_total`).
    pub agent_restarts: u64,
    /// The RSS drift after the warm-up.
    pub drift: Option<Drift>,
    /// The highest RSS of the soak, bytes.
    pub soak_rss_peak_bytes: u64,
    /// Objectives of the calibration's batch.
    pub calibration_batch: u64,
    /// Objectives ended per second while the swarm always had work.
    pub sustainable_per_s: f64,
    /// The overload phase.
    pub overload: PhaseReport,
    /// The highest RSS of the overload and the drain after it, bytes.
    pub overload_rss_peak_bytes: u64,
    /// The server's admission bound.
    pub backlog_max: u64,
    /// The highest backlog (objectives running plus tasks queued) read during the overload.
    pub backlog_peak: u64,
    /// How the accepted objectives ended.
    pub endings: Endings,
    /// Every RSS sample.
    pub rss_samples: Vec<RssSample>,
    /// The targets missed (empty: the run passed).
    pub misses: Vec<String>,
}

/// The targets `report` misses, each named with its figure.
pub fn verdict(report: &SoakReport, targets: &Targets) -> Vec<String> {
    let mut misses = Vec::new();
    let soak = &report.soak;
    let p99_max_ms = targets.accept_p99_max.as_secs_f64() * 1e3;
    if soak.accepted == 0 {
        misses.push("the soak had no objective accepted".to_owned());
    } else if soak.accept_p99_ms >= p99_max_ms {
        misses.push(format!(
            "soak accept p99 {:.1} ms is not below {p99_max_ms:.0} ms",
            soak.accept_p99_ms
        ));
    }
    if soak.accepted < soak.offered {
        misses.push(format!(
            "the soak had {} of {} submits not accepted",
            soak.offered - soak.accepted,
            soak.offered
        ));
    }
    match report.drift {
        None => misses.push("no RSS sample after the warm-up".to_owned()),
        Some(drift) if drift.drift > targets.rss_drift_max => misses.push(format!(
            "RSS drift {:+.1}% is above {:.0}%",
            drift.drift * 100.0,
            targets.rss_drift_max * 100.0
        )),
        Some(_) => {}
    }
    if report.endings.lost > 0 {
        misses.push(format!("{} accepted objectives lost", report.endings.lost));
    }
    for (name, phase) in [("soak", soak), ("overload", &report.overload)] {
        if phase.refused_without_retry_after > 0 {
            misses.push(format!(
                "{} refusals of the {name} without Retry-After",
                phase.refused_without_retry_after
            ));
        }
        if phase.failed > 0 {
            misses.push(format!(
                "{} submits of the {name} failed or got an unexpected answer{}",
                phase.failed,
                phase
                    .first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (first: {e})"))
            ));
        }
    }
    if report.overload.offered > 0 && report.overload.refused_429_count() == 0 {
        misses.push("the overload drew no 429: it did not overload".to_owned());
    }
    misses
}

/// The report as lines to paste (the RSS samples are left out; `--json` has them).
pub fn render(report: &SoakReport, targets: &Targets) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let ok = |pass: bool| if pass { "ok" } else { "MISSED" };
    let soak = &report.soak;
    let overload = &report.overload;
    let mut out = String::new();
    let p99_max_ms = targets.accept_p99_max.as_secs_f64() * 1e3;
    out.push_str(&format!(
        "soak: {:.0} s at {} objectives/s: {} offered, {} accepted; model faults {:.1}% of {} \
         calls, {} agent restarts after crashes\n",
        soak.seconds,
        soak.rate,
        soak.offered,
        soak.accepted,
        report.model_faults as f64 * 100.0 / report.model_calls.max(1) as f64,
        report.model_calls,
        report.agent_restarts
    ));
    out.push_str(&format!(
        "soak accept latency (scheduled send -> 202): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (target p99 < {p99_max_ms:.0} ms: {})\n",
        soak.accept_p50_ms,
        soak.accept_p99_ms,
        soak.accept_max_ms,
        ok(soak.accepted > 0 && soak.accept_p99_ms < p99_max_ms)
    ));
    match report.drift {
        Some(d) => out.push_str(&format!(
            "server RSS: {:.1} MiB after the warm-up ({:.0} s), {:.1} MiB at the end of the soak: \
             drift {:+.1}% (target < {:.0}%: {}); soak peak {:.1} MiB\n",
            mib(d.after_warmup_bytes),
            report.warmup_s,
            mib(d.end_bytes),
            d.drift * 100.0,
            targets.rss_drift_max * 100.0,
            ok(d.drift <= targets.rss_drift_max),
            mib(report.soak_rss_peak_bytes)
        )),
        None => out.push_str("server RSS: no sample after the warm-up (MISSED)\n"),
    }
    out.push_str(&format!(
        "sustainable rate: {:.0} objectives/s (a batch of {}, from its first submit to its last \
         end)\n",
        report.sustainable_per_s, report.calibration_batch
    ));
    let kinds: Vec<String> = overload
        .refused_429
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    out.push_str(&format!(
        "overload: {:.0} s at {} objectives/s ({:.0}x): {} offered, {} accepted, {} refused 429 \
         ({}), {} refused 503; without Retry-After: {} ({}); failed: {}\n",
        overload.seconds,
        overload.rate,
        overload.rate as f64 / report.sustainable_per_s.max(f64::MIN_POSITIVE),
        overload.offered,
        overload.accepted,
        overload.refused_429_count(),
        if kinds.is_empty() {
            "-".to_owned()
        } else {
            kinds.join(", ")
        },
        overload.refused_503,
        overload.refused_without_retry_after,
        ok(overload.refused_without_retry_after == 0 && overload.refused_429_count() > 0),
        overload.failed
    ));
    out.push_str(&format!(
        "overload latency: 202 p50 {:.1} ms, p99 {:.1} ms; refusals p99 {:.1} ms; sender behind \
         schedule at most {:.0} ms\n",
        overload.accept_p50_ms,
        overload.accept_p99_ms,
        overload.refuse_p99_ms,
        overload.send_lag_max_ms
    ));
    out.push_str(&format!(
        "memory under overload: peak RSS {:.1} MiB (soak peak {:.1} MiB); backlog peak {} \
         (backlog_max {})\n",
        mib(report.overload_rss_peak_bytes),
        mib(report.soak_rss_peak_bytes),
        report.backlog_peak,
        report.backlog_max
    ));
    let e = &report.endings;
    out.push_str(&format!(
        "objectives: {} accepted: {} succeeded, {} failed, {} cancelled, {} lost ({}); {} in \
         the log without a 202\n",
        e.accepted,
        e.succeeded,
        e.failed,
        e.cancelled,
        e.lost,
        ok(e.lost == 0),
        e.unacknowledged
    ));
    if report.misses.is_empty() {
        out.push_str("verdict: pass\n");
    } else {
        out.push_str(&format!("verdict: FAIL: {}\n", report.misses.join("; ")));
    }
    out
}
