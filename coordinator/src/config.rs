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
use swarm_agents::model::provider::{MaxTokensField, Provider};
use swarm_protocol::bounds::{JsonLimits, OutOfBounds, check_duration};
use swarm_protocol::{Capability, Limits, Price};

use crate::Error;

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

/// `[[agents]]`: one model agent. Also the body of `POST /v1/agents`, and what the log keeps of
/// an agent registered that way (serialized: the key only by its variable's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique name.
    pub name: String,
    /// The API it speaks (taken from its account if it names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ProviderSchema>)]
    pub provider: Option<Provider>,
    /// The API's base URL (taken from its account if it names one): OpenAI-compatible, up to
    /// the path before `/chat/completions` (`https://api.openai.com/v1`); Anthropic, with or
    /// without `/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The model.
    pub model: String,
    /// The environment variable holding the API key (none: the API takes no key, or its
    /// account names the variable).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The `[[accounts]]` entry whose quotas, breaker and concurrency it shares with the other
    /// agents on that account; its own `rpm`, `tpm` and `breaker` must then be left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// What it is good at, in a sentence: the planner's prompt lists each capability with the
    /// descriptions of the agents that offer it.
    #[serde(default)]
    pub description: Option<String>,
    /// Attempts at once.
    #[serde(default = "default_concurrency")]
    #[schema(value_type = u32, minimum = 1, default = default_concurrency)]
    pub concurrency: NonZeroU32,
    /// Requests per minute.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub rpm: Option<NonZeroU32>,
    /// Tokens per minute.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub tpm: Option<NonZeroU32>,
    /// The most tokens to generate.
    #[serde(default = "default_max_tokens")]
    #[schema(minimum = 1, default = default_max_tokens)]
    pub max_tokens: u32,
    /// Which request field carries `max_tokens` (OpenAI-compatible agents): `auto` (the
    /// default: `max_completion_tokens` for OpenAI's reasoning models, o1, o3, o4 and gpt-5,
    /// `max_tokens` for any other), `max_tokens` or `max_completion_tokens`.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schema(value_type = Option<String>, example = "max_completion_tokens")]
    pub max_tokens_field: MaxTokensField,
    /// Headers added to every request, each a value or `{ env = "VAR" }` (a secret read from
    /// the environment when the agent is built, never shown).
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// Query parameters added to every request (Azure OpenAI's `api-version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Stream answers.
    #[serde(default = "default_true")]
    #[schema(default = default_true)]
    pub stream: bool,
    /// A system prompt for every task.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Idle timeout for tasks that set none.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub idle_timeout: Option<Duration>,
    /// Hard timeout for tasks that set none.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>, example = "5m")]
    pub hard_timeout: Option<Duration>,
    /// Circuit breaker thresholds.
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Where its calls go, in order, while it cannot take them: its breaker is open (it is
    /// down) or its quota is spent or paused. Each is the name of an `[[agents]]` entry
    /// declared before it in the file (its model, on its breaker and quota) or a model name
    /// (on this agent's API and key, with a breaker like this agent's own, and its account's
    /// quota, or without an account quotas like this agent's, counted apart). The call runs in
    /// this agent's slot (a fallback agent lends its model, breaker and quota, not its
    /// concurrency). While its breaker is open and a fallback's is not, it stays in service
    /// (degraded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// `headers = { ... }` of an agent: header names and where each value comes from.
/// ```toml
/// headers = { "api-key" = { env = "AZURE_OPENAI_KEY" }, "x-team" = "research" }
/// ```
/// A value given in the file is kept as it is (in the log too, for an agent registered over
/// the API); a secret belongs in an environment variable. `Debug` shows the names and the
/// variables, never a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object, example = json!({"api-key": {"env": "AZURE_OPENAI_KEY"}}))]
pub struct Headers(pub BTreeMap<String, HeaderSource>);

impl Headers {
    /// Whether no header is added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the names, the values given in the file, and the variables' names; the error
    /// names the header, never a value.
    pub fn check(&self) -> Result<(), String> {
        let mut extras = swarm_agents::model::provider::Extras::default();
        for (name, source) in &self.0 {
            match source {
                HeaderSource::Value(value) => extras.add_header(name, value)?,
                HeaderSource::Env { env } if env.trim().is_empty() => {
                    return Err(format!("`{name}`: `env` names no variable"));
                }
                // The value is read when the agent is built; only the name is checked here.
                HeaderSource::Env { .. } => extras.add_header(name, "")?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(&self.0).finish()
    }
}

/// Shows the variable's name, never a value.
impl std::fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("<value>"),
            Self::Env { env } => write!(f, "${env}"),
        }
    }
}

/// Where a header's value comes from.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum HeaderSource {
    /// The value itself.
    Value(String),
    /// The environment variable holding it (of the coordinator's process).
    Env {
        /// The variable's name.
        env: String,
    },
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[[accounts]]`: one provider account, that is one API key and the limits the provider
/// enforces on it. Every agent that names it (`account = "..."`) shares its quotas (a 429 to
/// any of them pauses them all), its circuit breaker and its concurrency limit.
/// ```toml
/// [[accounts]]
/// name = "openai-main"
/// provider = "openai"
/// base_url = "https://api.openai.com/v1"
/// api_key_env = "OPENAI_API_KEY"
/// rpm = 500
/// tpm = 200000
/// concurrency = 16                    # calls in flight at once, over all its agents
/// breaker = { consecutive_failures = 5, cool_down = "30s" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Unique name, which agents give as their `account`.
    pub name: String,
    /// The API its agents speak.
    #[schema(value_type = ProviderSchema)]
    pub provider: Provider,
    /// The API's base URL.
    pub base_url: String,
    /// The environment variable holding the API key (none: the API takes no key).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests per minute, over all its agents.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub rpm: Option<NonZeroU32>,
    /// Tokens per minute, over all its agents (each call charged with an estimate, corrected
    /// by the usage the provider reports).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub tpm: Option<NonZeroU32>,
    /// Calls in flight at once, over all its agents (none: only each agent's own limit).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub concurrency: Option<NonZeroU32>,
    /// Circuit breaker thresholds, for the account as a whole.
    #[serde(default)]
    pub breaker: BreakerSection,
}

impl AccountConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty".into());
        }
        if !is_http_url(&self.base_url) {
            return fail(
                "base_url",
                format!("`{}` is not an http(s) URL", self.base_url),
            );
        }
        self.breaker.check()
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// `breaker = { ... }` of an agent or an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Consecutive counted failures that open it.
    pub consecutive_failures: u32,
    /// A failure fraction (0 to 1) that opens it, over `window`, once `min_calls` were made.
    pub failure_rate: Option<f64>,
    /// Calls needed in the window before the rate counts.
    pub min_calls: u32,
    /// The window of the failure rate.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, default = BreakerSection::default_window_text)]
    pub window: Duration,
    /// How long it stays open before one probe.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, default = BreakerSection::default_cool_down_text)]
    pub cool_down: Duration,
}

impl BreakerSection {
    // The schema's defaults of the durations in their wire form (humantime text): the derive
    // would serialize `Duration`'s own `{secs, nanos}`.
    fn default_window_text() -> String {
        humantime::format_duration(Self::default().window).to_string()
    }

    fn default_cool_down_text() -> String {
        humantime::format_duration(Self::default().cool_down).to_string()
    }
}

/// The schema of `provider` in the OpenAPI document: [`Provider`] lives in `swarm_agents`,
/// which knows nothing of OpenAPI. Never constructed.
pub(crate) enum ProviderSchema {}

impl utoipa::PartialSchema for ProviderSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["openai", "anthropic"]))
            .description(Some(
                "The API a model agent speaks: `openai` (`POST {base_url}/chat/completions`, \
                 also any OpenAI-compatible server) or `anthropic` (`POST {base_url}/messages`, \
                 `/v1` added when the base URL does not end in it).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ProviderSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Provider".into()
    }
}

impl Default for BreakerSection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: None,
            min_calls: 20,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
        }
    }
}

impl BreakerSection {
    fn check(&self) -> Result<(), (String, String)> {
        for (field, duration) in [
            ("breaker.window", self.window),
            ("breaker.cool_down", self.cool_down),
        ] {
            check_duration(field, duration).map_err(|e| (e.field.to_string(), e.message))?;
        }
        if let Some(rate) = self.failure_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err((
                "breaker.failure_rate".into(),
                format!("{rate} is not in (0, 1]"),
            ));
        }
        if self.consecutive_failures == 0 && self.failure_rate.is_none() {
            return Err((
                "breaker.consecutive_failures".into(),
                "must be at least 1 (or set failure_rate)".into(),
            ));
        }
        Ok(())
    }
}

/// Where a model agent's calls go: its API, base URL and key variable, from its own fields or
/// its account's.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The API.
    pub provider: Provider,
    /// The base URL.
    pub base_url: String,
    /// The key's variable.
    pub api_key_env: Option<String>,
}

impl AgentConfig {
    /// Checks the fields the types do not (a name, at least one capability, an http(s)
    /// `base_url`, `max_tokens`, the breaker's thresholds, `max_tokens_field` against the
    /// provider, the extra headers' names, the durations) and the agent against the accounts
    /// it may name; the error is the field at fault and why. Its account must be one of `accounts`, and then gives what the agent leaves out of
    /// `provider`, `base_url` and `api_key_env` (what it gives must match), and its quotas and
    /// breaker are the account's (the agent's own `rpm`, `tpm` and `breaker` must be left out).
    pub fn check(&self, accounts: &[AccountConfig]) -> Result<Endpoint, (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty".into());
        }
        if self.capabilities.is_empty() {
            return fail("capabilities", "list at least one".into());
        }
        self.check_bounds()
            .map_err(|e| (e.field.to_string(), e.message))?;
        if self.max_tokens == 0 {
            return fail("max_tokens", "must be at least 1".into());
        }
        self.breaker.check()?;
        if self.fallbacks.iter().any(|f| f.trim().is_empty()) {
            return fail("fallbacks", "a fallback's name must not be empty".into());
        }
        let endpoint = match &self.account {
            None => Endpoint {
                provider: match self.provider {
                    Some(provider) => provider,
                    None => return fail("provider", "required (or name an account)".into()),
                },
                base_url: match &self.base_url {
                    Some(url) => url.clone(),
                    None => return fail("base_url", "required (or name an account)".into()),
                },
                api_key_env: self.api_key_env.clone(),
            },
            Some(name) => {
                let Some(account) = accounts.iter().find(|a| a.name == *name) else {
                    return fail("account", format!("no account is named `{name}`"));
                };
                if self.rpm.is_some() || self.tpm.is_some() {
                    return fail(
                        if self.rpm.is_some() { "rpm" } else { "tpm" },
                        format!("the quotas are account `{name}`'s; leave this out"),
                    );
                }
                if self.breaker != BreakerSection::default() {
                    return fail(
                        "breaker",
                        format!("the breaker is account `{name}`'s; leave this out"),
                    );
                }
                let differs = |field: &str, mine: String, theirs: String| {
                    fail(
                        field,
                        format!("`{mine}` differs from account `{name}`'s `{theirs}`"),
                    )
                };
                if let Some(provider) = self.provider
                    && provider != account.provider
                {
                    return differs(
                        "provider",
                        format!("{provider:?}"),
                        format!("{:?}", account.provider),
                    );
                }
                if let Some(url) = &self.base_url
                    && *url != account.base_url
                {
                    return differs("base_url", url.clone(), account.base_url.clone());
                }
                if let (Some(mine), Some(theirs)) = (&self.api_key_env, &account.api_key_env)
                    && mine != theirs
                {
                    return differs("api_key_env", mine.clone(), theirs.clone());
                }
                Endpoint {
                    provider: account.provider,
                    base_url: account.base_url.clone(),
                    api_key_env: self
                        .api_key_env
                        .clone()
                        .or_else(|| account.api_key_env.clone()),
                }
            }
        };
        if !is_http_url(&endpoint.base_url) {
            return fail(
                "base_url",
                format!("`{}` is not an http(s) URL", endpoint.base_url),
            );
        }
        if endpoint.provider == Provider::Anthropic
            && self.max_tokens_field == MaxTokensField::MaxCompletionTokens
        {
            return fail(
                "max_tokens_field",
                "the Anthropic Messages API takes `max_tokens` only".into(),
            );
        }
        if let Err(message) = self.headers.check() {
            return fail("headers", message);
        }
        Ok(endpoint)
    }

    /// Checks the agent's durations against [`swarm_protocol::bounds::DURATION_MAX`]; the
    /// error names the field (`hard_timeout`, `breaker.cool_down`).
    pub fn check_bounds(&self) -> Result<(), OutOfBounds> {
        let durations = [
            ("idle_timeout", self.idle_timeout),
            ("hard_timeout", self.hard_timeout),
            ("breaker.window", Some(self.breaker.window)),
            ("breaker.cool_down", Some(self.breaker.cool_down)),
        ];
        for (field, duration) in durations {
            if let Some(duration) = duration {
                check_duration(field, duration)?;
            }
        }
        Ok(())
    }
}

fn default_concurrency() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(7)
}

fn default_max_tokens() -> u32 {
    1024
}

fn default_true() -> bool {
    true
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
mod tests {
    use super::*;

    #[test]
    fn approvals_name_their_secret_and_are_checked() {
        let config = Config::parse(
            r#"
            [approvals]
            notify_url = "http://127.0.0.1:9/escalations"
            secret_env = "SWARM_NOTIFY_SECRET"
            attempts = 3
            initial_backoff = "10ms"
            breaker = { consecutive_failures = 2, cool_down = "1m" }
            "#,
        )
        .unwrap();
        let approvals = &config.approvals;
        assert_eq!(approvals.attempts, 3);
        assert_eq!(approvals.initial_backoff, Duration::from_millis(10));
        assert_eq!(approvals.max_backoff, Duration::from_secs(60));
        assert_eq!(approvals.breaker.consecutive_failures, 2);
        assert_eq!(Config::parse("").unwrap().approvals.notify_url, None);
        for (text, says) in [
            (
                "[approvals]\nnotify_url = \"http://x/\"",
                "needs a signing secret",
            ),
            (
                "[approvals]\nnotify_url = \"ftp://x/\"\nsecret_env = \"S\"",
                "approvals.notify_url",
            ),
            (
                "[approvals]\nnotify_url = \"http://x/\"\nsecret_env = \"S\"\nsecret_file = \"f\"",
                "not both",
            ),
            ("[approvals]\nattempts = 0", "approvals.attempts"),
            (
                "[approvals]\nmax_backoff = \"1000y\"",
                "approvals.max_backoff",
            ),
            (
                "[approvals]\nnotify = \"http://x/\"",
                "unknown field `notify`",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn hooks_are_read_with_their_secret_only_named() {
        let config = Config::parse(
            r#"
            [[hooks]]
            name = "deploy"
            secret_env = "SWARM_TEST_SURELY_UNSET_HOOK_SECRET"
            tolerance = "2m"
            template = { goal = { "$payload" = "/message" } }
            "#,
        )
        .unwrap();
        let hook = &config.hooks[0];
        assert_eq!(hook.name, "deploy");
        assert_eq!(hook.secret_env, "SWARM_TEST_SURELY_UNSET_HOOK_SECRET");
        assert_eq!(hook.tolerance, Some(std::time::Duration::from_secs(120)));
        assert_eq!(
            hook.template,
            serde_json::json!({ "goal": { "$payload": "/message" } })
        );
        // What the log keeps of it: the fields as given, the secret only by its variable.
        let fields = serde_json::to_value(hook).unwrap();
        assert_eq!(fields["tolerance"], "2m");
        assert_eq!(serde_json::from_value::<HookConfig>(fields).unwrap(), *hook);
    }

    /// The document's `Provider` lists exactly what the agents crate accepts.
    #[test]
    fn provider_schema_names_the_providers() {
        use utoipa::PartialSchema as _;
        let schema = serde_json::to_value(ProviderSchema::schema()).unwrap();
        let names = schema["enum"].as_array().unwrap();
        assert_eq!(names.len(), 2);
        for name in names {
            serde_json::from_value::<Provider>(name.clone()).unwrap();
        }
    }

    const GOOD: &str = r#"
[store]
data_dir = "d"
retention = "7d"

[[agents]]
name = "a"
provider = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"
api_key_env = "SWARM_TEST_KEY"
capabilities = ["write"]
rpm = 60
breaker = { consecutive_failures = 3, cool_down = "10s" }

[[agents]]
name = "b"
provider = "anthropic"
base_url = "https://api.anthropic.com/v1"
model = "claude"
capabilities = ["write", "review"]
description = "Writes and reviews."
"#;

    #[test]
    fn a_good_file_parses_with_defaults_filled_in() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(
            config.store.retention,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(config.agents.len(), 2);
        let a = &config.agents[0];
        assert_eq!(a.rpm.map(NonZeroU32::get), Some(60));
        assert_eq!(a.breaker.consecutive_failures, 3);
        assert_eq!(a.breaker.cool_down, Duration::from_secs(10));
        assert_eq!(a.concurrency.get(), 8);
        assert_eq!(config.agents[1].provider, Some(Provider::Anthropic));
        assert!(config.agents[1].stream);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let bad = GOOD.replace("rpm = 60", "rpm = 0");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("line 13") && err.contains("rpm"), "{err}");

        let bad = GOOD.replace("model = \"m\"", "model = \"m\"\nmodle = \"x\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("modle") && err.contains("line 11"), "{err}");

        let bad = GOOD.replace(
            "capabilities = [\"write\"]",
            "capabilities = [\"no spaces\"]",
        );
        let err = Config::parse(&bad).unwrap_err();
        assert!(
            err.contains("capabilities") && err.contains("line"),
            "{err}"
        );

        let bad = GOOD.replace("provider = \"openai\"", "provider = \"gemini\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("provider") && err.contains("gemini"), "{err}");
    }

    #[test]
    fn the_server_section_is_optional_and_checked() {
        assert_eq!(
            Config::parse(GOOD).unwrap().server,
            ServerSection::default()
        );
        let with = format!("{GOOD}\n[server]\nclient_burst = 50\nsecure_cookies = true\n");
        let server = Config::parse(&with).unwrap().server;
        assert_eq!(server.client_burst.map(NonZeroU32::get), Some(50));
        assert_eq!(server.secure_cookies, Some(true));
        assert_eq!(server.backlog_max, None);
        let err =
            Config::parse(&with.replace("client_burst = 50", "client_burst = 0")).unwrap_err();
        assert!(err.contains("client_burst"), "{err}");
        let err = Config::parse(&with.replace("client_burst", "client_bust")).unwrap_err();
        assert!(err.contains("client_bust"), "{err}");
    }

    #[test]
    fn limits_may_lower_the_ceilings_but_not_raise_them() {
        let config = Config::parse("[limits]\njson_depth_max = 8\nmax_depth = 3\n").unwrap();
        assert_eq!(config.limits.json().json_depth_max, 8);
        let mut asked = Limits {
            max_depth: 1000,
            max_tasks: 5,
            ..Limits::default()
        };
        config.limits.clamp(&mut asked);
        assert_eq!((asked.max_depth, asked.max_tasks), (3, 5));
        let err = Config::parse("[limits]\njson_depth_max = 65\n").unwrap_err();
        assert!(err.contains("limits.json_depth_max"), "{err}");
        let err = Config::parse("[limits]\nmax_tasks = 0\n").unwrap_err();
        assert!(err.contains("limits.max_tasks"), "{err}");
    }

    #[test]
    fn durations_past_a_year_are_refused_naming_the_key() {
        let bad = GOOD.replace(
            "rpm = 60",
            "rpm = 60\nhard_timeout = \"10000000000000000000s\"",
        );
        let err = Config::parse(&bad).unwrap_err();
        assert!(
            err.contains("agents[0]") && err.contains("hard_timeout"),
            "{err}"
        );
        let bad = GOOD.replace("cool_down = \"10s\"", "cool_down = \"400days\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("breaker.cool_down"), "{err}");
        let bad = GOOD.replace("retention = \"7d\"", "retention = \"500years\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("store.retention"), "{err}");
    }

    #[test]
    fn request_extras_parse_and_bad_ones_are_named() {
        let with = GOOD.replace(
            "rpm = 60",
            "rpm = 60\nheaders = { \"api-key\" = { env = \"AZURE_KEY\" }, \"x-team\" = \"blue\" }\n\
             query = { \"api-version\" = \"2024-10-21\" }\nmax_tokens_field = \"max_completion_tokens\"",
        );
        let config = Config::parse(&with).unwrap();
        let a = &config.agents[0];
        assert_eq!(
            a.headers.0["api-key"],
            HeaderSource::Env {
                env: "AZURE_KEY".into()
            }
        );
        assert_eq!(a.headers.0["x-team"], HeaderSource::Value("blue".into()));
        assert_eq!(a.query["api-version"], "2024-10-21");
        assert_eq!(a.max_tokens_field, MaxTokensField::MaxCompletionTokens);
        assert_eq!(config.agents[1].max_tokens_field, MaxTokensField::Auto);
        let shown = format!("{a:?}");
        assert!(
            shown.contains("$AZURE_KEY") && !shown.contains("blue"),
            "{shown}"
        );
        // What the log keeps: the same, read back; nothing for an agent without them.
        let fields = serde_json::to_value(a).unwrap();
        assert_eq!(fields["headers"]["api-key"]["env"], "AZURE_KEY");
        assert_eq!(serde_json::from_value::<AgentConfig>(fields).unwrap(), *a);
        let plain = serde_json::to_value(&config.agents[1]).unwrap();
        assert!(
            plain.get("headers").is_none() && plain.get("max_tokens_field").is_none(),
            "{plain}"
        );

        let err = Config::parse(&with.replace("\"x-team\"", "\"x team\"")).unwrap_err();
        assert!(
            err.contains("agents[0]") && err.contains("headers") && err.contains("`x team`"),
            "{err}"
        );
        let err = Config::parse(&with.replace("env = \"AZURE_KEY\"", "env = \"\"")).unwrap_err();
        assert!(err.contains("api-key"), "{err}");
        let err = Config::parse(&with.replace("max_completion_tokens", "max_toks")).unwrap_err();
        assert!(err.contains("max_tokens_field"), "{err}");
        let anthropic = GOOD.replace(
            "description = \"Writes and reviews.\"",
            "max_tokens_field = \"max_completion_tokens\"",
        );
        let err = Config::parse(&anthropic).unwrap_err();
        assert!(
            err.contains("agents[1]") && err.contains("max_tokens_field"),
            "{err}"
        );
    }

    #[test]
    fn checks_beyond_types_name_the_agent_and_key() {
        let bad = GOOD.replace("name = \"b\"", "name = \"a\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("agents[1]") && err.contains("name"), "{err}");
        let bad = GOOD.replace("http://127.0.0.1:1/v1", "ftp://x");
        let err = Config::parse(&bad).unwrap_err();
        assert!(
            err.contains("agents[0]") && err.contains("base_url"),
            "{err}"
        );
    }

    const ACCOUNTS: &str = r#"
[[accounts]]
name = "main"
provider = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key_env = "SWARM_TEST_KEY"
rpm = 100
tpm = 50000
concurrency = 4

[[agents]]
name = "fast"
account = "main"
model = "small"
capabilities = ["write"]
fallbacks = ["smaller-model"]

[[agents]]
name = "careful"
account = "main"
model = "big"
capabilities = ["write"]
fallbacks = ["fast"]
"#;

    #[test]
    fn agents_on_an_account_take_its_endpoint_and_leave_its_limits_to_it() {
        let config = Config::parse(ACCOUNTS).unwrap();
        let account = &config.accounts[0];
        assert_eq!(account.rpm.map(NonZeroU32::get), Some(100));
        assert_eq!(account.concurrency.map(NonZeroU32::get), Some(4));
        let endpoint = config.agents[0].check(&config.accounts).unwrap();
        assert_eq!(
            endpoint,
            Endpoint {
                provider: Provider::Openai,
                base_url: "http://127.0.0.1:1/v1".into(),
                api_key_env: Some("SWARM_TEST_KEY".into()),
            }
        );
        assert_eq!(config.agents[1].fallbacks, ["fast"]);
        // What the log keeps of an agent on an account: its own fields only.
        let fields = serde_json::to_value(&config.agents[0]).unwrap();
        assert_eq!(fields["account"], "main");
        assert!(fields.get("provider").is_none(), "{fields}");
        assert_eq!(
            serde_json::from_value::<AgentConfig>(fields).unwrap(),
            config.agents[0]
        );
    }

    #[test]
    fn account_mistakes_name_the_entry_and_key() {
        for (from, to, expected) in [
            (
                "account = \"main\"\nmodel = \"small\"",
                "account = \"other\"\nmodel = \"small\"",
                "agents[0] (`fast`).account: no account is named `other`",
            ),
            (
                "account = \"main\"\nmodel = \"big\"",
                "account = \"main\"\nmodel = \"big\"\nrpm = 5",
                "agents[1] (`careful`).rpm: the quotas are account `main`'s",
            ),
            (
                "account = \"main\"\nmodel = \"big\"",
                "account = \"main\"\nmodel = \"big\"\nbreaker = { consecutive_failures = 2 }",
                "agents[1] (`careful`).breaker: the breaker is account `main`'s",
            ),
            (
                "account = \"main\"\nmodel = \"big\"",
                "account = \"main\"\nmodel = \"big\"\nbase_url = \"http://elsewhere/v1\"",
                "agents[1] (`careful`).base_url: `http://elsewhere/v1` differs",
            ),
            (
                "account = \"main\"\nmodel = \"big\"",
                "model = \"big\"",
                "agents[1] (`careful`).provider: required (or name an account)",
            ),
            (
                "fallbacks = [\"fast\"]",
                "fallbacks = [\"careful\"]",
                "agents[1] (`careful`).fallbacks: `careful` is the agent itself",
            ),
            (
                "fallbacks = [\"smaller-model\"]",
                "fallbacks = [\"careful\"]",
                "agents[0] (`fast`).fallbacks: `careful` is declared after this agent",
            ),
            (
                "rpm = 100",
                "rpm = 100\nbreaker = { consecutive_failures = 0 }",
                "accounts[0] (`main`).breaker.consecutive_failures",
            ),
        ] {
            assert!(ACCOUNTS.contains(from), "{from}");
            let err = Config::parse(&ACCOUNTS.replacen(from, to, 1)).unwrap_err();
            assert!(err.contains(expected), "{err}\nexpected: {expected}");
        }
        let twice = format!(
            "{ACCOUNTS}\n[[accounts]]\nname = \"main\"\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\n"
        );
        let err = Config::parse(&twice).unwrap_err();
        assert!(
            err.contains("accounts[1] (`main`).name: another account has this name"),
            "{err}"
        );
    }
}
