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

#[tokio::test(start_paused = true)]
async fn a_higher_priority_waiter_is_granted_first_whenever_it_arrived() {
    let limiter = limiter(Some(1), None);
    let start = Instant::now();
    limiter.acquire(0).await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = |name: &'static str, priority: i32| {
        let limiter = Arc::clone(&limiter);
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            limiter.acquire_for(0, priority).await;
            order.lock().unwrap().push((name, Instant::now() - start));
        })
    };
    let low = waiter("low", 0);
    let also_low = waiter("also low", 0);
    // Both low ones are in line (the first at the head, asleep until the quota frees) before
    // the high one comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(limiter.stats().waiting, 2);
    let high = waiter("high", 5);
    for handle in [low, also_low, high] {
        handle.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        [
            ("high", MINUTE_AFTER),
            ("low", MINUTE_AFTER * 2),
            ("also low", MINUTE_AFTER * 3),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_head_of_the_line_holds_nobody_up() {
    let limiter = limiter(Some(1), None);
    let start = Instant::now();
    limiter.acquire(0).await;
    let head = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire_for(0, 9).await }
    });
    let next = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(0).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    head.abort();
    assert!(head.await.unwrap_err().is_cancelled());
    next.await.unwrap();
    assert_eq!(Instant::now() - start, MINUTE_AFTER);
    assert_eq!(limiter.stats().requests_granted, 2);
}

#[tokio::test(start_paused = true)]
async fn unused_tokens_go_back_to_the_window_at_once() {
    let limiter = limiter(None, Some(1000));
    let start = Instant::now();
    let grant = limiter.acquire_for(800, 0).await;
    assert_eq!(grant.tokens, 800);
    // Without the correction the next 800 would wait a minute.
    limiter.settle(&grant, 100);
    assert_eq!(limiter.stats().tokens_in_window, Some(100));
    limiter.acquire(800).await;
    assert_eq!(Instant::now(), start);
    let stats = limiter.stats();
    assert_eq!(stats.tokens_in_window, Some(900));
    assert_eq!(stats.tokens_refunded, 700);
}

#[tokio::test(start_paused = true)]
async fn a_refund_wakes_a_waiter_it_makes_room_for() {
    let limiter = limiter(None, Some(1000));
    let start = Instant::now();
    let grant = limiter.acquire_for(800, 0).await;
    let waiter = tokio::spawn({
        let limiter = Arc::clone(&limiter);
        async move { limiter.acquire(800).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(limiter.stats().waiting, 1);
    limiter.settle(&grant, 200);
    let waited = waiter.await.unwrap();
    assert_eq!(waited.total, Duration::from_secs(3));
    assert_eq!(Instant::now() - start, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn tokens_used_beyond_the_estimate_are_charged() {
    let limiter = limiter(None, Some(1000));
    let start = Instant::now();
    let grant = limiter.acquire_for(100, 0).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    limiter.settle(&grant, 900);
    let stats = limiter.stats();
    assert_eq!(stats.tokens_in_window, Some(900));
    assert_eq!(stats.tokens_over, 800);
    // 900 are in the window: 200 more fit only once the first 100 left it (without the
    // overage they would have gone at once).
    limiter.acquire(200).await;
    assert_eq!(Instant::now() - start, MINUTE_AFTER);
    // Then the window holds the overage and those 200: 300 more wait for the overage to leave.
    limiter.acquire(300).await;
    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(10) + MINUTE_AFTER
    );
}

#[tokio::test(start_paused = true)]
async fn many_callers_with_settled_usage_keep_every_window_within_the_quota() {
    // Estimates of 500, actual use of 100 to 500: the refunds let more calls through, and the
    // log still never holds more than the quota in any window.
    let limiter = limiter(None, Some(2000));
    let grants = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = (0..60u32).map(|i| {
        let limiter = Arc::clone(&limiter);
        let grants = Arc::clone(&grants);
        async move {
            let grant = limiter.acquire_for(500, 0).await;
            let used = 100 + (i * 37) % 401;
            limiter.settle(&grant, u64::from(used));
            grants.lock().unwrap().push((Instant::now(), used));
        }
    });
    join_all(calls).await;
    let mut grants = grants.lock().unwrap().clone();
    grants.sort_by_key(|(at, _)| *at);
    let (_, closed) = busiest_windows(&grants, u32::MAX);
    assert!(closed <= 2000, "a window held {closed} tokens");
    assert_eq!(limiter.stats().requests_granted, 60);
}

#[tokio::test(start_paused = true)]
async fn try_acquire_grants_only_what_may_go_now_and_says_when_the_rest_may() {
    let limiter = limiter(Some(2), Some(100));
    let first = limiter.try_acquire(40).unwrap();
    let started = first.at;
    limiter.try_acquire(40).unwrap();
    // The request quota is spent: the next may go once the first grant left the window.
    let free_at = limiter.try_acquire(10).unwrap_err();
    assert_eq!(free_at, started + MINUTE + TIMER_RESOLUTION);
    assert_eq!(
        limiter.stats().requests_in_window,
        Some(2),
        "a refusal charges nothing"
    );
    tokio::time::advance(MINUTE + TIMER_RESOLUTION).await;
    limiter.try_acquire(10).unwrap();
    // A server pause holds it as long as the pause runs, even with quota to spare.
    let until = Instant::now() + Duration::from_secs(5);
    limiter.pause_until(until);
    assert_eq!(limiter.try_acquire(1).unwrap_err(), until);
    tokio::time::advance(Duration::from_secs(5)).await;
    // Tokens count too: 90 of 100 is more than the window has left (10 in it).
    let tokens_free = limiter.try_acquire(95).unwrap_err();
    assert!(tokens_free > Instant::now(), "{tokens_free:?}");
    limiter.try_acquire(90).unwrap();
}
