//! The apply logic: events folded per read-model row in memory, then written set-based (one
//! statement per table for a whole batch). Shared by the live consumer, the log follower,
//! `retry_parked`, rebuilds and replays, so every path folds events the same way.
//!
//! Each row's write checks the row's version (`version = the version before the first folded
//! event`), so applying events twice or out of order can never corrupt a row: the row is left
//! untouched and its stream is reported back as a mismatch, which the caller treats as a poison
//! event.

mod catalog;
mod orders;
pub(crate) mod sales;

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

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The folded values do not fit the tables (a sum out of range): the batch's data is at
    /// fault, as for SQLSTATE classes 22 and 23.
    #[error("{0}")]
    Data(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The writes one projection owes for a batch, folded per row.
#[derive(Debug)]
pub enum Changes {
    Orders(orders::Rows),
    Catalog(catalog::Rows),
    Sales(sales::Rows),
}

impl Changes {
    pub fn new(projection: Projection) -> Self {
        match projection {
            Projection::Orders => Changes::Orders(orders::Rows::default()),
            Projection::Catalog => Changes::Catalog(catalog::Rows::default()),
            Projection::Sales => Changes::Sales(sales::Rows::default()),
        }
    }

    /// Folds one event into its row. The events of a stream come in version order, each one
    /// above the last folded (the caller's version check sees to it).
    ///
    /// # Errors
    /// The poison message when the event does not fit the projection; nothing of it is folded.
    pub fn fold(&mut self, ev: &Applying<'_>) -> Result<(), String> {
        match (self, ev.event) {
            (Changes::Orders(rows), AnyEvent::Order(e)) => rows.fold(ev, e),
            (Changes::Sales(rows), AnyEvent::Order(e)) => rows.fold(ev, e),
            (Changes::Catalog(rows), AnyEvent::Product(e)) => rows.fold(ev, e),
            (changes, e) => Err(format!("projection {} does not read {} events", changes.projection(), e.category())),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Changes::Orders(rows) => rows.is_empty(),
            Changes::Catalog(rows) => rows.is_empty(),
            Changes::Sales(rows) => rows.is_empty(),
        }
    }

    fn projection(&self) -> Projection {
        match self {
            Changes::Orders(_) => Projection::Orders,
            Changes::Catalog(_) => Projection::Catalog,
            Changes::Sales(_) => Projection::Sales,
        }
    }

    /// Writes every folded row into `target`'s tables, one statement per table. Returns the
    /// streams whose row was not at the version their fold started from (or existed already
    /// for a first event): nothing was written for those.
    ///
    /// # Errors
    /// [`WriteError`]; the caller's transaction must be rolled back then.
    pub async fn write(&self, conn: &mut PgConnection, target: &Target) -> Result<Vec<StreamRef>, WriteError> {
        match self {
            Changes::Orders(rows) => Ok(rows.write(conn, target).await?),
            Changes::Catalog(rows) => Ok(rows.write(conn, target).await?),
            Changes::Sales(rows) => rows.write(conn, target).await,
        }
    }
}

/// The streams of `expected` that are not in `written`.
pub(crate) fn missing(expected: impl Iterator<Item = StreamRef>, written: &[uuid::Uuid]) -> Vec<StreamRef> {
    let written: std::collections::HashSet<&uuid::Uuid> = written.iter().collect();
    expected.filter(|s| !written.contains(&s.id)).collect()
}

/// One statement parameter: a column of the rows as an array.
pub(crate) fn column<R, T>(rows: &[&R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(|r| f(r)).collect()
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
