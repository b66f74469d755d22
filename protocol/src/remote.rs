//! The remote-agent protocol: the JSON messages that a worker process, in any language and on
//! any machine, exchanges with the coordinator to run attempts of tasks, as a local agent does
//! through the `Agent` trait of `swarm-agents`.
//!
//! `protocol/REMOTE.md` is the document for people who write workers: the NATS subjects, how
//! JetStream's acknowledgements map onto leases and heartbeats, fencing, idempotency, the
//! version rule, and an example of every message. This module is where the messages are
//! defined; their JSON Schemas under `protocol/schema/remote/` are generated from these types
//! ([`schema`]), and a test keeps the committed files equal to what the types generate.
//!
//! # Layout
//! - [`version`]: [`PROTOCOL_VERSION`] and the rule that refuses a worker of another major
//!   version.
//! - [`membership`]: an agent joining ([`Announce`], answered by [`AnnounceReply`]), staying
//!   ([`Heartbeat`], answered by [`HeartbeatReply`]) and leaving ([`Leave`]).
//! - [`attempt`]: one attempt delivered to a worker ([`Attempt`]), and [`AttemptId`], the
//!   identity that every answer about it carries.
//! - [`progress`]: what a running attempt reports ([`Progress`]).
//! - [`result`]: how an attempt ended ([`AttemptResult`] and its [`Outcome`]).
//! - [`schema`]: the JSON Schema of every message.
//!
//! # Invariants
//! - Every string, list and JSON value a message holds has a ceiling, and every message's
//!   `validate()` ([`Message::validate`]) checks them and the rules serde cannot express; its
//!   error names the field. [`decode`] checks the size, reads and validates, so nothing
//!   unchecked gets past it.
//! - Every answer about an attempt ([`Progress`], [`AttemptResult`]) carries its
//!   [`AttemptId`], so the coordinator can drop (fence) one that comes from an attempt that is
//!   no longer current.
//! - Receivers ignore fields they do not know, unlike the HTTP API's input types: a minor
//!   version only adds optional fields, and a worker of an older minor version must still be
//!   understood (see [`version`]). Two nested types are the exception, because they are the
//!   HTTP API's own and refuse unknown fields as there: `Usage`, and the `TaskSpec`s of
//!   spawned follow-ups.
//! - No I/O: the transport (NATS JetStream) belongs to the coordinator's edges and to the
//!   workers.

pub mod attempt;
pub mod membership;
pub mod progress;
pub mod result;
pub mod schema;
pub mod version;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bounds::{DURATION_MAX, JsonLimits, OutOfBounds, check_json};

pub use attempt::{Attempt, AttemptId, TraceContext};
pub use membership::{
    Announce, AnnounceRefused, AnnounceReply, Heartbeat, HeartbeatReply, Leave, LeaveMode,
    read_announce,
};
pub use progress::{Progress, TextDelta};
pub use result::{AttemptResult, Outcome};
pub use version::{PROTOCOL_VERSION, ProtocolVersion, VersionMismatch, check_version};

/// The largest encoded message, in bytes: NATS's default `max_payload` (1 MiB). A value that
/// does not fit (a very large output) is the task's to store elsewhere and refer to.
pub const MESSAGE_BYTES_MAX: usize = 1024 * 1024;

/// A message of the protocol.
pub trait Message: Serialize + DeserializeOwned + schemars::JsonSchema {
    /// The message's name: its schema is `schema/remote/{NAME}.json` and its examples
    /// `schema/remote/examples/{NAME}*.json`.
    const NAME: &'static str;

    /// Checks what serde cannot: every ceiling, and the rules between fields. The error names
    /// the field at fault.
    fn validate(&self) -> Result<(), Invalid>;
}

/// A field of a message that breaks a rule of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct Invalid {
    /// The field, from the message's top (`attempt.number`, `outcome.tasks[2].hard_timeout`).
    pub field: String,
    /// What is wrong with it, naming the ceiling where there is one.
    pub problem: String,
}

impl Invalid {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<OutOfBounds> for Invalid {
    fn from(e: OutOfBounds) -> Self {
        Self {
            field: e.field,
            problem: e.message,
        }
    }
}

/// Why bytes are not a message, or a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The encoded message is larger than [`MESSAGE_BYTES_MAX`].
    #[error(
        "a `{message}` of {bytes} bytes is larger than the most accepted, {max}",
        max = MESSAGE_BYTES_MAX
    )]
    TooLarge {
        /// Which message.
        message: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// The bytes are not the message's JSON (serde's error names the field or the position).
    #[error("not a valid `{message}`: {reason}")]
    Json {
        /// Which message.
        message: &'static str,
        /// What serde said.
        reason: String,
    },
    /// The message breaks a rule of the protocol.
    #[error("not a valid `{message}`: {invalid}")]
    Invalid {
        /// Which message.
        message: &'static str,
        /// The field and the problem.
        invalid: Invalid,
    },
}

/// Reads a message: checks its size, parses it and [validates](Message::validate) it.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, Error> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(Error::TooLarge {
            message: M::NAME,
            bytes: bytes.len(),
        });
    }
    let message: M = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        message: M::NAME,
        reason: e.to_string(),
    })?;
    message.validate().map_err(|invalid| Error::Invalid {
        message: M::NAME,
        invalid,
    })?;
    Ok(message)
}

/// Writes a message: [validates](Message::validate) it, encodes it and checks its size, so
/// that what is sent is what [`decode`] accepts.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, Error> {
    message.validate().map_err(|invalid| Error::Invalid {
        message: M::NAME,
        invalid,
    })?;
    let bytes = serde_json::to_vec(message).map_err(|e| Error::Json {
        message: M::NAME,
        reason: e.to_string(),
    })?;
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(Error::TooLarge {
            message: M::NAME,
            bytes: bytes.len(),
        });
    }
    Ok(bytes)
}

/// The most capabilities one agent announces.
pub const CAPABILITIES_MAX: usize = 64;
/// The most attempts one agent runs at once.
pub const CONCURRENCY_MAX: u32 = 4096;
/// The longest agent name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// The longest session id (a worker process's run), in bytes.
pub const SESSION_BYTES_MAX: usize = 64;
/// The longest host name, in bytes (a DNS name's limit).
pub const HOST_BYTES_MAX: usize = 255;
/// The longest agent description, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 1024;
/// The most labels of one agent.
pub const LABELS_MAX: usize = 32;
/// The longest label key, in bytes.
pub const LABEL_KEY_BYTES_MAX: usize = 64;
/// The longest label value, in bytes.
pub const LABEL_VALUE_BYTES_MAX: usize = 256;
/// The longest reason (of a health report, a drain, a leave, a refusal), in bytes.
pub const REASON_BYTES_MAX: usize = 1024;
/// The longest NATS subject or consumer name a reply names, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 255;
/// The longest failure message, in bytes.
pub const FAILURE_MESSAGE_BYTES_MAX: usize = 8 * 1024;
/// The longest streamed text delta of one progress message, in bytes.
pub const TEXT_DELTA_BYTES_MAX: usize = 64 * 1024;
/// The most dependency outputs one attempt carries (an objective's `max_fanout` ceiling).
pub const UPSTREAM_MAX: usize = 10_000;
/// The most follow-up tasks one outcome spawns.
pub const SPAWNED_TASKS_MAX: usize = 1_000;
/// The longest W3C `tracestate`, in bytes (the size the W3C recommendation lets a vendor cut
/// it to).
pub const TRACESTATE_BYTES_MAX: usize = 512;

/// The longest duration any message gives, in milliseconds ([`DURATION_MAX`]).
pub const DURATION_MS_MAX: u64 = DURATION_MAX.as_secs() * 1000;

/// Checks free text (a description, a message): at most `max` bytes, no control characters
/// but line breaks and tabs.
fn check_text(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.len() > max {
        return Err(Invalid::new(
            field,
            format!(
                "{} bytes are more than the most accepted, {max}",
                text.len()
            ),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::new(
            field,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// Checks a token (a session id, a host, a label key): 1 to `max` bytes of printable ASCII
/// without spaces.
fn check_token(field: &str, text: &str, max: usize) -> Result<(), Invalid> {
    if text.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(Invalid::new(
            field,
            format!(
                "{} bytes are more than the most accepted, {max}",
                text.len()
            ),
        ));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            format!("contains {c:?}; only printable ASCII without spaces is allowed"),
        ));
    }
    Ok(())
}

/// Checks a JSON value against the hard ceilings of [`JsonLimits`] (depth, string and array
/// sizes); the error names the node within `field`.
fn check_value(field: &str, value: &Value) -> Result<(), Invalid> {
    check_json(value, &JsonLimits::default()).map_err(|e| e.within(field).into())
}

/// Checks a duration in milliseconds: at most [`DURATION_MS_MAX`], and above zero when
/// `positive`.
fn check_ms(field: &str, ms: u64, positive: bool) -> Result<(), Invalid> {
    if positive && ms == 0 {
        return Err(Invalid::new(field, "must be longer than zero"));
    }
    if ms > DURATION_MS_MAX {
        return Err(Invalid::new(
            field,
            format!("{ms} ms is longer than the most accepted, {DURATION_MS_MAX} ms (a year)"),
        ));
    }
    Ok(())
}

/// A duration in whole milliseconds, rounded up so that a timeout never shortens, and
/// saturating.
fn millis(duration: std::time::Duration) -> u64 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn decode_checks_the_size_the_json_and_the_rules_naming_the_message() {
        let big = vec![b' '; MESSAGE_BYTES_MAX + 1];
        let err = decode::<Leave>(&big).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    message: "leave",
                    ..
                }
            ),
            "{err}"
        );

        let err = decode::<Leave>(br#"{"agent": "A1"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `session`"), "{err}");

        let err =
            decode::<Leave>(br#"{"agent": "A1", "session": "a b", "mode": "now"}"#).unwrap_err();
        let Error::Invalid { message, invalid } = &err else {
            panic!("{err}")
        };
        assert_eq!((*message, invalid.field.as_str()), ("leave", "session"));

        let leave: Leave =
            decode(br#"{"agent": "A1", "session": "s-1", "mode": "drain", "later": 1}"#).unwrap();
        assert_eq!(leave.mode, LeaveMode::Drain, "an unknown field is ignored");
        assert_eq!(decode::<Leave>(&encode(&leave).unwrap()).unwrap(), leave);
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let leave = Leave {
            agent: crate::AgentId(1),
            session: String::new(),
            mode: LeaveMode::Now,
            reason: None,
        };
        let err = encode(&leave).unwrap_err();
        assert!(
            err.to_string().contains("`session`: must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn text_tokens_and_durations_name_their_ceilings() {
        assert_eq!(check_text("d", "two\nlines", 16), Ok(()));
        assert!(
            check_text("d", "bell\u{7}", 16)
                .unwrap_err()
                .problem
                .contains("control")
        );
        assert!(
            check_text("d", "long", 3)
                .unwrap_err()
                .problem
                .contains("most accepted, 3")
        );
        assert!(check_token("host", "", 8).is_err());
        assert!(check_token("host", "a b", 8).is_err());
        assert_eq!(check_token("host", "w-1.lan", 8), Ok(()));
        assert_eq!(check_ms("t", DURATION_MS_MAX, true), Ok(()));
        assert_eq!(check_ms("t", 0, true).unwrap_err().field, "t");
        assert!(check_ms("t", DURATION_MS_MAX + 1, false).is_err());
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
