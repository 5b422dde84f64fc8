//! Turning a page of the commit-ordered log into a batch that keeps every stream in version
//! order.
//!
//! The commit-safe reader orders by `(tx_id, position)`. Transaction ids are assigned at a
//! transaction's first write, so a transaction that first wrote elsewhere and then waited for a
//! stream's head lock can commit version `n + 1` of that stream with a *lower* `tx_id` than the
//! transaction that committed version `n`. Both are visible to the reader at once (the later
//! one waited for the earlier one), but the page may hold `n + 1` before `n`, or hold `n + 1`
//! while `n` lies beyond the page.
//!
//! So for every stream in a page the planner looks up the versions it would skip (the one just
//! below the page's lowest, and any gap), pulls the unpublished ones forward into the batch,
//! and then reorders each stream's events, in the slots that stream occupies, by version.
//! Events pulled forward are remembered (by event id) and skipped when the reader reaches them.

use std::collections::{BTreeMap, HashMap, HashSet};

use ordo_schemas::StreamRef;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::StoreError;
use crate::read::{event_from_row, EVENT_COLUMNS};
use crate::types::{LogCursor, RecordedEvent};

/// How many rounds of predecessor lookups a page may take before the planner gives up and
/// publishes nothing (the page is retried on the next poll).
const MAX_ROUNDS: usize = 16;

/// A page made ready to publish.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// What to publish, every stream in version order.
    pub events: Vec<RecordedEvent>,
    /// Events read from the page that had already been published ahead of their turn.
    pub already_published: Vec<Uuid>,
    /// Events pulled in from beyond the page (the reader will meet them again later).
    pub pulled_ahead: Vec<Uuid>,
    /// A predecessor is not yet readable; publish nothing now and retry the page later.
    pub must_wait: bool,
}

/// Builds the batch for `page` (events read after `start`).
pub(crate) async fn plan(
    pool: &PgPool,
    start: LogCursor,
    page: Vec<RecordedEvent>,
    ahead: &HashSet<Uuid>,
) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let (skip, mut events): (Vec<_>, Vec<_>) = page.into_iter().partition(|e| ahead.contains(&e.event_id));
    plan.already_published = skip.into_iter().map(|e| e.event_id).collect();

    // (stream, version) pairs known to be published before this batch.
    let mut settled: HashSet<(StreamRef, i64)> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let missing = missing_versions(&events, &settled);
        if missing.is_empty() {
            reorder(&mut events);
            plan.events = events;
            return Ok(plan);
        }
        let found = lookup(pool, &missing).await?;
        let mut found_keys = HashSet::new();
        for (event, safe) in found {
            found_keys.insert((event.stream, event.version));
            if LogCursor::after(&event) <= start || ahead.contains(&event.event_id) {
                settled.insert((event.stream, event.version));
            } else if safe {
                plan.pulled_ahead.push(event.event_id);
                events.push(event);
            } else {
                plan.must_wait = true;
                return Ok(plan);
            }
        }
        // A version that does not exist (cannot happen for gapless streams) is not waited for.
        for key in missing {
            if !found_keys.contains(&key) {
                settled.insert(key);
            }
        }
    }
    plan.must_wait = true;
    Ok(plan)
}

/// Versions a batch would skip: below each stream's lowest version, and gaps inside it.
fn missing_versions(events: &[RecordedEvent], settled: &HashSet<(StreamRef, i64)>) -> Vec<(StreamRef, i64)> {
    let mut by_stream: BTreeMap<StreamRef, Vec<i64>> = BTreeMap::new();
    for e in events {
        by_stream.entry(e.stream).or_default().push(e.version);
    }
    let mut missing = Vec::new();
    for (stream, mut versions) in by_stream {
        versions.sort_unstable();
        versions.dedup();
        let Some(&lowest) = versions.first() else { continue };
        if lowest > 1 && !settled.contains(&(stream, lowest - 1)) {
            missing.push((stream, lowest - 1));
        }
        for w in versions.windows(2) {
            for v in (w[0] + 1)..w[1] {
                if !settled.contains(&(stream, v)) {
                    missing.push((stream, v));
                }
            }
        }
    }
    missing
}

/// The events at the given stream versions, each with whether the commit-safe reader could
/// return it now.
async fn lookup(pool: &PgPool, keys: &[(StreamRef, i64)]) -> Result<Vec<(RecordedEvent, bool)>, StoreError> {
    let categories: Vec<&str> = keys.iter().map(|(s, _)| s.category.as_str()).collect();
    let ids: Vec<Uuid> = keys.iter().map(|(s, _)| s.id).collect();
    let versions: Vec<i64> = keys.iter().map(|(_, v)| *v).collect();
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS safe \
         FROM events JOIN UNNEST($1::text[], $2::uuid[], $3::bigint[]) AS k(c, s, v) \
           ON category = k.c AND stream_id = k.s AND version = k.v"
    );
    let rows = sqlx::query(&sql).bind(&categories).bind(&ids).bind(&versions).fetch_all(pool).await?;
    rows.iter().map(|r| Ok((event_from_row(r)?, r.try_get::<bool, _>("safe")?))).collect()
}

/// Puts each stream's events in version order within the slots that stream occupies, so
/// streams keep their interleaving and no stream goes backwards.
pub(crate) fn reorder(events: &mut Vec<RecordedEvent>) {
    let mut slots: HashMap<StreamRef, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        slots.entry(e.stream).or_default().push(i);
    }
    let mut taken: Vec<Option<RecordedEvent>> = std::mem::take(events).into_iter().map(Some).collect();
    let mut out: Vec<Option<RecordedEvent>> = (0..taken.len()).map(|_| None).collect();
    for positions in slots.values() {
        let mut mine: Vec<RecordedEvent> = positions.iter().filter_map(|&i| taken[i].take()).collect();
        mine.sort_by_key(|e| e.version);
        for (slot, event) in positions.iter().zip(mine) {
            out[*slot] = Some(event);
        }
    }
    *events = out.into_iter().flatten().collect();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ordo_schemas::StreamCategory;

    fn ev(stream: StreamRef, version: i64, position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            tx_id: position,
            stream,
            version,
            event_id: Uuid::new_v4(),
            event_type: "T".into(),
            schema_version: 1,
            data: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            recorded_at: chrono::Utc::now(),
            prev_hash: None,
            hash: vec![],
        }
    }

    #[test]
    fn reordering_puts_each_stream_in_version_order_and_keeps_other_streams_in_place() {
        let a = StreamRef::new(StreamCategory::Order, Uuid::new_v4());
        let b = StreamRef::new(StreamCategory::Order, Uuid::new_v4());
        let mut events = vec![ev(a, 2, 1), ev(b, 1, 2), ev(a, 1, 3), ev(b, 2, 4)];
        reorder(&mut events);
        let got: Vec<(StreamRef, i64)> = events.iter().map(|e| (e.stream, e.version)).collect();
        assert_eq!(got, vec![(a, 1), (b, 1), (a, 2), (b, 2)]);
    }

    #[test]
    fn missing_versions_are_the_one_below_the_lowest_and_the_gaps() {
        let a = StreamRef::new(StreamCategory::Product, Uuid::new_v4());
        let events = vec![ev(a, 5, 1), ev(a, 8, 2)];
        let mut settled = HashSet::new();
        assert_eq!(missing_versions(&events, &settled), vec![(a, 4), (a, 6), (a, 7)]);
        settled.insert((a, 4));
        assert_eq!(missing_versions(&events, &settled), vec![(a, 6), (a, 7)]);
        assert!(missing_versions(&[ev(a, 1, 1)], &HashSet::new()).is_empty());
    }
}
