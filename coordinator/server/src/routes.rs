//! The route table: every route the API and the dashboard serve, in one list ([`ROUTES`]),
//! and the handler each [`Endpoint`] maps to. The router is built from this list and nothing
//! else, and the auth and OpenAPI tests walk it, so a route cannot be added without being
//! covered by both.

use axum::http::Method;
use axum::routing::{MethodRouter, on};

use crate::{
    AppState, accounts, agents, external_events, healthz, hooks, metrics, objectives, openapi,
    readyz, schedules, streams, tasks, ui,
};

/// What a route does; each maps to its handler in the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics` (Prometheus text).
    Metrics,
    /// `GET /openapi.json`: the API's OpenAPI document.
    OpenApi,
    /// `POST /v1/objectives`.
    SubmitObjective,
    /// `GET /v1/objectives?status=&limit=&after=`.
    ListObjectives,
    /// `GET /v1/objectives/{id}`.
    GetObjective,
    /// `GET /v1/objectives/{id}/chain`.
    Chain,
    /// `GET /v1/objectives/{id}/events`.
    Events,
    /// `POST /v1/objectives/{id}/cancel`.
    Cancel,
    /// `POST /v1/objectives/{id}/budget`: continue or stop an objective paused at a budget.
    Budget,
    /// `GET /v1/budget-pauses`: the objectives paused at a budget.
    BudgetPauses,
    /// `GET /v1/events`: every event of the swarm.
    SwarmEvents,
    /// `POST /v1/events`: an event from outside, for `wait` tasks.
    PostEvent,
    /// `GET /v1/events/pending`: the posted events no task consumed yet.
    PendingEvents,
    /// `GET /v1/tasks?status=&objective=&capability=&agent=&order=&limit=&after=`.
    ListTasks,
    /// `POST /v1/tasks/{id}/approve`.
    Approve,
    /// `POST /v1/tasks/{id}/reject`.
    Reject,
    /// `POST /v1/tasks/{id}/retry`.
    Retry,
    /// `GET /v1/agents`.
    Agents,
    /// `POST /v1/agents`.
    RegisterAgent,
    /// `DELETE /v1/agents/{id}`.
    DeregisterAgent,
    /// `GET /v1/accounts`.
    Accounts,
    /// `POST /v1/schedules`.
    CreateSchedule,
    /// `GET /v1/schedules`.
    Schedules,
    /// `DELETE /v1/schedules/{name}`.
    DeleteSchedule,
    /// `POST /v1/schedules/{name}/pause`.
    PauseSchedule,
    /// `POST /v1/schedules/{name}/resume`.
    ResumeSchedule,
    /// `POST /v1/hooks/{name}`: a webhook delivery (its signature is its authentication).
    Hook,
    /// `POST /v1/hooks`: declares a webhook.
    DeclareHook,
    /// `GET /v1/hooks`.
    Hooks,
    /// `DELETE /v1/hooks/{name}`.
    DeleteHook,
    /// `GET /`: the dashboard (a redirect to the board).
    UiRoot,
    /// `GET /ui/`: the board.
    UiBoard,
    /// `GET /ui/board/columns`: the board's columns (or one column's next page), for its
    /// script.
    UiBoardColumns,
    /// `GET /ui/objectives/{id}`: one objective's page.
    UiObjective,
    /// `GET /ui/objectives/{id}/live`: the live part of an objective's page.
    UiObjectiveLive,
    /// `GET /ui/agents`: the agents page.
    UiAgents,
    /// `GET /ui/agents/live`: the agents table.
    UiAgentsLive,
    /// `GET /ui/review`: the review queue.
    UiReview,
    /// `GET /ui/review/live`: the review queue's items.
    UiReviewLive,
    /// `GET /ui/schedules`: the schedules page.
    UiSchedules,
    /// `GET /ui/schedules/live`: the list of schedules.
    UiSchedulesLive,
    /// `GET /ui/submit`: the submit form.
    UiSubmit,
    /// `GET /ui/login`: the login form.
    UiLoginPage,
    /// `POST /ui/login`: the token, given once for a session cookie.
    UiLogin,
    /// `POST /ui/logout`: ends the session.
    UiLogout,
    /// `GET /ui/static/app.js`: the dashboard's script.
    UiScript,
    /// `GET /ui/static/app.css`: the dashboard's style sheet.
    UiStyle,
    /// `GET /ui/static/events.js`: the shared worker holding the one event stream the open
    /// pages follow.
    UiEventsWorker,
}

/// One route of the API.
#[derive(Debug, Clone)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, with parameters written `{name}`.
    pub path: &'static str,
    /// What it does.
    pub endpoint: Endpoint,
}

impl Route {
    /// True for the routes answered without a token: the probes, the login page and the
    /// dashboard's static files (which hold nothing secret, and the login page needs them),
    /// and webhook deliveries, which a sender signs with the hook's secret instead.
    pub fn is_public(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::Healthz
                | Endpoint::Readyz
                | Endpoint::UiLoginPage
                | Endpoint::UiLogin
                | Endpoint::UiScript
                | Endpoint::UiStyle
                | Endpoint::UiEventsWorker
                | Endpoint::Hook
        )
    }

    /// True for the probes (`/healthz`, `/readyz`), which no quota counts: an orchestrator
    /// polls them on its own schedule.
    pub fn is_probe(&self) -> bool {
        matches!(self.endpoint, Endpoint::Healthz | Endpoint::Readyz)
    }

    /// True for the routes that create work in the swarm (an objective, a posted event, a
    /// webhook delivery): admission control refuses them while the backlog is past its bound
    /// (see [`crate::limits`]).
    pub fn creates_work(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::SubmitObjective | Endpoint::PostEvent | Endpoint::Hook
        )
    }

    /// True for the dashboard's routes (`/` and `/ui/...`): HTML for people, not part of the
    /// API, so the OpenAPI document leaves them out (the test that checks the document
    /// covers every other route).
    pub fn is_ui(&self) -> bool {
        self.path == "/" || self.path.starts_with("/ui/")
    }
}

const fn route(method: Method, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Every route of the API. The router is built from this list and nothing else.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/healthz", Endpoint::Healthz),
    route(Method::GET, "/readyz", Endpoint::Readyz),
    route(Method::GET, "/metrics", Endpoint::Metrics),
    route(Method::GET, "/openapi.json", Endpoint::OpenApi),
    route(Method::POST, "/v1/objectives", Endpoint::SubmitObjective),
    route(Method::GET, "/v1/objectives", Endpoint::ListObjectives),
    route(Method::GET, "/v1/objectives/{id}", Endpoint::GetObjective),
    route(Method::GET, "/v1/objectives/{id}/chain", Endpoint::Chain),
    route(Method::GET, "/v1/objectives/{id}/events", Endpoint::Events),
    route(Method::POST, "/v1/objectives/{id}/cancel", Endpoint::Cancel),
    route(Method::POST, "/v1/objectives/{id}/budget", Endpoint::Budget),
    route(Method::GET, "/v1/budget-pauses", Endpoint::BudgetPauses),
    route(Method::GET, "/v1/events", Endpoint::SwarmEvents),
    route(Method::POST, "/v1/events", Endpoint::PostEvent),
    route(Method::GET, "/v1/events/pending", Endpoint::PendingEvents),
    route(Method::GET, "/v1/tasks", Endpoint::ListTasks),
    route(Method::POST, "/v1/tasks/{id}/approve", Endpoint::Approve),
    route(Method::POST, "/v1/tasks/{id}/reject", Endpoint::Reject),
    route(Method::POST, "/v1/tasks/{id}/retry", Endpoint::Retry),
    route(Method::GET, "/v1/agents", Endpoint::Agents),
    route(Method::POST, "/v1/agents", Endpoint::RegisterAgent),
    route(Method::DELETE, "/v1/agents/{id}", Endpoint::DeregisterAgent),
    route(Method::GET, "/v1/accounts", Endpoint::Accounts),
    route(Method::POST, "/v1/schedules", Endpoint::CreateSchedule),
    route(Method::POST, "/v1/hooks/{name}", Endpoint::Hook),
    route(Method::POST, "/v1/hooks", Endpoint::DeclareHook),
    route(Method::GET, "/v1/hooks", Endpoint::Hooks),
    route(Method::DELETE, "/v1/hooks/{name}", Endpoint::DeleteHook),
    route(Method::GET, "/v1/schedules", Endpoint::Schedules),
    route(
        Method::DELETE,
        "/v1/schedules/{name}",
        Endpoint::DeleteSchedule,
    ),
    route(
        Method::POST,
        "/v1/schedules/{name}/pause",
        Endpoint::PauseSchedule,
    ),
    route(
        Method::POST,
        "/v1/schedules/{name}/resume",
        Endpoint::ResumeSchedule,
    ),
    route(Method::GET, "/", Endpoint::UiRoot),
    route(Method::GET, "/ui/", Endpoint::UiBoard),
    route(Method::GET, "/ui/board/columns", Endpoint::UiBoardColumns),
    route(Method::GET, "/ui/objectives/{id}", Endpoint::UiObjective),
    route(
        Method::GET,
        "/ui/objectives/{id}/live",
        Endpoint::UiObjectiveLive,
    ),
    route(Method::GET, "/ui/agents", Endpoint::UiAgents),
    route(Method::GET, "/ui/agents/live", Endpoint::UiAgentsLive),
    route(Method::GET, "/ui/review", Endpoint::UiReview),
    route(Method::GET, "/ui/review/live", Endpoint::UiReviewLive),
    route(Method::GET, "/ui/schedules", Endpoint::UiSchedules),
    route(Method::GET, "/ui/schedules/live", Endpoint::UiSchedulesLive),
    route(Method::GET, "/ui/submit", Endpoint::UiSubmit),
    route(Method::GET, "/ui/login", Endpoint::UiLoginPage),
    route(Method::POST, "/ui/login", Endpoint::UiLogin),
    route(Method::POST, "/ui/logout", Endpoint::UiLogout),
    route(Method::GET, "/ui/static/app.js", Endpoint::UiScript),
    route(Method::GET, "/ui/static/app.css", Endpoint::UiStyle),
    route(
        Method::GET,
        "/ui/static/events.js",
        Endpoint::UiEventsWorker,
    ),
];

impl Endpoint {
    /// The handler of this endpoint for `method`.
    pub(crate) fn handler(self, method: Method) -> MethodRouter<AppState> {
        // Every method in `ROUTES` is a standard one, which always converts; the auth test
        // calls each route with its method, so a mistake here would fail it.
        let filter = axum::routing::MethodFilter::try_from(method)
            .unwrap_or(axum::routing::MethodFilter::GET);
        match self {
            Self::Healthz => on(filter, healthz),
            Self::Readyz => on(filter, readyz),
            Self::Metrics => on(filter, metrics::scrape),
            Self::OpenApi => on(filter, openapi::document),
            Self::SubmitObjective => on(filter, objectives::submit),
            Self::ListObjectives => on(filter, objectives::list),
            Self::GetObjective => on(filter, objectives::get),
            Self::Chain => on(filter, objectives::chain),
            Self::Events => on(filter, streams::stream),
            Self::Cancel => on(filter, objectives::cancel),
            Self::Budget => on(filter, objectives::decide_budget),
            Self::BudgetPauses => on(filter, objectives::budget_pauses),
            Self::SwarmEvents => on(filter, streams::stream_all),
            Self::PostEvent => on(filter, external_events::post),
            Self::PendingEvents => on(filter, external_events::pending),
            Self::ListTasks => on(filter, tasks::list),
            Self::Approve => on(filter, tasks::approve),
            Self::Reject => on(filter, tasks::reject),
            Self::Retry => on(filter, tasks::retry),
            Self::Agents => on(filter, agents::list),
            Self::RegisterAgent => on(filter, agents::register),
            Self::DeregisterAgent => on(filter, agents::deregister),
            Self::Accounts => on(filter, accounts::list),
            Self::CreateSchedule => on(filter, schedules::create),
            Self::Hook => on(filter, hooks::receive),
            Self::DeclareHook => on(filter, hooks::declare),
            Self::Hooks => on(filter, hooks::list),
            Self::DeleteHook => on(filter, hooks::delete),
            Self::Schedules => on(filter, schedules::list),
            Self::DeleteSchedule => on(filter, schedules::delete),
            Self::PauseSchedule => on(filter, schedules::pause),
            Self::ResumeSchedule => on(filter, schedules::resume),
            Self::UiRoot => on(filter, ui::root),
            Self::UiBoard => on(filter, ui::board::page),
            Self::UiBoardColumns => on(filter, ui::board::columns_fragment),
            Self::UiObjective => on(filter, ui::objective::page),
            Self::UiObjectiveLive => on(filter, ui::objective::live),
            Self::UiAgents => on(filter, ui::agents::page),
            Self::UiAgentsLive => on(filter, ui::agents::live),
            Self::UiReview => on(filter, ui::review::page),
            Self::UiReviewLive => on(filter, ui::review::live),
            Self::UiSchedules => on(filter, ui::schedules::page),
            Self::UiSchedulesLive => on(filter, ui::schedules::live),
            Self::UiSubmit => on(filter, ui::submit_page),
            Self::UiLoginPage => on(filter, ui::login_page),
            Self::UiLogin => on(filter, ui::login),
            Self::UiLogout => on(filter, ui::logout),
            Self::UiScript => on(filter, ui::script),
            Self::UiStyle => on(filter, ui::style),
            Self::UiEventsWorker => on(filter, ui::events_worker),
        }
    }
}
