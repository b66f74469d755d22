//! The declared hooks: the webhooks declared through the API (`HookDeclared`), so that a
//! restart serves them again, until they are deleted (`HookDeleted`).
//!
//! An index and not a read of the log because pruning removes old events that belong to no
//! objective. A hook declared again takes its latest configuration (its secret only by the name
//! of its variable: the event never holds the secret).

use swarm_protocol::Event;

use super::Stamp;

/// A change to the declared hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeclaredHookChange {
    /// Insert the name, or give the name this configuration and seq.
    Declare {
        /// Its name (the key).
        name: String,
        /// Its configuration, as JSON text.
        config: String,
        /// This event's seq.
        declared_seq: i64,
    },
    /// Delete the name.
    Delete {
        /// Its name.
        name: String,
    },
}

/// Appends the change `event` makes, if any, to `changes`.
pub(super) fn observe(changes: &mut Vec<DeclaredHookChange>, event: &Event, stamp: Stamp) {
    match event {
        Event::HookDeclared { name, config } => changes.push(DeclaredHookChange::Declare {
            name: name.clone(),
            config: config.to_string(),
            declared_seq: stamp.seq,
        }),
        Event::HookDeleted { name } => {
            changes.push(DeclaredHookChange::Delete { name: name.clone() });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::fixtures::{hook_declared, hook_deleted};

    #[test]
    fn declarations_become_upserts_and_deletes_in_log_order() {
        let mut changes = Vec::new();
        for (seq, event) in [
            (3, hook_declared("build", "A")),
            (4, hook_deleted("build")),
            (5, hook_declared("build", "B")),
        ] {
            observe(&mut changes, &event, Stamp { seq, at_ms: 9 });
        }
        let Event::HookDeclared { config, .. } = hook_declared("build", "B") else {
            unreachable!("hook_declared makes a HookDeclared");
        };
        assert_eq!(changes.len(), 3);
        assert_eq!(
            changes[1],
            DeclaredHookChange::Delete {
                name: "build".into()
            }
        );
        assert_eq!(
            changes[2],
            DeclaredHookChange::Declare {
                name: "build".into(),
                config: config.to_string(),
                declared_seq: 5,
            }
        );
    }
}
