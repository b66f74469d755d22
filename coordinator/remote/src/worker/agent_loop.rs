//! One hosted agent's loop: it owns the agent's membership (announce, heartbeat, follow the
//! answer), its pull consumer and its running attempts, and nothing is shared with another
//! loop but the connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use async_nats::{Client, RequestErrorKind, Subject};
use bytes::Bytes;
use futures::StreamExt;
use swarm_agents::DynAgent;
use swarm_protocol::remote::{
    self, AnnounceReply, Attempt, Heartbeat, HeartbeatReply, Leave, LeaveMode, PROTOCOL_VERSION,
};
use swarm_protocol::{AgentId, Health};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::kept::Kept;
use super::{
    DELIVERIES_MAX, HostedAgent, Link, REQUEST_TIMEOUT_MAX, Status, Stop, attempt, backoff,
    truncate,
};

/// The coordinator's acceptance of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accepted {
    agent: AgentId,
    heartbeat_interval: Duration,
    lease: Duration,
    consumer: String,
}

/// The answer to an announcement.
enum Answer {
    Accepted(Accepted),
    Refused(String),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type PullStream = consumer::pull::Stream;

/// Why the agent's loop is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draining {
    /// The worker stops: the `leave` was sent when the drain began.
    Stopping,
    /// The coordinator said `drain`: the `leave` goes once what runs has ended.
    Directed,
}

/// Whether an agent's loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// A heartbeat timer whose first tick is now.
fn heartbeat_interval(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// One hosted agent's loop and everything it owns.
pub(super) struct AgentLoop {
    link: Arc<Link>,
    name: String,
    max_concurrency: usize,
    agent: Arc<dyn DynAgent>,
    announce: Bytes,
    status: watch::Sender<Status>,
    stop: watch::Receiver<Option<Stop>>,
    accepted: Option<Accepted>,
    /// When to heartbeat (every `heartbeat_interval` once accepted).
    beat: tokio::time::Interval,
    draining: Option<Draining>,
    /// The answer to the announcement in flight.
    announcing: Option<BoxFuture<Answer>>,
    /// The heartbeat in flight, for the agent it was sent for.
    heartbeat: Option<BoxFuture<(AgentId, Option<HeartbeatReply>)>>,
    /// The consumer being opened (after a backoff when it failed before).
    opening: Option<BoxFuture<Result<PullStream, String>>>,
    pulling: Option<PullStream>,
    /// Failures in a row opening the consumer, for the backoff.
    open_failures: u32,
    /// The attempts running, and the repeated deliveries whose kept result is published again.
    tasks: JoinSet<attempt::Ended>,
    /// The deliveries of each running attempt, by idempotency key.
    running: HashMap<String, watch::Sender<Vec<Subject>>>,
    kept: Kept,
}

impl AgentLoop {
    pub(super) fn new(
        link: Arc<Link>,
        hosted: HostedAgent,
        announce: Bytes,
        status: watch::Sender<Status>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Self {
        Self {
            link,
            name: hosted.name,
            max_concurrency: hosted.max_concurrency.max(1) as usize,
            agent: hosted.agent,
            announce,
            status,
            stop,
            accepted: None,
            beat: heartbeat_interval(Duration::from_secs(3600)),
            draining: None,
            announcing: None,
            heartbeat: None,
            opening: None,
            pulling: None,
            open_failures: 0,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            kept: Kept::default(),
        }
    }

    pub(super) async fn run(mut self) {
        self.announcing = Some(Box::pin(announce(self.link.clone(), self.announce.clone())));
        loop {
            if self.draining.is_some() && self.tasks.is_empty() {
                if self.draining == Some(Draining::Directed) {
                    self.leave(LeaveMode::Drain, "drained as the coordinator asked")
                        .await;
                }
                break;
            }
            let can_pull = self.draining.is_none()
                && self.pulling.is_some()
                && self.tasks.len() < self.max_concurrency;
            let beat_due = self.accepted.is_some() && self.heartbeat.is_none();
            let flow = tokio::select! {
                changed = self.stop.changed() => self.on_stop(changed.is_ok()).await,
                answer = maybe(&mut self.announcing) => self.on_answer(answer),
                _ = self.beat.tick(), if beat_due => {
                    self.send_heartbeat();
                    Flow::Go
                }
                (agent, reply) = maybe(&mut self.heartbeat) => {
                    self.heartbeat = None;
                    self.follow(agent, reply);
                    Flow::Go
                }
                opened = maybe(&mut self.opening) => {
                    self.opening = None;
                    match opened {
                        Ok(stream) => {
                            self.open_failures = 0;
                            self.pulling = Some(stream);
                        }
                        Err(err) => self.reopen(&err),
                    }
                    Flow::Go
                }
                message = next(&mut self.pulling), if can_pull => {
                    self.on_message(message);
                    Flow::Go
                }
                ended = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.on_ended(ended);
                    Flow::Go
                }
            };
            if flow == Flow::Stop {
                break;
            }
        }
        self.tasks.shutdown().await;
        self.status.send_if_modified(|status| {
            let refused = matches!(status, Status::Refused(_));
            if !refused {
                *status = Status::Left;
            }
            !refused
        });
    }

    /// Follows [`Worker::shutdown`] (or the worker's drop, which stops at once).
    async fn on_stop(&mut self, sent: bool) -> Flow {
        let stop = if sent {
            *self.stop.borrow_and_update()
        } else {
            Some(Stop::Now)
        };
        match stop {
            Some(Stop::Now) => {
                self.leave(LeaveMode::Now, "the worker stops").await;
                Flow::Stop
            }
            Some(Stop::Drain) if self.draining.is_none() => {
                // Sent only while the coordinator knows the agent.
                self.leave(LeaveMode::Drain, "the worker stops").await;
                self.start_draining(Draining::Stopping);
                Flow::Go
            }
            _ => Flow::Go,
        }
    }

    fn on_answer(&mut self, answer: Answer) -> Flow {
        self.announcing = None;
        match answer {
            Answer::Accepted(accepted) => {
                tracing::info!(
                    agent = %self.name,
                    agent_id = %accepted.agent,
                    "agent accepted by the coordinator"
                );
                self.beat = heartbeat_interval(accepted.heartbeat_interval);
                let _ = self.status.send(Status::Accepted(accepted.agent));
                self.open_failures = 0;
                self.opening = Some(Box::pin(open(
                    self.link.clone(),
                    accepted.consumer.clone(),
                    Duration::ZERO,
                )));
                self.accepted = Some(accepted);
                Flow::Go
            }
            Answer::Refused(message) => {
                tracing::error!(agent = %self.name, %message, "the coordinator refused the agent");
                let _ = self.status.send(Status::Refused(message));
                Flow::Stop
            }
        }
    }

    fn on_message(
        &mut self,
        message: Option<Result<jetstream::Message, consumer::pull::MessagesError>>,
    ) {
        use consumer::pull::MessagesErrorKind as Kind;
        match message {
            Some(Ok(message)) => self.take(message),
            Some(Err(err))
                if matches!(
                    err.kind(),
                    Kind::ConsumerDeleted | Kind::NoResponders | Kind::PushBasedConsumer
                ) =>
            {
                self.reopen(&err.to_string());
            }
            Some(Err(err)) => tracing::debug!(agent = %self.name, %err, "pulling attempts"),
            None => self.reopen("the consumer's messages ended"),
        }
    }

    fn on_ended(&mut self, ended: Option<Result<attempt::Ended, tokio::task::JoinError>>) {
        match ended {
            Some(Ok(ended)) => {
                self.running.remove(&ended.key);
                if let Some(result) = ended.result {
                    self.kept.keep(ended.key, result);
                }
            }
            Some(Err(err)) => {
                tracing::error!(agent = %self.name, %err, "an attempt's task failed");
            }
            None => {}
        }
    }

    /// Pulls nothing more; the loop ends when what runs has ended.
    fn start_draining(&mut self, why: Draining) {
        self.draining = Some(why);
        self.pulling = None;
        self.opening = None;
        self.announcing = None;
    }

    /// Drops the consumer's stream and opens it again after a backoff.
    fn reopen(&mut self, why: &str) {
        self.pulling = None;
        let Some(accepted) = &self.accepted else {
            return;
        };
        if self.draining.is_some() {
            return;
        }
        self.open_failures = self.open_failures.saturating_add(1);
        let wait = backoff(self.open_failures);
        tracing::warn!(agent = %self.name, why, ?wait, "pulling attempts again after a wait");
        self.opening = Some(Box::pin(open(
            self.link.clone(),
            accepted.consumer.clone(),
            wait,
        )));
    }

    fn send_heartbeat(&mut self) {
        let Some(accepted) = &self.accepted else {
            return;
        };
        let (health, reason) = match self.agent.health_feed() {
            Some(feed) => {
                let report = feed.borrow().clone();
                let reason = (!report.reason.is_empty())
                    .then(|| truncate(report.reason, remote::REASON_BYTES_MAX));
                match report.health {
                    Health::Up => (Health::Up, None),
                    Health::Degraded | Health::Draining => (Health::Degraded, reason),
                    Health::Down => (Health::Down, reason),
                }
            }
            None => (Health::Up, None),
        };
        let beat = Heartbeat {
            agent: accepted.agent,
            session: self.link.session.clone(),
            in_flight: u32::try_from(self.running.len())
                .unwrap_or(u32::MAX)
                .min(remote::CONCURRENCY_MAX),
            health,
            reason,
        };
        let timeout = accepted
            .heartbeat_interval
            .clamp(Duration::from_millis(250), REQUEST_TIMEOUT_MAX);
        let link = self.link.clone();
        let agent = accepted.agent;
        self.heartbeat = Some(Box::pin(async move {
            let reply = match remote::encode(&beat) {
                Ok(bytes) => request(
                    &link.client,
                    link.subjects.heartbeat(),
                    bytes.into(),
                    timeout,
                )
                .await
                .ok()
                .and_then(|bytes| remote::decode::<HeartbeatReply>(&bytes).ok()),
                Err(err) => {
                    tracing::error!(%err, "a heartbeat could not be encoded");
                    None
                }
            };
            (agent, reply)
        }));
    }

    /// Does what the answer to a heartbeat says.
    fn follow(&mut self, agent: AgentId, reply: Option<HeartbeatReply>) {
        let current = self.accepted.as_ref().map(|a| a.agent);
        if current != Some(agent) || self.draining.is_some() {
            return;
        }
        match reply {
            None => {
                tracing::debug!(agent = %self.name, "a heartbeat got no answer")
            }
            Some(HeartbeatReply::Continue) => {}
            Some(HeartbeatReply::Drain { reason }) => {
                tracing::info!(agent = %self.name, %reason, "the coordinator drains the agent");
                self.start_draining(Draining::Directed);
            }
            Some(HeartbeatReply::Announce) => {
                tracing::info!(agent = %self.name, "unknown to the coordinator; announcing again");
                self.accepted = None;
                self.pulling = None;
                self.opening = None;
                let _ = self.status.send(Status::Announcing);
                self.announcing =
                    Some(Box::pin(announce(self.link.clone(), self.announce.clone())));
            }
        }
    }

    /// Starts an attempt, or answers a repeated delivery of one.
    fn take(&mut self, message: jetstream::Message) {
        let Some(reply) = message.message.reply.clone() else {
            tracing::warn!(agent = %self.name, "an attempt came without a reply subject; dropped");
            return;
        };
        let attempt = match remote::decode::<Attempt>(&message.message.payload) {
            Ok(attempt) => attempt,
            Err(err) => {
                // It will never read: redelivering it would only come back here.
                tracing::warn!(agent = %self.name, %err, "an attempt was not readable; terminated");
                let link = self.link.clone();
                self.tasks.spawn(async move {
                    attempt::acknowledge(&link.client, &reply, jetstream::AckKind::Term).await;
                    attempt::Ended {
                        key: String::new(),
                        result: None,
                    }
                });
                return;
            }
        };
        let key = attempt.idempotency_key.clone();
        if let Some(deliveries) = self.running.get(&key) {
            tracing::debug!(agent = %self.name, %key, "a running attempt delivered again");
            deliveries.send_modify(|all| {
                if all.len() >= DELIVERIES_MAX {
                    all.remove(0);
                }
                all.push(reply);
            });
            return;
        }
        let lease = self
            .accepted
            .as_ref()
            .map_or(Duration::from_secs(30), |a| a.lease);
        if let Some(result) = self.kept.get(&key) {
            tracing::debug!(agent = %self.name, %key, "a finished attempt delivered again");
            let link = self.link.clone();
            let (deliveries, receiver) = watch::channel(vec![reply]);
            self.running.insert(key.clone(), deliveries);
            self.tasks.spawn(attempt::republish(
                attempt::Env { link, lease },
                attempt,
                receiver,
                result,
            ));
            return;
        }
        let (deliveries, receiver) = watch::channel(vec![reply]);
        self.running.insert(key, deliveries);
        let env = attempt::Env {
            link: self.link.clone(),
            lease,
        };
        self.tasks
            .spawn(attempt::run(env, attempt, self.agent.clone(), receiver));
    }

    async fn leave(&mut self, mode: LeaveMode, reason: &str) {
        let Some(accepted) = &self.accepted else {
            return;
        };
        let leave = Leave {
            agent: accepted.agent,
            session: self.link.session.clone(),
            mode,
            reason: Some(reason.to_owned()),
        };
        match remote::encode(&leave) {
            Ok(bytes) => {
                if let Err(err) = self
                    .link
                    .client
                    .publish(self.link.subjects.leave(), bytes.into())
                    .await
                {
                    tracing::warn!(agent = %self.name, %err, "the leave was not sent");
                }
                let _ = tokio::time::timeout(REQUEST_TIMEOUT_MAX, self.link.client.flush()).await;
            }
            Err(err) => tracing::error!(%err, "a leave could not be encoded"),
        }
    }
}

/// Announces until the coordinator answers: a coordinator that is not there yet (no
/// responders, no answer in time, no connection) is waited for with a growing backoff.
async fn announce(link: Arc<Link>, bytes: Bytes) -> Answer {
    let mut failures = 0_u32;
    loop {
        match request(
            &link.client,
            link.subjects.announce(),
            bytes.clone(),
            REQUEST_TIMEOUT_MAX,
        )
        .await
        {
            Ok(answer) => match remote::decode::<AnnounceReply>(&answer) {
                Ok(AnnounceReply::Accepted {
                    agent,
                    protocol_version,
                    heartbeat_interval_ms,
                    lease_ms,
                    attempts_consumer,
                    ..
                }) => {
                    // The coordinator checked the worker's version; this checks the coordinator's.
                    if PROTOCOL_VERSION.accepts(protocol_version).is_err() {
                        return Answer::Refused(format!(
                            "the coordinator speaks protocol {protocol_version} and this worker \
                             speaks protocol {PROTOCOL_VERSION}: their major versions differ, so \
                             they would misread each other; run a worker made for protocol {}.x",
                            protocol_version.major
                        ));
                    }
                    return Answer::Accepted(Accepted {
                        agent,
                        heartbeat_interval: Duration::from_millis(heartbeat_interval_ms),
                        lease: Duration::from_millis(lease_ms),
                        consumer: attempts_consumer,
                    });
                }
                Ok(AnnounceReply::Refused { message, .. }) => return Answer::Refused(message),
                Err(err) => tracing::warn!(%err, "the answer to an announcement was not readable"),
            },
            Err(kind) => {
                tracing::info!(reason = %kind, "waiting for the coordinator to answer");
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// A request's answer, or why there is none.
async fn request(
    client: &Client,
    subject: String,
    payload: Bytes,
    timeout: Duration,
) -> Result<Bytes, RequestErrorKind> {
    let request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(timeout));
    match client.send_request(subject, request).await {
        Ok(message) => Ok(message.payload),
        Err(err) => Err(err.kind()),
    }
}

/// Opens the agent's consumer after `wait`.
async fn open(link: Arc<Link>, consumer: String, wait: Duration) -> Result<PullStream, String> {
    tokio::time::sleep(wait).await;
    let consumer: consumer::PullConsumer = link
        .js
        .get_consumer_from_stream(&consumer, link.subjects.attempts_stream())
        .await
        .map_err(|e| format!("the consumer `{consumer}`: {e}"))?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// Awaits the future in `slot`, or never when there is none.
async fn maybe<T>(slot: &mut Option<BoxFuture<T>>) -> T {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The next message of the stream in `slot`, or never when there is none.
async fn next(
    slot: &mut Option<PullStream>,
) -> Option<Result<jetstream::Message, consumer::pull::MessagesError>> {
    match slot {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
