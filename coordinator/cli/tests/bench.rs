//! `swarm bench` end to end through the binary, with small numbers: the open loop (`--rate`)
//! reports its latency percentiles, the closed loop its bounded working set, and `--rate`
//! refuses the options of the other modes with a message naming both, and `--remote-workers`
//! runs tasks through worker processes over a nats-server it starts. Nothing here asserts a
//! timing.

#![allow(missing_docs, clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_swarm");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "swarm bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_open_loop_reports_latency_percentiles_of_every_offered_task() {
    let args = ["--agents", "4", "--capabilities", "2", "--tasks", "2000"];
    let report = json(&bench(
        &[&args[..], &["--rate", "20000", "--burst", "10", "--json"]].concat(),
    ));
    assert_eq!(report["tasks"], 2_000);
    assert_eq!(report["burst"], 10);
    assert_eq!(report["offered_per_s"], 20_000.0);
    let percentiles: Vec<f64> = ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"]
        .iter()
        .map(|field| {
            report[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{field} in {report}"))
        })
        .collect();
    assert!(percentiles[0] > 0.0, "{report}");
    assert!(
        percentiles.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {report}"
    );

    let text = bench(&[&args[..], &["--rate", "20000"]].concat());
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("allocation latency (scheduled send -> agent): p50 ")
            && text.contains("p99.9 ")
            && text.contains("bursts of 4 "),
        "{text}"
    );
}

#[test]
fn the_closed_loop_keeps_a_window_of_objectives_and_forgets_finished_ones() {
    let report = json(&bench(&[
        "--agents",
        "4",
        "--capabilities",
        "2",
        "--tasks",
        "2000",
        "--objective-size",
        "10",
        "--objectives-in-flight",
        "4",
        "--json",
    ]));
    assert_eq!(report["tasks"], 2_000);
    assert_eq!(report["objectives_in_flight"], 4);
    assert_eq!(report["objectives_in_flight_max"], 4);
    // 200 objectives ran; the scheduler holds the tasks of the 8 that ended last.
    assert_eq!(report["tasks_held_after"], 80);
}

#[test]
fn rate_refuses_the_options_of_the_other_modes() {
    for other in [
        &["--durable"][..],
        &["--data-dir", "somewhere"],
        &["--http-submits", "10"],
        &["--ui-pages", "1"],
        &["--objectives-in-flight", "2"],
    ] {
        let output = bench(&[&["--rate", "1000"][..], other].concat());
        assert!(!output.status.success(), "--rate with {other:?} ran");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot be used with")
                && stderr.contains("--rate")
                && stderr.contains(other[0]),
            "--rate with {other:?}: {stderr}"
        );
    }
    for needs_rate in [&["--duration", "1s"][..], &["--burst", "10"]] {
        let output = bench(needs_rate);
        assert!(
            !output.status.success(),
            "{needs_rate:?} without --rate ran"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--rate"), "{needs_rate:?}: {stderr}");
    }
    let output = bench(&["--rate", "0"]);
    assert!(!output.status.success(), "--rate 0 ran");
}

#[test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
fn remote_workers_run_every_task_through_a_nats_server_the_bench_starts() {
    let args = [
        "--remote-workers",
        "1",
        "--tasks",
        "200",
        "--concurrency",
        "8",
    ];
    let reports = json(&bench(&[&args[..], &["--json"]].concat()));
    let report = &reports[0];
    assert_eq!(reports.as_array().unwrap().len(), 1, "{reports}");
    assert_eq!(report["workers"], "rust");
    assert_eq!(report["processes"], 1);
    assert_eq!(report["tasks"], 200);
    assert_eq!(report["attempts"], 200, "{report}");
    assert_eq!(report["started"], 200, "{report}");
    let (p50, p99) = (
        report["start_p50_us"].as_f64().unwrap(),
        report["start_p99_us"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{report}");

    let text = bench(&args);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("remote rust workers: 1 processes")
            && text.contains("tasks=200 attempts=200")
            && text.contains("tasks/s (allocated and completed): ")
            && text.contains(
                "allocation to start (ready -> first progress or result at the coordinator): p50 "
            ),
        "{text}"
    );
}

#[test]
fn remote_workers_without_nats_server_say_how_to_get_one() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["bench", "--remote-workers", "1", "--tasks", "10"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "ran without a nats-server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot start nats-server") && stderr.contains("--nats"),
        "{stderr}"
    );
}
