//! A model agent's rate limiter, or a provider account's, shared by every agent on it:
//! requests per minute, tokens per minute, and the pauses the model's server asks for.
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
//! # Usage correction
//! A call is charged before it is sent, with an estimate (the prompt's size and the most tokens
//! it may generate). [`RateLimiter::settle`] corrects the charge with the usage the provider
//! reported: tokens not used go back to the window at the instant they were charged (so the
//! bound above still holds: a window only ever loses weight), and tokens used beyond the
//! estimate are charged at once. An overage is charged whatever the window holds (the provider
//! counted those tokens already), so only an estimate that was too low can push a window past
//! the quota, by that call's overage; the calls after it wait for it. A refund is lost if its
//! grant was merged away (see above): stricter, never looser.
//!
//! # Order, priority and cancellation
//! Callers wait in one line, higher priority first ([`RateLimiter::acquire_for`]; equal
//! priorities in arrival order), and only the head of the line may be granted, so a large call
//! is not starved by small ones behind it, and when the quota is short a high-priority call
//! gets it first. A caller that joins ahead of a sleeping head becomes the head at once. Every
//! change of the line, of the pause or of the window (a refund) wakes the waiters, which look
//! again; the line is at most the calls of the agents sharing the limiter, so this costs a few
//! wake-ups per grant. Nothing is charged until an acquire returns, and a cancelled acquire
//! leaves the line, so it costs no quota and holds nobody up.
//!
//! The line and the logs sit behind a plain mutex held only for the few steps of a check or a
//! charge, never across a wait, so [`RateLimiter::stats`] can read what the last minute used
//! while callers wait.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::sync::Notify;
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
    /// Tokens asked for by the granted acquires (the estimates).
    pub tokens_granted: u64,
    /// Tokens given back by [`RateLimiter::settle`]: estimated, not used.
    pub tokens_refunded: u64,
    /// Tokens charged by [`RateLimiter::settle`] beyond the estimates.
    pub tokens_over: u64,
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

/// A granted acquire: how long it waited, and what it charged, for [`RateLimiter::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// How long it waited.
    pub waited: Waited,
    /// The tokens it was charged (the estimate it asked for).
    pub tokens: u32,
    at: Instant,
}

/// A rate limiter: one agent's, or one provider account's, shared by every agent on it. Share
/// it (in an `Arc`) among all the calls it limits.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    clock: TokioClock,
    /// The line, the quotas' logs, pauses and counters; never held across a wait.
    shared: Mutex<Shared>,
    /// Told whenever the line, the pause or a window changes: waiters look again.
    changed: Notify,
}

impl RateLimiter {
    /// A limiter enforcing `limits` on `clock`.
    pub fn new(limits: RateLimits, clock: TokioClock) -> Self {
        Self {
            limits,
            clock,
            shared: Mutex::new(Shared {
                quotas: Quotas {
                    requests: limits.requests_per_minute.map(Window::per_minute),
                    tokens: limits.tokens_per_minute.map(Window::per_minute),
                },
                line: BTreeSet::new(),
                next_place: 0,
                paused_until: None,
                throttled_in_a_row: 0,
                requests_granted: 0,
                tokens_granted: 0,
                tokens_refunded: 0,
                tokens_over: 0,
                waits: 0,
                waited_total: Duration::ZERO,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits until one request of `tokens` may be sent: after any server-imposed pause, within
    /// the request quota, and with `tokens` within the token quota (more tokens than the whole
    /// quota count as the whole quota). Returns how long it waited.
    pub async fn acquire(&self, tokens: u32) -> Waited {
        self.acquire_for(tokens, 0).await.waited
    }

    /// [`RateLimiter::acquire`] at `priority`: waiting callers of higher priority are granted
    /// first. Returns the grant, for [`RateLimiter::settle`].
    pub async fn acquire_for(&self, tokens: u32, priority: i32) -> Grant {
        let started = self.clock.now();
        let place = {
            let mut shared = self.lock();
            let place = (Reverse(priority), shared.next_place);
            shared.next_place += 1;
            shared.line.insert(place);
            place
        };
        let mut in_line = InLine {
            limiter: self,
            place: Some(place),
        };
        let mut waited_at_all = false;
        let mut server_pause = Duration::ZERO;
        loop {
            // Registered before the look, so a change made after it wakes this caller.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.clock.now();
            // Decided under the guard, which ends with this block: it must not live across
            // the wait.
            let wake = {
                let mut shared = self.lock();
                // The quota first: `server_pause` is the wait a pause adds to the quota's.
                if shared.line.first() != Some(&place) {
                    Wake::Turn
                } else {
                    let paused = shared.paused_until.filter(|until| *until > now);
                    match (shared.quotas.ready_at(tokens, now), paused) {
                        (Some(at), _) if at > now => Wake::QuotaFree(at),
                        (_, Some(until)) => Wake::PauseOver(until),
                        _ => {
                            shared.quotas.charge(tokens, now);
                            shared.line.remove(&place);
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
                            drop(shared);
                            in_line.place = None;
                            // The next in line is the head now.
                            self.changed.notify_waiters();
                            return Grant {
                                waited,
                                tokens,
                                at: now,
                            };
                        }
                    }
                }
            };
            waited_at_all = true;
            match wake {
                Wake::Turn => changed.await,
                Wake::PauseOver(until) => {
                    tokio::select! {
                        () = self.clock.sleep_until(until) => {}
                        () = &mut changed => {}
                    }
                    server_pause += self.clock.now() - now;
                }
                Wake::QuotaFree(at) => {
                    tokio::select! {
                        () = self.clock.sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
            }
        }
    }

    /// Grants one request of `tokens` if it may go at once, without waiting: nobody waits in
    /// the line, no pause runs, and both quotas have room. Otherwise charges nothing and returns
    /// the instant from which the quotas and any pause would let it go (while others wait in
    /// the line, at least a timer tick from now: they are served first). A provider account's
    /// agents take their quota this way, so a call that cannot go now leaves its agent's slot
    /// instead of waiting in it (see [`crate::model::account`]).
    pub fn try_acquire(&self, tokens: u32) -> Result<Grant, Instant> {
        let now = self.clock.now();
        let mut shared = self.lock();
        let paused = shared.paused_until.filter(|until| *until > now);
        let free_at = shared.quotas.ready_at(tokens, now).filter(|at| *at > now);
        let waiting = (!shared.line.is_empty()).then_some(now + TIMER_RESOLUTION);
        if let Some(at) = [paused, free_at, waiting].into_iter().flatten().max() {
            return Err(at);
        }
        shared.quotas.charge(tokens, now);
        shared.requests_granted += 1;
        shared.tokens_granted += u64::from(tokens);
        Ok(Grant {
            waited: Waited::default(),
            tokens,
            at: now,
        })
    }

    /// True if an acquire of `tokens` made now would be granted at once: nobody waits, no
    /// pause runs, and the quotas have room. (Another caller may take the room first.)
    pub fn ready_now(&self, tokens: u32) -> bool {
        let now = self.clock.now();
        let mut shared = self.lock();
        shared.line.is_empty()
            && shared.paused_until.is_none_or(|until| until <= now)
            && shared
                .quotas
                .ready_at(tokens, now)
                .is_none_or(|at| at <= now)
    }

    /// Corrects a grant's charge with the tokens the call really used (prompt and completion,
    /// as the provider reported them): unused tokens go back to the window where they were
    /// charged, tokens beyond the estimate are charged now. See the module docs.
    pub fn settle(&self, grant: &Grant, used_tokens: u64) {
        let now = self.clock.now();
        let used = u32::try_from(used_tokens).unwrap_or(u32::MAX);
        {
            let mut shared = self.lock();
            if used < grant.tokens {
                let unused = grant.tokens - used;
                shared.tokens_refunded += u64::from(unused);
                if let Some(window) = &mut shared.quotas.tokens {
                    window.refund(grant.at, grant.tokens, used, now);
                }
            } else if used > grant.tokens {
                let over = used - grant.tokens;
                shared.tokens_over += u64::from(over);
                if let Some(window) = &mut shared.quotas.tokens {
                    window.charge(over, now);
                }
            } else {
                return;
            }
        }
        self.changed.notify_waiters();
    }

    /// Holds every acquire until `until` (the server said to wait). An earlier pause than the
    /// one already set changes nothing.
    pub fn pause_until(&self, until: Instant) {
        {
            let mut shared = self.lock();
            shared.paused_until = Some(shared.paused_until.map_or(until, |old| old.max(until)));
        }
        self.changed.notify_waiters();
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
            tokens_refunded: shared.tokens_refunded,
            tokens_over: shared.tokens_over,
            requests_in_window,
            tokens_in_window,
            waits: shared.waits,
            waited_total: shared.waited_total,
            paused_until: shared.paused_until.filter(|until| *until > now),
            waiting: shared.line.len(),
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

    /// Gives back what a grant at `at`, charged for `estimated`, did not use of it (`used`).
    /// The grant's weight in the log is `estimated` clamped to the quota; only grants at `at`
    /// itself give weight back (any of them: they leave the window together).
    fn refund(&mut self, at: Instant, estimated: u32, used: u32, now: Instant) {
        self.forget(now);
        let charged = estimated.min(self.per_minute);
        let mut unused = charged.saturating_sub(used);
        let from = self.grants.partition_point(|(when, _)| *when < at);
        for (when, weight) in self.grants.range_mut(from..) {
            if *when != at || unused == 0 {
                break;
            }
            let back = unused.min(*weight);
            *weight -= back;
            unused -= back;
            self.total -= u64::from(back);
        }
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

/// Why a caller waits.
enum Wake {
    /// Until it is the head of the line.
    Turn,
    /// Until the server's pause is over.
    PauseOver(Instant),
    /// Until enough grants have left a quota's window.
    QuotaFree(Instant),
}

/// A caller's place in the line: higher priority first, then arrival order.
type Place = (Reverse<i32>, u64);

#[derive(Debug)]
struct Shared {
    quotas: Quotas,
    /// Callers waiting, in the order they are granted.
    line: BTreeSet<Place>,
    next_place: u64,
    paused_until: Option<Instant>,
    /// 429s and 529s in a row, for the pause when they carry no timing headers.
    throttled_in_a_row: u32,
    requests_granted: u64,
    tokens_granted: u64,
    tokens_refunded: u64,
    tokens_over: u64,
    waits: u64,
    waited_total: Duration,
}

/// Keeps an acquire's place in the line until it is granted; a cancelled acquire leaves the
/// line and wakes the others (it may have been the head).
struct InLine<'a> {
    limiter: &'a RateLimiter,
    place: Option<Place>,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.limiter.lock().line.remove(&place);
            self.limiter.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
