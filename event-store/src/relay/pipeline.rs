//! The leader's publishing loop: pages of the log in a pipeline, acknowledgements taken in
//! order, the checkpoint saved behind them.
//!
//! - Up to [`RelayConfig::pipeline_depth`] pages are handed to the producer before the first of
//!   them is acknowledged: the next page is read and sent while the broker acknowledges the
//!   previous ones.
//! - Pages settle in the order they were read. A page whose every delivery was acknowledged
//!   moves the in-memory position; the checkpoint follows at most every
//!   [`RelayConfig::checkpoint_interval`], and at once when the relay is idle, fails or stops.
//!   It is written through the lock session, which is also the liveness check while publishing.
//! - The first page that fails stops the pipeline: what was acknowledged before it is saved,
//!   every later page is left to settle and is not recorded, and publishing starts again from
//!   the checkpoint, so everything after it is published again (consumers deduplicate by
//!   stream version). The relay never skips ahead.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ordo_service::shutdown::Shutdown;
use sqlx::PgConnection;
use tokio::task::JoinHandle;

use super::publish::{self, DeadLetter, PublishError, Published};
use super::{
    broker_lost_data, load_state, record_lag, save_progress, Backoff, Producing, Relay, RelayError, RelayState,
};
use crate::kafka;
use crate::signing::SigningKey;
use crate::types::LogCursor;

/// A page handed to the producer, in the order it was read.
struct InFlight {
    /// The cursor just past the page.
    next: LogCursor,
    events: u64,
    acks: JoinHandle<Result<Published, PublishError>>,
}

/// A page whose deliveries all settled.
struct Settled {
    next: LogCursor,
    events: u64,
    outcome: Result<Published, PublishError>,
}

/// The pages in flight, oldest first.
struct Pipeline {
    pages: VecDeque<InFlight>,
    depth: usize,
}

impl Pipeline {
    fn new(depth: usize) -> Self {
        Self { pages: VecDeque::with_capacity(depth.max(1)), depth: depth.max(1) }
    }

    fn is_full(&self) -> bool {
        self.pages.len() >= self.depth
    }

    fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Waits for its acknowledgements in a task of their own, so the relay goes on reading.
    fn push(&mut self, next: LogCursor, events: u64, enqueued: publish::Enqueued) {
        self.pages.push_back(InFlight { next, events, acks: tokio::spawn(enqueued.acknowledged()) });
    }

    /// Whether the oldest page settled.
    fn front_settled(&self) -> bool {
        self.pages.front().is_some_and(|p| p.acks.is_finished())
    }

    /// The oldest page once it settled; `None` when nothing is in flight. Cancel-safe: a page
    /// leaves the pipeline only when its outcome is returned.
    async fn next_settled(&mut self) -> Option<Settled> {
        let front = self.pages.front_mut()?;
        let outcome = (&mut front.acks).await.unwrap_or(Err(PublishError::Canceled));
        let page = self.pages.pop_front()?;
        Some(Settled { next: page.next, events: page.events, outcome })
    }

    /// Waits until every page settled, and forgets them.
    async fn drain(&mut self) {
        while self.next_settled().await.is_some() {}
    }
}

/// Acknowledged progress not yet in the checkpoint.
#[derive(Default)]
struct Unsaved {
    events: u64,
    dead_letters: Vec<DeadLetter>,
    /// When the oldest of it was acknowledged.
    since: Option<Instant>,
}

/// What the leader waits for when it cannot read further.
enum Woken {
    Settled(Option<Settled>),
    BrokerGone,
    Notified(bool),
    Shutdown,
}

impl Relay {
    /// Publishes while holding the lock held by `lock`. Returns `Ok` on shutdown, once the
    /// pages in flight settled and the checkpoint was saved.
    pub(super) async fn lead(&self, mut lock: PgConnection, shutdown: &Shutdown) -> Result<(), RelayError> {
        let cfg = &self.config;
        let key = SigningKey::load(self.store.pool()).await?;
        let Some((mut producing, created)) = self.prepare_kafka(&mut lock, shutdown).await? else { return Ok(()) };
        let mut state = load_state(&mut lock, &cfg.name).await.map_err(RelayError::LockLost)?;
        if let Some(reason) = state.recreated(&created) {
            state = self.new_incarnation(&mut lock, &reason).await?;
            producing.renew(cfg)?;
        }
        let mut listener = self.listen().await;
        let mut metrics_due = Instant::now();
        let mut broker_check_due = Instant::now();
        let mut backoff = Backoff::new(cfg.max_backoff);
        let mut pipeline = Pipeline::new(cfg.pipeline_depth);
        let mut unsaved = Unsaved::default();
        // Where the next page is read from: ahead of `state.cursor` by the pages in flight.
        let mut read_from = state.cursor;
        // The last read reached the end of the log; read again once something new may be there.
        let mut caught_up = false;
        let mut spoken = Instant::now();
        let mut lag: Option<JoinHandle<()>> = None;
        // After a failed page: recover, then read again from the checkpoint (or stop on shutdown).
        macro_rules! restart_after {
            ($failed:expr) => {{
                let go_on = self
                    .recover(
                        &mut lock,
                        &mut producing,
                        &mut state,
                        &mut pipeline,
                        &mut unsaved,
                        &mut backoff,
                        $failed,
                        shutdown,
                    )
                    .await?;
                if !go_on {
                    return Ok(());
                }
                (read_from, caught_up) = (state.cursor, false);
                continue;
            }};
        }
        // The broker lost data: drop what is in flight and publish the whole log again.
        macro_rules! start_incarnation {
            ($reason:expr) => {{
                producing.renew(cfg)?;
                self.fenced(&mut lock, pipeline.drain()).await?;
                state = self.new_incarnation(&mut lock, &$reason).await?;
                unsaved = Unsaved::default();
                (read_from, caught_up) = (state.cursor, false);
                continue;
            }};
        }
        tracing::info!(relay = %cfg.name, position = state.cursor.position, incarnation = state.incarnation, "relay resuming");
        metrics::gauge!("ordo_relay_incarnation").set(state.incarnation as f64);
        loop {
            // The lag query counts the backlog, which takes a while when it is long: it runs
            // beside the stream, one at a time.
            if Instant::now() >= metrics_due && lag.as_ref().is_none_or(JoinHandle::is_finished) {
                let (store, cursor) = (self.store.clone(), state.cursor);
                lag = Some(tokio::spawn(async move { record_lag(&store, cursor).await }));
                metrics_due = Instant::now() + Duration::from_secs(1);
            }
            if shutdown.is_triggered() {
                self.settle_all(&mut lock, &mut pipeline, &mut state, &mut unsaved).await?;
                self.save(&mut lock, &state, &mut unsaved).await?;
                return Ok(());
            }
            if producing.renewal_is_due() {
                if pipeline.is_empty() {
                    producing.renew(cfg)?;
                } else {
                    let failed = PublishError::BrokerGone;
                    restart_after!(failed);
                }
            }
            if Instant::now() >= broker_check_due {
                broker_check_due = Instant::now() + cfg.broker_check_interval;
                if let Some(reason) =
                    self.fenced(&mut lock, broker_lost_data(cfg, &producing.producer, &state.partitions)).await?
                {
                    start_incarnation!(reason);
                }
            }

            // Read and send the next page while the earlier ones wait for the broker.
            if !pipeline.is_full() && !caught_up {
                let (page, next) = self.store.read_all(read_from, cfg.batch_size).await?;
                caught_up = page.len() < usize::try_from(cfg.batch_size).unwrap_or(usize::MAX);
                if !page.is_empty() {
                    // Publish only while the lock session is alive: checked here unless the
                    // session spoke recently (a checkpoint save is such a check).
                    if spoken.elapsed() >= cfg.checkpoint_interval {
                        sqlx::query("SELECT 1").execute(&mut lock).await.map_err(RelayError::LockLost)?;
                        spoken = Instant::now();
                    }
                    // Positions follow commit order (appends serialise on the writer lock), so
                    // each stream's versions are in order in a page, which is sent as read.
                    let stamp = publish::Stamp { incarnation: state.incarnation, key: &key };
                    let attempt = async {
                        tokio::select! {
                            r = publish::enqueue(&producing.producer, &page, &stamp) => r,
                            () = producing.renewal_due() => Err(PublishError::BrokerGone),
                        }
                    };
                    match self.fenced(&mut lock, attempt).await? {
                        Ok(enqueued) => {
                            let events = page.len() as u64;
                            pipeline.push(next, events, enqueued);
                            self.status.enqueued.fetch_add(events, Ordering::SeqCst);
                            read_from = next;
                        }
                        Err(failed) => {
                            restart_after!(failed);
                        }
                    }
                }
            }

            // Take the pages that settled, in order; wait for the oldest only when nothing
            // else can be done.
            let settled = if pipeline.front_settled() {
                pipeline.next_settled().await
            } else if pipeline.is_full() || (caught_up && !pipeline.is_empty()) {
                let wait = async {
                    tokio::select! {
                        s = pipeline.next_settled() => Woken::Settled(s),
                        () = producing.renewal_due() => Woken::BrokerGone,
                        n = recv(listener.as_mut(), cfg.poll_interval), if caught_up => Woken::Notified(n),
                        () = shutdown.wait() => Woken::Shutdown,
                    }
                };
                match self.fenced(&mut lock, wait).await? {
                    Woken::Settled(s) => s,
                    Woken::Notified(ok) => {
                        if !ok {
                            listener = None;
                        }
                        caught_up = false;
                        None
                    }
                    Woken::BrokerGone | Woken::Shutdown => None, // handled at the top of the loop
                }
            } else {
                None
            };
            if let Some(Settled { next, events, outcome }) = settled {
                match outcome {
                    Ok(published) => {
                        backoff.reset();
                        if let Some(d) = state.lost_by(&published.delivered) {
                            // Offsets below what this relay already reached: the partition was
                            // re-created since, and what it held before is gone.
                            let reason =
                                format!("{} partition {} restarted at offset {}", d.topic, d.partition, d.offset);
                            start_incarnation!(reason);
                        }
                        state.record(&published.delivered, next, pipeline.is_empty());
                        unsaved.add(events, published.dead_letters, &cfg.name);
                    }
                    Err(failed) => {
                        restart_after!(failed);
                    }
                }
            }

            // The checkpoint, behind the stream: when due, and whenever the relay goes idle.
            let idle = pipeline.is_empty() && caught_up;
            if unsaved.is_due(cfg.checkpoint_interval) || (idle && unsaved.events > 0) {
                self.save(&mut lock, &state, &mut unsaved).await?;
                spoken = Instant::now();
            }
            if idle {
                sqlx::query("SELECT 1").execute(&mut lock).await.map_err(RelayError::LockLost)?;
                spoken = Instant::now();
                if listener.is_none() {
                    listener = self.listen().await;
                }
                let woken = tokio::select! {
                    n = recv(listener.as_mut(), cfg.poll_interval) => n,
                    () = self.fenced_sleep(&mut lock, cfg.poll_interval) => true,
                    () = producing.renewal_due() => true,
                    () = shutdown.wait() => true,
                };
                if !woken {
                    tracing::debug!(relay = %cfg.name, "log notifications lost, polling until they are back");
                    listener = None;
                }
                caught_up = false;
            }
        }
    }

    /// Writes the acknowledged progress through the lock session.
    async fn save(&self, lock: &mut PgConnection, state: &RelayState, unsaved: &mut Unsaved) -> Result<(), RelayError> {
        if unsaved.events == 0 && unsaved.dead_letters.is_empty() {
            return Ok(());
        }
        save_progress(lock, &self.config.name, state, &unsaved.dead_letters).await.map_err(RelayError::LockLost)?;
        let events = std::mem::take(unsaved).events;
        metrics::counter!("ordo_relay_events_published_total").increment(events);
        self.status.published.fetch_add(events, Ordering::SeqCst);
        Ok(())
    }

    /// Takes every page in flight as it settles, recording them in order up to the first that
    /// failed (or that landed on a broker which lost data); the rest are left to settle.
    async fn settle_all(
        &self,
        lock: &mut PgConnection,
        pipeline: &mut Pipeline,
        state: &mut RelayState,
        unsaved: &mut Unsaved,
    ) -> Result<(), RelayError> {
        while let Some(Settled { next, events, outcome }) = self.fenced(lock, pipeline.next_settled()).await? {
            match outcome {
                Ok(published) if state.lost_by(&published.delivered).is_none() => {
                    state.record(&published.delivered, next, pipeline.is_empty());
                    unsaved.add(events, published.dead_letters, &self.config.name);
                }
                _ => {
                    self.fenced(lock, pipeline.drain()).await?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// After a page failed: drops the producer with what it still holds, lets every page in
    /// flight settle without recording it, saves what was acknowledged before the failure,
    /// backs off, re-creates missing topics and starts a fresh producer. Publishing then
    /// resumes from the checkpoint. `false` on shutdown.
    #[allow(clippy::too_many_arguments)]
    async fn recover(
        &self,
        lock: &mut PgConnection,
        producing: &mut Producing,
        state: &mut RelayState,
        pipeline: &mut Pipeline,
        unsaved: &mut Unsaved,
        backoff: &mut Backoff,
        failed: PublishError,
        shutdown: &Shutdown,
    ) -> Result<bool, RelayError> {
        let cfg = &self.config;
        metrics::counter!("ordo_relay_publish_errors_total").increment(1);
        tracing::warn!(relay = %cfg.name, error = %failed, position = state.cursor.position,
            "publish failed, publishing again from the checkpoint");
        producing.renew(cfg)?;
        self.fenced(lock, pipeline.drain()).await?;
        state.burst.clear();
        self.save(lock, state, unsaved).await?;
        record_lag(&self.store, state.cursor).await;
        tokio::select! {
            () = self.fenced_sleep(lock, backoff.next()) => {}
            () = shutdown.wait() => return Ok(false),
        }
        // The broker may have come back empty: re-create topics, rebuild the producer.
        let created = self.fenced(lock, kafka::create_missing_topics(&cfg.brokers, cfg.partitions)).await?;
        producing.renew(cfg)?;
        let created = created.unwrap_or_else(|e| {
            tracing::warn!(relay = %cfg.name, error = %e, "cannot ensure topics");
            Vec::new()
        });
        if let Some(reason) = state.recreated(&created) {
            *state = self.new_incarnation(lock, &reason).await?;
        }
        Ok(true)
    }
}

impl Unsaved {
    fn add(&mut self, events: u64, dead_letters: Vec<DeadLetter>, relay: &str) {
        for d in &dead_letters {
            tracing::error!(relay = %relay, position = d.position, stream = %d.stream_id, version = d.version,
                error = %d.error, "stored event metadata does not decode: published with substitute metadata, dead-lettered");
        }
        metrics::counter!("ordo_relay_dead_letters_total").increment(dead_letters.len() as u64);
        self.events += events;
        self.dead_letters.extend(dead_letters);
        self.since.get_or_insert_with(Instant::now);
    }

    fn is_due(&self, interval: Duration) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= interval)
    }
}

/// The next notification of the log (`true`), a lost listener (`false`), or, without a
/// listener, `true` after `poll` (the fallback).
async fn recv(listener: Option<&mut sqlx::postgres::PgListener>, poll: Duration) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => {
            tokio::time::sleep(poll).await;
            true
        }
    }
}
