//! The declared agents: the agents registered through the API (`AgentDeclared`), so that a
//! restart registers them again, until they are undeclared (`AgentUndeclared`).
//!
//! An index and not a read of the log because pruning removes old agent events. A name declared
//! again (a restart registered it anew, under a new id) keeps the place of its first
//! declaration: agents come back in the order they were first declared.

use swarm_protocol::Event;

use super::Stamp;
use crate::log::{BatchError, to_sql_int};

/// A change to the declared agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeclaredAgentChange {
    /// Insert the name; a name already declared takes this id and configuration and keeps its
    /// `declared_seq`.
    Declare {
        /// Its name (the key).
        name: String,
        /// The id it was registered under.
        agent: i64,
        /// Its configuration, as JSON text.
        config: String,
        /// This event's seq: the place of a name declared for the first time.
        declared_seq: i64,
    },
    /// Delete the name.
    Undeclare {
        /// Its name.
        name: String,
    },
}

/// Appends the change `event` makes, if any, to `changes`.
pub(super) fn observe(
    changes: &mut Vec<DeclaredAgentChange>,
    event: &Event,
    stamp: Stamp,
) -> Result<(), BatchError> {
    match event {
        Event::AgentDeclared {
            agent,
            name,
            config,
        } => changes.push(DeclaredAgentChange::Declare {
            name: name.clone(),
            agent: to_sql_int("agent id", agent.0)?,
            config: config.to_string(),
            declared_seq: stamp.seq,
        }),
        Event::AgentUndeclared { name, .. } => {
            changes.push(DeclaredAgentChange::Undeclare { name: name.clone() });
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::conformance::fixtures::{declared, registered, undeclared};

    #[test]
    fn declarations_become_upserts_and_deletes_in_log_order() {
        let mut changes = Vec::new();
        let events = [
            (4, declared(1, "a")),
            (5, registered(2)),
            (6, undeclared(1, "a")),
            (7, declared(3, "a")),
        ];
        for (seq, event) in &events {
            let stamp = Stamp {
                seq: *seq,
                at_ms: 1,
            };
            observe(&mut changes, event, stamp).unwrap();
        }
        let config = |agent: u64| {
            serde_json::json!({ "name": "a", "model": format!("m-{agent}") }).to_string()
        };
        assert_eq!(
            changes,
            [
                DeclaredAgentChange::Declare {
                    name: "a".into(),
                    agent: 1,
                    config: config(1),
                    declared_seq: 4,
                },
                DeclaredAgentChange::Undeclare { name: "a".into() },
                DeclaredAgentChange::Declare {
                    name: "a".into(),
                    agent: 3,
                    config: config(3),
                    declared_seq: 7,
                },
            ]
        );
    }

    #[test]
    fn an_agent_id_beyond_63_bits_is_refused() {
        let mut changes = Vec::new();
        let stamp = Stamp { seq: 1, at_ms: 1 };
        let err = observe(&mut changes, &declared(u64::MAX, "a"), stamp).unwrap_err();
        assert!(matches!(
            err,
            BatchError::BeyondSqlInt {
                what: "agent id",
                ..
            }
        ));
        assert!(changes.is_empty());
    }
}
