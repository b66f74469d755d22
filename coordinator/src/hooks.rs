//! Webhooks (issue 9, second part): checking a delivery's signature, mapping its payload into
//! an objective template, and the book of hooks a running server serves.
//!
//! **Declaring.** A hook is declared in `swarm.toml` (`[[hooks]]`, read at start) or through
//! the API (`POST /v1/hooks`, recorded as `HookDeclared` and served again after a restart
//! until `DELETE /v1/hooks/{name}` records `HookDeleted`). Either way its secret is only named
//! by an environment variable of the coordinator's process (`secret_env`), read when the hook
//! is declared and at every start; the secret is never written to the log, an answer or a log
//! line. [`HookBook`] holds the hooks while the server runs: deliveries read it, declarations
//! and deletions change it.
//!
//! **Signature.** The sender puts `X-Swarm-Signature: t=<unix seconds>,v1=<hex>` on the
//! request, where `<hex>` is HMAC-SHA256 under the hook's secret of `<t>.` followed by the
//! raw body. The timestamp must be within the tolerance of the server's clock (so a captured
//! request cannot be replayed later), and the MAC is compared in constant time. Several `v1`
//! entries may be given (a sender rotating its secret); one matching is enough.
//!
//! ```sh
//! t=$(date +%s); body='{"ref":"main"}'
//! sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/.* //')
//! curl -H "X-Swarm-Signature: t=$t,v1=$sig" -H 'X-Swarm-Delivery: d-1' \
//!      -H 'content-type: application/json' -d "$body" localhost:8080/v1/hooks/deploy
//! ```
//!
//! **Mapping.** A hook's template is an objective in JSON in which any object of the form
//! `{"$payload": "<JSON Pointer>"}` stands for the payload's value at that pointer (RFC 6901;
//! `""` is the whole payload). A pointer the payload lacks is an error naming the template
//! field that holds it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::Value;
use swarm_protocol::Event;
use swarm_store::DeclaredHook;

use crate::config::HookConfig;
use crate::{Error, Swarm};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-swarm-signature";

/// The header that carries the sender's delivery id (deliveries are deduplicated on it).
pub const DELIVERY_HEADER: &str = "x-swarm-delivery";

/// How far a delivery's timestamp may be from the server's clock, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The key of a template object that stands for a part of the payload.
pub const PAYLOAD_KEY: &str = "$payload";

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

/// Why a delivery's signature is refused (each answers 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("the request has no `X-Swarm-Signature` header")]
    Missing,
    /// The header does not parse.
    #[error("`X-Swarm-Signature` is not `t=<unix seconds>,v1=<hex HMAC-SHA256>`: {0}")]
    Malformed(String),
    /// The timestamp is outside the tolerance.
    #[error(
        "the signature's timestamp is {age_secs} s away from the server's clock; at most \
         {tolerance_secs} s is accepted"
    )]
    Stale {
        /// How far it is from now, either way.
        age_secs: u64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// No `v1` matches the body under the hook's secret.
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` only fails for fixed-size MACs.
    let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Swarm-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks a delivery's signature header against `body` under `secret`, at `now_secs` (unix
/// seconds); returns the signed timestamp.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_secs: u64,
    tolerance: Duration,
) -> Result<u64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| SignatureError::Malformed(format!("`{part}` has no `=`")))?;
        match key {
            "t" => {
                let t = value.parse::<u64>().map_err(|_| {
                    SignatureError::Malformed(format!("`t={value}` is not unix seconds"))
                })?;
                timestamp = Some(t);
            }
            "v1" => signatures.push(value),
            // Other schemes are ignored, so a sender may add newer ones.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| SignatureError::Malformed("no `t=`".into()))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no `v1=`".into()));
    }
    let age_secs = now_secs.abs_diff(timestamp);
    if age_secs > tolerance.as_secs() {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    let expected = mac(secret, timestamp, body);
    for signature in signatures {
        let Ok(bytes) = hex::decode(signature) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if expected.clone().verify_slice(&bytes).is_ok() {
            return Ok(timestamp);
        }
    }
    Err(SignatureError::Mismatch)
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
        map_payload(&self.template, payload)
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

/// One hook of the book.
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
/// API, which come and go while it runs.
///
/// Deliveries read it on their path: a short read lock that clones the hook's `Arc` out, never
/// held across an `.await`. Declarations and deletions are rare; they are serialized by a
/// second (async) lock held across the recording of their event, so the log and the book
/// change in the same order, and a name is checked and taken in one step.
#[derive(Debug, Default)]
pub struct HookBook {
    entries: RwLock<BTreeMap<String, Entry>>,
    changes: tokio::sync::Mutex<()>,
    env: Environment,
}

impl HookBook {
    /// An empty book whose secrets are read in `env`.
    pub fn new(env: Environment) -> Self {
        Self {
            env,
            ..Self::default()
        }
    }

    /// The book of the `[[hooks]]` of `swarm.toml`, their secrets read in `env` now: a bad
    /// entry (an unset variable, a bad `$payload` reference, a name used twice) is an error
    /// naming the hook and the field, which stops the start.
    pub fn configured(hooks: &[HookConfig], env: Environment) -> Result<Self, Error> {
        let book = Self::new(env);
        {
            let mut entries = book.write();
            for config in hooks {
                let hook = config
                    .build_in(&book.env)
                    .map_err(|e| Error::Input(format!("hook `{}`: {e}", config.name)))?;
                if entries.contains_key(&config.name) {
                    return Err(Error::Input(format!(
                        "two hooks are named `{}` in the configuration",
                        config.name
                    )));
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
        }
        Ok(book)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A panic while the lock was held cannot leave the map half-changed (each change is
        // one insert or remove), so a poisoned lock is used as it is.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hook named `name`, if it is served.
    pub fn get(&self, name: &str) -> Option<Arc<Hook>> {
        self.read().get(name).map(|entry| entry.hook.clone())
    }

    /// Every hook served, by name.
    pub fn list(&self) -> Vec<HookView> {
        self.read().values().map(Entry::view).collect()
    }

    /// The names of the hooks served.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Declares a hook through the API: checks `config` and reads its secret (a bad field is
    /// [`Error::Hook`], naming it; a name in use is [`Error::HookExists`], or
    /// [`Error::HookConfigured`] for one of `swarm.toml`), records `HookDeclared` and serves
    /// it once that is durable.
    pub async fn declare(&self, swarm: &Swarm, config: HookConfig) -> Result<HookView, Error> {
        let hook = config.build_in(&self.env)?;
        let _changing = self.changes.lock().await;
        match self.read().get(&config.name).map(|e| e.source) {
            Some(HookSource::Config) => return Err(Error::HookConfigured(config.name)),
            Some(HookSource::Api) => return Err(Error::HookExists(config.name)),
            None => {}
        }
        let fields = serde_json::to_value(&config)
            .map_err(|e| Error::Input(format!("the hook's fields cannot be recorded: {e}")))?;
        swarm
            .record_hook_declared(config.name.clone(), fields)
            .await?;
        let entry = Entry {
            hook: Arc::new(hook),
            config,
            source: HookSource::Api,
        };
        let view = entry.view();
        self.write().insert(view.name.clone(), entry);
        Ok(view)
    }

    /// Deletes a hook declared through the API: records `HookDeleted`, and stops serving it
    /// once that is durable. A hook of `swarm.toml` is [`Error::HookConfigured`]; an unknown
    /// name [`Error::UnknownHook`]. A declared hook left out at start (its variable was
    /// unset) is not served but can still be deleted.
    pub async fn delete(&self, swarm: &Swarm, name: &str) -> Result<(), Error> {
        let _changing = self.changes.lock().await;
        let source = self.read().get(name).map(|e| e.source);
        match source {
            Some(HookSource::Config) => return Err(Error::HookConfigured(name.to_owned())),
            Some(HookSource::Api) => {}
            None => {
                let declared = swarm.declared_hooks().await?;
                if !declared.iter().any(|h| h.name == name) {
                    return Err(Error::UnknownHook(name.to_owned()));
                }
            }
        }
        swarm.record_hook_deleted(name.to_owned()).await?;
        self.write().remove(name);
        Ok(())
    }

    /// Serves again the hooks declared through the API and not deleted before the last stop
    /// (the log's index); returns their names. Call it after the book got the hooks of
    /// `swarm.toml`: a declared hook of the same name is left out with a warning (the file
    /// wins; the declaration stays, so it comes back if the file drops its hook). One whose
    /// variable is unset or empty now is left out with a warning naming the variable, and
    /// stays declared too. Neither stops the start.
    pub async fn restore(&self, swarm: &Swarm) -> Result<Vec<String>, Error> {
        let declared = swarm.declared_hooks().await?;
        let _changing = self.changes.lock().await;
        let mut restored = Vec::new();
        for DeclaredHook { name, config } in declared {
            if self.read().contains_key(&name) {
                tracing::warn!(
                    hook = %name,
                    "a hook declared through the API has the name of a hook of swarm.toml; the \
                     configured one is served"
                );
                continue;
            }
            let config = match serde_json::from_value::<HookConfig>(config) {
                Ok(config) if config.name == name => config,
                Ok(config) => {
                    tracing::warn!(hook = %name, recorded = %config.name, "a hook declared through the API is recorded under another name; left out");
                    continue;
                }
                Err(err) => {
                    tracing::warn!(hook = %name, %err, "a hook declared through the API has recorded fields that do not parse; left out");
                    continue;
                }
            };
            match config.build_in(&self.env) {
                Ok(hook) => {
                    self.write().insert(
                        name.clone(),
                        Entry {
                            hook: Arc::new(hook),
                            config,
                            source: HookSource::Api,
                        },
                    );
                    tracing::info!(hook = %name, "hook declared through the API served again");
                    restored.push(name);
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
        Ok(restored)
    }
}

impl Swarm {
    /// The hooks declared through the API and not deleted since, as the durable log's index
    /// holds them, by name (none without a log).
    pub async fn declared_hooks(&self) -> Result<Vec<DeclaredHook>, Error> {
        match self.store() {
            Some(store) => Ok(store.declared_hooks().await?),
            None => Ok(Vec::new()),
        }
    }

    /// Records `HookDeclared` and waits until it is durable.
    async fn record_hook_declared(&self, name: String, config: Value) -> Result<(), Error> {
        self.record_durably(Event::HookDeclared { name, config })
            .await
    }

    /// Records `HookDeleted` and waits until it is durable.
    async fn record_hook_deleted(&self, name: String) -> Result<(), Error> {
        self.record_durably(Event::HookDeleted { name }).await
    }
}

/// A template or payload problem, naming the template field at fault (`template.goal`,
/// `template.tasks[0].input.ref`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MappingError {
    /// The template field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Checks a template: a JSON object whose `{"$payload": ...}` references each hold a JSON
/// Pointer (`""` or starting with `/`) and nothing else.
pub fn check_template(template: &Value) -> Result<(), MappingError> {
    if !template.is_object() {
        return Err(MappingError {
            field: "template".into(),
            message: "must be a JSON object: an objective, or `{\"$payload\": ...}` for one \
                      the payload holds"
                .into(),
        });
    }
    map(template, &Value::Null, "template", false).map(|_| ())
}

/// The template with every `{"$payload": pointer}` replaced by the payload's value there.
pub fn map_payload(template: &Value, payload: &Value) -> Result<Value, MappingError> {
    map(template, payload, "template", true)
}

fn map(
    template: &Value,
    payload: &Value,
    field: &str,
    resolve: bool,
) -> Result<Value, MappingError> {
    match template {
        Value::Object(object) => {
            if let Some(pointer) = object.get(PAYLOAD_KEY) {
                let error = |message: String| MappingError {
                    field: field.to_owned(),
                    message,
                };
                if object.len() != 1 {
                    return Err(error(format!(
                        "an object with `{PAYLOAD_KEY}` must have no other key"
                    )));
                }
                let Some(pointer) = pointer.as_str() else {
                    return Err(error(format!(
                        "`{PAYLOAD_KEY}` must be a JSON Pointer string"
                    )));
                };
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(error(format!(
                        "`{pointer}` is not a JSON Pointer (it starts with `/`, or is empty for \
                         the whole payload)"
                    )));
                }
                if !resolve {
                    return Ok(Value::Null);
                }
                return payload
                    .pointer(pointer)
                    .cloned()
                    .ok_or_else(|| error(format!("the payload has nothing at `{pointer}`")));
            }
            let mut mapped = serde_json::Map::with_capacity(object.len());
            for (key, value) in object {
                let field = format!("{field}.{key}");
                mapped.insert(key.clone(), map(value, payload, &field, resolve)?);
            }
            Ok(Value::Object(mapped))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| map(item, payload, &format!("{field}[{i}]"), resolve))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"hook-secret";
    const NOW: u64 = 1_800_000_000;
    const BODY: &[u8] = br#"{"ref":"main"}"#;

    fn check(header: Option<&str>, body: &[u8], now: u64) -> Result<u64, SignatureError> {
        verify(SECRET, header, body, now, DEFAULT_TOLERANCE)
    }

    #[test]
    fn a_signed_body_verifies() {
        let header = sign(SECRET, NOW, BODY);
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert_eq!(check(Some(&header), BODY, NOW), Ok(NOW));
        // Within the tolerance either way.
        assert_eq!(check(Some(&header), BODY, NOW + 300), Ok(NOW));
        assert_eq!(check(Some(&header), BODY, NOW - 300), Ok(NOW));
        // A rotated secret: one of several `v1` matching is enough.
        let other = sign(b"old-secret", NOW, BODY);
        let v1 = other.split_once(",v1=").unwrap().1;
        let both = format!("{header},v1={v1}");
        assert_eq!(check(Some(&both), BODY, NOW), Ok(NOW));
    }

    #[test]
    fn a_known_vector() {
        // printf '%s' '1800000000.{"ref":"main"}' | openssl dgst -sha256 -hmac hook-secret
        assert_eq!(
            sign(SECRET, NOW, BODY),
            "t=1800000000,v1=d89b65a0a46f0eaad85279173075fa6bbeed13fddb44368068a863022d1f5624"
        );
    }

    #[test]
    fn a_wrong_stale_missing_or_malformed_signature_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        assert_eq!(check(None, BODY, NOW), Err(SignatureError::Missing));
        assert_eq!(
            check(Some(&header), br#"{"ref":"evil"}"#, NOW),
            Err(SignatureError::Mismatch)
        );
        let wrong_key = sign(b"guess", NOW, BODY);
        assert_eq!(
            check(Some(&wrong_key), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some(&header), BODY, NOW + 301),
            Err(SignatureError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(Some(&header), BODY, NOW - 3_600),
            Err(SignatureError::Stale {
                age_secs: 3_600,
                tolerance_secs: 300
            })
        );
        for bad in ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage"] {
            assert!(
                matches!(
                    check(Some(bad), BODY, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let not_hex = format!("t={NOW},v1=zz");
        assert_eq!(
            check(Some(&not_hex), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_payload_fills_the_template() {
        let template = json!({
            "goal": {"$payload": "/head_commit/message"},
            "tasks": [{
                "id": "deploy",
                "capability": "work",
                "input": {"ref": {"$payload": "/ref"}, "all": {"$payload": ""}, "n": 1}
            }]
        });
        check_template(&template).unwrap();
        let payload = json!({"ref": "main", "head_commit": {"message": "fix it"}});
        let mapped = map_payload(&template, &payload).unwrap();
        assert_eq!(mapped["goal"], "fix it");
        assert_eq!(mapped["tasks"][0]["input"]["ref"], "main");
        assert_eq!(mapped["tasks"][0]["input"]["all"], payload);
        assert_eq!(mapped["tasks"][0]["input"]["n"], 1);
        let objective: swarm_protocol::Objective = serde_json::from_value(mapped).unwrap();
        assert_eq!(objective.goal, "fix it");
    }

    #[test]
    fn a_missing_path_or_a_bad_reference_names_the_template_field() {
        let template = json!({"goal": "g", "tasks": [{"input": {"ref": {"$payload": "/ref"}}}]});
        let err = map_payload(&template, &json!({"other": 1})).unwrap_err();
        assert_eq!(err.field, "template.tasks[0].input.ref");
        assert!(err.message.contains("/ref"), "{err}");
        for (bad, what) in [
            (json!({"goal": {"$payload": "ref"}}), "JSON Pointer"),
            (json!({"goal": {"$payload": 3}}), "string"),
            (json!({"goal": {"$payload": "/a", "x": 1}}), "no other key"),
        ] {
            let err = check_template(&bad).unwrap_err();
            assert_eq!(err.field, "template.goal");
            assert!(err.message.contains(what), "{err}");
        }
        let err = check_template(&json!(["goal"])).unwrap_err();
        assert_eq!(err.field, "template");
        assert!(check_template(&json!({ "$payload": "" })).is_ok());
    }
}
