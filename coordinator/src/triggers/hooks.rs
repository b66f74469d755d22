//! Webhooks: what a hook is (its name, secret, template and tolerance), where its secret is
//! read, and the set of hooks a server serves.
//!
//! **Declaring.** A hook is declared in `swarm.toml` (`[[hooks]]`, read at start) or through
//! the API (`POST /v1/hooks`, recorded as `HookDeclared` and served again after a restart
//! until `DELETE /v1/hooks/{name}` records `HookDeleted`). Either way its secret is only named
//! by an environment variable of the coordinator's process (`secret_env`), read when the hook
//! is declared and at every start; the secret is never written to the log, an answer or a log
//! line. [`Hooks`] is the set served; the trigger actor owns it (`triggers::actor`): deliveries
//! ask it for a hook, declarations and deletions change it once their event is durable.
//!
//! A delivery's signature is checked by [`crate::triggers::signature`], and its payload fills
//! the hook's template by [`crate::triggers::template`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::config::HookConfig;
use crate::triggers::signature::{DEFAULT_TOLERANCE, SignatureError, verify};
use crate::triggers::template::{MappingError, check_template, fill_template};

/// The header that carries the sender's delivery id (deliveries are deduplicated on it).
pub const DELIVERY_HEADER: &str = "x-swarm-delivery";

/// The longest `X-Swarm-Delivery` accepted.
pub const MAX_DELIVERY_LEN: usize = 200;

/// The longest hook name accepted: `hook:<name>:<delivery>` stays within an idempotency key's
/// 255 bytes.
pub const MAX_HOOK_NAME_LEN: usize = 48;

/// Checks a hook name: 1 to 48 characters out of `A-Z a-z 0-9 _ - .` (a path segment, and a
/// part of each delivery's idempotency key).
pub fn check_hook_name(name: &str) -> Result<(), String> {
    swarm_protocol::schedule::check_name(name, MAX_HOOK_NAME_LEN)
}

/// The idempotency key a delivery is submitted under: the same delivery id again submits
/// nothing new.
pub fn delivery_idempotency_key(hook: &str, delivery: &str) -> String {
    format!("hook:{hook}:{delivery}")
}

/// A declared webhook: its name, secret, template and timestamp tolerance.
#[derive(Clone)]
pub struct Hook {
    name: String,
    secret: Vec<u8>,
    template: Value,
    tolerance: Duration,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never appears in logs or panics.
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("template", &self.template)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// A hook; its template's `$payload` references are checked.
    pub fn new(
        name: impl Into<String>,
        secret: impl Into<Vec<u8>>,
        template: Value,
        tolerance: Duration,
    ) -> Result<Self, MappingError> {
        check_template(&template)?;
        Ok(Self {
            name: name.into(),
            secret: secret.into(),
            template,
            tolerance,
        })
    }

    /// Its name (the route's `{name}`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a delivery's signature header against its raw body at `now_secs`.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<u64, SignatureError> {
        verify(&self.secret, header, body, now_secs, self.tolerance)
    }

    /// The objective a payload maps to, as JSON (parse it as an `Objective`).
    pub fn objective(&self, payload: &Value) -> Result<Value, MappingError> {
        fill_template(&self.template, payload)
    }

    /// The hook `config` declares, with its secret read from the variable `secret_env` in
    /// `env` now. A bad name, an unset or empty variable, a zero tolerance or a template with
    /// a bad `$payload` reference is an error naming the field (and the variable, never a
    /// value).
    pub fn from_config(config: &HookConfig, env: &Environment) -> Result<Self, DeclarationError> {
        check_hook_name(&config.name).map_err(|message| DeclarationError::new("name", message))?;
        if config.secret_env.is_empty() {
            return Err(DeclarationError::new(
                "secret_env",
                "must name an environment variable",
            ));
        }
        let secret = env
            .var(&config.secret_env)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                DeclarationError::new(
                    "secret_env",
                    format!(
                        "the variable `{}` is unset or empty in the coordinator's environment",
                        config.secret_env
                    ),
                )
            })?;
        let tolerance = config.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        if tolerance.as_secs() == 0 {
            return Err(DeclarationError::new(
                "tolerance",
                "must be at least 1s (a delivery's timestamp is in whole seconds)",
            ));
        }
        Ok(Self::new(
            config.name.clone(),
            secret.into_bytes(),
            config.template.clone(),
            tolerance,
        )?)
    }
}

/// A hook declaration that cannot be served, naming the field at fault (`name`,
/// `secret_env`, `tolerance`, `template.goal`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DeclarationError {
    /// The field of the `[[hooks]]` entry (or of the `POST /v1/hooks` body).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl DeclarationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<MappingError> for DeclarationError {
    fn from(err: MappingError) -> Self {
        Self::new(err.field, err.message)
    }
}

/// Where hook secrets are looked up: the process's environment, or a fixed set of variables
/// (tests, which cannot change the process's environment safely while other threads run).
#[derive(Clone, Default)]
pub enum Environment {
    /// `std::env::var`.
    #[default]
    Process,
    /// These variables and no other.
    Fixed(Arc<BTreeMap<String, String>>),
}

impl Environment {
    /// A fixed set of variables.
    pub fn fixed<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Self::Fixed(Arc::new(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The value of the variable `name`, if it is set (and valid Unicode).
    pub fn var(&self, name: &str) -> Option<String> {
        match self {
            Self::Process => std::env::var(name).ok(),
            Self::Fixed(vars) => vars.get(name).cloned(),
        }
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the values are secrets.
        match self {
            Self::Process => f.write_str("Process"),
            Self::Fixed(vars) => f.debug_tuple("Fixed").field(&vars.keys()).finish(),
        }
    }
}

/// Where a hook was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookSource {
    /// `swarm.toml` (`[[hooks]]`): changed there, not through the API.
    Config,
    /// `POST /v1/hooks`.
    Api,
}

/// A hook as `GET /v1/hooks` shows it: its declaration, never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HookView {
    /// The route's `{name}`.
    pub name: String,
    /// The environment variable its secret is read from.
    pub secret_env: String,
    /// The objective each delivery submits, with `{"$payload": "<JSON Pointer>"}` where a
    /// part of the payload goes.
    #[schema(value_type = Object)]
    pub template: Value,
    /// How far a delivery's timestamp may be from the server's clock.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "5m")]
    pub tolerance: Duration,
    /// Where it was declared.
    pub source: HookSource,
}

/// One hook served.
#[derive(Debug)]
struct Entry {
    hook: Arc<Hook>,
    config: HookConfig,
    source: HookSource,
}

impl Entry {
    fn view(&self) -> HookView {
        HookView {
            name: self.config.name.clone(),
            secret_env: self.config.secret_env.clone(),
            template: self.config.template.clone(),
            tolerance: self.hook.tolerance,
            source: self.source,
        }
    }
}

/// The hooks a server serves, by name: those of `swarm.toml` and those declared through the
/// API, with the environment their secrets are read in. Plain data: the trigger actor owns
/// the set a swarm serves, and changes it only once a change is durable.
#[derive(Debug, Default)]
pub struct Hooks {
    entries: BTreeMap<String, Entry>,
    env: Environment,
}

impl Hooks {
    /// The `[[hooks]]` of `swarm.toml`, their secrets read in `env` now (declarations through
    /// the API read theirs there too). A bad entry (an unset variable, a bad `$payload`
    /// reference, a name used twice) is [`Error::Config`] naming the entry and the field,
    /// which stops the start.
    pub fn configured(hooks: &[HookConfig], env: Environment) -> Result<Self, Error> {
        let mut entries = BTreeMap::new();
        for (i, config) in hooks.iter().enumerate() {
            let at = format!("hooks[{i}] (`{}`)", config.name);
            let hook = Hook::from_config(config, &env).map_err(|e| Error::Config {
                field: format!("{at}.{}", e.field),
                message: e.message,
            })?;
            if entries.contains_key(&config.name) {
                return Err(Error::Config {
                    field: format!("{at}.name"),
                    message: "another hook has this name".into(),
                });
            }
            entries.insert(
                config.name.clone(),
                Entry {
                    hook: Arc::new(hook),
                    config: config.clone(),
                    source: HookSource::Config,
                },
            );
        }
        Ok(Self { entries, env })
    }

    /// The environment secrets are read in.
    pub(crate) fn env(&self) -> &Environment {
        &self.env
    }

    /// The hook named `name`, if it is served.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Hook>> {
        self.entries.get(name).map(|entry| entry.hook.clone())
    }

    /// Where the hook named `name` was declared, if it is served.
    pub(crate) fn source(&self, name: &str) -> Option<HookSource> {
        self.entries.get(name).map(|entry| entry.source)
    }

    /// Every hook served, by name.
    pub fn views(&self) -> Vec<HookView> {
        self.entries.values().map(Entry::view).collect()
    }

    /// Serves `hook`, declared through the API with `config`; returns its view.
    pub(crate) fn insert_declared(&mut self, config: HookConfig, hook: Hook) -> HookView {
        let entry = Entry {
            hook: Arc::new(hook),
            config,
            source: HookSource::Api,
        };
        let view = entry.view();
        self.entries.insert(view.name.clone(), entry);
        view
    }

    /// Stops serving `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// Serves again the hooks declared through the API (`declared`: name and recorded fields,
    /// as the log's index holds them); returns the names of those served. Call it once the
    /// hooks of `swarm.toml` are in: a declared hook of the same name is left out with a
    /// warning (the file wins; the declaration stays, so it comes back if the file drops its
    /// hook). One whose variable is unset or empty now is left out with a warning naming the
    /// variable, and stays declared too.
    pub(crate) fn restore<'a>(
        &mut self,
        declared: impl IntoIterator<Item = (&'a String, &'a Value)>,
    ) -> Vec<String> {
        let mut restored = Vec::new();
        for (name, config) in declared {
            if self.entries.contains_key(name) {
                tracing::warn!(
                    hook = %name,
                    "a hook declared through the API has the name of a hook of swarm.toml; the \
                     configured one is served"
                );
                continue;
            }
            let config = match serde_json::from_value::<HookConfig>(config.clone()) {
                Ok(config) if config.name == *name => config,
                Ok(config) => {
                    tracing::warn!(hook = %name, recorded = %config.name, "a hook declared through the API is recorded under another name; left out");
                    continue;
                }
                Err(err) => {
                    tracing::warn!(hook = %name, %err, "a hook declared through the API has recorded fields that do not parse; left out");
                    continue;
                }
            };
            match Hook::from_config(&config, &self.env) {
                Ok(hook) => {
                    self.insert_declared(config, hook);
                    tracing::info!(hook = %name, "hook declared through the API served again");
                    restored.push(name.clone());
                }
                Err(err) => tracing::warn!(
                    hook = %name,
                    secret_env = %config.secret_env,
                    %err,
                    "a hook declared through the API cannot be served; left out until it is \
                     declared again or the coordinator restarts with its variable set"
                ),
            }
        }
        restored
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deploy(secret_env: &str) -> HookConfig {
        HookConfig {
            name: "deploy".into(),
            secret_env: secret_env.into(),
            template: serde_json::json!({ "goal": { "$payload": "/message" } }),
            tolerance: None,
        }
    }

    #[test]
    fn a_missing_secret_is_named_and_never_shown() {
        let hook = deploy("SWARM_TEST_SURELY_UNSET_HOOK_SECRET");
        let err = Hook::from_config(&hook, &Environment::Process).unwrap_err();
        assert_eq!(err.field, "secret_env");
        assert!(
            err.message.contains("SWARM_TEST_SURELY_UNSET_HOOK_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn a_hook_names_the_field_at_fault() {
        let var = "SWARM_TEST_CONFIG_HOOK_SECRET";
        let env = Environment::fixed([(var, "s3cret")]);
        let good = deploy(var);
        assert_eq!(
            Hook::from_config(&good, &Environment::Process)
                .unwrap_err()
                .field,
            "secret_env"
        );
        let hook = Hook::from_config(&good, &env).unwrap();
        assert_eq!(hook.name(), "deploy");
        assert!(!format!("{hook:?}").contains("s3cret"));
        for (change, field) in [
            (
                HookConfig {
                    name: "a/b".into(),
                    ..good.clone()
                },
                "name",
            ),
            (
                HookConfig {
                    secret_env: String::new(),
                    ..good.clone()
                },
                "secret_env",
            ),
            (
                HookConfig {
                    tolerance: Some(Duration::ZERO),
                    ..good.clone()
                },
                "tolerance",
            ),
            (
                HookConfig {
                    template: serde_json::json!({ "goal": { "$payload": "message" } }),
                    ..good.clone()
                },
                "template.goal",
            ),
        ] {
            assert_eq!(Hook::from_config(&change, &env).unwrap_err().field, field);
        }
    }

    #[test]
    fn configured_hooks_name_the_entry_at_fault() {
        let var = "SWARM_TEST_CONFIGURED_HOOK_SECRET";
        let env = Environment::fixed([(var, "s3cret")]);
        let hooks = Hooks::configured(&[deploy(var)], env.clone()).unwrap();
        assert_eq!(hooks.source("deploy"), Some(HookSource::Config));
        assert_eq!(hooks.views()[0].secret_env, var);
        let err = Hooks::configured(&[deploy(var), deploy(var)], env.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hooks[1] (`deploy`).name: another hook has this name"
        );
        let err = Hooks::configured(&[deploy("SWARM_TEST_SURELY_UNSET")], env).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "hooks[0] (`deploy`).secret_env: the variable `SWARM_TEST_SURELY_UNSET`"
            ),
            "{err}"
        );
    }

    #[test]
    fn declared_hooks_come_back_unless_the_file_or_the_environment_says_otherwise() {
        let var = "SWARM_TEST_RESTORED_HOOK_SECRET";
        let env = Environment::fixed([(var, "s3cret")]);
        let mut hooks = Hooks::configured(&[deploy(var)], env).unwrap();
        let build = HookConfig {
            name: "build".into(),
            ..deploy(var)
        };
        let unset = HookConfig {
            name: "unset".into(),
            ..deploy("SWARM_TEST_SURELY_UNSET")
        };
        let declared: BTreeMap<String, Value> = [&deploy(var), &build, &unset]
            .into_iter()
            .map(|c| (c.name.clone(), serde_json::to_value(c).unwrap()))
            .collect();
        assert_eq!(hooks.restore(&declared), ["build"]);
        assert_eq!(hooks.source("deploy"), Some(HookSource::Config));
        assert_eq!(hooks.source("build"), Some(HookSource::Api));
        assert_eq!(hooks.source("unset"), None);
    }
}
