//! The dashboard in a real headless Chromium, driven over WebDriver (fantoccini and Debian's
//! `chromedriver`, started by each test on a free port): a durable swarm in a temporary
//! directory serves the API and the pages on an ephemeral loopback port, and each test acts as
//! a person would: it fills forms, clicks buttons and waits for elements to appear.
//!
//! Without `/usr/bin/chromedriver` (or `CHROMEDRIVER`) these tests skip with a message, unless
//! `SWARM_UI_TESTS=1` is set (as `.ci/run` does after installing Chromium): then a missing
//! browser is a failure. They run one at a time (one browser on the machine at once).
//!
//! Every wait is a WebDriver wait for an element or a condition, with a timeout; none sleeps.
//! Each test saves a screenshot of the pages it visits under
//! `<target>/tmp/ui-screenshots/`.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::{PATIENCE, reg};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use swarm_agents::sim::{SimConfig, SimHandle, SimServer};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent, WorkAgent};
use swarm_coordinator::config::Config;
use swarm_coordinator::http::ApiConfig;
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{FailureKind, ObjectiveId, ObjectiveStatus, TaskOutcome};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Semaphore, oneshot};
use tokio::task::JoinHandle;

/// One browser at a time: the machine is small.
static ONE_BROWSER: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// How long a page may take to show what the test waits for.
const PAGE_PATIENCE: Duration = Duration::from_secs(15);

/// Where the screenshots go.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromedriver_path() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    path.exists().then_some(path)
}

/// A chromedriver process and a browser session on it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh headless Chromium (1280×800), or `None` (after saying so) when chromedriver is
    /// not installed and `SWARM_UI_TESTS` does not ask for these tests.
    async fn start(test: &str) -> Option<Self> {
        Self::launch(test, false).await
    }

    /// The same, emulating a phone 400 pixels wide (a desktop window cannot be made that
    /// narrow).
    async fn phone(test: &str) -> Option<Self> {
        Self::launch(test, true).await
    }

    async fn launch(test: &str, phone: bool) -> Option<Self> {
        let Some(driver_path) = chromedriver_path() else {
            assert!(
                std::env::var("SWARM_UI_TESTS").as_deref() != Ok("1"),
                "SWARM_UI_TESTS=1 but chromedriver is not installed (apt-get install chromium \
                 chromium-driver, or set CHROMEDRIVER)"
            );
            eprintln!(
                "SKIPPED {test}: chromedriver is not installed (apt-get install chromium \
                 chromium-driver, or set CHROMEDRIVER); SWARM_UI_TESTS=1 makes this a failure"
            );
            return None;
        };
        // A free port: bound, read, released; chromedriver binds it next.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // chromedriver says when it listens.
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited before it listened");
        })
        .await
        .expect("chromedriver did not start");
        // Keep reading so chromedriver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        });
        if phone {
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": 400, "height": 800, "pixelRatio": 1 } });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("no WebDriver session");
        Some(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Waits for the element `css` (polling every 50 ms, up to `PAGE_PATIENCE`).
    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PAGE_PATIENCE)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(err) => {
                let source = self.client.source().await.unwrap_or_default();
                panic!("waiting for `{css}`: {err}\n--- page ---\n{source}");
            }
        }
    }

    /// Runs `script` (a function body returning a value) in the page.
    async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// Saves a screenshot as `<name>.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn finish(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

/// A durable swarm serving the API and the dashboard on 127.0.0.1:0, with agents of capability
/// `work`, `echo`, `gate` (each task waits for a permit of `gate`), `judge` (its output
/// `{"answer": "wrong"}` is invalid, so the task goes to review) and `fail` (fails for good).
struct Server {
    base: String,
    swarm: Arc<Swarm>,
    gate: Arc<Semaphore>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn serve(token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()))
        .await
        .unwrap();
    swarm
        .register_agent(
            reg("work-0", &["work"], 8),
            AgentFactory::shared(WorkAgent::new()),
        )
        .await
        .unwrap();
    swarm
        .register_agent(reg("echo-0", &["echo"], 8), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let permits = gate.clone();
    let gated = FnAgent::new(move |_task, _ctx| {
        let permits = permits.clone();
        async move {
            permits.acquire().await.unwrap().forget();
            TaskOutcome::success(json!("through"))
        }
    });
    swarm
        .register_agent(reg("gate-0", &["gate"], 8), AgentFactory::shared(gated))
        .await
        .unwrap();
    let judge = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::Failed {
            kind: FailureKind::InvalidOutput,
            message: "output does not match the schema: `answer` must be a number".into(),
            partial_output: Some(json!({ "answer": "wrong" })),
            usage: None,
            retry_after: None,
        }
    });
    swarm
        .register_agent(reg("judge-0", &["judge"], 8), AgentFactory::shared(judge))
        .await
        .unwrap();
    let fail = FnAgent::new(|_task, _ctx| async {
        TaskOutcome::failure(FailureKind::Permanent, "the source refused the import")
    });
    swarm
        .register_agent(reg("fail-0", &["fail"], 8), AgentFactory::shared(fail))
        .await
        .unwrap();
    let swarm = Arc::new(swarm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(swarm_coordinator::http::serve(
        swarm.clone(),
        listener,
        ApiConfig {
            token: token.map(str::to_owned),
            ..ApiConfig::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        swarm,
        gate,
        stop,
        served,
        _dir: dir,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn finish(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.served)
            .await
            .expect("the server did not stop")
            .unwrap()
            .unwrap();
        let swarm = Arc::try_unwrap(self.swarm)
            .ok()
            .expect("the server still holds the swarm");
        assert!(swarm.failure().is_none());
        swarm.shutdown().await.unwrap();
    }
}

/// Types `text` into the field `css`, replacing what it held.
async fn fill(browser: &Browser, css: &str, text: &str) {
    let field = browser.wait_for(css).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// The objective id in the board's URL after a submit (`/ui/?objective=<id>`).
async fn objective_in_url(browser: &Browser) -> ObjectiveId {
    let url = browser.client.current_url().await.unwrap();
    let id = url
        .query_pairs()
        .find(|(name, _)| name == "objective")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no objective in {url}"));
    id.parse().unwrap()
}

/// Submit an objective through the form and watch its cards move backlog → running → done
/// on the board, without a reload, each within a second of the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_objective_moves_across_the_board_live() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start("a_submitted_objective_moves_across_the_board_live").await
    else {
        return;
    };
    let server = serve(None).await;
    browser
        .client
        .goto(&server.url("/ui/submit"))
        .await
        .unwrap();
    fill(&browser, "#goal", "open the gates").await;
    let graph = json!([
        { "id": "first", "capability": "gate" },
        { "id": "second", "capability": "gate", "depends_on": ["first"] }
    ]);
    fill(&browser, "#tasks", &graph.to_string()).await;
    browser.screenshot("submit").await;
    browser
        .wait_for("#submit-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    // The form goes to the board, filtered to the new objective.
    browser.wait_for("#board").await;
    let objective = objective_in_url(&browser).await;
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

    // Each permit ends one gated attempt; the card moves within a second of the event.
    let mut moves = Vec::new();
    server.gate.add_permits(1);
    let released = Instant::now();
    browser
        .wait_for("section[data-column=succeeded] li[data-key=first]")
        .await;
    browser
        .wait_for("section[data-column=running] li[data-key=second]")
        .await;
    moves.push(released.elapsed());
    server.gate.add_permits(1);
    let released = Instant::now();
    browser
        .wait_for("section[data-column=succeeded] li[data-key=second]")
        .await;
    moves.push(released.elapsed());
    eprintln!("cards moved {moves:?} after their events");
    for took in &moves {
        assert!(
            *took < Duration::from_secs(1),
            "a card took {took:?} to move"
        );
    }
    let view = server.swarm.wait(objective, PATIENCE).await.unwrap();
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
        .client
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await
        .unwrap();
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
    let timeline = browser.wait_for("ol.timeline").await.text().await.unwrap();
    assert!(timeline.contains("objective succeeded"), "{timeline}");
    browser.screenshot("objective").await;

    // A fuller board, for the screenshot README shows: every column holds cards.
    fill_the_board(&server).await;
    browser.client.goto(&server.url("/ui/")).await.unwrap();
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
    browser.finish().await;
    // The same board on a 400-pixel-wide phone.
    let phone = Browser::phone("a_submitted_objective_moves_across_the_board_live")
        .await
        .unwrap();
    phone.client.goto(&server.url("/ui/")).await.unwrap();
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
    for objective in objectives {
        server
            .swarm
            .submit(serde_json::from_value(objective).unwrap())
            .await
            .unwrap();
    }
}

/// A model agent that fails until its circuit breaker opens shows as down on the agents page,
/// live, and up again once a probe succeeds after the cool-down.
///
/// `GET /v1/agents` does not report breaker state on this branch; the breaker shows through
/// the health it publishes (open: down, half-open: degraded, closed: up), which is what this
/// test watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_shows_down_while_its_breaker_is_open_then_up() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) =
        Browser::start("a_failing_agent_shows_down_while_its_breaker_is_open_then_up").await
    else {
        return;
    };
    let server = serve(None).await;
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
    browser
        .client
        .goto(&server.url("/ui/agents"))
        .await
        .unwrap();
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=up]"))
        .await;
    browser.wait_for("#live-state.on").await;

    let objective = server
        .swarm
        .submit(
            serde_json::from_value(json!({
                "goal": "write through a flaky model",
                "tasks": [{
                    "id": "w", "capability": "write", "input": { "prompt": "hello" },
                    "retry": { "max_attempts": 6, "initial_backoff": "10ms", "max_backoff": "50ms" }
                }]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=down]"))
        .await;
    let breaker = browser
        .wait_for(&format!("#agent-{flaky} [data-breaker]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(breaker.contains("open"), "breaker shown as {breaker:?}");
    browser.screenshot("agents-breaker-open").await;
    browser
        .wait_for(&format!("#agent-{flaky}[data-health=up]"))
        .await;
    let breaker = browser
        .wait_for(&format!("#agent-{flaky} [data-breaker]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(breaker.contains("closed"), "breaker shown as {breaker:?}");
    browser.screenshot("agents").await;
    let view = server.swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    browser.finish().await;
    server.finish().await;
    sim.shutdown().await.unwrap();
}

/// A task whose output is invalid waits in the review queue; a person fixes the output in the
/// editor (which refuses what is not JSON), approves it, and the dependent runs on the
/// edited output. The approval is in the chain of work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_output_is_approved_edited_and_its_dependent_runs_on_the_edit() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) =
        Browser::start("an_invalid_output_is_approved_edited_and_its_dependent_runs_on_the_edit")
            .await
    else {
        return;
    };
    let server = serve(None).await;
    let objective = server
        .swarm
        .submit(
            serde_json::from_value(json!({
                "goal": "judge, then pass it on",
                "tasks": [
                    { "id": "judged", "capability": "judge" },
                    { "id": "after", "capability": "echo", "input": { "$from": "judged" },
                      "depends_on": ["judged"] }
                ]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    browser
        .client
        .goto(&server.url("/ui/review"))
        .await
        .unwrap();
    let item = browser.wait_for("li[data-review]").await;
    let task = item.attr("data-review").await.unwrap().unwrap();
    let reason = browser
        .wait_for("[data-reason]")
        .await
        .text()
        .await
        .unwrap();
    assert!(reason.contains("must be a number"), "{reason}");
    let editor = browser.wait_for("[data-output-editor]").await;
    let shown: Value = serde_json::from_str(&editor.prop("value").await.unwrap().unwrap()).unwrap();
    assert_eq!(shown, json!({ "answer": "wrong" }));
    browser.screenshot("review").await;

    // Not JSON: refused in the page, nothing is sent.
    fill(&browser, "[data-output-editor]", "{\"answer\": ").await;
    browser
        .wait_for("[data-approve]")
        .await
        .click()
        .await
        .unwrap();
    let error = browser.wait_for("[data-editor-error]:not(:empty)").await;
    assert!(error.text().await.unwrap().contains("not valid JSON"));
    assert_eq!(
        server.swarm.objective(objective).await.unwrap().tasks[0].status,
        swarm_protocol::TaskStatus::Review
    );

    fill(&browser, "[data-output-editor]", "{\"answer\": 42}").await;
    browser
        .wait_for("[data-approve]")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("[data-review-total=\"0\"]").await;
    let view = server.swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert_eq!(view.tasks[0].output, Some(json!({ "answer": 42 })));
    let after = view.tasks[1].output.clone().unwrap();
    assert!(
        after.to_string().contains("42") && !after.to_string().contains("wrong"),
        "the dependent ran on {after}"
    );
    // The approval is in the chain of work, as the objective's page shows it.
    browser
        .client
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await
        .unwrap();
    browser
        .wait_for(&format!("ol.timeline li[data-task={task}]"))
        .await;
    let timeline = browser.wait_for("ol.timeline").await.text().await.unwrap();
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
async fn an_approval_gate_is_approved_on_the_review_page_and_its_objective_finishes() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start(
        "an_approval_gate_is_approved_on_the_review_page_and_its_objective_finishes",
    )
    .await
    else {
        return;
    };
    let server = serve(None).await;
    let submitted = reqwest::Client::new()
        .post(server.url("/v1/objectives"))
        .json(&json!({
            "goal": "publish after sign-off",
            "tasks": [
                { "id": "draft", "capability": "echo", "input": { "text": "v1" } },
                { "id": "ship-it", "kind": "approval", "input": { "$from": "draft" },
                  "depends_on": ["draft"] },
                { "id": "publish", "capability": "echo", "input": { "$from": "ship-it" },
                  "depends_on": ["ship-it"] }
            ]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), reqwest::StatusCode::ACCEPTED);
    let objective: ObjectiveId = submitted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    browser
        .client
        .goto(&server.url("/ui/review"))
        .await
        .unwrap();
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

    browser
        .wait_for("li[data-review] [data-approve]")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("[data-review-total=\"0\"]").await;
    let view = server.swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let published = publish(&view).output.unwrap();
    assert_eq!(
        published["input"]["input"],
        json!({ "text": "v1" }),
        "{published}"
    );
    browser
        .client
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await
        .unwrap();
    browser.wait_for("[data-objective-status=succeeded]").await;
    browser.finish().await;
    server.finish().await;
}

/// A schedule created through the API appears on the schedules page (live, from its event)
/// with its next fire time; Pause pauses it (its badge, and `GET /v1/schedules`), Resume
/// resumes it, and a fire appears as a link to the objective it submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_listed_with_its_next_fire_and_paused_and_resumed_from_its_page() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start(
        "a_schedule_is_listed_with_its_next_fire_and_paused_and_resumed_from_its_page",
    )
    .await
    else {
        return;
    };
    let server = serve(None).await;
    let http = reqwest::Client::new();
    let listed = async || {
        let response = http.get(server.url("/v1/schedules")).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    browser
        .client
        .goto(&server.url("/ui/schedules"))
        .await
        .unwrap();
    let empty = browser.wait_for("[data-schedules-empty]").await;
    assert!(empty.text().await.unwrap().contains("swarm schedules add"));
    browser.wait_for("#live-state.on").await;

    // Weekday mornings in Berlin: the next fire is hours or days away, never during the test.
    let created = http
        .post(server.url("/v1/schedules"))
        .json(&json!({
            "name": "morning-report",
            "cron": "30 6 * * 1-5",
            "time_zone": "Europe/Berlin",
            "template": {
                "goal": "write the morning report",
                "tasks": [{ "id": "report", "capability": "echo", "input": { "text": "hi" } }]
            },
            "overlap": "queue_one",
            "catch_up": { "policy": "run_latest", "window": "1h" }
        }))
        .send()
        .await
        .unwrap();
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
    let facts = browser
        .wait_for(&format!("{row} .facts"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        facts.contains("queue one") && facts.contains("within 1h"),
        "{facts}"
    );
    browser.screenshot("schedules").await;

    browser
        .wait_for(&format!("{row} [data-pause]"))
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for(&format!("{row}[data-state=paused] [data-resume]"))
        .await;
    let badge = browser
        .wait_for(&format!("{row} [data-state-badge]"))
        .await
        .text()
        .await
        .unwrap();
    assert!(badge.contains("paused"), "{badge}");
    assert!(
        browser
            .client
            .find(Locator::Css(&format!("{row} [data-next-fire]")))
            .await
            .is_err(),
        "a paused schedule shows no next fire"
    );
    assert_eq!(listed().await[0]["paused"], json!(true));
    browser.screenshot("schedules-paused").await;

    browser
        .wait_for(&format!("{row} [data-resume]"))
        .await
        .click()
        .await
        .unwrap();
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
    server.swarm.wait(objective, PATIENCE).await.unwrap();
    browser.screenshot("schedules-fired").await;
    link.click().await.unwrap();
    let goal = browser.wait_for(".goal-text").await.text().await.unwrap();
    assert_eq!(goal, "write the morning report");
    browser.finish().await;
    server.finish().await;
}

/// With a token set, every page is the login form until the token is given once; the browser
/// then keeps only an HttpOnly session cookie (not readable by scripts, never in the URL or
/// storage), and the form's submit goes through with the CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_pages_are_refused_until_it_is_given() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start("with_a_token_pages_are_refused_until_it_is_given").await
    else {
        return;
    };
    let token = "browser-s3cret";
    let server = serve(Some(token)).await;
    for path in ["/ui/", "/ui/agents", "/ui/review", "/ui/submit"] {
        browser.client.goto(&server.url(path)).await.unwrap();
        browser.wait_for("form.login input[name=token]").await;
        assert!(
            browser
                .client
                .find(Locator::Css("#board, #live, #submit-form"))
                .await
                .is_err(),
            "{path} showed its content without the token"
        );
    }
    // The API refuses the page's own requests too.
    let status = browser
        .eval("return fetch('/v1/tasks').then(r => r.status);")
        .await;
    assert_eq!(status, json!(401));
    browser.screenshot("login").await;

    fill(&browser, "input[name=token]", "not-it").await;
    browser
        .wait_for("form.login button")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#login-error").await;

    fill(&browser, "input[name=token]", token).await;
    browser
        .wait_for("form.login button")
        .await
        .click()
        .await
        .unwrap();
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
    fill(&browser, "#goal", "with a session").await;
    fill(&browser, "#tasks", r#"[{"id": "a", "capability": "work"}]"#).await;
    browser
        .wait_for("#submit-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#board").await;
    let objective = objective_in_url(&browser).await;
    browser
        .wait_for("section[data-column=succeeded] li[data-key=a]")
        .await;
    server.swarm.wait(objective, PATIENCE).await.unwrap();
    // Logging out ends the session: the pages ask for the token again.
    browser
        .wait_for("form.logout button")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("form.login input[name=token]").await;
    browser.client.goto(&server.url("/ui/")).await.unwrap();
    browser.wait_for("form.login input[name=token]").await;
    browser.finish().await;
    server.finish().await;
}

/// A goal holding a script is shown as text everywhere, and nothing in it runs. Errors the API
/// answers are shown next to the field they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_a_goal_is_shown_as_text_and_never_runs() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) = Browser::start("a_script_in_a_goal_is_shown_as_text_and_never_runs").await
    else {
        return;
    };
    let server = serve(None).await;
    browser
        .client
        .goto(&server.url("/ui/submit"))
        .await
        .unwrap();

    // A graph the API refuses: the problem is shown at the task graph, naming the field.
    fill(&browser, "#goal", "refused").await;
    fill(
        &browser,
        "#tasks",
        r#"[{"id": "a", "capability": "work", "depends_on": ["nope"]}]"#,
    )
    .await;
    browser
        .wait_for("#submit-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let error = browser.wait_for("[data-error-for=tasks]:not(:empty)").await;
    let field = error.attr("data-field").await.unwrap().unwrap();
    assert!(field.starts_with("tasks[0]"), "{field}");
    assert!(error.text().await.unwrap().contains("nope"));
    browser.screenshot("submit-error").await;

    let goal = "<script>alert(1)</script><img src=x onerror=\"window.__xss=1\">";
    fill(&browser, "#goal", goal).await;
    fill(&browser, "#tasks", r#"[{"id": "a", "capability": "work"}]"#).await;
    browser
        .wait_for("#submit-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for("#board").await;
    let objective = objective_in_url(&browser).await;
    let card = browser
        .wait_for("section[data-column=succeeded] li[data-key=a] .goal")
        .await;
    assert_eq!(card.text().await.unwrap(), goal);
    browser
        .client
        .goto(&server.url(&format!("/ui/objectives/{objective}")))
        .await
        .unwrap();
    let title = browser.wait_for(".goal-text").await.text().await.unwrap();
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
async fn columns_page_and_an_objective_is_cancelled_from_its_page() {
    let _one = ONE_BROWSER.lock().await;
    let Some(browser) =
        Browser::start("columns_page_and_an_objective_is_cancelled_from_its_page").await
    else {
        return;
    };
    let server = serve(None).await;
    let many = server
        .swarm
        .submit(
            serde_json::from_value(json!({
                "goal": "many small things",
                "tasks": (0..120)
                    .map(|i| json!({ "id": format!("e{i}"), "capability": "echo" }))
                    .collect::<Vec<_>>()
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    server.swarm.wait(many, PATIENCE).await.unwrap();
    browser.client.goto(&server.url("/ui/")).await.unwrap();
    let done = "section[data-column=succeeded]";
    browser.wait_for(&format!("{done} [data-more-after]")).await;
    let count = |n: usize| format!("{done} [data-cards] > li:nth-child({n})");
    browser.wait_for(&count(50)).await;
    assert!(browser.client.find(Locator::Css(&count(51))).await.is_err());
    assert_eq!(
        browser
            .wait_for(&format!("{done} [data-count]"))
            .await
            .text()
            .await
            .unwrap(),
        "120"
    );
    browser
        .wait_for(&format!("{done} [data-more-after]"))
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for(&count(100)).await;
    browser
        .wait_for(&format!("{done} [data-more-after]"))
        .await
        .click()
        .await
        .unwrap();
    browser.wait_for(&count(120)).await;
    browser.wait_for(&format!("{done} [data-more]:empty")).await;
    // Newest first: the last card is the first task.
    let last = browser.wait_for(&count(120)).await;
    assert_eq!(last.attr("data-key").await.unwrap().as_deref(), Some("e0"));

    let held = server
        .swarm
        .submit(
            serde_json::from_value(json!({
                "goal": "wait at the gate",
                "tasks": [
                    { "id": "g", "capability": "gate" },
                    { "id": "after", "capability": "echo", "depends_on": ["g"] }
                ]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    browser
        .client
        .goto(&server.url(&format!("/ui/objectives/{held}")))
        .await
        .unwrap();
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
