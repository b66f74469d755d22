//! The `swarm` command line and the library behind it: the binary (`src/bin/swarm/`) parses
//! the command line and calls into these modules, and the benches call [`bench`](mod@bench) too.
//!
//! # Layout
//! - [`client`]: the HTTP client behind `swarm submit`, `status`, `agents`, `tasks`,
//!   `approve`, `reject`, `schedules` and `hooks`, and the text it prints.
//! - [`demo`]: the run behind `swarm demo`; [`batch`]: the durable batch run behind `swarm run`.
//! - [`bench`](mod@bench): the benchmarks behind `swarm bench` (allocation, durable, HTTP
//!   submits, dashboard pages).
//! - [`timeline`]: the chain of work as terminal text (`swarm replay`, `swarm demo`).
//! - [`error`]: the CLI's own errors around the engine's.
//! - [`telemetry`]: the process's subscriber: log lines, and OpenTelemetry traces when an
//!   OTLP endpoint is configured.
//!
//! The engine (`swarm-coordinator`) and the HTTP API (`swarm-server`, behind `swarm serve`)
//! are packages of their own; this one is the edge that owns the terminal.

pub mod batch;
pub mod bench;
pub mod client;
pub mod demo;
pub mod error;
pub mod telemetry;
pub mod timeline;

pub use crate::error::Error;
