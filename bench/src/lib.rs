//! `ordo-bench`: throughput and latency figures of Ordo next to PostgreSQL's own limit (pgbench
//! on the same server at the same concurrency).
//!
//! - [`append`]: single-event appends to the event log against pgbench, from one or several
//!   processes.
//! - [`commands`]: the command path without HTTP (the service called directly).
//! - [`cold_load`]: cold loads of long streams, without and with snapshots.
//! - [`load`]: the whole stack (release binaries, fresh database, own broker) under HTTP load.
//! - [`query`]: single-resource reads through the query API (read cache off and on) against
//!   pgbench's primary-key SELECT of the same rows.
//! - [`rebuild`]: a log of a million realistic events, then projection rebuilds and the relay
//!   timed over it.
//! - [`write_path`]: the table of one write-path sequence's figures against their targets.

pub mod append;
pub mod chart;
pub mod cold_load;
pub mod commands;
pub mod driver;
pub mod generate;
pub mod load;
pub mod observe;
pub mod pgbench;
pub mod procstat;
pub mod query;
pub mod rebuild;
pub mod report;
pub mod scrape;
pub mod stack;
pub mod stats;
pub mod world;
pub mod write_path;
