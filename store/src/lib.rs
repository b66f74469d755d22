//! The durable event log of swarm.
//!
//! [`EventStore`] is what the coordinator needs of a log: append a committed batch, read events
//! back in order (all after a sequence number, or one objective's), keep snapshots of the
//! recovery state, list idempotency keys, prune finished objectives, and list the agents,
//! schedules and webhooks declared through the API. [`SqliteStore`] is the
//! embedded default; the schema and queries are plain SQL so a PostgreSQL store is another
//! implementation of this trait, not a rewrite.
//!
//! # Layout
//!
//! - `log`: what an append checks of a batch, and the row each event becomes in the log;
//! - `projection` (one file per index): what a batch changes in the indexes kept beside the
//!   log (objectives, counters, declared agents, schedules, posted events, declared hooks), as
//!   plain rows. Neither knows SQL or does I/O, so a second backend reuses both and only
//!   writes its own statements;
//! - `sqlite`: the embedded backend (opening and migrating, the append's transaction, the
//!   index changes as SQL, reads, retention);
//! - `conformance` (tests, and the `conformance` feature): the trait's contract as checks any
//!   backend runs against itself.

mod log;
mod projection;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::path::PathBuf;

use futures::future::BoxFuture;
use swarm_protocol::{
    AgentId, EventRecord, ExternalEvent, ObjectiveId, ObjectiveStatus, ScheduleSpec,
};

pub use sqlite::{SqliteOptions, SqliteStore};

/// What went wrong with the store. Every variant names the file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or database file could not be created, opened, read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system or SQLite said.
        cause: String,
    },
    /// The file exists but is not a swarm event log (another program's database, or not a
    /// database at all, or damaged).
    #[error("{path} is not a swarm event log: {cause}")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What was found.
        cause: String,
    },
    /// The log was written by a newer swarm whose schema this binary does not know.
    #[error(
        "{path} has schema version {found}, newer than this binary knows ({known}); \
         run a newer swarm or use another data directory"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// The device is full (or the database reached its size limit); nothing of the failed
    /// batch was written.
    #[error("{path}: the disk is full ({cause}); nothing of the last batch was recorded")]
    Full {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        cause: String,
    },
    /// A stored event or snapshot could not be decoded.
    #[error("{path}: stored record {what} could not be decoded: {cause}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record (e.g. `event 42`, `snapshot at 1000`).
        what: String,
        /// The decoding error.
        cause: String,
    },
}

/// One objective as the store indexes it (for idempotency keys, pruning and listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObjective {
    /// The objective.
    pub id: ObjectiveId,
    /// The client's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
    /// [`swarm_protocol::Objective::fingerprint`] of the submitted objective when it was
    /// submitted under an idempotency key; 0 otherwise.
    pub fingerprint: u64,
    /// Where it stands, as of the last committed event.
    pub status: ObjectiveStatus,
    /// When it was submitted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
}

/// An agent registered through the API, as the store indexes it from `AgentDeclared` and
/// `AgentUndeclared` events.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredAgent {
    /// Its name.
    pub name: String,
    /// The id it had when last registered.
    pub agent: AgentId,
    /// Its configuration, as declared (opaque to the store).
    pub config: serde_json::Value,
}

/// A webhook declared through the API, as the store indexes it from `HookDeclared` and
/// `HookDeleted` events.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredHook {
    /// Its name.
    pub name: String,
    /// Its configuration, as declared (opaque to the store; a secret only by the name of its
    /// variable).
    pub config: serde_json::Value,
}

/// A schedule, as the store indexes it from the `Schedule*` events.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    /// Its spec as created, with `paused` as it is now.
    pub spec: ScheduleSpec,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When it was created or last resumed: no slot before this fires or is caught up.
    pub changed_at_ms: u64,
    /// Its latest fire: the slot (ms since the Unix epoch) and the objective it submitted.
    pub last_fire: Option<(u64, ObjectiveId)>,
}

/// An event posted from outside (`EventReceived`), as the store indexes it until it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event as the API shows it (`consumed_by` set once a `wait` task consumed it).
    pub event: ExternalEvent,
    /// The sender's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
}

/// A snapshot of the recovery state as of event `seq` (the body is opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last event the snapshot includes.
    pub seq: u64,
    /// When it was taken (ms since the Unix epoch).
    pub at_ms: u64,
    /// The encoded state.
    pub body: Vec<u8>,
}

/// Counters kept by the store, updated in the same transaction as each append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreInfo {
    /// The last sequence number committed (0 for an empty log).
    pub last_seq: u64,
    /// One past the highest task id any committed event allocated (1 for an empty log).
    pub next_task: u64,
    /// One past the highest agent id any committed event registered (1 for an empty log), so
    /// a restarted coordinator hands out ids no event in the log names.
    pub next_agent: u64,
    /// Events currently in the log (after pruning).
    pub events: u64,
}

/// What the objective index holds for one idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// The objective submitted under the key, if any.
    pub objective: Option<StoredObjective>,
    /// The last sequence number committed as of the read: a key submitted by an event up to
    /// this one would have been found.
    pub as_of_seq: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Objectives removed.
    pub objectives: u64,
    /// Events removed.
    pub events: u64,
}

/// A durable, ordered event log.
pub trait EventStore: Send + Sync + 'static {
    /// Counters as of the last commit.
    fn info(&self) -> BoxFuture<'_, Result<StoreInfo, StoreError>>;

    /// Appends `records` (consecutive sequence numbers following the last committed one) in one
    /// transaction, maintaining the objective index, the declared agents, the schedules, the
    /// declared hooks and the counters in the same transaction.
    /// When this returns `Ok`, the records are durable; on `Err`, none of them is.
    fn append<'a>(&'a self, records: &'a [EventRecord]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Up to `limit` events with `seq > after`, in order.
    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;

    /// Every event of one objective, in order (empty if unknown or pruned).
    fn read_objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;

    /// The events of one objective with `after < seq <= upto`, in order.
    fn read_objective_range(
        &self,
        objective: ObjectiveId,
        after: u64,
        upto: u64,
    ) -> BoxFuture<'_, Result<Vec<EventRecord>, StoreError>>;

    /// The objectives the index holds as running (unfinished), oldest first.
    fn running_objectives(&self) -> BoxFuture<'_, Result<Vec<ObjectiveId>, StoreError>>;

    /// One objective from the index.
    fn objective(
        &self,
        objective: ObjectiveId,
    ) -> BoxFuture<'_, Result<Option<StoredObjective>, StoreError>>;

    /// Every indexed objective that has an idempotency key.
    fn keyed_objectives(&self) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>>;

    /// The indexed objective submitted under idempotency key `key`, if any (until it is
    /// pruned), and the last sequence number committed when the index was read.
    fn objective_by_key<'a>(&'a self, key: &'a str)
    -> BoxFuture<'a, Result<KeyLookup, StoreError>>;

    /// Up to `limit` indexed objectives with `id > after` (all when `after` is `None`), of
    /// `status` only when given, ordered by id: a UUIDv7, so oldest submission first, and the
    /// last id of one page is the cursor of the next.
    fn list_objectives(
        &self,
        status: Option<ObjectiveStatus>,
        after: Option<ObjectiveId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredObjective>, StoreError>>;

    /// Saves a snapshot; older snapshots but the previous one are dropped.
    fn save_snapshot<'a>(&'a self, snapshot: &'a Snapshot)
    -> BoxFuture<'a, Result<(), StoreError>>;

    /// The newest snapshot, if any.
    fn latest_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>>;

    /// Removes objectives that ended before `ended_before_ms` (never an unfinished one) with
    /// all their events, and agent events (those of no objective) older than that. The
    /// declared agents, the schedules and the declared hooks are indexes of their own and are
    /// not pruned.
    fn prune(&self, ended_before_ms: u64) -> BoxFuture<'_, Result<Pruned, StoreError>>;

    /// The agents declared and not undeclared, in the order they were first declared.
    fn declared_agents(&self) -> BoxFuture<'_, Result<Vec<DeclaredAgent>, StoreError>>;

    /// The schedules created and not deleted, by name, as their events left them.
    fn schedules(&self) -> BoxFuture<'_, Result<Vec<StoredSchedule>, StoreError>>;

    /// The posted events that expire after `now_ms` (consumed or not), in the order they were
    /// received.
    fn posted_events(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// The hooks declared and not deleted, by name, with their latest configuration.
    fn declared_hooks(&self) -> BoxFuture<'_, Result<Vec<DeclaredHook>, StoreError>>;
}
