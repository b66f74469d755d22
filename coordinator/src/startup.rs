//! How a swarm starts: its configuration ([`SwarmConfig`], [`StoreConfig`]), the durable open
//! that rebuilds every unfinished objective from the log first ([`Swarm::open`], reporting
//! what it found in a [`RecoveryReport`]), and the supervision tree with the triggers linked
//! to its root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, call_t};
use swarm_protocol::{AgentId, ObjectiveId};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};
use tokio::sync::watch;

use crate::coordinator::{Coordinator, CoordinatorArgs, CoordinatorMsg, JournalSetup};
use crate::journal::{Journal, NullJournal};
use crate::replay::{Recovered, recover};
use crate::triggers::TriggerSetup;
use crate::triggers::actor::{Triggers, TriggersArgs};
use crate::{
    AgentRegistry, Error, LiveAgents, RestartPolicy, SchedulerConfig, Swarm, WriterConfig, millis,
};

/// How a swarm is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmConfig {
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Agent restart budget.
    pub restart: RestartPolicy,
    /// How long a request to an actor may take before it is given up.
    pub call_timeout: Duration,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            restart: RestartPolicy::default(),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Where and how the durable event log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The data directory (the log is `events.db` in it).
    pub data_dir: PathBuf,
    /// `true` (the default): every commit is fsynced, so an acknowledged change survives a
    /// power loss as well as a crash. `false`: it survives a crash of the process.
    pub fsync: bool,
    /// Group commit, snapshot and retention settings.
    pub writer: WriterConfig,
    /// Test hook: the most pages the database may have (to simulate a full disk).
    pub max_page_count: Option<u64>,
}

impl StoreConfig {
    /// The defaults, in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: true,
            writer: WriterConfig::default(),
            max_page_count: None,
        }
    }
}

/// What a durable start found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unfinished objectives rebuilt.
    pub objectives: usize,
    /// The last sequence number in the log.
    pub last_seq: u64,
    /// The snapshot recovery started from (0 for none).
    pub snapshot_seq: u64,
    /// Events read after it.
    pub events_read: u64,
    /// Time spent opening the log and folding it.
    pub took: Duration,
    /// Unfinished objectives left out because a record of theirs could not be decoded, with
    /// the reason (each also logged as an error at start).
    pub unreadable: Vec<(ObjectiveId, String)>,
}

impl Swarm {
    /// Starts a swarm whose events are discarded.
    pub async fn start(config: SwarmConfig) -> Result<Self, Error> {
        Self::start_with_journal(config, Box::new(NullJournal)).await
    }

    /// Starts a swarm whose events go to `journal` (nothing is durable).
    pub async fn start_with_journal(
        config: SwarmConfig,
        journal: Box<dyn Journal>,
    ) -> Result<Self, Error> {
        let journal = JournalSetup::InMemory(journal);
        let triggers = TriggerSetup::default();
        Self::start_tree(config, journal, AgentId(1), None, None, triggers).await
    }

    /// Opens (or creates) the durable log in `store.data_dir`, rebuilds every unfinished
    /// objective from it, and starts a swarm that commits every state change there before
    /// acting on it. Register agents next: recovered tasks wait in their queues until an agent
    /// with their capability registers. Agents get ids above every id the log names, so an id
    /// means one agent across restarts.
    ///
    /// A log that cannot be used (unwritable directory, corrupt or foreign file, a newer
    /// schema) is an error naming the file and the cause.
    pub async fn open(config: SwarmConfig, store: StoreConfig) -> Result<Self, Error> {
        let started = Instant::now();
        let sqlite = SqliteStore::open(SqliteOptions {
            data_dir: store.data_dir.clone(),
            synchronous_full: store.fsync,
            max_page_count: store.max_page_count,
            lock: true,
        })
        .await?;
        let log: Arc<dyn EventStore> = Arc::new(sqlite);
        let recovered = recover(&*log).await?;
        let resumed = recovered.replay.unfinished().iter().map(|m| m.id).collect();
        let report = RecoveryReport {
            objectives: recovered.replay.unfinished().len(),
            last_seq: recovered.last_seq,
            snapshot_seq: recovered.snapshot_seq,
            events_read: recovered.events_read,
            took: started.elapsed(),
            unreadable: recovered.replay.unreadable.clone(),
        };
        tracing::info!(
            dir = %store.data_dir.display(),
            objectives = report.objectives,
            last_seq = report.last_seq,
            snapshot_seq = report.snapshot_seq,
            events_read = report.events_read,
            ms = report.took.as_millis() as u64,
            "event log opened"
        );
        // Agents registered from now on get ids no event in the log names.
        let first_agent = AgentId(recovered.next_agent);
        let triggers = TriggerSetup::from_log(&*log, &recovered.keys).await?;
        let (feed, _) = tokio::sync::broadcast::channel(crate::writer::FEED_CAPACITY);
        let setup = JournalSetup::Durable {
            store: log.clone(),
            feed: feed.clone(),
            recovered: Box::new(recovered),
            config: store.writer,
        };
        let mut swarm = Self::start_tree(
            config,
            setup,
            first_agent,
            Some(log),
            Some(report),
            triggers,
        )
        .await?;
        // The schedule fires a crash cut off after their objective was accepted are recorded
        // by the triggers as they start: durable before the swarm is handed out.
        swarm.flush().await?;
        swarm.resumed = resumed;
        swarm.feed = Some(feed);
        Ok(swarm)
    }

    /// Reads the log in `data_dir` as a restart would, without starting anything.
    pub async fn inspect(data_dir: impl Into<PathBuf>) -> Result<Recovered, Error> {
        let store = SqliteStore::open(SqliteOptions::new(data_dir)).await?;
        Ok(recover(&store).await?)
    }

    /// Starts the supervision tree, and the triggers linked to its root; the registry hands
    /// out agent ids from `first_agent`.
    async fn start_tree(
        config: SwarmConfig,
        journal: JournalSetup,
        first_agent: AgentId,
        store: Option<Arc<dyn EventStore>>,
        recovery: Option<RecoveryReport>,
        triggers: TriggerSetup,
    ) -> Result<Self, Error> {
        let registry = AgentRegistry::starting_at(first_agent);
        let live = LiveAgents::default();
        let (fatal_tx, fatal) = watch::channel(None);
        let args = CoordinatorArgs {
            registry: registry.clone(),
            journal,
            scheduler: config.scheduler,
            restart: config.restart,
            fatal: fatal_tx,
            live: live.clone(),
        };
        let (root, root_handle) =
            Actor::spawn(None, Coordinator, args)
                .await
                .map_err(|e| Error::ActorStart {
                    actor: "coordinator".into(),
                    cause: e.to_string(),
                })?;
        let ms = millis(config.call_timeout);
        let (scheduler, supervisor) = call_t!(root, CoordinatorMsg::Children, ms)?;
        // Linked to the root: a trigger actor that fails stops the tree, as any child does.
        let args = TriggersArgs {
            setup: triggers,
            scheduler: scheduler.clone(),
            store: store.clone(),
            call_timeout: config.call_timeout,
            failure: fatal.clone(),
        };
        let (triggers, _) = Actor::spawn_linked(None, Triggers, args, root.get_cell())
            .await
            .map_err(|e| Error::ActorStart {
                actor: "triggers".into(),
                cause: e.to_string(),
            })?;
        Ok(Self {
            root,
            root_handle,
            scheduler,
            supervisor,
            registry,
            live,
            call_timeout: config.call_timeout,
            store,
            fatal,
            recovery,
            resumed: Vec::new(),
            feed: None,
            triggers,
        })
    }
}
