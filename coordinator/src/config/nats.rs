//! `[nats]`: the NATS server remote agents reach the coordinator through (see
//! `protocol/REMOTE.md`). Data only: `swarm-remote` connects with it.
//!
//! ```toml
//! [nats]
//! url = "nats://127.0.0.1:4222"   # or several, comma-separated; tls:// for TLS
//! prefix = "swarm"                # every subject and stream name starts with it
//! token_env = "NATS_TOKEN"        # or token_file, user + password_env/password_file,
//!                                 # creds_file, nkey_seed_file
//! tls_ca_file = "/etc/nats/ca.pem"
//! heartbeat_interval = "1s"
//! lease = "10s"
//! ```
//!
//! Secrets are named by the variable or the file that holds them, never written here, and are
//! never logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use swarm_protocol::bounds::check_duration;

/// The prefix of subjects and streams when none is set.
pub const PREFIX_DEFAULT: &str = "swarm";

/// `[nats]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// The server(s): `nats://host:port`, `tls://host:port`, comma-separated for a cluster.
    pub url: String,
    /// Every subject starts with `{prefix}.`, every stream with `{PREFIX}_`: two swarms with
    /// different prefixes share one NATS server without seeing each other's work.
    pub prefix: String,
    /// The variable holding a token.
    pub token_env: Option<String>,
    /// The file holding a token.
    pub token_file: Option<PathBuf>,
    /// A user name (with `password_env` or `password_file`).
    pub user: Option<String>,
    /// The variable holding the user's password.
    pub password_env: Option<String>,
    /// The file holding the user's password.
    pub password_file: Option<PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// Require TLS even for a `nats://` address.
    pub tls_required: bool,
    /// The certificate authority the server's certificate is checked against (PEM).
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// How often a worker heartbeats each agent it hosts; an agent that misses three in a
    /// row is marked down.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long one delivery of an attempt lasts without a sign of life (JetStream's
    /// `AckWait`): a running attempt that sends no progress for this long is lost and runs
    /// again.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            prefix: PREFIX_DEFAULT.to_owned(),
            token_env: None,
            token_file: None,
            user: None,
            password_env: None,
            password_file: None,
            creds_file: None,
            nkey_seed_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            heartbeat_interval: Duration::from_secs(1),
            lease: Duration::from_secs(10),
        }
    }
}

impl NatsSection {
    /// The section for `url` with every other setting at its default.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks what can be checked without connecting; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let bad = |field: &str, why: String| format!("nats.{field}: {why}");
        if self.url.trim().is_empty() {
            return Err(bad("url", "is empty".into()));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "prefix",
                format!(
                    "{:?} is not 1 to 32 letters, digits, '-' or '_' (it starts subject and stream names)",
                    self.prefix
                ),
            ));
        }
        let secrets = [
            self.token_env.is_some() || self.token_file.is_some(),
            self.user.is_some(),
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            return Err(bad(
                "token_env",
                "give one way to authenticate: a token, a user and password, a creds file or an NKey seed".into(),
            ));
        }
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err(bad(
                "token_file",
                "give token_env or token_file, not both".into(),
            ));
        }
        if self.user.is_some() == (self.password_env.is_none() && self.password_file.is_none()) {
            return Err(bad(
                "password_env",
                "a user needs password_env or password_file, and a password needs a user".into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(bad(
                "tls_key_file",
                "a client certificate needs its key, and a key its certificate".into(),
            ));
        }
        check_duration("nats.heartbeat_interval", self.heartbeat_interval)
            .map_err(|e| e.to_string())?;
        check_duration("nats.lease", self.lease).map_err(|e| e.to_string())?;
        if self.heartbeat_interval.is_zero() || self.lease.is_zero() {
            return Err(bad(
                "lease",
                "heartbeat_interval and lease must be more than 0".into(),
            ));
        }
        if self.lease < self.heartbeat_interval * 2 {
            return Err(bad(
                "lease",
                format!(
                    "{:?} is shorter than two heartbeat intervals ({:?})",
                    self.lease, self.heartbeat_interval
                ),
            ));
        }
        Ok(())
    }
}
