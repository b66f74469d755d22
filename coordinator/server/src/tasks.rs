//! `/v1/tasks`: tasks across objectives by status (the review queue is `status=review`), and a
//! person's decision on a task in review.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use swarm_protocol::{
    AgentId, Capability, ObjectiveId, ReviewDecision, TaskId, TaskPage, TaskQuery, TaskStatus,
};

use crate::AppState;
use crate::problem::{JsonBody, OptionalJsonBody, PROBLEM_JSON, Problem};

/// The body of an approval: the reviewed output is kept unless `output` replaces it. An edited
/// output is checked against the task's `output_schema`; one that does not match is refused
/// (422, with `errors`) and the task stays in review.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Approval {
    /// Replaces the reviewed output; dependents receive this.
    #[serde(default)]
    output: Option<Value>,
}

/// The body of a rejection.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rejection {
    /// Why; the task fails with it.
    reason: String,
}

/// Items (tasks, objectives) in a page of a listing when the client does not say.
pub(crate) const LIST_LIMIT_DEFAULT: usize = 50;

/// The most items one page of a listing holds.
pub(crate) const LIST_LIMIT_MAX: usize = 500;

/// The name of a status in queries (as in JSON).
pub(crate) fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Backlog => "backlog",
        TaskStatus::Ready => "ready",
        TaskStatus::Running => "running",
        TaskStatus::Waiting => "waiting",
        TaskStatus::Review => "review",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// Every status, in the board's column order.
pub(crate) const STATUSES: [TaskStatus; 8] = [
    TaskStatus::Backlog,
    TaskStatus::Ready,
    TaskStatus::Running,
    TaskStatus::Waiting,
    TaskStatus::Review,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

fn parse_status(value: &str) -> Result<TaskStatus, Problem> {
    STATUSES
        .into_iter()
        .find(|s| status_name(*s) == value)
        .ok_or_else(|| {
            Problem::bad_query(
                "status",
                &format!(
                    "`{value}` is not a task status; use backlog, ready, running, waiting, \
                     review, succeeded, failed or cancelled"
                ),
            )
        })
}

/// Reads the filters of a task listing (`objective`, `capability`, `agent`) from one query
/// pair into `query`; false when `name` is not a filter. An empty value means no filter (as
/// an HTML form sends an empty field). The API's listing and the dashboard's board share this.
pub(crate) fn parse_filter(
    query: &mut TaskQuery,
    name: &str,
    value: &str,
) -> Result<bool, Problem> {
    match name {
        "objective" | "capability" | "agent" if value.is_empty() => {}
        "objective" => {
            query.objective = Some(value.parse().map_err(|e| {
                Problem::bad_query("objective", &format!("is not an objective id: {e}"))
            })?);
        }
        "capability" => {
            query.capability = Some(Capability::new(value).map_err(|e| {
                Problem::bad_query("capability", &format!("is not a capability: {e}"))
            })?);
        }
        "agent" => {
            query.agent =
                Some(value.parse().map_err(|e| {
                    Problem::bad_query("agent", &format!("is not an agent id: {e}"))
                })?);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses the `limit` of a listing (tasks, objectives).
pub(crate) fn parse_limit(value: &str) -> Result<usize, Problem> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
        .ok_or_else(|| {
            Problem::bad_query(
                "limit",
                &format!("`{value}` is not a number from 1 to {LIST_LIMIT_MAX}"),
            )
        })
}

/// Parses the query of `GET /v1/tasks`.
pub(crate) fn parse_list_query(raw: Option<&str>) -> Result<TaskQuery, Problem> {
    let mut query = TaskQuery {
        status: None,
        objective: None,
        capability: None,
        agent: None,
        after: None,
        limit: LIST_LIMIT_DEFAULT,
        newest_first: false,
    };
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        // The dashboard's form sends empty filters; a client of the API leaves them out.
        if value.is_empty() && matches!(&*name, "objective" | "capability" | "agent") {
            return Err(Problem::bad_query(
                &name,
                "is empty; leave it out to list tasks of every one",
            ));
        }
        if parse_filter(&mut query, &name, &value)? {
            continue;
        }
        match &*name {
            "status" => query.status = Some(parse_status(&value)?),
            "limit" => query.limit = parse_limit(&value)?,
            "after" => {
                query.after =
                    Some(value.parse().map_err(|e| {
                        Problem::bad_query("after", &format!("is not a task id: {e}"))
                    })?);
            }
            "order" => {
                query.newest_first = match &*value {
                    "oldest" => false,
                    "newest" => true,
                    other => {
                        return Err(Problem::bad_query(
                            "order",
                            &format!("`{other}` is not an order; use oldest or newest"),
                        ));
                    }
                };
            }
            other => {
                return Err(Problem::bad_query(
                    other,
                    "is not a parameter of this route; use status, objective, capability, \
                     agent, order, limit or after",
                ));
            }
        }
    }
    Ok(query)
}

/// Lists tasks across objectives, a page at a time: those of every unfinished objective and of
/// the finished objectives the scheduler still holds (the most recent ones), by task id.
///
/// The review queue is `status=review`. The last id of a page (`next`) is the `after` of the
/// next one; `total` counts the matching tasks over all pages.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "list_tasks",
    params(
        ("status" = Option<TaskStatus>, Query, example = "review",
         description = "Only tasks in this status (`review`: the review queue)."),
        ("objective" = Option<ObjectiveId>, Query, description = "Only this objective's tasks."),
        ("capability" = Option<String>, Query, description = "Only tasks needing this capability."),
        ("agent" = Option<AgentId>, Query,
         description = "Only tasks whose latest attempt ran on this agent."),
        ("order" = Option<String>, Query, example = "oldest",
         description = "`oldest` (the default) or `newest` first, by task id."),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500,
         description = "Tasks in the page (default 50)."),
        ("after" = Option<TaskId>, Query,
         description = "Only tasks after this one in the order: the `next` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page.", body = TaskPage),
        (status = 400, description = "A query parameter is unknown or does not parse; `field` \
         names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<TaskPage>, Problem> {
    let query = parse_list_query(query.as_deref())?;
    Ok(Json(state.swarm.tasks(query).await?))
}

fn task_id(raw: &str) -> Result<TaskId, Problem> {
    raw.parse().map_err(|e| Problem::bad_param("id", e))
}

/// Approves a task in review: its dependents run with its output (or the one given).
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/approve",
    tag = "tasks",
    operation_id = "approve_task",
    params(("id" = TaskId, Path, description = "The task in review.")),
    request_body(content = Option<Approval>, content_type = "application/json",
                 description = "Optional: an empty body, `null` or `{}` keeps the reviewed \
                                output."),
    responses(
        (status = 204, description = "Decided."),
        (status = 400, description = "`id` is not a task id, or the body is not JSON.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The task is not in review.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field of the body is not valid, or the edited \
         `output` does not match the task's `output_schema` (`errors` lists where, each with \
         its JSON Pointer); `field` names it. The task stays in review.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(approval): OptionalJsonBody<Option<Approval>>,
) -> Result<StatusCode, Problem> {
    let task = task_id(&id)?;
    let decision = ReviewDecision::Approve {
        output: approval.and_then(|a| a.output),
    };
    state.swarm.review(task, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rejects a task in review: it fails with the reason.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/reject",
    tag = "tasks",
    operation_id = "reject_task",
    params(("id" = TaskId, Path, description = "The task in review.")),
    request_body(content = Rejection, content_type = "application/json"),
    responses(
        (status = 204, description = "Decided."),
        (status = 400, description = "`id` is not a task id, or the body is not JSON.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such task.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The task is not in review.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field of the body is not valid; `field` names it.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(rejection): JsonBody<Rejection>,
) -> Result<StatusCode, Problem> {
    let task = task_id(&id)?;
    let decision = ReviewDecision::Reject {
        reason: rejection.reason,
    };
    state.swarm.review(task, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a task in review again: a new attempt, on the same terms as a retry after a failure.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/retry",
    tag = "tasks",
    operation_id = "retry_task",
    params(("id" = TaskId, Path, description = "The task in review.")),
    responses(
        (status = 204, description = "Decided: the task is ready again."),
        (status = 400, description = "`id` is not a task id.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such task.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The task is not in review.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let task = task_id(&id)?;
    state.swarm.review(task, ReviewDecision::Retry).await?;
    Ok(StatusCode::NO_CONTENT)
}
