//! A model agent built from its configuration (a `[[agents]]` entry of `swarm.toml`, or the
//! body of `POST /v1/agents`): its API key read from the environment, its circuit breaker and
//! rate limiter on the workspace's clock, its model spec, and its registration.
//!
//! [`crate::config`] holds the configuration as data; building it lives here, so reading the
//! file needs nothing of the model gateway. This module is behind the `model-agents` feature
//! (off by default; the server, the CLI and the tests' harness turn it on), because it brings
//! the model gateway's HTTP client, and the engine alone builds without one.

use std::collections::BTreeMap;
use std::sync::Arc;

use swarm_agents::AgentFactory;
use swarm_agents::clock::TokioClock;
use swarm_agents::model::breaker::{BreakerConfig, ConsecutiveBreaker, FailureRate};
use swarm_agents::model::limiter::{RateLimiter, RateLimits};
use swarm_agents::model::provider::Extras;
use swarm_agents::model::{ApiKey, LlmAgent, ModelSpec};

use crate::config::{AgentConfig, HeaderSource, Headers};
use crate::{Error, Registration};

impl AgentConfig {
    /// Builds the agent: its API key from the environment (an error names the variable, never
    /// a value), its breaker, its limiter, and the registration. The factory hands out one
    /// shared instance, so breaker state and quota survive restarts of its actor.
    pub fn build(&self) -> Result<(Registration, AgentFactory, LlmAgent), Error> {
        self.check_bounds().map_err(|e| Error::InvalidAgent {
            agent: self.name.clone(),
            message: e.to_string(),
        })?;
        let api_key = match &self.api_key_env {
            Some(var) => Some(
                ApiKey::from_env(var).map_err(|message| Error::InvalidAgent {
                    agent: self.name.clone(),
                    message,
                })?,
            ),
            None => None,
        };
        let mut spec = ModelSpec::new(self.provider, self.base_url.clone(), self.model.clone());
        spec.api_key = api_key;
        spec.system_prompt = self.system_prompt.clone();
        spec.max_tokens = self.max_tokens;
        spec.max_tokens_field = self.max_tokens_field;
        spec.extras = self.extras().map_err(|message| Error::InvalidAgent {
            agent: self.name.clone(),
            message,
        })?;
        spec.temperature = self.temperature;
        spec.stream = self.stream;
        spec.idle_timeout = self.idle_timeout;
        spec.hard_timeout = self.hard_timeout;
        let clock = TokioClock::new();
        let breaker = ConsecutiveBreaker::new(
            BreakerConfig {
                consecutive_failures: self.breaker.consecutive_failures,
                failure_rate: self.breaker.failure_rate.map(|threshold| FailureRate {
                    threshold,
                    min_calls: self.breaker.min_calls,
                    window: self.breaker.window,
                }),
                cool_down: self.breaker.cool_down,
                ..BreakerConfig::default()
            },
            clock,
        );
        let limiter = RateLimiter::new(
            RateLimits {
                requests_per_minute: self.rpm,
                tokens_per_minute: self.tpm,
            },
            clock,
        );
        let agent =
            LlmAgent::new(spec, Arc::new(breaker), limiter).map_err(|e| Error::InvalidAgent {
                agent: self.name.clone(),
                message: e.to_string(),
            })?;
        let mut registration = Registration::new(
            self.name.clone(),
            self.capabilities.clone(),
            self.concurrency.get(),
        );
        registration.description = self.description.clone();
        Ok((registration, AgentFactory::shared(agent.clone()), agent))
    }
}

impl AgentConfig {
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
