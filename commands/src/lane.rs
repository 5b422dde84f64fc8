//! Lanes: one per stream this process writes, holding the stream's folded state (trusted, not
//! re-read per command) and the commands waiting for it.
//!
//! Commands queued for one stream are decided one after another on the in-memory state, each on
//! the state the earlier ones leave, and their appends go to the writer together, each expecting
//! the version the previous one creates (the first one also the cached head hash). Answers are
//! taken in order:
//! - an append that succeeded moves the folded state forward;
//! - the first one refused breaks the chain: every command after it (also one decided as a
//!   rejection or a no-op, since its decision saw a state that did not happen) is decided again
//!   in the next round, after the state was refreshed from the log when it was stale.
//!
//! So nothing is appended on a state that did not happen, a cache made stale by another process
//! shows up as a conflict that reloads, and commands without `If-Match` never see a race.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ordo_domain::Aggregate;
use ordo_event_store::{
    AppendError, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend, UniqueClaim,
};
use ordo_schemas::{EventMetadata, StreamCategory, StreamRef};
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use crate::replayed;
use crate::snapshot::{self, Snapshot};
use crate::types::{CommandContext, CommandError, CommandOutcome, RetryPolicy};

/// Checks the actor's rights on the state a command is decided on.
pub(crate) type Guard<A> = Box<dyn Fn(&A) -> Result<(), CommandError> + Send + Sync>;

type Reply = oneshot::Sender<Result<CommandOutcome, CommandError>>;

/// A stream folded into its aggregate: the state, the version it reflects and the hash of the
/// last event (`None` before the first).
#[derive(Debug, Clone)]
pub(crate) struct Folded<A> {
    pub state: A,
    pub version: i64,
    pub head: Option<[u8; 32]>,
    /// Read from the log since the last round: a refusal decided on it needs no check.
    pub fresh: bool,
}

impl<A: Default> Folded<A> {
    fn empty() -> Self {
        Self { state: A::default(), version: 0, head: None, fresh: false }
    }
}

/// One command waiting in a lane.
pub(crate) struct Job<A: Aggregate> {
    name: &'static str,
    command: A::Command,
    guard: Guard<A>,
    ctx: CommandContext,
    claim: Option<UniqueClaim>,
    retries: u32,
    reply: Reply,
    /// The caller's span: the append of a round is traced under its first command's.
    span: tracing::Span,
}

/// Where a job's answer arrives.
pub(crate) type Answer = oneshot::Receiver<Result<CommandOutcome, CommandError>>;

impl<A: Aggregate> Job<A> {
    pub(crate) fn new(
        name: &'static str,
        command: A::Command,
        guard: Guard<A>,
        ctx: CommandContext,
        claim: Option<UniqueClaim>,
    ) -> (Self, Answer) {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        (Self { name, command, guard, ctx, claim, retries: 0, reply, span }, answer)
    }
}

/// What a lane needs from the service.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub store: EventStore,
    pub retry: RetryPolicy,
}

/// The lane of one stream.
pub(crate) struct Lane<A: Aggregate> {
    stream: StreamRef,
    queue: Mutex<VecDeque<Job<A>>>,
    state: tokio::sync::Mutex<Option<Folded<A>>>,
}

/// A decision taken in a round, with the version of the state it saw.
struct Decided<A: Aggregate> {
    saw: i64,
    result: Result<Vec<A::Event>, CommandError>,
}

impl<A> Lane<A>
where
    A: Snapshot + Send + Sync + 'static,
    A::Command: Send + Sync + 'static,
    A::Event: Send + Sync,
{
    fn new(stream: StreamRef) -> Self {
        Self { stream, queue: Mutex::new(VecDeque::new()), state: tokio::sync::Mutex::new(None) }
    }

    /// Queues `job` and waits for its answer. The lane is drained by a task of its own, so a
    /// caller that goes away never strands the commands queued behind it.
    pub(crate) async fn run(
        self: &Arc<Self>,
        env: &Env,
        job: Job<A>,
        answer: Answer,
    ) -> Result<CommandOutcome, CommandError> {
        self.push(job);
        tokio::spawn(self.clone().pump(env.clone()));
        answer.await.unwrap_or_else(|_| Err(StoreError::Corrupt("the command was dropped".into()).into()))
    }

    fn push(&self, job: Job<A>) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(job);
        }
    }

    /// The queued jobs, except a repeat of an idempotency key already in the round (it waits
    /// for the next round, where it finds the first one's answer).
    fn take_round(&self) -> Vec<Job<A>> {
        let Ok(mut q) = self.queue.lock() else { return Vec::new() };
        let mut keys = std::collections::HashSet::new();
        let mut round = Vec::with_capacity(q.len());
        let mut later = VecDeque::new();
        for job in q.drain(..) {
            let repeat = job.ctx.idempotency.as_ref().is_some_and(|k| !keys.insert((k.scope.clone(), k.key.clone())));
            if repeat {
                later.push_back(job);
            } else {
                round.push(job);
            }
        }
        *q = later;
        round
    }

    fn queue_is_empty(&self) -> bool {
        self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
    }

    /// Drains the queue round by round while this task holds the state; another task holding
    /// it drains what was queued meanwhile.
    async fn pump(self: Arc<Self>, env: Env) {
        loop {
            let Ok(mut state) = self.state.try_lock() else { return };
            loop {
                let jobs = self.take_round();
                if jobs.is_empty() {
                    break;
                }
                let again = self.round(&env, &mut state, jobs).await;
                if let Some((again, retries)) = again {
                    if let Ok(mut q) = self.queue.lock() {
                        for job in again.into_iter().rev() {
                            q.push_front(job);
                        }
                    }
                    if retries > 0 {
                        tokio::time::sleep(env.retry.delay(retries)).await;
                    }
                }
            }
            drop(state);
            // A command queued between the last round and the unlock found the state taken.
            if self.queue_is_empty() {
                return;
            }
        }
    }

    /// The current state, refreshed from the log (the saga and command preparation read other
    /// streams this way). Commands queued meanwhile are drained afterwards.
    pub(crate) async fn fresh(self: &Arc<Self>, env: &Env) -> Result<Folded<A>, CommandError> {
        let mut state = self.state.lock().await;
        let result = match state.as_mut() {
            Some(folded) => refresh(&env.store, self.stream, folded).await.map(|()| folded.clone()),
            None => load(&env.store, self.stream).await.map(|folded| state.insert(folded).clone()),
        };
        if let Some(folded) = state.as_mut() {
            folded.fresh = true;
        }
        if result.is_err() {
            *state = None;
        }
        drop(state);
        if !self.queue_is_empty() {
            tokio::spawn(self.clone().pump(env.clone()));
        }
        result
    }

    /// Decides `jobs` in order, appends them together and answers each; returns the commands to
    /// decide again (with the retry count to back off by).
    async fn round(&self, env: &Env, slot: &mut Option<Folded<A>>, jobs: Vec<Job<A>>) -> Option<(Vec<Job<A>>, u32)> {
        let stale =
            slot.as_ref().is_none_or(|f| jobs.iter().any(|j| j.ctx.expected_version.is_some_and(|e| e != f.version)));
        if stale {
            let refreshed = match slot.as_mut() {
                Some(folded) => refresh(&env.store, self.stream, folded).await,
                None => load(&env.store, self.stream).await.map(|f| {
                    *slot = Some(f);
                }),
            };
            if let Err(e) = refreshed {
                *slot = None;
                for job in jobs {
                    let _ = job.reply.send(Err(copy(&e)));
                }
                return None;
            }
        }
        let folded = slot.as_mut()?;
        let fresh = stale || std::mem::take(&mut folded.fresh);

        let decided = decide_all(folded, &jobs);
        let requests = self.requests(folded, &jobs, &decided);
        let span = jobs.first().map_or_else(tracing::Span::none, |j| j.span.clone());
        let answers = env.store.submit_chain(requests).instrument(span).await;
        // The first append states the cached version and head hash: when it lands, the state
        // the round decided on was the log's. Otherwise a refusal or a no-op decided on a state
        // that may be stale (another process wrote) is checked against the log first.
        let verified = fresh || answers.first().is_some_and(Result::is_ok);
        let mut answers = answers.into_iter();

        let mut again: Vec<Job<A>> = Vec::new();
        let mut recheck: Vec<Job<A>> = Vec::new();
        let mut broken: Option<Broken> = None;
        for (job, d) in jobs.into_iter().zip(decided) {
            match broken {
                Some(Broken::Unavailable(ref why)) => {
                    let _ = job.reply.send(Err(CommandError::Unavailable(why.clone())));
                    continue;
                }
                Some(_) => {
                    // Refused by the log as a link after a refused one (its answer is consumed).
                    if matches!(&d.result, Ok(events) if !events.is_empty()) {
                        let _ = answers.next();
                    }
                    again.push(job);
                    continue;
                }
                None => {}
            }
            let appends = matches!(&d.result, Ok(events) if !events.is_empty());
            if !appends && !verified {
                recheck.push(job);
                continue;
            }
            let events = match d.result {
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
                Ok(events) if events.is_empty() => {
                    let _ = job.reply.send(Ok(outcome(self.stream, d.saw, 0, job.retries)));
                    continue;
                }
                Ok(events) => events,
            };
            let answer = answers.next().unwrap_or(Err(AppendError::Invalid("no answer")));
            match answer {
                Ok(streams) => {
                    let before = folded.version;
                    for e in &events {
                        folded.state.evolve(e);
                    }
                    if let Some(s) = streams.first() {
                        folded.version = s.version;
                        folded.head = s.head_hash.as_slice().try_into().ok();
                    }
                    if snapshot::due(before, folded.version) {
                        snapshot::save(&env.store, self.stream, folded);
                    }
                    let _ = job.reply.send(Ok(outcome(self.stream, folded.version, events.len(), job.retries)));
                }
                Err(AppendError::Conflict { actual, .. }) => {
                    metrics::counter!("ordo_append_conflicts_total").increment(1);
                    // At the cached version but another head: the cache saw another history.
                    broken = Some(if actual == folded.version { Broken::Unknown } else { Broken::Stale });
                    again.push(job);
                }
                Err(e) => {
                    broken = Some(match &e {
                        AppendError::Unavailable(why) => Broken::Unavailable(why.clone()),
                        AppendError::Store(_) | AppendError::Invalid(_) => Broken::Unknown,
                        _ => Broken::Refused,
                    });
                    let answer = refused(self.stream, &job, e);
                    let _ = job.reply.send(answer);
                }
            }
        }
        if !recheck.is_empty() && broken.is_none() {
            broken = Some(Broken::Stale);
        }

        let reset = match broken {
            // The log moved (or may have moved) under the cached state: catch up before deciding
            // again.
            Some(Broken::Stale) => {
                let failed = refresh(&env.store, self.stream, folded).await.is_err();
                folded.fresh = !failed;
                failed
            }
            // The outcome of an append is unknown: start over from the log.
            Some(Broken::Unknown) => true,
            _ => false,
        };
        if reset {
            *slot = None;
        }
        let mut retries = 0;
        for job in &mut again {
            job.retries += 1;
            retries = retries.max(job.retries);
        }
        let mut kept: Vec<Job<A>> = Vec::with_capacity(again.len() + recheck.len());
        for job in again {
            if job.retries > env.retry.max_retries {
                let _ = job.reply.send(Err(CommandError::Contention { retries: job.retries - 1 }));
            } else {
                metrics::counter!("ordo_command_retries_total", "command" => job.name).increment(1);
                kept.push(job);
            }
        }
        // Checked again on the refreshed state; not a lost race, so not a retry.
        kept.extend(recheck);
        (!kept.is_empty()).then_some((kept, retries))
    }

    /// One append request per command that decided on events, chained on the versions the
    /// earlier ones create; the first states the cached head hash as well.
    fn requests(&self, folded: &Folded<A>, jobs: &[Job<A>], decided: &[Decided<A>]) -> Vec<AppendRequest> {
        let mut requests = Vec::new();
        let mut version = folded.version;
        for (job, d) in jobs.iter().zip(decided) {
            let Ok(events) = &d.result else { continue };
            if events.is_empty() {
                continue;
            }
            let expected = if requests.is_empty() {
                ExpectedVersion::Head { version, hash: folded.head }
            } else {
                ExpectedVersion::Exact(version)
            };
            let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
            let after = version + count;
            requests.push(AppendRequest {
                appends: vec![StreamAppend {
                    stream: self.stream,
                    expected,
                    events: events.iter().map(|e| NewEvent::from_domain(e, metadata(&job.ctx))).collect(),
                }],
                idempotency: job.ctx.idempotency.as_ref().map(|k| k.record(self.stream, after)),
                claim: job.claim.clone(),
            });
            version = after;
        }
        requests
    }
}

/// Why a round's chain of appends broke.
enum Broken {
    /// A conflict: the cached state is behind the log.
    Stale,
    /// The log could not take appends in time.
    Unavailable(String),
    /// A request was refused for its own reasons (a taken key or claim).
    Refused,
    /// An append failed in a way that leaves its outcome unknown.
    Unknown,
}

/// Decides every job on the state the earlier ones leave. The state is cloned only when a
/// decision with events is followed by another command.
fn decide_all<A: Aggregate>(folded: &Folded<A>, jobs: &[Job<A>]) -> Vec<Decided<A>> {
    let mut work: Option<A> = None;
    let mut version = folded.version;
    let mut decided = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let state = work.as_ref().unwrap_or(&folded.state);
        let saw = version;
        let result = decide_one(job, state, version);
        if let Ok(events) = &result {
            if !events.is_empty() {
                if i + 1 < jobs.len() {
                    let w = work.get_or_insert_with(|| folded.state.clone());
                    for e in events {
                        w.evolve(e);
                    }
                }
                version += i64::try_from(events.len()).unwrap_or(i64::MAX);
            }
        }
        decided.push(Decided { saw, result });
    }
    decided
}

fn decide_one<A: Aggregate>(job: &Job<A>, state: &A, version: i64) -> Result<Vec<A::Event>, CommandError> {
    if let Some(expected) = job.ctx.expected_version {
        if expected != version {
            return Err(CommandError::VersionConflict { expected, actual: version });
        }
    }
    (job.guard)(state)?;
    Ok(state.decide(&job.command)?)
}

/// The answer to a command whose append the log refused for a reason of its own.
fn refused<A: Aggregate>(stream: StreamRef, job: &Job<A>, e: AppendError) -> Result<CommandOutcome, CommandError> {
    match e {
        AppendError::IdempotencyKeyTaken { stored: Some(stored), .. } => match &job.ctx.idempotency {
            Some(key) if key.request_hash == stored.request_hash => Ok(replayed(stream, *stored)),
            _ => Err(CommandError::IdempotencyKeyReused),
        },
        AppendError::ClaimTaken { value, .. } => {
            let sku = value.split_once(':').map_or(value.as_str(), |(_, sku)| sku);
            Err(CommandError::Domain(ordo_domain::DomainError::AlreadyExists(format!(
                "sku {sku} is already listed by this merchant"
            ))))
        }
        AppendError::SubjectErased(_) => Err(CommandError::Domain(ordo_domain::DomainError::InvalidState(
            "the customer's personal data was erased".into(),
        ))),
        AppendError::Unavailable(why) => Err(CommandError::Unavailable(why)),
        AppendError::Store(e) => Err(e.into()),
        other => Err(StoreError::Corrupt(format!("append refused: {other}")).into()),
    }
}

fn outcome(stream: StreamRef, version: i64, events: usize, retries: u32) -> CommandOutcome {
    CommandOutcome { stream, version, events, retries, replayed: None }
}

/// The error of a failed load for every command waiting on it (`CommandError` is not `Clone`):
/// an exhausted connection pool stays one, so each can answer 503; anything else becomes text.
fn copy(e: &CommandError) -> CommandError {
    match e {
        CommandError::Store(StoreError::Database(sqlx::Error::PoolTimedOut)) => {
            StoreError::Database(sqlx::Error::PoolTimedOut).into()
        }
        other => StoreError::Corrupt(other.to_string()).into(),
    }
}

/// Metadata of one new event: a fresh event id, the rest from the context.
fn metadata(ctx: &CommandContext) -> EventMetadata {
    EventMetadata {
        event_id: Uuid::now_v7(),
        correlation_id: ctx.correlation_id,
        causation_id: ctx.causation_id,
        actor: ctx.actor,
        traceparent: ctx.traceparent.clone(),
        tracestate: ctx.tracestate.clone(),
    }
}

/// Reads a stream (from its latest snapshot, if one matches the log) and folds it; a long fold
/// leaves a snapshot for the next cold load.
async fn load<A: Snapshot>(store: &EventStore, stream: StreamRef) -> Result<Folded<A>, CommandError> {
    let mut folded = match snapshot::latest::<A>(store, stream).await {
        Some(f) => f,
        None => Folded::empty(),
    };
    let from = folded.version;
    refresh(store, stream, &mut folded).await?;
    if snapshot::due(from, folded.version) {
        snapshot::save(store, stream, &folded);
    }
    Ok(folded)
}

/// Events read per query when folding a stream (bounds memory on long streams).
const PAGE: i64 = 5_000;

/// Folds what was appended after `folded.version`, a page at a time. A stream whose history does
/// not continue from the cached head (another history, as after a restore) is folded again from
/// the start.
async fn refresh<A: Aggregate>(
    store: &EventStore,
    stream: StreamRef,
    folded: &mut Folded<A>,
) -> Result<(), CommandError> {
    let mut first_page = true;
    loop {
        let from = folded.version + 1;
        let mut recorded = store.read_stream_range(stream, from, from + PAGE - 1).await?;
        // A customer's address is the default of an order's: a customer is loaded in clear.
        if stream.category == StreamCategory::Customer {
            store.personal().reveal_recorded(&mut recorded).await?;
        }
        if first_page {
            first_page = false;
            let continues = match recorded.first() {
                Some(first) => first.prev_hash.as_deref() == folded.head.as_ref().map(|h| h.as_slice()),
                None => folded.version == 0 || store.stream_version(stream).await? >= folded.version,
            };
            if !continues {
                tracing::warn!(stream = %stream, version = folded.version, "cached state does not continue the log, reloading");
                *folded = Folded::empty();
                continue;
            }
        }
        fold(folded, &recorded)?;
        if (recorded.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

fn fold<A: Aggregate>(
    folded: &mut Folded<A>,
    recorded: &[ordo_event_store::RecordedEvent],
) -> Result<(), CommandError> {
    for r in recorded {
        let event = r
            .decode::<A::Event>()
            .map_err(|e| StoreError::Corrupt(format!("event {} of {} does not decode: {e}", r.version, r.stream)))?;
        folded.state.evolve(&event);
        folded.version = r.version;
        folded.head = r.hash.as_slice().try_into().ok();
    }
    Ok(())
}

/// The lanes of the streams this process wrote or read lately, at most `capacity` of them: the
/// least recently used are dropped first (a dropped lane is only a cold cache).
#[derive(Clone)]
pub(crate) struct Lanes {
    inner: Arc<Mutex<LaneMap>>,
}

struct LaneMap {
    lanes: HashMap<StreamRef, (u64, Arc<dyn Any + Send + Sync>)>,
    tick: u64,
    capacity: usize,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.lock().map(|m| m.lanes.len()).unwrap_or_default();
        f.debug_struct("Lanes").field("lanes", &n).finish()
    }
}

impl Lanes {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { inner: Arc::new(Mutex::new(LaneMap { lanes: HashMap::new(), tick: 0, capacity: capacity.max(1) })) }
    }

    /// The lane of `stream`, created when missing.
    pub(crate) fn lane<A>(&self, stream: StreamRef) -> Arc<Lane<A>>
    where
        A: Snapshot + Send + Sync + 'static,
        A::Command: Send + Sync + 'static,
        A::Event: Send + Sync,
    {
        let Ok(mut map) = self.inner.lock() else { return Arc::new(Lane::new(stream)) };
        map.tick += 1;
        let tick = map.tick;
        if let Some((used, lane)) = map.lanes.get_mut(&stream) {
            *used = tick;
            if let Ok(lane) = lane.clone().downcast::<Lane<A>>() {
                return lane;
            }
        }
        let lane = Arc::new(Lane::<A>::new(stream));
        map.lanes.insert(stream, (tick, lane.clone()));
        if map.lanes.len() > map.capacity {
            map.evict();
        }
        lane
    }
}

impl LaneMap {
    /// Drops the least recently used tenth.
    fn evict(&mut self) {
        let mut ticks: Vec<u64> = self.lanes.values().map(|(t, _)| *t).collect();
        let keep_from = ticks.len() / 10;
        let (_, cut, _) = ticks.select_nth_unstable(keep_from);
        let cut = *cut;
        self.lanes.retain(|_, (t, _)| *t >= cut);
    }
}
