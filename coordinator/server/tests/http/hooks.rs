//! Webhooks over HTTP: signed deliveries start objectives (and nothing else does), hooks
//! declared through the API take deliveries until deleted and survive a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_coordinator::config::HookConfig;
use swarm_coordinator::triggers::{Environment, Hooks};
use swarm_protocol::Event;
use swarm_server::ApiConfig;

use crate::common::PATIENCE;
use crate::common::api::*;

const HOOK_SECRET: &str = "hook-secret";

/// The variable the hook `deploy` of [`start_with_hook`] reads its secret from.
const DEPLOY_SECRET_ENV: &str = "SWARM_TEST_HTTP_DEPLOY_HOOK_SECRET";

/// A hook's `[[hooks]]` fields, whose template takes its goal and input from the payload.
fn hook_config(name: &str, secret_env: &str) -> HookConfig {
    HookConfig {
        name: name.into(),
        secret_env: secret_env.into(),
        template: json!({
            "goal": { "$payload": "/message" },
            "tasks": [{ "id": "d", "capability": "echo", "input": { "ref": { "$payload": "/ref" } } }]
        }),
        tolerance: None,
    }
}

/// A server with the hook `deploy` of `swarm.toml`.
async fn start_with_hook(token: Option<&str>) -> Server {
    // The secret is looked up in a fixed environment: setting a variable of the test process
    // is `unsafe` while other threads run (and the workspace forbids unsafe code).
    let book = Hooks::configured(
        &[hook_config("deploy", DEPLOY_SECRET_ENV)],
        Environment::fixed([(DEPLOY_SECRET_ENV, HOOK_SECRET)]),
    )
    .unwrap();
    let server = Server::start_with(ApiConfig {
        token: token.map(str::to_owned),
        ..ApiConfig::default()
    })
    .await;
    server.swarm.serve_hooks(book).await.unwrap();
    server
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Posts a delivery to `/v1/hooks/{name}`, signed at `t` with `secret` (no signature: None).
async fn deliver(
    server: &Server,
    name: &str,
    body: &str,
    signed: Option<(&str, u64)>,
    delivery: &str,
) -> reqwest::Response {
    // No bearer token: the signature is the hook's authentication.
    let mut request = server
        .client
        .post(format!("{}/v1/hooks/{name}", server.base))
        .header("content-type", "application/json")
        .header("x-swarm-delivery", delivery)
        .body(body.to_owned());
    if let Some((secret, t)) = signed {
        request = request.header(
            "x-swarm-signature",
            swarm_coordinator::triggers::signature::sign(secret.as_bytes(), t, body.as_bytes()),
        );
    }
    request.send().await.unwrap()
}

/// Over loopback: a delivery with a valid signature starts an objective with the mapped
/// input; a wrong signature, a stale timestamp, a missing signature and a reused delivery id
/// each create nothing; an unknown hook is 404 and a payload without a referenced path 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_start_objectives_and_nothing_else_does() {
    let server = start_with_hook(Some(TOKEN)).await;
    let body = r#"{"message": "deploy main", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "deploy", body, Some((HOOK_SECRET, now)), "d-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    let id = answer["id"].as_str().unwrap().to_owned();
    let objective = server.wait(&id).await;
    assert_eq!(objective.goal, "deploy main");
    // The echo agent answers with the input it got.
    let output = objective.tasks[0].output.clone().unwrap();
    assert_eq!(output["input"], json!({ "ref": "main" }));

    let count = || async {
        server
            .swarm
            .list_objectives(None, None, 100)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 1);
    // The same delivery again: the same objective, nothing new.
    let again = deliver(&server, "deploy", body, Some((HOOK_SECRET, now)), "d-1").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], id.as_str());
    // Refused, creating nothing.
    for (signed, why) in [
        (Some(("wrong-secret", now)), "does not match"),
        (Some((HOOK_SECRET, now - 3_600)), "timestamp"),
        (None, "no `X-Swarm-Signature`"),
    ] {
        let response = deliver(&server, "deploy", body, signed, "d-2").await;
        let problem = problem_at(response, StatusCode::UNAUTHORIZED, "X-Swarm-Signature").await;
        assert!(
            problem["detail"].as_str().unwrap().contains(why),
            "{problem}"
        );
    }
    let unknown = deliver(&server, "nope", body, Some((HOOK_SECRET, now)), "d-3").await;
    problem_at(unknown, StatusCode::NOT_FOUND, "name").await;
    let lacking = r#"{"message": "no ref"}"#;
    let response = deliver(&server, "deploy", lacking, Some((HOOK_SECRET, now)), "d-4").await;
    problem_at(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "template.tasks[0].input.ref",
    )
    .await;
    assert_eq!(count().await, 1);
    server.finish().await;
}

/// Declares a hook over HTTP; returns the answer.
async fn declare_hook(server: &Server, body: &Value) -> reqwest::Response {
    server.post("/v1/hooks", body).await
}

fn hook_names(hooks: &Value) -> Vec<(String, String)> {
    hooks
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Over loopback, with the API token: a hook declared with `POST /v1/hooks` is listed (the
/// secret only by its variable), takes signed deliveries that start objectives, refuses a
/// reused delivery id with another body (409 naming `X-Swarm-Delivery`), and once deleted
/// refuses deliveries (404). Bad declarations name their field; names in use are 409, and a
/// hook of swarm.toml can be neither replaced nor deleted through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_declared_through_the_api_take_deliveries_until_deleted() {
    const VAR: &str = "SWARM_TEST_HTTP_API_HOOK_SECRET";
    const SECRET: &str = "api-hook-s3cret";
    let book = Hooks::configured(
        &[hook_config("deploy", DEPLOY_SECRET_ENV)],
        Environment::fixed([(DEPLOY_SECRET_ENV, HOOK_SECRET), (VAR, SECRET)]),
    )
    .unwrap();
    let server = Server::start_with(ApiConfig {
        token: Some(TOKEN.into()),
        ..ApiConfig::default()
    })
    .await;
    server.swarm.serve_hooks(book).await.unwrap();
    let mut body = serde_json::to_value(hook_config("build", VAR)).unwrap();
    body["tolerance"] = json!("2m");
    let response = declare_hook(&server, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/hooks/build");
    let text = response.text().await.unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let declared: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(declared["name"], "build");
    assert_eq!(declared["secret_env"], VAR);
    assert_eq!(declared["tolerance"], "2m");
    assert_eq!(declared["source"], "api");
    assert_eq!(declared["template"], body["template"]);

    // Listed by name beside the hook of swarm.toml, with no secret.
    let response = server.get("/v1/hooks").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(SECRET) && !text.contains(HOOK_SECRET),
        "{text}"
    );
    let hooks: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        hook_names(&hooks),
        [
            ("build".to_owned(), "api".to_owned()),
            ("deploy".to_owned(), "config".to_owned())
        ]
    );
    assert_eq!(hooks[1]["tolerance"], "5m");

    // Refused declarations, each naming its field.
    for (change, status, field, says) in [
        (json!({}), StatusCode::CONFLICT, "name", "exists already"),
        (
            json!({ "name": "deploy" }),
            StatusCode::CONFLICT,
            "name",
            "swarm.toml",
        ),
        (
            json!({ "name": "other", "secret_env": "SWARM_TEST_SURELY_UNSET" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret_env",
            "SWARM_TEST_SURELY_UNSET",
        ),
        (
            json!({ "name": "other", "template": { "goal": { "$payload": "message" } } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template.goal",
            "JSON Pointer",
        ),
        (
            json!({ "name": "a/b" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
            "only A-Z",
        ),
        (
            json!({ "name": "other", "tolerance": "soon" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tolerance",
            "tolerance",
        ),
        (
            json!({ "name": "other", "secret": "inline" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret",
            "unknown field",
        ),
    ] {
        let mut bad = body.clone();
        for (key, value) in change.as_object().unwrap() {
            bad[key] = value.clone();
        }
        let response = declare_hook(&server, &bad).await;
        let problem = problem(response, status).await;
        assert_eq!(problem["field"], field, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }

    // A signed delivery starts an objective with the mapped input.
    let payload = r#"{"message": "build main", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "build", payload, Some((SECRET, now)), "b-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["hook"], "build");
    let id = answer["id"].as_str().unwrap().to_owned();
    let objective = server.wait(&id).await;
    assert_eq!(objective.goal, "build main");
    assert_eq!(
        objective.tasks[0].output.clone().unwrap()["input"],
        json!({ "ref": "main" })
    );
    // Signed with another hook's secret: refused.
    let response = deliver(&server, "build", payload, Some((HOOK_SECRET, now)), "b-2").await;
    problem(response, StatusCode::UNAUTHORIZED).await;
    // The same delivery id with another body: 409 naming the delivery header.
    let other = r#"{"message": "build dev", "ref": "dev"}"#;
    let response = deliver(&server, "build", other, Some((SECRET, now)), "b-1").await;
    let conflict = problem_at(response, StatusCode::CONFLICT, "X-Swarm-Delivery").await;
    assert_eq!(
        conflict["detail"],
        "delivery `b-1` was already received with a different body"
    );
    assert_eq!(
        server
            .swarm
            .list_objectives(None, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    // Deleting: a hook of swarm.toml is refused, an unknown one is 404.
    let response = server.delete("/v1/hooks/deploy").await;
    let refused = problem_at(response, StatusCode::CONFLICT, "name").await;
    assert!(
        refused["detail"].as_str().unwrap().contains("swarm.toml"),
        "{refused}"
    );
    let response = server.delete("/v1/hooks/nope").await;
    problem_at(response, StatusCode::NOT_FOUND, "name").await;
    let response = server.delete("/v1/hooks/build").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // From then on its deliveries are refused, signed or not.
    let response = deliver(&server, "build", payload, Some((SECRET, now)), "b-3").await;
    problem_at(response, StatusCode::NOT_FOUND, "name").await;
    let response = server.delete("/v1/hooks/build").await;
    problem(response, StatusCode::NOT_FOUND).await;
    let hooks = server.get_json("/v1/hooks").await;
    assert_eq!(
        hook_names(&hooks),
        [("deploy".to_owned(), "config".to_owned())]
    );

    // The log holds the declaration and the deletion, and never the secret.
    let events = server
        .swarm
        .store()
        .unwrap()
        .read_after(0, 10_000)
        .await
        .unwrap();
    let kinds: Vec<&Event> = events
        .iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, Event::HookDeclared { .. } | Event::HookDeleted { .. }))
        .collect();
    assert!(
        matches!(kinds[..], [Event::HookDeclared { name: a, config }, Event::HookDeleted { name: b }]
            if a == "build" && b == "build" && config["secret_env"] == VAR),
        "{kinds:?}"
    );
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(SECRET));
    assert!(server.swarm.declared_hooks().await.unwrap().is_empty());
    server.finish().await;
}

/// A server on `dir` whose hooks are those of `configured` and then the declared ones the
/// log holds, their secrets read in `env` (a restart of `swarm serve`).
async fn restart_with_hooks(
    dir: tempfile::TempDir,
    configured: &[HookConfig],
    env: Environment,
) -> (Server, Vec<String>) {
    let book = Hooks::configured(configured, env).unwrap();
    let server = Server::start_in(dir, ApiConfig::default()).await;
    let restored = server.swarm.serve_hooks(book).await.unwrap();
    (server, restored)
}

/// Hooks declared through the API come back after a restart on the same data directory, with
/// their secrets read again from their variables (a changed value is the one that counts);
/// one whose variable is unset is left out without failing the start, and can still be
/// deleted; a hook of swarm.toml of the same name wins over a declared one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_declared_through_the_api_survive_a_restart_until_deleted() {
    const ALPHA_VAR: &str = "SWARM_TEST_HTTP_RESTART_ALPHA_SECRET";
    const BETA_VAR: &str = "SWARM_TEST_HTTP_RESTART_BETA_SECRET";
    let env = |alpha: Option<&str>, beta: Option<&str>| {
        Environment::fixed(
            [(ALPHA_VAR, alpha), (BETA_VAR, beta)]
                .into_iter()
                .filter_map(|(var, value)| value.map(|v| (var, v))),
        )
    };
    let (server, restored) = restart_with_hooks(
        tempfile::tempdir().unwrap(),
        &[],
        env(Some("alpha-1"), Some("beta-1")),
    )
    .await;
    assert!(restored.is_empty());
    for (name, var) in [("alpha", ALPHA_VAR), ("beta", BETA_VAR)] {
        let response = declare_hook(
            &server,
            &serde_json::to_value(hook_config(name, var)).unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let before = server.get_json("/v1/hooks").await;
    let dir = server.finish().await;

    // Restarted with alpha's secret changed and beta's variable unset.
    let (server, restored) = restart_with_hooks(dir, &[], env(Some("alpha-2"), None)).await;
    assert_eq!(restored, ["alpha"]);
    let after = server.get_json("/v1/hooks").await;
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after[0], before[0]);
    let payload = r#"{"message": "after the restart", "ref": "main"}"#;
    let now = unix_now();
    let response = deliver(&server, "alpha", payload, Some(("alpha-2", now)), "a-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id: Value = response.json().await.unwrap();
    let objective = server
        .swarm
        .wait(id["id"].as_str().unwrap().parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(objective.goal, "after the restart");
    // The secret it was declared with no longer signs for it.
    let response = deliver(&server, "alpha", payload, Some(("alpha-1", now)), "a-2").await;
    problem(response, StatusCode::UNAUTHORIZED).await;
    // Left out, so not served...
    let response = deliver(&server, "beta", payload, Some(("beta-1", now)), "b-1").await;
    problem(response, StatusCode::NOT_FOUND).await;
    // ...but still declared, and deleting it forgets it.
    let response = server.delete("/v1/hooks/beta").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let dir = server.finish().await;

    // Restarted with both variables set, and swarm.toml now declaring `alpha` too: the file's
    // hook is served; beta stays deleted.
    let mut file_alpha = hook_config("alpha", BETA_VAR);
    file_alpha.template =
        json!({ "goal": "from the file", "tasks": [{ "id": "t", "capability": "echo" }] });
    let (server, restored) = restart_with_hooks(
        dir,
        std::slice::from_ref(&file_alpha),
        env(Some("alpha-2"), Some("beta-2")),
    )
    .await;
    assert!(restored.is_empty(), "{restored:?}");
    let hooks = server.get_json("/v1/hooks").await;
    assert_eq!(
        hook_names(&hooks),
        [("alpha".to_owned(), "config".to_owned())]
    );
    assert_eq!(hooks[0]["secret_env"], BETA_VAR);
    let response = deliver(&server, "alpha", payload, Some(("beta-2", now)), "a-3").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The declaration stays (it comes back if the file drops its hook).
    let declared: Vec<String> = server
        .swarm
        .declared_hooks()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(declared, ["alpha"]);
    server.finish().await;
}
