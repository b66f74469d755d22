//! One attempt on a worker: run under its idle and hard timeouts, reported while it runs, and
//! its result stored in the results stream before its message is acknowledged.
//!
//! Progress goes out as `protocol/REMOTE.md` asks: `seq` 1 at once (unless the attempt ended
//! on its first poll), then whenever the attempt shows a sign of life (a heartbeat, partial
//! output or streamed text in its `TaskContext`, looked at every [`PROGRESS_POLL`]), and at
//! least every third of the lease; each after the first with an in-progress acknowledgement of
//! every delivery of the attempt, which renews JetStream's lease. Streamed text that extends what was sent goes as a text delta; any other
//! change as the whole partial output.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::FutureExt;
use serde_json::Value;
use swarm_agents::{DynAgent, TaskContext};
use swarm_protocol::remote::{
    self, Attempt, AttemptId, AttemptResult, Outcome, Progress, TextDelta,
};
use swarm_protocol::{AgentId, FailureKind, TaskOutcome};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Link, backoff, truncate};

/// How often a running attempt's context is looked at for progress to report.
pub(super) const PROGRESS_POLL: Duration = Duration::from_millis(50);

/// What an attempt's task needs from its agent's loop.
pub(super) struct Env {
    pub(super) link: Arc<Link>,
    /// The lease (`AckWait`): a sign of life goes out at least every third of it.
    pub(super) lease: Duration,
}

/// How an attempt's task ended: its idempotency key, and its encoded result, to keep for a
/// repeated delivery (none when nothing was run).
pub(super) struct Ended {
    pub(super) key: String,
    pub(super) result: Option<Bytes>,
}

/// Runs `attempt` on `agent`, then stores its result and acknowledges every delivery.
pub(super) async fn run(
    env: Env,
    attempt: Attempt,
    agent: Arc<dyn DynAgent>,
    deliveries: watch::Receiver<Vec<Subject>>,
) -> Ended {
    let mut reporter = Reporter::new(&env, &attempt, deliveries);
    let task = attempt.task();
    let (idle, hard) = (task.idle_timeout, task.hard_timeout);
    let ctx = TaskContext::new(std::time::Instant::now());
    let started = Instant::now();
    let running = AssertUnwindSafe(swarm_agents::actor::watch(
        agent.start(task, ctx.clone()),
        &ctx,
        idle,
        hard,
    ))
    .catch_unwind();
    tokio::pin!(running);
    // Polled once first, as the agent actor does: an attempt that ends at once (a no-op) needs
    // no report, its result follows.
    let outcome = match futures::poll!(&mut running) {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => {
            reporter.send(Change::Beat).await;
            let mut poll = tokio::time::interval(PROGRESS_POLL.min(reporter.every));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut running => break outcome,
                    () = reporter.redelivered() => reporter.send(Change::Beat).await,
                    _ = poll.tick() => reporter.look(&ctx).await,
                }
            }
        }
    };
    let outcome = match outcome {
        Ok(outcome) => outcome.bounded(),
        Err(panic) => TaskOutcome::failure(
            FailureKind::Transient,
            format!("the agent panicked: {}", panic_text(panic.as_ref())),
        ),
    };
    let result = AttemptResult {
        attempt: attempt.attempt,
        agent: attempt.agent,
        outcome: Outcome::from(outcome),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let bytes = encode_result(result);
    store_and_acknowledge(&env, &attempt.idempotency_key, &mut reporter, bytes.clone()).await;
    Ended {
        key: attempt.idempotency_key,
        result: Some(bytes),
    }
}

/// Answers a repeated delivery of a finished attempt: publishes its kept result again
/// (`Nats-Msg-Id` makes the stream store it once), then acknowledges.
pub(super) async fn republish(
    env: Env,
    attempt: Attempt,
    deliveries: watch::Receiver<Vec<Subject>>,
    result: Bytes,
) -> Ended {
    let mut reporter = Reporter::new(&env, &attempt, deliveries);
    store_and_acknowledge(
        &env,
        &attempt.idempotency_key,
        &mut reporter,
        result.clone(),
    )
    .await;
    Ended {
        key: attempt.idempotency_key,
        result: Some(result),
    }
}

/// Sends one acknowledgement of a delivery (`+ACK`, `+WPI`, `+TERM`).
pub(super) async fn acknowledge(client: &Client, reply: &Subject, kind: AckKind) {
    if let Err(err) = client.publish(reply.clone(), Bytes::from(kind)).await {
        tracing::debug!(%err, ?kind, "an acknowledgement was not sent");
    }
}

/// Publishes the result until the stream has stored it, keeping the attempt alive meanwhile;
/// then acknowledges every delivery of the attempt.
async fn store_and_acknowledge(env: &Env, key: &str, reporter: &mut Reporter, result: Bytes) {
    let stored = store(&env.link, key, result);
    tokio::pin!(stored);
    let mut poll = tokio::time::interval(reporter.every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.reset();
    loop {
        tokio::select! {
            biased;
            () = &mut stored => break,
            () = reporter.redelivered() => reporter.send(Change::Beat).await,
            _ = poll.tick() => reporter.send(Change::Beat).await,
        }
    }
    let deliveries = reporter.deliveries.borrow().clone();
    for reply in &deliveries {
        acknowledge(&env.link.client, reply, AckKind::Ack).await;
    }
}

/// Publishes `result` to the results stream under `key` until the server acknowledges it:
/// an attempt is never acknowledged before its result is stored.
async fn store(link: &Link, key: &str, result: Bytes) {
    let mut failures = 0_u32;
    loop {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, key);
        let stored: Result<_, async_nats::jetstream::context::PublishError> = async {
            link.js
                .publish_with_headers(link.subjects.results(), headers, result.clone())
                .await?
                .await
        }
        .await;
        match stored {
            Ok(_) => return,
            Err(err) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(%err, %key, failures, "a result is not stored yet; trying again");
                }
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

/// The result as bytes; one that cannot be sent (too large, too deep) becomes a permanent
/// failure saying why.
fn encode_result(mut result: AttemptResult) -> Bytes {
    match remote::encode(&result) {
        Ok(bytes) => Bytes::from(bytes),
        Err(err) => {
            let message: String = format!("the agent's result cannot be sent: {err}")
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            result.outcome = Outcome::Failed {
                kind: FailureKind::Permanent,
                message: truncate(message, remote::FAILURE_MESSAGE_BYTES_MAX),
                partial_output: None,
                usage: None,
                retry_after_ms: None,
            };
            // Nothing but ids, a bounded message without control characters and a duration
            // is left, which always encodes; an empty payload (which the coordinator drops,
            // and the attempt's lease then runs out) is only the last resort.
            remote::encode(&result).map(Bytes::from).unwrap_or_default()
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

/// What a progress report carries.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// A bare sign of life.
    Beat,
    /// The whole partial output.
    Partial(Value),
    /// Text appended to the text sent so far.
    Text(TextDelta),
}

/// The progress reports of one attempt.
struct Reporter {
    client: Client,
    subject: String,
    attempt: AttemptId,
    agent: AgentId,
    seq: u64,
    /// A sign of life goes out at least this often.
    every: Duration,
    deliveries: watch::Receiver<Vec<Subject>>,
    /// Whether the agent's loop still tells of new deliveries.
    deliveries_open: bool,
    /// The partial output as last reported.
    sent: Option<Value>,
    /// The context's latest sign of life already reported.
    seen_beat: Option<Instant>,
    last_sent: Instant,
}

impl Reporter {
    fn new(env: &Env, attempt: &Attempt, deliveries: watch::Receiver<Vec<Subject>>) -> Self {
        Self {
            client: env.link.client.clone(),
            subject: env
                .link
                .subjects
                .progress(attempt.attempt.task, attempt.attempt.number),
            attempt: attempt.attempt,
            agent: attempt.agent,
            seq: 0,
            every: (env.lease / 3).max(Duration::from_millis(1)),
            deliveries,
            deliveries_open: true,
            sent: None,
            seen_beat: None,
            last_sent: Instant::now(),
        }
    }

    /// Resolves when the attempt is delivered again.
    async fn redelivered(&mut self) {
        if self.deliveries_open && self.deliveries.changed().await.is_ok() {
            return;
        }
        self.deliveries_open = false;
        std::future::pending().await
    }

    /// Reports what changed in the context since the last look, or a bare sign of life
    /// when nothing was reported for a third of the lease.
    async fn look(&mut self, ctx: &TaskContext) {
        let beat = ctx.last_beat();
        let fresh = match self.seen_beat {
            Some(seen) => beat > seen,
            // Before the first sign of life, a partial output set at the very start (in the
            // same clock tick) counts too.
            None => beat > ctx.started() || ctx.partial().is_some(),
        };
        if !fresh {
            if self.last_sent.elapsed() >= self.every {
                self.send(Change::Beat).await;
            }
            return;
        }
        self.seen_beat = Some(beat);
        let partial = ctx.partial();
        let change = change(self.sent.as_ref(), partial.as_ref());
        self.sent = partial;
        self.send(change).await;
    }

    /// Sends one report and an in-progress acknowledgement of every delivery. Nothing while
    /// the connection is down: a report is worth nothing later, and waiting for room in the
    /// client's buffer would hold up the attempt itself.
    async fn send(&mut self, change: Change) {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        self.seq += 1;
        let mut progress = Progress {
            attempt: self.attempt,
            agent: self.agent,
            seq: self.seq,
            partial_output: None,
            text: None,
            usage: None,
        };
        match change {
            Change::Beat => {}
            Change::Partial(value) => progress.partial_output = Some(value),
            Change::Text(delta) => progress.text = Some(delta),
        }
        let bytes = remote::encode(&progress).or_else(|err| {
            tracing::debug!(%err, "progress too large to report; a bare heartbeat goes instead");
            progress.partial_output = None;
            progress.text = None;
            remote::encode(&progress)
        });
        match bytes {
            Ok(bytes) => {
                if let Err(err) = self
                    .client
                    .publish(self.subject.clone(), bytes.into())
                    .await
                {
                    tracing::debug!(%err, "a progress report was not sent");
                }
            }
            Err(err) => tracing::error!(%err, "a progress report could not be encoded"),
        }
        // The first report goes as the delivery begins: JetStream's lease is fresh.
        let deliveries = self.deliveries.borrow_and_update().clone();
        if self.seq > 1 {
            for reply in &deliveries {
                acknowledge(&self.client, reply, AckKind::Progress).await;
            }
        }
        self.last_sent = Instant::now();
    }
}

/// What to report when the partial output went from `sent` to `now`: a text delta when `now`
/// is `sent` with text appended (no longer than a delta may be), else the whole output, or a
/// bare sign of life when it did not change.
fn change(sent: Option<&Value>, now: Option<&Value>) -> Change {
    match (sent, now) {
        (_, None) => Change::Beat,
        (Some(sent), Some(now)) if sent == now => Change::Beat,
        (Some(Value::String(sent)), Some(Value::String(now)))
            if now.len() > sent.len()
                && now.len() - sent.len() <= remote::TEXT_DELTA_BYTES_MAX
                && now.starts_with(sent.as_str()) =>
        {
            Change::Text(TextDelta {
                offset: sent.len() as u64,
                delta: now[sent.len()..].to_owned(),
            })
        }
        (_, Some(now)) => Change::Partial(now.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn appended_text_goes_as_a_delta_and_anything_else_whole() {
        assert_eq!(change(None, None), Change::Beat);
        assert_eq!(change(Some(&json!("a")), Some(&json!("a"))), Change::Beat);
        assert_eq!(
            change(Some(&json!("The ")), Some(&json!("The report"))),
            Change::Text(TextDelta {
                offset: 4,
                delta: "report".into()
            })
        );
        assert_eq!(
            change(Some(&json!("The ")), Some(&json!("A report"))),
            Change::Partial(json!("A report"))
        );
        assert_eq!(
            change(None, Some(&json!({"done": false}))),
            Change::Partial(json!({"done": false}))
        );
        let long = "x".repeat(remote::TEXT_DELTA_BYTES_MAX + 1);
        assert_eq!(
            change(Some(&json!("")), Some(&json!(long))),
            Change::Partial(json!(long))
        );
    }
}
