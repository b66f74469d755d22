//! The dashboard in a real headless Chromium, driven over WebDriver (`common::browser`): a
//! durable swarm in a temporary directory with the standard test fleet serves the API and the
//! pages on an ephemeral loopback port (`common::api`), and each test acts as a person would:
//! it fills forms, clicks buttons and waits for elements to appear.
//!
//! The tests need Chromium and chromedriver, so they are ignored by default: a plain
//! `cargo test` lists each as "ignored" with that reason, instead of passing it without
//! running it. `cargo test -p swarm-server --test ui -- --include-ignored` runs them (as
//! `.ci/run` does after installing Chromium), and then a missing browser is a failure. They
//! run one at a time (one browser on the machine at once).
//!
//! Every wait is a WebDriver wait for an element or a condition, with a timeout; none sleeps.
//! Each test saves a screenshot of the pages it visits under
//! `<target>/tmp/ui-screenshots/`.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use fantoccini::Locator;
use serde_json::{Value, json};
use swarm_agents::sim::{SimConfig, SimHandle, SimServer};
use swarm_agents::{AgentFactory, FnAgent};
use swarm_coordinator::config::Config;
use swarm_protocol::{FailureKind, ObjectiveId, ObjectiveStatus, TaskOutcome};

use common::api::Server;
use common::browser::Browser;
use common::register;

/// Submit an objective through the form and watch its cards move backlog → running → done
/// on the board as each event happens, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn a_submitted_objective_moves_across_the_board_live() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    browser.goto(&server.url("/ui/submit")).await;
    browser.fill("#goal", "open the gates").await;
    let graph = json!([
        { "id": "first", "capability": "gate" },
        { "id": "second", "capability": "gate", "depends_on": ["first"] }
    ]);
    browser.fill("#tasks", &graph.to_string()).await;
    browser.screenshot("submit").await;
    browser.click("#submit-form button[type=submit]").await;
    // The form goes to the board, filtered to the new objective.
    browser.wait_for("#board").await;
    let objective = browser.objective_in_url().await;
    browser
        .eval("window.__sameDocument = true; return null;")
        .await;

    browser
        .wait_for("section[data-column=running] li[data-key=first]")
        .await;
    browser
        .wait_for("section[data-column=backlog] li[data-key=second]")
        .await;
    browser.wait_for("#live-state.on").await;
    browser.screenshot("board-running").await;

    // Each permit ends one gated attempt, and the live feed moves its card (waited for with
    // the page's patience, not timed: a loaded machine may be slow, never wrong).
    server.gate.add_permits(1);
    browser
        .wait_for("section[data-column=succeeded] li[data-key=first]")
        .await;
    browser
        .wait_for("section[data-column=running] li[data-key=second]")
        .await;
    server.gate.add_permits(1);
    browser
        .wait_for("section[data-column=succeeded] li[data-key=second]")
        .await;
    let view = server.wait(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded);
    // Column counts follow, and the page was never reloaded.
    let done = browser
        .wait_for("section[data-column=succeeded] [data-count]")
        .await;
    assert_eq!(done.text().await.unwrap(), "2");
    assert_eq!(
        browser.eval("return window.__sameDocument === true;").await,
        json!(true)
    );
    browser.screenshot("board-objective").await;

    // The objective's page: its graph, its table and its chain of work.
    browser
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await;
    browser.wait_for("svg.graph a[data-status=done]").await;
    let nodes = browser
        .client
        .find_all(Locator::Css("svg.graph a.node"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("svg.graph path.edge"))
            .await
            .unwrap()
            .len(),
        1
    );
    let timeline = browser.text("ol.timeline").await;
    assert!(timeline.contains("objective succeeded"), "{timeline}");
    browser.screenshot("objective").await;

    // A fuller board, for the screenshot README shows: every column holds cards.
    fill_the_board(&server).await;
    browser.goto(&server.url("/ui/")).await;
    for column in [
        "backlog",
        "ready",
        "running",
        "review",
        "succeeded",
        "failed",
        "cancelled",
    ] {
        browser
            .wait_for(&format!("section[data-column={column}] li[data-task]"))
            .await;
    }
    browser.screenshot("board").await;
    // All eight columns side by side in the 1280-pixel window: one row, none past its edge.
    let layout = browser
        .eval(
            "const w = document.documentElement.clientWidth; \
             const cols = [...document.querySelectorAll('#board section[data-column]')]; \
             return { columns: cols.length, \
               rows: new Set(cols.map(c => Math.round(c.getBoundingClientRect().top))).size, \
               past: cols.filter(c => c.getBoundingClientRect().right > w + 1) \
                 .map(c => c.dataset.column) };",
        )
        .await;
    assert_eq!(
        layout,
        json!({ "columns": 8, "rows": 1, "past": [] }),
        "the board at 1280 px"
    );
    browser.finish().await;
    // The same board on a 400-pixel-wide phone.
    let phone = Browser::phone().await;
    phone.goto(&server.url("/ui/")).await;
    phone
        .wait_for("section[data-column=running] li[data-task]")
        .await;
    let wider = phone
        .eval(
            "const w = document.documentElement.clientWidth; \
             return [...document.querySelectorAll('body *')] \
               .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.board')) \
               .map(e => e.tagName + '.' + e.className);",
        )
        .await;
    assert_eq!(wider, json!([]), "wider than the phone");
    phone.screenshot("board-phone").await;
    phone.finish().await;
    server.finish().await;
}

/// Objectives that leave cards in every column: gated tasks running (more than the gate agent
/// takes, so some wait ready) with dependents in the backlog, finished ones, one in review,
/// one that failed (its dependent cancelled).
async fn fill_the_board(server: &Server) {
    let objectives = [
        json!({ "goal": "Crawl the partner sites", "tasks": (0..10)
            .map(|i| json!({ "id": format!("site-{i}"), "capability": "gate" }))
            .collect::<Vec<_>>() }),
        json!({ "goal": "Index the docs", "tasks": [
            { "id": "fetch", "capability": "gate" },
            { "id": "parse", "capability": "work", "depends_on": ["fetch"] },
            { "id": "summarize", "capability": "echo", "depends_on": ["parse"] }
        ] }),
        json!({ "goal": "Nightly report", "tasks": [
            { "id": "collect", "capability": "work", "input": { "n": 3 } },
            { "id": "total", "capability": "work", "input": { "n": 4 }, "depends_on": ["collect"] },
            { "id": "publish", "capability": "echo", "depends_on": ["total"] }
        ] }),
        json!({ "goal": "Grade the answers", "tasks": [
            { "id": "grade", "capability": "judge" },
            { "id": "record", "capability": "echo", "depends_on": ["grade"] }
        ] }),
        json!({ "goal": "Import the legacy data", "tasks": [
            { "id": "import", "capability": "fail" },
            { "id": "verify", "capability": "work", "depends_on": ["import"] }
        ] }),
    ];
    let fail = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::failure(FailureKind::Permanent, "the source refused the import")
    });
    register(
        &server.swarm,
        "fail-0",
        &["fail"],
        8,
        AgentFactory::shared(fail),
    )
    .await;
    for objective in &objectives {
        server.submit_to_swarm(objective).await;
    }
}

/// A model agent that fails until its circuit breaker opens shows as down on the agents page,
/// live, and up again once a probe succeeds after the cool-down.
///
/// `GET /v1/agents` does not report breaker state on this branch; the breaker shows through
/// the health it publishes (open: down, half-open: degraded, closed: up), which is what this
/// test watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn a_failing_agent_shows_down_while_its_breaker_is_open_then_up() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let sim: SimHandle = SimServer::start(SimConfig::default()).await.unwrap();
    let config = Config::parse(&format!(
        "[[agents]]\n\
         name = \"flaky\"\n\
         provider = \"openai\"\n\
         base_url = \"http://{}/v1\"\n\
         model = \"sim:fail=500x3\"\n\
         capabilities = [\"write\"]\n\
         breaker = {{ consecutive_failures = 3, cool_down = \"2s\" }}\n",
        sim.addr
    ))
    .unwrap();
    let (registration, factory, _) = config.agents[0].build().unwrap();
    let flaky = server
        .swarm
        .register_agent(registration, factory)
        .await
        .unwrap()
        .id;
    browser.goto(&server.url("/ui/agents")).await;
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=up]"))
        .await;
    browser.wait_for("#live-state.on").await;

    let objective = server
        .submit_to_swarm(&json!({
            "goal": "write through a flaky model",
            "tasks": [{
                "id": "w", "capability": "write", "input": { "prompt": "hello" },
                "retry": { "max_attempts": 6, "initial_backoff": "10ms", "max_backoff": "50ms" }
            }]
        }))
        .await;
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=down]"))
        .await;
    let breaker = browser
        .text(&format!("#agent-{flaky} [data-breaker]"))
        .await;
    assert!(breaker.contains("open"), "breaker shown as {breaker:?}");
    browser.screenshot("agents-breaker-open").await;
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=up]"))
        .await;
    let breaker = browser
        .text(&format!("#agent-{flaky} [data-breaker]"))
        .await;
    assert!(breaker.contains("closed"), "breaker shown as {breaker:?}");
    browser.screenshot("agents").await;
    let view = server.wait(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    browser.finish().await;
    server.finish().await;
    sim.shutdown().await.unwrap();
}

/// A task whose output is invalid waits in the review queue; a person fixes the output in the
/// editor (which refuses what is not JSON), approves it, and the dependent runs on the
/// edited output. The approval is in the chain of work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn an_invalid_output_is_approved_edited_and_its_dependent_runs_on_the_edit() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let objective = server
        .submit_to_swarm(&json!({
            "goal": "judge, then pass it on",
            "tasks": [
                { "id": "judged", "capability": "judge" },
                { "id": "after", "capability": "echo", "input": { "$from": "judged" },
                  "depends_on": ["judged"] }
            ]
        }))
        .await;
    browser.goto(&server.url("/ui/review")).await;
    let item = browser.wait_for("li[data-review]").await;
    let task = item.attr("data-review").await.unwrap().unwrap();
    let reason = browser.text("[data-reason]").await;
    assert!(reason.contains("must be a number"), "{reason}");
    let editor = browser.wait_for("[data-output-editor]").await;
    let shown: Value = serde_json::from_str(&editor.prop("value").await.unwrap().unwrap()).unwrap();
    assert_eq!(shown, json!({ "answer": "wrong" }));
    browser.screenshot("review").await;

    // Not JSON: refused in the page, nothing is sent.
    browser.fill("[data-output-editor]", "{\"answer\": ").await;
    browser.click("[data-approve]").await;
    let error = browser.wait_for("[data-editor-error]:not(:empty)").await;
    assert!(error.text().await.unwrap().contains("not valid JSON"));
    assert_eq!(
        server.swarm.objective(objective).await.unwrap().tasks[0].status,
        swarm_protocol::TaskStatus::Review
    );

    browser
        .fill("[data-output-editor]", "{\"answer\": 42}")
        .await;
    browser.click("[data-approve]").await;
    browser.wait_for("[data-review-total=\"0\"]").await;
    let view = server.wait(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.tasks[0].output, Some(json!({ "answer": 42 })));
    let after = view.tasks[1].output.clone().unwrap();
    assert!(
        after.to_string().contains("42") && !after.to_string().contains("wrong"),
        "the dependent ran on {after}"
    );
    // The approval is in the chain of work, as the objective's page shows it.
    browser
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await;
    browser
        .wait_for(&format!("ol.timeline li[data-task={task}]"))
        .await;
    let timeline = browser.text("ol.timeline").await;
    assert!(
        timeline.contains(&format!("{task} `judged` approved")),
        "{timeline}"
    );
    browser.finish().await;
    server.finish().await;
}

/// An approval gate waits in the review queue marked "approval"; approving it there lets its
/// objective finish, and the task after the gate runs on what was approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn an_approval_gate_is_approved_on_the_review_page_and_its_objective_finishes() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let objective = server
        .submit_ok(&json!({
            "goal": "publish after sign-off",
            "tasks": [
                { "id": "draft", "capability": "echo", "input": { "text": "v1" } },
                { "id": "ship-it", "kind": "approval", "input": { "$from": "draft" },
                  "depends_on": ["draft"] },
                { "id": "publish", "capability": "echo", "input": { "$from": "ship-it" },
                  "depends_on": ["ship-it"] }
            ]
        }))
        .await;
    let objective: ObjectiveId = objective.parse().unwrap();
    browser.goto(&server.url("/ui/review")).await;
    // The gate, once `draft` is done: marked as an approval, holding what is to be approved.
    let badge = browser.wait_for("li[data-review] [data-approval]").await;
    assert!(badge.text().await.unwrap().contains("approval"));
    let item = browser.wait_for("li[data-review]").await;
    let key = item
        .find(Locator::Css("b"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(key, "ship-it");
    let editor = browser.wait_for("[data-output-editor]").await;
    let shown: Value = serde_json::from_str(&editor.prop("value").await.unwrap().unwrap()).unwrap();
    assert_eq!(shown["input"], json!({ "text": "v1" }), "{shown}");
    let publish = |view: &swarm_protocol::ObjectiveView| {
        view.tasks
            .iter()
            .find(|t| t.key.to_string() == "publish")
            .cloned()
            .unwrap()
    };
    let view = server.swarm.objective(objective).await.unwrap();
    assert_eq!(publish(&view).status, swarm_protocol::TaskStatus::Backlog);
    browser.screenshot("review-approval").await;

    browser.click("li[data-review] [data-approve]").await;
    browser.wait_for("[data-review-total=\"0\"]").await;
    let view = server.wait(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let published = publish(&view).output.unwrap();
    assert_eq!(
        published["input"]["input"],
        json!({ "text": "v1" }),
        "{published}"
    );
    browser
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await;
    browser.wait_for("[data-objective-status=succeeded]").await;
    browser.finish().await;
    server.finish().await;
}

/// A schedule created through the API appears on the schedules page (live, from its event)
/// with its next fire time; Pause pauses it (its badge, and `GET /v1/schedules`), Resume
/// resumes it, and a fire appears as a link to the objective it submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn a_schedule_is_listed_with_its_next_fire_and_paused_and_resumed_from_its_page() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let listed = async || server.get_json("/v1/schedules").await;
    browser.goto(&server.url("/ui/schedules")).await;
    let empty = browser.wait_for("[data-schedules-empty]").await;
    assert!(empty.text().await.unwrap().contains("swarm schedules add"));
    browser.wait_for("#live-state.on").await;

    // Weekday mornings in Berlin: the next fire is hours or days away, never during the test.
    let created = server
        .post(
            "/v1/schedules",
            &json!({
            "name": "morning-report",
            "cron": "30 6 * * 1-5",
            "time_zone": "Europe/Berlin",
            "template": {
                "goal": "write the morning report",
                "tasks": [{ "id": "report", "capability": "echo", "input": { "text": "hi" } }]
            },
            "overlap": "queue_one",
            "catch_up": { "policy": "run_latest", "window": "1h" }
            }),
        )
        .await;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let next_ms = created["next_fires_ms"][0].as_u64().unwrap();
    let row = "li[data-schedule='morning-report']";
    browser
        .wait_for(&format!("{row}[data-state=active] [data-pause]"))
        .await;
    let next = browser
        .wait_for(&format!("{row} [data-next-fire]:first-child"))
        .await;
    assert_eq!(
        next.attr("data-next-fire").await.unwrap(),
        Some(next_ms.to_string())
    );
    let utc = chrono::DateTime::from_timestamp_millis(i64::try_from(next_ms).unwrap())
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    let text = next.text().await.unwrap();
    assert!(text.contains(&utc) && text.contains("in "), "{text}");
    let facts = browser.text(&format!("{row} .facts")).await;
    assert!(
        facts.contains("queue one") && facts.contains("within 1h"),
        "{facts}"
    );
    browser.screenshot("schedules").await;

    browser.click(&format!("{row} [data-pause]")).await;
    browser
        .wait_for(&format!("{row}[data-state=paused] [data-resume]"))
        .await;
    let badge = browser.text(&format!("{row} [data-state-badge]")).await;
    assert!(badge.contains("paused"), "{badge}");
    assert!(
        !browser.has(&format!("{row} [data-next-fire]")).await,
        "a paused schedule shows no next fire"
    );
    assert_eq!(listed().await[0]["paused"], json!(true));
    browser.screenshot("schedules-paused").await;

    browser.click(&format!("{row} [data-resume]")).await;
    browser
        .wait_for(&format!("{row}[data-state=active] [data-next-fire]"))
        .await;
    let schedules = listed().await;
    assert!(schedules[0].get("paused").is_none(), "{schedules}");
    assert_eq!(schedules[0]["next_fires_ms"][0], json!(next_ms));

    // A fire (the slot a week before) shows up live, linking to its objective.
    let objective = server
        .swarm
        .fire_schedule("morning-report", next_ms - 7 * 86_400_000)
        .await
        .unwrap();
    let link = browser
        .wait_for(&format!(
            "{row} [data-fire='{objective}'] a[href='/ui/objectives/{objective}']"
        ))
        .await;
    server.wait(objective).await;
    browser.screenshot("schedules-fired").await;
    link.click().await.unwrap();
    let goal = browser.text(".goal-text").await;
    assert_eq!(goal, "write the morning report");
    browser.finish().await;
    server.finish().await;
}

/// With a token set, every page is the login form until the token is given once; the browser
/// then keeps only an HttpOnly session cookie (not readable by scripts, never in the URL or
/// storage), and the form's submit goes through with the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn with_a_token_pages_are_refused_until_it_is_given() {
    let browser = Browser::start().await;
    let token = "browser-s3cret";
    let server = Server::start(Some(token)).await;
    for path in ["/ui/", "/ui/agents", "/ui/review", "/ui/submit"] {
        browser.goto(&server.url(path)).await;
        browser.wait_for("form.login input[name=token]").await;
        assert!(
            !browser.has("#board, #live, #submit-form").await,
            "{path} showed its content without the token"
        );
    }
    // The API refuses the page's own requests too.
    let status = browser
        .eval("return fetch('/v1/tasks').then(r => r.status);")
        .await;
    assert_eq!(status, json!(401));
    browser.screenshot("login").await;

    browser.fill("input[name=token]", "not-it").await;
    browser.click("form.login button").await;
    browser.wait_for("#login-error").await;

    browser.fill("input[name=token]", token).await;
    browser.click("form.login button").await;
    // Back on the page it asked for last.
    browser.wait_for("#submit-form").await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/submit");
    assert!(!url.as_str().contains(token));
    assert_eq!(browser.eval("return document.cookie;").await, json!(""));
    assert_eq!(
        browser
            .eval("return localStorage.length + sessionStorage.length;")
            .await,
        json!(0)
    );
    let status = browser
        .eval("return fetch('/v1/tasks').then(r => r.status);")
        .await;
    assert_eq!(status, json!(200));
    // The cookie alone does not change state; the form's request carries the CSRF token.
    let status = browser
        .eval(
            "return fetch('/v1/objectives', {method: 'POST', headers: {'Content-Type': \
             'application/json'}, body: JSON.stringify({goal: 'g', tasks: [{id: 'a', \
             capability: 'work'}]})}).then(r => r.status);",
        )
        .await;
    assert_eq!(status, json!(403));
    browser.fill("#goal", "with a session").await;
    browser
        .fill("#tasks", r#"[{"id": "a", "capability": "work"}]"#)
        .await;
    browser.click("#submit-form button[type=submit]").await;
    browser.wait_for("#board").await;
    let objective = browser.objective_in_url().await;
    browser
        .wait_for("section[data-column=succeeded] li[data-key=a]")
        .await;
    server.wait(objective).await;
    // Logging out ends the session: the pages ask for the token again.
    browser.click("form.logout button").await;
    browser.wait_for("form.login input[name=token]").await;
    browser.goto(&server.url("/ui/")).await;
    browser.wait_for("form.login input[name=token]").await;
    browser.finish().await;
    server.finish().await;
}

/// A goal holding a script is shown as text everywhere, and nothing in it runs. Errors the API
/// answers are shown next to the field they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn a_script_in_a_goal_is_shown_as_text_and_never_runs() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    browser.goto(&server.url("/ui/submit")).await;

    // A graph the API refuses: the problem is shown at the task graph, naming the field.
    browser.fill("#goal", "refused").await;
    browser
        .fill(
            "#tasks",
            r#"[{"id": "a", "capability": "work", "depends_on": ["nope"]}]"#,
        )
        .await;
    browser.click("#submit-form button[type=submit]").await;
    let error = browser.wait_for("[data-error-for=tasks]:not(:empty)").await;
    let field = error.attr("data-field").await.unwrap().unwrap();
    assert!(field.starts_with("tasks[0]"), "{field}");
    assert!(error.text().await.unwrap().contains("nope"));
    browser.screenshot("submit-error").await;

    let goal = "<script>alert(1)</script><img src=x onerror=\"window.__xss=1\">";
    browser.fill("#goal", goal).await;
    browser
        .fill("#tasks", r#"[{"id": "a", "capability": "work"}]"#)
        .await;
    browser.click("#submit-form button[type=submit]").await;
    browser.wait_for("#board").await;
    let objective = browser.objective_in_url().await;
    let card = browser
        .wait_for("section[data-column=succeeded] li[data-key=a] .goal")
        .await;
    assert_eq!(card.text().await.unwrap(), goal);
    browser
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await;
    let title = browser.text(".goal-text").await;
    assert_eq!(title, goal);
    assert_eq!(
        browser.eval("return window.__xss === undefined;").await,
        json!(true)
    );
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "an alert is open"
    );
    // Nothing of the goal became an element.
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('main script, main img').length;")
            .await,
        json!(0)
    );
    browser.finish().await;
    server.finish().await;
}

/// A column holds one page of cards and loads the next on "Show more"; an objective is
/// cancelled from its page (two clicks), and the page shows it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn columns_page_and_an_objective_is_cancelled_from_its_page() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let many = server
        .submit_to_swarm(&json!({
            "goal": "many small things",
            "tasks": (0..120)
                .map(|i| json!({ "id": format!("e{i}"), "capability": "echo" }))
                .collect::<Vec<_>>()
        }))
        .await;
    server.wait(many).await;
    browser.goto(&server.url("/ui/")).await;
    let done = "section[data-column=succeeded]";
    browser.wait_for(&format!("{done} [data-more-after]")).await;
    let count = |n: usize| format!("{done} [data-cards] > li:nth-child({n})");
    browser.wait_for(&count(50)).await;
    assert!(!browser.has(&count(51)).await);
    assert_eq!(browser.text(&format!("{done} [data-count]")).await, "120");
    browser.click(&format!("{done} [data-more-after]")).await;
    browser.wait_for(&count(100)).await;
    browser.click(&format!("{done} [data-more-after]")).await;
    browser.wait_for(&count(120)).await;
    browser.wait_for(&format!("{done} [data-more]:empty")).await;
    // Newest first: the last card is the first task.
    let last = browser.wait_for(&count(120)).await;
    assert_eq!(last.attr("data-key").await.unwrap().as_deref(), Some("e0"));

    let held = server
        .submit_to_swarm(&json!({
            "goal": "wait at the gate",
            "tasks": [
                { "id": "g", "capability": "gate" },
                { "id": "after", "capability": "echo", "depends_on": ["g"] }
            ]
        }))
        .await;
    browser
        .goto(&server.url(&format!("/ui/objectives/{held}")))
        .await;
    browser.wait_for("svg.graph a[data-status=running]").await;
    browser.wait_for("#live-state.on").await;
    let cancel = browser.wait_for("[data-cancel]").await;
    cancel.click().await.unwrap();
    browser.wait_for("[data-cancel][data-armed='1']").await;
    cancel.click().await.unwrap();
    browser.wait_for("[data-objective-status=cancelled]").await;
    browser.wait_for("svg.graph a[data-status=cancelled]").await;
    let view = server.swarm.objective(held).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Cancelled);
    browser.finish().await;
    server.finish().await;
}

/// Eight tabs, each with a history of pages (which the back/forward cache may keep), leave
/// the buttons working: every page loads, the review tab approves an approval gate, the
/// approval reaches the server and the objective finishes, and the board and the objective's
/// page in other tabs show it live. Each page holding its own event stream would take more than the six connections
/// a browser opens to one host, and the later pages and the approval would never load or
/// reach the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn eight_tabs_with_history_leave_approvals_working() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let objective: ObjectiveId = server
        .submit_ok(&json!({
            "goal": "sign off with many tabs open",
            "tasks": [
                { "id": "draft", "capability": "echo", "input": { "text": "v1" } },
                { "id": "sign-off", "kind": "approval", "input": { "$from": "draft" },
                  "depends_on": ["draft"] },
                { "id": "publish", "capability": "echo", "input": { "$from": "sign-off" },
                  "depends_on": ["sign-off"] }
            ]
        }))
        .await
        .parse()
        .unwrap();
    let board = format!("/ui/?objective={objective}");
    let mut tabs = vec![browser.client.window().await.unwrap()];
    for tab in 0..8 {
        if tab > 0 {
            let opened = browser.client.new_window(true).await.unwrap();
            browser
                .client
                .switch_to_window(opened.handle.clone())
                .await
                .unwrap();
            tabs.push(opened.handle);
        }
        // A history in each tab: opened, then followed through the navigation links.
        browser.goto(&server.url(&board)).await;
        browser.wait_for("#board").await;
        for (link, page) in [
            ("/ui/agents", "agents"),
            ("/ui/schedules", "schedules"),
            ("/ui/", "board"),
            ("/ui/review", "review"),
        ] {
            browser.click(&format!("header nav a[href='{link}']")).await;
            browser
                .wait_for(&format!("body[data-page={page}] #main"))
                .await;
        }
        // The first tab ends on the board, the second on the objective's page.
        if tab == 0 {
            browser.goto(&server.url(&board)).await;
            browser.wait_for("#board").await;
        } else if tab == 1 {
            browser
                .goto(&server.url(&format!("/ui/objectives/{objective}")))
                .await;
            browser.wait_for("[data-objective-status=running]").await;
        }
    }
    // The last tab's review page approves the gate once `draft` is done.
    browser.wait_for("#live-state.on").await;
    browser.click("li[data-review] [data-approve]").await;
    browser.wait_for("[data-review-total=\"0\"]").await;
    let view = server.wait(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    browser.screenshot("eight-tabs-review").await;
    // The other tabs followed it live through the shared stream: the board and the
    // objective's page.
    browser
        .client
        .switch_to_window(tabs[0].clone())
        .await
        .unwrap();
    browser
        .wait_for("section[data-column=succeeded] li[data-key=publish]")
        .await;
    browser
        .client
        .switch_to_window(tabs[1].clone())
        .await
        .unwrap();
    browser.wait_for("[data-objective-status=succeeded]").await;
    browser.wait_for("#live-state:not(.on)").await;
    browser.finish().await;
    server.finish().await;
}

/// An action the server refuses says why next to it, and leaves the button usable: an edited
/// output that does not match the task's schema is refused (422), and the task stays in
/// review. Once the server is gone, the button says it cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: cargo test -p swarm-server --test ui -- --include-ignored (.ci/run does)"]
async fn a_refused_action_says_why_and_the_button_works_again() {
    let browser = Browser::start().await;
    let server = Server::start(None).await;
    let objective = server
        .submit_to_swarm(&json!({
            "goal": "judge it",
            "tasks": [{
                "id": "judged", "capability": "judge",
                "output_schema": {
                    "type": "object",
                    "properties": { "answer": { "type": "number" } },
                    "required": ["answer"]
                }
            }]
        }))
        .await;
    browser.goto(&server.url("/ui/review")).await;
    browser.wait_for("[data-output-editor]").await;
    browser
        .fill("[data-output-editor]", "{\"answer\": \"still wrong\"}")
        .await;
    browser.click("[data-approve]").await;
    let error = browser.wait_for("[data-editor-error]:not(:empty)").await;
    let said = error.text().await.unwrap();
    assert!(said.contains("does not match"), "{said}");
    let button = browser.wait_for("[data-approve]:not([aria-busy])").await;
    assert!(button.is_enabled().await.unwrap());
    assert_eq!(button.text().await.unwrap(), "Approve");
    browser.screenshot("review-refused").await;
    assert_eq!(
        server.swarm.objective(objective).await.unwrap().tasks[0].status,
        swarm_protocol::TaskStatus::Review
    );
    // With the server gone, the same button says it cannot be reached.
    server.finish().await;
    browser
        .fill("[data-output-editor]", "{\"answer\": 42}")
        .await;
    browser.click("[data-approve]").await;
    let error = browser
        .client
        .wait()
        .at_most(common::browser::PAGE_PATIENCE)
        .for_element(Locator::XPath(
            "//*[@data-editor-error][contains(., 'cannot be reached')]",
        ))
        .await
        .unwrap();
    assert!(error.text().await.unwrap().contains("cannot be reached"));
    browser.wait_for("[data-approve]:not([aria-busy])").await;
    browser.finish().await;
}
