//! The CLI's error type: what goes wrong at the edge (the command line, a remote server, a
//! demo or bench run) besides what the engine reports.
//!
//! The engine's errors pass through unchanged ([`Error::Swarm`]), so a message names the same
//! cause whether the swarm runs in-process or behind a server.

use std::path::PathBuf;
use std::time::Duration;

use swarm_protocol::IdError;

/// What can go wrong in a `swarm` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The swarm itself refused or failed.
    #[error(transparent)]
    Swarm(#[from] swarm_coordinator::Error),
    /// A request to a swarm server failed, or the server refused it (the message says which,
    /// with the server's problem title and detail).
    #[error("{0}")]
    Remote(String),
    /// A name (a capability, a task key) is not valid.
    #[error(transparent)]
    Name(#[from] IdError),
    /// A file named on the command line cannot be read, or what it holds is not valid.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command-line argument is not valid.
    #[error("{flag}: {message}")]
    Argument {
        /// The flag (`--template`).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Something the command waits for did not end in time.
    #[error("{what} did not end within {} s", after.as_secs())]
    Timeout {
        /// What was waited for (`objective 0190...`).
        what: String,
        /// How long it was given.
        after: Duration,
    },
    /// A demo or bench run did not go as it must (an objective that did not succeed, a helper
    /// task that failed); the message says what.
    #[error("{0}")]
    Run(String),
}

/// The event log's errors read as the engine reports them (`event log: ...`).
impl From<swarm_store::StoreError> for Error {
    fn from(err: swarm_store::StoreError) -> Self {
        Self::Swarm(err.into())
    }
}
