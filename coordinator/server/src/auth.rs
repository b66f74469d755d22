//! Who may call a route: the bearer token, or the dashboard's session cookie with its CSRF
//! token, and no state-changing request from another site.
//!
//! With a token configured, every route but the public ones (probes, the login page, the
//! dashboard's script and style sheet) needs either `Authorization: Bearer <token>`, compared
//! in constant time (it does reveal the token's length), or the session cookie the login page
//! set (see `ui::session`). A request that relies on the cookie and changes state (any method
//! but GET and HEAD) must also carry the session's CSRF token in `X-CSRF-Token`: the cookie is
//! sent by the browser on its own, the header only by the dashboard's script, which read the
//! token from its page. A bearer token is never sent on its own, so it needs no CSRF token.
//!
//! A bearer token that is not the server's counts as a failed authentication of the remote
//! address; past the limit the address is answered 429 before its token is compared (see
//! `limits`). A request authenticated by a token or a session carries its `limits::Client`,
//! which the per-client quota counts against.
//!
//! Whether or not a token is configured, a state-changing request that a browser marks as
//! coming from elsewhere (`Sec-Fetch-Site` other than `same-origin`, or, without it, an
//! `Origin` other than the server's) is refused, so another site's form cannot cancel an
//! objective on an open server.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::limits::{self, Client};
use crate::problem::Problem;
use crate::ui::session::{self, Session};
use crate::{AppState, ROUTES, ui};

pub(super) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes_state && is_cross_site(req.headers()) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "cross-site",
            "a state-changing request from another site is refused",
        )
        .field("Origin")
        .into_response();
    }
    let (Some(token), Some(sessions)) = (state.config.token.as_deref(), state.sessions.as_ref())
    else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let public = ROUTES.iter().any(|route| {
        route.is_public() && path_matches(route.path, path) && route.method == req.method()
    });
    if public {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    if let Some(presented) = presented {
        // Asked before the comparison: while an address is limited, a right guess is refused
        // like a wrong one.
        let remote = limits::remote_of(&req);
        if let Err(seconds) = state.limiters.may_authenticate(remote) {
            return too_many_failures(seconds);
        }
        if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            state.limiters.failed_authentication(remote);
            return unauthorized("the bearer token is not valid");
        }
        let client = Client::credential(presented);
        req.extensions_mut().insert(client);
        return next.run(req).await;
    }
    let session = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(session::cookie_value)
        .find_map(|value| {
            sessions
                .check(value, std::time::SystemTime::now())
                .map(|session| (session, Client::credential(value)))
        });
    if let Some((session, client)) = session {
        if changes_state && !csrf_matches(req.headers(), &session) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a request made with the session cookie that changes state needs the \
                 session's CSRF token in `X-CSRF-Token`",
            )
            .field("X-CSRF-Token")
            .into_response();
        }
        req.extensions_mut().insert(session);
        req.extensions_mut().insert(client);
        return next.run(req).await;
    }
    if *req.method() == Method::GET && ui::wants_html(req.headers()) {
        // A person at a browser: the login page, which comes back here once the token is given.
        let back = req
            .uri()
            .path_and_query()
            .map_or("/ui/", |p| p.as_str())
            .to_owned();
        return ui::login_required(&back);
    }
    unauthorized("this route needs `Authorization: Bearer <token>`")
}

/// True when `path` is one of `pattern`'s paths: the same segments, a `{param}` standing for
/// any one non-empty segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pattern = pattern.split('/');
    let mut path = path.split('/');
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') && !s.is_empty() => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// True when a browser says the request comes from another site. `Sec-Fetch-Site` decides
/// when sent (every current browser sends it): only `same-origin`, or `none` (the person typed
/// the address), is this server's own. Without it, an `Origin` other than this server is
/// another site (an opaque `null` origin too, which a page with `Referrer-Policy:
/// no-referrer` also sends, so it is refused only where `Sec-Fetch-Site` is absent). A request
/// with neither header does not come from a browser page.
fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        return !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    !matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn csrf_matches(headers: &HeaderMap, session: &Session) -> bool {
    headers
        .get(session::CSRF_HEADER)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// The answer to an address that failed to authenticate too often.
pub(crate) fn too_many_failures(seconds: u64) -> Response {
    limits::too_many(
        "auth-failures",
        format!(
            "too many failed authentications from this address; retry in {seconds} s \
             (no token is compared until then)"
        ),
        seconds,
    )
}

fn unauthorized(detail: &str) -> Response {
    // `Problem` adds `WWW-Authenticate: Bearer` to every 401.
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        .field("Authorization")
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn route_patterns_match_one_segment_per_parameter() {
        assert!(path_matches("/v1/hooks/{name}", "/v1/hooks/deploy"));
        assert!(path_matches("/healthz", "/healthz"));
        assert!(!path_matches("/v1/hooks/{name}", "/v1/hooks/"));
        assert!(!path_matches("/v1/hooks/{name}", "/v1/hooks"));
        assert!(!path_matches("/v1/hooks/{name}", "/v1/hooks/a/b"));
        assert!(!path_matches("/v1/hooks/{name}", "/v1/agents/a"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn requests_from_other_sites_are_recognised() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(!is_cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!is_cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(is_cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ])));
        assert!(is_cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
        ])));
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        // Another port of the same host is the same site, not the same origin.
        assert!(is_cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        // A form posted from a page that sends no referrer has an opaque origin.
        assert!(!is_cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ])));
    }
}
