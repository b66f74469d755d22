//! Remote agents over NATS JetStream (`protocol/REMOTE.md` is the protocol).
//!
//! - [`Subjects`]: every subject, stream and consumer name, from the configured prefix.
//! - [`connect`]: a NATS connection from `[nats]` (`NatsSection`), credentials read from
//!   the environment or files and never logged.
//! - [`host`] (the coordinator's side): answers announcements and heartbeats, registers each
//!   remote agent in the swarm's registry as an agent whose plug-in forwards attempts over
//!   JetStream, and fences late results.
//! - [`worker`] (the worker's side, `swarm worker`): hosts agents in another process.

use std::time::Duration;

pub mod host;
pub use host::{Host, HostOptions, HostProbe, HostStatus, StartedHook};
pub mod worker;
pub use worker::{HostedAgent, Worker, WorkerOptions};

use async_nats::ConnectOptions;
use swarm_coordinator::config::NatsSection;
use swarm_protocol::AgentId;

/// Why a NATS connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not usable (the message names the field).
    #[error("{0}")]
    Config(String),
    /// A secret could not be read (the message names the variable or the file, never the value).
    #[error("{0}")]
    Secret(String),
    /// NATS refused or dropped the connection.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The address (without credentials).
        url: String,
        /// Why.
        message: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// The coordinator refused a hosted agent's announcement.
    #[error("the coordinator refused the agent `{agent}`: {message}")]
    Refused {
        /// The agent's name.
        agent: String,
        /// The coordinator's message (it names both versions when they differ).
        message: String,
    },
}

/// The names a swarm uses on NATS, all under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    streams: String,
}

impl Subjects {
    /// The names under `prefix` (checked by `NatsSection::check`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            streams: prefix.to_ascii_uppercase().replace('-', "_"),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Announcements (request/reply).
    pub fn announce(&self) -> String {
        format!("{}.agents.announce", self.prefix)
    }

    /// Heartbeats (request/reply).
    pub fn heartbeat(&self) -> String {
        format!("{}.agents.heartbeat", self.prefix)
    }

    /// Leaving.
    pub fn leave(&self) -> String {
        format!("{}.agents.leave", self.prefix)
    }

    /// The attempts of one agent (JetStream).
    pub fn attempts(&self, agent: AgentId) -> String {
        format!("{}.attempts.{agent}", self.prefix)
    }

    /// Every agent's attempts: the attempts stream's subjects.
    pub fn all_attempts(&self) -> String {
        format!("{}.attempts.>", self.prefix)
    }

    /// The progress of one attempt (core NATS).
    pub fn progress(&self, task: swarm_protocol::TaskId, number: u32) -> String {
        format!("{}.progress.{task}.{number}", self.prefix)
    }

    /// Every attempt's progress.
    pub fn all_progress(&self) -> String {
        format!("{}.progress.>", self.prefix)
    }

    /// Results (JetStream).
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// The stream of attempts (work-queue retention).
    pub fn attempts_stream(&self) -> String {
        format!("{}_ATTEMPTS", self.streams)
    }

    /// The stream of results.
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.streams)
    }

    /// The durable consumer one agent's worker pulls its attempts from.
    pub fn attempts_consumer(&self, agent: AgentId) -> String {
        format!("agent-{agent}")
    }

    /// The coordinator's durable consumer of results.
    pub fn results_consumer(&self) -> String {
        "coordinator".to_owned()
    }
}

/// The connection options `[nats]` asks for: credentials read now from their variable or
/// file, TLS, a client name, and reconnection without end (a link that comes back is used
/// again; what waits for it waits).
pub async fn options(config: &NatsSection, name: &str) -> Result<ConnectOptions, Error> {
    config.check().map_err(Error::Config)?;
    let secret = |env: &Option<String>, file: &Option<std::path::PathBuf>, what: &str| {
        read_secret(env.as_deref(), file.as_deref(), what)
    };
    let mut options = ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)));
    if let Some(token) = secret(&config.token_env, &config.token_file, "nats token")? {
        options = options.token(token);
    }
    if let Some(user) = &config.user {
        let password = secret(&config.password_env, &config.password_file, "nats password")?
            .unwrap_or_default();
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(creds) = &config.creds_file {
        options = ConnectOptions::with_credentials_file(creds.clone())
            .await
            .map_err(|e| {
                Error::Secret(format!(
                    "nats.creds_file: cannot read {}: {e}",
                    creds.display()
                ))
            })?
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None);
    }
    if let Some(file) = &config.nkey_seed_file {
        let seed = read_secret(None, Some(file), "nats NKey seed")?.unwrap_or_default();
        options = options.nkey(seed);
    }
    if config.tls_required || config.url.contains("tls://") {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// A secret from the variable `env` or the file `file` (trimmed); errors name where it was
/// looked for, never what was found.
fn read_secret(
    env: Option<&str>,
    file: Option<&std::path::Path>,
    what: &str,
) -> Result<Option<String>, Error> {
    if let Some(name) = env {
        return match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
            _ => Err(Error::Secret(format!(
                "the {what} variable {name} is not set or empty"
            ))),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
            Ok(_) => Err(Error::Secret(format!(
                "the {what} file {} is empty",
                path.display()
            ))),
            Err(e) => Err(Error::Secret(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))),
        };
    }
    Ok(None)
}

/// Connects as `[nats]` says. With `retry_on_initial_connect`, a server that is not up yet is
/// waited for in the background; this returns at once.
pub async fn connect(config: &NatsSection, name: &str) -> Result<async_nats::Client, Error> {
    let options = options(config, name).await?;
    options
        .connect(config.url.as_str())
        .await
        .map_err(|e| Error::Connect {
            url: redact(&config.url),
            message: e.to_string(),
        })
}

/// `url` without a `user:password@` part.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &one[..scheme], &one[at + 1..])
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = Subjects::new("swarm-eu");
        assert_eq!(s.announce(), "swarm-eu.agents.announce");
        assert_eq!(s.attempts(AgentId(7)), "swarm-eu.attempts.A7");
        assert_eq!(
            s.progress(swarm_protocol::TaskId(42), 3),
            "swarm-eu.progress.T42.3"
        );
        assert_eq!(s.attempts_stream(), "SWARM_EU_ATTEMPTS");
        assert_eq!(s.results_stream(), "SWARM_EU_RESULTS");
        assert_eq!(s.attempts_consumer(AgentId(7)), "agent-A7");
    }

    #[test]
    fn credentials_never_show_in_an_address() {
        assert_eq!(
            redact("nats://alice:s3cret@host:4222,nats://h2:4222"),
            "nats://***@host:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://host:4222"), "nats://host:4222");
    }
}
