//! The HTTP API over real loopback HTTP, one test binary in files by area: a durable swarm in a
//! temporary directory with the standard test fleet, the server on an ephemeral port, a
//! reqwest client (`common::api`). Tests wait on event streams, answers and `Swarm::wait`,
//! never on sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod accounts;
mod agents;
mod auth_limits;
mod bounds;
mod contract;
mod dashboard;
mod escalations;
mod hooks;
mod limits;
mod objectives;
mod openapi_metrics;
mod schedules;
mod tasks_review;
mod waits;
