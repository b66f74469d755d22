//! The schedule firing loop on paused time: an in-memory swarm, a `TokioClock`, agents that
//! finish at once, never, or when the test lets them.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use swarm_agents::clock::{Clock, TokioClock};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent};
use swarm_coordinator::Swarm;
use swarm_coordinator::triggers::ScheduleLoop;
use swarm_protocol::schedule::{CatchUpPolicy, OverlapPolicy};
use swarm_protocol::{
    Objective, ObjectiveId, ObjectiveStatus, ScheduleSpec, TaskOutcome, TaskSpec,
};
use swarm_testkit::{cap, finish, key, reg, start};
use tokio::sync::Semaphore;

/// A time on a 5-second boundary.
const T0: u64 = 1_800_000_000_000;

fn every_5s(name: &str, capability: &str, overlap: OverlapPolicy) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "*/5 * * * * *".into(),
        time_zone: "UTC".into(),
        template: Objective::with_tasks("tick", vec![TaskSpec::new(key("t"), cap(capability))]),
        overlap,
        catch_up: CatchUpPolicy::Skip,
        paused: false,
    }
}

/// A swarm with agents `echo` (done at once), `hold` (never done) and `gate` (done when the
/// semaphore gives a permit), and the firing loop on a clock at `T0`.
async fn swarm() -> (Arc<Swarm>, ScheduleLoop, Arc<dyn Clock>, Arc<Semaphore>) {
    let (swarm, _events) = start().await;
    swarm
        .register_agent(reg("echo", &["echo"], 8), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let hold = FnAgent::new(|_task, _ctx| std::future::pending::<TaskOutcome>());
    swarm
        .register_agent(reg("hold", &["hold"], 8), AgentFactory::shared(hold))
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let gated = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            TaskOutcome::success(json!("through"))
        }
    });
    swarm
        .register_agent(reg("gate", &["gate"], 8), AgentFactory::shared(gated))
        .await
        .unwrap();
    let swarm = Arc::new(swarm);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(T0));
    let fire_loop = swarm.start_schedule_loop(clock.clone()).await;
    (swarm, fire_loop, clock, gate)
}

async fn stop(swarm: Arc<Swarm>, fire_loop: ScheduleLoop) {
    fire_loop.stop().await;
    finish(Arc::try_unwrap(swarm).ok().unwrap()).await;
}

/// Lets the loop and the actors run without moving the clock.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// The fires of `name`, oldest first, as (slot offset from T0, objective).
async fn fires(swarm: &Swarm, name: &str) -> Vec<(u64, ObjectiveId)> {
    let views = swarm.schedules().await.unwrap();
    let view = views.iter().find(|v| v.spec.name == name).unwrap();
    let mut fires: Vec<(u64, ObjectiveId)> = view
        .recent_fires
        .iter()
        .map(|f| (f.slot_ms - T0, f.objective))
        .collect();
    fires.reverse();
    fires
}

fn slots(fires: &[(u64, ObjectiveId)]) -> Vec<u64> {
    fires.iter().map(|f| f.0).collect()
}

async fn advance(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn every_five_seconds_fires_exactly_at_its_slots() {
    let (swarm, fire_loop, clock, _gate) = swarm().await;
    swarm
        .create_schedule(every_5s("tick", "echo", OverlapPolicy::Skip))
        .await
        .unwrap();
    advance(4_999).await;
    assert!(fires(&swarm, "tick").await.is_empty());
    advance(1).await;
    assert_eq!(clock.now_ms(), T0 + 5_000);
    assert_eq!(slots(&fires(&swarm, "tick").await), [5_000]);
    advance(4_999).await;
    assert_eq!(slots(&fires(&swarm, "tick").await), [5_000]);
    advance(1).await;
    advance(10_000).await;
    let fired = fires(&swarm, "tick").await;
    assert_eq!(slots(&fired), [5_000, 10_000, 15_000, 20_000]);
    // Each fire is its own objective, submitted under the slot's key; they all ran.
    for (slot, objective) in &fired {
        let view = swarm.objective(*objective).await.unwrap();
        assert_eq!(view.status, ObjectiveStatus::Succeeded, "{slot}");
    }
    let again = swarm
        .submit_with_key(
            every_5s("tick", "echo", OverlapPolicy::Skip).template,
            Some(format!("schedule:tick:{}", T0 + 5_000)),
        )
        .await
        .unwrap();
    assert_eq!(again, fired[0].1);
    stop(swarm, fire_loop).await;
}

#[tokio::test(start_paused = true)]
async fn skip_leaves_out_the_slots_while_the_previous_fire_runs() {
    let (swarm, fire_loop, _clock, _gate) = swarm().await;
    swarm
        .create_schedule(every_5s("s", "hold", OverlapPolicy::Skip))
        .await
        .unwrap();
    advance(20_000).await;
    let fired = fires(&swarm, "s").await;
    assert_eq!(slots(&fired), [5_000]);
    // Each skipped slot is shown, and says why.
    let views = swarm.schedules().await.unwrap();
    let skips: Vec<u64> = views[0]
        .recent_skips
        .iter()
        .map(|s| s.slot_ms - T0)
        .collect();
    assert_eq!(skips, [20_000, 15_000, 10_000]);
    let reason = &views[0].recent_skips[0].reason;
    assert!(reason.contains(&fired[0].1.to_string()), "{reason}");
    stop(swarm, fire_loop).await;
}

#[tokio::test(start_paused = true)]
async fn a_fire_that_cannot_submit_is_shown_and_the_next_slot_still_fires() {
    let (swarm, fire_loop, _clock, _gate) = swarm().await;
    swarm
        .create_schedule(every_5s("f", "nobody", OverlapPolicy::Skip))
        .await
        .unwrap();
    advance(5_000).await;
    assert!(fires(&swarm, "f").await.is_empty());
    let views = swarm.schedules().await.unwrap();
    let failure = views[0].last_failure.clone().unwrap();
    assert_eq!(failure.slot_ms, T0 + 5_000);
    assert!(failure.reason.contains("`nobody`"), "{}", failure.reason);
    // Once an agent can take it, the next slot fires and the failure is cleared.
    swarm
        .register_agent(
            reg("nobody", &["nobody"], 8),
            AgentFactory::shared(EchoAgent),
        )
        .await
        .unwrap();
    advance(5_000).await;
    assert_eq!(slots(&fires(&swarm, "f").await), [10_000]);
    assert_eq!(swarm.schedules().await.unwrap()[0].last_failure, None);
    stop(swarm, fire_loop).await;
}

#[tokio::test(start_paused = true)]
async fn cancel_previous_cancels_the_running_fire() {
    let (swarm, fire_loop, _clock, _gate) = swarm().await;
    swarm
        .create_schedule(every_5s("c", "hold", OverlapPolicy::CancelPrevious))
        .await
        .unwrap();
    advance(10_000).await;
    let fired = fires(&swarm, "c").await;
    assert_eq!(slots(&fired), [5_000, 10_000]);
    let first = swarm.objective(fired[0].1).await.unwrap();
    assert_eq!(first.status, ObjectiveStatus::Cancelled);
    let second = swarm.objective(fired[1].1).await.unwrap();
    assert_eq!(second.status, ObjectiveStatus::Running);
    stop(swarm, fire_loop).await;
}

#[tokio::test(start_paused = true)]
async fn queue_one_fires_the_latest_waiting_slot_when_the_previous_fire_ends() {
    let (swarm, fire_loop, _clock, gate) = swarm().await;
    swarm
        .create_schedule(every_5s("q", "gate", OverlapPolicy::QueueOne))
        .await
        .unwrap();
    // 5 s fires; 10 s and 15 s wait (15 s replaces 10 s).
    advance(15_000).await;
    assert_eq!(slots(&fires(&swarm, "q").await), [5_000]);
    // The first fire ends at 16 s: the queued 15 s slot fires within the poll.
    advance(1_000).await;
    gate.add_permits(1);
    advance(1_000).await;
    assert_eq!(slots(&fires(&swarm, "q").await), [5_000, 15_000]);
    let views = swarm.schedules().await.unwrap();
    let skips: Vec<u64> = views[0]
        .recent_skips
        .iter()
        .map(|s| s.slot_ms - T0)
        .collect();
    assert_eq!(skips, [10_000], "the slot the later one replaced");
    stop(swarm, fire_loop).await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_schedule_does_not_fire_and_resumes_at_its_next_slot() {
    let (swarm, fire_loop, _clock, _gate) = swarm().await;
    swarm
        .create_schedule(every_5s("p", "echo", OverlapPolicy::Skip))
        .await
        .unwrap();
    advance(5_000).await;
    swarm.set_schedule_paused("p", true).await.unwrap();
    advance(20_000).await;
    assert_eq!(slots(&fires(&swarm, "p").await), [5_000]);
    // Resumed at 27 s: nothing of the pause is caught up; the next slot is 30 s.
    advance(2_000).await;
    let view = swarm.set_schedule_paused("p", false).await.unwrap();
    assert_eq!(view.next_fires_ms[0], T0 + 30_000);
    advance(3_000).await;
    assert_eq!(slots(&fires(&swarm, "p").await), [5_000, 30_000]);
    stop(swarm, fire_loop).await;
}

/// A clock the test sets: the coordinator's downtime is simulated by moving it while no
/// coordinator runs.
#[derive(Debug)]
struct ManualClock(std::sync::atomic::AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A durable swarm on `dir` with an `echo` agent and the firing loop on `clock`, after its
/// first turn (the catch-up).
async fn durable(dir: &std::path::Path, clock: Arc<ManualClock>) -> (Arc<Swarm>, ScheduleLoop) {
    let swarm = Swarm::open(
        swarm_coordinator::SwarmConfig::default(),
        swarm_coordinator::StoreConfig::new(dir),
    )
    .await
    .unwrap();
    swarm
        .register_agent(reg("echo", &["echo"], 8), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let swarm = Arc::new(swarm);
    let mut fire_loop = swarm.start_schedule_loop(clock).await;
    fire_loop.turned(1).await;
    (swarm, fire_loop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_hour_down_skip_fires_nothing_and_run_latest_fires_the_latest_slot_once() {
    const MINUTE: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(T0.into()));
    let (swarm, fire_loop) = durable(dir.path(), clock.clone()).await;
    let every_5m = |name: &str, catch_up: CatchUpPolicy| ScheduleSpec {
        cron: "0 */5 * * * *".into(),
        catch_up,
        ..every_5s(name, "echo", OverlapPolicy::Skip)
    };
    swarm
        .create_schedule(every_5m("skip", CatchUpPolicy::Skip))
        .await
        .unwrap();
    let window = Duration::from_secs(3600);
    swarm
        .create_schedule(every_5m("latest", CatchUpPolicy::RunLatest { window }))
        .await
        .unwrap();
    let stale = every_5m(
        "stale",
        CatchUpPolicy::RunLatest {
            window: Duration::from_secs(60),
        },
    );
    swarm.create_schedule(stale).await.unwrap();
    // Each fires its first slot, then the coordinator stops.
    for name in ["skip", "latest", "stale"] {
        swarm.fire_schedule(name, T0 + 5 * MINUTE).await.unwrap();
    }
    fire_loop.stop().await;
    Arc::try_unwrap(swarm)
        .ok()
        .unwrap()
        .shutdown()
        .await
        .unwrap();

    // An hour and a half minute later (twelve slots missed), it starts again.
    clock.0.store(
        T0 + 65 * MINUTE + 90_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    let (swarm, mut fire_loop) = durable(dir.path(), clock.clone()).await;
    assert_eq!(
        slots(&fires(&swarm, "skip").await),
        [5 * MINUTE],
        "skip: no fire"
    );
    let latest = fires(&swarm, "latest").await;
    assert_eq!(
        slots(&latest),
        [5 * MINUTE, 65 * MINUTE],
        "run latest: the latest missed slot, once"
    );
    assert_eq!(
        slots(&fires(&swarm, "stale").await),
        [5 * MINUTE],
        "run latest: not a slot older than its window"
    );
    let caught_up = swarm
        .wait(latest[1].1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(caught_up.status, ObjectiveStatus::Succeeded);
    // The catch-up happens once: later turns at the same time fire nothing more.
    swarm.set_schedule_paused("skip", true).await.unwrap();
    fire_loop.turned(2).await;
    assert_eq!(slots(&fires(&swarm, "latest").await).len(), 2);
    // The next slot is an ordinary fire.
    clock
        .0
        .store(T0 + 70 * MINUTE, std::sync::atomic::Ordering::SeqCst);
    swarm.set_schedule_paused("skip", false).await.unwrap();
    fire_loop.turned(3).await;
    assert_eq!(
        slots(&fires(&swarm, "latest").await),
        [5 * MINUTE, 65 * MINUTE, 70 * MINUTE]
    );
    fire_loop.stop().await;
    Arc::try_unwrap(swarm)
        .ok()
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}
