//! What a model agent calls, and the key it calls with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use swarm_protocol::Price;

use crate::model::provider::{Extras, MaxTokensField, Provider};

/// An API key, read from the environment. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key in environment variable `var`; the error names the variable, never a value.
    pub fn from_env(var: &str) -> Result<Self, String> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(Self(value.trim().to_owned())),
            Ok(_) => Err(format!(
                "environment variable `{var}` (the API key) is empty"
            )),
            Err(_) => Err(format!(
                "environment variable `{var}` (the API key) is not set"
            )),
        }
    }

    /// A key given directly (tests).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What a model agent calls, and how.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The API.
    pub provider: Provider,
    /// The API's base URL, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The key, if the API needs one.
    pub api_key: Option<ApiKey>,
    /// A system prompt for every task (a task's input may carry its own `system`).
    pub system_prompt: Option<String>,
    /// The most tokens to generate (a task's input may carry `max_tokens`).
    pub max_tokens: u32,
    /// Which request field carries `max_tokens` (OpenAI's reasoning models take
    /// `max_completion_tokens`).
    pub max_tokens_field: MaxTokensField,
    /// Headers and query parameters added to every request.
    pub extras: Extras,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Stream answers (so idle timeouts see progress and partial output is kept).
    pub stream: bool,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The idle timeout (no streamed token for this long) of tasks that set none.
    pub idle_timeout: Option<Duration>,
    /// The hard timeout of tasks that set none.
    pub hard_timeout: Option<Duration>,
    /// Prices by model name: an attempt's usage carries its cost when `model` has one here
    /// (a model fallback made with [`LlmAgent::for_model`](super::LlmAgent::for_model) looks up its own model).
    pub prices: Arc<BTreeMap<String, Price>>,
    /// Record prompts and answers on the calls' inference spans (see
    /// [`CAPTURE_CONTENT_VAR`](crate::trace::CAPTURE_CONTENT_VAR)); off by default, since they may hold anything.
    pub capture_content: bool,
}

impl ModelSpec {
    /// A spec with defaults: no key, no system prompt, 1024 tokens, streaming.
    pub fn new(provider: Provider, base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            provider,
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            system_prompt: None,
            max_tokens: 1024,
            max_tokens_field: MaxTokensField::Auto,
            extras: Extras::default(),
            temperature: None,
            stream: true,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: None,
            hard_timeout: None,
            prices: Arc::default(),
            capture_content: false,
        }
    }
}
