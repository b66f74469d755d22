//! The durable journal and the `StoreWriter` actor behind it (group commit).
//!
//! The scheduler's [`DurableJournal`] numbers each turn's events and hands them, with the
//! turn's [`Effects`], to the writer through a queue with a doorbell (the writer is woken by
//! one message however many turns are queued). The writer takes everything queued (up to
//! `max_batch` events), appends it to the store in one transaction, and only after the commit
//! carries the effects out: assignments reach agents, callers get their answers. While a
//! commit is in flight the scheduler goes on, and the next commit takes every turn queued
//! meanwhile: one fsync serves many turns.
//!
//! A failed commit answers every waiting caller with the error, sends nothing to any agent, and
//! fails the writer, which stops the coordinator: nothing is acknowledged that is not durable.
//!
//! The writer also snapshots (in a background task that folds the log from the previous
//! snapshot, so the writer never waits for it) and prunes finished objectives past their
//! retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use swarm_protocol::{Event, EventRecord};
use swarm_store::{EventStore, Snapshot, StoreError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::journal::{Effects, Journal, now_ms};
use crate::replay::fold_running;

/// Committed events, in order, for live readers. A reader that falls more than the channel's
/// capacity behind gets `Lagged` and reads the gap back from the store.
pub type EventFeed = tokio::sync::broadcast::Sender<Arc<EventRecord>>;

/// How many committed events the feed holds for a slow reader.
pub const FEED_CAPACITY: usize = 16_384;

/// How the writer commits, snapshots and prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// The most events one transaction takes.
    pub max_batch: usize,
    /// A snapshot is taken once this many events were committed since the last one.
    pub snapshot_every: u64,
    /// Only objectives with at least this many events go into a snapshot: a shorter history
    /// is read back from the log about as fast as a model from a snapshot, and keeping them
    /// out keeps snapshots (and the memory taking one needs) small.
    pub snapshot_min_events: u64,
    /// Finished objectives older than this are pruned (never an unfinished one); `None` keeps
    /// everything.
    pub retention: Option<Duration>,
    /// How often pruning runs when `retention` is set.
    pub prune_every: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 16_384,
            snapshot_every: 200_000,
            snapshot_min_events: 10_000,
            retention: None,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// One scheduler turn: its events and what waits for them.
struct Turn {
    events: Vec<EventRecord>,
    effects: Effects,
}

/// Messages to the writer.
pub enum WriterMsg {
    /// Turns are queued.
    Wake,
    /// A background snapshot finished.
    SnapshotTaken(Result<Option<Snapshot>, StoreError>),
    /// Time to prune.
    Prune,
}

/// The scheduler's side of the durable log.
pub struct DurableJournal {
    next_seq: u64,
    turn_ms: u64,
    events: Vec<EventRecord>,
    tx: UnboundedSender<Turn>,
    armed: Arc<AtomicBool>,
    /// The last sequence number the writer committed.
    committed: Arc<AtomicU64>,
    writer: ActorRef<WriterMsg>,
}

impl Journal for DurableJournal {
    fn record(&mut self, event: Event) {
        if self.events.is_empty() {
            self.turn_ms = now_ms();
        }
        self.next_seq += 1;
        self.events.push(EventRecord {
            seq: self.next_seq,
            at_ms: self.turn_ms,
            event,
        });
    }

    fn commit(&mut self, effects: Effects) {
        if self.events.is_empty() && effects.is_empty() {
            return;
        }
        let capacity = self.events.len();
        let turn = Turn {
            events: std::mem::replace(&mut self.events, Vec::with_capacity(capacity)),
            effects,
        };
        match self.tx.send(turn) {
            Ok(()) => {
                if !self.armed.swap(true, Ordering::AcqRel) {
                    let _ = self.writer.cast(WriterMsg::Wake);
                }
            }
            Err(err) => err
                .0
                .effects
                .run(Err("the event log writer has stopped".into())),
        }
    }
    fn progress(&self) -> Option<(u64, u64)> {
        Some((self.next_seq, self.committed.load(Ordering::Acquire)))
    }
}

/// The writer actor. Behaviour only.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreWriter;

/// What the writer starts with.
pub struct WriterArgs {
    store: Arc<dyn EventStore>,
    feed: EventFeed,
    rx: UnboundedReceiver<Turn>,
    armed: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    config: WriterConfig,
    last_seq: u64,
    last_snapshot: u64,
}

/// The writer's state.
pub struct WriterState {
    args: WriterArgs,
    /// The background snapshot in progress, if any.
    snapshotting: Option<tokio::task::JoinHandle<()>>,
    commits: u64,
    events: u64,
}

/// Makes the queue between a durable journal and its writer. The journal goes to the scheduler
/// once the writer (started with the args) runs.
pub fn durable_pair(
    store: Arc<dyn EventStore>,
    feed: EventFeed,
    config: WriterConfig,
    last_seq: u64,
    last_snapshot: u64,
) -> (
    WriterArgs,
    impl FnOnce(ActorRef<WriterMsg>) -> DurableJournal,
) {
    let (tx, rx) = unbounded_channel();
    let armed = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(last_seq));
    let args = WriterArgs {
        store,
        feed,
        rx,
        armed: armed.clone(),
        committed: committed.clone(),
        config,
        last_seq,
        last_snapshot,
    };
    let journal = move |writer| DurableJournal {
        next_seq: last_seq,
        turn_ms: 0,
        events: Vec::new(),
        tx,
        armed,
        committed,
        writer,
    };
    (args, journal)
}

impl Actor for StoreWriter {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WriterMsg>,
        args: WriterArgs,
    ) -> Result<WriterState, ActorProcessingErr> {
        if args.config.retention.is_some() {
            myself.send_interval(args.config.prune_every, || WriterMsg::Prune);
            let _ = myself.cast(WriterMsg::Prune);
        }
        Ok(WriterState {
            args,
            snapshotting: None,
            commits: 0,
            events: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WriterMsg>,
        message: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WriterMsg::Wake => {
                state.args.armed.store(false, Ordering::Release);
                state.drain().await?;
                state.maybe_snapshot(&myself);
            }
            WriterMsg::SnapshotTaken(result) => {
                state.snapshotting = None;
                match result {
                    Ok(Some(snapshot)) => {
                        // A failed snapshot costs restart time, not data: the log still holds
                        // every event.
                        match state.args.store.save_snapshot(&snapshot).await {
                            Ok(()) => {
                                tracing::debug!(seq = snapshot.seq, "snapshot saved");
                                state.args.last_snapshot = snapshot.seq;
                            }
                            Err(err) => tracing::warn!(%err, "snapshot not saved"),
                        }
                    }
                    Ok(None) => {}
                    Err(err) => tracing::warn!(%err, "snapshot not taken"),
                }
            }
            WriterMsg::Prune => {
                if let Some(retention) = state.args.config.retention {
                    let cutoff = now_ms()
                        .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
                    match state.args.store.prune(cutoff).await {
                        Ok(pruned) if pruned.objectives > 0 || pruned.events > 0 => {
                            tracing::info!(
                                objectives = pruned.objectives,
                                events = pruned.events,
                                "pruned finished objectives past retention"
                            );
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(%err, "pruning failed"),
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WriterMsg>,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        // A snapshot in progress is only an optimisation; the log has every event.
        if let Some(task) = state.snapshotting.take() {
            task.abort();
            // Wait for it to go, so the store (and the data directory's lock) is released.
            let _ = task.await;
        }
        // Turns queued before the stop still become durable (the scheduler stops first).
        state.drain().await?;
        tracing::debug!(
            commits = state.commits,
            events = state.events,
            "event log writer stopped"
        );
        Ok(())
    }
}

impl WriterState {
    /// Commits every queued turn, in transactions of up to `max_batch` events, and carries out
    /// each turn's effects after its commit.
    async fn drain(&mut self) -> Result<(), StoreError> {
        let mut records: Vec<EventRecord> = Vec::new();
        let mut effects: Vec<Effects> = Vec::new();
        loop {
            while records.len() < self.args.config.max_batch {
                match self.args.rx.try_recv() {
                    Ok(turn) => {
                        records.extend(turn.events);
                        effects.push(turn.effects);
                    }
                    Err(_) => break,
                }
            }
            if effects.is_empty() {
                return Ok(());
            }
            if !records.is_empty() {
                if let Err(err) = self.args.store.append(&records).await {
                    let message = err.to_string();
                    tracing::error!(%err, "event log commit failed; stopping");
                    for e in effects.drain(..) {
                        e.run(Err(message.clone()));
                    }
                    self.args.rx.close();
                    while let Ok(turn) = self.args.rx.try_recv() {
                        turn.effects.run(Err(message.clone()));
                    }
                    return Err(err);
                }
                self.args.last_seq = records.last().map_or(self.args.last_seq, |r| r.seq);
                self.args
                    .committed
                    .store(self.args.last_seq, Ordering::Release);
                self.commits += 1;
                self.events += records.len() as u64;
                // Committed events to live readers (SSE), only when someone listens.
                if self.args.feed.receiver_count() > 0 {
                    for record in records.drain(..) {
                        let _ = self.args.feed.send(Arc::new(record));
                    }
                }
                records.clear();
            }
            for e in effects.drain(..) {
                e.run(Ok(()));
            }
        }
    }

    fn maybe_snapshot(&mut self, myself: &ActorRef<WriterMsg>) {
        let due = self.args.last_seq.saturating_sub(self.args.last_snapshot)
            >= self.args.config.snapshot_every;
        if !due || self.snapshotting.is_some() {
            return;
        }
        let store = self.args.store.clone();
        let upto = self.args.last_seq;
        let min_events = self.args.config.snapshot_min_events;
        let myself = myself.clone();
        self.snapshotting = Some(tokio::spawn(async move {
            let result = take_snapshot(&*store, upto, min_events).await;
            let _ = myself.cast(WriterMsg::SnapshotTaken(result));
        }));
    }
}

/// Folds the unfinished objectives as of event `upto` (from the newest snapshot and the events
/// after it) into a new snapshot of those with at least `min_events` events (`None` if there
/// is nothing new). Recovery reads the others from their events.
pub async fn take_snapshot(
    store: &dyn EventStore,
    upto: u64,
    min_events: u64,
) -> Result<Option<Snapshot>, StoreError> {
    let started = Instant::now();
    let (mut replay, from, read) = fold_running(store, upto).await?;
    if from >= upto {
        return Ok(None);
    }
    replay
        .objectives
        .retain(|_, model| model.events >= min_events);
    let body = serde_json::to_vec(&replay).map_err(|e| StoreError::Corrupt {
        path: "snapshot".into(),
        what: format!("snapshot at {upto}"),
        cause: e.to_string(),
    })?;
    tracing::debug!(
        seq = upto,
        read,
        objectives = replay.objectives.len(),
        bytes = body.len(),
        ms = started.elapsed().as_millis() as u64,
        "snapshot taken"
    );
    Ok(Some(Snapshot {
        seq: upto,
        at_ms: now_ms(),
        body,
    }))
}
