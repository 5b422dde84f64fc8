//! One reader of the log per process, fanned out to every live subscriber.
//!
//! The feed polls [`EventStore::read_all`] (the commit-safe reader) from its head and broadcasts
//! each page as a [`Batch`] covering the cursor range `(from, to]`, each event serialised once.
//! A subscription starts from the beginning, a cursor or the feed's head. It reads the database
//! on its own cursor until it has caught up, then follows the broadcast; a batch that starts
//! after its cursor (it fell behind, or the broadcast buffer dropped batches it had not taken)
//! sends it back to the database from its cursor. Every event is delivered once, in log order,
//! because both sources are the same ordered log and the subscription only moves its cursor
//! forward.
//!
//! Memory per subscriber is one page (or one batch's matching events) plus its place in the
//! broadcast ring, whose size is fixed per process. The subscription is a pull stream: the next
//! event is produced only when the client took the previous one, so a slow client is paced and
//! never buffered without limit; when it falls out of the ring it reads the database instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use ordo_event_store::{EventStore, LogCursor, RecordedEvent, StoreError};
use ordo_schemas::StreamCategory;
use ordo_service::shutdown::Shutdown;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::personal::{holds_sealed, reveal_events, PersonalView};

/// How the feed reads and fans out.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Pause between reads when the previous read found nothing new.
    pub poll: Duration,
    /// Events per read, for the shared reader and for catch-up.
    pub page: i64,
    /// Batches the broadcast ring keeps for subscribers that are a little behind.
    pub buffer: usize,
    /// Subscribers served at once; more are refused.
    pub max_subscribers: usize,
    /// Shortest time between two position-only messages of a filtered subscription.
    pub progress_every: Duration,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            page: 500,
            buffer: 64,
            max_subscribers: 256,
            progress_every: Duration::from_secs(1),
        }
    }
}

/// One event as subscribers receive it: its cursor, what filters look at, and its envelope as
/// JSON, serialised once for every subscriber: with personal fields revealed (in clear while the
/// key exists, `null` once erased) and, when that differs, as stored.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub cursor: LogCursor,
    pub category: StreamCategory,
    pub stream_id: Uuid,
    pub event_type: String,
    pub json: Arc<str>,
    /// The envelope as stored (sealed personal fields, as the hash covers them) when it differs
    /// from `json`.
    pub stored_json: Option<Arc<str>>,
}

impl FeedEvent {
    fn from_recorded(e: &RecordedEvent, stored_json: Option<Arc<str>>) -> Result<Self, StoreError> {
        Ok(Self {
            cursor: LogCursor::after(e),
            category: e.stream.category,
            stream_id: e.stream.id,
            event_type: e.event_type.clone(),
            json: envelope_json(e)?,
            stored_json,
        })
    }

    /// The envelope with personal fields revealed, or as stored.
    pub fn json_as(&self, view: PersonalView) -> &Arc<str> {
        match (view, &self.stored_json) {
            (PersonalView::Stored, Some(stored)) => stored,
            _ => &self.json,
        }
    }
}

fn envelope_json(e: &RecordedEvent) -> Result<Arc<str>, StoreError> {
    let envelope = e.to_envelope()?;
    serde_json::to_string(&envelope).map(Into::into).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// The events of `(from, to]`, in log order.
#[derive(Debug)]
struct Batch {
    from: LogCursor,
    to: LogCursor,
    events: Vec<FeedEvent>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    After(LogCursor),
    Now,
}

/// What a subscription wants; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub categories: Option<Vec<StreamCategory>>,
    pub types: Option<Vec<String>>,
    pub stream_id: Option<Uuid>,
}

impl Filter {
    fn matches(&self, e: &FeedEvent) -> bool {
        self.categories.as_ref().is_none_or(|c| c.contains(&e.category))
            && self.types.as_ref().is_none_or(|t| t.contains(&e.event_type))
            && self.stream_id.is_none_or(|id| id == e.stream_id)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    Event(FeedEvent),
    /// The subscription starts at `cursor` (its first item), or has passed it without a matching
    /// event: resuming from it skips nothing the filter wants.
    Progress(LogCursor),
}

/// Reads the feed did, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStats {
    /// Reads by the shared reader.
    pub shared_reads: u64,
    /// Reads by subscriptions catching up on their own cursor.
    pub catch_up_reads: u64,
    pub subscribers: usize,
}

/// Too many subscribers at once.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many log subscribers")]
pub struct Full;

/// The shared reader. Cheap to clone.
#[derive(Clone)]
pub struct LogFeed {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    options: FeedOptions,
    /// The cursor the last broadcast batch ended at; changed only together with a send.
    head: Mutex<LogCursor>,
    tx: broadcast::Sender<Arc<Batch>>,
    slots: Arc<Semaphore>,
    stop: Shutdown,
    shared_reads: AtomicU64,
    catch_up_reads: AtomicU64,
}

impl LogFeed {
    /// Starts the shared reader at the log's current head; it stops when `stop` fires, and every
    /// subscription ends with it.
    ///
    /// # Errors
    /// When the head cannot be read.
    pub async fn start(store: EventStore, options: FeedOptions, stop: Shutdown) -> Result<Self, StoreError> {
        let head = store.head_cursor().await?;
        let (tx, _) = broadcast::channel(options.buffer.max(1));
        let inner = Arc::new(Inner {
            store,
            options,
            head: Mutex::new(head),
            tx,
            slots: Arc::new(Semaphore::new(options.max_subscribers)),
            stop,
            shared_reads: AtomicU64::new(0),
            catch_up_reads: AtomicU64::new(0),
        });
        tokio::spawn(read_loop(inner.clone()));
        Ok(Self { inner })
    }

    pub fn stats(&self) -> FeedStats {
        FeedStats {
            shared_reads: self.inner.shared_reads.load(Ordering::Relaxed),
            catch_up_reads: self.inner.catch_up_reads.load(Ordering::Relaxed),
            subscribers: self.inner.options.max_subscribers - self.inner.slots.available_permits(),
        }
    }

    /// A subscription from `start`, yielding what `filter` matches.
    ///
    /// # Errors
    /// [`Full`] when the process already serves its maximum of subscribers.
    pub fn subscribe(&self, start: Start, filter: Filter) -> Result<impl Stream<Item = Item> + Send + 'static, Full> {
        let permit = self.inner.slots.clone().try_acquire_owned().map_err(|_| Full)?;
        let (rx, cursor, catching_up) = {
            let head = lock(&self.inner.head);
            let rx = self.inner.tx.subscribe();
            match start {
                Start::Now => (rx, *head, false),
                Start::Beginning => (rx, LogCursor::START, true),
                Start::After(c) => (rx, c, true),
            }
        };
        metrics::gauge!("ordo_query_log_subscribers").increment(1.0);
        let sub = Subscription {
            inner: self.inner.clone(),
            rx,
            cursor,
            catching_up,
            filter,
            pending: VecDeque::new(),
            // The first message names where the subscription starts, so a client that loses the
            // connection before any event resumes from there rather than from a later "now".
            announced: LogCursor::START,
            greeted: false,
            last_progress: Instant::now(),
            _slot: Slot(permit),
        };
        Ok(futures::stream::unfold(sub, |mut sub| async move { sub.next().await.map(|item| (item, sub)) }))
    }
}

fn lock(m: &Mutex<LogCursor>) -> std::sync::MutexGuard<'_, LogCursor> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared reader: one read per poll while anyone listens, the head only otherwise.
async fn read_loop(inner: Arc<Inner>) {
    let mut backoff = inner.options.poll;
    loop {
        let head = *lock(&inner.head);
        let mut full_page = false;
        if inner.tx.receiver_count() == 0 {
            match inner.store.head_cursor().await {
                Ok(h) => {
                    let mut current = lock(&inner.head);
                    if h > *current {
                        *current = h;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "log feed could not read the head"),
            }
        } else {
            inner.shared_reads.fetch_add(1, Ordering::Relaxed);
            match read_page(&inner.store, head, inner.options.page).await {
                Ok((events, next)) => {
                    full_page = events.len() as i64 >= inner.options.page;
                    if !events.is_empty() {
                        let batch = Arc::new(Batch { from: head, to: next, events });
                        let mut current = lock(&inner.head);
                        *current = next;
                        let _ = inner.tx.send(batch);
                    }
                    backoff = inner.options.poll;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "log feed read failed");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if full_page {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = inner.stop.wait() => return,
        }
    }
}

async fn read_page(
    store: &EventStore,
    cursor: LogCursor,
    page: i64,
) -> Result<(Vec<FeedEvent>, LogCursor), StoreError> {
    let (mut events, next) = store.read_all(cursor, page).await?;
    // Revealed once per page for every subscriber; the key is read now, so an erasure shows in
    // every page read after it.
    let stored =
        events.iter().map(|e| holds_sealed(e).then(|| envelope_json(e)).transpose()).collect::<Result<Vec<_>, _>>()?;
    reveal_events(store.personal(), &mut events).await?;
    let events =
        events.iter().zip(stored).map(|(e, s)| FeedEvent::from_recorded(e, s)).collect::<Result<Vec<_>, _>>()?;
    Ok((events, next))
}

/// Returns the subscriber slot and lowers the gauge when the subscription is dropped.
struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("ordo_query_log_subscribers").decrement(1.0);
    }
}

struct Subscription {
    inner: Arc<Inner>,
    rx: broadcast::Receiver<Arc<Batch>>,
    /// Everything up to here has been taken into `pending` or skipped by the filter.
    cursor: LogCursor,
    catching_up: bool,
    filter: Filter,
    pending: VecDeque<FeedEvent>,
    /// The last cursor the client was told about (event id or progress).
    announced: LogCursor,
    greeted: bool,
    last_progress: Instant,
    _slot: Slot,
}

impl Subscription {
    async fn next(&mut self) -> Option<Item> {
        loop {
            if self.inner.stop.is_triggered() {
                return None;
            }
            if !self.greeted {
                self.greeted = true;
                self.announced = self.cursor;
                return Some(Item::Progress(self.cursor));
            }
            if let Some(e) = self.pending.pop_front() {
                self.announced = e.cursor;
                return Some(Item::Event(e));
            }
            if self.announced < self.cursor && self.last_progress.elapsed() >= self.inner.options.progress_every {
                self.announced = self.cursor;
                self.last_progress = Instant::now();
                return Some(Item::Progress(self.cursor));
            }
            if self.catching_up {
                self.catch_up().await?;
            } else {
                self.follow().await?;
            }
        }
    }

    /// One page from the database on the subscription's own cursor.
    async fn catch_up(&mut self) -> Option<()> {
        self.inner.catch_up_reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ordo_query_log_catch_up_reads_total").increment(1);
        let page = self.inner.options.page;
        let read = tokio::select! {
            r = read_page(&self.inner.store, self.cursor, page) => r,
            () = self.inner.stop.wait() => return None,
        };
        match read {
            Ok((events, next)) => {
                if (events.len() as i64) < page {
                    self.catching_up = false;
                }
                self.take(events.into_iter(), next);
                Some(())
            }
            Err(e) => {
                // The database is away: end the stream; the client resumes from its last id.
                tracing::warn!(error = %e, "log subscription could not catch up");
                None
            }
        }
    }

    /// The next broadcast batch, or back to the database when one was missed.
    async fn follow(&mut self) -> Option<()> {
        // A filtered subscription that skipped events says so within `progress_every`.
        let due = (self.announced < self.cursor).then(|| self.last_progress + self.inner.options.progress_every);
        let progress_due = async move {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        let received = tokio::select! {
            r = self.rx.recv() => r,
            () = progress_due => return Some(()),
            () = self.inner.stop.wait() => return None,
        };
        match received {
            Ok(batch) if batch.to <= self.cursor => {}
            Ok(batch) if batch.from > self.cursor => self.catching_up = true,
            Ok(batch) => self.take(batch.events.iter().cloned(), batch.to),
            Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
        Some(())
    }

    /// Queues the events after the cursor that the filter wants and moves the cursor to `to`.
    fn take(&mut self, events: impl Iterator<Item = FeedEvent>, to: LogCursor) {
        let cursor = self.cursor;
        self.pending.extend(events.filter(|e| e.cursor > cursor && self.filter.matches(e)));
        self.cursor = self.cursor.max(to);
    }
}
