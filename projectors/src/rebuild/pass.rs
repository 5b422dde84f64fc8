//! The one pass over the log: a lean read of the columns the projections need, in stream order,
//! each stream folded in memory and its rows handed to the bulk loader as soon as its last
//! event is in. See ADR 0025.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ordo_event_store::progress::Progress;
use ordo_schemas::{StreamCategory, StreamRef};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use super::decode::decode;
use super::fold::{StreamFold, Unfit, Wanted};
use super::load::{Loader, Totals};
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// What the pass produced.
#[derive(Debug, Default)]
pub(crate) struct PassOutcome {
    pub totals: BTreeMap<Projection, Totals>,
    /// Streams the fold could not take (poison, gaps): the batch path applies them.
    pub unfit: Vec<StreamRef>,
    /// Events read.
    pub read: u64,
}

/// One row of the lean read.
type LogRow = (String, Uuid, i64, i64, String, i32, String, DateTime<Utc>);

/// Events flowing through between two updates of the progress counters.
const TICK: u64 = 1024;

/// Folds every event at or below `bound` of the categories `targets` read into their (empty,
/// index-free) tables.
pub(crate) async fn run(
    pool: &PgPool,
    targets: &[Target],
    bound: i64,
    progress: &Progress,
) -> Result<PassOutcome, ProjectorError> {
    let wanted = Wanted {
        orders: targets.iter().any(|t| t.projection == Projection::Orders),
        sales: targets.iter().any(|t| t.projection == Projection::Sales),
        catalog: targets.iter().any(|t| t.projection == Projection::Catalog),
    };
    let mut categories = Vec::new();
    if wanted.orders || wanted.sales {
        categories.push(StreamCategory::Order.as_str());
    }
    if wanted.catalog {
        categories.push(StreamCategory::Product.as_str());
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE category = ANY($1) AND position <= $2")
        .bind(&categories)
        .bind(bound)
        .fetch_one(pool)
        .await?;
    progress.set_total(total.unsigned_abs());

    let mut loader = Loader::start(pool, targets).await?;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // the unique (category, stream_id, version) index gives the stream order without a sort
    // that would spill the whole log to disk
    sqlx::query("SET LOCAL enable_sort = off").execute(&mut *tx).await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let mut rows = sqlx::query_as::<_, LogRow>(
        "SELECT category, stream_id, version, position, event_type, schema_version, data::text, recorded_at \
         FROM events WHERE category = ANY($1) AND position <= $2 ORDER BY category, stream_id, version",
    )
    .bind(&categories)
    .bind(bound)
    .fetch(&mut *tx);

    let mut outcome = PassOutcome::default();
    let mut current: Option<Result<StreamFold, StreamRef>> = None;
    let mut ticked = 0u64;
    while let Some((category, id, version, position, event_type, schema_version, data, at)) = rows.try_next().await? {
        let category = StreamCategory::parse(&category)
            .ok_or_else(|| ProjectorError::Other(format!("unknown category {category} in the log")))?;
        let stream = StreamRef::new(category, id);
        let same = match &current {
            Some(Ok(f)) => f.stream == stream,
            Some(Err(s)) => *s == stream,
            None => false,
        };
        let event = decode(category, &event_type, schema_version, &data);
        if same {
            if let Some(Ok(fold)) = current.as_mut() {
                let folded = event.ok_or(Unfit).and_then(|e| fold.next(version, position, at, &e));
                if folded.is_err() {
                    current = Some(Err(stream));
                }
            }
        } else {
            if let Some(done) = current.take() {
                close(&mut loader, &mut outcome, done).await?;
            }
            let started = event.ok_or(Unfit).and_then(|e| StreamFold::start(stream, wanted, version, position, at, &e));
            current = Some(started.map_err(|Unfit| stream));
        }
        ticked += 1;
        outcome.read += 1;
        if ticked == TICK {
            progress.add(ticked);
            ticked = 0;
        }
    }
    progress.add(ticked);
    drop(rows);
    tx.commit().await?;
    if let Some(done) = current.take() {
        close(&mut loader, &mut outcome, done).await?;
    }
    outcome.totals = loader.finish().await?;
    Ok(outcome)
}

async fn close(
    loader: &mut Loader,
    outcome: &mut PassOutcome,
    done: Result<StreamFold, StreamRef>,
) -> Result<(), ProjectorError> {
    match done {
        Ok(fold) => loader.stream(fold).await,
        Err(stream) => {
            outcome.unfit.push(stream);
            Ok(())
        }
    }
}
