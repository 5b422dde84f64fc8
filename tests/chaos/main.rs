//! Fault tests: Ordo's real processes under a steady mixed workload while processes are
//! SIGKILLed, the broker is frozen or comes back empty, the relay leader freezes, a session sits
//! on the event log's writer lock and PostgreSQL restarts; scale-out with a survivor taking
//! over; backup, destruction and restore of the database.
//!
//! `make test` runs the reduced tests; `make chaos` (`scripts/chaos.sh`) runs the full ones
//! (`#[ignore]`d here) alone and one at a time, since they restart the shared PostgreSQL. Each
//! phase prints a `chaos |` report line. The binaries must be built first (`cargo build --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup;
mod checks;
mod faults;
mod load;
mod outages;
mod report;
mod rig;
mod scale_out;
mod workload;

/// The tests of this binary each run a whole stack under load: one at a time, also under
/// `cargo test` (nextest runs them one at a time through its `stack` test group).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
