//! The log's events as Server-Sent Events: `GET /v1/objectives/{id}/events` (one objective's) and
//! `GET /v1/events` (every event of the swarm, which the dashboard's board and agents page
//! follow).
//!
//! An objective's stream sends its history from the log, then its events as they are
//! committed, and ends after the objective's terminal event (at once, if that was sent
//! before). The swarm's stream starts with the events committed from now on (or, with
//! `Last-Event-ID`, those after it, read from the log a chunk at a time) and runs until the
//! server stops. Each event has `id: <seq>`, `event: <type>` and the JSON `EventRecord` as
//! data; a client reconnecting with `Last-Event-ID` gets only the events after that sequence
//! number.
//!
//! Nothing is missed between history and live events: a stream subscribes to the feed of
//! committed events before it reads the log, drops live events it already sent (by `seq`),
//! and when it falls behind the feed (`Lagged`) it reads the gap from the log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use swarm_protocol::{Event, EventRecord, ObjectiveId, SchedulerError};
use swarm_store::EventStore;
use tokio::sync::{broadcast, watch};

use crate::AppState;
use crate::objectives::objective_id;
use crate::problem::{PROBLEM_JSON, Problem};
use swarm_coordinator::Error;

/// The objective's events as Server-Sent Events: its history, then live events, ending after
/// its terminal event.
///
/// Each event has `id: <seq>`, `event: <type>` and one JSON `EventRecord` as `data`.
#[utoipa::path(
    get,
    path = "/v1/objectives/{id}/events",
    tag = "objectives",
    operation_id = "objective_events",
    params(
        ("id" = ObjectiveId, Path, description = "The objective."),
        ("Last-Event-ID" = Option<u64>, Header,
         description = "Only events after this sequence number (a reconnecting client's last)."),
        ("after" = Option<u64>, Query,
         description = "As `Last-Event-ID`, which wins when both are given."),
    ),
    responses(
        (status = 200, description = "The event stream; each `data` is an `EventRecord`.",
         body = String, content_type = "text/event-stream"),
        (status = 400, description = "`id` is not an objective id, or `Last-Event-ID` or \
         `after` is not a sequence number.", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such objective.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let objective = objective_id(&id)?;
    let after = resume_after(&headers, query.as_deref())?.unwrap_or(0);
    let (Some(store), Some(live)) = (state.swarm.store().cloned(), state.swarm.subscribe()) else {
        return Err(Error::NoStore.into());
    };
    // Subscribed first: whatever commits from here on is in `live`, and everything committed
    // before is in the log read below.
    let Some(indexed) = store.objective(objective).await.map_err(Error::from)? else {
        return Err(Error::from(SchedulerError::UnknownObjective(objective)).into());
    };
    let history = store
        .read_objective_range(objective, after, u64::MAX)
        .await
        .map_err(Error::from)?;
    // The index was read before the history, so if it says the objective ended, its terminal
    // event is in `history` or was sent before `after`.
    let ended_before = indexed.status.is_terminal();
    let follow = Follow {
        objective: Some(objective),
        store,
        live,
        pending: history.into_iter().map(Arc::new).collect(),
        last_seq: after,
        catch_up: false,
        ended: false,
        ended_before,
        shutdown: state.shutdown.clone(),
    };
    Ok(sse(follow))
}

/// Every event of the swarm as Server-Sent Events, from now on (or after `Last-Event-ID`),
/// until the server stops.
///
/// Each event has `id: <seq>`, `event: <type>` and one JSON `EventRecord` as `data`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "swarm_events",
    params(
        ("Last-Event-ID" = Option<u64>, Header,
         description = "Only events after this sequence number (read from the log first); \
                        without it, the events committed from now on."),
        ("after" = Option<u64>, Query,
         description = "As `Last-Event-ID`, which wins when both are given."),
    ),
    responses(
        (status = 200, description = "The event stream; each `data` is an `EventRecord`.",
         body = String, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` or `after` is not a sequence number.",
         body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn stream_all(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let after = resume_after(&headers, query.as_deref())?;
    let (Some(store), Some(live)) = (state.swarm.store().cloned(), state.swarm.subscribe()) else {
        return Err(Error::NoStore.into());
    };
    // Subscribed first: without `Last-Event-ID`, everything after the last commit is live.
    let last_seq = match after {
        Some(after) => after,
        None => store.info().await.map_err(Error::from)?.last_seq,
    };
    let follow = Follow {
        objective: None,
        store,
        live,
        pending: VecDeque::new(),
        last_seq,
        catch_up: after.is_some(),
        ended: false,
        ended_before: false,
        shutdown: state.shutdown.clone(),
    };
    Ok(sse(follow))
}

/// Where a stream starts: after the `Last-Event-ID` header if sent (a reconnecting
/// `EventSource` sends it), else after the `after` query parameter (a page that read the
/// state as of an event, since `EventSource` cannot send headers on its first request).
fn resume_after(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, Problem> {
    if let Some(after) = last_event_id(headers)? {
        return Ok(Some(after));
    }
    let mut after = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "after" => {
                after = Some(value.parse::<u64>().map_err(|_| {
                    Problem::bad_query("after", "is not the sequence number of an event")
                })?);
            }
            other => {
                return Err(Problem::bad_query(
                    other,
                    "is not a parameter of this route; use after",
                ));
            }
        }
    }
    Ok(after)
}

/// The `Last-Event-ID` header, if sent.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    parse_event_id(value.as_bytes()).map(Some).ok_or_else(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-header",
            "header `Last-Event-ID`: expected the sequence number of an event",
        )
        .field("Last-Event-ID")
    })
}

/// Reads the value of a `Last-Event-ID` header: the sequence number of an event, in decimal
/// ASCII, optionally surrounded by spaces or tabs. `None` for anything else (another text, a
/// number past `u64::MAX`, bytes that are not ASCII).
pub fn parse_event_id(value: &[u8]) -> Option<u64> {
    if !value.is_ascii() {
        return None;
    }
    // ASCII, so this is UTF-8. Only spaces and tabs are trimmed (a header's optional
    // whitespace), not every ASCII whitespace: a carriage return is no part of an id.
    let text = std::str::from_utf8(value).ok()?;
    text.trim_matches([' ', '\t']).parse().ok()
}

fn sse(follow: Follow) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let events = futures::stream::unfold(follow, |mut follow| async move {
        let record = follow.next().await?;
        Some((Ok(sse_event(&record)), follow))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Events read from the log at once while a stream of the whole swarm catches up.
const CATCH_UP_CHUNK: usize = 1_000;

/// The state of one stream.
struct Follow {
    /// The objective followed; `None` follows every event.
    objective: Option<ObjectiveId>,
    store: Arc<dyn EventStore>,
    live: broadcast::Receiver<Arc<EventRecord>>,
    /// Read from the log, not sent yet, in order.
    pending: VecDeque<Arc<EventRecord>>,
    /// The last sequence number sent (or the client's `Last-Event-ID`).
    last_seq: u64,
    /// The log may hold events after `last_seq` that the feed no longer does (a stream of the
    /// whole swarm resuming, or lagging): read them, a chunk at a time, before live ones.
    catch_up: bool,
    /// The terminal event was sent.
    ended: bool,
    /// The objective had ended when the stream started.
    ended_before: bool,
    shutdown: watch::Receiver<bool>,
}

impl Follow {
    /// The next event to send, or `None` once the objective ended (or the server stops).
    async fn next(&mut self) -> Option<Arc<EventRecord>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(record) = self.pending.pop_front() {
                if let Some(record) = self.accept(record) {
                    return Some(record);
                }
                continue;
            }
            if self.ended_before {
                return None;
            }
            if self.catch_up {
                match self.store.read_after(self.last_seq, CATCH_UP_CHUNK).await {
                    Ok(chunk) => {
                        self.catch_up = chunk.len() == CATCH_UP_CHUNK;
                        self.pending.extend(chunk.into_iter().map(Arc::new));
                    }
                    Err(err) => {
                        tracing::warn!(%err, "event stream ends: the log could not be read");
                        return None;
                    }
                }
                continue;
            }
            let received = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(record) => {
                    if (self.objective.is_none() || record.event.objective() == self.objective)
                        && let Some(record) = self.accept(record)
                    {
                        return Some(record);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let Some(objective) = self.objective else {
                        tracing::debug!(
                            missed,
                            "event stream lagged; reading the gap from the log"
                        );
                        self.catch_up = true;
                        continue;
                    };
                    tracing::debug!(%objective, missed, "event stream lagged; reading the gap from the log");
                    match self
                        .store
                        .read_objective_range(objective, self.last_seq, u64::MAX)
                        .await
                    {
                        Ok(gap) => self.pending.extend(gap.into_iter().map(Arc::new)),
                        Err(err) => {
                            tracing::warn!(%err, %objective, "event stream ends: the log could not be read");
                            return None;
                        }
                    }
                }
                // The swarm is gone: nothing more will be committed.
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// `record` if it comes after everything sent so far.
    fn accept(&mut self, record: Arc<EventRecord>) -> Option<Arc<EventRecord>> {
        if record.seq <= self.last_seq {
            return None;
        }
        self.last_seq = record.seq;
        // A stream of the whole swarm goes on past any objective's end.
        self.ended = self.objective.is_some() && is_terminal(&record.event);
        Some(record)
    }
}

fn is_terminal(event: &Event) -> bool {
    matches!(
        event,
        Event::ObjectiveSucceeded { .. }
            | Event::ObjectiveFailed { .. }
            | Event::ObjectiveCancelled { .. }
    )
}

fn sse_event(record: &EventRecord) -> SseEvent {
    // An event is plain data; serializing it cannot fail.
    let value = serde_json::to_value(record).unwrap_or_default();
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("event")
        .to_string();
    SseEvent::default()
        .id(record.seq.to_string())
        .event(kind)
        .data(value.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use swarm_protocol::{Capability, Objective, TaskId, TaskKey, TaskSpec};
    use swarm_store::{SqliteOptions, SqliteStore};

    fn submitted(seq: u64, objective: ObjectiveId) -> EventRecord {
        let spec = TaskSpec::new(TaskKey::new("a").unwrap(), Capability::new("c").unwrap());
        record(
            seq,
            Event::ObjectiveSubmitted {
                objective,
                spec: Objective::with_tasks("g", vec![spec]),
                first_task: TaskId(seq),
                idempotency_key: None,
                trace: None,
            },
        )
    }

    fn record(seq: u64, event: Event) -> EventRecord {
        EventRecord {
            seq,
            at_ms: seq,
            event,
        }
    }

    /// A stream that falls behind the feed reads what it missed from the log: nothing is lost,
    /// nothing is sent twice, and other objectives' events are left out.
    #[tokio::test]
    async fn a_lagging_stream_reads_the_gap_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteStore::open(SqliteOptions::new(dir.path()))
                .await
                .unwrap(),
        );
        let (mine, other) = (ObjectiveId::new(), ObjectiveId::new());
        let mut records = vec![submitted(1, mine), submitted(2, other)];
        for seq in 3..=10 {
            let objective = if seq % 2 == 0 { other } else { mine };
            let task = TaskId(seq);
            records.push(record(seq, Event::TaskReady { objective, task }));
        }
        records.push(record(11, Event::ObjectiveCancelled { objective: mine }));
        store.append(&records).await.unwrap();

        let (feed, live) = broadcast::channel(2);
        // The first event was read as history; everything after it comes over a feed that
        // holds only the last two.
        for record in &records {
            feed.send(Arc::new(record.clone())).unwrap();
        }
        let (_stop, shutdown) = watch::channel(false);
        let mut follow = Follow {
            objective: Some(mine),
            store,
            live,
            pending: VecDeque::from([Arc::new(records[0].clone())]),
            last_seq: 0,
            catch_up: false,
            ended: false,
            ended_before: false,
            shutdown,
        };
        let mut sent = Vec::new();
        while let Some(record) = follow.next().await {
            sent.push(record.seq);
        }
        assert_eq!(sent, [1, 3, 5, 7, 9, 11]);
    }

    #[test]
    fn an_event_id_is_a_decimal_sequence_number() {
        assert_eq!(parse_event_id(b"42"), Some(42));
        assert_eq!(parse_event_id(b" \t7 "), Some(7));
        assert_eq!(parse_event_id(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"1.0",
            b"null",
            b"\xc2\xa05",
            b"0x10",
            // Found by the `event_id` fuzz target: only spaces and tabs surround an id.
            b"\r\r 4",
            b"4\n",
        ] {
            assert_eq!(
                parse_event_id(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
