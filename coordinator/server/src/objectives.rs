//! `/v1/objectives`: submit, list, read, the chain of work, cancel.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use swarm_coordinator::config::LimitsSection;
use swarm_protocol::bounds::check_duration;
use swarm_protocol::{
    BudgetDecision, EventRecord, Objective, ObjectiveId, ObjectiveStatus, ObjectiveView,
    PausedObjective, TraceContext,
};
use swarm_store::StoredObjective;

use crate::AppState;
use crate::problem::{JsonBody, PROBLEM_JSON, Problem, over_limit};
use crate::tasks::{LIST_LIMIT_DEFAULT, parse_limit};

/// The header that makes a submit idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The answer to a submit.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Submitted {
    /// The new objective (or, for a repeat under the same idempotency key, the first one).
    id: ObjectiveId,
    /// Where to follow it.
    links: Links,
}

/// The objective's routes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Links {
    /// `GET`: its live view.
    #[serde(rename = "self")]
    this: String,
    /// `GET`: its events as Server-Sent Events.
    events: String,
    /// `GET`: its chain of work (every event so far).
    chain: String,
}

/// Parses an objective id path parameter, naming it when it is not one.
pub(super) fn objective_id(raw: &str) -> Result<ObjectiveId, Problem> {
    raw.parse().map_err(|e| Problem::bad_param("id", e))
}

/// Submits an objective; answers once it is durable.
///
/// A repeat under the same `Idempotency-Key` with the same body gets the same answer (the
/// first objective's id); with another body, 409. A W3C `traceparent` (with its `tracestate`)
/// makes the objective's spans continue the caller's trace; one that is not valid is ignored,
/// as W3C Trace Context says.
#[utoipa::path(
    post,
    path = "/v1/objectives",
    tag = "objectives",
    operation_id = "submit_objective",
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Makes the submit idempotent: 1 to 255 printable ASCII characters."),
        ("traceparent" = Option<String>, Header,
         description = "W3C Trace Context: the objective's spans continue this trace."),
        ("tracestate" = Option<String>, Header,
         description = "W3C Trace Context: vendor state sent on with `traceparent`."),
    ),
    request_body(content = Objective, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted and durable.", body = Submitted,
         headers(("Location" = String, description = "The objective's route."))),
        (status = 400, description = "The body is not JSON.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The idempotency key was used with another body.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field, the task graph, a capability, an input \
         reference or the idempotency key is not valid; `field` names it.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "Overloaded, or the event log or coordinator is not \
         available; try again after `Retry-After`.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(mut objective): JsonBody<Objective>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let trace = trace_context(&headers);
    bound(&mut objective, &state.config.ceilings)?;
    // The body is kept so that a graph error can name the task's index in `tasks`.
    let id = state
        .swarm
        .submit_traced(objective.clone(), key, trace)
        .await
        .map_err(|e| Problem::from_error(e, Some(&objective)))?;
    let this = format!("/v1/objectives/{id}");
    let body = Submitted {
        id,
        links: Links {
            events: format!("{this}/events"),
            chain: format!("{this}/chain"),
            this: this.clone(),
        },
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&this) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Holds a submitted objective to the server's ceilings: its `deadline` within
/// [`swarm_protocol::bounds::DURATION_MAX`] (422 naming `limits.deadline`), and its graph
/// limits lowered to `[limits]` (a client may ask for less than the server allows, never more;
/// a graph past the lowered limits is then refused naming them). Each task's own fields are
/// checked with the graph.
pub(super) fn bound(objective: &mut Objective, limits: &LimitsSection) -> Result<(), Problem> {
    if let Some(deadline) = objective.limits.deadline {
        check_duration("limits.deadline", deadline).map_err(over_limit)?;
    }
    limits.clamp(&mut objective.limits);
    Ok(())
}

/// One page of `GET /v1/objectives`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Listing {
    /// The objectives of the page, oldest first.
    objectives: Vec<ListedObjective>,
    /// The `after` of the next page; `None` on the last one.
    next: Option<ObjectiveId>,
}

/// One objective of the listing, as the event log's index holds it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ListedObjective {
    /// The objective.
    id: ObjectiveId,
    /// Its status.
    status: ObjectiveStatus,
    /// When it was submitted, milliseconds since the Unix epoch.
    submitted_at_ms: u64,
    /// When it ended, if it did.
    ended_at_ms: Option<u64>,
    /// The client's idempotency key, if it gave one.
    idempotency_key: Option<String>,
}

impl From<StoredObjective> for ListedObjective {
    fn from(stored: StoredObjective) -> Self {
        Self {
            id: stored.id,
            status: stored.status,
            submitted_at_ms: stored.submitted_at_ms,
            ended_at_ms: stored.ended_at_ms,
            idempotency_key: stored.idempotency_key,
        }
    }
}

/// What `GET /v1/objectives` was asked for.
#[derive(Debug, PartialEq)]
struct ListQuery {
    status: Option<ObjectiveStatus>,
    after: Option<ObjectiveId>,
    limit: usize,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Result<Self, Problem> {
        let mut list = Self {
            status: None,
            after: None,
            limit: LIST_LIMIT_DEFAULT,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "status" => {
                    let status = serde_json::from_value(serde_json::Value::from(value));
                    list.status = Some(status.map_err(|_| {
                        Problem::bad_query(
                            "status",
                            &format!(
                                "`{value}` is not a status; use running, compensating, \
                                 succeeded, failed or cancelled"
                            ),
                        )
                    })?);
                }
                "limit" => list.limit = parse_limit(value)?,
                "after" => {
                    list.after = Some(value.parse().map_err(|e| {
                        Problem::bad_query("after", &format!("is not an objective id: {e}"))
                    })?);
                }
                other => {
                    return Err(Problem::bad_query(
                        other,
                        "is not a parameter of this route; use status, limit or after",
                    ));
                }
            }
        }
        Ok(list)
    }
}

/// Lists the objectives of the event log, oldest first, a page at a time.
///
/// Ids are UUIDv7 and sort by time, so the last id of a page (`next`) is the `after` of the
/// next one.
#[utoipa::path(
    get,
    path = "/v1/objectives",
    tag = "objectives",
    operation_id = "list_objectives",
    params(
        ("status" = Option<ObjectiveStatus>, Query, description = "Only objectives in this status."),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500,
         description = "Objectives in the page (default 50)."),
        ("after" = Option<ObjectiveId>, Query,
         description = "Only objectives after this one: the `next` of the previous page."),
    ),
    responses(
        (status = 200, description = "One page.", body = Listing),
        (status = 400, description = "A query parameter is unknown or does not parse; \
         `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The event log is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Listing>, Problem> {
    let query = ListQuery::parse(query.as_deref())?;
    // One more than the page tells whether there is a next page.
    let mut objectives = state
        .swarm
        .list_objectives(query.status, query.after, query.limit + 1)
        .await?;
    let next = if objectives.len() > query.limit {
        objectives.truncate(query.limit);
        objectives.last().map(|o| o.id)
    } else {
        None
    };
    Ok(Json(Listing {
        objectives: objectives.into_iter().map(Into::into).collect(),
        next,
    }))
}

/// Reads an objective with its tasks: the live view, or rebuilt from the event log once it
/// ended.
#[utoipa::path(
    get,
    path = "/v1/objectives/{id}",
    tag = "objectives",
    operation_id = "get_objective",
    params(("id" = ObjectiveId, Path, description = "The objective.")),
    responses(
        (status = 200, description = "The objective.", body = ObjectiveView),
        (status = 400, description = "`id` is not an objective id.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such objective.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ObjectiveView>, Problem> {
    let id = objective_id(&id)?;
    Ok(Json(state.swarm.objective(id).await?))
}

/// The objective's chain of work: every event recorded for it so far, in order.
#[utoipa::path(
    get,
    path = "/v1/objectives/{id}/chain",
    tag = "objectives",
    operation_id = "objective_chain",
    params(("id" = ObjectiveId, Path, description = "The objective.")),
    responses(
        (status = 200, description = "Its events, in order.", body = Vec<EventRecord>),
        (status = 400, description = "`id` is not an objective id.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such objective.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn chain(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventRecord>>, Problem> {
    let id = objective_id(&id)?;
    Ok(Json(state.swarm.chain(id).await?))
}

/// Cancels an objective: its tasks that have not finished will not run.
#[utoipa::path(
    post,
    path = "/v1/objectives/{id}/cancel",
    tag = "objectives",
    operation_id = "cancel_objective",
    params(("id" = ObjectiveId, Path, description = "The objective.")),
    responses(
        (status = 200, description = "The objective after the cancel.", body = ObjectiveView),
        (status = 400, description = "`id` is not an objective id.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such objective.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The event log or coordinator is not available.",
         body = Problem, content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ObjectiveView>, Problem> {
    let id = objective_id(&id)?;
    state.swarm.cancel(id).await?;
    Ok(Json(state.swarm.objective(id).await?))
}

/// The objectives paused at a spending limit (`on_budget: approve`), waiting for a person's
/// decision, oldest first.
#[utoipa::path(
    get,
    path = "/v1/budget-pauses",
    tag = "objectives",
    operation_id = "list_budget_pauses",
    responses(
        (status = 200, description = "Every objective paused at a budget.",
         body = Vec<PausedObjective>),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn budget_pauses(
    State(state): State<AppState>,
) -> Result<Json<Vec<PausedObjective>>, Problem> {
    Ok(Json(state.swarm.budget_pauses().await?))
}

/// A person's decision on an objective paused at a spending limit (`on_budget: approve`):
/// `continue` raises each budget it passed (by `add_tokens` or `add_cost`, or else by the
/// amount it was submitted with) and it starts attempts again; `stop` fails it naming the
/// limit.
#[utoipa::path(
    post,
    path = "/v1/objectives/{id}/budget",
    tag = "objectives",
    operation_id = "decide_budget",
    params(("id" = ObjectiveId, Path, description = "The objective paused at a budget.")),
    request_body(content = BudgetDecision, content_type = "application/json"),
    responses(
        (status = 200, description = "The objective after the decision.", body = ObjectiveView),
        (status = 400, description = "`id` is not an objective id, or the body is not JSON.",
         body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No such objective.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "The objective is not paused at a budget.", body = Problem,
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
pub(super) async fn decide_budget(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(decision): JsonBody<BudgetDecision>,
) -> Result<Json<ObjectiveView>, Problem> {
    let id = objective_id(&id)?;
    state.swarm.decide_budget(id, decision).await?;
    Ok(Json(state.swarm.objective(id).await?))
}

/// The request's `Idempotency-Key` header, if it has one.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-idempotency-key",
            "idempotency key: must be printable ASCII",
        )
        .field("Idempotency-Key")
    })?;
    Ok(Some(key.to_owned()))
}

/// The caller's W3C trace context: `None` without a valid `traceparent`.
fn trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let traceparent = headers.get("traceparent")?.to_str().ok()?;
    let tracestate = headers
        .get("tracestate")
        .and_then(|value| value.to_str().ok());
    TraceContext::parse(traceparent, tracestate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_defaults_and_parses_each_parameter() {
        let none = ListQuery::parse(None).unwrap();
        assert_eq!(
            none,
            ListQuery {
                status: None,
                after: None,
                limit: LIST_LIMIT_DEFAULT
            }
        );
        let id = ObjectiveId::new();
        let all = ListQuery::parse(Some(&format!("status=failed&limit=500&after={id}"))).unwrap();
        assert_eq!(
            all,
            ListQuery {
                status: Some(ObjectiveStatus::Failed),
                after: Some(id),
                limit: 500
            }
        );
    }

    #[test]
    fn bad_list_parameters_are_named() {
        for (query, field) in [
            ("status=review", "status"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=x", "limit"),
            ("after=O-1", "after"),
            ("page=2", "page"),
        ] {
            let problem = ListQuery::parse(Some(query)).unwrap_err();
            assert_eq!(problem.status, 400, "{query}");
            assert_eq!(problem.field.as_deref(), Some(field), "{query}");
        }
    }
}
