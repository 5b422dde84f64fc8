//! The apply logic: one decoded event and the target tables -> SQL writes. Shared by the live
//! consumer, the log follower, `retry_parked` and rebuilds, so every path folds events the same
//! way.
//!
//! Each statement checks the row's version (`version = event version - 1`), so applying an event
//! twice or out of order can never corrupt a row: it fails as a poison event instead. The first
//! statement of each event is the one that can fail that way, so a failure writes nothing.

mod catalog;
mod orders;
mod sales;

use chrono::{DateTime, Utc};
use ordo_schemas::{AnyEvent, StreamRef};
use sqlx::PgConnection;

use crate::model::{Projection, Target};

/// One decoded event with what the read models record about it.
#[derive(Debug, Clone, Copy)]
pub struct Applying<'a> {
    pub stream: StreamRef,
    pub version: i64,
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub event: &'a AnyEvent,
}

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event does not fit the read model (missing row, unexpected version, wrong category):
    /// a poison event, dead-lettered and its stream parked.
    #[error("{0}")]
    Poison(String),
    /// The database failed; the whole batch is retried.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Applies one event to one projection's tables in `target`.
///
/// # Errors
/// [`ApplyError::Poison`] when the event does not fit the current rows; [`ApplyError::Db`] when
/// a statement fails.
pub async fn apply(conn: &mut PgConnection, target: &Target, ev: &Applying<'_>) -> Result<(), ApplyError> {
    match (target.projection, ev.event) {
        (Projection::Orders, AnyEvent::Order(e)) => orders::apply(conn, target, ev, e).await,
        (Projection::Sales, AnyEvent::Order(e)) => sales::apply(conn, target, ev, e).await,
        (Projection::Catalog, AnyEvent::Product(e)) => catalog::apply(conn, target, ev, e).await,
        (p, e) => Err(ApplyError::Poison(format!("projection {p} does not read {} events", e.category()))),
    }
}

/// Turns "no row matched" into a poison error naming the stream and version.
pub(crate) fn expect_one(rows: u64, ev: &Applying<'_>, what: &str) -> Result<(), ApplyError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(ApplyError::Poison(format!(
            "{} {} at version {}: no {what} row at version {}",
            ev.event.event_type(),
            ev.stream,
            ev.version,
            ev.version - 1
        )))
    }
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
