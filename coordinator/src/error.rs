//! The coordinator's error type: one variant per kind of failure, each naming what failed.
//!
//! This module sits below every other module of the crate and imports none of them: a part
//! with errors of its own (the triggers' `triggers::Error`) converts them into these variants
//! with `From`, so `?` works across the crate and the HTTP layer (`swarm-server`) maps one
//! type to problem answers. The variants that concern a named thing a request creates or refers
//! to (a schedule, a hook) say which kind of thing it is with a [`Subject`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use swarm_protocol::{AgentId, IdError, SchedulerError};

/// A kind of named thing that requests create, change or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A cron schedule (`/v1/schedules`).
    Schedule,
    /// A webhook (`/v1/hooks`).
    Hook,
}

impl Subject {
    /// Its name in messages and problem types: `schedule`, `hook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Hook => "hook",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can go wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The scheduler refused the request.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The registry refused the agent.
    #[error(transparent)]
    Registry(#[from] swarm_registry::Error),
    /// No agent has that id.
    #[error("agent {0} not found")]
    UnknownAgent(AgentId),
    /// An agent cannot be built from its configuration (its model spec, or its API key
    /// variable, which is named, never its value).
    #[error("agent `{agent}`: {message}")]
    InvalidAgent {
        /// The agent's name.
        agent: String,
        /// What is wrong.
        message: String,
    },
    /// An actor could not be started.
    #[error("{actor} could not start: {cause}")]
    ActorStart {
        /// The actor (`coordinator`, `triggers`, `agent A3`).
        actor: String,
        /// Why.
        cause: String,
    },
    /// An actor did not answer (it has stopped, or the call timed out), or the coordinator's
    /// task failed.
    #[error("actor error: {0}")]
    Actor(String),
    /// The event log failed (the message names the file and the cause).
    #[error("event log: {0}")]
    Store(#[from] swarm_store::StoreError),
    /// A name (a capability, a task key) is not valid.
    #[error(transparent)]
    Name(#[from] IdError),
    /// A file cannot be read, or what it holds is not valid (the message names the line or
    /// the key).
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting of `swarm.toml` is not valid.
    #[error("{field}: {message}")]
    Config {
        /// The setting, as a path into the file (`hooks[0].secret_env`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A socket could not be bound (or its address read).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving connections failed.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// Where it listened.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The request needs the durable event log, and this swarm runs without one.
    #[error("this swarm keeps no event log (start it with a data directory)")]
    NoStore,
    /// A field of a declaration is not valid (a schedule's spec, a hook's fields).
    #[error("{field}: {message}")]
    Invalid {
        /// What was declared.
        subject: Subject,
        /// The field at fault, as the request names it (`cron`, `template.goal`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing of that kind has that name.
    #[error("{subject} `{name}` not found")]
    NotFound {
        /// The kind of thing.
        subject: Subject,
        /// The name asked for.
        name: String,
    },
    /// One of that kind has that name already.
    #[error("a {subject} named `{name}` exists already; delete it first")]
    Exists {
        /// The kind of thing.
        subject: Subject,
        /// The name taken.
        name: String,
    },
    /// It is declared in `swarm.toml`, which the API does not change.
    #[error(
        "{subject} `{name}` is declared in swarm.toml; the API can neither replace nor delete \
         it (change the file and restart)"
    )]
    Configured {
        /// The kind of thing.
        subject: Subject,
        /// Its name.
        name: String,
    },
    /// The coordinator stopped because a part of it failed.
    #[error("the coordinator stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// An actor error becomes [`Error::Stopped`] with the coordinator's failure reason when it
    /// has one (an actor that does not answer because the tree stopped says why it stopped).
    pub(crate) fn explained(self, failure: Option<String>) -> Self {
        match (self, failure) {
            (Self::Actor(_), Some(reason)) => Self::Stopped(reason),
            (err, _) => err,
        }
    }
}

impl<T> From<ractor::RactorErr<T>> for Error {
    fn from(err: ractor::RactorErr<T>) -> Self {
        Self::Actor(err.to_string())
    }
}

impl<T> From<ractor::MessagingErr<T>> for Error {
    fn from(err: ractor::MessagingErr<T>) -> Self {
        Self::Actor(err.to_string())
    }
}
