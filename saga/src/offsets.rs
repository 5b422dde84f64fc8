//! The saga's own record of its progress (`saga_offsets`, ADR 0021): per partition the next
//! offset its commit watermark reached and the broker incarnation of the message it follows.
//!
//! The group's committed offset is only the broker's copy of that progress. After the broker
//! lost its data it can be a late commit of the old log, anywhere in the re-created partition; a
//! saga process started there would never read the orders below it. So the record is written
//! beside every commit, loaded before the consumer starts and read again every 2 s (other
//! replicas move it), and given to the consumer ([`Progress`]), which checks every partition it
//! is assigned against it.
//!
//! The record is written after the commit is handed to the consumer, by a task of its own, so a
//! slow database does not hold the saga up. It only ever names offsets the watermark passed, so
//! it never leads what was handled; it may lag (a write lost in a crash), which only makes a later
//! process read some messages again, and the saga is idempotent.

use std::collections::HashMap;
use std::time::Duration;

use ordo_event_store::kafka::{Progress, Stored};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait between retries of a failed write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A watermark that moved: topic, partition and where it reached.
type Reached = (String, i32, Stored);

/// Loads the group's stored progress and the relay's current broker incarnation into `progress`.
pub(crate) async fn load(pool: &PgPool, group: &str, progress: &Progress) -> Result<(), sqlx::Error> {
    progress.load(pool, "saga_offsets", group).await
}

/// Records where the saga's watermarks reached: in the consumer's [`Progress`] at once, and in
/// `saga_offsets` by the writer task of [`Recorder::start`].
pub(crate) struct Recorder {
    progress: Progress,
    tx: mpsc::UnboundedSender<Reached>,
}

impl Recorder {
    /// A recorder for `group`, and its writer task, which ends once the recorder is dropped and
    /// what it was given is written (or the pool is closed).
    pub(crate) fn start(pool: PgPool, group: String, progress: Progress) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(pool, group, rx));
        (Self { progress, tx }, writer)
    }

    /// The watermark of `partition` reached `next_offset`, following a message of `incarnation`.
    pub(crate) fn reached(&self, topic: &str, partition: i32, incarnation: i64, next_offset: i64) {
        self.progress.record(topic, partition, incarnation, next_offset);
        let _ = self.tx.send((topic.to_owned(), partition, Stored { incarnation, next_offset }));
    }
}

/// Keeps the furthest of `reached` per partition (a newer incarnation, else the higher offset).
fn merge(into: &mut HashMap<(String, i32), Stored>, (topic, partition, stored): Reached) {
    let slot = into.entry((topic, partition)).or_insert(stored);
    *slot = (*slot).max(stored);
}

async fn write_loop(pool: PgPool, group: String, mut rx: mpsc::UnboundedReceiver<Reached>) {
    let mut pending: HashMap<(String, i32), Stored> = HashMap::new();
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => merge(&mut pending, r),
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(r) => merge(&mut pending, r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match write(&pool, &group, &pending).await {
                Ok(()) => {
                    pending.clear();
                    break;
                }
                Err(e) if pool.is_closed() => {
                    tracing::warn!(error = %e, "the saga's offsets were not stored: the pool is closed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "storing the saga's offsets failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    while let Ok(r) = rx.try_recv() {
                        merge(&mut pending, r);
                    }
                }
            }
        }
    }
}

/// Upserts `pending`: a newer incarnation replaces a row, within one incarnation the higher offset
/// wins, an older incarnation changes nothing.
async fn write(pool: &PgPool, group: &str, pending: &HashMap<(String, i32), Stored>) -> Result<(), sqlx::Error> {
    let mut topics = Vec::with_capacity(pending.len());
    let mut partitions = Vec::with_capacity(pending.len());
    let mut offsets = Vec::with_capacity(pending.len());
    let mut incarnations = Vec::with_capacity(pending.len());
    for ((topic, partition), stored) in pending {
        topics.push(topic.as_str());
        partitions.push(*partition);
        offsets.push(stored.next_offset);
        incarnations.push(stored.incarnation);
    }
    sqlx::query(
        "INSERT INTO saga_offsets AS o (group_id, topic, partition, next_offset, incarnation) \
         SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (group_id, topic, partition) DO UPDATE \
         SET next_offset = CASE WHEN EXCLUDED.incarnation > o.incarnation THEN EXCLUDED.next_offset \
                                WHEN EXCLUDED.incarnation = o.incarnation THEN GREATEST(o.next_offset, EXCLUDED.next_offset) \
                                ELSE o.next_offset END, \
             incarnation = GREATEST(o.incarnation, EXCLUDED.incarnation), updated_at = now()",
    )
    .bind(group)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&incarnations)
    .execute(pool)
    .await?;
    Ok(())
}
