//! `/v1/schedules`: cron schedules that submit an objective at each slot.
//!
//! Creating, pausing, resuming and deleting a schedule records its event and answers once it
//! is durable. The schedules are the trigger actor's (`swarm_coordinator::triggers`), and so
//! is the firing loop (`Swarm::start_schedule_loop`); each handler is one message to it through `Swarm`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use swarm_protocol::schedule::check_schedule_name;
use swarm_protocol::{ScheduleSpec, SchedulerError};

use crate::AppState;
use crate::problem::{JsonBody, PROBLEM_JSON, Problem};
use swarm_coordinator::Error;
use swarm_coordinator::triggers::ScheduleView;

/// A schedule's name from the path.
fn name(raw: &str) -> Result<&str, Problem> {
    check_schedule_name(raw).map_err(|e| Problem::bad_param("name", e))?;
    Ok(raw)
}

/// Creates a schedule: a cron expression (five fields, or six with seconds first) read in an
/// IANA time zone (default UTC), the objective each slot submits, an overlap and a catch-up
/// policy. 201 once `ScheduleCreated` is durable.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "create_schedule",
    request_body(content = ScheduleSpec, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = ScheduleView,
         headers(("Location" = String, description = "The schedule's route."))),
        (status = 400, description = "The body is not JSON.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 409, description = "A schedule has that name.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over the limit.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 422, description = "A field is not valid (`cron` with croner's message, an \
         unknown `time_zone`, `name`, `catch_up.window`, the template's task graph such as \
         `template.tasks[1].depends_on`, or a wrong type or unknown field); `field` names it.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    JsonBody(mut spec): JsonBody<ScheduleSpec>,
) -> Result<Response, Problem> {
    // Each fire submits the template: it is held to the server's ceilings as a submit is.
    crate::objectives::bound(&mut spec.template, &state.config.ceilings).map_err(|mut p| {
        p.field = p.field.map(|f| format!("template.{f}"));
        p
    })?;
    let template = spec.template.clone();
    let view = state
        .swarm
        .create_schedule(spec)
        .await
        .map_err(|err| match err {
            // Named as a field of the template: `template.tasks[1].depends_on`.
            err @ Error::Scheduler(SchedulerError::Graph(_)) => {
                let mut problem = Problem::from_error(err, Some(&template));
                problem.field = problem.field.map(|f| format!("template.{f}"));
                problem
            }
            err => Problem::from(err),
        })?;
    let location = format!("/v1/schedules/{}", view.spec.name);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Every schedule, by name, with its next fire times and its recent fires.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    operation_id = "list_schedules",
    responses(
        (status = 200, description = "The schedules.", body = Vec<ScheduleView>),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ScheduleView>>, Problem> {
    Ok(Json(state.swarm.schedules().await?))
}

/// Deletes a schedule (204 once `ScheduleDeleted` is durable); the objectives it submitted
/// are not touched.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    tag = "schedules",
    operation_id = "delete_schedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "`name` is not a schedule name.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such schedule.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, Problem> {
    state.swarm.delete_schedule(name(&raw)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: it fires no slot until it is resumed, and does not catch up the slots
/// it skipped. Pausing a paused schedule changes nothing.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    tag = "schedules",
    operation_id = "pause_schedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 200, description = "Paused.", body = ScheduleView),
        (status = 400, description = "`name` is not a schedule name.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such schedule.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn pause(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    Ok(Json(
        state.swarm.set_schedule_paused(name(&raw)?, true).await?,
    ))
}

/// Resumes a paused schedule from its next slot. Resuming a running schedule changes
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    tag = "schedules",
    operation_id = "resume_schedule",
    params(("name" = String, Path, description = "The schedule.")),
    responses(
        (status = 200, description = "Running.", body = ScheduleView),
        (status = 400, description = "`name` is not a schedule name.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 404, description = "No such schedule.", body = Problem,
         content_type = PROBLEM_JSON),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn resume(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    Ok(Json(
        state.swarm.set_schedule_paused(name(&raw)?, false).await?,
    ))
}
