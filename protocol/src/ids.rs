//! Typed identifiers and validated names.
//!
//! Ids print short so logs stay readable: tasks as `T42`, agents as `A7`. Objective ids are
//! UUIDv7 (time-ordered, safe to hand out to clients) and print in the canonical form so they can
//! be pasted back into the API; [`ObjectiveId::short`] gives an 8-character form for logs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a string is not a valid id or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not of the id's form.
    #[error("`{text}` is not a valid {what}: {reason}")]
    Invalid {
        /// Which kind of id was expected.
        what: &'static str,
        /// The text that was given (cut to 64 characters).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn invalid(what: &'static str, text: &str, reason: &'static str) -> IdError {
    IdError::Invalid {
        what,
        text: text.chars().take(64).collect(),
        reason,
    }
}

/// The id of an objective: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectiveId(Uuid);

impl ObjectiveId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (used when reading the log back).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// A short form for logs, `O-` and 8 hex digits: the UUID's last random bits, which differ
    /// between ids made in the same millisecond (the leading bits are the timestamp and do not).
    pub fn short(&self) -> String {
        let simple = self.0.simple().to_string();
        format!("O-{}", &simple[24..])
    }
}

impl Default for ObjectiveId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ObjectiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ObjectiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ObjectiveId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .description(Some(
                "The id of an objective: a UUIDv7, so ids sort by creation time.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ObjectiveId {}

impl schemars::JsonSchema for ObjectiveId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ObjectiveId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "uuid",
            "description": "The id of an objective: a UUIDv7, so ids sort by creation time.",
        })
    }
}

impl FromStr for ObjectiveId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| invalid("objective id", s, "expected a UUID"))
    }
}

macro_rules! numeric_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The number inside.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let digits = s.strip_prefix($prefix).unwrap_or(s);
                digits
                    .parse::<u64>()
                    .map(Self)
                    .map_err(|_| invalid($what, s, concat!("expected `", $prefix, "` followed by a number")))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9]+$")))
                    .description(Some(concat!(
                        "A ", $what, ": `", $prefix, "` followed by a number."
                    )))
                    .examples([concat!($prefix, "42")])
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": concat!("^", $prefix, "[0-9]+$"),
                    "description": concat!("The ", $what, ", written `", $prefix, "` followed by a number."),
                    "examples": [concat!($prefix, "42")],
                })
            }
        }
    };
}

numeric_id!(
    /// The id of a task, unique across the coordinator. Prints as `T42`.
    TaskId,
    "T",
    "task id"
);
numeric_id!(
    /// The id of an agent, given by the registry when the agent registers. Prints as `A7`.
    AgentId,
    "A",
    "agent id"
);

/// Checks a name made of lowercase-friendly identifier characters.
fn check_name(what: &'static str, text: &str, max_len: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(invalid(what, text, "must not be empty"));
    }
    if text.len() > max_len {
        return Err(invalid(what, text, "is too long"));
    }
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    if !ok {
        return Err(invalid(
            what,
            text,
            "may hold only letters, digits and `_ - . : /`",
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The longest name accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps a name.
            pub fn new(text: impl AsRef<str>) -> Result<Self, IdError> {
                let text = text.as_ref();
                check_name($what, text, Self::MAX_LEN)?;
                Ok(Self(Arc::from(text)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::new(&*text).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some($max))
                    .pattern(Some("^[A-Za-z0-9_.:/-]+$"))
                    .description(Some(concat!(
                        "A ", $what, ": letters, digits and `_ - . : /`."
                    )))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": "^[A-Za-z0-9_.:/-]+$",
                    "description": concat!("A ", $what, ": letters, digits and `_ - . : /`."),
                })
            }
        }
    };
}

name_type!(
    /// What an agent can do and what a task needs, e.g. `summarize` or `code.review`.
    /// Cheap to clone (shared text).
    Capability,
    "capability",
    64
);
name_type!(
    /// A task's name inside its objective's graph, e.g. `fetch`; dependencies refer to it.
    TaskKey,
    "task key",
    128
);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_print_short_and_parse_back() {
        assert_eq!(TaskId(42).to_string(), "T42");
        assert_eq!(AgentId(7).to_string(), "A7");
        assert_eq!("T42".parse::<TaskId>(), Ok(TaskId(42)));
        assert_eq!("42".parse::<TaskId>(), Ok(TaskId(42)));
        assert!("X1".parse::<TaskId>().is_err());
        let json = serde_json::to_string(&AgentId(7)).unwrap_or_default();
        assert_eq!(json, "\"A7\"");
    }

    #[test]
    fn objective_ids_round_trip_and_are_time_ordered() {
        let a = ObjectiveId::new();
        let b = ObjectiveId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<ObjectiveId>(), Ok(a));
        assert_eq!(a.short().len(), 10);
    }

    #[test]
    fn names_are_validated() {
        assert!(Capability::new("code.review").is_ok());
        assert!(Capability::new("").is_err());
        assert!(Capability::new("has space").is_err());
        assert!(Capability::new("x".repeat(65)).is_err());
        let err = serde_json::from_str::<TaskKey>("\"a b\"")
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("task key"), "{err}");
    }
}
