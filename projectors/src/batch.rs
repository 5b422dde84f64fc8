//! Applying a batch of events to the projections in ONE short Postgres transaction, together with
//! the per-stream progress, dead letters, parked streams and Kafka offsets it implies.
//!
//! Exactly-once in effect: each projection records per stream the last version it applied, and
//! an event at or below it is skipped, so redelivery changes nothing. A gap (an event newer than
//! the next expected version) is filled from the Postgres log, the source of truth.
//!
//! A batch runs in three steps:
//! 1. Before the transaction: the missing versions of any gap are read from the log.
//! 2. In the transaction: the streams' progress rows are locked (created first when missing, so
//!    a stream's first event is locked too), each event gets its [`next_step`] per projection,
//!    applied events are folded per row in memory ([`Changes`]), and each read-model table gets
//!    one statement for the whole batch.
//! 3. Still in it: a row that was not at the version its fold started from makes its stream's
//!    first folded event a poison event; then dead letters, parked streams, progress, totals and
//!    offsets are written, one statement each, and one `pg_notify` names the live rows touched
//!    (the query API's cache drops them when the batch commits).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use ordo_event_store::{error::sqlstate_of, EventStore};
use ordo_schemas::StreamRef;
use sqlx::{PgConnection, PgPool};

use crate::apply::WriteError;
use crate::bookkeeping::{self, StreamKey};
use crate::incoming::Incoming;
use crate::model::Target;
use crate::plan::{Plan, Source};
use crate::step::{after_gap, next_step, Arrival, Step, StreamState};
use crate::ProjectorError;

/// The channel each batch notifies, in its transaction, with the live read-model rows it touched
/// (see `bookkeeping::touched_payload`); the query API's cache listens on it.
pub const READ_MODEL_CHANNEL: &str = "ordo_read_models";

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

/// Log events read to fill gaps, by stream and version.
#[derive(Debug, Default)]
struct Gaps(HashMap<StreamRef, BTreeMap<i64, Arc<Incoming>>>);

impl Gaps {
    /// Versions `from..=to` of `stream`, when all are here.
    fn range(&self, stream: StreamRef, from: i64, to: i64) -> Option<Vec<Arc<Incoming>>> {
        let events: Vec<Arc<Incoming>> = self.0.get(&stream)?.range(from..=to).map(|(_, e)| e.clone()).collect();
        (events.len() as i64 == to - from + 1).then_some(events)
    }

    fn insert(&mut self, stream: StreamRef, events: &[ordo_event_store::RecordedEvent]) {
        let slot = self.0.entry(stream).or_default();
        for e in events {
            slot.insert(e.version, Arc::new(Incoming::from_recorded(e)));
        }
    }
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
        let gaps = self.read_gaps(events).await?;
        let result = match self.try_batch(events, &gaps, group, &[]).await {
            Ok(stats) => stats,
            Err(Failure::Data { error, .. }) => {
                tracing::warn!(%error, size = events.len(), "batch failed on data, applying one by one");
                let mut total = BatchStats::default();
                for event in events {
                    total += self.apply_alone(event, &gaps, group).await?;
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
    async fn apply_alone(
        &self,
        event: &Incoming,
        gaps: &Gaps,
        group: Option<&str>,
    ) -> Result<BatchStats, ProjectorError> {
        let one = std::slice::from_ref(event);
        let mut forced: Vec<(usize, String)> = Vec::new();
        loop {
            match self.try_batch(one, gaps, group, &forced).await {
                Ok(stats) => return Ok(stats),
                Err(Failure::Data { target: Some(t), error }) if forced.iter().all(|(f, _)| *f != t) => {
                    forced.push((t, error.to_string()));
                }
                // a write outside any one projection's tables: every projection dead-letters it
                Err(Failure::Data { error, .. }) if forced.len() < self.targets.len() => {
                    forced = (0..self.targets.len()).map(|t| (t, error.to_string())).collect();
                }
                Err(Failure::Data { error, .. }) | Err(Failure::Other(error)) => return Err(error),
            }
        }
    }

    /// One transaction. The (single) event is dead-lettered instead of applied by each target
    /// index in `forced`, with its error.
    async fn try_batch(
        &self,
        events: &[Incoming],
        gaps: &Gaps,
        group: Option<&str>,
        forced: &[(usize, String)],
    ) -> Result<BatchStats, Failure> {
        let mut tx = self.pool.begin_with(bookkeeping::BEGIN_WITH_INDEX_PROBES).await?;
        let stats = self.batch_body(&mut tx, events, gaps, group, forced).await?;
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
        let gaps = self.read_gaps(events).await?;
        self.batch_body(tx, events, &gaps, group, &[]).await.map_err(ProjectorError::from)
    }

    /// Every (projection, stream) pair of the batch, sorted.
    fn pairs(&self, events: &[Incoming]) -> Vec<StreamKey> {
        let mut pairs: Vec<StreamKey> = events
            .iter()
            .filter_map(|e| e.stream)
            .flat_map(|s| self.readers(s.category).map(move |t| (t, s)))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }

    /// The indexes of the targets whose projection reads `category`.
    fn readers(&self, category: ordo_schemas::StreamCategory) -> impl Iterator<Item = usize> + '_ {
        self.targets.iter().enumerate().filter(move |(_, t)| t.projection.reads(category)).map(|(i, _)| i)
    }

    /// Reads from the log, before any lock is taken, the versions missing between what the
    /// projections applied and what the batch brings.
    async fn read_gaps(&self, events: &[Incoming]) -> Result<Gaps, ProjectorError> {
        let mut gaps = Gaps::default();
        let pairs = self.pairs(events);
        if pairs.is_empty() {
            return Ok(gaps);
        }
        let applied = bookkeeping::read_versions(&self.pool, &self.targets, &pairs).await?;
        let mut lowest: HashMap<StreamRef, i64> = HashMap::new();
        for key in &pairs {
            let v = applied.get(key).copied().unwrap_or(0);
            lowest.entry(key.1).and_modify(|l| *l = (*l).min(v)).or_insert(v);
        }
        let mut versions: HashMap<StreamRef, Vec<i64>> = HashMap::new();
        for e in events.iter().filter(|e| e.version > 0 && e.event.is_ok()) {
            if let Some(s) = e.stream {
                versions.entry(s).or_default().push(e.version);
            }
        }
        for (stream, mut vs) in versions {
            vs.sort_unstable();
            let mut next = lowest.get(&stream).copied().unwrap_or(0) + 1;
            let (mut first, mut last) = (None, 0);
            for v in vs {
                if v > next {
                    first.get_or_insert(next);
                    last = v - 1;
                }
                next = next.max(v + 1);
            }
            if let Some(from) = first {
                gaps.insert(stream, &self.store.read_stream_range(stream, from, last).await?);
            }
        }
        Ok(gaps)
    }

    async fn batch_body(
        &self,
        tx: &mut PgConnection,
        events: &[Incoming],
        gaps: &Gaps,
        group: Option<&str>,
        forced: &[(usize, String)],
    ) -> Result<BatchStats, Failure> {
        bookkeeping::lock_projections(&mut *tx, &self.targets).await?;
        let pairs = self.pairs(events);
        let mut states = bookkeeping::lock_states(&mut *tx, &self.targets, &pairs).await?;
        let mut plan = Plan::new(&self.targets);

        for event in events {
            let Some(category) = event.category else { continue };
            for ti in self.readers(category) {
                let error = forced.iter().find(|(f, _)| *f == ti).map(|(_, e)| e.as_str());
                let arrival = Arrival {
                    version: event.version,
                    has_stream: event.stream.is_some(),
                    error: error.or(event.event.as_ref().err().map(String::as_str)),
                };
                let mut none = StreamState::default();
                let state = match event.stream {
                    Some(s) => states.entry((ti, s)).or_default(),
                    None => &mut none,
                };
                let mut step = next_step(state, &arrival);
                if let (Step::FillGap { from, to }, Some(stream)) = (&step, event.stream) {
                    let log = match gaps.range(stream, *from, *to) {
                        Some(log) => log,
                        // another writer moved the stream since the gap was read: read the rest now
                        None => self
                            .store
                            .read_stream_range(stream, *from, *to)
                            .await
                            .map_err(ProjectorError::from)?
                            .iter()
                            .map(|e| Arc::new(Incoming::from_recorded(e)))
                            .collect(),
                    };
                    for e in log {
                        let gap_step = next_step(state, &Arrival::of(&e));
                        plan.settle(ti, state, Source::Log(e), gap_step);
                    }
                    step = after_gap(state, &arrival);
                }
                plan.settle(ti, state, Source::Batch(event), step);
            }
        }

        let mut mismatched = Vec::new();
        for (ti, changes) in plan.changes.iter().enumerate() {
            if changes.is_empty() {
                continue;
            }
            let streams = changes.write(&mut *tx, &self.targets[ti]).await.map_err(|e| Failure::write(ti, e))?;
            mismatched.extend(streams.into_iter().map(|s| (ti, s)));
        }
        for key in mismatched {
            plan.unapply(key);
        }
        let stats = plan.record(&mut *tx, events, group).await?;
        bookkeeping::notify_touched(&mut *tx, &self.targets, &pairs).await?;
        Ok(stats)
    }
}

impl<'a> Arrival<'a> {
    fn of(e: &'a Incoming) -> Self {
        Arrival {
            version: e.version,
            has_stream: e.stream.is_some(),
            error: e.event.as_ref().err().map(String::as_str),
        }
    }
}

/// Why a batch transaction failed.
enum Failure {
    /// A statement (or a sum folded in memory) failed on the data; `target` is the index of
    /// the projection whose write it was, when it was one.
    Data {
        target: Option<usize>,
        error: ProjectorError,
    },
    Other(ProjectorError),
}

impl Failure {
    fn write(target: usize, e: WriteError) -> Self {
        match e {
            WriteError::Data(message) => Failure::Data { target: Some(target), error: ProjectorError::Other(message) },
            WriteError::Db(e) if is_data_error(&e) => Failure::Data { target: Some(target), error: e.into() },
            WriteError::Db(e) => Failure::Other(e.into()),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if is_data_error(&error) {
            Failure::Data { target: None, error: error.into() }
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
            Failure::Data { error, .. } | Failure::Other(error) => error,
        }
    }
}

/// Data exceptions and integrity violations: the event, not the database, is at fault.
fn is_data_error(e: &sqlx::Error) -> bool {
    sqlstate_of(e).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}
