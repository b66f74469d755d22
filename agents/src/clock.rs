//! The one clock of the workspace: tokio's, and wall time read beside it.
//!
//! Everything that decides by time reads it here: the model gateway's breaker and limiter (a
//! cool-down, a quota window, a server-imposed pause), the coordinator's cron schedules (which
//! slot is due), and the event log's stamps. Their tests must not wait for real seconds.
//! Tokio's clock can be paused and moved by hand (`#[tokio::test(start_paused = true)]`,
//! `tokio::time::advance`), and in production it is the monotonic clock. The crates the design
//! first named read other clocks that paused tokio time does not move: governor's default clock
//! is quanta (or `std::time::Instant`) and its `until_ready` sleeps on `futures_timer`;
//! failsafe calls `std::time::Instant::now()` through `failsafe::clock::now`, which can only be
//! frozen for the span of a synchronous closure on one thread. So time is read here, and every
//! deadline is a [`tokio::time::Instant`] that `tokio::time::sleep_until` understands.
//!
//! Two readings, one clock:
//! - [`TokioClock::now`]: a monotonic instant, for deadlines and durations;
//! - [`Clock::now_ms`]: wall time, milliseconds since the Unix epoch, for what is recorded or
//!   shown (event stamps, cron slots). [`TokioClock::new`] reads the system's wall clock;
//!   [`TokioClock::starting_at`] starts at a given wall time and then moves with tokio's
//!   instant, so a paused test runtime moves it too.
//!
//! [`Clock`] is the trait the code that only needs wall time takes (as `Arc<dyn Clock>`), so a
//! test can also set the time outright (simulating a coordinator that was down for an hour).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Wall time as the swarm reads it: milliseconds since the Unix epoch.
///
/// [`TokioClock`] is the implementation; tests may bring one they set by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock, in milliseconds since the Unix epoch (0 before 1970, which no
/// clock set by NTP reads). The stamps of the event log are read with it.
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a [`TokioClock`]'s wall time comes from.
#[derive(Debug, Clone, Copy, Default)]
enum Wall {
    /// The system's wall clock.
    #[default]
    System,
    /// `base_ms` at `start`, then moving with tokio's instant.
    Tokio { base_ms: u64, start: Instant },
}

/// Reads tokio's clock (and wall time beside it). Cheap to copy; every copy reads the same
/// clock.
///
/// It is a value rather than a free function so the breaker, the limiter and the schedules
/// say, in their constructors, which clock they run on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock {
    wall: Wall,
}

impl TokioClock {
    /// The clock of the tokio runtime (paused and advanced by hand in tests), with the
    /// system's wall time.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose wall time reads `base_ms` now and then moves with tokio's instant, so
    /// `tokio::time::advance` (and sleeps) on a paused runtime move it. Create it inside the
    /// runtime.
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            wall: Wall::Tokio {
                base_ms,
                start: Instant::now(),
            },
        }
    }

    /// Now, on tokio's clock.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Waits until `deadline` on this clock (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(deadline).await;
    }

    /// How long from now until `deadline`; zero if it has passed.
    pub fn until(&self, deadline: Instant) -> Duration {
        deadline.saturating_duration_since(self.now())
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        match self.wall {
            Wall::System => system_now_ms(),
            Wall::Tokio { base_ms, start } => {
                let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                base_ms.saturating_add(elapsed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let clock = TokioClock::new();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(90));
        assert_eq!(clock.until(start), Duration::ZERO);
        assert_eq!(
            clock.until(start + Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        clock.sleep_until(start + Duration::from_secs(100)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wall_time_from_a_base_moves_with_paused_time() {
        const T0: u64 = 1_767_225_600_000;
        let clock = TokioClock::starting_at(T0);
        assert_eq!(clock.now_ms(), T0);
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        assert_eq!(clock.now_ms(), T0 + 5_000);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(clock.now_ms(), T0 + 3_605_000);
        // The system's wall time is not paused.
        assert!(TokioClock::new().now_ms() > T0);
        assert!(system_now_ms() > T0);
    }
}
