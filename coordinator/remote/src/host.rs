//! The coordinator's side of the remote-agent protocol: remote agents become agents of the
//! swarm.
//!
//! An accepted announcement registers the agent in the swarm's registry like a local one
//! (`Swarm::register_agent`), with a [`RemoteAgent`] plug-in. The scheduler allocates to it by
//! capability, least loaded and healthy first, never past its `max_concurrency`, and its
//! agent actor runs each attempt as for any agent: the plug-in's `run` publishes the attempt
//! to the agent's JetStream subject and waits for its result. So the actor's rules hold
//! unchanged: the idle timeout from the attempt's progress (each `progress` is a heartbeat of
//! the attempt's `TaskContext`), the hard timeout from the start, the partial output kept.
//!
//! What is remote-specific:
//! - **Lease**: an attempt whose worker sends no progress for `lease` ends as a `timeout`
//!   failure ("lease lost") and runs again under its retry policy; its message is deleted from
//!   the attempts stream so it is not delivered again. While the coordinator's own link to NATS
//!   is down no lease is lost, and when it comes back every lease starts afresh.
//! - **Heartbeats**: an agent whose worker misses `missed_heartbeats` in a row is removed from
//!   the registry (`Swarm::deregister_agent`), which re-queues what it ran at once, as for a
//!   local agent that crashed; its worker is told to announce again. A new session under the
//!   same name (the worker restarted) replaces the old agent at once.
//! - **Fencing**: a result counts only if its attempt is waited for, by the agent it was sent
//!   to; the scheduler then checks that the attempt is still the task's current one. Any other
//!   result (after a lost lease, a timeout, a cancel, a restart of the coordinator) is
//!   acknowledged, counted and recorded as fenced; it never commits.
//! - **Restart**: attempts in the stream belong to the previous run of the coordinator, whose
//!   recovery re-queued them as lost, so the stream is purged and the old consumers deleted at
//!   start; the results stream's durable consumer survives, and old results are fenced.
//! - **NATS down**: remote agents are marked down (work goes to local agents, or waits);
//!   an attempt that cannot be published is declined, which re-queues it without charging it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use dashmap::DashMap;
use futures::StreamExt;
use swarm_agents::{Agent, AgentFactory, HealthFeed, HealthReport, TaskContext};
use swarm_coordinator::config::NatsSection;
use swarm_coordinator::{Registration, Swarm};
use swarm_protocol::remote::{
    self, Announce, AnnounceReply, Attempt, AttemptResult, Heartbeat, HeartbeatReply, Leave,
    LeaveMode, PROTOCOL_VERSION, Progress,
};
use swarm_protocol::{
    AgentId, AgentStatus, FailureKind, Health, RemoteAgentStatus, Task, TaskId, TaskOutcome,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Error, Subjects};

mod membership;
mod plugin;
use membership::*;
use plugin::RemoteAgent;

/// How the coordinator treats remote agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOptions {
    /// How often a worker heartbeats each agent (told to it in the announcement's answer).
    pub heartbeat_interval: Duration,
    /// How long an attempt lasts without progress (JetStream's `AckWait`).
    pub lease: Duration,
    /// Heartbeats missed in a row after which an agent is removed.
    pub missed_heartbeats: u32,
    /// How long a remote agent that leaves with `drain` may finish what it runs.
    pub drain_grace: Duration,
    /// Losses of one agent name (its worker missed heartbeats, or restarted without leaving)
    /// allowed within `loss_window`; one more and its announcements are refused until the
    /// window has passed, as a local agent past its restart budget stays down.
    pub max_losses: u32,
    /// The window losses are counted in.
    pub loss_window: Duration,
}

impl HostOptions {
    /// The options `[nats]` sets.
    pub fn from_config(config: &NatsSection) -> Self {
        Self {
            heartbeat_interval: config.heartbeat_interval,
            lease: config.lease,
            missed_heartbeats: 3,
            drain_grace: Duration::from_secs(60),
            max_losses: 3,
            loss_window: Duration::from_secs(60),
        }
    }
}

/// What the coordinator's side of NATS is doing, for `/readyz`, the agents page and
/// `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// The coordinator's connection to NATS is up.
    pub connected: bool,
    /// Remote agents in the registry now.
    pub agents: u64,
    /// Times the connection came back after it was lost.
    pub reconnects: u64,
    /// Agents removed because their worker missed heartbeats.
    pub heartbeats_missed: u64,
    /// Results dropped because their attempt was no longer current.
    pub fenced: u64,
    /// Attempts whose lease ran out.
    pub leases_lost: u64,
    /// Attempts published to workers.
    pub attempts: u64,
}

/// The coordinator's end of NATS: answers workers and forwards attempts and results. Stop it
/// with [`Host::stop`] before the swarm shuts down.
pub struct Host {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the agents' plug-ins share with the host: no reference to the swarm (the swarm holds
/// the plug-ins).
struct Link {
    js: jetstream::Context,
    subjects: Subjects,
    options: HostOptions,
    /// The attempts published and not yet answered, by task and attempt number.
    waiting: DashMap<(TaskId, u32), Waiter>,
    connected: AtomicBool,
    /// Milliseconds after `epoch` at which the connection last came back: no lease or heartbeat
    /// counts as missed before it.
    fresh_since_ms: AtomicU64,
    epoch: Instant,
    counters: Counters,
    /// Told how long each attempt took to start, when someone asked ([`Host::start_with`]).
    on_started: Option<StartedHook>,
}

/// Called once for each attempt the coordinator hears of from its worker, with the time from
/// its task becoming ready (`TaskContext::ready_at`) to the coordinator receiving the
/// attempt's first progress or its result, whichever came first: allocation to start, as the
/// coordinator sees it. It runs on the host's loop that reads progress or results, so it must
/// be quick.
pub type StartedHook = Arc<dyn Fn(Duration) + Send + Sync>;

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    heartbeats_missed: AtomicU64,
    fenced: AtomicU64,
    leases_lost: AtomicU64,
    attempts: AtomicU64,
}

impl Link {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn fresh_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.fresh_since_ms.load(Ordering::Relaxed))
    }

    /// Tells the hook, if any, that `waiter`'s attempt has started, the first time only.
    fn note_started(&self, waiter: &mut Waiter) {
        if let Some(hook) = &self.on_started
            && !waiter.started
        {
            waiter.started = true;
            hook(waiter.ctx.ready_at().elapsed());
        }
    }
}

struct Shared {
    link: Arc<Link>,
    /// Not a strong reference: the server takes the swarm back (to drain and shut it down)
    /// while the host still carries the results of attempts that finish meanwhile.
    swarm: Weak<Swarm>,
    client: Client,
    /// The remote agents in the registry, by id.
    agents: DashMap<AgentId, Remote>,
    /// When each agent name was lost lately (at most `max_losses + 1` instants a name; names
    /// without a loss in the window are dropped by the heartbeat watch).
    losses: DashMap<String, VecDeque<Instant>>,
    /// The coordinator is stopping (see [`Host::coordinator_stopping`]).
    stopping: AtomicBool,
}

/// One remote agent.
struct Remote {
    name: String,
    session: String,
    /// Milliseconds after the link's epoch of its latest heartbeat.
    last_heartbeat_ms: Arc<AtomicU64>,
    health: watch::Sender<HealthReport>,
}

/// An attempt published and waited for.
struct Waiter {
    agent: AgentId,
    ctx: TaskContext,
    /// Bytes of streamed text folded into the partial output so far.
    text_len: u64,
    /// A progress or the result has been heard of (kept only for the [`StartedHook`]).
    started: bool,
    result: Option<oneshot::Sender<AttemptResult>>,
}

impl Host {
    /// Connects the swarm to NATS as `config` says: creates the streams, clears what a
    /// previous run left in them, and starts answering workers.
    pub async fn start(swarm: &Arc<Swarm>, config: &NatsSection) -> Result<Self, Error> {
        Self::start_with(swarm, config, None).await
    }

    /// [`Host::start`], and `on_started` is told how long each attempt took to start (see
    /// [`StartedHook`]; `swarm bench --remote-workers` measures with it).
    pub async fn start_with(
        swarm: &Arc<Swarm>,
        config: &NatsSection,
        on_started: Option<StartedHook>,
    ) -> Result<Self, Error> {
        let connected = Arc::new(AtomicBool::new(false));
        let reconnected = Arc::new(tokio::sync::Notify::new());
        let options = {
            let connected = connected.clone();
            let reconnected = reconnected.clone();
            crate::options(config, "swarm coordinator")
                .await?
                .event_callback(move |event| {
                    let connected = connected.clone();
                    let reconnected = reconnected.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                connected.store(true, Ordering::SeqCst);
                                reconnected.notify_one();
                            }
                            async_nats::Event::Disconnected => {
                                connected.store(false, Ordering::SeqCst);
                                tracing::warn!(
                                    "the connection to NATS is lost; remote agents wait"
                                );
                            }
                            other => tracing::debug!(%other, "NATS"),
                        }
                    }
                })
        };
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| Error::Connect {
                url: crate::redact(&config.url),
                message: e.to_string(),
            })?;
        Self::with_client(swarm, client, config, connected, reconnected, on_started).await
    }

    async fn with_client(
        swarm: &Arc<Swarm>,
        client: Client,
        config: &NatsSection,
        connected: Arc<AtomicBool>,
        reconnected: Arc<tokio::sync::Notify>,
        on_started: Option<StartedHook>,
    ) -> Result<Self, Error> {
        let subjects = Subjects::new(&config.prefix);
        let js = jetstream::new(client.clone());
        let options = HostOptions::from_config(config);
        let (attempts, results) = streams(&js, &subjects).await?;
        // What the previous run left: its attempts were recovered as lost (and run again with
        // new numbers), so none is delivered now; its agents announce again.
        attempts
            .purge()
            .await
            .map_err(|e| Error::JetStream(format!("purging the attempts stream: {e}")))?;
        let mut names = attempts.consumer_names();
        let mut old = Vec::new();
        while let Some(name) = names.next().await {
            old.push(name.map_err(|e| Error::JetStream(e.to_string()))?);
        }
        for name in old {
            let _ = attempts.delete_consumer(&name).await;
        }
        let results_consumer = results_consumer(&results, &subjects).await?;
        connected.store(
            client.connection_state() == async_nats::connection::State::Connected,
            Ordering::SeqCst,
        );
        let link = Arc::new(Link {
            js,
            subjects: subjects.clone(),
            options,
            waiting: DashMap::new(),
            connected: AtomicBool::new(true),
            fresh_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            counters: Counters::default(),
            on_started,
        });
        let shared = Arc::new(Shared {
            link,
            swarm: Arc::downgrade(swarm),
            client: client.clone(),
            agents: DashMap::new(),
            losses: DashMap::new(),
            stopping: AtomicBool::new(false),
        });
        let announce = client
            .subscribe(subjects.announce())
            .await
            .map_err(|e| Error::JetStream(e.to_string()))?;
        let heartbeat = client
            .subscribe(subjects.heartbeat())
            .await
            .map_err(|e| Error::JetStream(e.to_string()))?;
        let leave = client
            .subscribe(subjects.leave())
            .await
            .map_err(|e| Error::JetStream(e.to_string()))?;
        let progress = client
            .subscribe(subjects.all_progress())
            .await
            .map_err(|e| Error::JetStream(e.to_string()))?;
        let tasks = vec![
            tokio::spawn(answer_announcements(shared.clone(), announce)),
            tokio::spawn(answer_heartbeats(shared.clone(), heartbeat)),
            tokio::spawn(take_leaves(shared.clone(), leave)),
            tokio::spawn(take_progress(shared.link.clone(), progress)),
            tokio::spawn(take_results(shared.clone(), results_consumer)),
            tokio::spawn(watch_heartbeats(shared.clone())),
            tokio::spawn(follow_connection(shared.clone(), connected, reconnected)),
        ];
        Ok(Self { shared, tasks })
    }

    /// The subjects in use.
    pub fn subjects(&self) -> &Subjects {
        &self.shared.link.subjects
    }

    /// What the host is doing.
    pub fn status(&self) -> HostStatus {
        self.shared.status()
    }

    /// Says that the coordinator itself is stopping: from now on the agents it drains are not
    /// told to drain (that would end their workers), only given no new work, so that their
    /// workers stay and announce them to the next coordinator. Call it before `Swarm::drain`.
    pub fn coordinator_stopping(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops answering workers. Remote agents stay registered until the swarm shuts down; their
    /// workers are told to announce again by the next coordinator. Stop the host after the
    /// swarm's drain, so that results of remote attempts still reach it.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.shared.client.flush().await;
    }
}

/// A handle on the host's status that outlives borrowing the host (for the server).
#[derive(Clone)]
pub struct HostProbe(Arc<Shared>);

impl Host {
    /// A cheap handle that reports [`Host::status`].
    pub fn probe(&self) -> HostProbe {
        HostProbe(self.shared.clone())
    }
}

impl HostProbe {
    /// See [`Host::status`].
    pub fn status(&self) -> HostStatus {
        self.0.status()
    }
}

impl Shared {
    fn status(&self) -> HostStatus {
        let c = &self.link.counters;
        HostStatus {
            connected: self.link.connected.load(Ordering::Relaxed),
            agents: self.agents.len() as u64,
            reconnects: c.reconnects.load(Ordering::Relaxed),
            heartbeats_missed: c.heartbeats_missed.load(Ordering::Relaxed),
            fenced: c.fenced.load(Ordering::Relaxed),
            leases_lost: c.leases_lost.load(Ordering::Relaxed),
            attempts: c.attempts.load(Ordering::Relaxed),
        }
    }
}

/// Creates the two streams, or finds them.
async fn streams(
    js: &jetstream::Context,
    subjects: &Subjects,
) -> Result<(stream::Stream, stream::Stream), Error> {
    let bounded = |name: String, subject: String| stream::Config {
        name,
        subjects: vec![subject],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_message_size: i32::try_from(remote::MESSAGE_BYTES_MAX).unwrap_or(i32::MAX),
        max_messages: 1_000_000,
        max_bytes: 1 << 30,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let attempts = js
        .get_or_create_stream(bounded(subjects.attempts_stream(), subjects.all_attempts()))
        .await
        .map_err(|e| Error::JetStream(format!("the attempts stream: {e}")))?;
    let results = js
        .get_or_create_stream(bounded(subjects.results_stream(), subjects.results()))
        .await
        .map_err(|e| Error::JetStream(format!("the results stream: {e}")))?;
    Ok((attempts, results))
}

/// The coordinator's durable consumer of results, found or made.
async fn results_consumer(
    results: &stream::Stream,
    subjects: &Subjects,
) -> Result<consumer::PullConsumer, Error> {
    results
        .get_or_create_consumer(
            &subjects.results_consumer(),
            consumer::pull::Config {
                durable_name: Some(subjects.results_consumer()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::JetStream(format!("the results consumer: {e}")))
}

fn reply_to(message: &async_nats::Message) -> Option<async_nats::Subject> {
    message.reply.clone()
}

async fn answer<M: remote::Message>(client: &Client, to: Option<async_nats::Subject>, answer: &M) {
    let (Some(to), Ok(bytes)) = (to, remote::encode(answer)) else {
        return;
    };
    if let Err(err) = client.publish(to, bytes.into()).await {
        tracing::debug!(%err, "an answer to a worker was not sent");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Folds each progress into its attempt's context: a heartbeat, and the partial output.
async fn take_progress(link: Arc<Link>, mut messages: async_nats::Subscriber) {
    while let Some(message) = messages.next().await {
        let Ok(progress) = remote::decode::<Progress>(&message.payload) else {
            continue;
        };
        let key = (progress.attempt.task, progress.attempt.number);
        let Some(mut waiter) = link.waiting.get_mut(&key) else {
            // Not current: dropped without a record (REMOTE.md, "Fencing").
            continue;
        };
        if waiter.agent != progress.agent {
            continue;
        }
        link.note_started(&mut waiter);
        if let Some(output) = &progress.partial_output {
            waiter.text_len = match output {
                serde_json::Value::String(s) => s.len() as u64,
                _ => 0,
            };
            waiter.ctx.set_partial(output.clone());
        } else if let Some(text) = &progress.text {
            if text.offset == 0 {
                waiter
                    .ctx
                    .set_partial(serde_json::Value::String(text.delta.clone()));
                waiter.text_len = text.delta.len() as u64;
            } else if text.offset == waiter.text_len {
                waiter.ctx.append_text(&text.delta);
                waiter.text_len += text.delta.len() as u64;
            } else {
                waiter.ctx.heartbeat();
            }
        } else {
            waiter.ctx.heartbeat();
        }
    }
}

/// Hands each result to the attempt waiting for it, or fences it.
async fn take_results(shared: Arc<Shared>, first: consumer::PullConsumer) {
    let mut consumer = Some(first);
    loop {
        let current = match consumer.take() {
            Some(current) => current,
            // After a failure: the stream or the consumer may be gone (a server that came back
            // without its store), so both are found or made again.
            None => {
                let link = &shared.link;
                let made = match streams(&link.js, &link.subjects).await {
                    Ok((_, results)) => results_consumer(&results, &link.subjects).await,
                    Err(err) => Err(err),
                };
                match made {
                    Ok(made) => made,
                    Err(err) => {
                        tracing::debug!(%err, "reading results; trying again");
                        tokio::time::sleep(link.options.heartbeat_interval).await;
                        continue;
                    }
                }
            }
        };
        let mut messages = match current.messages().await {
            Ok(messages) => messages,
            Err(err) => {
                tracing::debug!(%err, "reading results; trying again");
                tokio::time::sleep(shared.link.options.heartbeat_interval).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let Ok(message) = message else {
                break;
            };
            match remote::decode::<AttemptResult>(&message.payload) {
                Ok(result) => deliver(&shared, result).await,
                Err(err) => tracing::warn!(%err, "a result was not readable; dropped"),
            }
            if let Err(err) = message.ack().await {
                tracing::debug!(%err, "a result's acknowledgement was not sent");
            }
        }
    }
}

async fn deliver(shared: &Arc<Shared>, result: AttemptResult) {
    let key = (result.attempt.task, result.attempt.number);
    let waiter = shared
        .link
        .waiting
        .get_mut(&key)
        .filter(|w| w.agent == result.agent)
        .and_then(|mut w| {
            shared.link.note_started(&mut w);
            w.result.take()
        });
    match waiter {
        Some(tx) => {
            if let Err(result) = tx.send(result) {
                fence(shared, &result).await;
            }
        }
        None => fence(shared, &result).await,
    }
}

/// A result no attempt waits for: counted, and recorded in the objective's chain of work
/// (`ResultFenced`), never committed.
async fn fence(shared: &Arc<Shared>, result: &AttemptResult) {
    shared.link.counters.fenced.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        task = %result.attempt.task,
        attempt = result.attempt.number,
        agent = %result.agent,
        "a result of an attempt that is no longer current was fenced"
    );
    let swarm = shared.swarm.clone();
    let fenced = result.fenced();
    // Apart from the results loop: the attempt may still look current to the scheduler for a
    // moment (its runner gave up on a lost lease or a timeout, and that report is on its way),
    // so the record is tried again a few times, shortly after.
    tokio::spawn(async move {
        for wait_ms in [0, 20, 100, 500] {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            let Some(swarm) = swarm.upgrade() else {
                return;
            };
            match swarm.record_fenced(fenced).await {
                Err(swarm_coordinator::Error::Scheduler(
                    swarm_protocol::SchedulerError::AttemptCurrent { .. },
                )) => {}
                Ok(()) => return,
                Err(err) => {
                    tracing::debug!(%err, "a fenced result was not recorded");
                    return;
                }
            }
        }
    });
}

/// Removes agents whose worker stopped heartbeating; marks every remote agent down while the
/// coordinator's own link is down.
async fn watch_heartbeats(shared: Arc<Shared>) {
    let link = &shared.link;
    let interval = link.options.heartbeat_interval;
    let allowed = interval * link.options.missed_heartbeats.max(1);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !link.connected.load(Ordering::Relaxed) {
            for remote in shared.agents.iter() {
                remote.health.send_if_modified(|now| {
                    let down = now.health != Health::Down;
                    *now = HealthReport {
                        health: Health::Down,
                        reason: "the coordinator's connection to NATS is down".into(),
                    };
                    down
                });
            }
            continue;
        }
        let fresh = link.fresh_since_ms.load(Ordering::Relaxed);
        let now = link.now_ms();
        let silent: Vec<AgentId> = shared
            .agents
            .iter()
            .filter(|r| {
                let last = r.last_heartbeat_ms.load(Ordering::Relaxed).max(fresh);
                now.saturating_sub(last) > millis(allowed)
            })
            .map(|r| *r.key())
            .collect();
        for id in silent {
            link.counters
                .heartbeats_missed
                .fetch_add(1, Ordering::Relaxed);
            lose(
                &shared,
                id,
                &format!(
                    "its worker missed {} heartbeats",
                    link.options.missed_heartbeats
                ),
            )
            .await;
        }
        let window = link.options.loss_window;
        shared.losses.retain(|_, times| {
            times.retain(|t| t.elapsed() < window);
            !times.is_empty()
        });
    }
}

/// Follows the coordinator's own connection: when it comes back, leases and heartbeats start
/// afresh.
async fn follow_connection(
    shared: Arc<Shared>,
    connected: Arc<AtomicBool>,
    reconnected: Arc<tokio::sync::Notify>,
) {
    let link = &shared.link;
    let mut was = connected.load(Ordering::SeqCst);
    loop {
        let now = connected.load(Ordering::SeqCst);
        if now && !was {
            link.fresh_since_ms.store(link.now_ms(), Ordering::Relaxed);
            link.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("the connection to NATS is back");
            // A server that came back without its store (a new one) has no streams.
            if let Err(err) = streams(&link.js, &link.subjects).await {
                tracing::warn!(%err, "the streams could not be made again after a reconnection");
            }
        }
        link.connected.store(now, Ordering::Relaxed);
        was = now;
        tokio::select! {
            () = reconnected.notified() => {}
            () = tokio::time::sleep(link.options.heartbeat_interval) => {}
        }
    }
}
