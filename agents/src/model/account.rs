//! A provider account: one API key's quotas, circuit breaker and concurrency, shared by every
//! model agent that names it.
//!
//! A provider enforces its limits per key, not per agent: ten agents on one key that each
//! limit themselves to the key's quota send ten times the quota. Agents built on one
//! [`Account`] share its [`RateLimiter`] (so every 60-second window holds at most the
//! account's quota, whichever agents make the calls, and a 429 or `Retry-After` answered to any
//! of them pauses them all), its breaker (so a key the provider refuses, or a provider that is
//! down, takes every agent on it out together), and, when it has one, its concurrency limit
//! (calls in flight at once over all its agents).
//!
//! Calls wait for the account's quota in one line ordered by their task's priority (see
//! [`crate::model::limiter`]). The scheduler knows nothing of accounts, so a call waiting for
//! the quota holds its agent's slot meanwhile: an agent on a saturated account looks busy, not
//! empty, and its waiting tasks are not handed to agents on other accounts (an agent's
//! `fallbacks` can take them). An account is built once and cloned into each of its agents;
//! clones share everything.

use std::num::NonZeroU32;
use std::sync::Arc;

use swarm_protocol::{BreakerStatus, LimiterStatus};
use tokio::sync::Semaphore;

use super::breaker::{Breaker, BreakerConfig, ConsecutiveBreaker};
use super::limiter::{RateLimiter, RateLimits};
use super::{breaker_status, limiter_status};
use crate::clock::TokioClock;

/// One provider account. Clones share one account.
#[derive(Clone)]
pub struct Account {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    limiter: Arc<RateLimiter>,
    breaker: ConsecutiveBreaker,
    concurrency: Option<NonZeroU32>,
    /// One permit per call in flight allowed, when the account has a concurrency limit.
    calls: Option<Arc<Semaphore>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.inner.name)
            .field("limits", &self.inner.limiter.limits())
            .field("concurrency", &self.inner.concurrency)
            .finish_non_exhaustive()
    }
}

/// What an account is doing now: what `GET /v1/accounts` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    /// Its breaker.
    pub breaker: BreakerStatus,
    /// Its quotas and their use.
    pub limiter: LimiterStatus,
    /// Calls in flight now, over all its agents (counted only with a concurrency limit).
    pub in_flight: Option<u32>,
}

impl Account {
    /// An account named `name` with these quotas, breaker and concurrency limit, on `clock`.
    pub fn new(
        name: impl Into<String>,
        limits: RateLimits,
        breaker: BreakerConfig,
        concurrency: Option<NonZeroU32>,
        clock: TokioClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                limiter: Arc::new(RateLimiter::new(limits, clock)),
                breaker: ConsecutiveBreaker::new(breaker, clock),
                concurrency,
                calls: concurrency.map(|n| Arc::new(Semaphore::new(n.get() as usize))),
            }),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The limiter every agent on it shares.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    /// The breaker every agent on it shares.
    pub fn breaker(&self) -> Arc<dyn Breaker> {
        Arc::new(self.inner.breaker.clone())
    }

    /// The most calls in flight at once over all its agents, if limited.
    pub fn concurrency(&self) -> Option<NonZeroU32> {
        self.inner.concurrency
    }

    /// The semaphore of its concurrency limit, if it has one.
    #[cfg_attr(
        not(feature = "model"),
        expect(dead_code, reason = "used by `LlmAgent`")
    )]
    pub(crate) fn calls(&self) -> Option<&Arc<Semaphore>> {
        self.inner.calls.as_ref()
    }

    /// Its breaker, quotas and calls in flight now.
    pub fn state(&self) -> AccountState {
        let in_flight =
            self.inner
                .concurrency
                .zip(self.inner.calls.as_ref())
                .map(|(limit, calls)| {
                    let free = u32::try_from(calls.available_permits()).unwrap_or(u32::MAX);
                    limit.get().saturating_sub(free)
                });
        AccountState {
            breaker: breaker_status(&self.inner.breaker),
            limiter: limiter_status(&self.inner.limiter),
            in_flight,
        }
    }

    /// True if `other` is this account (a clone of it).
    pub fn same_as(&self, other: &Account) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
