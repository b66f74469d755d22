//! The soak's load: submits over keep-alive HTTP connections on a fixed schedule, and the
//! tally of what they got back.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::*;

/// How the server answered one submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 202 with the objective's id.
    Accepted(String),
    /// 429 or 503: refused, with the seconds of its `Retry-After` (`None`: missing or not a
    /// number of seconds) and the problem's kind (`backlog` of `urn:swarm:problem:backlog`).
    Refused {
        /// The status.
        status: u16,
        /// `Retry-After`, seconds.
        retry_after_s: Option<u64>,
        /// The problem's kind.
        kind: String,
    },
    /// Anything else (a 202 without an id counts here too).
    Unexpected(u16),
}

/// Classifies an answer to a submit by its status, `Retry-After` header and body.
pub fn classify(status: u16, retry_after: Option<&[u8]>, body: &[u8]) -> Answer {
    let json = || serde_json::from_slice::<Value>(body).ok();
    match status {
        202 => match json().and_then(|v| v.get("id")?.as_str().map(str::to_owned)) {
            Some(id) => Answer::Accepted(id),
            None => Answer::Unexpected(status),
        },
        429 | 503 => {
            let retry_after_s = retry_after
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let kind = json()
                .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
                .map(|t| {
                    t.strip_prefix("urn:swarm:problem:")
                        .unwrap_or(&t)
                        .to_owned()
                })
                .unwrap_or_else(|| "-".to_owned());
            Answer::Refused {
                status,
                retry_after_s,
                kind,
            }
        }
        _ => Answer::Unexpected(status),
    }
}

/// What one phase's submits got back.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Submits offered (sent or failed).
    pub offered: u64,
    /// Latency of the 202s from their scheduled send, nanoseconds.
    pub accepted: Histogram<u64>,
    /// Latency of the refusals from their scheduled send, nanoseconds.
    pub refused: Histogram<u64>,
    /// The accepted objectives.
    pub accepted_ids: Vec<String>,
    /// Refusals by status and problem kind.
    pub refused_by: BTreeMap<(u16, String), u64>,
    /// Refusals without a `Retry-After` of whole seconds.
    pub refused_without_retry_after: u64,
    /// Other answers, by status.
    pub unexpected: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection failures, timeouts).
    pub transport_errors: u64,
    /// The first of those, for the report.
    pub first_error: Option<String>,
    /// The furthest the sender fell behind its schedule.
    pub send_lag_max: Duration,
}

impl Tally {
    pub(super) fn new() -> Result<Self, Error> {
        Ok(Self {
            offered: 0,
            accepted: new_histogram()?,
            refused: new_histogram()?,
            accepted_ids: Vec::new(),
            refused_by: BTreeMap::new(),
            refused_without_retry_after: 0,
            unexpected: BTreeMap::new(),
            transport_errors: 0,
            first_error: None,
            send_lag_max: Duration::ZERO,
        })
    }

    pub(super) fn record(&mut self, answer: Answer, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.offered += 1;
        match answer {
            Answer::Accepted(id) => {
                self.accepted.saturating_record(ns);
                self.accepted_ids.push(id);
            }
            Answer::Refused {
                status,
                retry_after_s,
                kind,
            } => {
                self.refused.saturating_record(ns);
                *self.refused_by.entry((status, kind)).or_default() += 1;
                if retry_after_s.is_none() {
                    self.refused_without_retry_after += 1;
                }
            }
            Answer::Unexpected(status) => *self.unexpected.entry(status).or_default() += 1,
        }
    }

    pub(super) fn record_error(&mut self, error: String) {
        self.offered += 1;
        self.transport_errors += 1;
        self.first_error.get_or_insert(error);
    }

    pub(super) fn merge(&mut self, other: Tally) -> Result<(), Error> {
        let hist = |e| Error::Run(format!("histogram: {e}"));
        self.offered += other.offered;
        self.accepted.add(&other.accepted).map_err(hist)?;
        self.refused.add(&other.refused).map_err(hist)?;
        self.accepted_ids.extend(other.accepted_ids);
        for (key, n) in other.refused_by {
            *self.refused_by.entry(key).or_default() += n;
        }
        self.refused_without_retry_after += other.refused_without_retry_after;
        for (status, n) in other.unexpected {
            *self.unexpected.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.send_lag_max = self.send_lag_max.max(other.send_lag_max);
        Ok(())
    }

    /// The refusals, 429s and 503s alike.
    pub fn refused_count(&self) -> u64 {
        self.refused_by.values().sum()
    }

    /// Answers that were neither 202, 429 nor 503, and requests that got no answer.
    pub fn failed_count(&self) -> u64 {
        self.unexpected.values().sum::<u64>() + self.transport_errors
    }
}

/// The body of every submit: a model call, then a check of its answer by an agent that
/// crashes now and then. The model call retries up to 8 times (5% faults fail all 8 with a
/// probability of 4e-11), quickly, so a fault costs little time.
pub(super) fn objective_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "goal": "soak",
            "tasks": [
                {
                    "id": "ask",
                    "capability": ASK,
                    "input": "Say something about soak tests.",
                    "retry": {"max_attempts": 8, "initial_backoff": "10ms", "max_backoff": "200ms"},
                },
                {"id": "check", "capability": CHECK, "depends_on": ["ask"]},
            ],
        })
        .to_string(),
    )
}

/// Offers `count` submits at `rate` per second, open loop, over `connections` keep-alive
/// connections, and tallies the answers (latency from each submit's scheduled send).
pub(super) async fn offer(
    addr: SocketAddr,
    body: &Bytes,
    rate: u64,
    count: u64,
    connections: usize,
) -> Result<Tally, Error> {
    // Bounded: a sender this far ahead of the connections waits, and the latencies it
    // then charges count from the schedule anyway.
    let (jobs, queue) = mpsc::channel::<Instant>(65_536);
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (queue, body) = (queue.clone(), body.clone());
        let mut tally = Tally::new()?;
        workers.spawn(async move {
            let mut connection = Connection::new(addr);
            loop {
                let Some(due) = queue.lock().await.recv().await else {
                    break;
                };
                match connection
                    .request(hyper::Method::POST, "/v1/objectives", body.clone())
                    .await
                {
                    Ok((status, retry_after, answer)) => tally.record(
                        classify(status, retry_after.as_deref(), &answer),
                        due.elapsed(),
                    ),
                    Err(error) => tally.record_error(error),
                }
            }
            tally
        });
    }
    let schedule = Schedule::new(Instant::now(), rate, 1);
    let mut sent = 0u64;
    let mut lag_max = Duration::ZERO;
    while sent < count {
        let now = Instant::now();
        let due = schedule.due_by(now).min(count);
        if sent < due {
            lag_max = lag_max.max(now.saturating_duration_since(schedule.due_at(sent)));
        }
        for j in sent..due {
            if jobs.send(schedule.due_at(j)).await.is_err() {
                return Err(Error::Run("every connection of the load stopped".into()));
            }
        }
        sent = due;
        if sent == count {
            break;
        }
        match schedule.wake(sent, now) {
            Wake::SleepUntil(at) => tokio::time::sleep_until(at).await,
            Wake::Yield => tokio::task::yield_now().await,
        }
    }
    drop(jobs);
    let mut tally = Tally::new()?;
    tally.send_lag_max = lag_max;
    while let Some(worker) = workers.join_next().await {
        let worker = worker.map_err(|e| Error::Run(format!("load connection: {e}")))?;
        tally.merge(worker)?;
    }
    Ok(tally)
}
