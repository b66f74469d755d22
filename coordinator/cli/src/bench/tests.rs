//! The bench's own parts: schedules, histograms and the closed loop's bounds.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// 1,000 tasks/s in bursts of 10: a burst every 10 ms.
fn every_10ms() -> Schedule {
    Schedule::new(Instant::now(), 1_000, 10)
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_due_from_its_scheduled_time_on() {
    let schedule = every_10ms();
    assert_eq!(schedule.due_at(0), schedule.start);
    assert_eq!(schedule.due_at(3), schedule.start + 30 * MS);
    assert_eq!(
        schedule.due_by(Instant::now()),
        1,
        "burst 0 is due at the start"
    );
    tokio::time::advance(10 * MS - Duration::from_nanos(1)).await;
    assert_eq!(schedule.due_by(Instant::now()), 1);
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(schedule.due_by(Instant::now()), 2);
    // Every burst counted as due is due, and the next one is not, at any instant.
    for offset_ns in [0, 1, 9_999_999, 10_000_000, 10_000_001, 123_456_789] {
        let now = schedule.start + Duration::from_nanos(offset_ns);
        let due = schedule.due_by(now);
        assert!(schedule.due_at(due - 1) <= now, "at +{offset_ns} ns");
        assert!(schedule.due_at(due) > now, "at +{offset_ns} ns");
    }
}

#[test]
fn an_uneven_rate_keeps_bursts_on_the_exact_schedule() {
    // 3 tasks/s one at a time: 333,333,333.3 ns apart, rounded down per burst rather than
    // accumulating the rounding.
    let schedule = Schedule::new(Instant::now(), 3, 1);
    assert_eq!(
        schedule.due_at(3) - schedule.start,
        Duration::from_secs(1),
        "three bursts take exactly a second"
    );
    assert_eq!(
        schedule.due_at(1) - schedule.start,
        Duration::from_nanos(333_333_333)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_runs_from_the_scheduled_time_even_when_the_sender_was_late() {
    let schedule = every_10ms();
    // The sender stalls for 35 ms (as a client behind a slow answer would): bursts 0 to 3
    // are due by then and go out together.
    tokio::time::advance(35 * MS).await;
    let sent = Instant::now();
    assert_eq!(schedule.due_by(sent), 4);
    // Each reaches its agent 5 us after it was sent.
    tokio::time::advance(Duration::from_micros(5)).await;
    let arrived = Instant::now();
    assert_eq!(arrived - sent, Duration::from_micros(5));
    // Measured from the send, all four would show 5 us and the stall would be omitted;
    // measured from the schedule, each is charged the time since it was due.
    let expected = [35_005, 25_005, 15_005, 5_005].map(Duration::from_micros);
    for (burst, expected) in expected.into_iter().enumerate() {
        assert_eq!(schedule.latency(burst as u64, arrived), expected);
    }
    // A task cannot arrive before its burst was due; if clocks say so, it waited no time.
    assert_eq!(schedule.latency(9, arrived), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_sender_sleeps_when_the_next_burst_is_far_and_yields_when_it_is_near() {
    let schedule = every_10ms();
    let now = Instant::now();
    // Burst 1 is 10 ms away: sleep, waking a millisecond early (timers are coarse).
    assert_eq!(
        schedule.wake(1, now),
        Wake::SleepUntil(schedule.due_at(1) - MS)
    );
    tokio::time::advance(9 * MS).await;
    assert_eq!(schedule.wake(1, Instant::now()), Wake::Yield);
}

#[tokio::test]
async fn the_open_loop_offers_every_task_and_measures_each_one() -> anyhow::Result<()> {
    let report = open_loop(OpenLoopConfig {
        agents: 4,
        capabilities: 2,
        concurrency: 8,
        rate: 20_000,
        tasks: 1_000,
        burst: Some(10),
    })
    .await?;
    assert_eq!(report.tasks, 1_000);
    assert_eq!(report.burst, 10);
    assert!(report.p50_us <= report.p90_us && report.p90_us <= report.p99_us);
    assert!(report.p99_us <= report.p999_us && report.p999_us <= report.max_us);
    Ok(())
}

#[tokio::test]
async fn the_closed_loop_runs_every_task_with_a_bounded_window() -> anyhow::Result<()> {
    let report = run(BenchConfig {
        agents: 4,
        capabilities: 2,
        tasks: 5_050,
        objective_size: 100,
        objectives_in_flight: Some(3),
        concurrency: 8,
        data_dir: None,
    })
    .await?;
    assert_eq!(report.tasks, 5_050);
    assert_eq!(report.objectives_in_flight, 3);
    // 51 objectives, never more than 3 at once, and from the start as many as that.
    assert_eq!(report.objectives_in_flight_max, 3);
    // The scheduler forgot all but the 6 objectives that ended last (twice the window).
    // The short last one (50 tasks) is among them: it was submitted with at most two
    // others still in flight, so at most three ended after it was submitted.
    assert_eq!(report.tasks_held_after, 5 * 100 + 50);
    Ok(())
}
