//! The SQL that records what a batch decided: the per-stream locks and progress, dead letters and
//! parked streams, totals per projection and the Kafka offsets. One statement each per batch.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use ordo_schemas::{StreamCategory, StreamRef};
use sqlx::{PgConnection, PgPool, Row};

use crate::incoming::{Incoming, Origin};
use crate::model::{Projection, Target};
use crate::step::{DeadLetterKind, StreamState};
use crate::ProjectorError;

/// A (projection, stream) pair of a batch: the index of the target and the stream.
pub(crate) type StreamKey = (usize, StreamRef);

/// The `parked_streams` keys of `pairs`, as three parallel arrays.
fn key_arrays(targets: &[Target], pairs: &[StreamKey]) -> (Vec<String>, Vec<&'static str>, Vec<uuid::Uuid>) {
    let keys = pairs.iter().map(|(t, _)| targets[*t].key.clone()).collect();
    let categories = pairs.iter().map(|(_, s)| s.category.as_str()).collect();
    let ids = pairs.iter().map(|(_, s)| s.id).collect();
    (keys, categories, ids)
}

/// Takes the advisory lock of each live projection shared, so a rebuild's swap (which takes it
/// exclusive) never runs beside the batch.
pub(crate) async fn lock_projections(conn: &mut PgConnection, targets: &[Target]) -> Result<(), ProjectorError> {
    let mut locks: Vec<i64> = targets.iter().filter(|t| t.live).map(|t| t.projection.lock_key()).collect();
    if locks.is_empty() {
        return Ok(());
    }
    locks.sort_unstable();
    locks.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(k) FROM UNNEST($1::bigint[]) WITH ORDINALITY AS l(k, n) ORDER BY n",
    )
    .bind(&locks)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The pairs of a batch whose progress lives in one table (the partitioned `projection_progress`
/// for live and replay targets, a rebuild's own table for each shadow), as three parallel key
/// arrays, and how to map its rows back to [`StreamKey`]s.
struct ProgressGroup<'t> {
    table: &'t str,
    keys: Vec<&'t str>,
    categories: Vec<&'static str>,
    ids: Vec<uuid::Uuid>,
    targets: HashMap<&'t str, usize>,
}

/// `pairs` grouped by progress table, in table order (the order rows are locked in).
fn progress_groups<'t>(targets: &'t [Target], pairs: &[StreamKey]) -> Vec<ProgressGroup<'t>> {
    let mut groups: BTreeMap<&'t str, ProgressGroup<'t>> = BTreeMap::new();
    for (ti, stream) in pairs {
        let target = &targets[*ti];
        let table = target.progress_table();
        let g = groups.entry(table).or_insert_with(|| ProgressGroup {
            table,
            keys: Vec::new(),
            categories: Vec::new(),
            ids: Vec::new(),
            targets: HashMap::new(),
        });
        g.keys.push(target.progress_key());
        g.categories.push(stream.category.as_str());
        g.ids.push(stream.id);
        g.targets.insert(target.progress_key(), *ti);
    }
    groups.into_values().collect()
}

impl ProgressGroup<'_> {
    fn key_of(&self, row: &sqlx::postgres::PgRow) -> Result<Option<StreamKey>, ProjectorError> {
        let projection: String = row.try_get("projection")?;
        let category: String = row.try_get("category")?;
        let id: uuid::Uuid = row.try_get("stream_id")?;
        let Some(category) = StreamCategory::parse(&category) else { return Ok(None) };
        Ok(self.targets.get(projection.as_str()).map(|i| (*i, StreamRef::new(category, id))))
    }
}

/// Begins a transaction of a live batch. A batch reads and writes a few rows per stream of each
/// projection it touches, so index probes are right whatever the tables' sizes; planned on the
/// statistics of tables that grew since their last ANALYZE (a new database, a burst of new
/// streams), the progress partitions and read models were read whole and hashed on every batch.
pub(crate) const BEGIN_WITH_INDEX_PROBES: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// The applied versions of `pairs`, read without locks (to fetch a gap from the log before the
/// batch's transaction); a pair without a row is absent.
pub(crate) async fn read_versions(
    pool: &PgPool,
    targets: &[Target],
    pairs: &[StreamKey],
) -> Result<HashMap<StreamKey, i64>, ProjectorError> {
    let mut out = HashMap::new();
    let mut tx = pool.begin_with(BEGIN_WITH_INDEX_PROBES).await?;
    for g in progress_groups(targets, pairs) {
        let rows = sqlx::query(&format!(
            "SELECT p.projection, p.category, p.stream_id, p.version FROM {} p \
             JOIN UNNEST($1::text[], $2::text[], $3::uuid[]) AS k(projection, category, stream_id) \
             USING (projection, stream_id, category)",
            g.table
        ))
        .bind(&g.keys)
        .bind(&g.categories)
        .bind(&g.ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            if let Some(key) = g.key_of(&row)? {
                out.insert(key, row.try_get("version")?);
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Locks and loads the parked flags and progress of `pairs` (sorted). A pair without a progress
/// row gets one at version 0 first, in key order, so the row lock covers a stream's first
/// event too: a second writer of the same stream waits here until the first commits, then reads
/// the version it committed.
pub(crate) async fn lock_states(
    conn: &mut PgConnection,
    targets: &[Target],
    pairs: &[StreamKey],
) -> Result<HashMap<StreamKey, StreamState>, ProjectorError> {
    let mut states: HashMap<StreamKey, StreamState> = pairs.iter().map(|k| (*k, StreamState::default())).collect();
    if pairs.is_empty() {
        return Ok(states);
    }
    let (keys, categories, ids) = key_arrays(targets, pairs);
    let index = TargetIndex::new(targets);
    let parked = sqlx::query(
        "SELECT p.projection, p.category, p.stream_id FROM parked_streams p \
         JOIN UNNEST($1::text[], $2::text[], $3::uuid[]) AS k(projection, category, stream_id) \
         USING (projection, stream_id, category) ORDER BY 1, 3, 2 FOR SHARE OF p",
    )
    .bind(&keys)
    .bind(&categories)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in parked {
        if let Some(st) = index.key_of(&row)?.and_then(|k| states.get_mut(&k)) {
            st.parked = true;
        }
    }
    for g in progress_groups(targets, pairs) {
        sqlx::query(&format!(
            "INSERT INTO {} (projection, category, stream_id, version, position) \
             SELECT k, c, s, 0, 0 FROM UNNEST($1::text[], $2::text[], $3::uuid[]) AS t(k, c, s) \
             ORDER BY k, s, c ON CONFLICT DO NOTHING",
            g.table
        ))
        .bind(&g.keys)
        .bind(&g.categories)
        .bind(&g.ids)
        .execute(&mut *conn)
        .await?;
        let progress = sqlx::query(&format!(
            "SELECT p.projection, p.category, p.stream_id, p.version FROM {} p \
             JOIN UNNEST($1::text[], $2::text[], $3::uuid[]) AS k(projection, category, stream_id) \
             USING (projection, stream_id, category) ORDER BY 1, 3, 2 FOR UPDATE OF p",
            g.table
        ))
        .bind(&g.keys)
        .bind(&g.categories)
        .bind(&g.ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in progress {
            if let Some(st) = g.key_of(&row)?.and_then(|k| states.get_mut(&k)) {
                st.version = row.try_get("version")?;
            }
        }
    }
    Ok(states)
}

/// Maps stored (projection, category, stream) columns back to [`StreamKey`]s.
struct TargetIndex<'a>(HashMap<&'a str, usize>);

impl<'a> TargetIndex<'a> {
    fn new(targets: &'a [Target]) -> Self {
        Self(targets.iter().enumerate().map(|(i, t)| (t.key.as_str(), i)).collect())
    }

    fn key_of(&self, row: &sqlx::postgres::PgRow) -> Result<Option<StreamKey>, ProjectorError> {
        let projection: String = row.try_get("projection")?;
        let category: String = row.try_get("category")?;
        let id: uuid::Uuid = row.try_get("stream_id")?;
        let Some(category) = StreamCategory::parse(&category) else { return Ok(None) };
        Ok(self.0.get(projection.as_str()).map(|i| (*i, StreamRef::new(category, id))))
    }
}

/// What a batch applied: the new version and position per stream, and per projection the
/// totals for `projection_state`.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Per stream: the progress table, the progress key, and so on.
    tables: Vec<String>,
    keys: Vec<String>,
    categories: Vec<&'static str>,
    ids: Vec<uuid::Uuid>,
    versions: Vec<i64>,
    positions: Vec<i64>,
    totals: BTreeMap<String, Totals>,
}

/// What one projection applied in a batch.
#[derive(Debug, Default)]
struct Totals {
    applied: i64,
    last_position: i64,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl Applied {
    /// Records that `target`'s projection applied `stream` up to `version`, `count` events of it.
    pub fn push(&mut self, target: &Target, stream: StreamRef, version: i64, position: i64, count: i64) {
        let key = target.key.as_str();
        self.tables.push(target.progress_table().to_owned());
        self.keys.push(target.progress_key().to_owned());
        self.categories.push(stream.category.as_str());
        self.ids.push(stream.id);
        self.versions.push(version);
        self.positions.push(position);
        let t = self.totals.entry(key.to_owned()).or_default();
        t.applied += count;
        t.last_position = t.last_position.max(position);
    }

    /// Notes the recording time of an applied event of `key`'s projection.
    pub fn recorded(&mut self, key: &str, at: Option<DateTime<Utc>>) {
        if let Some(t) = self.totals.get_mut(key) {
            t.last_recorded_at = t.last_recorded_at.max(at);
        }
    }

    /// The indexes of the streams whose progress goes to `table`.
    fn rows_of(&self, table: &str) -> Vec<usize> {
        (0..self.tables.len()).filter(|i| self.tables[*i] == table).collect()
    }

    /// Events applied per projection key, and the newest recording time.
    pub fn per_projection(&self) -> impl Iterator<Item = (&str, i64, Option<DateTime<Utc>>)> {
        self.totals.iter().map(|(k, t)| (k.as_str(), t.applied, t.last_recorded_at))
    }

    /// Writes the progress, the totals and the next Kafka offsets of `events` for `group`, in
    /// one statement.
    pub async fn save(
        &self,
        conn: &mut PgConnection,
        group: Option<&str>,
        events: &[Incoming],
    ) -> Result<(), ProjectorError> {
        // Per partition, the next offset in the newest broker incarnation the batch holds.
        let mut next: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        if group.is_some() {
            for e in events {
                if let Origin::Kafka { topic, partition, offset, incarnation } = &e.origin {
                    let n = next.entry((topic.as_str(), *partition)).or_insert((*incarnation, 0));
                    *n = (*n).max((*incarnation, offset + 1));
                }
            }
        }
        if self.keys.is_empty() && next.is_empty() {
            return Ok(());
        }
        let (topics, partitions): (Vec<&str>, Vec<i32>) = next.keys().copied().unzip();
        let incarnations: Vec<i64> = next.values().map(|(i, _)| *i).collect();
        let offsets: Vec<i64> = next.values().map(|(_, o)| *o).collect();
        let totals: Vec<(&String, &Totals)> = self.totals.iter().filter(|(_, t)| t.applied > 0).collect();
        // the rows of the first progress table go with the totals and offsets; a batch of a
        // rebuild's shadows has one table per projection, each written by a statement of its own
        let mut tables: Vec<&str> = self.tables.iter().map(String::as_str).collect();
        tables.sort_unstable();
        tables.dedup();
        let first = tables.first().copied().unwrap_or(crate::model::PROGRESS);
        for table in tables.iter().skip(1) {
            let rows = self.rows_of(table);
            sqlx::query(&format!(
                "INSERT INTO {table} (projection, category, stream_id, version, position) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[]) \
                 ON CONFLICT (projection, stream_id, category) DO UPDATE \
                 SET version = EXCLUDED.version, position = EXCLUDED.position, updated_at = now()"
            ))
            .bind(rows.iter().map(|i| self.keys[*i].as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|i| self.categories[*i]).collect::<Vec<_>>())
            .bind(rows.iter().map(|i| self.ids[*i]).collect::<Vec<_>>())
            .bind(rows.iter().map(|i| self.versions[*i]).collect::<Vec<_>>())
            .bind(rows.iter().map(|i| self.positions[*i]).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        let rows = self.rows_of(first);
        sqlx::query(&format!(
            "WITH progress AS (INSERT INTO {first} (projection, category, stream_id, version, position) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (projection, stream_id, category) DO UPDATE \
             SET version = EXCLUDED.version, position = EXCLUDED.position, updated_at = now()), \
             totals AS (INSERT INTO projection_state AS s (projection, events_applied, last_position, \
             last_recorded_at, last_applied_at) SELECT k, a, p, r, now() FROM UNNEST($6::text[], $7::bigint[], \
             $8::bigint[], $9::timestamptz[]) AS t(k, a, p, r) ON CONFLICT (projection) DO UPDATE SET \
             events_applied = s.events_applied + EXCLUDED.events_applied, \
             last_position = GREATEST(s.last_position, EXCLUDED.last_position), \
             last_recorded_at = GREATEST(s.last_recorded_at, EXCLUDED.last_recorded_at), \
             last_applied_at = now()), \
             offsets AS (INSERT INTO projector_offsets AS o (group_id, topic, partition, next_offset, incarnation) \
             SELECT $10, * FROM UNNEST($11::text[], $12::int[], $13::bigint[], $14::bigint[]) \
             ON CONFLICT (group_id, topic, partition) DO UPDATE \
             SET next_offset = CASE WHEN EXCLUDED.incarnation > o.incarnation THEN EXCLUDED.next_offset \
                                    WHEN EXCLUDED.incarnation = o.incarnation THEN GREATEST(o.next_offset, EXCLUDED.next_offset) \
                                    ELSE o.next_offset END, \
                 incarnation = GREATEST(o.incarnation, EXCLUDED.incarnation), updated_at = now()) \
             SELECT 1",
        ))
        .bind(rows.iter().map(|i| self.keys[*i].as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| self.categories[*i]).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| self.ids[*i]).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| self.versions[*i]).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| self.positions[*i]).collect::<Vec<_>>())
        .bind(totals.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        .bind(totals.iter().map(|(_, t)| t.applied).collect::<Vec<_>>())
        .bind(totals.iter().map(|(_, t)| t.last_position).collect::<Vec<_>>())
        .bind(totals.iter().map(|(_, t)| t.last_recorded_at).collect::<Vec<_>>())
        .bind(group)
        .bind(&topics)
        .bind(&partitions)
        .bind(&offsets)
        .bind(&incarnations)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// An event one projection did not apply.
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    pub target: &'a Target,
    pub kind: DeadLetterKind,
    /// Park the event's stream in the projection (a poison event of a known stream).
    pub park: bool,
    pub event: &'a Incoming,
    pub error: String,
}

/// Records the dead letters and parks the streams they name, in one statement.
pub(crate) async fn save_dead_letters(
    conn: &mut PgConnection,
    letters: &[DeadLetter<'_>],
) -> Result<(), ProjectorError> {
    if letters.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH d AS (INSERT INTO dead_letters (projection, kind, category, stream_id, version, position, topic, \
         partition, kafka_offset, error, payload) SELECT k, kind, c, s, v, p, t, pa, o, e, b FROM \
         UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[], $6::bigint[], $7::text[], $8::int[], \
         $9::bigint[], $10::text[], $11::bytea[]) AS u(k, kind, c, s, v, p, t, pa, o, e, b) \
         RETURNING id, projection, kind, category, stream_id, error) \
         INSERT INTO parked_streams (projection, category, stream_id, reason, dead_letter_id) \
         SELECT DISTINCT ON (d.projection, d.stream_id, d.category) d.projection, d.category, d.stream_id, \
         d.error, d.id FROM d JOIN UNNEST($1::text[], $3::text[], $4::uuid[], $12::bool[]) AS x(k, c, s, park) \
         ON x.park AND x.k = d.projection AND x.c = d.category AND x.s = d.stream_id WHERE d.kind = 'poison' \
         ORDER BY d.projection, d.stream_id, d.category, d.id ON CONFLICT DO NOTHING",
    )
    .bind(letters.iter().map(|l| l.target.key.clone()).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.category.map(|c| c.as_str())).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.stream.map(|s| s.id)).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| (l.event.version > 0).then_some(l.event.version)).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| (l.event.position > 0).then_some(l.event.position)).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.kafka_origin().0).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.kafka_origin().1).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.kafka_origin().2).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.error.as_str()).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.event.raw.as_slice()).collect::<Vec<_>>())
    .bind(letters.iter().map(|l| l.park && l.event.stream.is_some()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    for l in letters.iter().filter(|l| l.park) {
        if let Some(stream) = l.event.stream {
            tracing::warn!(projection = %l.target.key, stream = %stream, version = l.event.version, error = %l.error,
                "poison event, stream parked");
        }
    }
    Ok(())
}

/// Largest notification payload sent; Postgres refuses more than 8000 bytes.
const NOTIFY_LIMIT: usize = 7900;

/// The `pg_notify` payload telling readers which read-model rows a batch touched:
/// `{"<projection>": ["<stream id>", ...] | "*"}` over live targets only. A projection whose ids
/// would not fit becomes `"*"` (everything of it), largest first, until the payload fits.
pub(crate) fn touched_payload(targets: &[Target], pairs: &[StreamKey]) -> Option<String> {
    let mut touched: BTreeMap<&'static str, Vec<uuid::Uuid>> = BTreeMap::new();
    for (ti, stream) in pairs {
        let target = &targets[*ti];
        if target.live {
            touched.entry(target.projection.name()).or_default().push(stream.id);
        }
    }
    if touched.is_empty() {
        return None;
    }
    let mut all: Vec<&'static str> = Vec::new();
    // 36 characters, two quotes and a comma per id; the name, its quotes and punctuation
    let size = |t: &BTreeMap<&str, Vec<uuid::Uuid>>, all: &[&str]| {
        t.iter().map(|(n, ids)| n.len() + 6 + ids.len() * 39).sum::<usize>()
            + all.iter().map(|n| n.len() + 8).sum::<usize>()
    };
    while size(&touched, &all) > NOTIFY_LIMIT {
        let Some((&largest, _)) = touched.iter().max_by_key(|(_, ids)| ids.len()) else { break };
        touched.remove(largest);
        all.push(largest);
    }
    let mut payload = serde_json::Map::new();
    for (name, ids) in touched {
        payload.insert(name.to_owned(), ids.iter().map(|id| serde_json::Value::from(id.to_string())).collect());
    }
    for name in all {
        payload.insert(name.to_owned(), serde_json::Value::from("*"));
    }
    Some(serde_json::Value::Object(payload).to_string())
}

/// One notification per batch, inside its transaction: delivered when (and only if) the batch
/// commits.
pub(crate) async fn notify_touched(
    conn: &mut PgConnection,
    targets: &[Target],
    pairs: &[StreamKey],
) -> Result<(), ProjectorError> {
    let Some(payload) = touched_payload(targets, pairs) else { return Ok(()) };
    notify(conn, &payload).await
}

/// Tells the read cache that every row of `projection` may have changed (a rebuild swapped
/// its tables), inside the swap's transaction.
pub(crate) async fn notify_whole(conn: &mut PgConnection, projection: Projection) -> Result<(), ProjectorError> {
    notify(conn, &serde_json::json!({ projection.name(): "*" }).to_string()).await
}

async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), ProjectorError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::batch::READ_MODEL_CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod payload_tests {
    use super::*;
    use crate::model::Projection;

    #[test]
    fn a_payload_too_large_for_postgres_names_the_largest_projection_whole() {
        let targets = vec![Target::live(Projection::Catalog), Target::live(Projection::Orders)];
        let product = StreamRef::new(StreamCategory::Product, uuid::Uuid::new_v4());
        let mut pairs: Vec<StreamKey> = vec![(0, product)];
        let small = touched_payload(&targets, &pairs).unwrap();
        assert_eq!(small, format!("{{\"catalog\":[\"{}\"]}}", product.id));
        pairs.extend((0..500).map(|_| (1, StreamRef::new(StreamCategory::Order, uuid::Uuid::new_v4()))));
        let big = touched_payload(&targets, &pairs).unwrap();
        assert!(big.len() <= NOTIFY_LIMIT, "{} bytes", big.len());
        let v: serde_json::Value = serde_json::from_str(&big).unwrap();
        assert_eq!(v["orders"], "*");
        assert_eq!(v["catalog"][0], product.id.to_string());
        let shadow = vec![Target::shadow(Projection::Catalog)];
        assert_eq!(touched_payload(&shadow, &[(0, product)]), None);
    }
}
