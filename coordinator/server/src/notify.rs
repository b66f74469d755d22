//! Escalation notices: the edge that tells a configured receiver that a review's deadline
//! escalated it (`on_timeout: "escalate"`).
//!
//! The engine only records `TaskEscalated`; the [`Notifier`] follows the swarm's committed
//! events and POSTs each `TaskEscalated` record, as its JSON (the same record the log and the
//! event streams carry), to `[approvals] notify_url`. So a notice is sent only for an
//! escalation that is durable, and the engine never makes an HTTP call. Escalations recorded
//! while the swarm opened (deadlines that passed while the coordinator was down) are read
//! from the log, so they are announced too.
//!
//! # Guarantees
//! - Each notice is signed as inbound webhooks are: `X-Swarm-Signature: t=<unix
//!   seconds>,v1=<hex HMAC-SHA256 of "<t>." followed by the body>` under the secret of
//!   `secret_env` or `secret_file` (see `swarm_coordinator::triggers::signature`), so a
//!   receiver checks it with the same code. `X-Swarm-Delivery: escalation-<seq>` is the same
//!   on every try of one notice, so a receiver can drop repeats.
//! - A try that fails for the receiver's sake (a connection error, a timeout, 408, 429 or a
//!   5xx) is repeated after an exponential backoff with full jitter, up to `attempts` tries.
//!   Any other answer outside 2xx says the notice itself is refused (a wrong secret, say):
//!   it is not repeated, and it says nothing about the receiver's health.
//! - A circuit breaker (the model gateway's `ConsecutiveBreaker`) stands in front of the
//!   receiver: after `breaker.consecutive_failures` failed tries in a row it opens, and a
//!   notice that finds it open is given up at once, until a probe after the cool-down finds
//!   the receiver back. A receiver that is down costs one try per cool-down, not a retry
//!   storm; the escalation itself stays in the log, the task view and the board.
//! - At most [`QUEUE_MAX`] notices wait; past that, new ones are dropped with a warning (as
//!   are escalations missed when the follower lagged behind the event feed). Notices are
//!   sent one at a time, in the order of the log.
//! - The secret is never logged and never shown by `Debug`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use swarm_agents::clock::TokioClock;
use swarm_agents::model::breaker::{
    Admission, Breaker, BreakerConfig, CallOutcome, ConsecutiveBreaker,
};
use swarm_coordinator::config::ApprovalsSection;
use swarm_coordinator::triggers::Environment;
use swarm_coordinator::triggers::signature::{SIGNATURE_HEADER, sign};
use swarm_coordinator::{Error, Swarm};
use swarm_protocol::{Event, EventRecord};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// The most notices waiting to be sent.
pub const QUEUE_MAX: usize = 1024;

/// The most events recorded while the swarm opened that are read for escalations.
const OPENING_EVENTS_MAX: usize = 100_000;

/// The header naming a notice, the same on each of its tries.
pub const DELIVERY_HEADER: &str = "x-swarm-delivery";

/// Where and how notices are sent: `[approvals]` with its secret read.
#[derive(Clone)]
pub struct NotifierConfig {
    /// The receiver.
    pub url: reqwest::Url,
    /// The signing secret.
    pub secret: Arc<[u8]>,
    /// Tries per notice, the first included.
    pub attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    pub initial_backoff: Duration,
    /// The backoff ceiling never grows past this.
    pub max_backoff: Duration,
    /// How long one POST may take.
    pub request_timeout: Duration,
    /// The breaker in front of the receiver.
    pub breaker: BreakerConfig,
}

impl std::fmt::Debug for NotifierConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never appears in logs or panics.
        f.debug_struct("NotifierConfig")
            .field("url", &self.url.as_str())
            .field("attempts", &self.attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl NotifierConfig {
    /// The notifier `[approvals]` asks for, with its secret read now from `env` or the file;
    /// `None` without a `notify_url`. An unset variable, an unreadable or empty file, or a
    /// bad URL is an error naming the setting (never the secret).
    pub fn from_section(
        section: &ApprovalsSection,
        env: &Environment,
    ) -> Result<Option<Self>, Error> {
        let Some(url) = &section.notify_url else {
            return Ok(None);
        };
        let config_error = |field: &str, message: String| Error::Config {
            field: format!("approvals.{field}"),
            message,
        };
        let url = reqwest::Url::parse(url)
            .map_err(|e| config_error("notify_url", format!("`{url}` is not a URL: {e}")))?;
        let secret = match (&section.secret_env, &section.secret_file) {
            (Some(name), _) => env.var(name).filter(|s| !s.is_empty()).ok_or_else(|| {
                config_error(
                    "secret_env",
                    format!(
                        "the variable `{name}` is unset or empty in the coordinator's environment"
                    ),
                )
            })?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| config_error("secret_file", format!("{}: {e}", path.display())))?;
                let secret = text.strip_suffix('\n').unwrap_or(&text);
                if secret.is_empty() {
                    return Err(config_error(
                        "secret_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                secret.to_owned()
            }
            (None, None) => {
                return Err(config_error(
                    "secret_env",
                    "`notify_url` needs a signing secret, from `secret_env` or `secret_file`"
                        .into(),
                ));
            }
        };
        Ok(Some(Self {
            url,
            secret: secret.into_bytes().into(),
            attempts: section.attempts.clamp(1, ApprovalsSection::ATTEMPTS_MAX),
            initial_backoff: section.initial_backoff,
            max_backoff: section.max_backoff,
            request_timeout: section.request_timeout,
            breaker: swarm_coordinator::model_agents::breaker_config(&section.breaker),
        }))
    }

    /// The backoff ceiling before try `next` (2 for the first retry).
    fn backoff_ceiling(&self, next: u32) -> Duration {
        let doublings = next.saturating_sub(2).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// What became of the notices so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Notices the receiver took (a 2xx).
    pub delivered: u64,
    /// Tries made, over all notices.
    pub tries: u64,
    /// Notices given up after their last try, or refused by the receiver.
    pub failed: u64,
    /// Notices given up at once because the breaker was open.
    pub refused_by_breaker: u64,
    /// Notices dropped because the queue was full or the feed lagged.
    pub dropped: u64,
}

/// The running notifier: a follower of the event feed and a sender, stopped together.
pub struct Notifier {
    stop: watch::Sender<bool>,
    stats: watch::Receiver<NotifyStats>,
    tasks: [JoinHandle<()>; 2],
}

impl Notifier {
    /// Follows `swarm`'s committed events, from those it recorded while it opened (a
    /// deadline that passed while the coordinator was down escalates then) on. A swarm
    /// without a durable log has no feed, and so no notices: `None`.
    pub async fn for_swarm(swarm: &Swarm, config: NotifierConfig) -> Option<Self> {
        let feed = swarm.subscribe()?;
        // Subscribed first, so nothing falls between what is read here and the feed.
        let opened = match (swarm.store(), swarm.recovery()) {
            (Some(store), Some(report)) => {
                match store.read_after(report.last_seq, OPENING_EVENTS_MAX).await {
                    Ok(records) => records,
                    Err(err) => {
                        tracing::warn!(%err, "escalations recorded while the swarm opened get no notice: the log could not be read");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        Some(Self::spawn_after(feed, opened, config))
    }

    /// Follows `feed`, sending a notice for each `TaskEscalated` in it.
    pub fn spawn(feed: broadcast::Receiver<Arc<EventRecord>>, config: NotifierConfig) -> Self {
        Self::spawn_after(feed, Vec::new(), config)
    }

    /// Sends a notice for each `TaskEscalated` of `first` (records already committed), then
    /// follows `feed`, past the last of `first`.
    fn spawn_after(
        feed: broadcast::Receiver<Arc<EventRecord>>,
        first: Vec<EventRecord>,
        config: NotifierConfig,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (stats_tx, stats) = watch::channel(NotifyStats::default());
        let stats_tx = Arc::new(stats_tx);
        let (queue, notices) = mpsc::channel(QUEUE_MAX);
        let mut after_seq = 0;
        for record in first {
            after_seq = record.seq;
            if matches!(record.event, Event::TaskEscalated { .. }) {
                enqueue(&queue, Arc::new(record), &stats_tx);
            }
        }
        let follower = tokio::spawn(follow(
            feed,
            after_seq,
            queue,
            stats_tx.clone(),
            stopped.clone(),
        ));
        let sender = tokio::spawn(Sender::new(config, stats_tx).run(notices, stopped));
        Self {
            stop,
            stats,
            tasks: [follower, sender],
        }
    }

    /// What became of the notices so far, updated after each try.
    pub fn stats(&self) -> watch::Receiver<NotifyStats> {
        self.stats.clone()
    }

    /// Stops following and sending (a notice being tried is abandoned) and waits for both.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Queues a notice, or drops it when the queue is full.
fn enqueue(
    queue: &mpsc::Sender<Arc<EventRecord>>,
    record: Arc<EventRecord>,
    stats: &watch::Sender<NotifyStats>,
) {
    if queue.try_send(record).is_err() {
        tracing::warn!("escalation notice dropped: {QUEUE_MAX} notices wait already");
        stats.send_modify(|s| s.dropped += 1);
    }
}

/// Reads the feed and queues a notice for each escalation after `after_seq`.
async fn follow(
    mut feed: broadcast::Receiver<Arc<EventRecord>>,
    after_seq: u64,
    queue: mpsc::Sender<Arc<EventRecord>>,
    stats: Arc<watch::Sender<NotifyStats>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let record = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            record = feed.recv() => record,
        };
        match record {
            Ok(record)
                if record.seq > after_seq
                    && matches!(record.event, Event::TaskEscalated { .. }) =>
            {
                enqueue(&queue, record, &stats);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the notifier fell behind the event feed; escalations among the missed events get no notice"
                );
                stats.send_modify(|s| s.dropped += 1);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How one try ended.
enum Try {
    Delivered,
    /// Worth another try (the receiver's fault).
    Failed(String),
    /// Not worth another (the notice was refused).
    Refused(String),
}

/// Sends the queued notices one at a time.
struct Sender {
    config: NotifierConfig,
    client: Result<reqwest::Client, String>,
    breaker: ConsecutiveBreaker,
    stats: Arc<watch::Sender<NotifyStats>>,
    rng: fastrand::Rng,
}

impl Sender {
    fn new(config: NotifierConfig, stats: Arc<watch::Sender<NotifyStats>>) -> Self {
        let breaker = ConsecutiveBreaker::new(config.breaker, TokioClock::new());
        // Building fails only when no TLS backend can start; every notice then fails, saying
        // so, rather than the server.
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| format!("no HTTP client: {e}"));
        Self {
            config,
            client,
            breaker,
            stats,
            rng: fastrand::Rng::new(),
        }
    }

    async fn run(
        mut self,
        mut notices: mpsc::Receiver<Arc<EventRecord>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            let notice = tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                notice = notices.recv() => notice,
            };
            let Some(notice) = notice else { return };
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                () = self.deliver(&notice) => {}
            }
        }
    }

    /// Tries one notice until it is delivered, refused, or out of tries.
    async fn deliver(&mut self, record: &EventRecord) {
        // Serializing an event cannot fail (plain data; a test reads every kind back).
        let body = serde_json::to_vec(record).unwrap_or_default();
        let delivery = format!("escalation-{}", record.seq);
        let mut last = String::new();
        for attempt in 1..=self.config.attempts {
            if attempt > 1 {
                let ceiling = self.config.backoff_ceiling(attempt);
                let ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                tokio::time::sleep(Duration::from_nanos(self.rng.u64(0..=ns))).await;
            }
            let permit = match self.breaker.admit() {
                Admission::Go(permit) => permit,
                Admission::Wait(_) => {
                    tracing::warn!(%delivery, "escalation notice given up: the receiver's breaker is open");
                    self.stats.send_modify(|s| s.refused_by_breaker += 1);
                    return;
                }
            };
            let outcome = self.try_once(&body, &delivery).await;
            self.stats.send_modify(|s| s.tries += 1);
            match outcome {
                Try::Delivered => {
                    self.breaker.record(permit, CallOutcome::Success);
                    self.stats.send_modify(|s| s.delivered += 1);
                    return;
                }
                Try::Refused(why) => {
                    self.breaker.record(permit, CallOutcome::Neutral);
                    tracing::warn!(%delivery, %why, "escalation notice refused by the receiver");
                    self.stats.send_modify(|s| s.failed += 1);
                    return;
                }
                Try::Failed(why) => {
                    self.breaker.record(permit, CallOutcome::Failure);
                    tracing::debug!(%delivery, attempt, %why, "escalation notice failed");
                    last = why;
                }
            }
        }
        tracing::warn!(%delivery, attempts = self.config.attempts, why = %last, "escalation notice given up");
        self.stats.send_modify(|s| s.failed += 1);
    }

    async fn try_once(&self, body: &[u8], delivery: &str) -> Try {
        let now_secs = swarm_agents::clock::system_now_ms() / 1000;
        let signature = sign(&self.config.secret, now_secs, body);
        let client = match &self.client {
            Ok(client) => client,
            Err(why) => return Try::Refused(why.clone()),
        };
        let sent = client
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, delivery)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => Try::Delivered,
            Ok(answer) => {
                let status = answer.status();
                let retryable = status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS;
                if retryable {
                    Try::Failed(format!("answered {status}"))
                } else {
                    Try::Refused(format!("answered {status}"))
                }
            }
            // reqwest's error names the URL, never a header.
            Err(err) => Try::Failed(err.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn section(fields: &str) -> ApprovalsSection {
        let text = format!("[approvals]\nnotify_url = \"http://127.0.0.1:9/n\"\n{fields}");
        swarm_coordinator::config::Config::parse(&text)
            .unwrap()
            .approvals
    }

    #[test]
    fn the_secret_is_read_from_the_variable_or_the_file_and_never_shown() {
        let env = Environment::fixed([("NOTIFY_SECRET", "s3cret-value")]);
        let config = NotifierConfig::from_section(&section("secret_env = \"NOTIFY_SECRET\""), &env)
            .unwrap()
            .unwrap();
        assert_eq!(&*config.secret, b"s3cret-value");
        assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let fields = format!("secret_file = {:?}", file.display().to_string());
        let config = NotifierConfig::from_section(&section(&fields), &env)
            .unwrap()
            .unwrap();
        assert_eq!(&*config.secret, b"from-a-file");

        let unset = NotifierConfig::from_section(&section("secret_env = \"UNSET\""), &env)
            .unwrap_err()
            .to_string();
        assert!(unset.starts_with("approvals.secret_env"), "{unset}");
        assert!(unset.contains("`UNSET`"), "{unset}");
        let none = NotifierConfig::from_section(&ApprovalsSection::default(), &env).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn the_backoff_doubles_up_to_its_ceiling() {
        let env = Environment::fixed([("S", "x")]);
        let config = NotifierConfig::from_section(
            &section("secret_env = \"S\"\ninitial_backoff = \"1s\"\nmax_backoff = \"5s\""),
            &env,
        )
        .unwrap()
        .unwrap();
        let ceilings: Vec<u64> = (2..=6)
            .map(|next| config.backoff_ceiling(next).as_secs())
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 5, 5]);
        assert_eq!(config.backoff_ceiling(u32::MAX), Duration::from_secs(5));
    }
}
