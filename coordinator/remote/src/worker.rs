//! The worker's side of the remote-agent protocol: hosts agents in a process other than the
//! coordinator's (`swarm worker`, or any program that embeds a [`Worker`]).
//!
//! Each hosted agent has one loop of its own (a tokio task, `agent_loop`) that owns everything
//! about it: it announces the agent and announces it again when told to, heartbeats it, pulls
//! attempts from the consumer the coordinator named, at most `max_concurrency` at once, and
//! runs each on a task of its own (`attempt`), which reports progress, publishes the result
//! and only then acknowledges the attempt's message, as `protocol/REMOTE.md` ("What a worker
//! does with each attempt") says. `kept` holds the recently finished results.
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

mod agent_loop;
mod attempt;
mod kept;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream;
use bytes::Bytes;
use swarm_agents::DynAgent;
use swarm_protocol::remote::{self, Announce, PROTOCOL_VERSION};
use swarm_protocol::{AgentId, Capability};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::agent_loop::AgentLoop;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
