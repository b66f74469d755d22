//! What a trigger request is refused for: a declaration that is not valid, a name that is
//! unknown or taken. Converted into the crate's [`crate::Error`] with `From`, where each keeps
//! its meaning (an invalid field, not found, exists, declared in `swarm.toml`) and says
//! whether it is about a schedule or a hook.

use crate::error::Subject;
use crate::triggers::cron::SpecError;
use crate::triggers::hooks::DeclarationError;

/// Why the trigger owner refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A schedule's spec is not valid (the error names the field).
    #[error(transparent)]
    InvalidSchedule(#[from] SpecError),
    /// No schedule has that name.
    #[error("schedule `{0}` not found")]
    UnknownSchedule(String),
    /// A schedule with that name exists already.
    #[error("a schedule named `{0}` exists already; delete it first")]
    ScheduleExists(String),
    /// A hook's declaration is not valid (the error names the field).
    #[error(transparent)]
    InvalidHook(#[from] DeclarationError),
    /// No hook has that name.
    #[error("hook `{0}` not found")]
    UnknownHook(String),
    /// A hook declared through the API has that name already.
    #[error("a hook named `{0}` exists already; delete it first")]
    HookExists(String),
    /// The hook is declared in `swarm.toml`, which the API does not change.
    #[error(
        "hook `{0}` is declared in swarm.toml; the API can neither replace nor delete it \
         (change the file and restart)"
    )]
    HookConfigured(String),
}

impl From<Error> for crate::Error {
    fn from(err: Error) -> Self {
        use Subject::{Hook, Schedule};
        match err {
            Error::InvalidSchedule(SpecError { field, message }) => Self::Invalid {
                subject: Schedule,
                field: field.to_owned(),
                message,
            },
            Error::UnknownSchedule(name) => Self::NotFound {
                subject: Schedule,
                name,
            },
            Error::ScheduleExists(name) => Self::Exists {
                subject: Schedule,
                name,
            },
            Error::InvalidHook(DeclarationError { field, message }) => Self::Invalid {
                subject: Hook,
                field,
                message,
            },
            Error::UnknownHook(name) => Self::NotFound {
                subject: Hook,
                name,
            },
            Error::HookExists(name) => Self::Exists {
                subject: Hook,
                name,
            },
            Error::HookConfigured(name) => Self::Configured {
                subject: Hook,
                name,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's error says the same as the trigger error it came from.
    #[test]
    fn the_conversion_keeps_the_message() {
        for err in [
            Error::InvalidSchedule(SpecError {
                field: "cron",
                message: "bad".into(),
            }),
            Error::UnknownSchedule("s".into()),
            Error::ScheduleExists("s".into()),
            Error::InvalidHook(DeclarationError::new("template.goal", "bad")),
            Error::UnknownHook("h".into()),
            Error::HookExists("h".into()),
            Error::HookConfigured("h".into()),
        ] {
            let text = err.to_string();
            assert_eq!(crate::Error::from(err).to_string(), text);
        }
    }
}
