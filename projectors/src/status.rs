//! Where each projection is: checkpoint, lag, dead letters, parked streams.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::model::Projection;
use crate::ProjectorError;

/// One Kafka partition's stored next offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// The state of one projection, as `/v1/projections` answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// `ok`, `lagging` (events not yet applied), `degraded` (parked streams), `rebuilding`.
    pub status: String,
    pub events_applied: i64,
    /// Highest log position applied.
    pub last_position: i64,
    pub last_recorded_at: Option<DateTime<Utc>>,
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Events in the log of this projection's categories not yet applied (exact, per stream).
    pub lag_events: i64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    pub dead_letters: i64,
    pub parked_streams: i64,
    pub rebuilding_since: Option<DateTime<Utc>>,
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Kafka offsets of the consumer group for the projection's topics.
    pub offsets: Vec<PartitionOffset>,
}

/// The status of every projection.
///
/// # Errors
/// [`ProjectorError`] when the database fails.
pub async fn projection_status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, ProjectorError> {
    let mut out = Vec::new();
    for p in Projection::ALL {
        out.push(one(pool, p).await?);
    }
    Ok(out)
}

async fn one(pool: &PgPool, p: Projection) -> Result<ProjectionStatus, ProjectorError> {
    let categories: Vec<&str> = p.categories().iter().map(|c| c.as_str()).collect();
    let topics: Vec<&str> = p.categories().iter().map(|c| c.topic()).collect();
    let state = sqlx::query(
        "SELECT events_applied, last_position, last_recorded_at, last_applied_at, rebuilding_since, rebuilt_at \
         FROM projection_state WHERE projection = $1",
    )
    .bind(p.name())
    .fetch_optional(pool)
    .await?;
    let lag = sqlx::query(
        "SELECT COALESCE(sum(s.version - COALESCE(g.version, 0)), 0)::bigint AS events, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(e.recorded_at))::float8, 0) AS seconds \
         FROM streams s \
         LEFT JOIN projection_progress g \
           ON g.projection = $1 AND g.category = s.category AND g.stream_id = s.stream_id \
         LEFT JOIN events e \
           ON e.category = s.category AND e.stream_id = s.stream_id AND e.version = COALESCE(g.version, 0) + 1 \
         WHERE s.category = ANY($2) AND s.version > COALESCE(g.version, 0)",
    )
    .bind(p.name())
    .bind(&categories)
    .fetch_one(pool)
    .await?;
    let counts = sqlx::query(
        "SELECT (SELECT count(*) FROM dead_letters WHERE projection = $1 AND resolved_at IS NULL) AS dead, \
                (SELECT count(*) FROM parked_streams WHERE projection = $1) AS parked",
    )
    .bind(p.name())
    .fetch_one(pool)
    .await?;
    let offsets = sqlx::query(
        "SELECT topic, partition, next_offset FROM projector_offsets \
         WHERE group_id = $1 AND topic = ANY($2) ORDER BY topic, partition",
    )
    .bind(crate::GROUP_ID)
    .bind(&topics)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(PartitionOffset {
            topic: r.try_get("topic")?,
            partition: r.try_get("partition")?,
            next_offset: r.try_get("next_offset")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;

    let get = |name: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        state.as_ref().map_or(Ok(None), |r| r.try_get(name))
    };
    let lag_events: i64 = lag.try_get("events")?;
    let parked: i64 = counts.try_get("parked")?;
    let rebuilding_since = get("rebuilding_since")?;
    let status = if rebuilding_since.is_some() {
        "rebuilding"
    } else if parked > 0 {
        "degraded"
    } else if lag_events > 0 {
        "lagging"
    } else {
        "ok"
    };
    Ok(ProjectionStatus {
        name: p.name().to_owned(),
        status: status.to_owned(),
        events_applied: state.as_ref().map_or(Ok(0), |r| r.try_get("events_applied"))?,
        last_position: state.as_ref().map_or(Ok(0), |r| r.try_get("last_position"))?,
        last_recorded_at: get("last_recorded_at")?,
        last_applied_at: get("last_applied_at")?,
        lag_events,
        lag_seconds: lag.try_get("seconds")?,
        dead_letters: counts.try_get("dead")?,
        parked_streams: parked,
        rebuilding_since,
        rebuilt_at: get("rebuilt_at")?,
        offsets,
    })
}

/// Publishes the status of every projection as gauges (`ordo_projection_lag_events`,
/// `ordo_projection_lag_seconds`, `ordo_projection_dead_letters`, `ordo_projection_parked_streams`).
///
/// # Errors
/// As [`projection_status`].
pub async fn publish_metrics(pool: &PgPool) -> Result<(), ProjectorError> {
    for s in projection_status(pool).await? {
        let p = s.name.clone();
        metrics::gauge!("ordo_projection_lag_events", "projection" => p.clone()).set(s.lag_events as f64);
        metrics::gauge!("ordo_projection_lag_seconds", "projection" => p.clone()).set(s.lag_seconds);
        metrics::gauge!("ordo_projection_dead_letters", "projection" => p.clone()).set(s.dead_letters as f64);
        metrics::gauge!("ordo_projection_parked_streams", "projection" => p).set(s.parked_streams as f64);
    }
    Ok(())
}
