//! What the API refuses, as problems naming the field: malformed and invalid requests, a body
//! over the limit, and every route but the probes without the token.

use std::num::NonZeroU32;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use swarm_server::limits::{Limits, Rate};
use swarm_server::{ApiConfig, ROUTES};

use crate::common::api::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_problems_naming_the_field() {
    let server = Server::start(None).await;
    let post = |body: &'static str| {
        server
            .request(Method::POST, "/v1/objectives")
            .header("content-type", "application/json")
            .body(body)
    };

    let malformed = post(r#"{"goal": "x", "tasks": ["#).send().await.unwrap();
    let malformed = problem(malformed, StatusCode::BAD_REQUEST).await;
    assert!(malformed["detail"].as_str().unwrap().contains("line 1"));

    let wrong_type = post(r#"{"goal": "x", "priority": "high"}"#)
        .send()
        .await
        .unwrap();
    problem_at(wrong_type, StatusCode::UNPROCESSABLE_ENTITY, "priority").await;

    let unknown =
        post(r#"{"goal": "x", "tasks": [{"id": "a", "capability": "work", "colour": 1}]}"#)
            .send()
            .await
            .unwrap();
    let unknown = problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        unknown["detail"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );
    assert!(
        unknown["field"].as_str().unwrap().starts_with("tasks[0]"),
        "{unknown}"
    );

    let missing = post(r#"{"tasks": []}"#).send().await.unwrap();
    let missing = problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(missing["detail"].as_str().unwrap().contains("goal"));

    let no_type = server
        .request(Method::POST, "/v1/objectives")
        .body(two_step().to_string())
        .send()
        .await
        .unwrap();
    problem_at(no_type, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type").await;

    let unknown_capability = server
        .submit(
            &json!({ "goal": "x", "tasks": [
                { "id": "a", "capability": "work" },
                { "id": "b", "capability": "teleport" }
            ] }),
            None,
        )
        .await;
    let unknown_capability = problem_at(
        unknown_capability,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tasks[1].capability",
    )
    .await;
    assert!(
        unknown_capability["detail"]
            .as_str()
            .unwrap()
            .contains("teleport")
    );

    let cycle = server
        .submit(
            &json!({ "goal": "x", "tasks": [
                { "id": "a", "capability": "work", "depends_on": ["b"] },
                { "id": "b", "capability": "work", "depends_on": ["a"] }
            ] }),
            None,
        )
        .await;
    let cycle = problem(cycle, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(cycle["detail"].as_str().unwrap().contains("cycle"));
    assert!(cycle["field"].as_str().unwrap().ends_with("depends_on"));

    // A goal alone needs a planner (an agent with capability `plan`); none has registered.
    let no_planner = server.submit(&json!({ "goal": "plan it" }), None).await;
    let no_planner = problem_at(no_planner, StatusCode::UNPROCESSABLE_ENTITY, "tasks").await;
    assert!(
        no_planner["detail"].as_str().unwrap().contains("planner"),
        "{no_planner}"
    );

    let bad_key = server.submit(&two_step(), Some(&"k".repeat(300))).await;
    problem_at(bad_key, StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key").await;

    for path in [
        "/v1/objectives/not-a-uuid",
        "/v1/objectives/not-a-uuid/chain",
        "/v1/objectives/not-a-uuid/events",
    ] {
        let response = server.get(path).await;
        let body = problem_at(response, StatusCode::BAD_REQUEST, "id").await;
        assert!(body["detail"].as_str().unwrap().contains("`id`"));
    }
    let bad_task = server.post_empty("/v1/tasks/xyz/approve").await;
    problem_at(bad_task, StatusCode::BAD_REQUEST, "id").await;

    let nobody = swarm_protocol::ObjectiveId::new();
    for (method, path) in [
        (Method::GET, format!("/v1/objectives/{nobody}")),
        (Method::GET, format!("/v1/objectives/{nobody}/chain")),
        (Method::GET, format!("/v1/objectives/{nobody}/events")),
        (Method::POST, format!("/v1/objectives/{nobody}/cancel")),
        (Method::POST, "/v1/tasks/T999999/approve".to_owned()),
    ] {
        let response = server.request(method, &path).send().await.unwrap();
        let body = problem(response, StatusCode::NOT_FOUND).await;
        assert!(
            body["detail"].as_str().unwrap().contains("not found"),
            "{path}: {body}"
        );
    }
    let bad_last = server
        .request(Method::GET, &format!("/v1/objectives/{nobody}/events"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    problem_at(bad_last, StatusCode::BAD_REQUEST, "Last-Event-ID").await;

    let no_route = server.get("/v1/nothing").await;
    problem(no_route, StatusCode::NOT_FOUND).await;
    let wrong_method = server.delete("/v1/objectives").await;
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let server = Server::start_with(ApiConfig {
        body_limit_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let big = json!({ "goal": "x".repeat(8192), "tasks": [{ "id": "a", "capability": "work" }] });
    let response = server.submit(&big, None).await;
    let body = problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(body["detail"].as_str().unwrap().contains("4096"));

    // The default is 1 MiB.
    assert_eq!(ApiConfig::default().body_limit_bytes, 1024 * 1024);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_probes_needs_the_token() {
    // Many wrong tokens from one address: more than the failed-authentication limit allows
    // (`limits.rs` tests that limit).
    let server = Server::start_with(ApiConfig {
        token: Some(TOKEN.to_owned()),
        limits: Limits {
            auth_failures: Rate::new(NonZeroU32::MAX, Duration::from_secs(1), NonZeroU32::MAX),
            ..Limits::default()
        },
        ..ApiConfig::default()
    })
    .await;
    let id = server.submit_ok(&two_step()).await;
    let anonymous = reqwest::Client::new();
    let mut checked = 0;
    for route in ROUTES {
        let path = route.path.replace(
            "{id}",
            if route.path.starts_with("/v1/tasks") {
                "T1"
            } else if route.path.starts_with("/v1/agents") {
                "A999"
            } else {
                &id
            },
        );
        // A listing route is called with the query it needs.
        let path = if route.path == "/v1/tasks" {
            format!("{path}?status=review")
        } else {
            path
        };
        let url = format!("{}{path}", server.base);
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        if route.is_public() {
            let response = anonymous
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            if method == Method::GET {
                assert_eq!(response.status(), StatusCode::OK, "{path}");
            } else {
                // The login form's POST, without a token: answered, not refused.
                assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            }
            continue;
        }
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
            let mut request = anonymous.request(method.clone(), &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{} {path}",
                route.method
            );
            problem_at(response, StatusCode::UNAUTHORIZED, "Authorization").await;
        }
        // With the token the route is reached (whatever it then answers).
        let response = server
            .request(method.clone(), &path)
            .json(&json!({ "reason": "r" }))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        if method == Method::GET && !path.ends_with("/events") {
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        checked += 1;
    }
    assert_eq!(checked, ROUTES.iter().filter(|r| !r.is_public()).count());
    assert!(checked >= 8);
    // Paths the router does not declare are refused before anything else.
    let unknown = anonymous
        .get(format!("{}/v1/secret", server.base))
        .send()
        .await
        .unwrap();
    problem(unknown, StatusCode::UNAUTHORIZED).await;
    server.finish().await;
}
