//! The bearer token check: with a token configured, every route but the probes needs
//! `Authorization: Bearer <token>`. The comparison takes the same time wherever the first
//! difference is (it does reveal the token's length).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::http::problem::Problem;
use crate::http::{AppState, ROUTES};

pub(super) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let public = ROUTES
        .iter()
        .any(|route| route.is_public() && route.path == path && route.method == req.method());
    if public {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(presented) if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) => {
            next.run(req).await
        }
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("this route needs `Authorization: Bearer <token>`"),
    }
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

fn unauthorized(detail: &str) -> Response {
    // `Problem` adds `WWW-Authenticate: Bearer` to every 401.
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
        .field("Authorization")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
