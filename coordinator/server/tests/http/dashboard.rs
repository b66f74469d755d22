//! The dashboard's pages as HTTP: escaped under a strict policy, the schedules page as text,
//! and the login, session cookie and CSRF token when a token is set.

use std::sync::Arc;

use futures::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::PATIENCE;
use crate::common::api::*;

/// Every dashboard page is HTML under a strict Content-Security-Policy, and what a user wrote
/// is escaped: a goal holding a script is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_escape_what_users_wrote_under_a_strict_policy() {
    let server = Server::start(None).await;
    let goal = "<script>alert(1)</script> & \"quotes\"";
    let id = server
        .submit_ok(&json!({ "goal": goal, "tasks": [{ "id": "a", "capability": "work" }] }))
        .await;
    server.wait(&id).await;
    let root = raw_client()
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/ui/");
    // A schedule whose template holds the same goal, for the schedules page.
    let created = server
        .post(
            "/v1/schedules",
            &json!({
                "name": "escaped",
                "cron": "0 0 1 1 *",
                "template": { "goal": goal, "tasks": [{ "id": "a", "capability": "work" }] }
            }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    for path in [
        "/ui/".to_owned(),
        format!("/ui/?objective={id}"),
        "/ui/board/columns".to_owned(),
        format!("/ui/objectives/{id}"),
        format!("/ui/objectives/{id}/live"),
        "/ui/agents".to_owned(),
        "/ui/agents/live".to_owned(),
        "/ui/review".to_owned(),
        "/ui/review/live".to_owned(),
        "/ui/schedules".to_owned(),
        "/ui/schedules/live".to_owned(),
        "/ui/submit".to_owned(),
    ] {
        let response = server.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script>alert"), "{path} holds the raw goal");
        if path.contains(&id)
            || path.starts_with("/ui/board")
            || path.starts_with("/ui/?")
            || path.starts_with("/ui/schedules")
        {
            assert!(
                html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                    || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{path}: {html}"
            );
        }
        // The only script is the server's own file; nothing inline.
        assert_eq!(
            html.matches("<script").count(),
            usize::from(!path.contains("live") && !path.contains("columns")),
            "{path}"
        );
    }
    let board = server.get_text(&format!("/ui/?objective={id}")).await;
    assert!(board.contains("data-column=\"succeeded\""));
    assert!(board.contains("data-key=\"a\""));
    // A filter that does not parse is named on the page.
    let bad = server.get("/ui/?agent=nope").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("data-field=\"agent\""));

    // A page that cannot be shown says why, as a page.
    for (path, status) in [
        (
            format!("/ui/objectives/{}", swarm_protocol::ObjectiveId::new()),
            StatusCode::NOT_FOUND,
        ),
        ("/ui/objectives/nope".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let response = server
            .request(Method::GET, &path)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(response.text().await.unwrap().contains("Back to the board"));
    }

    // The static files, with a validator.
    for (path, kind) in [
        ("/ui/static/app.js", "text/javascript"),
        ("/ui/static/app.css", "text/css"),
        ("/ui/static/events.js", "text/javascript"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        let etag = response.headers()["etag"].clone();
        let again = server
            .request(Method::GET, path)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
    server.finish().await;
}

/// The schedules page shows what `GET /v1/schedules` holds, as text: a schedule firing every
/// second whose objective never ends fires once and then skips its slots (overlap `skip`),
/// one whose template needs a capability no agent has fails to fire; its page lists the
/// fire (a link to the objective), the skips and the failure with their reasons, escapes the
/// goals, and answers under the strict policy. With no schedule it says how to make one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_shows_fires_skips_and_failures_as_text() {
    let server = Server::start(None).await;
    let empty = server.get_text("/ui/schedules").await;
    assert!(empty.contains("No schedule yet"), "{empty}");
    assert!(empty.contains("swarm schedules add"), "{empty}");

    let mut events = server.stream("/v1/events", None).await;
    let fire_loop = server
        .swarm
        .start_schedule_loop(Arc::new(swarm_agents::clock::TokioClock::new()))
        .await;
    for (name, goal, capability) in [
        ("held", "<i>held</i> & \"kept\"", "hold"),
        ("orphan", "<script>alert(2)</script>", "nobody"),
    ] {
        let created = server
            .post(
                "/v1/schedules",
                &json!({
                    "name": name,
                    "cron": "* * * * * *",
                    "time_zone": "Europe/Berlin",
                    "template": { "goal": goal, "tasks": [{ "id": "t", "capability": capability }] }
                }),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // Both happen within a few seconds, in either order.
    let mut missing = vec!["schedule_skipped", "schedule_fire_failed"];
    let mut fired = None;
    while !missing.is_empty() {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {missing:?}"))
            .unwrap();
        missing.retain(|kind| *kind != event.kind);
        if event.kind == "schedule_fired" {
            fired = Some(event.data["objective"].as_str().unwrap().to_owned());
        }
    }
    let fired = fired.expect("a skip comes after a fire");
    fire_loop.stop().await;

    let response = server.get("/ui/schedules").await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    let html = response.text().await.unwrap();
    assert!(
        !html.contains("<script>alert") && !html.contains("<i>held"),
        "{html}"
    );
    assert!(
        html.contains("&#60;script&#62;alert(2)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&#60;i&#62;held&#60;/i&#62; &#38; &#34;kept&#34;")
            || html.contains("&lt;i&gt;held&lt;/i&gt; &amp; &quot;kept&quot;"),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "only the server's own");
    assert!(
        html.contains(&format!("href=\"/ui/objectives/{fired}\"")),
        "{html}"
    );
    assert!(html.contains("data-skips"), "{html}");
    assert!(html.contains("data-last-failure"), "{html}");
    // The reasons, as the API gives them.
    let listed = server.get_json("/v1/schedules").await;
    let of = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    let skip = of("held")["recent_skips"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    let failure = of("orphan")["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    for reason in [&skip, &failure] {
        let escaped = reason
            .replace('&', "&#38;")
            .replace('<', "&#60;")
            .replace('>', "&#62;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        assert!(
            html.contains(reason.as_str()) || html.contains(&escaped),
            "{reason:?} is not on the page: {html}"
        );
    }
    // Times read in UTC, in the schedule's zone and relative to now; the button pauses.
    assert!(html.contains(" UTC</time>"), "{html}");
    assert!(html.contains("CET)") || html.contains("CEST)"), "{html}");
    assert!(html.contains("data-pause=\"held\""), "{html}");
    drop(events);
    server.finish().await;
}

/// With a token set, a browser gets the login form until it gives the token once; then a
/// session cookie (HttpOnly, SameSite=Strict, without the token in it) opens the pages and
/// the API, and a state-changing request made with the cookie needs the CSRF token the
/// pages carry. Requests another site makes are refused, token or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_asks_once_and_the_cookie_needs_its_csrf_token() {
    let server = Server::start(Some(TOKEN)).await;
    let client = raw_client();
    let url = |path: &str| format!("{}{path}", server.base);

    // A browser is shown the login form, which leads back to the page it asked for.
    let refused = client
        .get(url("/ui/agents"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let form = refused.text().await.unwrap();
    assert!(form.contains("name=\"token\"") && form.contains("value=\"/ui/agents\""));
    // A program is told what to send.
    let refused = client.get(url("/v1/tasks")).send().await.unwrap();
    problem(refused, StatusCode::UNAUTHORIZED).await;

    let login = |token: &str, next: &str| {
        client
            .post(url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next={next}"))
            .send()
    };
    assert_eq!(
        login("wrong", "/ui/").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        login("", "/ui/").await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let evil = login(TOKEN, "https://evil.example/").await.unwrap();
    assert_eq!(
        evil.headers()["location"],
        "/ui/",
        "only dashboard paths are followed"
    );
    let ok = login(TOKEN, "%2Fui%2Fagents").await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/ui/agents");
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the token never leaves the form"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = client
        .get(url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 32);
    assert!(!html.contains(TOKEN));
    let listed = client
        .get(url("/v1/tasks"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // Changing state with the cookie alone is refused; with the CSRF token it goes through.
    let submit = |csrf: Option<&str>, origin: Option<&str>| {
        let mut request = client
            .post(url("/v1/objectives"))
            .header("cookie", &cookie)
            .json(&two_step());
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    problem_at(
        submit(None, None).await.unwrap(),
        StatusCode::FORBIDDEN,
        "X-CSRF-Token",
    )
    .await;
    problem(
        submit(Some("0123456789abcdef0123456789abcdef"), None)
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        submit(Some(&csrf), None).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let same_site = server.base.clone();
    assert_eq!(
        submit(Some(&csrf), Some(&same_site))
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    let body = problem(
        submit(Some(&csrf), Some("https://evil.example"))
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(body["field"], "Origin");
    // Even with the bearer token, another site's request is refused.
    let cross = server
        .request(Method::POST, "/v1/objectives")
        .header("sec-fetch-site", "cross-site")
        .json(&two_step())
        .send()
        .await
        .unwrap();
    problem(cross, StatusCode::FORBIDDEN).await;

    // A forged or cleared cookie opens nothing.
    let forged = cookie.replace("v1.", "v1.9");
    let response = client
        .get(url("/v1/tasks"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    let logout = client
        .post(url("/ui/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    server.finish().await;
}

/// An objective paused at its budget is a pending decision: the review page lists it with
/// Continue and Stop, and its own page says why it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objective_paused_at_its_budget_is_listed_for_a_decision() {
    let server = Server::start(None).await;
    server
        .swarm
        .register_agent(
            crate::common::reg("spend-0", &["spend"], 1),
            swarm_agents::AgentFactory::shared(swarm_agents::FnAgent::new(
                |_task: swarm_protocol::Task, _ctx| async move {
                    swarm_protocol::TaskOutcome::Succeeded {
                        output: json!("spent"),
                        usage: Some(swarm_protocol::Usage {
                            input_tokens: 5,
                            output_tokens: 5,
                            cached_input_tokens: 0,
                            cost_usd_micros: None,
                        }),
                    }
                },
            )),
        )
        .await
        .unwrap();
    let mut feed = server.swarm.subscribe().unwrap();
    let id = server
        .submit_ok(&json!({
            "goal": "spend, then ask",
            "tasks": [{ "id": "a", "capability": "spend" },
                      { "id": "b", "capability": "spend", "depends_on": ["a"] }],
            "limits": { "token_budget": 5, "on_budget": "approve" },
        }))
        .await;
    tokio::time::timeout(PATIENCE, async {
        while !matches!(
            feed.recv().await.unwrap().event,
            swarm_protocol::Event::BudgetReached { .. }
        ) {}
    })
    .await
    .unwrap();
    let review = server.get("/ui/review").await.text().await.unwrap();
    assert!(
        review.contains(&format!("data-budget-continue=\"{id}\""))
            && review.contains(&format!("data-budget-stop=\"{id}\""))
            && review.contains("over its `token_budget` of 5"),
        "{review}"
    );
    let page = server
        .get(&format!("/ui/objectives/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-budget-pause"), "{page}");
    server.finish().await;
}
