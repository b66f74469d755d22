//! Model agents: an [`LlmAgent`] calls a model API (OpenAI-compatible chat completions or
//! Anthropic Messages, streaming or not) behind a circuit breaker and a rate limiter: its own,
//! or those of the provider [`account::Account`] it shares with other agents on the same key.
//!
//! One attempt goes: if the agent cannot take the call at once (its breaker is open, or its
//! quota is spent or paused) and one of its `fallbacks` can, the call goes to that fallback
//! instead; render the task into a prompt; wait for the breaker to admit a call
//! (while it is open the agent is reported down, or degraded while a fallback can answer, so
//! the scheduler sends work to other agents with the capability; an attempt that reaches it
//! anyway is declined, and goes back to the queue without using up its retries; while a
//! half-open probe is in flight, it waits); wait for room on its account (its concurrency) and
//! for the rate limiter (requests and estimated tokens per minute, any pause a server asked
//! for; waiters in their task's priority order), or, on an account, take the quota only if it
//! is there now and otherwise decline the attempt and cool the account down, so the task
//! waits in the scheduler's queue and not in the agent's slot (see [`account`]); send the
//! request with the attempt's
//! idempotency key; stream the answer into the task's partial output under the task's idle and
//! hard timeouts; correct the limiter's estimate with the usage the provider reported; record
//! the result with the breaker and the limiter; and classify it:
//! - 2xx: success (usage recorded); asked for JSON and got something else: invalid output,
//!   which goes to review;
//! - 408, 429, 5xx (529 included), connection errors, a stream cut short: transient, retried
//!   with backoff (on another agent of the capability if one has room, else no sooner than the
//!   server's `Retry-After`); they count against the breaker;
//! - timeouts: `Timeout` (the partial output streamed so far is kept); they count too;
//! - other 4xx: permanent, with the provider's message; 401, 403 and 404 mean the agent itself
//!   is misconfigured (key, model), so it also reports itself down and the task fails over to
//!   another agent with the capability, if there is one.

pub mod account;
pub mod breaker;
pub mod limiter;
#[cfg(feature = "model")]
mod llm;
pub mod provider;
#[cfg(feature = "model")]
pub mod sse;

use std::num::NonZeroU32;
use std::time::Duration;

use swarm_protocol::{BreakerStatus, LimiterStatus, QuotaUse};

#[cfg(feature = "model")]
pub use llm::{ApiKey, LlmAgent, ModelSpec, render};

use breaker::{Breaker, BreakerState};
use limiter::RateLimiter;

/// A breaker's state as the API shows it (an open breaker's `until` as milliseconds from now).
pub fn breaker_status(breaker: &dyn Breaker) -> BreakerStatus {
    match breaker.state() {
        BreakerState::Closed => BreakerStatus::Closed,
        BreakerState::HalfOpen => BreakerStatus::HalfOpen,
        BreakerState::Open { until } => BreakerStatus::Open {
            probe_in_ms: millis(until.saturating_duration_since(tokio::time::Instant::now())),
        },
    }
}

/// A limiter's quotas and their use as the API shows them.
pub fn limiter_status(limiter: &RateLimiter) -> LimiterStatus {
    let stats = limiter.stats();
    let quota = |per_minute: Option<NonZeroU32>, used: Option<u64>| {
        Some(QuotaUse {
            per_minute: per_minute?.get(),
            used: used.unwrap_or(0),
        })
    };
    LimiterStatus {
        requests: quota(stats.limits.requests_per_minute, stats.requests_in_window),
        tokens: quota(stats.limits.tokens_per_minute, stats.tokens_in_window),
        granted: stats.requests_granted,
        waits: stats.waits,
        waited_ms: millis(stats.waited_total),
        waiting: stats.waiting as u64,
        paused_for_ms: stats
            .paused_until
            .map(|until| millis(until.saturating_duration_since(tokio::time::Instant::now()))),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
