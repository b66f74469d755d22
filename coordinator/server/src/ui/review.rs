//! The review queue: each task in review with its output and why it needs review (the schema
//! errors, or the agent's word), and approve (with an editor for the output, checked as JSON
//! before it is sent), reject (with a reason) and retry. The buttons call
//! `POST /v1/tasks/{id}/approve|reject|retry`, so every decision is in the chain of work.
//!
//! The page lists `Swarm::tasks` with `status=review` (what `GET /v1/tasks?status=review`
//! answers), the first [`LIST_LIMIT_MAX`] in order. The script follows `GET /v1/events` and
//! fetches the items again (`/ui/review/live`), keeping any item whose output is being edited.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use swarm_protocol::{PausedObjective, TaskItem, TaskQuery, TaskStatus};

use super::{Layout, Visitor, clip, html, pretty_json};
use crate::AppState;
use crate::problem::Problem;
use crate::tasks::LIST_LIMIT_MAX;

/// One task in review.
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) objective: String,
    pub(crate) goal: String,
    pub(crate) capability: String,
    pub(crate) agent: Option<String>,
    pub(crate) attempts: u32,
    /// Why it needs review.
    pub(crate) reason: Option<String>,
    /// The output, pretty-printed (editable).
    pub(crate) output: String,
    /// The output the editor started from, to tell whether it was edited.
    pub(crate) has_output: bool,
    /// An `approval` task (a gate), rather than output that needs a look.
    pub(crate) approval: bool,
    /// When the review's deadline decides, and how often it escalated it, if it has one.
    pub(crate) deadline: Option<String>,
}

impl From<&TaskItem> for Item {
    fn from(item: &TaskItem) -> Self {
        let task = &item.task;
        Self {
            id: task.id.to_string(),
            key: task.key.to_string(),
            objective: item.objective.to_string(),
            goal: clip(&item.goal, 200),
            capability: task.capability.to_string(),
            agent: task.agent.map(|a| a.to_string()),
            attempts: task.attempts,
            reason: task.error.clone(),
            approval: task.kind == swarm_protocol::TaskKind::Approval,
            // The editor holds the whole output: an approval sends back what it holds.
            output: task
                .output
                .as_ref()
                .map(|o| pretty_json(o, usize::MAX))
                .unwrap_or_default(),
            has_output: task.output.is_some(),
            deadline: task.review_until_ms.map(|until| {
                let mut text = format!("Its deadline decides at {}", crate::text::utc(Some(until)));
                if task.escalations > 0 {
                    text.push_str(&format!(" (escalated ×{})", task.escalations));
                }
                text
            }),
        }
    }
}

/// The items, and the objectives paused at a budget (decided on their own pages' buttons
/// too, which call `POST /v1/objectives/{id}/budget`).
struct Live {
    items: Vec<Item>,
    total: u64,
    paused: Vec<PausedObjective>,
}

/// The page.
#[derive(Template)]
#[template(path = "review.html")]
struct Page {
    layout: Layout,
    this: Live,
    after_seq: u64,
}

/// The live part alone (for the script).
#[derive(Template)]
#[template(path = "review_live.html")]
struct LiveFragment {
    this: Live,
}

async fn live_of(state: &AppState) -> Result<Live, Problem> {
    let page = state
        .swarm
        .tasks(TaskQuery::status(TaskStatus::Review, LIST_LIMIT_MAX))
        .await?;
    Ok(Live {
        items: page.tasks.iter().map(Item::from).collect(),
        total: page.total,
        paused: state.swarm.budget_pauses().await?,
    })
}

/// `GET /ui/review`.
pub(crate) async fn page(State(state): State<AppState>, visitor: Visitor) -> Response {
    let page = async {
        let after_seq = super::last_seq(&state).await?;
        Ok(html(&Page {
            layout: visitor.layout("review"),
            this: live_of(&state).await?,
            after_seq,
        }))
    }
    .await;
    super::page_or_error(&visitor, "review", page)
}

/// `GET /ui/review/live`.
pub(crate) async fn live(State(state): State<AppState>) -> Result<Response, Problem> {
    Ok(html(&LiveFragment {
        this: live_of(&state).await?,
    }))
}
