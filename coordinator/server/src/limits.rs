//! How much the API takes: a quota per client, a limit on failed authentication per remote
//! address, and admission control over the swarm's backlog. Each answers 429 with
//! `Retry-After` (whole seconds, rounded up) before the request does any work.
//!
//! - **Per-client quota** ([`Limits::client`]): a GCRA limiter keyed by client (governor's keyed
//!   `RateLimiter`). With a token configured, a client is the credential it presents: the
//!   bearer token, or a dashboard session (each session its own client), kept only as the first
//!   16 bytes of its SHA-256, so neither a token nor a cookie is stored. Without a token, and on
//!   the public routes, a client is its remote address (an IPv6 address by its /64, which one
//!   host usually holds whole). The probes (`/healthz`, `/readyz`) are not counted.
//! - **Failed authentication** ([`Limits::auth_failures`]): per remote address, a wrong token at
//!   `POST /ui/login` or a bearer token that is not the server's counts one failure. Past the
//!   limit, the address is answered 429 *before* any token it presents is compared, so a guess
//!   made while limited learns nothing, right or wrong. Successful logins do not count.
//! - **Admission** ([`Limits::backlog_max`]): the routes that create work (`POST /v1/objectives`,
//!   `POST /v1/events`, webhook deliveries, see [`crate::Route::creates_work`]) are refused while
//!   the swarm's backlog (objectives running, tasks queued and events not yet written to the
//!   log, from `Swarm::stats`) is at or above the bound. With the writer's queue in the
//!   figure, a disk that falls behind refuses new work instead of letting the queue to it
//!   grow. `Swarm::stats` is a round trip to the scheduler, so the figure is read at
//!   most once per [`Limits::backlog_refresh`], by the first request that finds it older; the
//!   requests meanwhile use the last figure plus the requests admitted since it was read, so a
//!   burst is counted before the figure shows it. Each admitted request counts one, while an
//!   objective adds one per task queued and event unwritten too, so the bound is a soft one:
//!   it is passed by what the requests of one refresh add beyond one each (the soak, with
//!   two-task objectives at 10x the sustainable rate, peaked about 14% above it).
//!
//! `/metrics` counts the requests each limit refused (`swarm_http_refused_total{limit}`).
//!
//! The limiters read tokio's clock ([`TokioClock`]), so a test that pauses time drives them.
//! Their keyed state is bounded: every [`PRUNE_EVERY`] checks, the keys whose state is the same
//! as a fresh one are dropped (governor's `retain_recent`), so however many addresses a scan
//! uses, only the clients seen within about one replenish interval stay in memory.

use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota, RateLimiter};
use sha2::Digest as _;
use swarm_coordinator::Swarm;
use swarm_coordinator::config::ServerSection;

use crate::problem::Problem;
use crate::{AppState, ROUTES};

/// How many checks of a limiter pass between two prunings of its keyed state.
pub const PRUNE_EVERY: u64 = 1024;

/// A GCRA quota: `requests` per `period` sustained, and up to `burst` at once after a quiet
/// spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per `period`, sustained.
    pub requests: NonZeroU32,
    /// The period `requests` are counted over.
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `requests` per `period`, `burst` at once.
    pub const fn new(requests: NonZeroU32, period: Duration, burst: NonZeroU32) -> Self {
        Self {
            requests,
            period,
            burst,
        }
    }

    fn quota(&self) -> Quota {
        // A period shorter than a nanosecond per request is as good as no limit on the rate;
        // governor needs a non-zero interval.
        let interval = (self.period / self.requests.get()).max(Duration::from_nanos(1));
        Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(self.requests))
            .allow_burst(self.burst)
    }
}

/// How much the API takes, from one client and in all (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests per client (`None`: no quota). Default: 100 per second, 1,000 at once.
    pub client: Option<Rate>,
    /// Failed authentications per remote address. Default: 5 per minute, 5 at once.
    pub auth_failures: Rate,
    /// The backlog (objectives running, tasks queued and events not yet written to the log)
    /// at which the routes that create work answer 429 (`None`: no admission control). Default: 10,000.
    pub backlog_max: Option<u64>,
    /// How old the backlog figure may get before a request reads it again. Default: 250 ms.
    pub backlog_refresh: Duration,
}

impl Limits {
    /// These limits with what swarm.toml's `[server]` section sets.
    pub fn with_section(mut self, section: &ServerSection) -> Self {
        match section.client_requests_per_second.map(NonZeroU32::new) {
            Some(None) => self.client = None,
            Some(Some(requests)) => {
                let burst = section
                    .client_burst
                    .or(self.client.map(|rate| rate.burst))
                    .unwrap_or(requests);
                self.client = Some(Rate::new(requests, Duration::from_secs(1), burst));
            }
            None => {
                if let (Some(rate), Some(burst)) = (self.client.as_mut(), section.client_burst) {
                    rate.burst = burst;
                }
            }
        }
        if let Some(per_minute) = section.auth_failures_per_minute {
            self.auth_failures.requests = per_minute;
            self.auth_failures.period = Duration::from_secs(60);
        }
        if let Some(burst) = section.auth_failure_burst {
            self.auth_failures.burst = burst;
        }
        if let Some(max) = section.backlog_max {
            self.backlog_max = (max > 0).then_some(max);
        }
        self
    }
}

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client: Some(Rate::new(
                nonzero(100),
                Duration::from_secs(1),
                nonzero(1000),
            )),
            auth_failures: Rate::new(nonzero(5), Duration::from_secs(60), nonzero(5)),
            backlog_max: Some(10_000),
            backlog_refresh: Duration::from_millis(250),
        }
    }
}

/// Governor's clock, read from tokio's: it stands still while a test has paused time and moves
/// with `tokio::time::advance`.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that counts from now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

/// Who a request counts against for the per-client quota.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    /// A credential (a bearer token or a session cookie), by a prefix of its SHA-256.
    Credential([u8; 16]),
    /// A remote address (IPv6 by its /64).
    Address(IpAddr),
}

impl Client {
    /// The client that presents `credential`.
    pub(crate) fn credential(credential: &str) -> Self {
        let digest = sha2::Sha256::digest(credential.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        Self::Credential(key)
    }
}

/// The remote address of a request, as the limits key it; set on every request by [`remote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Remote(pub(crate) IpAddr);

impl Remote {
    fn of(addr: Option<SocketAddr>) -> Self {
        let ip = match addr.map(|a| a.ip()) {
            // Served without connection info (a router embedded elsewhere): one shared key.
            None => IpAddr::from(Ipv6Addr::UNSPECIFIED),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(
                    u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
                )),
            },
            Some(v4) => v4,
        };
        Self(ip)
    }
}

/// Middleware: records the request's [`Remote`] for the layers and handlers after it.
pub(crate) async fn remote(mut req: Request, next: Next) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    req.extensions_mut().insert(Remote::of(addr));
    next.run(req).await
}

/// What a 429 of the limits was for, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A client's quota.
    Quota,
    /// Failed authentications of an address.
    AuthFailures,
    /// The backlog bound.
    Backlog,
}

impl Limit {
    /// Every limit, in the order of [`Limiters::refused`].
    pub(crate) const ALL: [Self; 3] = [Self::Quota, Self::AuthFailures, Self::Backlog];

    /// The `limit` label of `swarm_http_refused_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Quota => "quota",
            Self::AuthFailures => "auth_failures",
            Self::Backlog => "backlog",
        }
    }
}

/// The limiters of one server.
pub(crate) struct Limiters {
    clock: TokioClock,
    /// Requests refused since start, per [`Limit::ALL`].
    refused: [AtomicU64; 3],
    clients: Option<Keyed<Client, DashMapStateStore<Client>>>,
    failures: Keyed<Attempt, FailureStore>,
    backlog: Backlog,
}

impl Limiters {
    pub(crate) fn new(limits: &Limits) -> Self {
        let clock = TokioClock::new();
        Self {
            clock,
            refused: Default::default(),
            clients: limits
                .client
                .map(|rate| Keyed::new(rate, DashMapStateStore::default(), clock)),
            failures: Keyed::new(limits.auth_failures, FailureStore::default(), clock),
            backlog: Backlog {
                max: limits.backlog_max,
                refresh: limits.backlog_refresh,
                last: AtomicU64::new(0),
                admitted: AtomicU64::new(0),
                read_at: tokio::sync::Mutex::new(None),
            },
        }
    }

    /// Counts one request of `client`; `Err` with the seconds to wait when over its quota.
    pub(crate) fn check_client(&self, client: &Client) -> Result<(), u64> {
        match &self.clients {
            Some(clients) => clients
                .check(client, &self.clock)
                .inspect_err(|_| self.count_refused(Limit::Quota)),
            None => Ok(()),
        }
    }

    /// Counts one request refused for `limit`.
    pub(crate) fn count_refused(&self, limit: Limit) {
        let i = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests were refused since start, per limit.
    pub(crate) fn refused(&self) -> [(Limit, u64); 3] {
        let mut counts = Limit::ALL.map(|limit| (limit, 0));
        for (i, (_, count)) in counts.iter_mut().enumerate() {
            *count = self.refused[i].load(Ordering::Relaxed);
        }
        counts
    }

    /// Whether `remote` may present a credential now (counts nothing); `Err` with the seconds to
    /// wait when it failed too often.
    pub(crate) fn may_authenticate(&self, remote: Remote) -> Result<(), u64> {
        self.failures
            .check(
                &Attempt {
                    remote,
                    counts: false,
                },
                &self.clock,
            )
            .inspect_err(|_| self.count_refused(Limit::AuthFailures))
    }

    /// Counts one failed authentication of `remote`.
    pub(crate) fn failed_authentication(&self, remote: Remote) {
        let attempt = Attempt {
            remote,
            counts: true,
        };
        // Past the limit already (two failures at once): the next attempt is refused anyway.
        let _ = self.failures.check(&attempt, &self.clock);
    }

    /// How many keys the limiters hold now: (clients, addresses with failures).
    #[cfg(test)]
    fn keys(&self) -> (usize, usize) {
        (
            self.clients.as_ref().map_or(0, |c| c.limiter.len()),
            self.failures.limiter.len(),
        )
    }
}

/// A keyed limiter and the count that paces its pruning.
struct Keyed<K: Hash, S: StateStore<Key = K>> {
    limiter: RateLimiter<K, S, TokioClock, NoOpMiddleware<Nanos>>,
    checks: AtomicU64,
}

impl<K, S> Keyed<K, S>
where
    K: Hash + Eq + Clone,
    S: ShrinkableKeyedStateStore<K>,
{
    fn new(rate: Rate, store: S, clock: TokioClock) -> Self {
        Self {
            limiter: RateLimiter::new(rate.quota(), store, clock),
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &K, clock: &TokioClock) -> Result<(), u64> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|refused| seconds_to_wait(&refused, clock))
    }
}

/// Whole seconds until `refused` would pass, rounded up (at least 1).
fn seconds_to_wait(refused: &NotUntil<Nanos>, clock: &TokioClock) -> u64 {
    let wait = refused.wait_time_from(clock.now());
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

/// A check of the failed-authentication limiter: one that `counts` records a failure; one that
/// does not only asks whether a failure would pass now, and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Attempt {
    remote: Remote,
    counts: bool,
}

/// Governor's DashMap store keyed by address, which also answers a check that does not count:
/// governor has no "peek", and the failed-authentication limit must be asked before a token
/// is compared but only charged once it turned out wrong.
#[derive(Default)]
struct FailureStore(DashMapStateStore<Remote>);

impl StateStore for FailureStore {
    type Key = Attempt;

    fn measure_and_replace<T, F, E>(&self, key: &Attempt, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if key.counts {
            return self.0.measure_and_replace(&key.remote, f);
        }
        let Some(state) = self.0.get(&key.remote) else {
            return f(None).map(|(outcome, _)| outcome);
        };
        // The closure always "refuses", so the store keeps its state and hands back the
        // decision the check would have made.
        let peeked: Result<(Infallible, Nanos), Result<T, E>> =
            InMemoryState::measure_and_replace(&state, &NotKeyed::NonKey, |tat| {
                Err(f(tat).map(|(outcome, _)| outcome))
            });
        match peeked {
            Ok((never, _)) => match never {},
            Err(decision) => decision,
        }
    }
}

impl ShrinkableKeyedStateStore<Attempt> for FailureStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.0);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The last backlog figure read from the scheduler, when, and how many requests were let in
/// since.
struct Backlog {
    max: Option<u64>,
    refresh: Duration,
    last: AtomicU64,
    /// Requests admitted since the figure was last read: a burst is counted before the figure
    /// shows it (each may create one objective or consume one event).
    admitted: AtomicU64,
    /// Held by the one request that reads the figure again.
    read_at: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Backlog {
    /// Lets one request in, or says the backlog it would add to (`Err`). Concurrent requests
    /// may each pass at the bound, so it can be passed by as many as arrive at once.
    async fn admit(&self, swarm: &Swarm) -> Result<(), (u64, u64)> {
        let Some(max) = self.max else {
            return Ok(());
        };
        let backlog = self
            .current(swarm)
            .await
            .saturating_add(self.admitted.load(Ordering::Relaxed));
        if backlog >= max {
            return Err((backlog, max));
        }
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The last figure, read again first if it is older than `refresh` and no other request
    /// is reading it.
    async fn current(&self, swarm: &Swarm) -> u64 {
        if let Ok(mut read_at) = self.read_at.try_lock()
            && read_at.is_none_or(|at| at.elapsed() >= self.refresh)
        {
            // Reset before reading: a request let in meanwhile may be counted twice until the
            // next reading, never not at all.
            self.admitted.store(0, Ordering::Relaxed);
            match swarm.stats().await {
                Ok(stats) => self.last.store(
                    stats
                        .objectives_running
                        .saturating_add(stats.tasks_queued)
                        .saturating_add(stats.events_unwritten),
                    Ordering::Relaxed,
                ),
                // The coordinator is down: the handler answers that itself.
                Err(err) => tracing::debug!(%err, "backlog not read"),
            }
            *read_at = Some(tokio::time::Instant::now());
        }
        self.last.load(Ordering::Relaxed)
    }
}

/// Middleware: the per-client quota. The client is the credential the auth layer found (its
/// [`Client`] extension) or else the remote address.
pub(crate) async fn quota(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if ROUTES
        .iter()
        .any(|route| route.is_probe() && route.path == path)
    {
        return next.run(req).await;
    }
    let client = match req.extensions().get::<Client>() {
        Some(client) => client.clone(),
        None => Client::Address(remote_of(&req).0),
    };
    if let Err(seconds) = state.limiters.check_client(&client) {
        return too_many(
            "quota",
            format!("this client's request quota is used up; retry in {seconds} s"),
            seconds,
        );
    }
    next.run(req).await
}

/// Route middleware for the routes that create work: refused while the backlog is past the
/// bound.
pub(crate) async fn admission(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let backlog = &state.limiters.backlog;
    if let Err((current, max)) = backlog.admit(&state.swarm).await {
        state.limiters.count_refused(Limit::Backlog);
        let seconds = backlog.refresh.as_secs().max(1);
        return too_many(
            "backlog",
            format!(
                "the swarm's backlog ({current} objectives running, tasks queued, events not \
                 yet written and requests just admitted) is at its bound of {max}; retry in \
                 {seconds} s"
            ),
            seconds,
        );
    }
    next.run(req).await
}

/// The request's remote address ([`remote`] always sets it).
pub(crate) fn remote_of(req: &Request) -> Remote {
    req.extensions()
        .get::<Remote>()
        .copied()
        .unwrap_or(Remote::of(None))
}

/// A 429 problem of kind `slug`.
pub(crate) fn too_many(slug: &str, detail: String, seconds: u64) -> Response {
    Problem::new(StatusCode::TOO_MANY_REQUESTS, slug, detail)
        .retry_after(seconds)
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(client: (u32, Duration, u32), failures: (u32, Duration, u32)) -> Limits {
        let rate =
            |(n, per, burst): (u32, Duration, u32)| Rate::new(nonzero(n), per, nonzero(burst));
        Limits {
            client: Some(rate(client)),
            auth_failures: rate(failures),
            ..Limits::default()
        }
    }

    fn address(last: u8) -> Client {
        Client::Address(IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_over_its_quota_waits_and_others_do_not() {
        let limiters = Limiters::new(&limits(
            (1, Duration::from_secs(10), 3),
            (5, Duration::from_secs(60), 5),
        ));
        let (a, b) = (address(1), address(2));
        for _ in 0..3 {
            assert_eq!(limiters.check_client(&a), Ok(()));
        }
        // One request every 10 s once the burst is spent.
        assert_eq!(limiters.check_client(&a), Err(10));
        assert_eq!(limiters.check_client(&b), Ok(()));
        tokio::time::advance(Duration::from_millis(9_500)).await;
        assert_eq!(limiters.check_client(&a), Err(1), "rounded up");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiters.check_client(&a), Ok(()));
        assert_eq!(limiters.check_client(&a), Err(10));
        // A credential is a client of its own, apart from its address.
        assert_eq!(limiters.check_client(&Client::credential("t")), Ok(()));
        assert_eq!(
            limiters.refused(),
            [
                (Limit::Quota, 3),
                (Limit::AuthFailures, 0),
                (Limit::Backlog, 0)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_asked_before_and_counted_after() {
        let limiters = Limiters::new(&limits(
            (100, Duration::from_secs(1), 100),
            (5, Duration::from_secs(60), 5),
        ));
        let remote = Remote(IpAddr::from([10, 0, 0, 1]));
        // Asking counts nothing.
        for _ in 0..20 {
            assert_eq!(limiters.may_authenticate(remote), Ok(()));
        }
        for _ in 0..5 {
            assert_eq!(limiters.may_authenticate(remote), Ok(()));
            limiters.failed_authentication(remote);
        }
        assert_eq!(limiters.may_authenticate(remote), Err(12));
        let other = Remote(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(limiters.may_authenticate(other), Ok(()));
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(limiters.may_authenticate(remote), Ok(()));
        limiters.failed_authentication(remote);
        assert_eq!(limiters.may_authenticate(remote), Err(12));
    }

    #[tokio::test(start_paused = true)]
    async fn the_keys_of_a_scan_do_not_stay() {
        let limiters = Limiters::new(&limits(
            (1, Duration::from_secs(1), 1),
            (1, Duration::from_secs(1), 1),
        ));
        let scanned = 3 * PRUNE_EVERY;
        for i in 0..scanned {
            let ip = IpAddr::from(u32::try_from(i).unwrap().to_be_bytes());
            limiters.check_client(&Client::Address(ip)).unwrap();
            limiters.failed_authentication(Remote(ip));
            // Each address is seen once; a second later its state is a fresh one's.
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let (clients, failures) = limiters.keys();
        // Only the addresses seen in about the last second (100 of them) or since the last
        // pruning (up to `PRUNE_EVERY`) are kept, not all 3,072.
        let bound = usize::try_from(PRUNE_EVERY).unwrap() + 200;
        assert!(clients <= bound, "{clients} client keys");
        assert!(failures <= bound, "{failures} failure keys");
    }

    #[test]
    fn swarm_toml_sets_what_it_names() {
        assert!(toml::from_str::<ServerSection>("backlog = 1").is_err());
        let section: ServerSection =
            toml::from_str("client_requests_per_second = 7\nauth_failure_burst = 2").unwrap();
        let limits = Limits::default().with_section(&section);
        let client = limits.client.unwrap();
        assert_eq!((client.requests.get(), client.burst.get()), (7, 1000));
        assert_eq!(limits.auth_failures.burst.get(), 2);
        assert_eq!(limits.auth_failures.requests.get(), 5);
        assert_eq!(limits.backlog_max, Some(10_000));
        let off: ServerSection =
            toml::from_str("client_requests_per_second = 0\nbacklog_max = 0").unwrap();
        let off = Limits::default().with_section(&off);
        assert_eq!((off.client, off.backlog_max), (None, None));
        assert_eq!(
            Limits::default().with_section(&ServerSection::default()),
            Limits::default()
        );
    }

    #[test]
    fn addresses_are_keyed_by_host() {
        let v6 = |s: &str| Some(SocketAddr::new(s.parse().unwrap(), 1));
        assert_eq!(
            Remote::of(v6("2001:db8::1")),
            Remote::of(v6("2001:db8::ffff:2"))
        );
        assert_ne!(Remote::of(v6("2001:db8::1")), Remote::of(v6("2001:db9::1")));
        assert_eq!(
            Remote::of(v6("::ffff:10.0.0.1")),
            Remote(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(
            Remote::of(Some(SocketAddr::from(([10, 0, 0, 1], 5)))),
            Remote::of(Some(SocketAddr::from(([10, 0, 0, 1], 6))))
        );
    }

    #[test]
    fn a_credential_is_kept_only_as_a_digest() {
        let Client::Credential(key) = Client::credential("s3cret") else {
            unreachable!()
        };
        assert!(!key.windows(6).any(|w| w == b"s3cret"));
        assert_ne!(Client::credential("a"), Client::credential("b"));
    }
}
