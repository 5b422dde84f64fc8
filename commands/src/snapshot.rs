//! Snapshots of long streams: a popular product gains an event for every reservation, so a cold
//! load (a new process, an evicted lane) would fold its whole history. Every [`EVERY`] events the
//! folded state is saved; a cold load starts from it and folds only what came after.
//!
//! A snapshot is trusted only when the log agrees: the event at its version must carry the
//! snapshot's head hash (a restored or rewritten log makes it stale), and its format must be the
//! aggregate's current one ([`Snapshot::FORMAT`]). Otherwise it is ignored and the stream is
//! folded from the start. Snapshots are an optimisation: failing to read or write one is logged,
//! never a command failure.

use ordo_domain::{Aggregate, Customer, Merchant, Order, Product};
use ordo_event_store::EventStore;
use ordo_schemas::StreamRef;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::Row;

use crate::lane::Folded;

/// Events between snapshots of one stream.
pub(crate) const EVERY: i64 = 500;

/// An aggregate whose folded state can be saved. Bump [`Snapshot::FORMAT`] whenever the state's
/// shape or the way `evolve` folds changes, so older snapshots are ignored.
pub trait Snapshot: Aggregate + Serialize + DeserializeOwned {
    const FORMAT: i32;
}

impl Snapshot for Customer {
    const FORMAT: i32 = 1;
}
impl Snapshot for Merchant {
    const FORMAT: i32 = 1;
}
impl Snapshot for Product {
    const FORMAT: i32 = 1;
}
impl Snapshot for Order {
    const FORMAT: i32 = 1;
}

/// Whether moving from version `before` to `after` crossed a snapshot point.
pub(crate) fn due(before: i64, after: i64) -> bool {
    after / EVERY > before / EVERY
}

/// The stream's snapshot, if there is one the log agrees with.
pub(crate) async fn latest<A: Snapshot>(store: &EventStore, stream: StreamRef) -> Option<Folded<A>> {
    let row = sqlx::query(
        "SELECT s.version, s.head_hash, s.state, e.hash AS log_hash FROM aggregate_snapshots s \
         LEFT JOIN events e ON e.category = s.category AND e.stream_id = s.stream_id AND e.version = s.version \
         WHERE s.category = $1 AND s.stream_id = $2 AND s.format = $3",
    )
    .bind(stream.category.as_str())
    .bind(stream.id)
    .bind(A::FORMAT)
    .fetch_optional(store.pool())
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!(stream = %stream, error = %e, "snapshot not read");
            return None;
        }
    };
    let (Ok(version), Ok(head), Ok(state), Ok(log_hash)) = (
        row.try_get::<i64, _>("version"),
        row.try_get::<Vec<u8>, _>("head_hash"),
        row.try_get::<serde_json::Value, _>("state"),
        row.try_get::<Option<Vec<u8>>, _>("log_hash"),
    ) else {
        return None;
    };
    if log_hash.as_deref() != Some(head.as_slice()) {
        tracing::warn!(stream = %stream, version, "snapshot does not match the log, folding from the start");
        return None;
    }
    let state = serde_json::from_value::<A>(state).ok()?;
    Some(Folded { state, version, head: head.as_slice().try_into().ok(), fresh: false })
}

/// Saves `folded` in the background (a newer snapshot is never replaced by an older one).
pub(crate) fn save<A: Snapshot>(store: &EventStore, stream: StreamRef, folded: &Folded<A>) {
    let (Ok(state), Some(head)) = (serde_json::to_value(&folded.state), folded.head) else { return };
    let (pool, version) = (store.pool().clone(), folded.version);
    tokio::spawn(async move {
        let saved = sqlx::query(
            "INSERT INTO aggregate_snapshots AS s (category, stream_id, version, head_hash, format, state) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (category, stream_id) DO UPDATE \
             SET version = EXCLUDED.version, head_hash = EXCLUDED.head_hash, format = EXCLUDED.format, \
                 state = EXCLUDED.state, taken_at = now() \
             WHERE s.version < EXCLUDED.version OR s.format <> EXCLUDED.format",
        )
        .bind(stream.category.as_str())
        .bind(stream.id)
        .bind(version)
        .bind(head.as_slice())
        .bind(A::FORMAT)
        .bind(state)
        .execute(&pool)
        .await;
        if let Err(e) = saved {
            tracing::debug!(stream = %stream, error = %e, "snapshot not saved");
        }
    });
}
