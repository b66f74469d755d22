//! What the CLI's test binaries share: a `swarm serve` child process.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `swarm serve` child; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// Its root URL (`http://127.0.0.1:<port>`).
    pub(crate) url: String,
    /// What it printed before it listened.
    #[allow(dead_code)] // read by some test binaries only
    pub(crate) startup: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` (a `swarm serve` on `127.0.0.1:0`) with its standard error piped, and
    /// waits until it says where it listens.
    pub(crate) fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let url = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("swarm serve did not start: {startup:?}"));
            if let Some(rest) = line.strip_prefix("swarm API on ") {
                let url = rest.split_whitespace().next().unwrap();
                break url.trim_end_matches("/v1").to_owned();
            }
            startup.push(line);
        };
        Self {
            child,
            url,
            startup,
        }
    }
}
