//! A model agent's rate limiter: requests per minute, tokens per minute, and the pauses the
//! model's server asks for.
//!
//! # The quota and its bound
//! Each quota of `q` per minute is a sliding-window log: it remembers the grants of the last
//! minute and grants a call of weight `w` (1 for the request quota, the call's estimated tokens
//! for the token quota) at `t` only if the weights granted in `[t - 60 s, t]`, plus `w`, are at
//! most `q`.
//!
//! Bound: take any window `[s, s + 60 s]`, closed at both ends, and the last grant `g` in it.
//! Every grant in the window lies in `[g - 60 s, g]`, and `g` was granted only because those
//! grants, its own included, summed to at most `q`. So **no 60-second window ever holds more
//! than the quota**: the burst is 0, and "quota + burst" is the quota itself. A weight above
//! the quota is charged as the whole quota: it waits for a minute without grants instead of
//! failing. The call at the head of the queue waits exactly until enough earlier grants have
//! left the window, so no quota is wasted whatever the weights. Calls may go out
//! together (up to the whole quota at once); the agent's concurrency limit spreads them.
//!
//! The servers' own limits are token buckets of capacity `q` refilled at `q` a minute. Such a
//! bucket always holds at least `q` minus what was spent in the last minute, so a client that
//! keeps every minute within `q` is not refused for quota (as far as its token estimates hold).
//!
//! Memory is one entry per grant in the window; past [`LOG_ENTRIES_MAX`] the two oldest merge
//! into one at the later instant, which keeps their weight in the window longer: stricter,
//! never looser.
//!
//! # Why not governor
//! The design named governor 0.10. A GCRA (token bucket) bounds a window only by quota + burst,
//! and governor's `check_n`/`until_n_ready` refuse a weight above the burst
//! (`InsufficientCapacity`), so a token quota needs a burst as large as the largest call, the
//! whole quota, and then one minute may hold twice the quota. A small burst with larger weights
//! let through (a hand-written GCRA) keeps quota + burst, but makes each oversized call wait
//! `(w - burst)` extra intervals, which nearly halves the throughput of large calls. Governor's
//! `until_ready` also sleeps on `futures_timer`, which paused tokio time does not move. The log
//! keeps the exact quota without wasting it, in a few lines, on [`TokioClock`].
//!
//! # Order and cancellation
//! Callers are served in arrival order (a fair tokio mutex is the queue), so a large call is
//! not starved by small ones behind it. Nothing is charged until an `acquire` returns, so a
//! cancelled `acquire` costs no quota.
//!
//! The logs themselves sit behind a plain mutex held only for the few steps of a check or a
//! charge, never across a wait, so [`RateLimiter::stats`] can read what the last minute used
//! while callers wait at the head of the queue.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

use crate::clock::TokioClock;

/// The longest pause one response can impose. A server asking for more (a daily quota, or a
/// broken header) is asked again after this long; its next 429 pauses again.
pub const PAUSE_MAX: Duration = Duration::from_secs(15 * 60);

/// The pause after a 429 or 529 that says nothing about when to come back. It doubles with each
/// such answer in a row, up to [`THROTTLED_PAUSE_MAX`].
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause for a 429 or 529 without timing headers.
pub const THROTTLED_PAUSE_MAX: Duration = Duration::from_secs(32);

/// The most grants one quota's log keeps; see the module docs.
pub const LOG_ENTRIES_MAX: usize = 4096;

/// An agent's quotas. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Tokens (prompt and completion, as estimated before the call) per minute.
    pub tokens_per_minute: Option<NonZeroU32>,
}

/// How long a [`RateLimiter::acquire`] waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waited {
    /// From the call to the grant: queueing behind other callers, server pauses and quota.
    pub total: Duration,
    /// The part of `total` spent waiting for a pause the server asked for.
    pub server_pause: Duration,
}

/// What a limiter has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterStats {
    /// The quotas it enforces.
    pub limits: RateLimits,
    /// Acquires granted.
    pub requests_granted: u64,
    /// Tokens asked for by the granted acquires.
    pub tokens_granted: u64,
    /// Requests granted within the last 60 seconds (`None` without a request quota, whose
    /// window is not kept).
    pub requests_in_window: Option<u64>,
    /// Tokens granted within the last 60 seconds, as the token quota counts them (a weight
    /// above the quota counts as the quota); `None` without a token quota.
    pub tokens_in_window: Option<u64>,
    /// Granted acquires that waited at all: queued behind another caller, or slept for a
    /// quota or a server pause.
    pub waits: u64,
    /// The sum of the granted acquires' waits.
    pub waited_total: Duration,
    /// The server-imposed pause, if one is still running.
    pub paused_until: Option<Instant>,
    /// Acquires waiting now.
    pub waiting: usize,
}

/// One agent's rate limiter. Share it (in an `Arc`) among all the agent's calls.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    clock: TokioClock,
    /// Held by the caller at the head of the queue while it waits, so the mutex's fairness is
    /// the queue's order.
    queue: tokio::sync::Mutex<()>,
    /// The quotas' logs, pauses and counters; never held across a wait.
    shared: Mutex<Shared>,
    waiting: AtomicUsize,
}

impl RateLimiter {
    /// A limiter enforcing `limits` on `clock`.
    pub fn new(limits: RateLimits, clock: TokioClock) -> Self {
        Self {
            limits,
            clock,
            queue: tokio::sync::Mutex::new(()),
            shared: Mutex::new(Shared {
                quotas: Quotas {
                    requests: limits.requests_per_minute.map(Window::per_minute),
                    tokens: limits.tokens_per_minute.map(Window::per_minute),
                },
                paused_until: None,
                throttled_in_a_row: 0,
                requests_granted: 0,
                tokens_granted: 0,
                waits: 0,
                waited_total: Duration::ZERO,
            }),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits until one request of `tokens` may be sent: after any server-imposed pause, within
    /// the request quota, and with `tokens` within the token quota (more tokens than the whole
    /// quota count as the whole quota). Returns how long it waited.
    pub async fn acquire(&self, tokens: u32) -> Waited {
        let started = self.clock.now();
        let _waiting = Queued::enter(&self.waiting);
        // A free queue has nobody waiting for it (tokio hands a released lock straight to the
        // first waiter), so trying first does not jump the queue; it only tells whether this
        // call had to queue. Elapsed time alone would count every call as a wait on a real
        // clock.
        let (_head, mut waited_at_all) = match self.queue.try_lock() {
            Ok(head) => (head, false),
            Err(_) => (self.queue.lock().await, true),
        };
        let mut server_pause = Duration::ZERO;
        loop {
            let now = self.clock.now();
            // Decided under the guard, which ends with this block: it must not live across
            // the sleep.
            let wake = {
                let mut shared = self.lock();
                if let Some(until) = shared.paused_until.filter(|until| *until > now) {
                    Wake::PauseOver(until)
                } else {
                    match shared.quotas.ready_at(tokens, now) {
                        Some(at) if at > now => Wake::QuotaFree(at),
                        _ => {
                            shared.quotas.charge(tokens, now);
                            let waited = Waited {
                                total: now - started,
                                server_pause,
                            };
                            shared.requests_granted += 1;
                            shared.tokens_granted += u64::from(tokens);
                            if waited_at_all {
                                shared.waits += 1;
                            }
                            shared.waited_total += waited.total;
                            return waited;
                        }
                    }
                }
            };
            waited_at_all = true;
            match wake {
                Wake::PauseOver(until) => {
                    self.clock.sleep_until(until).await;
                    server_pause += self.clock.now() - now;
                }
                Wake::QuotaFree(at) => self.clock.sleep_until(at).await,
            }
        }
    }

    /// Holds every acquire until `until` (the server said to wait). An earlier pause than the
    /// one already set changes nothing.
    pub fn pause_until(&self, until: Instant) {
        let mut shared = self.lock();
        shared.paused_until = Some(shared.paused_until.map_or(until, |old| old.max(until)));
    }

    /// Reads a model server's answer for rate-limit signals and pauses the limiter for the
    /// longest of them: `Retry-After` (seconds or an HTTP date) and `retry-after-ms`; OpenAI's
    /// `x-ratelimit-remaining-{requests,tokens}` at 0 until `x-ratelimit-reset-…` (a duration
    /// such as `6m0s`); Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,
    /// output-tokens}-remaining` at 0 until `…-reset` (an RFC 3339 time). A 429 or 529 without
    /// any of these pauses for [`THROTTLED_PAUSE`], doubling while they come in a row. Values
    /// it cannot read are ignored. Returns the pause applied (at most [`PAUSE_MAX`]), if any.
    pub fn observe(
        &self,
        status: u16,
        headers: &HeaderMap,
        now_wall: SystemTime,
    ) -> Option<Duration> {
        let throttled = matches!(status, 429 | 529);
        let pause = {
            let mut shared = self.lock();
            shared.throttled_in_a_row = if throttled {
                shared.throttled_in_a_row.saturating_add(1)
            } else {
                0
            };
            match server_pause(headers, now_wall) {
                Some(pause) => pause,
                None if throttled => {
                    let doublings = shared.throttled_in_a_row.saturating_sub(1).min(16);
                    THROTTLED_PAUSE
                        .saturating_mul(1 << doublings)
                        .min(THROTTLED_PAUSE_MAX)
                }
                None => return None,
            }
        }
        .min(PAUSE_MAX);
        if pause.is_zero() {
            return None;
        }
        self.pause_until(self.clock.now() + pause);
        Some(pause)
    }

    /// Counters, the last minute's use of each quota, and the current pause.
    pub fn stats(&self) -> LimiterStats {
        let now = self.clock.now();
        let mut shared = self.lock();
        let in_window = |window: &mut Option<Window>| {
            window.as_mut().map(|w| {
                w.forget(now);
                w.total
            })
        };
        let requests_in_window = in_window(&mut shared.quotas.requests);
        let tokens_in_window = in_window(&mut shared.quotas.tokens);
        LimiterStats {
            limits: self.limits,
            requests_granted: shared.requests_granted,
            tokens_granted: shared.tokens_granted,
            requests_in_window,
            tokens_in_window,
            waits: shared.waits,
            waited_total: shared.waited_total,
            paused_until: shared.paused_until.filter(|until| *until > now),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// The quotas it enforces.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while the lock is held, and each update is a whole value.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads `Retry-After` as delta-seconds or an HTTP date, relative to `now_wall`. A date in the
/// past means no wait (`Some(0)`); anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now_wall: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for a u64 is too long a wait to be meant; ignore it.
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now_wall).unwrap_or(Duration::ZERO))
}

/// Reads a Go-style duration as OpenAI's reset headers send it: `1s`, `6m0s`, `20ms`,
/// `1h2m3.5s`, `0`.
fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        let number: f64 = number.parse().ok()?;
        total = total.checked_add(Duration::try_from_secs_f64(number * seconds_per_unit).ok()?)?;
        rest = tail;
    }
    Some(total)
}

/// OpenAI's pairs of (remaining, reset as a duration) headers.
const OPENAI_HEADERS: [(&str, &str); 2] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
];

/// Anthropic's pairs of (remaining, reset as an RFC 3339 time) headers.
const ANTHROPIC_HEADERS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// The longest wait the headers ask for, if any asks.
fn server_pause(headers: &HeaderMap, now_wall: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let exhausted = |name: &str| header(name)?.parse::<u64>().ok().map(|left| left == 0);
    let retry_after = header("retry-after").and_then(|value| parse_retry_after(value, now_wall));
    let retry_after_ms = header("retry-after-ms")
        .and_then(|value| value.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    let openai = OPENAI_HEADERS.iter().filter_map(|(remaining, reset)| {
        if !exhausted(remaining)? {
            return None;
        }
        parse_go_duration(header(reset)?)
    });
    let anthropic = ANTHROPIC_HEADERS.iter().filter_map(|(remaining, reset)| {
        if !exhausted(remaining)? {
            return None;
        }
        let at = humantime::parse_rfc3339(header(reset)?).ok()?;
        Some(at.duration_since(now_wall).unwrap_or(Duration::ZERO))
    });
    [retry_after, retry_after_ms]
        .into_iter()
        .flatten()
        .chain(openai)
        .chain(anthropic)
        .max()
}

#[derive(Debug)]
struct Quotas {
    requests: Option<Window>,
    tokens: Option<Window>,
}

impl Quotas {
    /// When a request of `tokens` fits both quotas (`None`: now).
    fn ready_at(&mut self, tokens: u32, now: Instant) -> Option<Instant> {
        let requests = self.requests.as_mut().and_then(|q| q.ready_at(1, now));
        let tokens = self.tokens.as_mut().and_then(|q| q.ready_at(tokens, now));
        requests.max(tokens)
    }

    fn charge(&mut self, tokens: u32, now: Instant) {
        if let Some(quota) = &mut self.requests {
            quota.charge(1, now);
        }
        if let Some(quota) = &mut self.tokens {
            quota.charge(tokens, now);
        }
    }
}

/// The length of a quota's window.
const WINDOW: Duration = Duration::from_secs(60);

/// Tokio's timer wakes on whole milliseconds, so a wait shorter than this ends after it anyway.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// One quota as a log of the last minute's grants; see the module docs for its bound.
#[derive(Debug)]
struct Window {
    per_minute: u32,
    /// Grants in the window, oldest first: when, and their (clamped, non-zero) weight.
    grants: VecDeque<(Instant, u32)>,
    /// The sum of `grants`' weights.
    total: u64,
}

impl Window {
    fn per_minute(quota: NonZeroU32) -> Self {
        Self {
            per_minute: quota.get(),
            grants: VecDeque::new(),
            total: 0,
        }
    }

    /// When `weight` fits in `[t - 60 s, t]` (`None`: now).
    fn ready_at(&mut self, weight: u32, now: Instant) -> Option<Instant> {
        self.forget(now);
        let weight = weight.min(self.per_minute);
        let mut over = (self.total + u64::from(weight)).saturating_sub(self.per_minute.into());
        for &(at, granted) in &self.grants {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(granted.into());
            if over == 0 {
                // The first instant (on tokio's millisecond timer) `at` is out of the window.
                return Some(at + WINDOW + TIMER_RESOLUTION);
            }
        }
        // Here `over` is 0: the weight is at most the quota, so it fits an empty window.
        None
    }

    fn charge(&mut self, weight: u32, now: Instant) {
        let weight = weight.min(self.per_minute);
        if weight == 0 {
            return;
        }
        self.grants.push_back((now, weight));
        self.total += u64::from(weight);
        if self.grants.len() > LOG_ENTRIES_MAX
            && let Some((_, oldest)) = self.grants.pop_front()
            && let Some((_, next)) = self.grants.front_mut()
        {
            // `next` is no older, so `oldest`'s weight stays in the window as long or longer.
            *next = next.saturating_add(oldest);
        }
    }

    /// Drops the grants that left the window `[now - 60 s, now]`.
    fn forget(&mut self, now: Instant) {
        while let Some(&(at, weight)) = self.grants.front() {
            if at + WINDOW >= now {
                break;
            }
            self.grants.pop_front();
            self.total -= u64::from(weight);
        }
    }
}

/// Why the head of the queue sleeps.
enum Wake {
    /// Until the server's pause is over.
    PauseOver(Instant),
    /// Until enough grants have left a quota's window.
    QuotaFree(Instant),
}

#[derive(Debug)]
struct Shared {
    quotas: Quotas,
    paused_until: Option<Instant>,
    /// 429s and 529s in a row, for the pause when they carry no timing headers.
    throttled_in_a_row: u32,
    requests_granted: u64,
    tokens_granted: u64,
    waits: u64,
    waited_total: Duration,
}

/// Counts an acquire as waiting until it returns or is dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::join_all;
    use http::HeaderValue;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn limiter(requests: Option<u32>, tokens: Option<u32>) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(
            RateLimits {
                requests_per_minute: requests.and_then(NonZeroU32::new),
                tokens_per_minute: tokens.and_then(NonZeroU32::new),
            },
            TokioClock::new(),
        ))
    }

    /// Runs all acquires at once and returns each grant's instant with its weight.
    async fn grants(limiter: &Arc<RateLimiter>, weights: &[u32]) -> Vec<(Instant, u32)> {
        let acquires = weights.iter().map(|&weight| {
            let limiter = Arc::clone(limiter);
            async move {
                limiter.acquire(weight).await;
                (Instant::now(), weight)
            }
        });
        let mut grants = join_all(acquires).await;
        grants.sort_by_key(|(at, _)| *at);
        grants
    }

    /// The largest weight sum in any 60 s window, half-open `[t, t + 60 s)` and closed
    /// `[t, t + 60 s]` (a window with grants in it can always start at a grant).
    fn busiest_windows(grants: &[(Instant, u32)], cap: u32) -> (u64, u64) {
        let sum = |within: &dyn Fn(Duration) -> bool, from: Instant| -> u64 {
            grants
                .iter()
                .filter(|(at, _)| *at >= from && within(*at - from))
                .map(|(_, weight)| u64::from((*weight).min(cap)))
                .sum()
        };
        grants.iter().fold((0, 0), |(open, closed), (from, _)| {
            (
                open.max(sum(&|span| span < MINUTE, *from)),
                closed.max(sum(&|span| span <= MINUTE, *from)),
            )
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            match HeaderValue::from_str(value) {
                Ok(value) => headers.insert(*name, value),
                Err(err) => panic!("header {name}: {err}"),
            };
        }
        headers
    }

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    /// A minute and a timer tick: when a grant has left the window.
    const MINUTE_AFTER: Duration = Duration::from_millis(60_001);

    /// Counts each grant as one request.
    fn as_requests(grants: &[(Instant, u32)]) -> Vec<(Instant, u32)> {
        grants.iter().map(|(at, _)| (*at, 1)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn two_hundred_requests_at_60_rpm_never_exceed_the_quota_in_a_window() {
        let limiter = limiter(Some(60), None);
        let start = Instant::now();
        let grants = grants(&limiter, &[0; 200]).await;
        let (open, closed) = busiest_windows(&as_requests(&grants), u32::MAX);
        assert_eq!(closed, 60, "no [t, t+60s] holds more than the quota");
        assert_eq!(open, 60);
        // The quota is used, not wasted: 60 a minute.
        let offsets: Vec<Duration> = grants.iter().map(|(at, _)| *at - start).collect();
        for (i, offset) in offsets.iter().enumerate() {
            let minutes = u32::try_from(i / 60).unwrap_or(u32::MAX);
            assert_eq!(*offset, MINUTE_AFTER * minutes, "grant {i}");
        }
        let stats = limiter.stats();
        assert_eq!(stats.requests_granted, 200);
        assert_eq!(stats.waiting, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_count_waits_and_what_the_last_minute_used() {
        let limited = limiter(Some(2), Some(1_000));
        limited.acquire(10).await;
        limited.acquire(20).await;
        let stats = limited.stats();
        assert_eq!(
            (stats.requests_in_window, stats.tokens_in_window),
            (Some(2), Some(30))
        );
        assert_eq!((stats.waits, stats.waited_total), (0, Duration::ZERO));
        // The request quota is used up: the third call waits until the first two left.
        limited.acquire(5).await;
        let stats = limited.stats();
        assert_eq!(
            (stats.requests_in_window, stats.tokens_in_window),
            (Some(1), Some(5))
        );
        assert_eq!((stats.waits, stats.waited_total), (1, MINUTE_AFTER));
        assert_eq!(stats.requests_granted, 3);
        tokio::time::advance(MINUTE_AFTER).await;
        let stats = limited.stats();
        assert_eq!(
            (stats.requests_in_window, stats.tokens_in_window),
            (Some(0), Some(0))
        );
        // Without quotas no window is kept, so there is no use to show.
        let unlimited = limiter(None, None);
        unlimited.acquire(10).await;
        let stats = unlimited.stats();
        assert_eq!(
            (stats.requests_in_window, stats.tokens_in_window),
            (None, None)
        );
        assert_eq!(stats.waits, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_spread_over_time_keep_the_bound_too() {
        let limiter = limiter(Some(7), None);
        let mut grants = Vec::new();
        for round in 0..60u64 {
            // Arrivals at irregular gaps, sometimes idle long enough for the window to empty.
            tokio::time::advance(Duration::from_millis(round * 7_919 % 23_000)).await;
            limiter.acquire(1).await;
            grants.push((Instant::now(), 1));
        }
        let (_, closed) = busiest_windows(&grants, u32::MAX);
        assert_eq!(closed, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn mixed_token_weights_never_exceed_the_token_quota_in_a_window() {
        let limiter = limiter(None, Some(1_000));
        let weights: Vec<u32> = [1, 50, 300, 999, 1_000, 5_000, 0, 120, 7, 640]
            .into_iter()
            .cycle()
            .take(60)
            .collect();
        let start = Instant::now();
        let grants = grants(&limiter, &weights).await;
        let (_, closed) = busiest_windows(&grants, 1_000);
        assert!(closed <= 1_000, "a [t, t+60s] holds {closed} tokens");
        // No quota is wasted: a call that waited could not have gone a timer tick earlier,
        // because the window then held too many tokens for it.
        for (i, &(at, weight)) in grants.iter().enumerate().skip(1) {
            if at == grants[i - 1].0 {
                continue;
            }
            let earlier = at - TIMER_RESOLUTION;
            let held: u32 = grants[..i]
                .iter()
                .filter(|(granted, _)| *granted + MINUTE >= earlier)
                .map(|(_, weight)| (*weight).min(1_000))
                .sum();
            assert!(held + weight.min(1_000) > 1_000, "grant {i} waited in vain");
        }
        assert!(grants[0].0 == start);
        assert_eq!(
            limiter.stats().tokens_granted,
            weights.iter().map(|w| u64::from(*w)).sum::<u64>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_and_tokens_are_both_enforced() {
        let limiter = limiter(Some(2), Some(100));
        let start = Instant::now();
        let grants = grants(&limiter, &[10, 10, 10, 90, 1]).await;
        let offsets: Vec<Duration> = grants.iter().map(|(at, _)| *at - start).collect();
        // Two requests a minute; the 90-token call fits beside the third call's 10 tokens; the
        // last waits for the request quota again.
        assert_eq!(
            offsets,
            [
                Duration::ZERO,
                Duration::ZERO,
                MINUTE_AFTER,
                MINUTE_AFTER,
                MINUTE_AFTER * 2
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn more_tokens_than_the_quota_wait_a_whole_window_instead_of_failing() {
        let limiter = limiter(None, Some(100));
        let start = Instant::now();
        assert_eq!(limiter.acquire(500).await.total, Duration::ZERO);
        let waited = limiter.acquire(500).await;
        assert_eq!(waited.total, MINUTE_AFTER);
        assert_eq!(Instant::now() - start, MINUTE_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_acquire_costs_no_quota() {
        let limiter = limiter(Some(1), None);
        limiter.acquire(0).await;
        let start = Instant::now();
        let cancelled = tokio::time::timeout(Duration::from_secs(10), limiter.acquire(0)).await;
        assert!(cancelled.is_err());
        assert_eq!(limiter.stats().waiting, 0);
        limiter.acquire(0).await;
        assert_eq!(Instant::now() - start, MINUTE_AFTER);
    }

    #[test]
    fn a_full_log_merges_its_oldest_grants_forward() {
        let Some(quota) = NonZeroU32::new(u32::MAX) else {
            panic!("non-zero");
        };
        let mut window = Window::per_minute(quota);
        let start = Instant::now();
        let at = |i: usize| start + Duration::from_millis(u64::try_from(i).unwrap_or(u64::MAX));
        for i in 0..=LOG_ENTRIES_MAX {
            window.charge(1, at(i));
        }
        assert_eq!(window.grants.len(), LOG_ENTRIES_MAX);
        assert_eq!(window.grants.front(), Some(&(at(1), 2)));
        assert_eq!(
            window.total,
            u64::try_from(LOG_ENTRIES_MAX + 1).unwrap_or(u64::MAX)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_until_delays_the_next_acquire_until_then_and_not_less() {
        let limiter = limiter(None, None);
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(5));
        limiter.pause_until(start + Duration::from_secs(2));
        assert_eq!(
            limiter.stats().paused_until,
            Some(start + Duration::from_secs(5))
        );
        let waited = limiter.acquire(0).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(waited.total, Duration::from_secs(5));
        assert_eq!(waited.server_pause, Duration::from_secs(5));
        assert_eq!(limiter.stats().paused_until, None);
        assert_eq!(limiter.acquire(0).await.total, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_set_while_waiting_holds_the_waiter() {
        let limiter = limiter(Some(1), None);
        limiter.acquire(0).await;
        let start = Instant::now();
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire(0).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.pause_until(start + Duration::from_secs(100));
        let waited = waiter.await.ok();
        assert_eq!(
            waited,
            Some(Waited {
                total: Duration::from_secs(100),
                server_pause: Duration::from_secs(100) - MINUTE_AFTER,
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_seconds_pauses_the_next_acquire() {
        let limiter = limiter(None, None);
        let start = Instant::now();
        let pause = limiter.observe(429, &headers(&[("retry-after", "2")]), wall());
        assert_eq!(pause, Some(Duration::from_secs(2)));
        limiter.acquire(0).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_as_an_http_date() {
        let limiter = limiter(None, None);
        let date = httpdate::fmt_http_date(wall() + Duration::from_secs(30));
        let pause = limiter.observe(503, &headers(&[("retry-after", &date)]), wall());
        assert_eq!(pause, Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after(&date, wall()),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(wall() - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, wall()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", wall()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(" 120 ", wall()),
            Some(Duration::from_secs(120))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn openai_headers_pause_until_the_reset_when_nothing_remains() {
        let limiter = limiter(None, None);
        let plenty = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "149000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(limiter.observe(200, &plenty, wall()), None);
        let out_of_tokens = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let start = Instant::now();
        assert_eq!(
            limiter.observe(200, &out_of_tokens, wall()),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            limiter.stats().paused_until,
            Some(start + Duration::from_secs(360))
        );
    }

    #[test]
    fn go_durations() {
        let cases = [
            ("1s", Some(Duration::from_secs(1))),
            ("6m0s", Some(Duration::from_secs(360))),
            ("20ms", Some(Duration::from_millis(20))),
            ("1h2m3.5s", Some(Duration::from_millis(3_723_500))),
            ("0.5s", Some(Duration::from_millis(500))),
            ("250us", Some(Duration::from_micros(250))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("5", None),
            ("s", None),
            ("1.2.3s", None),
            ("-1s", None),
            ("3 days", None),
            ("99999999999999999999h", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), expected, "{text:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn anthropic_headers_pause_until_the_reset_when_nothing_remains() {
        let limiter = limiter(None, None);
        let reset = humantime::format_rfc3339(wall() + Duration::from_secs(42)).to_string();
        let later = humantime::format_rfc3339(wall() + Duration::from_secs(50)).to_string();
        let plenty = headers(&[
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", &later),
        ]);
        assert_eq!(limiter.observe(200, &plenty, wall()), None);
        let exhausted = headers(&[
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", &later),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", &reset),
        ]);
        assert_eq!(
            limiter.observe(200, &exhausted, wall()),
            Some(Duration::from_secs(42))
        );
        // A "+00:00" offset is read too; a reset that is now leaves nothing to wait for.
        let now = humantime::format_rfc3339(wall())
            .to_string()
            .replace('Z', "+00:00");
        let input_tokens = headers(&[
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-reset", &now),
        ]);
        assert_eq!(limiter.observe(200, &input_tokens, wall()), None);
        let soon = humantime::format_rfc3339(wall() + Duration::from_secs(3))
            .to_string()
            .replace('Z', "+00:00");
        let output_tokens = headers(&[
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            ("anthropic-ratelimit-output-tokens-reset", &soon),
        ]);
        assert_eq!(
            limiter.observe(200, &output_tokens, wall()),
            Some(Duration::from_secs(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_signal_wins() {
        let limiter = limiter(None, None);
        let reset = humantime::format_rfc3339(wall() + Duration::from_secs(8)).to_string();
        let signals = headers(&[
            ("retry-after", "3"),
            ("retry-after-ms", "4500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "5s"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", &reset),
        ]);
        assert_eq!(
            limiter.observe(429, &signals, wall()),
            Some(Duration::from_secs(8))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_header_values_are_ignored() {
        let limiter = limiter(None, None);
        let mut garbage = headers(&[
            ("retry-after", "soon"),
            ("retry-after-ms", "NaN"),
            ("x-ratelimit-remaining-requests", "zero"),
            ("x-ratelimit-reset-requests", "banana"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "-5s"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "yesterday"),
            ("anthropic-ratelimit-tokens-remaining", "-1"),
            ("anthropic-ratelimit-tokens-reset", "2025-13-45T99:99:99Z"),
        ]);
        match HeaderValue::from_bytes(b"\xff\xfe") {
            Ok(value) => garbage.insert("anthropic-ratelimit-input-tokens-reset", value),
            Err(err) => panic!("{err}"),
        };
        garbage.insert(
            "anthropic-ratelimit-input-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        assert_eq!(limiter.observe(200, &garbage, wall()), None);
        assert_eq!(limiter.stats().paused_until, None);
        for value in ["", "-5", "1.5", "99999999999999999999999", "Tue, 99 Foo"] {
            assert_eq!(parse_retry_after(value, wall()), None, "{value:?}");
        }
        // A 429 whose headers say nothing readable still pauses, for the default.
        assert_eq!(
            limiter.observe(429, &garbage, wall()),
            Some(THROTTLED_PAUSE)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bare_429s_pause_longer_while_they_come_in_a_row() {
        let limiter = limiter(None, None);
        let none = HeaderMap::new();
        let pauses: Vec<_> = (0..8)
            .map(|_| limiter.observe(429, &none, wall()))
            .collect();
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(
            pauses,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(32),
                secs(32)
            ]
        );
        assert_eq!(limiter.observe(200, &none, wall()), None);
        assert_eq!(limiter.observe(529, &none, wall()), secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_capped() {
        let limiter = limiter(None, None);
        let huge = headers(&[("retry-after", "999999999")]);
        assert_eq!(limiter.observe(429, &huge, wall()), Some(PAUSE_MAX));
        let zero = headers(&[("retry-after", "0")]);
        assert_eq!(limiter.observe(429, &zero, wall()), None);
    }
}
