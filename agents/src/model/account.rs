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
//! # A task waiting for quota holds no agent slot
//! A call takes the account's quota only if it may go at once
//! ([`RateLimiter::try_acquire`]). One that may not (the quota is spent, or a server asked to
//! wait) is declined, and the account *cools down* until the instant the limiter named: every
//! agent on it reports itself down meanwhile ("out of quota"), as an open breaker does, and
//! up again when the cool-down ends. The declined task goes back to the scheduler's ready
//! queue without using its retries, so it runs on an agent of another account (or an agent's
//! `fallbacks` take it) while this one waits, and no task sits in an agent's slot waiting for
//! quota: an agent of concurrency N on a saturated account holds none, not N. When the quota
//! is short, the scheduler's queue (priority, then age) decides which task gets it next. The
//! cost of the rule: when a cool-down ends, the scheduler may hand the account's agents more
//! tasks than the quota has room for, and the extra ones are declined again (at most one
//! declined attempt per agent slot per cool-down; the task's `declined` count, bounded by the
//! scheduler, not its retries or lost attempts, counts them). Waiting for the account's
//! concurrency limit still happens in the slot: it lasts one call, not a quota's minute.
//!
//! An account is built once and cloned into each of its agents; clones share everything.

use std::num::NonZeroU32;
use std::sync::Arc;

use swarm_protocol::{BreakerStatus, LimiterStatus};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

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
    /// Until when the account takes no call (its quota is spent or paused), if it is cooling
    /// down; its agents follow it.
    cooldown: watch::Sender<Option<Instant>>,
    clock: TokioClock,
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
                cooldown: watch::Sender::new(None),
                clock,
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

    /// Takes the account's agents out of selection until `until`: a call found its quota spent
    /// or paused, and the limiter said when it would fit. A cool-down already running to a
    /// later instant is kept; at its end the cool-down lifts by itself.
    pub fn cool_down(&self, until: Instant) {
        if until <= self.inner.clock.now() {
            return;
        }
        let extended = self.inner.cooldown.send_if_modified(|current| {
            if current.is_some_and(|set| set >= until) {
                return false;
            }
            *current = Some(until);
            true
        });
        if !extended {
            return;
        }
        // The timer holds the account weakly: a dropped account needs no lifting.
        let account = Arc::downgrade(&self.inner);
        let clock = self.inner.clock;
        tokio::spawn(async move {
            clock.sleep_until(until).await;
            if let Some(inner) = account.upgrade() {
                // Only the cool-down this timer was set for: a later one has its own timer.
                inner.cooldown.send_if_modified(|current| {
                    let ends = *current == Some(until);
                    if ends {
                        *current = None;
                    }
                    ends
                });
            }
        });
    }

    /// Until when it takes no call, while it cools down.
    pub fn cooling_until(&self) -> Option<Instant> {
        let now = self.inner.clock.now();
        self.inner.cooldown.borrow().filter(|until| *until > now)
    }

    /// Its cool-downs as they start and end.
    pub fn subscribe_cooldown(&self) -> watch::Receiver<Option<Instant>> {
        self.inner.cooldown.subscribe()
    }

    /// True if `other` is this account (a clone of it).
    pub fn same_as(&self, other: &Account) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
