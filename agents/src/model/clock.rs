//! The one clock the breaker and the limiter read: tokio's.
//!
//! Both decide by time (a cool-down, a quota window, a server-imposed pause), and their tests
//! must not wait for real seconds. Tokio's clock can be paused and moved by hand
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`), and in production it is the
//! monotonic clock. The crates the design first named read other clocks that paused tokio time
//! does not move: governor's default clock is quanta (or `std::time::Instant`) and its
//! `until_ready` sleeps on `futures_timer`; failsafe calls `std::time::Instant::now()` through
//! `failsafe::clock::now`, which can only be frozen for the span of a synchronous closure on one
//! thread. So time is read here, and only here, and every deadline is a
//! [`tokio::time::Instant`] that `tokio::time::sleep_until` understands.

use std::time::Duration;

use tokio::time::Instant;

/// Reads tokio's clock. Cheap to copy; every copy reads the same clock.
///
/// It is a value rather than a free function so the breaker and the limiter say, in their
/// constructors, which clock they run on.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock {
    _private: (),
}

impl TokioClock {
    /// The clock of the tokio runtime (paused and advanced by hand in tests).
    pub fn new() -> Self {
        Self { _private: () }
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
}
