//! Feeding the live projections straight from the Postgres log, without Kafka: for a dev
//! all-in-one and for tests of the query API. Uses the same batch applier as the consumer, so
//! the read models are the same; the checkpoint is saved after each committed batch (a crash
//! between the two re-reads events that the per-stream versions then skip).

use std::time::Duration;

use ordo_event_store::EventStore;
use ordo_service::shutdown::Shutdown;

use crate::batch::Projector;
use crate::incoming::Incoming;
use crate::ProjectorError;

/// Applies the log to `projector`'s targets from the checkpoint `name` until `shutdown`, polling
/// every `idle` when caught up.
///
/// # Errors
/// [`ProjectorError`] when the database fails.
pub async fn follow_log(
    projector: Projector,
    name: &str,
    batch_size: i64,
    idle: Duration,
    shutdown: Shutdown,
) -> Result<(), ProjectorError> {
    let store = EventStore::new(projector.pool().clone());
    let mut cursor = store.load_checkpoint(name).await?;
    while !shutdown.is_triggered() {
        let (events, next) = store.read_all(cursor, batch_size).await?;
        if events.is_empty() {
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let incoming: Vec<Incoming> = events.iter().map(Incoming::from_recorded).collect();
        projector.apply_batch(&incoming, None).await?;
        store.save_checkpoint(name, next).await?;
        cursor = next;
    }
    Ok(())
}
