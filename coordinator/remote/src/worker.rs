//! The worker's side of the remote-agent protocol: hosts agents in a process other than the
//! coordinator's (`swarm worker`, or any program that embeds a [`Worker`]).
//!
//! Each hosted agent has one loop of its own (a tokio task) that owns everything about it: it
//! announces the agent and announces it again when told to, heartbeats it, pulls attempts
//! from the consumer the coordinator named, at most `max_concurrency` at once, and runs each
//! on a task of its own ([`attempt`]), which reports progress, publishes the result and only
//! then acknowledges the attempt's message, as `protocol/REMOTE.md` ("What a worker does with
//! each attempt") says.
//!
//! # Guarantees
//! - An attempt's message is acknowledged only after its result is stored in the results
//!   stream (the publish's acknowledgement came back); while NATS is down the result is kept
//!   and published again.
//! - A delivery of an attempt that runs (same idempotency key) does not start it again; a
//!   delivery of one that finished recently publishes its kept result again
//!   (`Nats-Msg-Id` makes the stream store it once) and acknowledges.
//! - Everything is bounded: attempts running per agent (`max_concurrency`, also while results
//!   are published), the deliveries remembered per running attempt, and the finished results
//!   kept ([`KEPT_RESULTS_MAX`], [`KEPT_BYTES_MAX`]).
//! - Draining (on [`Worker::shutdown`] with `drain`, or on the coordinator's `drain`) pulls
//!   nothing new and ends once every running attempt has reported.

mod attempt;

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    self, Announce, AnnounceReply, Attempt, Heartbeat, HeartbeatReply, Leave, LeaveMode,
    PROTOCOL_VERSION,
};
use swarm_protocol::{AgentId, Capability, Health};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::{Error, Subjects};

/// The most finished attempts whose results one agent keeps, to answer a repeated delivery.
pub const KEPT_RESULTS_MAX: usize = 1024;
/// The most bytes of finished results one agent keeps.
pub const KEPT_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long an announcement or a heartbeat waits for its answer, at most.
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// The first wait before trying again (an announcement, opening the consumer, a publish); it
/// doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before trying again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The deliveries of one running attempt remembered (to acknowledge each when it ends).
const DELIVERIES_MAX: usize = 8;

/// An agent a worker hosts: what it announces, and the plug-in that runs its attempts.
pub struct HostedAgent {
    /// Its name, unique in the swarm (printable ASCII without spaces).
    pub name: String,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// The most attempts it runs at once (1 to 4096).
    pub max_concurrency: u32,
    /// What it does, for operators.
    pub description: Option<String>,
    /// Free-form labels shown with it.
    pub labels: BTreeMap<String, String>,
    /// The plug-in: the same `Agent` implementations a coordinator runs locally.
    pub agent: Arc<dyn DynAgent>,
}

impl HostedAgent {
    /// The agent a coordinator would register with `registration` (its cost hint is not
    /// announced), run by `agent`.
    pub fn from_registration(
        registration: swarm_coordinator::Registration,
        agent: Arc<dyn DynAgent>,
    ) -> Self {
        Self {
            name: registration.name,
            capabilities: registration.capabilities,
            max_concurrency: registration.max_concurrency,
            description: registration.description,
            labels: registration.labels,
            agent,
        }
    }
}

impl std::fmt::Debug for HostedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedAgent")
            .field("name", &self.name)
            .field("capabilities", &self.capabilities)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// Who the worker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// The host name shown with its agents (printable ASCII without spaces).
    pub host: String,
    /// A new random id each time the worker process starts: the coordinator tells a restarted
    /// worker from a slow one by it.
    pub session: String,
}

impl WorkerOptions {
    /// This machine's host name (`HOSTNAME`, else `/etc/hostname`, else `localhost`) and a new
    /// random session.
    pub fn for_this_process() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| {
                h.trim()
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let host = host.chars().take(remote::HOST_BYTES_MAX).collect();
        Self {
            host,
            session: new_session(),
        }
    }
}

/// 128 random bits in hex (the standard library's per-process random hasher keys, two draws).
fn new_session() -> String {
    use std::hash::{BuildHasher, Hasher};
    let draw = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    };
    format!("{:016x}{:016x}", draw(), draw())
}

/// Where one hosted agent stands with the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Announced, no answer yet (the coordinator may not be there yet).
    Announcing,
    /// Accepted under this id.
    Accepted(AgentId),
    /// Refused, with the coordinator's message: the agent does not run.
    Refused(String),
    /// Left the swarm.
    Left,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Take nothing new, finish what runs, leave.
    Drain,
    /// Leave now; what runs is lost (and runs again elsewhere).
    Now,
}

/// Agents hosted in this process for a swarm reached through NATS. Dropping it stops every
/// agent as [`Worker::shutdown`] without `drain` does, without waiting.
#[derive(Debug)]
pub struct Worker {
    agents: Vec<Handle>,
}

#[derive(Debug)]
struct Handle {
    name: String,
    status: watch::Receiver<Status>,
    stop: watch::Sender<Option<Stop>>,
    task: JoinHandle<()>,
}

/// What every agent loop of a worker shares.
struct Link {
    client: Client,
    js: jetstream::Context,
    subjects: Subjects,
    session: String,
}

impl Worker {
    /// Starts hosting `agents`: each is announced on its own loop, and announced again until
    /// the coordinator answers (it may start later). Returns at once; [`Worker::announced`]
    /// waits for the answers. Fails if an agent's announcement would be invalid (the error
    /// names the agent and the field) or two agents share a name.
    pub async fn start(
        client: Client,
        subjects: Subjects,
        agents: Vec<HostedAgent>,
        options: WorkerOptions,
    ) -> Result<Worker, Error> {
        if agents.is_empty() {
            return Err(Error::Config("a worker needs at least one agent".into()));
        }
        let mut announcements = Vec::with_capacity(agents.len());
        for hosted in &agents {
            let announce = Announce {
                protocol_version: PROTOCOL_VERSION,
                name: hosted.name.clone(),
                session: options.session.clone(),
                capabilities: hosted.capabilities.clone(),
                max_concurrency: hosted.max_concurrency,
                description: hosted.description.clone(),
                labels: hosted.labels.clone(),
                host: options.host.clone(),
                cost_hint: None,
            };
            let bytes = remote::encode(&announce)
                .map_err(|e| Error::Config(format!("agent `{}`: {e}", hosted.name)))?;
            if announcements
                .iter()
                .any(|(a, _): &(Announce, Bytes)| a.name == hosted.name)
            {
                return Err(Error::Config(format!(
                    "two agents are named `{}`; names are unique in a swarm",
                    hosted.name
                )));
            }
            announcements.push((announce, Bytes::from(bytes)));
        }
        let link = Arc::new(Link {
            js: jetstream::new(client.clone()),
            client,
            subjects,
            session: options.session,
        });
        let handles = agents
            .into_iter()
            .zip(announcements)
            .map(|(hosted, (_, announce))| {
                let (status_tx, status) = watch::channel(Status::Announcing);
                let (stop, stop_rx) = watch::channel(None);
                let name = hosted.name.clone();
                let agent_loop = AgentLoop::new(link.clone(), hosted, announce, status_tx, stop_rx);
                Handle {
                    name,
                    status,
                    stop,
                    task: tokio::spawn(agent_loop.run()),
                }
            })
            .collect();
        Ok(Worker { agents: handles })
    }

    /// Each hosted agent's name and its id in the swarm, once accepted (`None` while it is
    /// announced, refused or gone).
    pub fn agents(&self) -> Vec<(String, Option<AgentId>)> {
        self.agents
            .iter()
            .map(|h| {
                let id = match &*h.status.borrow() {
                    Status::Accepted(id) => Some(*id),
                    _ => None,
                };
                (h.name.clone(), id)
            })
            .collect()
    }

    /// Waits until the coordinator has answered every agent's announcement; returns their ids,
    /// or the first refusal with the coordinator's message.
    pub async fn announced(&self) -> Result<Vec<(String, AgentId)>, Error> {
        let mut ids = Vec::with_capacity(self.agents.len());
        for handle in &self.agents {
            let mut status = handle.status.clone();
            let answered = status
                .wait_for(|s| *s != Status::Announcing)
                .await
                .map(|s| s.clone())
                .unwrap_or(Status::Left);
            match answered {
                Status::Accepted(id) => ids.push((handle.name.clone(), id)),
                Status::Refused(message) => {
                    return Err(Error::Refused {
                        agent: handle.name.clone(),
                        message,
                    });
                }
                Status::Announcing | Status::Left => {
                    return Err(Error::Refused {
                        agent: handle.name.clone(),
                        message: "the agent left before the coordinator answered".into(),
                    });
                }
            }
        }
        Ok(ids)
    }

    /// Resolves once no hosted agent runs any more: each was refused, or drained and left
    /// because the coordinator said so. A worker whose agents all ended has nothing to do.
    pub async fn ended(&self) {
        for handle in &self.agents {
            let mut status = handle.status.clone();
            let _ = status
                .wait_for(|s| matches!(s, Status::Refused(_) | Status::Left))
                .await;
        }
    }

    /// Stops hosting. With `drain`, each agent sends a `leave` of mode `drain` (the
    /// coordinator gives it nothing new), pulls nothing more, finishes and reports what it
    /// runs, then ends; without, each sends a `leave` of mode `now` and drops what it runs (the
    /// coordinator runs it again elsewhere). Returns when every agent's loop has ended.
    pub async fn shutdown(self, drain: bool) {
        let stop = if drain { Stop::Drain } else { Stop::Now };
        for handle in &self.agents {
            let _ = handle.stop.send(Some(stop));
        }
        for handle in self.agents {
            if let Err(err) = handle.task.await {
                tracing::error!(agent = %handle.name, %err, "a hosted agent's loop failed");
            }
        }
    }
}

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
struct AgentLoop {
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
    fn new(
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

    async fn run(mut self) {
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

/// The finished results one agent keeps, oldest dropped first.
#[derive(Default)]
struct Kept {
    order: VecDeque<String>,
    results: HashMap<String, Bytes>,
    bytes: usize,
}

impl Kept {
    fn keep(&mut self, key: String, result: Bytes) {
        if key.is_empty() || result.len() > KEPT_BYTES_MAX {
            return;
        }
        if let Some(old) = self.results.insert(key.clone(), result.clone()) {
            self.bytes -= old.len();
        } else {
            self.order.push_back(key);
        }
        self.bytes += result.len();
        while self.order.len() > KEPT_RESULTS_MAX || self.bytes > KEPT_BYTES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.results.remove(&oldest) {
                self.bytes -= old.len();
            }
        }
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.results.get(key).cloned()
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

/// The wait after `failures` failures in a row: doubling from [`BACKOFF_MIN`] to
/// [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kept_results_are_bounded_and_the_oldest_go_first() {
        let mut kept = Kept::default();
        for i in 0..KEPT_RESULTS_MAX + 10 {
            kept.keep(format!("k{i}"), Bytes::from_static(b"{}"));
        }
        assert_eq!(kept.results.len(), KEPT_RESULTS_MAX);
        assert!(kept.get("k0").is_none());
        assert!(kept.get(&format!("k{}", KEPT_RESULTS_MAX + 9)).is_some());

        let mut kept = Kept::default();
        let big = Bytes::from(vec![b' '; KEPT_BYTES_MAX / 2 + 1]);
        kept.keep("a".into(), big.clone());
        kept.keep("b".into(), big.clone());
        assert!(kept.get("a").is_none() && kept.get("b").is_some());
        assert_eq!(kept.bytes, big.len());
        kept.keep("b".into(), Bytes::from_static(b"1"));
        assert_eq!(kept.bytes, 1, "a result kept again replaces the old one");
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[test]
    fn a_session_is_random_and_a_host_is_a_token() {
        let (a, b) = (new_session(), new_session());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let options = WorkerOptions::for_this_process();
        assert!(!options.host.is_empty() && options.host.chars().all(|c| c.is_ascii_graphic()));
    }
}
