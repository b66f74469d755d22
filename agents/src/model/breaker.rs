//! A model agent's circuit breaker: after repeated failures it stops calls to the model for a
//! cool-down, then lets exactly one probe call through to find out whether the model is back.
//!
//! The agent talks to the [`Breaker`] trait; [`ConsecutiveBreaker`] is the implementation.
//!
//! # Guarantees
//! - Closed → Open after [`BreakerConfig::consecutive_failures`] failures in a row, or, when
//!   [`BreakerConfig::failure_rate`] is set, when the failed fraction of the calls recorded in
//!   its sliding window (holding at least its minimum of calls) reaches its threshold.
//! - Open → HalfOpen once the open period has passed, on the next [`Breaker::admit`] or
//!   [`Breaker::state`] (nothing runs in the background; [`BreakerState::Open`] carries `until`
//!   so a watcher knows when to look again).
//! - HalfOpen admits exactly one probe at a time. A successful probe closes the breaker and
//!   resets its counters; a failed one opens it again, for twice the previous open period, capped
//!   at [`BreakerConfig::cool_down_max`] (a model that stays down is probed less and less often;
//!   the first open period after a close is [`BreakerConfig::cool_down`] again).
//! - [`CallOutcome::Neutral`] (a 4xx the request caused) neither counts nor resets; a neutral
//!   probe frees the probe slot and leaves the breaker half-open for the next probe.
//! - A [`Permit`] dropped without [`Breaker::record`] (the call's future was cancelled) counts
//!   as neutral, so a dropped future cannot hold the probe slot forever.
//! - An outcome only counts in the state it was admitted in: a call admitted while closed that
//!   ends after the breaker opened changes nothing, and only the probe decides a half-open
//!   breaker.
//! - Every transition is published, in order, on [`Breaker::subscribe`].
//!
//! # Why not failsafe
//! The design named failsafe 1.3. It reads time through `failsafe::clock::now()`, which is
//! `std::time::Instant::now()` unless a thread-local mock is installed by `clock::freeze`, and
//! that mock lives only for the span of one synchronous closure on one thread and can only move
//! forward from the real time it was created at. So it cannot follow tokio's paused clock, and
//! the cool-down tests would have to sleep for real. Its half-open state also admits every call
//! and its failure-rate policy is an exponential moving average rather than a window of calls.
//! What was left after gating the probe and replacing the clock and the policy was a wrapper
//! around a three-state enum, so the state machine is written here, on [`TokioClock`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::TokioClock;

/// How long a caller is told to wait while the half-open probe is in flight (or the cool-down,
/// if that is shorter). The probe's result is not pushed to waiters, so they poll.
pub const PROBE_IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// The most calls the failure-rate window remembers; older calls are forgotten first. It bounds
/// the memory of an agent that makes many calls within one window.
pub const FAILURE_RATE_WINDOW_CALLS_MAX: usize = 10_000;

/// How far ahead "open for ever" lies: 30 years, as tokio's own far future (an `Instant` counts
/// from the machine's start, so this never overflows where a configured cool-down might).
const FAR_FUTURE_SECS: u64 = 30 * 365 * 24 * 60 * 60;

/// Where a breaker is.
///
/// Not serializable on purpose: `until` is a point on the process's monotonic clock and means
/// nothing outside it. An API view should map it at the edge (for example to "reopens in 12 s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When the breaker turns half-open.
        until: Instant,
    },
    /// One probe call at a time is let through.
    HalfOpen,
}

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (0 is taken as 1). Default 5.
    pub consecutive_failures: u32,
    /// Also open when too large a fraction of recent calls failed. Default none.
    pub failure_rate: Option<FailureRate>,
    /// How long the breaker stays open the first time. Default 30 s.
    pub cool_down: Duration,
    /// The longest open period: each failed probe doubles the previous one up to this. A value
    /// at or below `cool_down` turns the doubling off. Default 5 min.
    pub cool_down_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: None,
            cool_down: Duration::from_secs(30),
            cool_down_max: Duration::from_secs(5 * 60),
        }
    }
}

/// Opens the breaker when the failed fraction of the calls in a sliding window reaches
/// `threshold`, once the window holds at least `min_calls` calls (so two calls, one failed, do
/// not count as a 50% failure rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// The failed fraction, from 0 to 1, that opens the breaker.
    pub threshold: f64,
    /// The fewest calls in the window for the rate to count (0 is taken as 1).
    pub min_calls: u32,
    /// How far back the window reaches.
    pub window: Duration,
}

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The model answered: resets the failure count; a successful probe closes the breaker.
    Success,
    /// The model or the path to it failed (timeout, 429, 5xx, connection error).
    Failure,
    /// The call failed because of the request itself (a 4xx other than 408 and 429): says
    /// nothing about the model's health.
    Neutral,
}

/// The breaker's answer to "may I call the model now?".
#[derive(Debug)]
pub enum Admission {
    /// Call, then hand the permit back with [`Breaker::record`].
    Go(Permit),
    /// Not now: the breaker is open, or half-open with its one probe in flight. Ask again
    /// after this long.
    Wait(Duration),
}

/// Leave to make one call. Hand it back with [`Breaker::record`]; dropping it instead (the call
/// was cancelled) counts as [`CallOutcome::Neutral`] and frees the half-open probe slot.
#[must_use = "record the call's outcome with `Breaker::record`; dropping the permit counts as neutral"]
pub struct Permit {
    ticket: Option<Ticket>,
}

/// A circuit breaker in front of one agent's model calls.
pub trait Breaker: Send + Sync + 'static {
    /// Asks to make a call.
    fn admit(&self) -> Admission;
    /// Records the outcome of the call `permit` admitted.
    fn record(&self, permit: Permit, outcome: CallOutcome);
    /// The current state (an open breaker whose open period has passed turns half-open here).
    fn state(&self) -> BreakerState;
    /// Every transition, in order. A watch channel keeps only the latest state: a subscriber
    /// that reads less often than the breaker moves sees the state it ended in.
    fn subscribe(&self) -> watch::Receiver<BreakerState>;
}

/// The breaker as described in the module docs: a small state machine behind a mutex, on
/// tokio's clock. Clones share one breaker.
#[derive(Debug, Clone)]
pub struct ConsecutiveBreaker {
    shared: Arc<Shared>,
}

impl ConsecutiveBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: TokioClock) -> Self {
        let (transitions, _) = watch::channel(BreakerState::Closed);
        Self {
            shared: Arc::new(Shared {
                config,
                clock,
                transitions,
                machine: Mutex::new(Machine {
                    state: BreakerState::Closed,
                    generation: 0,
                    consecutive_failures: 0,
                    window: VecDeque::new(),
                    window_failures: 0,
                    probe_in_flight: false,
                    open_for: config.cool_down,
                }),
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }
}

impl Breaker for ConsecutiveBreaker {
    fn admit(&self) -> Admission {
        let now = self.shared.clock.now();
        let mut machine = self.shared.lock();
        self.shared.refresh(&mut machine, now);
        match machine.state {
            BreakerState::Closed => Admission::Go(self.permit(&machine, false)),
            BreakerState::Open { until } => Admission::Wait(until - now),
            BreakerState::HalfOpen if machine.probe_in_flight => {
                Admission::Wait(PROBE_IN_FLIGHT_WAIT.min(self.shared.config.cool_down))
            }
            BreakerState::HalfOpen => {
                machine.probe_in_flight = true;
                Admission::Go(self.permit(&machine, true))
            }
        }
    }

    fn record(&self, mut permit: Permit, outcome: CallOutcome) {
        // A permit from another breaker is dropped as it is, which frees its probe slot there.
        let Some(ticket) = permit
            .ticket
            .take_if(|ticket| Arc::ptr_eq(&ticket.shared, &self.shared))
        else {
            return;
        };
        let now = self.shared.clock.now();
        let mut machine = self.shared.lock();
        if ticket.generation != machine.generation {
            // Admitted in a state that has since ended: the call says nothing about this one.
            return;
        }
        match (machine.state, outcome) {
            (_, CallOutcome::Neutral) => machine.probe_in_flight = false,
            (BreakerState::Closed, CallOutcome::Success) => {
                machine.consecutive_failures = 0;
                self.shared.remember(&mut machine, now, false);
            }
            (BreakerState::Closed, CallOutcome::Failure) => {
                machine.consecutive_failures += 1;
                self.shared.remember(&mut machine, now, true);
                let in_a_row =
                    machine.consecutive_failures >= self.shared.config.consecutive_failures.max(1);
                if in_a_row || self.shared.rate_reached(&machine) {
                    let open_for = self.shared.config.cool_down;
                    self.shared.open(&mut machine, now, open_for);
                }
            }
            (BreakerState::HalfOpen, CallOutcome::Success) => self.shared.close(&mut machine),
            (BreakerState::HalfOpen, CallOutcome::Failure) => {
                let cap = self
                    .shared
                    .config
                    .cool_down_max
                    .max(self.shared.config.cool_down);
                let open_for = machine.open_for.saturating_mul(2).min(cap);
                self.shared.open(&mut machine, now, open_for);
            }
            // No permit is issued while open, so none can be of the open state's generation.
            (BreakerState::Open { .. }, _) => {}
        }
    }

    fn state(&self) -> BreakerState {
        let now = self.shared.clock.now();
        let mut machine = self.shared.lock();
        self.shared.refresh(&mut machine, now);
        machine.state
    }

    fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.shared.transitions.subscribe()
    }
}

impl ConsecutiveBreaker {
    fn permit(&self, machine: &Machine, probe: bool) -> Permit {
        Permit {
            ticket: Some(Ticket {
                shared: Arc::clone(&self.shared),
                generation: machine.generation,
                probe,
            }),
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Permit");
        if let Some(ticket) = &self.ticket {
            debug
                .field("generation", &ticket.generation)
                .field("probe", &ticket.probe);
        }
        debug.finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take()
            && ticket.probe
        {
            let mut machine = ticket.shared.lock();
            if machine.generation == ticket.generation {
                machine.probe_in_flight = false;
            }
        }
    }
}

/// Which breaker admitted a call, in which state (its generation), and whether it is the probe.
struct Ticket {
    shared: Arc<Shared>,
    generation: u64,
    probe: bool,
}

#[derive(Debug)]
struct Shared {
    config: BreakerConfig,
    clock: TokioClock,
    /// Sent to while `machine` is locked, so subscribers see transitions in their order.
    transitions: watch::Sender<BreakerState>,
    machine: Mutex<Machine>,
}

#[derive(Debug)]
struct Machine {
    state: BreakerState,
    /// Goes up at every transition; a permit counts only in the generation that issued it.
    generation: u64,
    consecutive_failures: u32,
    /// The calls of the failure-rate window, oldest first: when, and whether it failed. Empty
    /// when no failure rate is configured.
    window: VecDeque<(Instant, bool)>,
    window_failures: usize,
    probe_in_flight: bool,
    /// The current (or last) open period.
    open_for: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // Nothing panics while the lock is held, and every update leaves a valid state, so a
        // poisoned lock still holds a usable machine.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Turns an open breaker whose open period has passed half-open.
    fn refresh(&self, machine: &mut Machine, now: Instant) {
        if let BreakerState::Open { until } = machine.state
            && now >= until
        {
            machine.probe_in_flight = false;
            self.transition(machine, BreakerState::HalfOpen);
        }
    }

    fn open(&self, machine: &mut Machine, now: Instant, open_for: Duration) {
        machine.open_for = open_for;
        self.reset_counts(machine);
        self.transition(
            machine,
            BreakerState::Open {
                // A cool-down too long for an `Instant` is as long as one can be: open for
                // (practically) ever, never a panic.
                until: now
                    .checked_add(open_for)
                    .unwrap_or_else(|| now + Duration::from_secs(FAR_FUTURE_SECS)),
            },
        );
    }

    fn close(&self, machine: &mut Machine) {
        machine.open_for = self.config.cool_down;
        self.reset_counts(machine);
        self.transition(machine, BreakerState::Closed);
    }

    fn reset_counts(&self, machine: &mut Machine) {
        machine.consecutive_failures = 0;
        machine.window.clear();
        machine.window_failures = 0;
        machine.probe_in_flight = false;
    }

    fn transition(&self, machine: &mut Machine, to: BreakerState) {
        machine.state = to;
        machine.generation += 1;
        self.transitions.send_replace(to);
    }

    /// Adds a call to the failure-rate window and forgets the calls that left it.
    fn remember(&self, machine: &mut Machine, now: Instant, failed: bool) {
        let Some(rate) = self.config.failure_rate else {
            return;
        };
        machine.window.push_back((now, failed));
        machine.window_failures += usize::from(failed);
        while let Some(&(at, failed)) = machine.window.front() {
            let expired = now.saturating_duration_since(at) > rate.window;
            if !expired && machine.window.len() <= FAILURE_RATE_WINDOW_CALLS_MAX {
                break;
            }
            machine.window.pop_front();
            machine.window_failures -= usize::from(failed);
        }
    }

    fn rate_reached(&self, machine: &Machine) -> bool {
        let Some(rate) = self.config.failure_rate else {
            return false;
        };
        let calls = machine.window.len();
        // Precision is no concern: both counts are at most FAILURE_RATE_WINDOW_CALLS_MAX.
        calls >= rate.min_calls.max(1) as usize
            && machine.window_failures as f64 / calls as f64 >= rate.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn breaker(config: BreakerConfig) -> ConsecutiveBreaker {
        ConsecutiveBreaker::new(config, TokioClock::new())
    }

    fn go(breaker: &ConsecutiveBreaker) -> Permit {
        match breaker.admit() {
            Admission::Go(permit) => permit,
            Admission::Wait(wait) => panic!("expected a permit, told to wait {wait:?}"),
        }
    }

    fn wait(breaker: &ConsecutiveBreaker) -> Duration {
        match breaker.admit() {
            Admission::Wait(wait) => wait,
            Admission::Go(permit) => panic!("expected to wait, got {permit:?}"),
        }
    }

    fn call(breaker: &ConsecutiveBreaker, outcome: CallOutcome) {
        let permit = go(breaker);
        breaker.record(permit, outcome);
    }

    fn fail(breaker: &ConsecutiveBreaker, times: usize) {
        for _ in 0..times {
            call(breaker, CallOutcome::Failure);
        }
    }

    /// A breaker opened by five failures, with the cool-down just over: half-open.
    async fn half_open(config: BreakerConfig) -> ConsecutiveBreaker {
        let breaker = breaker(config);
        fail(&breaker, 5);
        tokio::time::advance(config.cool_down).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_configured_number_of_consecutive_failures() {
        let breaker = breaker(BreakerConfig::default());
        fail(&breaker, 4);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let start = Instant::now();
        fail(&breaker, 1);
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: start + COOL_DOWN
            }
        );
    }

    /// A cool-down too long for an `Instant` (a client's `POST /v1/agents` may ask for one)
    /// keeps the breaker open for ever instead of panicking the caller.
    #[tokio::test(start_paused = true)]
    async fn a_cool_down_past_what_an_instant_holds_opens_for_ever() {
        let breaker = breaker(BreakerConfig {
            cool_down: Duration::MAX,
            ..BreakerConfig::default()
        });
        fail(&breaker, 5);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert!(wait(&breaker) >= Duration::from_secs(FAR_FUTURE_SECS - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let breaker = breaker(BreakerConfig::default());
        fail(&breaker, 4);
        call(&breaker, CallOutcome::Success);
        fail(&breaker, 4);
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&breaker, 1);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn open_breaker_says_how_long_the_cool_down_still_runs() {
        let breaker = breaker(BreakerConfig::default());
        fail(&breaker, 5);
        assert_eq!(wait(&breaker), COOL_DOWN);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(wait(&breaker), Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(20) - Duration::from_millis(1)).await;
        assert_eq!(wait(&breaker), Duration::from_millis(1));
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        // The cool-down ends exactly at `until`.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe_at_a_time() {
        let breaker = half_open(BreakerConfig::default()).await;
        let probe = go(&breaker);
        assert_eq!(wait(&breaker), PROBE_IN_FLIGHT_WAIT);
        assert_eq!(wait(&breaker), PROBE_IN_FLIGHT_WAIT);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            wait(&breaker),
            PROBE_IN_FLIGHT_WAIT,
            "the probe still holds the slot"
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.record(probe, CallOutcome::Success);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_probe_closes_and_resets_the_counts() {
        let breaker = half_open(BreakerConfig::default()).await;
        call(&breaker, CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let _a = go(&breaker);
        let _b = go(&breaker);
        fail(&breaker, 4);
        assert_eq!(breaker.state(), BreakerState::Closed, "counts start over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_a_doubled_capped_cool_down() {
        let config = BreakerConfig {
            cool_down_max: Duration::from_secs(100),
            ..BreakerConfig::default()
        };
        let breaker = half_open(config).await;
        for open_for in [60, 100, 100] {
            let now = Instant::now();
            call(&breaker, CallOutcome::Failure);
            let until = now + Duration::from_secs(open_for);
            assert_eq!(breaker.state(), BreakerState::Open { until });
            assert_eq!(wait(&breaker), Duration::from_secs(open_for));
            tokio::time::advance(Duration::from_secs(open_for)).await;
            assert_eq!(breaker.state(), BreakerState::HalfOpen);
        }
        // Closing resets the open period to the first cool-down.
        call(&breaker, CallOutcome::Success);
        let now = Instant::now();
        fail(&breaker, 5);
        assert_eq!(
            breaker.state(),
            BreakerState::Open {
                until: now + COOL_DOWN
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_doubling_when_the_cap_is_the_cool_down() {
        let config = BreakerConfig {
            cool_down_max: COOL_DOWN,
            ..BreakerConfig::default()
        };
        let breaker = half_open(config).await;
        call(&breaker, CallOutcome::Failure);
        assert_eq!(wait(&breaker), COOL_DOWN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_permit_frees_the_probe_slot() {
        let breaker = half_open(BreakerConfig::default()).await;
        let probe = go(&breaker);
        assert_eq!(wait(&breaker), PROBE_IN_FLIGHT_WAIT);
        drop(probe);
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "a cancelled call decides nothing"
        );
        let probe = go(&breaker);
        breaker.record(probe, CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_future_frees_the_probe_slot() {
        let breaker = half_open(BreakerConfig::default()).await;
        let stuck_call = {
            let breaker = breaker.clone();
            async move {
                let permit = go(&breaker);
                std::future::pending::<()>().await;
                breaker.record(permit, CallOutcome::Success);
            }
        };
        let timed_out = tokio::time::timeout(Duration::from_secs(5), stuck_call).await;
        assert!(timed_out.is_err());
        call(&breaker, CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_neither_count_nor_reset() {
        let breaker = breaker(BreakerConfig::default());
        for _ in 0..20 {
            call(&breaker, CallOutcome::Neutral);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&breaker, 4);
        call(&breaker, CallOutcome::Neutral);
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&breaker, 1);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_neutral_probe_frees_the_slot_and_stays_half_open() {
        let breaker = half_open(BreakerConfig::default()).await;
        call(&breaker, CallOutcome::Neutral);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let probe = go(&breaker);
        breaker.record(probe, CallOutcome::Failure);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_from_an_earlier_state_are_ignored() {
        let breaker = breaker(BreakerConfig::default());
        let slow_success = go(&breaker);
        let slow_failure = go(&breaker);
        fail(&breaker, 5);
        let open = breaker.state();
        breaker.record(slow_failure, CallOutcome::Failure);
        assert_eq!(breaker.state(), open, "does not extend the open period");
        tokio::time::advance(COOL_DOWN).await;
        let probe = go(&breaker);
        breaker.record(slow_success, CallOutcome::Success);
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "only the probe decides"
        );
        breaker.record(probe, CallOutcome::Success);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_from_another_breaker_is_not_counted_here() {
        let here = breaker(BreakerConfig::default());
        let there = half_open(BreakerConfig::default()).await;
        let probe = go(&there);
        here.record(probe, CallOutcome::Failure);
        assert_eq!(here.state(), BreakerState::Closed);
        // ...and the probe slot it held there is free again.
        call(&there, CallOutcome::Success);
        assert_eq!(there.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_opens_once_the_window_holds_enough_calls() {
        let config = BreakerConfig {
            consecutive_failures: 100,
            failure_rate: Some(FailureRate {
                threshold: 0.5,
                min_calls: 10,
                window: Duration::from_secs(60),
            }),
            ..BreakerConfig::default()
        };
        let breaker = breaker(config);
        // Four failures of eight calls: 50%, but below the minimum of calls.
        for _ in 0..4 {
            call(&breaker, CallOutcome::Failure);
            call(&breaker, CallOutcome::Success);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        call(&breaker, CallOutcome::Success);
        // Ten calls, five failed.
        call(&breaker, CallOutcome::Failure);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_forgets_calls_older_than_its_window() {
        let config = BreakerConfig {
            consecutive_failures: 100,
            failure_rate: Some(FailureRate {
                threshold: 0.5,
                min_calls: 4,
                window: Duration::from_secs(60),
            }),
            ..BreakerConfig::default()
        };
        let breaker = breaker(config);
        call(&breaker, CallOutcome::Failure);
        call(&breaker, CallOutcome::Failure);
        call(&breaker, CallOutcome::Success);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Were the old calls still counted, this would be 3 of 6 and open the breaker.
        call(&breaker, CallOutcome::Success);
        call(&breaker, CallOutcome::Success);
        call(&breaker, CallOutcome::Failure);
        assert_eq!(breaker.state(), BreakerState::Closed);
        call(&breaker, CallOutcome::Failure);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn every_transition_is_published_in_order() {
        let breaker = breaker(BreakerConfig::default());
        let mut transitions = breaker.subscribe();
        let mut next = || {
            assert!(
                transitions.has_changed().unwrap_or(false),
                "no transition published"
            );
            *transitions.borrow_and_update()
        };
        let start = Instant::now();
        fail(&breaker, 5);
        assert_eq!(
            next(),
            BreakerState::Open {
                until: start + COOL_DOWN
            }
        );
        tokio::time::advance(COOL_DOWN).await;
        let probe = go(&breaker);
        assert_eq!(next(), BreakerState::HalfOpen);
        breaker.record(probe, CallOutcome::Failure);
        assert_eq!(
            next(),
            BreakerState::Open {
                until: start + COOL_DOWN + 2 * COOL_DOWN
            }
        );
        tokio::time::advance(2 * COOL_DOWN).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(next(), BreakerState::HalfOpen);
        call(&breaker, CallOutcome::Success);
        assert_eq!(next(), BreakerState::Closed);
        call(&breaker, CallOutcome::Success);
        assert!(
            !transitions.has_changed().unwrap_or(true),
            "no transition, no message"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn usable_as_a_shared_trait_object() {
        let shared: Arc<dyn Breaker> = Arc::new(breaker(BreakerConfig::default()));
        let Admission::Go(permit) = shared.admit() else {
            panic!("a closed breaker admits");
        };
        shared.record(permit, CallOutcome::Success);
        assert_eq!(shared.state(), BreakerState::Closed);
    }
}
