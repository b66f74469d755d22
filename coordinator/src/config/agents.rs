//! The model agents' part of `swarm.toml`: `[[agents]]` (also the body of `POST /v1/agents`),
//! `[[accounts]]`, and the breaker and headers sections they share.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use swarm_agents::model::provider::{MaxTokensField, Provider};
use swarm_protocol::Capability;
use swarm_protocol::bounds::{OutOfBounds, check_duration};

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
    pub(super) fn check(&self) -> Result<(), (String, String)> {
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
