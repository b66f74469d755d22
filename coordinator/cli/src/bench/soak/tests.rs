//! The soak's pure parts: its plan, the answers' classification, the figures and the verdict.

use std::collections::{BTreeMap, HashMap};

use swarm_coordinator::config::Config;

use super::*;

const MIB: u64 = 1024 * 1024;

fn sample(at_s: f64, mib: u64, phase: Phase) -> RssSample {
    RssSample {
        at_s,
        rss_bytes: mib * MIB,
        phase,
    }
}

fn phase(offered: u64, accepted: u64, p99_ms: f64) -> PhaseReport {
    PhaseReport {
        seconds: 100.0,
        rate: 20,
        offered,
        accepted,
        refused_429: BTreeMap::new(),
        refused_503: 0,
        refused_without_retry_after: 0,
        failed: 0,
        first_error: None,
        accept_p50_ms: p99_ms / 2.0,
        accept_p99_ms: p99_ms,
        accept_max_ms: p99_ms * 2.0,
        refuse_p99_ms: 0.0,
        send_lag_max_ms: 0.0,
    }
}

/// A run that meets every target.
fn passing() -> SoakReport {
    let mut overload = phase(5_000, 600, 30.0);
    overload.refused_429.insert("backlog".to_owned(), 4_400);
    SoakReport {
        soak: phase(2_000, 2_000, 12.0),
        warmup_s: 20.0,
        fault_rate: 0.05,
        model_calls: 2_100,
        model_faults: 100,
        agent_restarts: 6,
        drift: Some(Drift {
            after_warmup_bytes: 40 * MIB,
            end_bytes: 41 * MIB,
            drift: 0.025,
        }),
        soak_rss_peak_bytes: 42 * MIB,
        calibration_batch: 1_000,
        sustainable_per_s: 250.0,
        overload,
        overload_rss_peak_bytes: 60 * MIB,
        backlog_max: 4_000,
        backlog_peak: 4_100,
        endings: Endings {
            accepted: 3_600,
            succeeded: 3_600,
            ..Endings::default()
        },
        rss_samples: Vec::new(),
        misses: Vec::new(),
    }
}

#[test]
fn the_plan_fills_the_servers_memory_window_within_the_warmup() {
    let config = SoakConfig::new(PathBuf::from("swarm"), Duration::from_secs(100));
    assert_eq!(config.warmup(), Duration::from_secs(50));
    // 20/s for half of the 50 s warm-up.
    assert_eq!(config.keep_finished(), 500);
    let long = SoakConfig::new(PathBuf::from("swarm"), Duration::from_secs(30 * 60));
    assert_eq!(long.warmup(), Duration::from_secs(15 * 60));
    assert_eq!(long.keep_finished(), 9_000);
    // Never past `swarm serve`'s 10,000, never below 100.
    let longest = SoakConfig::new(PathBuf::from("swarm"), Duration::from_secs(24 * 3600));
    assert_eq!(longest.keep_finished(), 10_000);
    let short = SoakConfig::new(PathBuf::from("swarm"), Duration::from_secs(5));
    assert_eq!(short.keep_finished(), 100);
    // A quarter of the backlog bound: an objective counts once, and once per queued task.
    assert_eq!(config.calibration_batch(), 1_000);
}

#[test]
fn the_server_config_names_the_simulated_model_and_the_backlog_bound() -> anyhow::Result<()> {
    let config = SoakConfig::new(PathBuf::from("swarm"), Duration::from_secs(100));
    let parsed = Config::parse(&server_toml(&config, "http://127.0.0.1:9/v1"))
        .map_err(anyhow::Error::msg)?;
    assert_eq!(parsed.server.backlog_max, Some(4_000));
    assert_eq!(parsed.server.client_requests_per_second, Some(0));
    assert_eq!(parsed.agents.len(), 4);
    assert!(
        parsed
            .agents
            .iter()
            .all(|a| a.base_url.as_deref() == Some("http://127.0.0.1:9/v1"))
    );
    assert!(
        parsed
            .agents
            .iter()
            .all(|a| a.capabilities[0].as_str() == ASK)
    );
    Ok(())
}

#[test]
fn the_servers_settings_survive_its_command_line() -> anyhow::Result<()> {
    let settings = SoakServerConfig {
        data_dir: PathBuf::from("/tmp/x/data"),
        config_file: PathBuf::from("/tmp/x/swarm.toml"),
        crash_agents: 2,
        crash_every_ms: 30_000,
        keep_finished: 200,
    };
    let back: SoakServerConfig = serde_json::from_str(&serde_json::to_string(&settings)?)?;
    assert_eq!(back, settings);
    Ok(())
}

#[test]
fn answers_are_classified_by_status_retry_after_and_problem() {
    assert_eq!(
        classify(202, None, br#"{"id":"0190-a","links":{}}"#),
        Answer::Accepted("0190-a".to_owned())
    );
    assert_eq!(classify(202, None, b"{}"), Answer::Unexpected(202));
    assert_eq!(
        classify(
            429,
            Some(b"1"),
            br#"{"type":"urn:swarm:problem:backlog","status":429}"#
        ),
        Answer::Refused {
            status: 429,
            retry_after_s: Some(1),
            kind: "backlog".to_owned()
        }
    );
    // Missing, or not whole seconds: counted as without Retry-After.
    for header in [None, Some(&b"soon"[..]), Some(&b""[..])] {
        assert_eq!(
            classify(503, header, b"not json"),
            Answer::Refused {
                status: 503,
                retry_after_s: None,
                kind: "-".to_owned()
            }
        );
    }
    assert_eq!(classify(500, Some(b"1"), b""), Answer::Unexpected(500));
}

#[test]
fn a_tally_counts_each_answer_once_and_merges() -> anyhow::Result<()> {
    let mut one = Tally::new()?;
    one.record(Answer::Accepted("a".into()), Duration::from_millis(3));
    one.record(
        Answer::Refused {
            status: 429,
            retry_after_s: Some(1),
            kind: "backlog".into(),
        },
        Duration::from_millis(1),
    );
    let mut two = Tally::new()?;
    two.record(
        Answer::Refused {
            status: 429,
            retry_after_s: None,
            kind: "backlog".into(),
        },
        Duration::from_millis(1),
    );
    two.record(Answer::Unexpected(500), Duration::from_millis(1));
    two.record_error("connection reset".into());
    two.send_lag_max = Duration::from_millis(7);
    one.merge(two)?;
    assert_eq!(one.offered, 5);
    assert_eq!(one.accepted_ids, ["a"]);
    assert_eq!(one.refused_count(), 2);
    assert_eq!(one.refused_without_retry_after, 1);
    assert_eq!(one.failed_count(), 2);
    assert_eq!(one.first_error.as_deref(), Some("connection reset"));
    assert_eq!(one.send_lag_max, Duration::from_millis(7));
    let report = PhaseReport::of(&one, Duration::from_secs(1), 5);
    assert_eq!(report.refused_429_count(), 2);
    assert_eq!(report.accepted, 1);
    assert_eq!(report.failed, 2);
    Ok(())
}

#[test]
fn drift_compares_the_start_and_the_end_of_the_measured_span() {
    // Warm-up to 20 s (growing from 10 to 38 MiB, left out), then 40 MiB flat, ending at 44.
    let mut samples: Vec<RssSample> = (0..20u32)
        .map(|t| sample(f64::from(t), 10 + u64::from(t) * 3 / 2, Phase::Soak))
        .collect();
    samples.extend((20..=100u32).map(|t| {
        let mib = if t >= 92 { 44 } else { 40 };
        sample(f64::from(t), mib, Phase::Soak)
    }));
    // Later phases never count.
    samples.push(sample(101.0, 400, Phase::Overload));
    let drift = rss_drift(&samples, 20.0, 100.0).expect("samples after the warm-up");
    // Windows of 8 s: 20..=28 all at 40, 92..=100 all at 44.
    assert_eq!(drift.after_warmup_bytes, 40 * MIB);
    assert_eq!(drift.end_bytes, 44 * MIB);
    assert!((drift.drift - 0.1).abs() < 1e-9);
    assert_eq!(rss_peak(&samples, Phase::Soak), 44 * MIB);
    assert_eq!(rss_peak(&samples, Phase::Overload), 400 * MIB);
    assert_eq!(rss_peak(&samples, Phase::Drain), 0);
    assert_eq!(rss_drift(&samples, 200.0, 300.0), None);
}

#[test]
fn vm_rss_and_metrics_are_read_from_their_text() {
    let status = "Name:\tswarm\nVmHWM:\t  90000 kB\nVmRSS:\t   41234 kB\nThreads:\t4\n";
    assert_eq!(parse_vm_rss(status), Some(41_234 * 1024));
    assert_eq!(parse_vm_rss("Name:\tswarm\n"), None);
    let metrics = "# HELP swarm_objectives_running Objectives not yet ended.\n\
                   # TYPE swarm_objectives_running gauge\n\
                   swarm_objectives_running 3\n\
                   swarm_objectives_running_other 9\n\
                   swarm_agent_restarts_total{agent=\"A1\",name=\"c-0\"} 2\n\
                   swarm_agent_restarts_total{agent=\"A2\",name=\"c-1\"} 1\n";
    assert_eq!(metric(metrics, "swarm_objectives_running"), Some(3.0));
    assert_eq!(metric(metrics, "swarm_agent_restarts_total"), Some(3.0));
    assert_eq!(metric(metrics, "swarm_objectives_ended_total"), None);
    assert_eq!(backlog(metrics), 3);
}

#[test]
fn an_objective_is_lost_when_the_log_lacks_it_or_it_never_ended() {
    let listed: HashMap<String, ObjectiveStatus> = [
        ("a", ObjectiveStatus::Succeeded),
        ("b", ObjectiveStatus::Failed),
        ("c", ObjectiveStatus::Running),
        ("d", ObjectiveStatus::Cancelled),
        ("e", ObjectiveStatus::Succeeded),
    ]
    .into_iter()
    .map(|(id, status)| (id.to_owned(), status))
    .collect();
    let accepted: Vec<String> = ["a", "b", "c", "d", "missing"].map(str::to_owned).to_vec();
    assert_eq!(
        endings(&accepted, &listed),
        Endings {
            accepted: 5,
            succeeded: 1,
            failed: 1,
            cancelled: 1,
            lost: 2,
            unacknowledged: 1,
        }
    );
}

#[test]
fn a_run_that_meets_every_target_passes() {
    let report = passing();
    assert_eq!(verdict(&report, &Targets::default()), Vec::<String>::new());
    assert!(render(&report, &Targets::default()).ends_with("verdict: pass\n"));
}

#[test]
fn the_verdict_names_every_target_missed() {
    let targets = Targets::default();
    let check = |change: &dyn Fn(&mut SoakReport), expected: &str| {
        let mut report = passing();
        change(&mut report);
        let misses = verdict(&report, &targets);
        assert_eq!(misses.len(), 1, "{misses:?}");
        assert!(
            misses[0].contains(expected),
            "{misses:?} lacks {expected:?}"
        );
        report.misses = misses;
        assert!(render(&report, &targets).contains("verdict: FAIL"));
    };
    check(&|r| r.soak.accept_p99_ms = 50.0, "p99 50.0 ms");
    check(
        &|r| r.soak.accepted = 1_999,
        "1 of 2000 submits not accepted",
    );
    check(
        &|r| {
            r.drift = Some(Drift {
                after_warmup_bytes: 40 * MIB,
                end_bytes: 45 * MIB,
                drift: 0.125,
            })
        },
        "RSS drift +12.5%",
    );
    check(&|r| r.drift = None, "no RSS sample");
    check(&|r| r.endings.lost = 2, "2 accepted objectives lost");
    check(
        &|r| r.overload.refused_without_retry_after = 3,
        "3 refusals of the overload without Retry-After",
    );
    check(
        &|r| {
            r.overload.failed = 1;
            r.overload.first_error = Some("reset".into());
        },
        "(first: reset)",
    );
    check(&|r| r.overload.refused_429.clear(), "did not overload");
}
