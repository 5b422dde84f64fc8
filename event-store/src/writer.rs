//! Group commit: one writer task per [`crate::EventStore`] appends whatever is queued in one
//! statement and one transaction, on a connection it owns, and answers every request on its own.
//!
//! There is no timer: the writer takes what has queued up while the previous batch committed,
//! so a batch is one request when the log is quiet and grows with the load (the adaptive group
//! commit of KurrentDB's writer). Requests that reuse an idempotency key or a unique claim of an
//! earlier request in the same batch wait for the next batch, where they see its outcome.
//!
//! A batch that fails on its data (a value Postgres refuses) is retried one request at a time, so
//! the bad request fails alone. A wait for the writer lock longer than `lock_timeout` answers
//! [`AppendError::Unavailable`] and logs the session that holds the lock.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::append::{append_batch, Answer};
use crate::checked::{self, Known};
use crate::error::{sqlstate, sqlstate_of, AppendError, StoreError};
use crate::types::{AppendRequest, UniqueClaim};

/// How the writer batches and how long it waits for the writer lock.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Longest wait for the writer lock before a batch is refused as
    /// [`AppendError::Unavailable`] (default 3 s).
    pub lock_timeout: Duration,
    /// Most requests in one batch (default 1,000).
    pub max_requests: usize,
    /// Most events in one batch (default 4,000); a single larger request still goes alone.
    pub max_events: usize,
    /// Requests waiting for the writer before new ones wait to be queued (default 10,000).
    pub queue: usize,
    /// Decide every batch in the database (`ordo_append_batch`) instead of in the writer on the
    /// stream heads it knows, checked by the database (`ordo_append_checked`, ADR 0032). Off by
    /// default; for comparison.
    pub decide_in_database: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(3),
            max_requests: 1_000,
            max_events: 4_000,
            queue: 10_000,
            decide_in_database: false,
        }
    }
}

/// Requests queued together. In a chain each request depends on the one before it: they go into
/// one batch, and a refused link refuses every later one.
struct Job {
    requests: Vec<AppendRequest>,
    replies: Vec<oneshot::Sender<Answer>>,
    chained: bool,
}

impl Job {
    fn events(&self) -> usize {
        self.requests.iter().flat_map(|r| &r.appends).map(|a| a.events.len()).sum()
    }
}

/// The handle every clone of a store shares; the task stops when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the current runtime. It connects lazily.
    pub(crate) fn start(pool: PgPool, options: WriterOptions) -> Self {
        let (jobs, rx) = mpsc::channel(options.queue.max(1));
        tokio::spawn(run(pool, options, rx));
        Self { jobs }
    }

    /// Queues `requests` together (in one batch when `chained`, each depending on the one before)
    /// and waits for every answer.
    pub(crate) async fn submit(&self, requests: Vec<AppendRequest>, chained: bool) -> Vec<Answer> {
        let mut replies = Vec::with_capacity(requests.len());
        let mut answers = Vec::with_capacity(requests.len());
        for _ in &requests {
            let (reply, answer) = oneshot::channel();
            replies.push(reply);
            answers.push(answer);
        }
        let n = requests.len();
        if self.jobs.send(Job { requests, replies, chained }).await.is_err() {
            return (0..n).map(|_| Err(stopped())).collect();
        }
        let mut out = Vec::with_capacity(n);
        for answer in answers {
            out.push(answer.await.unwrap_or_else(|_| Err(stopped())));
        }
        out
    }
}

/// The answer to a link of a chain whose earlier link was refused.
pub(crate) fn chain_broken(request: &AppendRequest) -> AppendError {
    match request.appends.first() {
        Some(a) => AppendError::Conflict { stream: a.stream, expected: a.expected, actual: -1 },
        None => AppendError::Invalid("an append needs a stream"),
    }
}

fn stopped() -> AppendError {
    AppendError::Unavailable("the writer stopped".into())
}

async fn run(pool: PgPool, options: WriterOptions, mut rx: mpsc::Receiver<Job>) {
    let mut conn: Option<PgConnection> = None;
    let mut known = Known::default();
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        // The answers just sent woke their callers on this thread; let them run first, so those
        // that append again join this batch instead of waiting for the next one.
        tokio::task::yield_now().await;
        let mut batch: Vec<Job> = Vec::new();
        let mut events = 0usize;
        let fits = |batch: &Vec<Job>, events: usize| {
            batch.iter().map(|j| j.requests.len()).sum::<usize>() < options.max_requests && events < options.max_events
        };
        while fits(&batch, events) {
            let Some(job) = deferred.pop_front() else { break };
            events += job.events();
            batch.push(job);
        }
        if batch.is_empty() {
            match rx.recv().await {
                Some(job) => {
                    events += job.events();
                    batch.push(job);
                }
                None => break,
            }
        }
        while fits(&batch, events) {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.events();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let (now, later) = split_repeats(batch);
        deferred.extend(later);
        execute(&pool, &options, &mut conn, &mut known, now).await;
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

/// Moves jobs with a request whose idempotency key or claim an earlier request of the batch also
/// uses to the next batch, so each sees the other's outcome in the log.
fn split_repeats(batch: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let mut keys: HashSet<(String, String)> = HashSet::new();
    let mut claims: HashSet<UniqueClaim> = HashSet::new();
    let (mut now, mut later) = (Vec::new(), Vec::new());
    for job in batch {
        let job_keys: Vec<(String, String)> = job
            .requests
            .iter()
            .filter_map(|r| r.idempotency.as_ref())
            .map(|i| (i.scope.clone(), i.key.clone()))
            .collect();
        let job_claims: Vec<UniqueClaim> = job.requests.iter().filter_map(|r| r.claim.clone()).collect();
        let unique_within = job_keys.iter().collect::<HashSet<_>>().len() == job_keys.len()
            && job_claims.iter().collect::<HashSet<_>>().len() == job_claims.len();
        let repeats = job_keys.iter().any(|k| keys.contains(k)) || job_claims.iter().any(|c| claims.contains(c));
        if repeats || (!unique_within && !now.is_empty()) {
            later.push(job);
        } else {
            keys.extend(job_keys);
            claims.extend(job_claims);
            now.push(job);
        }
    }
    (now, later)
}

/// The requests of a batch in order, with the 1-based index of the request each one depends on.
fn layout(batch: &[Job]) -> (Vec<&AppendRequest>, Vec<i32>) {
    let mut requests = Vec::new();
    let mut after = Vec::new();
    for job in batch {
        for (i, r) in job.requests.iter().enumerate() {
            let previous = i32::try_from(requests.len()).unwrap_or(i32::MAX);
            after.push(if job.chained && i > 0 { previous } else { 0 });
            requests.push(r);
        }
    }
    (requests, after)
}

async fn execute(
    pool: &PgPool,
    options: &WriterOptions,
    conn: &mut Option<PgConnection>,
    known: &mut Known,
    batch: Vec<Job>,
) {
    if batch.is_empty() {
        return;
    }
    let started = Instant::now();
    let c = match connection(pool, options, conn).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "event log writer cannot connect");
            for job in batch {
                for reply in job.replies {
                    let _ = reply.send(Err(AppendError::Store(StoreError::Database(clone_error(&e)))));
                }
            }
            // Not a busy loop while the database is away.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let (requests, after) = layout(&batch);
    let decided_here =
        if options.decide_in_database { Ok(None) } else { checked::append(&mut *c, known, &requests, &after).await };
    let result = match decided_here {
        Ok(Some(answers)) => Ok(answers),
        // Not settled in a few tries (several writers on the same streams): the database decides,
        // and the heads it leaves are learnt again on the next batch.
        Ok(None) => {
            metrics::counter!("ordo_append_left_to_database_total").increment(1);
            known.forget();
            append_batch(&mut *c, &requests, &after).await
        }
        Err(e) => {
            known.forget();
            Err(e)
        }
    };
    metrics::histogram!("ordo_append_batch_requests").record(requests.len() as f64);
    metrics::histogram!("ordo_append_batch_seconds").record(started.elapsed().as_secs_f64());
    let size = requests.len();
    match result {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            for job in batch {
                for reply in job.replies {
                    let _ = reply.send(answers.next().unwrap_or_else(|| Err(stopped())));
                }
            }
        }
        Err(e) if is_data_error(&e) && size > 1 => {
            tracing::warn!(error = %e, requests = size, "append batch refused on data, appending one by one");
            for job in batch {
                let mut refused = false;
                for (request, reply) in job.requests.iter().zip(job.replies) {
                    // A link after a refused one was decided on a state that did not happen.
                    let answer = if refused {
                        Err(chain_broken(request))
                    } else {
                        match append_batch(&mut *c, &[request], &[0]).await {
                            Ok(mut answers) => answers.pop().unwrap_or_else(|| Err(stopped())),
                            Err(e) => Err(failure(pool, e).await),
                        }
                    };
                    refused = job.chained && answer.is_err();
                    let _ = reply.send(answer);
                }
            }
        }
        Err(e) => {
            if is_connection_error(&e) {
                *conn = None;
            }
            let error = failure(pool, e).await;
            for job in batch {
                for reply in job.replies {
                    let _ = reply.send(Err(copy_error(&error)));
                }
            }
        }
    }
}

/// The writer's own connection, opened on first use and after a failure.
async fn connection<'c>(
    pool: &PgPool,
    options: &WriterOptions,
    conn: &'c mut Option<PgConnection>,
) -> Result<&'c mut PgConnection, sqlx::Error> {
    if conn.is_none() {
        let mut c = (*pool.connect_options()).clone().application_name("ordo-writer").connect().await?;
        // Every append is acknowledged only once it is durable, even where the role's or the
        // database's default is `synchronous_commit = off`.
        sqlx::query("SELECT set_config('lock_timeout', $1, false), set_config('synchronous_commit', 'on', false)")
            .bind(format!("{}ms", options.lock_timeout.as_millis().max(1)))
            .execute(&mut c)
            .await?;
        *conn = Some(c);
    }
    conn.as_mut().ok_or(sqlx::Error::PoolClosed)
}

/// What a failed statement means for its requests; a lock wait that timed out names the session
/// holding the writer lock in the log.
async fn failure(pool: &PgPool, e: sqlx::Error) -> AppendError {
    let code = sqlstate_of(&e);
    if matches!(code.as_deref(), Some(sqlstate::LOCK_NOT_AVAILABLE | sqlstate::QUERY_CANCELED)) {
        metrics::counter!("ordo_append_lock_timeouts_total").increment(1);
        match crate::read::writer_lock_holder(pool).await {
            Ok(Some(h)) => tracing::warn!(pid = h.pid, application = %h.application_name, state = %h.state,
                held_seconds = h.held_seconds, "append waited too long for the writer lock"),
            _ => tracing::warn!(error = %e, "append waited too long for the writer lock"),
        }
        return AppendError::Unavailable("the writer lock is held by another session".into());
    }
    AppendError::Store(StoreError::Database(e))
}

fn copy_error(e: &AppendError) -> AppendError {
    match e {
        AppendError::Unavailable(why) => AppendError::Unavailable(why.clone()),
        AppendError::Store(StoreError::Database(d)) => AppendError::Store(StoreError::Database(clone_error(d))),
        other => AppendError::Store(StoreError::Corrupt(other.to_string())),
    }
}

/// sqlx errors are not `Clone`; every request of a failed batch gets the same error as text.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Data exceptions and integrity violations: a request, not the database, is at fault.
fn is_data_error(e: &sqlx::Error) -> bool {
    sqlstate_of(e).is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed)
        || sqlstate_of(e).is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
}
