//! End-to-end tests: Ordo's real processes against a real database and broker.
//!
//! The binaries must be built first (`cargo build --bins`; `make test` does it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod console;
mod erasure;
mod lifecycle;
mod make_run;
mod ops;
mod projector_crash;
mod relay_failover;
mod roles;
mod tracing;
