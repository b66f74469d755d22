//! The server-wide behaviour of the simulated model server.

use serde::{Deserialize, Serialize};

use super::Error;

/// The most pieces one answer may have, so a typo in a config cannot make a server stream
/// forever.
pub(super) const TOKENS_MAX: u32 = 8192;
/// The longest delay a latency range may ask for, in milliseconds (ten minutes).
pub(super) const DELAY_MS_MAX: u64 = 600_000;

/// What a simulated model server does. Every field has a default, so an empty file or `{}` is
/// a valid config: an instant, error-free server answering 12 to 40 words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Mixed into the content hash: the same seed and request give the same answer.
    pub seed: u64,
    /// The answer's length in pieces (words, or four-character JSON pieces), drawn per request
    /// from this inclusive range.
    pub tokens: (u32, u32),
    /// Time to first token and between tokens.
    pub latency: Latency,
    /// The probability (0..1) that a request is answered `error_status` instead.
    pub error_rate: f64,
    /// The status of the errors `error_rate` injects (400..599).
    pub error_status: u16,
    /// Requests per minute (a fixed one-minute window), beyond which the server answers 429.
    pub rate_limit: Option<u32>,
    /// Streams stop after this many content pieces and never finish; non-streaming requests
    /// are never answered.
    pub stall_after: Option<u32>,
    /// Answer every request with this status (400..599) and its error body.
    pub fail_with: Option<u16>,
    /// When set, requests must carry this key (`Authorization: Bearer <key>` for OpenAI,
    /// `x-api-key` and an `anthropic-version` header for Anthropic), or get 401 (400 for a
    /// missing `anthropic-version`).
    pub api_key: Option<String>,
    /// Models that always give one answer, by model name (without directives): a string is
    /// answered as text, anything else as JSON, as if the request carried `$sim_reply`. A
    /// `$sim_reply` or `$sim_replies` in the request wins. The demo's planner is one.
    pub replies: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            tokens: (12, 40),
            latency: Latency::default(),
            error_rate: 0.0,
            error_status: 500,
            rate_limit: None,
            stall_after: None,
            fail_with: None,
            api_key: None,
            replies: std::collections::BTreeMap::new(),
        }
    }
}

/// Delays, each an inclusive range in milliseconds drawn per request from the request's
/// seeded PRNG. The default is no delay at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// Before the first token (and before the first event of a stream).
    pub first_token_ms: (u64, u64),
    /// Before each token after the first.
    pub per_token_ms: (u64, u64),
}

impl Latency {
    /// Fixed delays: `first_token_ms` before the first token, `per_token_ms` before each
    /// later one.
    pub fn fixed(first_token_ms: u64, per_token_ms: u64) -> Self {
        Self {
            first_token_ms: (first_token_ms, first_token_ms),
            per_token_ms: (per_token_ms, per_token_ms),
        }
    }
}

impl SimConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        check_tokens("tokens", self.tokens).map_err(Error::Config)?;
        check_delay("latency.first_token_ms", self.latency.first_token_ms)
            .map_err(Error::Config)?;
        check_delay("latency.per_token_ms", self.latency.per_token_ms).map_err(Error::Config)?;
        check_rate("error_rate", self.error_rate).map_err(Error::Config)?;
        check_status("error_status", self.error_status).map_err(Error::Config)?;
        if let Some(status) = self.fail_with {
            check_status("fail_with", status).map_err(Error::Config)?;
        }
        if self.rate_limit == Some(0) {
            return Err(Error::Config(
                "rate_limit must be at least 1 request per minute".into(),
            ));
        }
        Ok(())
    }
}

pub(super) fn check_tokens(field: &str, (min, max): (u32, u32)) -> Result<(), String> {
    if min > max {
        return Err(format!("{field}: min {min} is above max {max}"));
    }
    if max > TOKENS_MAX {
        return Err(format!("{field}: max {max} is above {TOKENS_MAX}"));
    }
    Ok(())
}

pub(super) fn check_delay(field: &str, (min, max): (u64, u64)) -> Result<(), String> {
    if min > max {
        return Err(format!("{field}: min {min} ms is above max {max} ms"));
    }
    if max > DELAY_MS_MAX {
        return Err(format!("{field}: max {max} ms is above {DELAY_MS_MAX} ms"));
    }
    Ok(())
}

pub(super) fn check_rate(field: &str, rate: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("{field}: {rate} is not within 0..1"))
    }
}

pub(super) fn check_status(field: &str, status: u16) -> Result<(), String> {
    if (400..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "{field}: {status} is not an error status (400..599)"
        ))
    }
}
