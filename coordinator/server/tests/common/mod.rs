//! The server's test harness: the engine-level helpers of `swarm-testkit` (re-exported, so a
//! test writes `common::{PATIENCE, reg}`), plus
//!
//! - [`api`]: a durable swarm with the standard test fleet served on 127.0.0.1:0, a client
//!   with helpers for the usual calls, event streams and problem assertions;
//! - [`browser`]: a headless Chromium session for the dashboard's tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod api;
pub mod browser;

pub use swarm_testkit::*;
