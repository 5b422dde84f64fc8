//! The read side of Ordo: projector workers that fold events into read models in Postgres.
//!
//! - [`step::next_step`]: the pure per-event decision (skip, hold, park, fill a gap, apply).
//! - [`apply`]: events folded per read-model row in memory, written with one statement per table.
//! - [`Projector::apply_batch`]: many events, their per-stream progress, dead letters, parked
//!   streams and Kafka offsets in ONE transaction; redelivered events are skipped by version.
//! - [`consumer`] (feature `kafka`): the live consumer group `ordo-projectors`.
//! - [`follow::follow_log`]: the same projections fed straight from the Postgres log (dev and
//!   tests without a broker).
//! - [`retry_parked`] and [`rebuild`]: operator actions, both reading the log (the source of
//!   truth).
//! - [`status::projection_status`]: checkpoint, lag, dead letters and parked streams per
//!   projection, for `/v1/projections` and the metrics.

pub mod apply;
pub mod batch;
mod bookkeeping;
#[cfg(feature = "kafka")]
pub mod config;
#[cfg(feature = "kafka")]
pub mod consumer;
pub mod follow;
pub mod incoming;
pub mod model;
mod plan;
pub mod rebuild;
pub mod replay;
pub mod retry;
#[cfg(feature = "kafka")]
pub mod run;
pub mod status;
pub mod step;

use sqlx::PgPool;

pub use batch::{BatchStats, Projector};
pub use incoming::{Incoming, Origin};
pub use model::{Projection, Target};
pub use rebuild::{rebuild, RebuildReport};
pub use retry::{retry_parked, RetryOutcome};
pub use status::{projection_status, ProjectionStatus};

/// The consumer group of the live projectors.
pub const GROUP_ID: &str = "ordo-projectors";

/// The read-model and bookkeeping migrations (versions 2026112420xxxx).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies this crate's migrations; versions of other crates in the shared `_sqlx_migrations`
/// table are ignored.
///
/// # Errors
/// When a migration fails.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    ordo_event_store::run_migrations(&MIGRATOR, pool).await
}

/// A failure of the projector machinery (never a poison event: those are dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] ordo_event_store::StoreError),
    #[error("kafka error: {0}")]
    Kafka(String),
    #[error("{0}")]
    Other(String),
}

#[cfg(feature = "testing")]
pub mod testing;
