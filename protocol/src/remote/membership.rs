//! An agent's membership: it announces itself, heartbeats while it lives and leaves.
//!
//! One worker process may host several agents; each is announced on its own and gets its own
//! [`AgentId`], as a local agent does when it registers. The worker picks a `session` (a
//! random id) each time it starts: the coordinator tells a restarted worker from a slow one by
//! it, so the attempts of the previous run are known lost at once instead of when their leases
//! run out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::version::{PROTOCOL_VERSION, ProtocolVersion, VersionMismatch, check_version};
use super::{
    CAPABILITIES_MAX, CONCURRENCY_MAX, DESCRIPTION_BYTES_MAX, Error, HOST_BYTES_MAX, Invalid,
    LABEL_KEY_BYTES_MAX, LABEL_VALUE_BYTES_MAX, LABELS_MAX, MESSAGE_BYTES_MAX, Message,
    NAME_BYTES_MAX, REASON_BYTES_MAX, SESSION_BYTES_MAX, SUBJECT_BYTES_MAX, check_ms, check_text,
    check_token, decode,
};
use crate::agent::{AgentDescriptor, Health};
use crate::ids::{AgentId, Capability};

/// An agent joining the swarm: sent by its worker when it starts, and again when the
/// coordinator asks for it ([`HeartbeatReply::Announce`]). Answered by an [`AnnounceReply`].
///
/// It carries what the registry knows of a local agent ([`AgentDescriptor`], without the id
/// the coordinator gives), and where the agent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Announce {
    /// The protocol version the worker speaks; one of another major version is refused.
    pub protocol_version: ProtocolVersion,
    /// The agent's name, unique in the swarm (`summarizer-1`): printable ASCII without spaces.
    #[schemars(length(min = 1, max = NAME_BYTES_MAX))]
    pub name: String,
    /// The id of this run of the worker process, new each time it starts (a random UUID).
    #[schemars(length(min = 1, max = SESSION_BYTES_MAX))]
    pub session: String,
    /// What it can do.
    #[schemars(length(min = 1, max = CAPABILITIES_MAX))]
    pub capabilities: Vec<Capability>,
    /// How many attempts it runs at once; the coordinator never gives it more.
    #[schemars(range(min = 1, max = CONCURRENCY_MAX))]
    pub max_concurrency: u32,
    /// What it is good at, in a sentence, for people and for the planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DESCRIPTION_BYTES_MAX))]
    pub description: Option<String>,
    /// Free-form labels (region, model family, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = LABELS_MAX))]
    pub labels: BTreeMap<String, String>,
    /// The machine it runs on (its host name), shown to operators.
    #[schemars(length(min = 1, max = HOST_BYTES_MAX))]
    pub host: String,
    /// Relative cost of one task on this agent; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cost_hint: Option<f64>,
}

impl Announce {
    /// The agent as the registry describes it, with the id the coordinator gave it.
    pub fn descriptor(&self, id: AgentId) -> AgentDescriptor {
        AgentDescriptor {
            id,
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
            max_concurrency: self.max_concurrency,
            labels: self.labels.clone(),
            cost_hint: self.cost_hint,
            description: self.description.clone(),
        }
    }
}

impl Message for Announce {
    const NAME: &'static str = "announce";

    fn validate(&self) -> Result<(), Invalid> {
        check_token("name", &self.name, NAME_BYTES_MAX)?;
        check_token("session", &self.session, SESSION_BYTES_MAX)?;
        if self.capabilities.is_empty() {
            return Err(Invalid::new("capabilities", "an agent needs at least one"));
        }
        if self.capabilities.len() > CAPABILITIES_MAX {
            return Err(Invalid::new(
                "capabilities",
                format!(
                    "{} are more than the most accepted, {CAPABILITIES_MAX}",
                    self.capabilities.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, capability) in self.capabilities.iter().enumerate() {
            if !seen.insert(capability) {
                return Err(Invalid::new(
                    format!("capabilities[{i}]"),
                    format!("`{capability}` is given twice"),
                ));
            }
        }
        if !(1..=CONCURRENCY_MAX).contains(&self.max_concurrency) {
            return Err(Invalid::new(
                "max_concurrency",
                format!(
                    "{} is not between 1 and {CONCURRENCY_MAX}",
                    self.max_concurrency
                ),
            ));
        }
        if let Some(description) = &self.description {
            check_text("description", description, DESCRIPTION_BYTES_MAX)?;
        }
        if self.labels.len() > LABELS_MAX {
            return Err(Invalid::new(
                "labels",
                format!(
                    "{} are more than the most accepted, {LABELS_MAX}",
                    self.labels.len()
                ),
            ));
        }
        for (key, value) in &self.labels {
            check_token("labels", key, LABEL_KEY_BYTES_MAX)?;
            check_text(&format!("labels.{key}"), value, LABEL_VALUE_BYTES_MAX)?;
        }
        check_token("host", &self.host, HOST_BYTES_MAX)?;
        if let Some(cost) = self.cost_hint
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(Invalid::new(
                "cost_hint",
                "must be a finite number, zero or more",
            ));
        }
        Ok(())
    }
}

/// Reads an [`Announce`] and checks the worker's version first, from its `protocol_version`
/// alone: a worker of another major version is refused by the version rule, with both
/// versions named, even when the rest of its message is not this version's.
pub fn read_announce(bytes: &[u8]) -> Result<Announce, AnnounceRefused> {
    #[derive(Deserialize)]
    struct Probe {
        protocol_version: ProtocolVersion,
    }
    if bytes.len() <= MESSAGE_BYTES_MAX
        && let Ok(probe) = serde_json::from_slice::<Probe>(bytes)
    {
        check_version(probe.protocol_version)?;
    }
    Ok(decode(bytes)?)
}

/// Why an announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceRefused {
    /// The worker speaks another major version.
    #[error(transparent)]
    Version(#[from] VersionMismatch),
    /// The message is not a valid announcement.
    #[error(transparent)]
    Message(#[from] Error),
}

/// The coordinator's answer to an [`Announce`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AnnounceReply {
    /// The agent is in the registry and may be given work.
    Accepted {
        /// The id the coordinator gave it: every later message of the agent carries it.
        agent: AgentId,
        /// The protocol version the coordinator speaks.
        protocol_version: ProtocolVersion,
        /// How often the worker sends a [`Heartbeat`] for the agent, in milliseconds. The
        /// agent is marked down after missing a few in a row.
        #[schemars(range(min = 1))]
        heartbeat_interval_ms: u64,
        /// How long one delivery of an attempt is leased to the worker (JetStream's `AckWait`),
        /// in milliseconds: a running attempt acknowledges progress more often than this, or it
        /// is taken to be lost.
        #[schemars(range(min = 1))]
        lease_ms: u64,
        /// The subject the agent's attempts are published on.
        #[schemars(length(min = 1, max = SUBJECT_BYTES_MAX))]
        attempts_subject: String,
        /// The durable JetStream consumer the worker pulls the agent's attempts from.
        #[schemars(length(min = 1, max = SUBJECT_BYTES_MAX))]
        attempts_consumer: String,
    },
    /// The agent is not taken; the message says why (another major version, an invalid
    /// announcement, a name already in use).
    Refused {
        /// The protocol version the coordinator speaks.
        protocol_version: ProtocolVersion,
        /// Why, naming the field or both versions.
        #[schemars(length(max = REASON_BYTES_MAX))]
        message: String,
    },
}

impl AnnounceReply {
    /// The refusal of an announcement for this reason.
    pub fn refused(reason: &impl std::fmt::Display) -> Self {
        let mut message = reason.to_string();
        if message.len() > REASON_BYTES_MAX {
            let mut end = REASON_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self::Refused {
            protocol_version: PROTOCOL_VERSION,
            message,
        }
    }
}

impl Message for AnnounceReply {
    const NAME: &'static str = "announce_reply";

    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Accepted {
                heartbeat_interval_ms,
                lease_ms,
                attempts_subject,
                attempts_consumer,
                ..
            } => {
                check_ms("heartbeat_interval_ms", *heartbeat_interval_ms, true)?;
                check_ms("lease_ms", *lease_ms, true)?;
                check_token("attempts_subject", attempts_subject, SUBJECT_BYTES_MAX)?;
                check_token("attempts_consumer", attempts_consumer, SUBJECT_BYTES_MAX)
            }
            Self::Refused { message, .. } => check_text("message", message, REASON_BYTES_MAX),
        }
    }
}

/// A sign of life of one agent, sent every `heartbeat_interval_ms` by its worker (whether or
/// not it runs anything). Answered by a [`HeartbeatReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Heartbeat {
    /// The agent.
    pub agent: AgentId,
    /// The worker's session, as announced.
    #[schemars(length(min = 1, max = SESSION_BYTES_MAX))]
    pub session: String,
    /// Attempts of the agent running on the worker now.
    #[schemars(range(max = CONCURRENCY_MAX))]
    pub in_flight: u32,
    /// The agent's health as it sees it: `up`, `degraded` (working, but failing or throttled:
    /// chosen only when no agent that is up has room) or `down` (give it no work, e.g. its API
    /// key was refused). Draining is said with a [`Leave`].
    #[serde(default = "up")]
    pub health: Health,
    /// Why, when it is not up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = REASON_BYTES_MAX))]
    pub reason: Option<String>,
}

fn up() -> Health {
    Health::Up
}

impl Message for Heartbeat {
    const NAME: &'static str = "heartbeat";

    fn validate(&self) -> Result<(), Invalid> {
        check_token("session", &self.session, SESSION_BYTES_MAX)?;
        if self.in_flight > CONCURRENCY_MAX {
            return Err(Invalid::new(
                "in_flight",
                format!(
                    "{} is more than the most accepted, {CONCURRENCY_MAX}",
                    self.in_flight
                ),
            ));
        }
        if self.health == Health::Draining {
            return Err(Invalid::new(
                "health",
                "an agent says it drains with a `leave` of mode `drain`",
            ));
        }
        if let Some(reason) = &self.reason {
            check_text("reason", reason, REASON_BYTES_MAX)?;
        }
        Ok(())
    }
}

/// The coordinator's answer to a [`Heartbeat`]: what the worker does next with the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "directive", rename_all = "snake_case")]
pub enum HeartbeatReply {
    /// Nothing changes.
    Continue,
    /// The agent is given no new work (`DELETE /v1/agents/{id}`, or the coordinator shuts
    /// down): the worker finishes the attempts it runs, then sends a [`Leave`] of mode
    /// `drain` and stops pulling.
    Drain {
        /// Why.
        #[schemars(length(max = REASON_BYTES_MAX))]
        reason: String,
    },
    /// The coordinator does not know the agent under this session (it restarted, or marked
    /// the agent down after missed heartbeats): the worker announces it again and uses the
    /// id of the new answer.
    Announce,
}

impl Message for HeartbeatReply {
    const NAME: &'static str = "heartbeat_reply";

    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Drain { reason } => check_text("reason", reason, REASON_BYTES_MAX),
            Self::Continue | Self::Announce => Ok(()),
        }
    }
}

/// An agent leaving the swarm, sent by its worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Leave {
    /// The agent.
    pub agent: AgentId,
    /// The worker's session, as announced.
    #[schemars(length(min = 1, max = SESSION_BYTES_MAX))]
    pub session: String,
    /// How it leaves.
    pub mode: LeaveMode,
    /// Why (`SIGTERM`, `scaling down`), for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = REASON_BYTES_MAX))]
    pub reason: Option<String>,
}

/// How an agent leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaveMode {
    /// It takes no new work and finishes what it runs, sending each result; the registry
    /// marks it draining, and forgets it once its last attempt ended. A graceful shutdown
    /// (`SIGTERM`) sends this.
    Drain,
    /// It is gone now: the attempts it was running are lost and run again elsewhere at once,
    /// without waiting for their leases to run out.
    Now,
}

impl Message for Leave {
    const NAME: &'static str = "leave";

    fn validate(&self) -> Result<(), Invalid> {
        check_token("session", &self.session, SESSION_BYTES_MAX)?;
        if let Some(reason) = &self.reason {
            check_text("reason", reason, REASON_BYTES_MAX)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A change that breaks one field of a valid message.
    type Breakage = Box<dyn Fn(&mut Announce)>;

    fn announce() -> Announce {
        Announce {
            protocol_version: PROTOCOL_VERSION,
            name: "summarizer-1".into(),
            session: "4f1c2a9e".into(),
            capabilities: vec![Capability::new("summarize").unwrap()],
            max_concurrency: 4,
            description: Some("Summarizes documents.".into()),
            labels: BTreeMap::from([("region".into(), "eu-west".into())]),
            host: "worker-3.lan".into(),
            cost_hint: None,
        }
    }

    fn field_of(result: Result<(), Invalid>) -> String {
        result.unwrap_err().field
    }

    #[test]
    fn an_announcement_maps_onto_the_registry_descriptor() {
        let announce = announce();
        assert_eq!(announce.validate(), Ok(()));
        let descriptor = announce.descriptor(AgentId(7));
        assert_eq!(descriptor.id, AgentId(7));
        assert_eq!(descriptor.name, "summarizer-1");
        assert_eq!(descriptor.capabilities, announce.capabilities);
        assert_eq!(descriptor.max_concurrency, 4);
        assert_eq!(descriptor.labels["region"], "eu-west");
        assert_eq!(descriptor.description, announce.description);
    }

    #[test]
    fn an_announcement_over_a_ceiling_is_refused_naming_the_field() {
        let cases: Vec<(&str, Breakage)> = vec![
            (
                "name",
                Box::new(|a| a.name = "x".repeat(NAME_BYTES_MAX + 1)),
            ),
            ("name", Box::new(|a| a.name = "has space".into())),
            ("session", Box::new(|a| a.session.clear())),
            ("capabilities", Box::new(|a| a.capabilities.clear())),
            (
                "capabilities",
                Box::new(|a| {
                    a.capabilities = (0..=CAPABILITIES_MAX)
                        .map(|i| Capability::new(format!("c{i}")).unwrap())
                        .collect();
                }),
            ),
            (
                "capabilities[1]",
                Box::new(|a| a.capabilities.push(a.capabilities[0].clone())),
            ),
            ("max_concurrency", Box::new(|a| a.max_concurrency = 0)),
            (
                "max_concurrency",
                Box::new(|a| a.max_concurrency = CONCURRENCY_MAX + 1),
            ),
            (
                "description",
                Box::new(|a| a.description = Some("d".repeat(DESCRIPTION_BYTES_MAX + 1))),
            ),
            (
                "labels",
                Box::new(|a| {
                    a.labels = (0..=LABELS_MAX)
                        .map(|i| (format!("k{i}"), "v".into()))
                        .collect();
                }),
            ),
            (
                "labels",
                Box::new(|a| {
                    a.labels
                        .insert("k".repeat(LABEL_KEY_BYTES_MAX + 1), "v".into());
                }),
            ),
            (
                "labels.region",
                Box::new(|a| {
                    a.labels
                        .insert("region".into(), "v".repeat(LABEL_VALUE_BYTES_MAX + 1));
                }),
            ),
            (
                "host",
                Box::new(|a| a.host = "h".repeat(HOST_BYTES_MAX + 1)),
            ),
            ("cost_hint", Box::new(|a| a.cost_hint = Some(f64::NAN))),
            ("cost_hint", Box::new(|a| a.cost_hint = Some(-1.0))),
        ];
        for (field, break_it) in cases {
            let mut announce = announce();
            break_it(&mut announce);
            assert_eq!(field_of(announce.validate()), field, "{announce:?}");
        }
    }

    #[test]
    fn another_major_version_is_refused_by_the_version_rule_whatever_else_it_sends() {
        let future = json!({
            "protocol_version": "2.0", "name": "n", "a_field_of_version_2": {"x": 1}
        });
        let err = read_announce(&serde_json::to_vec(&future).unwrap()).unwrap_err();
        assert!(matches!(err, AnnounceRefused::Version(_)), "{err}");
        let reply = AnnounceReply::refused(&err);
        let AnnounceReply::Refused { message, .. } = &reply else {
            panic!("{reply:?}")
        };
        assert!(
            message.contains("protocol 2.0")
                && message.contains(&format!("protocol {PROTOCOL_VERSION}")),
            "{message}"
        );
        assert_eq!(reply.validate(), Ok(()));

        let mut newer_minor = serde_json::to_value(announce()).unwrap();
        newer_minor["protocol_version"] = json!(format!("{}.99", PROTOCOL_VERSION.major));
        newer_minor["a_field_of_a_later_minor"] = json!(true);
        let read = read_announce(&serde_json::to_vec(&newer_minor).unwrap()).unwrap();
        assert_eq!(read.name, "summarizer-1");

        let err = read_announce(br#"{"protocol_version": "1.0"}"#).unwrap_err();
        assert!(matches!(err, AnnounceRefused::Message(_)), "{err}");
        let err = read_announce(br#"{"protocol_version": 1}"#).unwrap_err();
        assert!(err.to_string().contains("not a valid `announce`"), "{err}");
    }

    #[test]
    fn a_refusal_is_cut_to_its_ceiling_on_a_character_boundary() {
        let long = "é".repeat(REASON_BYTES_MAX);
        let AnnounceReply::Refused { message, .. } = AnnounceReply::refused(&long) else {
            panic!()
        };
        assert!(message.len() <= REASON_BYTES_MAX && message.len() >= REASON_BYTES_MAX - 1);
    }

    #[test]
    fn heartbeats_replies_and_leaves_check_their_fields() {
        let beat = Heartbeat {
            agent: AgentId(7),
            session: "s".into(),
            in_flight: 2,
            health: Health::Up,
            reason: None,
        };
        assert_eq!(beat.validate(), Ok(()));
        let read: Heartbeat =
            serde_json::from_value(json!({"agent": "A7", "session": "s", "in_flight": 2})).unwrap();
        assert_eq!(read, beat, "health is up when left out");
        let draining = Heartbeat {
            health: Health::Draining,
            ..beat.clone()
        };
        assert_eq!(field_of(draining.validate()), "health");
        let busy = Heartbeat {
            in_flight: CONCURRENCY_MAX + 1,
            ..beat.clone()
        };
        assert_eq!(field_of(busy.validate()), "in_flight");
        let chatty = Heartbeat {
            reason: Some("r".repeat(REASON_BYTES_MAX + 1)),
            ..beat
        };
        assert_eq!(field_of(chatty.validate()), "reason");

        let drain = HeartbeatReply::Drain {
            reason: "r".repeat(REASON_BYTES_MAX + 1),
        };
        assert_eq!(field_of(drain.validate()), "reason");
        assert_eq!(
            serde_json::to_value(HeartbeatReply::Continue).unwrap(),
            json!({"directive": "continue"})
        );

        let accepted = AnnounceReply::Accepted {
            agent: AgentId(7),
            protocol_version: PROTOCOL_VERSION,
            heartbeat_interval_ms: 0,
            lease_ms: 30_000,
            attempts_subject: "swarm.attempts.A7".into(),
            attempts_consumer: "agent-A7".into(),
        };
        assert_eq!(field_of(accepted.validate()), "heartbeat_interval_ms");

        let leave = Leave {
            agent: AgentId(7),
            session: "s".into(),
            mode: LeaveMode::Drain,
            reason: Some("bell\u{7}".into()),
        };
        assert_eq!(field_of(leave.validate()), "reason");
    }
}
