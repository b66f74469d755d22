//! The board: one column per task status, a card per task, across objectives.
//!
//! Each column is one page of `Swarm::tasks` (the call behind `GET /v1/tasks`), so the board
//! costs seven listings whatever the history holds. Open columns (backlog to review) show the
//! oldest tasks first, finished ones the newest first. The script follows `GET /v1/events`
//! and, a moment after a task changes, fetches the columns again (as many cards per column as
//! it shows) from `/ui/board/columns`, which also answers one column's next page.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures::future::try_join_all;
use swarm_protocol::{TaskId, TaskItem, TaskKind, TaskQuery, TaskStatus, TaskView};

use super::{Badge, Layout, Visitor, format_duration_rounded, html, task_badge};
use crate::AppState;
use crate::problem::Problem;
use crate::tasks::{LIST_LIMIT_MAX, STATUSES, parse_filter, parse_limit, status_name};

/// Cards per column on a first page.
pub(crate) const PAGE: usize = 50;

/// One card.
pub(crate) struct Card {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) objective: String,
    pub(crate) goal: String,
    pub(crate) capability: String,
    pub(crate) agent: Option<String>,
    pub(crate) attempts: u32,
    /// Run time of the finished attempts, ms.
    pub(crate) run_ms: u64,
    /// When the running attempt started, ms since the epoch.
    pub(crate) since_ms: Option<u64>,
    pub(crate) elapsed: String,
    pub(crate) tokens: u64,
    pub(crate) error: Option<String>,
    /// What a `wait` or `approval` task waits for.
    pub(crate) note: Option<String>,
    pub(crate) badge: Badge,
}

impl Card {
    pub(crate) fn new(item: &TaskItem, now_ms: u64) -> Self {
        let task = &item.task;
        let run_ms = u64::try_from(task.run_time.as_millis()).unwrap_or(u64::MAX);
        let running_ms = task
            .running_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since));
        let objective = item.objective.to_string();
        let note = review_note(
            task,
            match (task.kind, &task.event) {
                (TaskKind::Wait, Some(key)) => {
                    Some(format!("waits for event {}", super::clip(key, 80)))
                }
                (TaskKind::Approval, _) if task.status == TaskStatus::Review => {
                    Some("awaiting approval".to_owned())
                }
                (TaskKind::Approval, _) => Some("approval gate".to_owned()),
                _ => None,
            },
            now_ms,
        );
        // A review's reason that the note already says (an approval gate's "awaiting
        // approval") is not said twice.
        let error = task
            .error
            .as_deref()
            .filter(|error| !note.as_deref().is_some_and(|note| note.starts_with(error)))
            .map(|e| super::clip(e, 160));
        Self {
            id: task.id.to_string(),
            key: task.key.to_string(),
            objective,
            goal: super::clip(&item.goal, 120),
            capability: task.capability.to_string(),
            agent: task.agent.map(|a| a.to_string()),
            attempts: task.attempts,
            run_ms,
            since_ms: task.running_since_ms,
            elapsed: format_duration_rounded(run_ms.saturating_add(running_ms)),
            tokens: task.usage.input_tokens + task.usage.output_tokens,
            error,
            note,
            badge: task_badge(task.status),
        }
    }
}

/// A card's note with what its review's deadline adds: how often it was escalated and when
/// the deadline decides.
fn review_note(task: &TaskView, note: Option<String>, now_ms: u64) -> Option<String> {
    if task.status != TaskStatus::Review {
        return note;
    }
    let mut parts: Vec<String> = note.into_iter().collect();
    if task.escalations > 0 {
        parts.push(format!("escalated ×{}", task.escalations));
    }
    if let Some(until) = task.review_until_ms {
        parts.push(format!(
            "deadline in {}",
            format_duration_rounded(until.saturating_sub(now_ms))
        ));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// One column.
pub(crate) struct Column {
    pub(crate) status: &'static str,
    pub(crate) badge: Badge,
    pub(crate) total: u64,
    pub(crate) cards: Vec<Card>,
    /// The cursor of the next page.
    pub(crate) next: Option<String>,
}

/// The filters as the form shows them.
#[derive(Default)]
pub(crate) struct Filters {
    pub(crate) objective: String,
    pub(crate) capability: String,
    pub(crate) agent: String,
    /// The query string that repeats them (for the script's requests).
    pub(crate) query: String,
}

/// What a board request asks for.
struct BoardQuery {
    filters: TaskQuery,
    form: Filters,
    /// One column only (the script's "more"), from `after`.
    status: Option<TaskStatus>,
    after: Option<TaskId>,
    /// Cards per column (`limit.<status>`), for a refresh of what the script shows.
    limits: [usize; STATUSES.len()],
}

fn parse(raw: Option<&str>) -> Result<BoardQuery, Problem> {
    let mut filters = TaskQuery::status(TaskStatus::Backlog, PAGE);
    filters.status = None;
    let mut form = Filters::default();
    let mut status = None;
    let mut after = None;
    let mut limits = [PAGE; STATUSES.len()];
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if parse_filter(&mut filters, &name, &value)? {
            match &*name {
                "objective" => form.objective = value.to_string(),
                "capability" => form.capability = value.to_string(),
                _ => form.agent = value.to_string(),
            }
            if !value.is_empty() {
                kept.append_pair(&name, &value);
            }
            continue;
        }
        match &*name {
            "status" => {
                status = STATUSES.into_iter().find(|s| status_name(*s) == value);
                if status.is_none() {
                    return Err(Problem::bad_query("status", "is not a task status"));
                }
            }
            "after" => {
                after =
                    Some(value.parse().map_err(|e| {
                        Problem::bad_query("after", &format!("is not a task id: {e}"))
                    })?);
            }
            other => {
                let Some(column) = other
                    .strip_prefix("limit.")
                    .and_then(|s| STATUSES.iter().position(|t| status_name(*t) == s))
                else {
                    return Err(Problem::bad_query(other, "is not a parameter of the board"));
                };
                limits[column] = parse_limit(&value)?;
            }
        }
    }
    form.query = kept.finish();
    Ok(BoardQuery {
        filters,
        form,
        status,
        after,
        limits,
    })
}

/// Finished columns show the latest first.
fn newest_first(status: TaskStatus) -> bool {
    status.is_terminal()
}

async fn column(
    state: &AppState,
    filters: &TaskQuery,
    status: TaskStatus,
    after: Option<TaskId>,
    limit: usize,
    now_ms: u64,
) -> Result<Column, Problem> {
    let query = TaskQuery {
        status: Some(status),
        after,
        limit: limit.clamp(1, LIST_LIMIT_MAX),
        newest_first: newest_first(status),
        ..filters.clone()
    };
    let page = state.swarm.tasks(query).await?;
    Ok(Column {
        status: status_name(status),
        badge: task_badge(status),
        total: page.total,
        cards: page
            .tasks
            .iter()
            .map(|item| Card::new(item, now_ms))
            .collect(),
        next: page.next.map(|id| id.to_string()),
    })
}

async fn columns(state: &AppState, query: &BoardQuery) -> Result<Vec<Column>, Problem> {
    let now = swarm_coordinator::journal::now_ms();
    try_join_all(STATUSES.iter().enumerate().map(|(i, &status)| {
        let limit = query.limits.get(i).copied().unwrap_or(PAGE);
        column(state, &query.filters, status, None, limit, now)
    }))
    .await
}

/// The board page.
#[derive(Template)]
#[template(path = "board.html")]
struct BoardPage {
    layout: Layout,
    filters: Filters,
    /// A filter that did not parse: the field and why.
    error: Option<(String, String)>,
    columns: Vec<Column>,
    capabilities: Vec<String>,
    agents: Vec<(String, String)>,
    /// The last event committed before the board was read: the script follows from there.
    after_seq: u64,
}

/// `GET /ui/`: the board.
pub(crate) async fn page(
    State(state): State<AppState>,
    visitor: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let page = board(&state, &visitor, raw.as_deref()).await;
    super::page_or_error(&visitor, "board", page)
}

async fn board(
    state: &AppState,
    visitor: &Visitor,
    raw: Option<&str>,
) -> Result<Response, Problem> {
    let after_seq = super::last_seq(state).await?;
    let snapshots = state.swarm.registry().snapshots();
    let mut capabilities: Vec<String> = snapshots
        .iter()
        .flat_map(|s| s.descriptor.capabilities.iter().map(|c| c.to_string()))
        .collect();
    capabilities.sort_unstable();
    capabilities.dedup();
    let agents = snapshots
        .into_iter()
        .map(|s| (s.descriptor.id.to_string(), s.descriptor.name))
        .collect();
    let (filters, error, columns) = match parse(raw) {
        Ok(query) => {
            let columns = columns(state, &query).await?;
            (query.form, None, columns)
        }
        Err(problem) => (
            Filters::default(),
            Some((problem.field.clone().unwrap_or_default(), problem.detail)),
            Vec::new(),
        ),
    };
    let refused = error.is_some();
    let mut response = html(&BoardPage {
        layout: visitor.layout("board"),
        filters,
        error,
        columns,
        capabilities,
        agents,
        after_seq,
    });
    if refused {
        *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

/// The columns alone (for the script).
#[derive(Template)]
#[template(path = "board_columns.html")]
struct ColumnsFragment {
    columns: Vec<Column>,
}

/// One column's next cards (for the script's "more").
#[derive(Template)]
#[template(path = "board_more.html")]
struct MoreFragment {
    column: Column,
}

/// `GET /ui/board/columns`: every column (`limit.<status>` cards each), or, with `status`
/// and `after`, that column's next page.
pub(crate) async fn columns_fragment(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let query = parse(raw.as_deref())?;
    if let Some(status) = query.status {
        let column = column(
            &state,
            &query.filters,
            status,
            query.after,
            PAGE,
            swarm_coordinator::journal::now_ms(),
        )
        .await?;
        return Ok(html(&MoreFragment { column }));
    }
    Ok(html(&ColumnsFragment {
        columns: columns(&state, &query).await?,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use swarm_protocol::{Capability, ObjectiveId, TaskKey, Usage};

    fn gate(status: TaskStatus, error: Option<&str>) -> TaskItem {
        TaskItem {
            objective: ObjectiveId::new(),
            goal: "ship".into(),
            task: TaskView {
                id: TaskId(2),
                key: TaskKey::new("sign-off").unwrap(),
                capability: Capability::new("approval").unwrap(),
                kind: TaskKind::Approval,
                event: None,
                waiting_until_ms: None,
                status,
                attempts: 0,
                agent: None,
                output: None,
                error: error.map(str::to_owned),
                partial_output: None,
                spawned_by: None,
                compensates: None,
                depends_on: Vec::new(),
                running_since_ms: None,
                review_errors: Vec::new(),
                review_until_ms: None,
                escalations: 0,
                usage: Usage::default(),
                run_time: Duration::ZERO,
            },
        }
    }

    #[test]
    fn an_approval_gate_says_awaiting_approval_once() {
        let card = Card::new(&gate(TaskStatus::Review, Some("awaiting approval")), 1_000);
        assert_eq!(card.note.as_deref(), Some("awaiting approval"));
        assert_eq!(card.error, None);
        // A reason the note does not say is still shown.
        let card = Card::new(&gate(TaskStatus::Failed, Some("rejected: too late")), 1_000);
        assert_eq!(card.note.as_deref(), Some("approval gate"));
        assert_eq!(card.error.as_deref(), Some("rejected: too late"));
    }
}
