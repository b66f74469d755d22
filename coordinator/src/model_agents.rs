//! Model agents built from their configuration (`[[accounts]]` and `[[agents]]` of
//! `swarm.toml`, or the body of `POST /v1/agents`): the provider accounts, each built once and
//! shared by the agents that name it; each agent's API key read from the environment, its
//! circuit breaker and rate limiter (its own, or its account's) on the workspace's clock, its
//! fallbacks, its model spec (with the file's `[prices]`), and its registration.
//!
//! [`crate::config`] holds the configuration as data; building it lives here, so reading the
//! file needs nothing of the model gateway. This module is behind the `model-agents` feature
//! (off by default; the server, the CLI and the tests' harness turn it on), because it brings
//! the model gateway's HTTP client, and the engine alone builds without one.

use std::collections::BTreeMap;
use std::sync::Arc;

use swarm_agents::AgentFactory;
use swarm_agents::clock::TokioClock;
use swarm_agents::model::account::Account;
use swarm_agents::model::breaker::{BreakerConfig, ConsecutiveBreaker, FailureRate};
use swarm_agents::model::limiter::{RateLimiter, RateLimits};
use swarm_agents::model::provider::Extras;
use swarm_agents::model::{ApiKey, LlmAgent, ModelSpec};
use swarm_protocol::Price;

use crate::config::{AccountConfig, AgentConfig, BreakerSection, Config, HeaderSource, Headers};
use crate::{Error, Registration};

/// One built agent: what registers it, the factory handing out its one shared instance (so
/// breaker state and quota survive restarts of its actor), and the agent.
pub type BuiltAgent = (Registration, AgentFactory, LlmAgent);

/// The provider accounts of a `swarm.toml` and the model agents built from its `[[agents]]`,
/// by name: what an agent registered later (through the API) may name as its `account` or its
/// `fallbacks`. Clones share the accounts.
#[derive(Debug, Clone, Default)]
pub struct ModelAgents {
    accounts: BTreeMap<String, (AccountConfig, Account)>,
    agents: BTreeMap<String, LlmAgent>,
    prices: Arc<BTreeMap<String, Price>>,
}

impl ModelAgents {
    /// Builds every account of `config`, then every agent in the file's order (a fallback
    /// names an agent declared before it, or a model). Returns the agents to register.
    pub fn build(config: &Config) -> Result<(Self, Vec<BuiltAgent>), Error> {
        let mut built = Self {
            prices: Arc::new(config.prices.clone()),
            ..Self::default()
        };
        let clock = TokioClock::new();
        for account in &config.accounts {
            let shared = Account::new(
                account.name.clone(),
                RateLimits {
                    requests_per_minute: account.rpm,
                    tokens_per_minute: account.tpm,
                },
                breaker_config(&account.breaker),
                account.concurrency,
                clock,
            );
            built
                .accounts
                .insert(account.name.clone(), (account.clone(), shared));
        }
        let mut agents = Vec::with_capacity(config.agents.len());
        for agent in &config.agents {
            let (registration, factory, model) = built.build_agent(agent)?;
            built.agents.insert(agent.name.clone(), model.clone());
            agents.push((registration, factory, model));
        }
        Ok((built, agents))
    }

    /// The accounts, by name, with their configuration.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountConfig, &Account)> {
        self.accounts
            .values()
            .map(|(config, account)| (config, account))
    }

    /// The account named `name`.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.get(name).map(|(_, account)| account)
    }

    /// Builds one agent: its account (one of these), its API key from the environment (an
    /// error names the variable, never a value), its breaker and limiter (its account's, or
    /// its own), its fallbacks (agents of the file, or models), and the registration.
    pub fn build_agent(&self, config: &AgentConfig) -> Result<BuiltAgent, Error> {
        let invalid = |message: String| Error::InvalidAgent {
            agent: config.name.clone(),
            message,
        };
        let account_configs: Vec<AccountConfig> =
            self.accounts.values().map(|(c, _)| c.clone()).collect();
        let endpoint = config
            .check(&account_configs)
            .map_err(|(field, message)| invalid(format!("{field}: {message}")))?;
        let api_key = match &endpoint.api_key_env {
            Some(var) => Some(ApiKey::from_env(var).map_err(invalid)?),
            None => None,
        };
        let mut spec = ModelSpec::new(endpoint.provider, endpoint.base_url, config.model.clone());
        spec.api_key = api_key;
        spec.system_prompt = config.system_prompt.clone();
        spec.max_tokens = config.max_tokens;
        spec.max_tokens_field = config.max_tokens_field;
        spec.extras = config.extras().map_err(|message| Error::InvalidAgent {
            agent: config.name.clone(),
            message,
        })?;
        spec.temperature = config.temperature;
        spec.stream = config.stream;
        spec.idle_timeout = config.idle_timeout;
        spec.hard_timeout = config.hard_timeout;
        spec.prices = Arc::clone(&self.prices);
        spec.capture_content = swarm_agents::trace::capture_content_from_env();
        let clock = TokioClock::new();
        let agent = match config
            .account
            .as_deref()
            .and_then(|name| self.account(name))
        {
            Some(account) => LlmAgent::on_account(spec, account),
            None => LlmAgent::new(
                spec,
                Arc::new(ConsecutiveBreaker::new(
                    breaker_config(&config.breaker),
                    clock,
                )),
                RateLimiter::new(
                    RateLimits {
                        requests_per_minute: config.rpm,
                        tokens_per_minute: config.tpm,
                    },
                    clock,
                ),
            ),
        }
        .map_err(invalid)?;
        let agent = if config.fallbacks.is_empty() {
            agent
        } else {
            let mut fallbacks = Vec::with_capacity(config.fallbacks.len());
            for name in &config.fallbacks {
                let fallback = match self.agents.get(name) {
                    Some(other) => other.clone(),
                    // Not an agent of the file: a model on this agent's API and key, with a
                    // breaker of its own, on its account's quota, or else on quotas like the
                    // agent's own, counted apart (a provider's limits are per model).
                    None => agent
                        .for_model(
                            name,
                            Arc::new(ConsecutiveBreaker::new(
                                breaker_config(&config.breaker),
                                clock,
                            )),
                            config.account.is_none().then(|| {
                                RateLimiter::new(
                                    RateLimits {
                                        requests_per_minute: config.rpm,
                                        tokens_per_minute: config.tpm,
                                    },
                                    clock,
                                )
                            }),
                        )
                        .map_err(invalid)?,
                };
                fallbacks.push(fallback);
            }
            agent.with_fallbacks(fallbacks)
        };
        let mut registration = Registration::new(
            config.name.clone(),
            config.capabilities.clone(),
            config.concurrency.get(),
        );
        registration.description = config.description.clone();
        Ok((registration, AgentFactory::shared(agent.clone()), agent))
    }
}

/// The breaker a `breaker = { ... }` section describes (of an agent, an account, or the
/// notices of `[approvals]`).
pub fn breaker_config(section: &BreakerSection) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: section.consecutive_failures,
        failure_rate: section.failure_rate.map(|threshold| FailureRate {
            threshold,
            min_calls: section.min_calls,
            window: section.window,
        }),
        cool_down: section.cool_down,
        ..BreakerConfig::default()
    }
}

impl AgentConfig {
    /// Builds the agent alone: it may name no account, and its fallbacks are models. See
    /// [`ModelAgents::build_agent`].
    pub fn build(&self) -> Result<BuiltAgent, Error> {
        ModelAgents::default().build_agent(self)
    }

    /// The headers and query parameters added to every request ([`extras`]).
    pub fn extras(&self) -> Result<Extras, String> {
        extras(&self.headers, &self.query)
    }
}

/// The headers (values read from the environment where named so) and query parameters of a
/// configuration section, as the model gateway sends them. An error names the header and the
/// variable, never a value.
pub fn extras(headers: &Headers, query: &BTreeMap<String, String>) -> Result<Extras, String> {
    let mut extras = Extras::default();
    for (name, source) in &headers.0 {
        match source {
            HeaderSource::Value(value) => extras.add_header(name, value)?,
            HeaderSource::Env { env } => {
                let value = match std::env::var(env) {
                    Ok(value) if !value.trim().is_empty() => value,
                    Ok(_) => {
                        return Err(format!(
                            "environment variable `{env}` (header `{name}`) is empty"
                        ));
                    }
                    Err(_) => {
                        return Err(format!(
                            "environment variable `{env}` (header `{name}`) is not set"
                        ));
                    }
                };
                extras.add_secret_header(name, value.trim())?;
            }
        }
    }
    for (name, value) in query {
        extras.add_query(name, value);
    }
    Ok(extras)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::Config;

    const AGENTS: &str = r#"
[[agents]]
name = "a"
provider = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"
api_key_env = "SWARM_TEST_KEY_THAT_IS_NOT_SET"
capabilities = ["write"]

[[agents]]
name = "b"
provider = "anthropic"
base_url = "https://api.anthropic.com/v1"
model = "claude"
capabilities = ["write", "review"]
description = "Writes and reviews."
"#;

    #[test]
    fn a_missing_api_key_variable_is_named_and_no_value_is_shown() {
        let config = Config::parse(AGENTS).unwrap();
        let err = config.agents[0].build().map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, crate::Error::InvalidAgent { agent, .. } if agent == "a"),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.contains("SWARM_TEST_KEY_THAT_IS_NOT_SET") && err.contains("not set"),
            "{err}"
        );
        // An agent without a key variable builds; its spec carries no key.
        let (registration, _factory, agent) = config.agents[1].build().unwrap();
        assert_eq!(registration.name, "b");
        assert_eq!(
            registration.description.as_deref(),
            Some("Writes and reviews.")
        );
        assert!(agent.spec().api_key.is_none());
        assert!(!format!("{agent:?}").contains("SWARM_TEST_KEY"));
    }

    #[test]
    fn headers_come_from_the_file_or_the_environment_and_are_never_shown() {
        // Cargo sets this variable for every test process.
        let secret = std::env::var("CARGO_PKG_NAME").unwrap();
        let text = format!(
            "{AGENTS}\nmax_tokens_field = \"max_completion_tokens\"\n\
             headers = {{ \"api-key\" = {{ env = \"CARGO_PKG_NAME\" }}, \"x-team\" = \"blue\" }}\n\
             query = {{ \"api-version\" = \"2024-10-21\" }}\n"
        )
        .replacen("provider = \"anthropic\"", "provider = \"openai\"", 1);
        let config = Config::parse(&text).unwrap();
        let (_, _, agent) = config.agents[1].build().unwrap();
        let spec = agent.spec();
        assert_eq!(spec.extras.headers()["api-key"], secret.as_str());
        assert_eq!(spec.extras.headers()["x-team"], "blue");
        assert_eq!(
            spec.extras.query(),
            [("api-version".to_owned(), "2024-10-21".to_owned())]
        );
        assert_eq!(
            spec.max_tokens_field,
            swarm_agents::model::provider::MaxTokensField::MaxCompletionTokens
        );
        for shown in [format!("{agent:?}"), format!("{:?}", config.agents[1])] {
            assert!(shown.contains("api-key"), "{shown}");
            assert!(
                !shown.contains(&format!("\"{secret}\"")) && !shown.contains("blue"),
                "{shown}"
            );
        }

        let unset = text.replace("CARGO_PKG_NAME", "SWARM_TEST_HEADER_SURELY_UNSET");
        let err = Config::parse(&unset).unwrap().agents[1]
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SWARM_TEST_HEADER_SURELY_UNSET") && err.contains("api-key"),
            "{err}"
        );
    }
}
