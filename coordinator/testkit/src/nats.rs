//! A real `nats-server` with JetStream for a test: on loopback, on a port of its own, its store
//! in a temporary directory removed at the end.
//!
//! Tests that use it are `#[ignore = "needs nats-server ..."]`, so a plain `cargo test` shows
//! them as ignored; `scripts/test.sh` (the README's test command, which `.ci/run` calls)
//! installs Debian's `nats-server` when it is missing and runs them. When the binary is
//! missing, [`NatsServer::start`] panics saying so: such a test never passes silently.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::PATIENCE;

/// A running `nats-server -js`, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free loopback port, JetStream on, its store in a new temporary
    /// directory; returns once it accepts clients.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server as [`NatsServer::start`] does, with more arguments (`--auth TOKEN`).
    pub fn start_with(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let dir = std::env::temp_dir().join(format!(
            "swarm-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (child, port) = spawn(&dir, None, &args);
        Self {
            child: Some(child),
            port,
            dir,
            args,
        }
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL) and waits for it to be gone; its store stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store; returns once it accepts clients.
    pub fn restart(&mut self) {
        self.stop();
        let (child, _) = spawn(&self.dir, Some(self.port), &self.args);
        self.child = Some(child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Starts `nats-server` and reads its log until it says it is ready, taking the port it chose.
fn spawn(dir: &std::path::Path, port: Option<u16>, args: &[String]) -> (Child, u16) {
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}): this test needs a real NATS server with \
                 JetStream; scripts/test.sh installs Debian's nats-server (apt-get install \
                 nats-server)"
            )
        });
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut port = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("Listening for client connections on ") {
                let addr = &line[at + "Listening for client connections on ".len()..];
                port = addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok());
            }
            if line.contains("Server is ready") {
                let _ = tx.send(port);
            }
            if line.contains("[FTL]") || line.contains("[ERR]") {
                eprintln!("nats-server: {line}");
            }
        }
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(Some(port)) => (child, port),
        other => {
            let _ = child.kill();
            panic!("nats-server did not become ready within {PATIENCE:?} ({other:?})")
        }
    }
}
