//! HTTP integration tests of the command API against a real Postgres (a fresh database per
//! test). Most tests drive the router in-process (`tower::ServiceExt::oneshot`); the concurrency
//! test runs the real server on a port-0 listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod concurrency;
mod conventions;
mod edge;
mod erasure;
mod helpers;
mod idempotency;
mod idp;
mod orders;
mod parties;
mod process;
mod products;
mod security;
