//! End-to-end tests: Ordo's real processes against a real database and broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops;
