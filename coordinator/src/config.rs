//! `swarm.toml`: the store, the model agents and the webhooks, as data.
//!
//! This module only reads and checks the file: a model agent is built from its entry by
//! [`crate::model_agents`], a hook by [`crate::triggers::hooks`].
//!
//! ```toml
//! [store]
//! data_dir = "swarm-data"
//! retention = "30d"
//!
//! [[agents]]
//! name = "fast"
//! provider = "openai"                 # or "anthropic"
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-mini"
//! api_key_env = "OPENAI_API_KEY"      # the variable's name; the key never goes in the file
//! capabilities = ["summarize", "write"]
//! description = "Summarizes and writes short texts."   # shown to the planner
//! concurrency = 8
//! rpm = 500                           # requests per minute
//! tpm = 200000                        # tokens per minute (prompt estimate + max tokens)
//! max_tokens = 1024
//! max_tokens_field = "auto"           # or "max_tokens", "max_completion_tokens" (OpenAI)
//! headers = { "x-team" = "research", "api-key" = { env = "AZURE_OPENAI_KEY" } }
//! query = { "api-version" = "2024-10-21" }
//! system_prompt = "You are terse."
//! idle_timeout = "30s"                # for tasks that set none
//! hard_timeout = "5m"
//! breaker = { consecutive_failures = 5, cool_down = "30s" }
//! fallbacks = ["gpt-4o-mini-2024-07-18"]   # agents or models, while this one is down or out of quota
//!
//! [[accounts]]                        # one API key and its limits, shared by the agents on it
//! name = "anthropic-main"
//! provider = "anthropic"
//! base_url = "https://api.anthropic.com/v1"
//! api_key_env = "ANTHROPIC_API_KEY"
//! rpm = 50
//! tpm = 40000                         # estimates corrected by the usage the provider reports
//! concurrency = 8                     # calls in flight at once, over all its agents
//!
//! [[agents]]
//! name = "writer"
//! account = "anthropic-main"          # provider, base_url and the key come from the account;
//! model = "claude-sonnet-4-5"         # rpm, tpm and breaker are the account's
//! capabilities = ["write"]
//!
//! [server]                            # the API's limits; every key optional
//! client_requests_per_second = 100
//! backlog_max = 10000
//! secure_cookies = true               # served behind TLS
//!
//! [approvals]                         # who hears of escalated reviews; every key optional
//! notify_url = "https://ops.example.com/swarm/escalations"
//! secret_env = "SWARM_NOTIFY_SECRET"  # or secret_file = "/run/secrets/notify"
//! attempts = 5                        # tries per notification, with exponential backoff
//! breaker = { consecutive_failures = 5, cool_down = "30s" }
//!
//! [prices."gpt-4o-mini"]              # US dollars per million tokens; an unpriced model's
//! input = 0.15                        # cost is unknown, never zero
//! cached_input = 0.075                # optional: input read from the provider's prompt cache
//! output = 0.6
//!
//! [limits]                            # ceilings on what clients send (these are the defaults)
//! json_depth_max = 64                 # at most 64: deeper could not be read back from the log
//! string_bytes_max = 1048576
//! array_items_max = 100000
//! max_tasks = 10000                   # an objective's `limits` may lower these, never raise them
//! max_depth = 64
//! max_fanout = 10000
//! ```
//!
//! Every duration (timeouts, `cool_down`, `window`, `tolerance`, `retention`) is at most a
//! year ([`swarm_protocol::bounds::DURATION_MAX`]).
//!
//! A file that does not parse, or a key with a wrong value, is an error naming the key and the
//! line; an API key variable that is not set is reported when the agents are built, naming the
//! variable and never a value.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarm_protocol::bounds::{JsonLimits, check_duration};
use swarm_protocol::{Limits, Price};

use crate::Error;

mod agents;
mod nats;
pub use agents::*;
pub use nats::{NatsSection, PREFIX_DEFAULT as NATS_PREFIX_DEFAULT};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The event log.
    #[serde(default)]
    pub store: StoreSection,
    /// Provider accounts the model agents share.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Model agents.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Webhooks (`POST /v1/hooks/{name}`).
    #[serde(default)]
    pub hooks: Vec<HookConfig>,
    /// The limits of `swarm serve`'s API.
    #[serde(default)]
    pub server: ServerSection,
    /// Ceilings on what clients send.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where escalated reviews are announced.
    #[serde(default)]
    pub approvals: ApprovalsSection,
    /// Model prices, by model name (`[prices."gpt-4o-mini"]`): an attempt on a model priced
    /// here carries its cost; a model not here has an unknown cost (never zero).
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// The NATS server remote agents connect through; without it, agents are local only.
    #[serde(default)]
    pub nats: Option<NatsSection>,
}

/// `[approvals]`: where the edge announces a review its deadline escalated
/// (`on_timeout = "escalate"`). Each `TaskEscalated` of the log is POSTed, as its JSON
/// record, to `notify_url`, signed like an inbound webhook (`X-Swarm-Signature: t=<unix
/// seconds>,v1=<hex HMAC-SHA256 of "<t>." and the body>`) under the secret read from the
/// variable `secret_env` or the file `secret_file` (never from this file, never logged).
/// A failed POST is tried again with exponential backoff, up to `attempts` tries, behind a
/// circuit breaker that refuses notifications at once while the receiver keeps failing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// Where notifications are POSTed (http or https); none are sent without it.
    pub notify_url: Option<String>,
    /// The environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// A file holding the signing secret (one trailing newline is ignored).
    pub secret_file: Option<PathBuf>,
    /// Tries per notification, the first included (1 to 100).
    pub attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each retry (full jitter).
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The backoff never grows past this.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long one POST may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// When the breaker in front of the receiver opens, and for how long.
    pub breaker: BreakerSection,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        Self {
            notify_url: None,
            secret_env: None,
            secret_file: None,
            attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            breaker: BreakerSection::default(),
        }
    }
}

impl ApprovalsSection {
    /// The most tries one notification may be given.
    pub const ATTEMPTS_MAX: u32 = 100;

    fn check(&self) -> Result<(), String> {
        for (field, duration) in [
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
            ("request_timeout", self.request_timeout),
            ("breaker.window", self.breaker.window),
            ("breaker.cool_down", self.breaker.cool_down),
        ] {
            check_duration(&format!("approvals.{field}"), duration).map_err(|e| e.to_string())?;
        }
        if self.attempts == 0 || self.attempts > Self::ATTEMPTS_MAX {
            return Err(format!(
                "approvals.attempts: {} is not between 1 and {}",
                self.attempts,
                Self::ATTEMPTS_MAX
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("approvals.request_timeout: must be longer than zero".into());
        }
        let Some(url) = &self.notify_url else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "approvals.notify_url: `{url}` is not an http(s) URL"
            ));
        }
        match (&self.secret_env, &self.secret_file) {
            (Some(_), Some(_)) => Err(
                "approvals.secret_env: give either `secret_env` or `secret_file`, not both".into(),
            ),
            (None, None) => Err(
                "approvals.secret_env: `notify_url` needs a signing secret, from `secret_env` \
                 or `secret_file`"
                    .into(),
            ),
            (Some(name), None) if name.is_empty() => {
                Err("approvals.secret_env: must name an environment variable".into())
            }
            _ => Ok(()),
        }
    }
}

/// `[limits]`: the server's ceilings on what clients send. JSON request bodies are checked
/// against the first three; an objective's own `limits` are lowered to the last three (a
/// client may ask for less, never for more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// The deepest a JSON value may nest, at most
    /// [`swarm_protocol::bounds::JSON_DEPTH_CEILING`].
    pub json_depth_max: u32,
    /// The longest JSON string (or object key), in bytes.
    pub string_bytes_max: usize,
    /// The most items of a JSON array, or entries of an object.
    pub array_items_max: usize,
    /// The most tasks an objective may hold.
    pub max_tasks: u32,
    /// The longest dependency chain of an objective.
    pub max_depth: u32,
    /// The most tasks depending directly on one task.
    pub max_fanout: u32,
}

impl LimitsSection {
    /// The ceilings on JSON values.
    pub fn json(&self) -> JsonLimits {
        JsonLimits {
            json_depth_max: self.json_depth_max,
            string_bytes_max: self.string_bytes_max,
            array_items_max: self.array_items_max,
        }
    }

    /// Lowers an objective's graph limits to these ceilings.
    pub fn clamp(&self, limits: &mut Limits) {
        limits.max_tasks = limits.max_tasks.min(self.max_tasks);
        limits.max_depth = limits.max_depth.min(self.max_depth);
        limits.max_fanout = limits.max_fanout.min(self.max_fanout);
    }

    fn check(&self) -> Result<(), String> {
        self.json()
            .check()
            .map_err(|e| format!("limits.{}: {}", e.field, e.message))?;
        for (key, value, ceiling) in [
            ("max_tasks", self.max_tasks, Limits::MAX_TASKS_CEILING),
            ("max_depth", self.max_depth, u32::MAX),
            ("max_fanout", self.max_fanout, u32::MAX),
        ] {
            if value == 0 || value > ceiling {
                return Err(format!(
                    "limits.{key}: {value} is not between 1 and {ceiling}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        let json = JsonLimits::default();
        let graph = Limits::default();
        Self {
            json_depth_max: json.json_depth_max,
            string_bytes_max: json.string_bytes_max,
            array_items_max: json.array_items_max,
            max_tasks: graph.max_tasks,
            max_depth: graph.max_depth,
            max_fanout: graph.max_fanout,
        }
    }
}

/// `[server]`: the limits of `swarm serve`'s API. A key left out keeps the server's default
/// (`swarm_server::limits` documents them: 100 requests per second per client with bursts of
/// 1,000; 5 failed authentications per minute per address, 5 at once; a backlog of 10,000;
/// cookies not `Secure`).
/// ```toml
/// [server]
/// client_requests_per_second = 100   # 0: no per-client quota
/// client_burst = 1000
/// auth_failures_per_minute = 5
/// auth_failure_burst = 5
/// backlog_max = 10000                # objectives running + tasks queued + events unwritten; 0: off
/// secure_cookies = true              # served behind TLS
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Requests per second one client (a token, a session, or an address without auth) may
    /// send, sustained; 0 turns the quota off.
    pub client_requests_per_second: Option<u32>,
    /// Requests one client may send at once.
    pub client_burst: Option<NonZeroU32>,
    /// Failed authentications per minute per remote address.
    pub auth_failures_per_minute: Option<NonZeroU32>,
    /// Failed authentications one address may make at once.
    pub auth_failure_burst: Option<NonZeroU32>,
    /// The backlog (objectives running plus tasks queued) at which submitting routes answer
    /// 429; 0 turns admission control off.
    pub backlog_max: Option<u64>,
    /// Mark the dashboard's session cookie `Secure` (the server is reached over HTTPS).
    pub secure_cookies: Option<bool>,
}

/// A `[[hooks]]` entry, also the body of `POST /v1/hooks` and what the log keeps of a hook
/// declared that way (`HookDeclared`: the secret only by its variable's name):
/// ```toml
/// [[hooks]]
/// name = "deploy"
/// secret_env = "DEPLOY_HOOK_SECRET"
/// tolerance = "5m"
/// template = { goal = { "$payload" = "/head_commit/message" } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The route's `{name}`: 1 to 48 characters out of `A-Z a-z 0-9 _ - .` (it is part of
    /// each delivery's idempotency key, `hook:<name>:<X-Swarm-Delivery>`).
    pub name: String,
    /// The environment variable of the coordinator's process holding the secret the sender
    /// signs with. The secret itself is never in the file, the log or an answer; it is read
    /// when the hook is declared and at every start.
    pub secret_env: String,
    /// The objective each delivery submits, with `{"$payload": "<JSON Pointer>"}` where a
    /// part of the payload goes (`""` for the whole payload).
    #[schema(value_type = Object)]
    pub template: serde_json::Value,
    /// How far a delivery's timestamp may be from the server's clock (default 5 minutes).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "5m")]
    pub tolerance: Option<std::time::Duration>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The data directory.
    pub data_dir: PathBuf,
    /// fsync every commit.
    pub fsync: bool,
    /// Prune objectives that ended longer ago than this.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("swarm-data"),
            fsync: true,
            retention: None,
        }
    }
}

impl Config {
    /// Reads and checks a file; an error names the file, and the key and the line.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let file = |message: String| Error::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        Self::parse(&text).map_err(file)
    }

    /// Parses and checks a file's text; the error names the key and the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.limits.check()?;
        self.approvals.check()?;
        if let Some(nats) = &self.nats {
            nats.check()?;
        }
        for (model, price) in &self.prices {
            price
                .check()
                .map_err(|message| format!("prices.\"{model}\": {message}"))?;
        }
        if let Some(retention) = self.store.retention {
            check_duration("store.retention", retention).map_err(|e| e.to_string())?;
        }
        for (i, hook) in self.hooks.iter().enumerate() {
            if let Some(tolerance) = hook.tolerance {
                check_duration(&format!("hooks[{i}].tolerance"), tolerance)
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, account) in self.accounts.iter().enumerate() {
            let at = format!("accounts[{i}] (`{}`)", account.name);
            account
                .check()
                .map_err(|(field, message)| format!("{at}.{field}: {message}"))?;
            if !names.insert(account.name.as_str()) {
                return Err(format!("{at}.name: another account has this name"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let at = format!("agents[{i}] (`{}`)", agent.name);
            if !names.insert(agent.name.as_str()) {
                return Err(format!("{at}.name: another agent has this name"));
            }
            agent
                .check(&self.accounts)
                .map_err(|(field, message)| format!("{at}.{field}: {message}"))?;
        }
        for (i, agent) in self.agents.iter().enumerate() {
            let at = format!("agents[{i}] (`{}`).fallbacks", agent.name);
            if let Some(own) = agent.fallbacks.iter().find(|f| **f == agent.name) {
                return Err(format!("{at}: `{own}` is the agent itself"));
            }
            // A name not of an agent before it is a model's, so a later agent is a mistake.
            if let Some(later) = agent
                .fallbacks
                .iter()
                .find(|f| self.agents[i + 1..].iter().any(|a| a.name == **f))
            {
                return Err(format!(
                    "{at}: `{later}` is declared after this agent; declare it before"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
