//! Webhooks (issue 9, second part), the pure pieces so far: checking a delivery's signature
//! and mapping its payload into an objective template. The route (`POST /v1/hooks/{name}`),
//! the hook declarations and the delivery-id deduplication are not built yet (`TRIGGERS.md`).
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
//! curl -H "X-Swarm-Signature: t=$t,v1=$sig" -H 'content-type: application/json' \
//!      -d "$body" localhost:8080/v1/hooks/deploy
//! ```
//!
//! **Mapping.** A hook's template is an objective in JSON in which any object of the form
//! `{"$payload": "<JSON Pointer>"}` stands for the payload's value at that pointer (RFC 6901;
//! `""` is the whole payload). A pointer the payload lacks is an error naming the template
//! field that holds it.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::Value;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-swarm-signature";

/// The header that carries the sender's delivery id (deliveries are deduplicated on it).
pub const DELIVERY_HEADER: &str = "x-swarm-delivery";

/// How far a delivery's timestamp may be from the server's clock, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The key of a template object that stands for a part of the payload.
pub const PAYLOAD_KEY: &str = "$payload";

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

/// Checks a template's `{"$payload": ...}` references: each holds a JSON Pointer (`""` or
/// starting with `/`) and nothing else.
pub fn check_template(template: &Value) -> Result<(), MappingError> {
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
    }
}
