//! One objective's page: its task graph drawn as SVG (tasks as nodes coloured and labelled by
//! status, dependencies as edges), a table of its tasks (attempts, time, tokens, errors,
//! output), its chain of work as a timeline, and a cancel button.
//!
//! The page reads `Swarm::objective` and `Swarm::chain`, the calls behind
//! `GET /v1/objectives/{id}` and `/chain`, and the timeline's wording is the one `swarm
//! replay` prints (`crate::text::timeline_entries`). The script follows the swarm's event
//! stream (the one every page shares), and a moment after an event of this objective fetches
//! the live part again (`/ui/objectives/{id}/live`), so tasks spawned while it runs appear in
//! the graph.

use std::collections::VecDeque;

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use rustc_hash::FxHashMap;
use swarm_protocol::{ObjectiveView, TaskId, TaskStatus, Usage, Usd};

use super::{
    Badge, Layout, Visitor, clip, format_duration_rounded, html, objective_badge, pretty_json,
    task_badge,
};
use crate::AppState;
use crate::objectives::objective_id;
use crate::problem::Problem;
use crate::text::timeline_entries;

/// The most tasks the graph draws (the table lists them all).
pub(crate) const GRAPH_MAX: usize = 400;
/// The most events the timeline shows (the latest).
pub(crate) const TIMELINE_MAX: usize = 300;
/// The most tasks the table lists.
pub(crate) const TABLE_MAX: usize = 1_000;

const NODE_W: u32 = 150;
const NODE_H: u32 = 36;
const GAP_X: u32 = 40;
const GAP_Y: u32 = 14;
const MARGIN: u32 = 12;

/// A node of the graph.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) title: String,
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) badge: Badge,
}

/// An edge, as an SVG path.
pub(crate) struct Edge {
    pub(crate) d: String,
}

/// The graph.
pub(crate) struct Graph {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    /// Tasks left out of the drawing.
    pub(crate) omitted: usize,
}

/// Lays the first [`GRAPH_MAX`] tasks out in layers by depth (the longest chain of
/// dependencies above each), in id order within a layer.
pub(crate) fn layout(view: &ObjectiveView) -> Graph {
    let shown = &view.tasks[..view.tasks.len().min(GRAPH_MAX)];
    let index: FxHashMap<TaskId, usize> =
        shown.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    // Kahn's algorithm over the drawn tasks: a task's depth is one more than its deepest
    // dependency's.
    let mut waiting = vec![0usize; shown.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); shown.len()];
    for (i, task) in shown.iter().enumerate() {
        for dep in &task.depends_on {
            if let Some(&d) = index.get(dep) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let mut depth = vec![0u32; shown.len()];
    let mut ready: VecDeque<usize> = (0..shown.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = ready.pop_front() {
        for &j in &dependents[i] {
            depth[j] = depth[j].max(depth[i] + 1);
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push_back(j);
            }
        }
    }
    let mut rows: Vec<u32> = Vec::new();
    let mut place = Vec::with_capacity(shown.len());
    for &d in &depth {
        let layer = d as usize;
        if rows.len() <= layer {
            rows.resize(layer + 1, 0);
        }
        place.push((
            MARGIN + d * (NODE_W + GAP_X),
            MARGIN + rows[layer] * (NODE_H + GAP_Y),
        ));
        rows[layer] += 1;
    }
    let nodes = shown
        .iter()
        .zip(&place)
        .map(|(task, &(x, y))| {
            let badge = task_badge(task.status);
            Node {
                id: task.id.to_string(),
                label: clip_label(&format!("{} {}", badge.icon, task.key)),
                title: format!(
                    "{} `{}` ({}): {}",
                    task.id, task.key, task.capability, badge.label
                ),
                x,
                y,
                badge,
            }
        })
        .collect();
    let edges = shown
        .iter()
        .enumerate()
        .flat_map(|(i, task)| {
            let place = &place;
            let index = &index;
            task.depends_on.iter().filter_map(move |dep| {
                let (x1, y1) = place[*index.get(dep)?];
                let (x2, y2) = place[i];
                let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
                let (ex, ey) = (x2, y2 + NODE_H / 2);
                let bend = GAP_X / 2;
                Some(Edge {
                    d: format!(
                        "M{sx},{sy} C{},{sy} {},{ey} {ex},{ey}",
                        sx + bend,
                        ex.saturating_sub(bend)
                    ),
                })
            })
        })
        .collect();
    let layers = rows.len() as u32;
    let tallest = rows.iter().copied().max().unwrap_or(0);
    Graph {
        width: 2 * MARGIN + layers * (NODE_W + GAP_X),
        height: 2 * MARGIN + tallest * (NODE_H + GAP_Y),
        nodes,
        edges,
        omitted: view.tasks.len() - shown.len(),
    }
}

/// A node's label fits its box.
fn clip_label(text: &str) -> String {
    match text.char_indices().nth(19) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// A row of the task table.
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) capability: String,
    pub(crate) badge: Badge,
    pub(crate) agent: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) time: String,
    pub(crate) run_ms: u64,
    pub(crate) since_ms: Option<u64>,
    pub(crate) tokens: u64,
    pub(crate) depends_on: String,
    pub(crate) error: Option<String>,
    pub(crate) output: Option<String>,
    pub(crate) partial: Option<String>,
}

/// One line of the timeline.
pub(crate) struct Moment {
    pub(crate) seq: u64,
    pub(crate) at: String,
    pub(crate) text: String,
    pub(crate) task: Option<String>,
}

/// The live part of the page.
pub(crate) struct Live {
    pub(crate) id: String,
    pub(crate) goal: String,
    pub(crate) badge: Badge,
    pub(crate) running: bool,
    pub(crate) failure: Option<String>,
    /// Why it is paused at a budget, while it waits for a person's decision.
    pub(crate) budget_pause: Option<String>,
    /// What its tasks spent, once they spent any tokens ([`spent`]).
    pub(crate) spent: Option<String>,
    pub(crate) counts: Vec<(Badge, usize)>,
    pub(crate) graph: Graph,
    pub(crate) rows: Vec<Row>,
    pub(crate) rows_omitted: usize,
    pub(crate) timeline: Vec<Moment>,
    pub(crate) timeline_omitted: usize,
    /// The last event of the chain read.
    pub(crate) last_seq: u64,
}

async fn live_of(state: &AppState, raw: &str) -> Result<Live, Problem> {
    let id = objective_id(raw)?;
    // The chain first: the view (the scheduler's memory) is as new or newer.
    let chain = state.swarm.chain(id).await?;
    let view = state.swarm.objective(id).await?;
    let now = swarm_coordinator::journal::now_ms();
    let last_seq = chain.last().map_or(0, |e| e.seq);
    let entries = timeline_entries(&chain);
    let timeline_omitted = entries.len().saturating_sub(TIMELINE_MAX);
    let timeline = entries
        .into_iter()
        .skip(timeline_omitted)
        .map(|e| Moment {
            seq: e.seq,
            at: format!("+{}", format_duration_rounded(e.since_start_ms)),
            text: e.text,
            task: e.task.map(|t| t.to_string()),
        })
        .collect();
    let counts = [
        TaskStatus::Backlog,
        TaskStatus::Ready,
        TaskStatus::Running,
        TaskStatus::Waiting,
        TaskStatus::Review,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ]
    .into_iter()
    .map(|s| {
        (
            task_badge(s),
            view.tasks.iter().filter(|t| t.status == s).count(),
        )
    })
    .filter(|(_, n)| *n > 0)
    .collect();
    let rows = view
        .tasks
        .iter()
        .take(TABLE_MAX)
        .map(|t| {
            let run_ms = u64::try_from(t.run_time.as_millis()).unwrap_or(u64::MAX);
            let running = t.running_since_ms.map_or(0, |s| now.saturating_sub(s));
            Row {
                id: t.id.to_string(),
                key: t.key.to_string(),
                capability: t.capability.to_string(),
                badge: task_badge(t.status),
                agent: t.agent.map(|a| a.to_string()),
                attempts: t.attempts,
                time: format_duration_rounded(run_ms.saturating_add(running)),
                run_ms,
                since_ms: t.running_since_ms,
                tokens: t.usage.input_tokens + t.usage.output_tokens,
                depends_on: t
                    .depends_on
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                error: t.error.as_deref().map(|e| clip(e, 400)),
                output: t.output.as_ref().map(|o| pretty_json(o, 600)),
                partial: t.partial_output.as_ref().map(|o| pretty_json(o, 600)),
            }
        })
        .collect();
    Ok(Live {
        id: id.to_string(),
        goal: view.goal.clone(),
        badge: objective_badge(view.status),
        running: !view.status.is_terminal(),
        failure: view.failure.clone(),
        budget_pause: view.budget_pause.as_ref().map(|p| p.reason.clone()),
        spent: spent(&view.usage),
        counts,
        graph: layout(&view),
        rows_omitted: view.tasks.len().saturating_sub(TABLE_MAX),
        rows,
        timeline,
        timeline_omitted,
        last_seq,
    })
}

/// An objective's spending as the page shows it: its tokens and their cost in dollars, or
/// "cost unknown" when a model without a price spent some; `None` before any token.
fn spent(usage: &Usage) -> Option<String> {
    if usage.tokens() == 0 {
        return None;
    }
    let cost = match usage.known_cost() {
        Some(micros) => Usd(micros).to_string(),
        None => "cost unknown".to_owned(),
    };
    Some(format!("{} tokens · {cost}", usage.tokens()))
}

/// The live part alone (for the script).
#[derive(Template)]
#[template(path = "objective_live.html")]
struct LiveFragment {
    this: Live,
}

/// The page.
#[derive(Template)]
#[template(path = "objective.html")]
struct Page {
    layout: Layout,
    this: Live,
    /// The swarm's last event before the page was read, where its script follows the
    /// swarm's stream from.
    after_seq: u64,
}

/// `GET /ui/objectives/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Response {
    let page = async {
        let after_seq = super::last_seq(&state).await?;
        let this = live_of(&state, &id).await?;
        Ok(html(&Page {
            layout: visitor.layout("objective"),
            this,
            after_seq,
        }))
    }
    .await;
    super::page_or_error(&visitor, "objective", page)
}

/// `GET /ui/objectives/{id}/live`.
pub(crate) async fn live(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(html(&LiveFragment {
        this: live_of(&state, &id).await?,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use swarm_protocol::{Capability, ObjectiveId, ObjectiveStatus, TaskKey, TaskView};

    fn task(id: u64, deps: &[u64]) -> TaskView {
        TaskView {
            id: TaskId(id),
            key: TaskKey::new(format!("t{id}")).unwrap(),
            capability: Capability::new("work").unwrap(),
            kind: swarm_protocol::TaskKind::Agent,
            event: None,
            waiting_until_ms: None,
            status: TaskStatus::Backlog,
            attempts: 0,
            agent: None,
            output: None,
            error: None,
            partial_output: None,
            spawned_by: None,
            compensates: None,
            depends_on: deps.iter().map(|&d| TaskId(d)).collect(),
            running_since_ms: None,
            review_errors: Vec::new(),
            review_until_ms: None,
            escalations: 0,
            usage: Usage::default(),
            run_time: Duration::ZERO,
        }
    }

    #[test]
    fn spending_shows_its_cost_or_that_it_is_unknown() {
        let usage = |cost| Usage {
            input_tokens: 1000,
            output_tokens: 500,
            cost_usd_micros: cost,
            ..Usage::default()
        };
        assert_eq!(spent(&Usage::default()), None);
        assert_eq!(
            spent(&usage(Some(450))).as_deref(),
            Some("1500 tokens · $0.000450")
        );
        assert_eq!(
            spent(&usage(None)).as_deref(),
            Some("1500 tokens · cost unknown")
        );
    }

    #[test]
    fn tasks_are_layered_by_their_longest_chain_of_dependencies() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4, and 5 alone; 4 also waits for 1 directly.
        let view = ObjectiveView {
            id: ObjectiveId::new(),
            goal: "g".into(),
            status: ObjectiveStatus::Running,
            failure: None,
            budget_pause: None,
            usage: Usage::default(),
            tasks: vec![
                task(1, &[]),
                task(2, &[1]),
                task(3, &[1]),
                task(4, &[2, 3, 1]),
                task(5, &[]),
            ],
        };
        let graph = layout(&view);
        let x: Vec<u32> = graph.nodes.iter().map(|n| n.x).collect();
        let step = NODE_W + GAP_X;
        assert_eq!(
            x,
            [
                MARGIN,
                MARGIN + step,
                MARGIN + step,
                MARGIN + 2 * step,
                MARGIN
            ]
        );
        assert_eq!(
            graph.nodes[4].y,
            MARGIN + NODE_H + GAP_Y,
            "second in its layer"
        );
        assert_eq!(graph.edges.len(), 5);
        assert_eq!(graph.width, 2 * MARGIN + 3 * step);
        assert_eq!(graph.omitted, 0);
    }
}
