//! What every [`EventStore`] must do, as checks any backend runs against itself (compiled for
//! this crate's tests and with the `conformance` feature).
//!
//! The trait's documentation states the contract; these checks pin it down through the trait
//! alone, so a second backend (PostgreSQL) proves it behaves as the embedded one by running the
//! same list. What only one backend can show (its file handling, its schema migrations, how it
//! reclaims space) stays in that backend's own tests.
//!
//! A backend implements [`Backend`] (an empty store, and a way to close and reopen one) and
//! instantiates the whole list with [`conformance_tests!`](crate::conformance_tests), one test per
//! check:
//!
//! ```ignore
//! swarm_store::conformance_tests!(MyBackend::default());
//! ```
//!
//! The checks, by area:
//! - the log: [`every_kind_round_trips`], [`read_objective_returns_its_events_in_order`],
//!   [`read_objective_range_returns_the_events_between`],
//!   [`append_refuses_gaps_and_duplicates_and_writes_nothing`],
//!   [`large_batches_are_appended_and_indexed_whole`], [`appends_survive_a_reopen`];
//! - retention: [`prune_removes_old_finished_objectives_and_old_agent_events_only`],
//!   [`the_latest_snapshot_is_the_newest_saved`];
//! - the indexes: [`the_objective_index_follows_status_and_keys`],
//!   [`running_objectives_are_the_unfinished_oldest_first`],
//!   [`list_objectives_pages_by_id_and_filters_by_status`],
//!   [`next_agent_follows_the_highest_registration`],
//!   [`the_declared_agents_follow_declarations_in_the_same_transaction`],
//!   [`the_schedules_follow_their_events_in_the_same_transaction`],
//!   [`the_posted_events_follow_their_events_and_expire`],
//!   [`the_declared_hooks_follow_their_events_in_the_same_transaction`].
//!
//! A check panics when the store does not conform, as a test does.

#![allow(clippy::unwrap_used)]

pub mod fixtures;
mod indexes;
mod log;

use std::future::Future;

use crate::EventStore;

pub use indexes::{
    list_objectives_pages_by_id_and_filters_by_status, next_agent_follows_the_highest_registration,
    running_objectives_are_the_unfinished_oldest_first,
    the_declared_agents_follow_declarations_in_the_same_transaction,
    the_declared_hooks_follow_their_events_in_the_same_transaction,
    the_objective_index_follows_status_and_keys, the_posted_events_follow_their_events_and_expire,
    the_schedules_follow_their_events_in_the_same_transaction,
};
pub use log::{
    append_refuses_gaps_and_duplicates_and_writes_nothing, appends_survive_a_reopen,
    every_kind_round_trips, large_batches_are_appended_and_indexed_whole,
    prune_removes_old_finished_objectives_and_old_agent_events_only,
    read_objective_range_returns_the_events_between, read_objective_returns_its_events_in_order,
    the_latest_snapshot_is_the_newest_saved,
};

/// What the checks need of a backend beyond the trait.
pub trait Backend {
    /// The store under test.
    type Store: EventStore;

    /// A store over a new, empty log.
    fn empty(&mut self) -> impl Future<Output = Self::Store>;

    /// Closes `store` and opens its log again, as a restarted coordinator does.
    fn reopen(&mut self, store: Self::Store) -> impl Future<Output = Self::Store>;
}

/// One `#[tokio::test]` per conformance check, each on a backend made by `$backend` (an
/// expression of a type that implements [`Backend`]). Adding a check here runs it on every
/// backend.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::conformance_tests!(@each $backend;
            every_kind_round_trips,
            read_objective_returns_its_events_in_order,
            read_objective_range_returns_the_events_between,
            append_refuses_gaps_and_duplicates_and_writes_nothing,
            large_batches_are_appended_and_indexed_whole,
            appends_survive_a_reopen,
            prune_removes_old_finished_objectives_and_old_agent_events_only,
            the_latest_snapshot_is_the_newest_saved,
            the_objective_index_follows_status_and_keys,
            running_objectives_are_the_unfinished_oldest_first,
            list_objectives_pages_by_id_and_filters_by_status,
            next_agent_follows_the_highest_registration,
            the_declared_agents_follow_declarations_in_the_same_transaction,
            the_schedules_follow_their_events_in_the_same_transaction,
            the_posted_events_follow_their_events_and_expire,
            the_declared_hooks_follow_their_events_in_the_same_transaction,
        );
    };
    (@each $backend:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $crate::conformance::$check(&mut $backend).await;
            }
        )*
    };
}
