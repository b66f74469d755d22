//! A model agent's health: what its breaker and its account's cool-down say about whether it
//! can take work, published on the feed the supervisor forwards to the registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use swarm_protocol::Health;

use super::LlmAgent;
use crate::agent::HealthReport;
use crate::model::breaker::BreakerState;

impl LlmAgent {
    /// True if it could take a call now, breaker and account-wise: its breaker is not open
    /// and its account (if any) is not cooling down.
    pub(super) fn available(&self) -> bool {
        !self.is_open()
            && self
                .inner
                .account
                .as_ref()
                .is_none_or(|account| account.cooling_until().is_none())
    }

    /// Publishes the agent's health: down while its breaker is open or its account cools down
    /// (degraded instead while one of its fallbacks is available to answer for it), degraded
    /// while the breaker is half-open, up otherwise. When the breaker opens, a timer publishes
    /// again when the breaker's cool-down ends, so the registry lets a probe through; an
    /// account's cool-down ends by its own timer, which the follower (see
    /// [`Self::follow_account`]) publishes.
    pub(super) fn publish_health(&self, why: &str) {
        let fallback_answers = || self.inner.fallbacks.iter().any(LlmAgent::available);
        let cooling = self
            .inner
            .account
            .as_ref()
            .and_then(|account| Some((account, account.cooling_until()?)));
        let (health, reason) = match (self.inner.breaker.state(), cooling) {
            (BreakerState::Open { until }, _) => {
                let agent = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(until).await;
                    agent.publish_health("cool-down over");
                });
                if fallback_answers() {
                    // It still takes work: its fallbacks answer for it.
                    (
                        Health::Degraded,
                        format!("circuit open, fallbacks answer: {why}"),
                    )
                } else {
                    (Health::Down, format!("circuit open: {why}"))
                }
            }
            (_, Some((account, until))) => {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                let cause = if account.limiter().stats().paused_until.is_some() {
                    "paused by the server"
                } else {
                    "out of quota"
                };
                let reason = format!(
                    "account `{}` {cause} for another {:.1}s",
                    account.name(),
                    left.as_secs_f64()
                );
                if fallback_answers() {
                    (Health::Degraded, format!("{reason}, fallbacks answer"))
                } else {
                    (Health::Down, reason)
                }
            }
            (BreakerState::HalfOpen, None) => {
                (Health::Degraded, "circuit half-open: probing".to_owned())
            }
            (BreakerState::Closed, None) => (Health::Up, "circuit closed".to_owned()),
        };
        self.report(health, reason);
    }

    /// On an account, another agent's call may open or close the breaker this agent shares,
    /// or start the account's cool-down: a task follows both and publishes each change as this
    /// agent's health, so every agent on the account goes down (and up) together, not one
    /// declined attempt at a time. The task holds the agent weakly and ends with it.
    pub(super) fn follow_account(&self) {
        let Some(account) = &self.inner.account else {
            return;
        };
        if self.inner.following.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut transitions = self.inner.breaker.subscribe();
        let mut cooldowns = account.subscribe_cooldown();
        let agent = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let why = tokio::select! {
                    changed = transitions.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        "the account's circuit opened"
                    }
                    changed = cooldowns.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        "the account's quota"
                    }
                };
                let Some(inner) = agent.upgrade() else {
                    break;
                };
                LlmAgent { inner }.publish_health(why);
            }
        });
    }

    pub(super) fn report(&self, health: Health, reason: String) {
        self.inner.health.send_if_modified(|current| {
            if current.health == health {
                return false;
            }
            *current = HealthReport { health, reason };
            true
        });
    }
}
