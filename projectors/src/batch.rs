//! Applying a batch of events to the projections in ONE Postgres transaction, together with the
//! per-stream progress, dead letters, parked streams and Kafka offsets it implies.
//!
//! Exactly-once in effect: each projection records per stream the last version it applied, and
//! an event at or below it is skipped, so redelivery changes nothing. A gap (an event newer than
//! the next expected version) is filled from the Postgres log, the source of truth.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use ordo_event_store::{error::sqlstate_of, EventStore};
use ordo_schemas::StreamRef;
use sqlx::{PgConnection, PgPool, Row};

use crate::apply::{apply, ApplyError, Applying};
use crate::incoming::{Incoming, Origin};
use crate::model::Target;
use crate::ProjectorError;

/// What one batch did, summed over projections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Events written into read models.
    pub applied: u64,
    /// Redelivered events at or below the recorded version.
    pub skipped: u64,
    /// Events dead-lettered as poison (their stream is now parked).
    pub poisoned: u64,
    /// Events held back because their stream was parked.
    pub parked: u64,
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.skipped += o.skipped;
        self.poisoned += o.poisoned;
        self.parked += o.parked;
    }
}

/// The batch applier shared by the Kafka consumer, the log follower and rebuilds.
#[derive(Clone, Debug)]
pub struct Projector {
    pool: PgPool,
    store: EventStore,
    targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, Default)]
struct StreamState {
    version: i64,
    position: i64,
    parked: bool,
    dirty: bool,
}

#[derive(Debug, Default)]
struct TargetTotals {
    applied: i64,
    last_position: i64,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl Projector {
    /// A projector writing into `targets` (usually [`Target::all_live`]).
    pub fn new(pool: PgPool, targets: Vec<Target>) -> Self {
        Self { store: EventStore::new(pool.clone()), pool, targets }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Applies `events` (in delivery order) and records the Kafka offsets they imply for `group`
    /// in one transaction.
    ///
    /// A statement failing on the data (SQLSTATE classes 22 and 23) rolls the batch back and
    /// re-applies its events one per transaction, so only the offending event is dead-lettered,
    /// and only by the projection whose write failed.
    ///
    /// # Errors
    /// [`ProjectorError`] when the database fails; nothing of the batch is committed then.
    pub async fn apply_batch(&self, events: &[Incoming], group: Option<&str>) -> Result<BatchStats, ProjectorError> {
        if events.is_empty() {
            return Ok(BatchStats::default());
        }
        let started = Instant::now();
        let result = match self.try_batch(events, group, &[]).await {
            Ok(stats) => stats,
            Err(Failure::Data { error, .. }) => {
                tracing::warn!(%error, size = events.len(), "batch failed on data, applying one by one");
                let mut total = BatchStats::default();
                for event in events {
                    total += self.apply_alone(event, group).await?;
                }
                total
            }
            Err(Failure::Other(e)) => return Err(e),
        };
        metrics::histogram!("ordo_projector_batch_size").record(events.len() as f64);
        metrics::histogram!("ordo_projector_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(result)
    }

    /// One event in a transaction of its own. Each projection whose write fails on the data
    /// dead-letters the event (parking its stream there) and the others apply it.
    async fn apply_alone(&self, event: &Incoming, group: Option<&str>) -> Result<BatchStats, ProjectorError> {
        let one = std::slice::from_ref(event);
        let mut forced: Vec<(usize, String)> = Vec::new();
        loop {
            match self.try_batch(one, group, &forced).await {
                Ok(stats) => return Ok(stats),
                Err(Failure::Data { target: Some(t), error }) if forced.iter().all(|(f, _)| *f != t) => {
                    forced.push((t, error.to_string()));
                }
                // a write outside any one projection's tables: every projection dead-letters it
                Err(Failure::Data { error, .. }) if forced.len() < self.targets.len() => {
                    forced = (0..self.targets.len()).map(|t| (t, error.to_string())).collect();
                }
                Err(Failure::Data { error, .. }) => return Err(error.into()),
                Err(Failure::Other(e)) => return Err(e),
            }
        }
    }

    /// One transaction. The (single) event is dead-lettered instead of applied by each target
    /// index in `forced`, with its error.
    async fn try_batch(
        &self,
        events: &[Incoming],
        group: Option<&str>,
        forced: &[(usize, String)],
    ) -> Result<BatchStats, Failure> {
        let mut tx = self.pool.begin().await?;
        let stats = self.batch_body(&mut tx, events, group, forced).await?;
        tx.commit().await?;
        Ok(stats)
    }

    /// The body of a batch inside a transaction the caller commits (a rebuild's swap applies
    /// its final catch-up this way). Metrics are recorded as if the caller commits.
    ///
    /// # Errors
    /// [`ProjectorError`] when a statement fails; the caller must roll back.
    pub async fn batch_in(
        &self,
        tx: &mut PgConnection,
        events: &[Incoming],
        group: Option<&str>,
    ) -> Result<BatchStats, ProjectorError> {
        self.batch_body(tx, events, group, &[]).await.map_err(ProjectorError::from)
    }

    async fn batch_body(
        &self,
        tx: &mut PgConnection,
        events: &[Incoming],
        group: Option<&str>,
        forced: &[(usize, String)],
    ) -> Result<BatchStats, Failure> {
        let mut locks: Vec<i64> = self.targets.iter().filter(|t| t.live).map(|t| t.projection.lock_key()).collect();
        locks.sort_unstable();
        for key in locks {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(key).execute(&mut *tx).await?;
        }
        let mut states = self.load_states(&mut *tx, events).await?;
        let mut totals: Vec<TargetTotals> = self.targets.iter().map(|_| TargetTotals::default()).collect();
        let mut stats = BatchStats::default();

        for inc in events {
            for (ti, target) in self.targets.iter().enumerate() {
                if !inc.category.is_some_and(|c| target.projection.reads(c)) {
                    continue;
                }
                let Some(stream) = inc.stream else {
                    let error = inc.event.as_ref().err().cloned().unwrap_or_else(|| "no stream".into());
                    dead_letter(&mut *tx, target, inc, "poison", &error).await?;
                    stats.poisoned += 1;
                    continue;
                };
                let st = states.entry((ti, stream)).or_default();
                let known_version = inc.version > 0;
                if known_version && inc.version <= st.version {
                    stats.skipped += 1;
                    continue;
                }
                if st.parked {
                    dead_letter(&mut *tx, target, inc, "parked", "stream is parked").await?;
                    stats.parked += 1;
                    continue;
                }
                let error = match (forced.iter().find(|(f, _)| *f == ti), &inc.event) {
                    (Some((_, e)), _) => Some(e.clone()),
                    (None, Err(e)) => Some(e.clone()),
                    (None, Ok(_)) => None,
                };
                if let Some(error) = error {
                    park(&mut *tx, target, stream, inc, &error).await?;
                    st.parked = true;
                    stats.poisoned += 1;
                    continue;
                }
                if inc.version > st.version + 1 {
                    let gap = self
                        .store
                        .read_stream_range(stream, st.version + 1, inc.version - 1)
                        .await
                        .map_err(ProjectorError::from)?;
                    for e in &gap {
                        let from_log = Incoming::from_recorded(e);
                        if !self.apply_one(&mut *tx, ti, st, &from_log, &mut totals[ti], &mut stats).await? {
                            break;
                        }
                    }
                    if st.parked {
                        dead_letter(&mut *tx, target, inc, "parked", "stream is parked").await?;
                        stats.parked += 1;
                        continue;
                    }
                }
                self.apply_one(&mut *tx, ti, st, inc, &mut totals[ti], &mut stats).await?;
            }
        }

        self.save_progress(&mut *tx, &states).await?;
        for (target, t) in self.targets.iter().zip(&totals) {
            save_totals(&mut *tx, target, t).await?;
        }
        if let Some(group) = group {
            save_offsets(&mut *tx, group, events).await?;
        }

        for (target, t) in self.targets.iter().zip(&totals) {
            if t.applied > 0 {
                let p = target.key.clone();
                metrics::counter!("ordo_projector_events_applied_total", "projection" => p.clone())
                    .increment(t.applied.unsigned_abs());
                if let Some(at) = t.last_recorded_at {
                    let age = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::gauge!("ordo_projection_last_event_age_seconds", "projection" => p).set(age);
                }
            }
        }
        metrics::counter!("ordo_projector_events_skipped_total").increment(stats.skipped);
        if stats.poisoned + stats.parked > 0 {
            metrics::counter!("ordo_projector_dead_letters_total").increment(stats.poisoned + stats.parked);
            metrics::counter!("ordo_projector_streams_parked_total").increment(stats.poisoned);
        }
        Ok(stats)
    }

    /// Applies one decoded event; a poison event parks the stream. Returns whether it applied.
    async fn apply_one(
        &self,
        conn: &mut PgConnection,
        ti: usize,
        st: &mut StreamState,
        inc: &Incoming,
        totals: &mut TargetTotals,
        stats: &mut BatchStats,
    ) -> Result<bool, Failure> {
        let target = &self.targets[ti];
        let (Some(stream), Ok(event)) = (inc.stream, &inc.event) else {
            let error = inc.event.as_ref().err().cloned().unwrap_or_else(|| "no stream".into());
            if let Some(stream) = inc.stream {
                park(conn, target, stream, inc, &error).await?;
                st.parked = true;
            }
            stats.poisoned += 1;
            return Ok(false);
        };
        let applying = Applying {
            stream,
            version: inc.version,
            position: inc.position,
            recorded_at: inc.recorded_at.unwrap_or_else(Utc::now),
            event,
        };
        match apply(conn, target, &applying).await {
            Ok(()) => {
                st.version = inc.version;
                st.position = inc.position;
                st.dirty = true;
                totals.applied += 1;
                totals.last_position = totals.last_position.max(inc.position);
                totals.last_recorded_at = totals.last_recorded_at.max(inc.recorded_at);
                stats.applied += 1;
                Ok(true)
            }
            Err(ApplyError::Poison(error)) => {
                tracing::warn!(projection = %target.key, stream = %stream, version = inc.version, %error,
                    "poison event, parking its stream");
                park(conn, target, stream, inc, &error).await?;
                st.parked = true;
                stats.poisoned += 1;
                Ok(false)
            }
            Err(ApplyError::Db(e)) if is_data_error(&e) => Err(Failure::Data { target: Some(ti), error: e }),
            Err(ApplyError::Db(e)) => Err(Failure::Other(e.into())),
        }
    }

    /// Locks and loads the parked flags and progress of every stream in the batch.
    async fn load_states(
        &self,
        conn: &mut PgConnection,
        events: &[Incoming],
    ) -> Result<HashMap<(usize, StreamRef), StreamState>, ProjectorError> {
        let keys: Vec<String> = self.targets.iter().map(|t| t.key.clone()).collect();
        let mut ids: Vec<uuid::Uuid> = events.iter().filter_map(|e| e.stream.map(|s| s.id)).collect();
        ids.sort_unstable();
        ids.dedup();
        let index: HashMap<&str, usize> = self.targets.iter().enumerate().map(|(i, t)| (t.key.as_str(), i)).collect();
        let mut states: HashMap<(usize, StreamRef), StreamState> = HashMap::new();
        let parked = sqlx::query(
            "SELECT projection, category, stream_id FROM parked_streams \
             WHERE projection = ANY($1) AND stream_id = ANY($2) ORDER BY projection, stream_id, category FOR SHARE",
        )
        .bind(&keys)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in parked {
            if let Some(key) = state_key(&row, &index)? {
                states.entry(key).or_default().parked = true;
            }
        }
        // A stream without a progress row yet has nothing `FOR UPDATE` could lock, so two
        // replicas applying its first event at once would both see version 0. Every stream of the
        // batch gets its row first (version 0 when new), in key order: a second writer waits here
        // for the first to commit and then reads the version it committed.
        let mut new_keys = Vec::new();
        let mut new_categories = Vec::new();
        let mut new_ids = Vec::new();
        for e in events {
            let Some(stream) = e.stream else { continue };
            for t in self.targets.iter().filter(|t| t.projection.reads(stream.category)) {
                new_keys.push(t.key.clone());
                new_categories.push(stream.category.as_str().to_owned());
                new_ids.push(stream.id);
            }
        }
        sqlx::query(
            "INSERT INTO projection_progress (projection, category, stream_id, version, position) \
             SELECT DISTINCT k, c, s, 0::bigint, 0::bigint FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS t(k, c, s) \
             ORDER BY k, s, c ON CONFLICT DO NOTHING",
        )
        .bind(&new_keys)
        .bind(&new_categories)
        .bind(&new_ids)
        .execute(&mut *conn)
        .await?;
        let progress = sqlx::query(
            "SELECT projection, category, stream_id, version, position FROM projection_progress \
             WHERE projection = ANY($1) AND stream_id = ANY($2) ORDER BY projection, stream_id, category FOR UPDATE",
        )
        .bind(&keys)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in progress {
            if let Some(key) = state_key(&row, &index)? {
                let st = states.entry(key).or_default();
                st.version = row.try_get("version")?;
                st.position = row.try_get("position")?;
            }
        }
        Ok(states)
    }

    async fn save_progress(
        &self,
        conn: &mut PgConnection,
        states: &HashMap<(usize, StreamRef), StreamState>,
    ) -> Result<(), ProjectorError> {
        let mut keys = Vec::new();
        let mut categories = Vec::new();
        let mut ids = Vec::new();
        let mut versions = Vec::new();
        let mut positions = Vec::new();
        for ((ti, stream), st) in states.iter().filter(|(_, st)| st.dirty) {
            keys.push(self.targets[*ti].key.clone());
            categories.push(stream.category.as_str().to_owned());
            ids.push(stream.id);
            versions.push(st.version);
            positions.push(st.position);
        }
        save_progress_rows(conn, &keys, &categories, &ids, &versions, &positions).await
    }
}

pub(crate) async fn save_progress_rows(
    conn: &mut PgConnection,
    keys: &[String],
    categories: &[String],
    ids: &[uuid::Uuid],
    versions: &[i64],
    positions: &[i64],
) -> Result<(), ProjectorError> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO projection_progress (projection, category, stream_id, version, position) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (projection, stream_id, category) DO UPDATE \
         SET version = EXCLUDED.version, position = EXCLUDED.position, updated_at = now()",
    )
    .bind(keys)
    .bind(categories)
    .bind(ids)
    .bind(versions)
    .bind(positions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn state_key(
    row: &sqlx::postgres::PgRow,
    index: &HashMap<&str, usize>,
) -> Result<Option<(usize, StreamRef)>, ProjectorError> {
    let projection: String = row.try_get("projection")?;
    let category: String = row.try_get("category")?;
    let id: uuid::Uuid = row.try_get("stream_id")?;
    let Some(category) = ordo_schemas::StreamCategory::parse(&category) else { return Ok(None) };
    Ok(index.get(projection.as_str()).map(|i| (*i, StreamRef::new(category, id))))
}

async fn save_totals(conn: &mut PgConnection, target: &Target, t: &TargetTotals) -> Result<(), ProjectorError> {
    if t.applied == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO projection_state AS s (projection, events_applied, last_position, last_recorded_at, \
         last_applied_at) VALUES ($1, $2, $3, $4, now()) ON CONFLICT (projection) DO UPDATE SET \
         events_applied = s.events_applied + EXCLUDED.events_applied, \
         last_position = GREATEST(s.last_position, EXCLUDED.last_position), \
         last_recorded_at = GREATEST(s.last_recorded_at, EXCLUDED.last_recorded_at), last_applied_at = now()",
    )
    .bind(&target.key)
    .bind(t.applied)
    .bind(t.last_position)
    .bind(t.last_recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the next offset per topic and partition of the Kafka events in the batch.
async fn save_offsets(conn: &mut PgConnection, group: &str, events: &[Incoming]) -> Result<(), ProjectorError> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in events {
        if let Origin::Kafka { topic, partition, offset } = &e.origin {
            let n = next.entry((topic.clone(), *partition)).or_insert(0);
            *n = (*n).max(offset + 1);
        }
    }
    if next.is_empty() {
        return Ok(());
    }
    let (topics, partitions): (Vec<String>, Vec<i32>) = next.keys().cloned().unzip();
    let offsets: Vec<i64> = next.values().copied().collect();
    sqlx::query(
        "INSERT INTO projector_offsets AS o (group_id, topic, partition, next_offset) \
         SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[]) \
         ON CONFLICT (group_id, topic, partition) DO UPDATE \
         SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()",
    )
    .bind(group)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records an event the projection did not apply.
pub(crate) async fn dead_letter(
    conn: &mut PgConnection,
    target: &Target,
    inc: &Incoming,
    kind: &str,
    error: &str,
) -> Result<i64, ProjectorError> {
    let (topic, partition, offset) = inc.kafka_origin();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (projection, kind, category, stream_id, version, position, topic, partition, \
         kafka_offset, error, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&target.key)
    .bind(kind)
    .bind(inc.category.map(|c| c.as_str()))
    .bind(inc.stream.map(|s| s.id))
    .bind((inc.version > 0).then_some(inc.version))
    .bind((inc.position > 0).then_some(inc.position))
    .bind(topic)
    .bind(partition)
    .bind(offset)
    .bind(error)
    .bind(&inc.raw)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Dead-letters a poison event and parks its stream for the target's projection.
pub(crate) async fn park(
    conn: &mut PgConnection,
    target: &Target,
    stream: StreamRef,
    inc: &Incoming,
    error: &str,
) -> Result<(), ProjectorError> {
    let id = dead_letter(conn, target, inc, "poison", error).await?;
    sqlx::query(
        "INSERT INTO parked_streams (projection, category, stream_id, reason, dead_letter_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&target.key)
    .bind(stream.category.as_str())
    .bind(stream.id)
    .bind(error)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    tracing::warn!(projection = %target.key, stream = %stream, %error, "stream parked");
    Ok(())
}

/// Why a batch transaction failed.
enum Failure {
    /// A statement failed on the data; `target` is the index of the projection whose write it
    /// was, when it was one.
    Data {
        target: Option<usize>,
        error: sqlx::Error,
    },
    Other(ProjectorError),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if is_data_error(&error) {
            Failure::Data { target: None, error }
        } else {
            Failure::Other(error.into())
        }
    }
}

impl From<ProjectorError> for Failure {
    fn from(e: ProjectorError) -> Self {
        match e {
            ProjectorError::Database(error) => error.into(),
            other => Failure::Other(other),
        }
    }
}

impl From<Failure> for ProjectorError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Data { error, .. } => error.into(),
            Failure::Other(e) => e,
        }
    }
}

/// Data exceptions and integrity violations: the event, not the database, is at fault.
fn is_data_error(e: &sqlx::Error) -> bool {
    sqlstate_of(e).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}
