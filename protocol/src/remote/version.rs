//! The protocol's version and the rule between a worker's and the coordinator's.
//!
//! A version is `MAJOR.MINOR`. A minor version only adds: optional fields, which a receiver
//! of an older minor version ignores, or values a sender uses only once it knows the other side
//! understands them. A change that an older receiver would misread (a field removed, renamed,
//! made required or given a new meaning) takes a new major version. So the coordinator accepts
//! a worker of any minor version of its own major version, and refuses one of another major
//! version, with a message naming both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the protocol that this build speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// A protocol version, `MAJOR.MINOR` in JSON (`"1.0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Changes that an older receiver would misread.
    pub major: u16,
    /// Additions that an older receiver ignores.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Whether a peer speaking `other` is accepted by one speaking `self`: the same major
    /// version; any minor version.
    pub fn accepts(self, other: ProtocolVersion) -> Result<(), VersionMismatch> {
        if self.major == other.major {
            Ok(())
        } else {
            Err(VersionMismatch {
                worker: other,
                coordinator: self,
            })
        }
    }
}

/// Checks a worker's version against [`PROTOCOL_VERSION`]: refused when the major versions
/// differ, accepted whatever the minor versions are.
pub fn check_version(worker: ProtocolVersion) -> Result<(), VersionMismatch> {
    PROTOCOL_VERSION.accepts(worker)
}

/// A worker whose major version is not the coordinator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the worker speaks protocol {worker} and the coordinator speaks protocol {coordinator}: \
     their major versions differ, so they would misread each other; run a worker made for \
     protocol {}.x",
    .coordinator.major
)]
pub struct VersionMismatch {
    /// The worker's version.
    pub worker: ProtocolVersion,
    /// The coordinator's version.
    pub coordinator: ProtocolVersion,
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why text is not a `MAJOR.MINOR` version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a protocol version: expected `MAJOR.MINOR`, e.g. `1.0`")]
pub struct BadVersion(String);

impl FromStr for ProtocolVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.chars().take(32).collect());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u16>().map_err(|_| bad())
        };
        Ok(Self {
            major: number(major)?,
            minor: number(minor)?,
        })
    }
}

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ProtocolVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProtocolVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{1,5}\\.[0-9]{1,5}$",
            "description": "A protocol version, `MAJOR.MINOR`. Peers of the same major version \
                            understand each other; a minor version only adds optional fields.",
            "examples": [PROTOCOL_VERSION.to_string()],
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(text: &str) -> ProtocolVersion {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn versions_read_and_print_as_major_dot_minor() {
        assert_eq!(v("1.0"), ProtocolVersion { major: 1, minor: 0 });
        assert_eq!(v("12.34").to_string(), "12.34");
        for bad in [
            "1", "1.", ".1", "1.0.0", "v1.0", "-1.0", "1.+2", "70000.0", "1.a",
        ] {
            let err = bad.parse::<ProtocolVersion>().unwrap_err();
            assert!(err.to_string().contains("MAJOR.MINOR"), "{bad}: {err}");
        }
        let json = serde_json::to_string(&PROTOCOL_VERSION).unwrap();
        assert_eq!(json, format!("\"{PROTOCOL_VERSION}\""));
        assert_eq!(
            serde_json::from_str::<ProtocolVersion>(&json).unwrap(),
            PROTOCOL_VERSION
        );
        assert!(
            serde_json::from_str::<ProtocolVersion>("1.0").is_err(),
            "a number"
        );
    }

    #[test]
    fn another_minor_version_is_accepted_and_another_major_refused_naming_both() {
        let coordinator = v("1.3");
        assert_eq!(coordinator.accepts(v("1.0")), Ok(()));
        assert_eq!(coordinator.accepts(v("1.9")), Ok(()));
        let err = coordinator.accepts(v("2.1")).unwrap_err();
        assert_eq!(
            err,
            VersionMismatch {
                worker: v("2.1"),
                coordinator
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("worker speaks protocol 2.1")
                && message.contains("coordinator speaks protocol 1.3")
                && message.contains("1.x"),
            "{message}"
        );
        assert!(coordinator.accepts(v("0.9")).is_err());
        assert_eq!(check_version(PROTOCOL_VERSION), Ok(()));
        let next_major = ProtocolVersion {
            major: PROTOCOL_VERSION.major + 1,
            minor: 0,
        };
        assert!(check_version(next_major).is_err());
    }
}
