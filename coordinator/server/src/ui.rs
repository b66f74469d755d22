//! The operator dashboard: server-rendered pages at `/` and under `/ui/`.
//!
//! # Layout
//! - `board`: the kanban board of tasks across objectives, by status, filtered and paged.
//! - `objective`: one objective: its task graph as SVG, its tasks, its chain of work, cancel.
//! - `agents`: the agents with their health and load, and the drain button.
//! - `review`: the review queue with approve (edited output), reject and retry.
//! - `schedules`: the cron schedules with their next and recent fires, pause and resume.
//! - [`session`]: the session cookie and CSRF token behind the login page.
//! - This file: the layout every page shares, the submit and login pages, the static files
//!   and the security headers.
//!
//! # Guarantees
//! - The pages call the same [`Swarm`](swarm_coordinator::Swarm) methods (and the same query
//!   parsing) as the `/v1` handlers, and their script acts only through `/v1`: the dashboard
//!   computes nothing the API does not.
//! - Every page is an askama template compiled into the binary, and so are the scripts and the
//!   style sheet (`include_str!`): no file is read at run time, nothing comes from elsewhere.
//! - Everything a user or a model wrote is escaped by the templates (askama escapes HTML by
//!   default, and nothing is marked safe), and the Content-Security-Policy allows only this
//!   server's own script: no inline script, no other origin.
//! - No page ever lists the whole history: the board reads pages of at most
//!   `tasks::LIST_LIMIT_MAX` tasks per column, an objective's page draws at most
//!   `objective::GRAPH_MAX` tasks and shows the latest `objective::TIMELINE_MAX` events.

pub(super) mod agents;
pub(super) mod board;
pub(super) mod objective;
pub(super) mod review;
pub(super) mod schedules;
pub(crate) mod session;

use std::sync::LazyLock;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use swarm_protocol::{Health, ObjectiveStatus, TaskStatus};

use crate::AppState;
use crate::limits::Remote;
use crate::problem::Problem;
use session::Session;

/// The dashboard's script.
const SCRIPT: &str = include_str!("../assets/app.js");
/// The dashboard's style sheet.
const STYLE: &str = include_str!("../assets/app.css");
/// The shared worker that holds the one event stream every open page follows.
const EVENTS_WORKER: &str = include_str!("../assets/events.js");

/// The policy every answer carries: only this server's script and style sheet, no inline
/// script or style, no other origin, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// A version of each static file, for its URL and `ETag`: a new build's files are fetched
/// again, an unchanged file is not.
static SCRIPT_TAG: LazyLock<String> = LazyLock::new(|| content_version(SCRIPT));
static STYLE_TAG: LazyLock<String> = LazyLock::new(|| content_version(STYLE));
static EVENTS_WORKER_TAG: LazyLock<String> = LazyLock::new(|| content_version(EVENTS_WORKER));

/// The first 8 bytes of the content's SHA-256, in hex.
fn content_version(content: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(content.as_bytes())[..8])
}

/// What the layout of every page needs: which page it is, whether there is a session to end,
/// and the session's CSRF token for the script's state-changing requests.
pub(crate) struct Layout {
    /// The navigation entry to mark as current.
    pub(crate) nav: &'static str,
    /// The CSRF token, when the request came with a session cookie.
    pub(crate) csrf: Option<String>,
    /// A token is configured (so a session can be ended).
    pub(crate) auth: bool,
    /// The script's URL (with its version).
    pub(crate) script: String,
    /// The style sheet's URL (with its version).
    pub(crate) style: String,
    /// The shared event worker's URL (with its version: pages of one build share one worker).
    pub(crate) events_worker: String,
}

/// The request's side of [`Layout`], as an extractor.
pub(crate) struct Visitor {
    csrf: Option<String>,
    auth: bool,
}

impl Visitor {
    /// The layout of the page `nav`.
    pub(crate) fn layout(&self, nav: &'static str) -> Layout {
        Layout {
            nav,
            csrf: self.csrf.clone(),
            auth: self.auth,
            script: format!("/ui/static/app.js?v={}", *SCRIPT_TAG),
            style: format!("/ui/static/app.css?v={}", *STYLE_TAG),
            events_worker: format!("/ui/static/events.js?v={}", *EVENTS_WORKER_TAG),
        }
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            csrf: parts.extensions.get::<Session>().map(|s| s.csrf.clone()),
            auth: state.config.token.is_some(),
        })
    }
}

/// Renders a template as an HTML answer (a 500 problem if it cannot be rendered).
pub(crate) fn html(template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => Html(body).into_response(),
        Err(err) => {
            tracing::error!(%err, "a dashboard page could not be rendered");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the page could not be rendered",
            )
            .into_response()
        }
    }
}

/// A page that could not be shown, for a person: the problem's title and detail, with its
/// status.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    title: String,
    detail: String,
}

/// A page handler's answer: the page, or its problem as an HTML page.
pub(crate) fn page_or_error(
    visitor: &Visitor,
    nav: &'static str,
    page: Result<Response, Problem>,
) -> Response {
    match page {
        Ok(page) => page,
        Err(problem) => {
            let status =
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = html(&ErrorPage {
                layout: visitor.layout(nav),
                title: problem.title.to_string(),
                detail: problem.detail,
            });
            *response.status_mut() = status;
            response
        }
    }
}

/// How a status looks: a CSS class, an icon and a word, so it never relies on colour alone.
/// The icons are characters that DejaVu Sans (Debian's default font) draws, so no page shows
/// a missing glyph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Badge {
    /// The CSS class (`s-running`).
    pub(crate) class: &'static str,
    /// A symbol.
    pub(crate) icon: &'static str,
    /// The word.
    pub(crate) label: &'static str,
}

/// A task status's badge.
pub(crate) fn task_badge(status: TaskStatus) -> Badge {
    let (class, icon, label) = match status {
        TaskStatus::Backlog => ("s-backlog", "◌", "backlog"),
        TaskStatus::Ready => ("s-ready", "○", "ready"),
        TaskStatus::Running => ("s-running", "▶", "running"),
        TaskStatus::Waiting => ("s-waiting", "◷", "waiting"),
        TaskStatus::Review => ("s-review", "✎", "review"),
        TaskStatus::Succeeded => ("s-done", "✔", "done"),
        TaskStatus::Failed => ("s-failed", "✖", "failed"),
        TaskStatus::Cancelled => ("s-cancelled", "⊘", "cancelled"),
    };
    Badge { class, icon, label }
}

/// An objective status's badge.
pub(crate) fn objective_badge(status: ObjectiveStatus) -> Badge {
    match status {
        ObjectiveStatus::Running => task_badge(TaskStatus::Running),
        ObjectiveStatus::Succeeded => Badge {
            label: "succeeded",
            ..task_badge(TaskStatus::Succeeded)
        },
        ObjectiveStatus::Failed => task_badge(TaskStatus::Failed),
        ObjectiveStatus::Compensating => Badge {
            label: "compensating",
            ..task_badge(TaskStatus::Running)
        },
        ObjectiveStatus::Cancelled => task_badge(TaskStatus::Cancelled),
    }
}

/// An agent health's badge.
pub(crate) fn health_badge(health: Health) -> Badge {
    let (class, icon, label) = match health {
        Health::Up => ("s-done", "●", "up"),
        Health::Degraded => ("s-review", "◐", "degraded"),
        Health::Down => ("s-failed", "✖", "down"),
        Health::Draining => ("s-cancelled", "▼", "draining"),
    };
    Badge { class, icon, label }
}

/// A duration rounded for people at a glance: `850ms`, `12.3s`, `4m 05s`, `2h 10m`.
pub(crate) fn format_duration_rounded(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// JSON for people: pretty-printed, cut at `max` characters (with a note).
pub(crate) fn pretty_json(value: &serde_json::Value, max: usize) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    clip(&text, max)
}

/// `text` cut at `max` characters (on a character boundary), with a note saying so.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}… ({} characters in all)",
            &text[..cut],
            text.chars().count()
        ),
    }
}

/// The last event committed, read before a page reads the state it shows: the page's script
/// follows the event stream from there, so it misses nothing the page does not show.
pub(crate) async fn last_seq(state: &AppState) -> Result<u64, Problem> {
    match state.swarm.store() {
        Some(store) => Ok(store
            .info()
            .await
            .map_err(swarm_coordinator::Error::from)?
            .last_seq),
        None => Ok(0),
    }
}

/// True when the client asks for HTML (a browser navigating), not JSON.
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Adds the security headers to every answer.
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: the board.
pub(super) async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// The submit form.
#[derive(Template)]
#[template(path = "submit.html")]
struct SubmitPage {
    layout: Layout,
}

/// `GET /ui/submit`.
pub(super) async fn submit_page(visitor: Visitor) -> Response {
    html(&SubmitPage {
        layout: visitor.layout("submit"),
    })
}

/// The login form.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    /// Where to go once logged in.
    next: String,
    /// Why the last try failed.
    error: Option<&'static str>,
}

/// Only paths of this dashboard are followed after a login, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if (next == "/" || next.starts_with("/ui/"))
                && !next.contains("//")
                && !next.contains('\\') =>
        {
            next.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

fn login_form(next: &str, error: Option<&'static str>, status: StatusCode) -> Response {
    let page = LoginPage {
        layout: Visitor {
            csrf: None,
            auth: true,
        }
        .layout("login"),
        next: safe_next(Some(next)),
        error,
    };
    let mut response = html(&page);
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The answer to a browser that asks for a page without a session: the login form (401),
/// which brings it back to `back` once the token is given.
pub(crate) fn login_required(back: &str) -> Response {
    login_form(back, None, StatusCode::UNAUTHORIZED)
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`.
pub(super) async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<NextQuery>,
) -> Response {
    if state.sessions.is_none() {
        // No token: nothing to log in to.
        return Redirect::to(&safe_next(query.next.as_deref())).into_response();
    }
    login_form(
        query.next.as_deref().unwrap_or("/ui/"),
        None,
        StatusCode::OK,
    )
}

/// `POST /ui/login` (a form: `token`, `next`): a session cookie for the right token. A wrong
/// token counts as a failed authentication of the remote address; past the limit the form is
/// answered 429 before the token is compared.
pub(super) async fn login(
    State(state): State<AppState>,
    Extension(remote): Extension<Remote>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut token = None;
    let mut next = None;
    for (name, value) in form_urlencoded::parse(&body) {
        match &*name {
            "token" => token = Some(value.into_owned()),
            "next" => next = Some(value.into_owned()),
            _ => {}
        }
    }
    let next = safe_next(next.as_deref());
    let (Some(expected), Some(sessions)) = (state.config.token.as_deref(), &state.sessions) else {
        return Redirect::to(&next).into_response();
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return login_form(&next, Some("Enter the token."), StatusCode::BAD_REQUEST);
    };
    if let Err(seconds) = state.limiters.may_authenticate(remote) {
        let mut response = login_form(
            &next,
            Some("Too many wrong tokens from this address; try again later."),
            StatusCode::TOO_MANY_REQUESTS,
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    if !bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes())) {
        state.limiters.failed_authentication(remote);
        return login_form(
            &next,
            Some("That is not the server's token."),
            StatusCode::FORBIDDEN,
        );
    }
    let cookie = sessions.issue(std::time::SystemTime::now());
    let mut response = Redirect::to(&next).into_response();
    let secure = secure_cookie(&state, &headers);
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(&cookie, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /ui/logout`: forgets the session cookie.
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    let secure = secure_cookie(&state, &headers);
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Whether the session cookie is `Secure`: configured so, or the request came through a proxy
/// that terminated TLS (`X-Forwarded-Proto: https`, the first value if it lists several).
fn secure_cookie(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn asset(
    headers: &HeaderMap,
    body: &'static str,
    tag: &str,
    content_type: &'static str,
) -> Response {
    let etag = format!("\"{tag}\"");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|given| given.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /ui/static/app.js`.
pub(super) async fn script(headers: HeaderMap) -> Response {
    asset(
        &headers,
        SCRIPT,
        &SCRIPT_TAG,
        "text/javascript; charset=utf-8",
    )
}

/// `GET /ui/static/app.css`.
pub(super) async fn style(headers: HeaderMap) -> Response {
    asset(&headers, STYLE, &STYLE_TAG, "text/css; charset=utf-8")
}

/// `GET /ui/static/events.js`: a same-origin script, so the Content-Security-Policy's
/// `script-src 'self'` (which governs workers too) allows it.
pub(super) async fn events_worker(headers: HeaderMap) -> Response {
    asset(
        &headers,
        EVENTS_WORKER,
        &EVENTS_WORKER_TAG,
        "text/javascript; charset=utf-8",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/agents")), "/ui/agents");
        assert_eq!(safe_next(Some("/")), "/");
        for evil in [
            "https://evil.example/",
            "//evil.example",
            "/ui/\\evil",
            "/v1/x",
        ] {
            assert_eq!(safe_next(Some(evil)), "/ui/", "{evil}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    /// Symbols DejaVu Sans draws (checked with `fc-list ':charset=<hex>'` on Debian 12); a
    /// badge icon outside this list may show as a missing glyph there.
    const DEJAVU_SANS_SYMBOLS: &str = "◌○▶◷✎✔✖⊘●◐▼";

    #[test]
    fn badge_icons_are_drawn_by_debians_default_font() {
        let statuses = [
            TaskStatus::Backlog,
            TaskStatus::Ready,
            TaskStatus::Running,
            TaskStatus::Waiting,
            TaskStatus::Review,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ];
        let healths = [Health::Up, Health::Degraded, Health::Down, Health::Draining];
        let icons = statuses
            .into_iter()
            .map(task_badge)
            .chain(healths.into_iter().map(health_badge))
            .map(|badge| badge.icon);
        for icon in icons {
            assert!(DEJAVU_SANS_SYMBOLS.contains(icon), "{icon}");
        }
    }

    #[test]
    fn durations_and_long_text_read_well() {
        assert_eq!(format_duration_rounded(850), "850ms");
        assert_eq!(format_duration_rounded(12_340), "12.3s");
        assert_eq!(format_duration_rounded(245_000), "4m 05s");
        assert_eq!(format_duration_rounded(7_800_000), "2h 10m");
        assert_eq!(clip("abcdef", 3), "abc… (6 characters in all)");
        assert_eq!(clip("abc", 3), "abc");
    }
}
