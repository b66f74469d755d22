//! A headless Chromium for the dashboard's tests, driven over WebDriver (fantoccini and
//! Debian's `chromedriver`, started per session on a free port).
//!
//! The browser tests are `#[ignore]`d with the reason they need Chromium, so a plain
//! `cargo test` lists them as ignored (visibly, with the reason) instead of passing them
//! without running; `cargo test -p swarm-server --test ui -- --include-ignored` runs
//! them, and then a missing browser is a failure that says what to install.
//!
//! One session runs at a time (the machine is small): a [`Browser`] holds a process-wide lock
//! from [`Browser::start`] to [`Browser::finish`]. Every wait is a WebDriver wait for an element
//! or a condition, bounded by [`PAGE_PATIENCE`], and so is every page load; none sleeps.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use swarm_protocol::ObjectiveId;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, MutexGuard};

use super::PATIENCE;

/// One browser at a time: the machine is small.
static ONE_BROWSER: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// How long a page may take to show what the test waits for.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(15);

/// Where the screenshots go: `<target>/tmp/ui-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `CHROMEDRIVER`, or Debian's `/usr/bin/chromedriver`.
fn chromedriver_path() -> PathBuf {
    let path = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    assert!(
        path.exists(),
        "{} is not installed: apt-get install chromium chromium-driver, or set CHROMEDRIVER \
         (and CHROMIUM) to where they are",
        path.display()
    );
    path
}

/// A chromedriver process and a browser session on it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _one: MutexGuard<'static, ()>,
}

impl Browser {
    /// A fresh headless Chromium (1280×800), once no other session runs.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// The same, emulating a phone 400 pixels wide (a desktop window cannot be made that
    /// narrow).
    pub async fn phone() -> Self {
        Self::launch(true).await
    }

    async fn launch(phone: bool) -> Self {
        let one = ONE_BROWSER.lock().await;
        let driver_path = chromedriver_path();
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
        // A page that never finishes loading fails its test within PAGE_PATIENCE, not after
        // chromedriver's five minutes.
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(PATIENCE),
                Some(PAGE_PATIENCE),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        Self {
            client,
            driver,
            _profile: profile,
            _one: one,
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits for the element `css` (polling every 50 ms, up to [`PAGE_PATIENCE`]); on a
    /// timeout, panics with the page's source. A lookup cut short by a navigation (a form
    /// that moves to the board, a page that reloads its content) is asked again on the next
    /// page, as one that found nothing is.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + PAGE_PATIENCE;
        loop {
            let err = match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(err) => err,
            };
            let retry = matches!(&err, fantoccini::error::CmdError::Standard(e)
                    if e.error == fantoccini::error::ErrorStatus::NoSuchElement)
                || err.to_string().contains("aborted by navigation");
            if !retry || tokio::time::Instant::now() >= deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("waiting for `{css}`: {err}\n--- page ---\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the element `css`, then clicks it.
    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// Waits for the element `css`; its text.
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    /// Whether the page holds an element `css` now (no wait).
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Runs `script` (a function body returning a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// The objective id in the board's URL after a submit (`/ui/?objective=<id>`).
    pub async fn objective_in_url(&self) -> ObjectiveId {
        let url = self.client.current_url().await.unwrap();
        let id = url
            .query_pairs()
            .find(|(name, _)| name == "objective")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no objective in {url}"));
        id.parse().unwrap()
    }

    /// Saves a screenshot as `<name>.png` under `<target>/tmp/ui-screenshots/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session and chromedriver, and lets the next session start.
    pub async fn finish(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}
