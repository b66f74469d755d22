//! A webhook delivery's signature: `X-Swarm-Signature: t=<unix seconds>,v1=<hex>`, where
//! `<hex>` is HMAC-SHA256 under the hook's secret of `<t>.` followed by the raw body.
//!
//! The timestamp must be within the hook's tolerance of the server's clock (so a captured
//! request cannot be replayed later), and the MAC is compared in constant time. Several `v1`
//! entries may be given (a sender rotating its secret); one matching is enough. Other schemes
//! are ignored, so a sender may add newer ones.
//!
//! ```sh
//! t=$(date +%s); body='{"ref":"main"}'
//! sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$SECRET" -hex | sed 's/.* //')
//! curl -H "X-Swarm-Signature: t=$t,v1=$sig" -H 'X-Swarm-Delivery: d-1' \
//!      -H 'content-type: application/json' -d "$body" localhost:8080/v1/hooks/deploy
//! ```

use std::time::Duration;

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-swarm-signature";

/// How far a delivery's timestamp may be from the server's clock, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
