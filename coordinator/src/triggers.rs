//! Triggers: what starts objectives besides a submit. Cron schedules fire at their slots;
//! webhooks start one objective per signed delivery. (`wait` tasks, completed by `POST
//! /v1/events`, belong to the scheduler: they are part of an objective already running.)
//!
//! # Layout
//! - [`cron`]: a checked schedule spec and its slots (pure; daylight-saving changes handled as
//!   croner defines them).
//! - [`schedules`]: the book of schedules: fires, skips and failures, each schedule's cursor,
//!   what is due at a time, and the catch-up and overlap policies' inputs (pure).
//! - [`hooks`]: a hook, where its secret is read, and the set of hooks served (pure).
//! - [`signature`]: a delivery's `X-Swarm-Signature` (HMAC-SHA256 with a timestamp).
//! - [`template`]: a hook's objective template, filled from a delivery's payload.
//! - `actor`: `Triggers`, the one owner of the schedules, the hooks and the
//!   firing loop, spawned with the swarm; `Swarm`'s trigger methods are messages to it
//!   (`messages`: `TriggerMsg`, and `Settled` for what its spawned work reports back).
//! - `durable`: that spawned work: recording trigger events, submitting a fire's objective,
//!   applying the overlap policy.
//! - [`error`]: why a trigger request is refused ([`Error`]), converted into
//!   [`crate::Error`] with `From`.
//!
//! # Guarantees
//! - Each change (a schedule created, paused, resumed or deleted; a hook declared or deleted)
//!   is recorded in the log and durable before it is applied and answered, and changes are
//!   recorded in the order they are applied.
//! - At most one fire per slot of a schedule, even across a crash (the slot's idempotency key;
//!   a fire cut off before its `ScheduleFired` is reconciled when the log is opened).
//! - Nothing is held across a commit: reads never wait for a fire or a change under way.
//! - A hook's secret is named by its variable and never stored, logged or answered.

pub(crate) mod actor;
pub mod cron;
mod durable;
pub mod error;
pub mod hooks;
mod messages;
pub mod schedules;
pub mod signature;
pub mod template;

pub use actor::ScheduleLoop;
pub(crate) use actor::TriggerSetup;
pub use error::Error;
pub use hooks::{Environment, Hook, HookSource, HookView, Hooks};
pub use schedules::{MissedSlot, ScheduleFire, ScheduleView};
