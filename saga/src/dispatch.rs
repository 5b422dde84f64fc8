//! The consuming loop: receives messages, hands each order's events to one handler at a time,
//! runs handlers of different orders concurrently and commits each partition at its contiguous
//! watermark.

use std::sync::Arc;
use std::time::Duration;

use ordo_event_store::kafka::{self, EventConsumer};
use ordo_schemas::EventEnvelope;
use ordo_service::shutdown::Shutdown;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::task::{JoinError, JoinSet};
use tracing::Instrument;
use uuid::Uuid;

use crate::offsets::Recorder;
use crate::queue::KeyedQueue;
use crate::watermark::{Ticket, Watermarks};
use crate::{OrderSaga, SagaConfig, SagaStatus};

/// Received messages the saga keeps track of per handler slot, handled ones waiting behind an
/// unfinished one of their partition included: beyond `concurrency` times this, it stops
/// receiving until the watermark moves, so one event retried for long bounds memory.
const UNCOMMITTED_PER_SLOT: usize = 64;

/// A topic and partition.
type Partition = (String, i32);

/// A received event of one order.
struct Work {
    ticket: Ticket<Partition>,
    order_id: Uuid,
    envelope: EventEnvelope,
}

/// What a handler task reports back.
struct Done {
    ticket: Ticket<Partition>,
    order_id: Uuid,
    /// False when shutdown interrupted it: it is not committed and is redelivered.
    handled: bool,
}

/// What woke the loop.
enum Next {
    Stop,
    Finished(Result<Done, JoinError>),
    Received(Option<OwnedMessage>),
}

pub(crate) struct Dispatcher {
    saga: OrderSaga,
    consumer: EventConsumer,
    recorder: Recorder,
    config: SagaConfig,
    status: Arc<SagaStatus>,
    shutdown: Shutdown,
    marks: Watermarks<Partition>,
    orders: KeyedQueue<Uuid, Work>,
    running: JoinSet<Done>,
}

impl Dispatcher {
    pub(crate) fn new(
        saga: OrderSaga,
        consumer: EventConsumer,
        recorder: Recorder,
        config: SagaConfig,
        status: Arc<SagaStatus>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            saga,
            consumer,
            recorder,
            config,
            status,
            shutdown,
            marks: Watermarks::default(),
            orders: KeyedQueue::default(),
            running: JoinSet::new(),
        }
    }

    /// Receives and dispatches until shutdown or until the consumer closes.
    pub(crate) async fn consume(&mut self) {
        let slots = self.config.concurrency.max(1);
        loop {
            // received events not finished: running ones and those waiting behind their order's
            let admitted = self.running.len() + self.orders.waiting();
            let receive = admitted < slots && self.marks.tracked() < slots * UNCOMMITTED_PER_SLOT;
            let next = tokio::select! {
                biased;
                () = self.shutdown.wait() => Next::Stop,
                Some(joined) = self.running.join_next() => Next::Finished(joined),
                message = self.consumer.recv(), if receive => Next::Received(message),
            };
            match next {
                Next::Stop | Next::Received(None) => return,
                Next::Finished(joined) => self.finished(joined),
                Next::Received(Some(message)) => self.admit(&message),
            }
        }
    }

    /// Drops the events waiting behind a running one, lets the running ones finish (for at most
    /// the grace period, then abandons them), commits what they allow and answers the consumer.
    /// The recorder is dropped with the dispatcher: its writer task then stores what is left.
    pub(crate) async fn drain(mut self) -> EventConsumer {
        let abandoned = self.orders.abandon_waiting();
        tracing::info!(in_flight = self.running.len(), abandoned, "order saga stopping, finishing events in flight");
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        loop {
            match tokio::time::timeout_at(deadline, self.running.join_next()).await {
                Ok(Some(joined)) => self.finished(joined),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(abandoned = self.running.len(), "events in flight abandoned at shutdown");
                    self.running.shutdown().await;
                    break;
                }
            }
        }
        self.consumer
    }

    /// Registers a received message and starts it, queues it behind its order, or skips it.
    fn admit(&mut self, message: &OwnedMessage) {
        let partition = (message.topic().to_owned(), message.partition());
        let incarnation = kafka::incarnation(message).unwrap_or(0);
        let ticket = self.marks.begin_in(partition, message.offset(), incarnation);
        match kafka::decode(message) {
            Ok(envelope) => {
                let work = Work { ticket, order_id: envelope.stream_id, envelope };
                if let Some(work) = self.orders.push(work.order_id, work) {
                    self.spawn(work);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, topic = message.topic(), partition = message.partition(),
                    offset = message.offset(), "malformed message skipped");
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "malformed").increment(1);
                self.complete(&ticket);
            }
        }
        metrics::gauge!("ordo_saga_uncommitted").set(self.marks.tracked() as f64);
    }

    /// A handler task ended: commit what its partition's watermark allows and start the next
    /// event of its order.
    fn finished(&mut self, joined: Result<Done, JoinError>) {
        let done = match joined {
            Ok(done) => done,
            // a handler that panicked takes the saga down, as it did before handlers ran as tasks
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return,
        };
        if !done.handled {
            return; // shutdown interrupted it: it and its order's later events stay uncommitted
        }
        self.complete(&done.ticket);
        self.status.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(next) = self.orders.finish(&done.order_id) {
            self.spawn(next);
        }
        metrics::gauge!("ordo_saga_uncommitted").set(self.marks.tracked() as f64);
    }

    /// Commits the watermark the ticket's message moves, and records it as the saga's progress
    /// (after the commit: the record never names an offset the watermark did not pass).
    fn complete(&mut self, ticket: &Ticket<Partition>) {
        if let Some(reached) = self.marks.reach(ticket) {
            let (topic, partition) = ticket.partition();
            self.consumer.commit_offset(topic, *partition, reached.next_offset);
            self.recorder.reached(topic, *partition, reached.incarnation, reached.next_offset);
        }
    }

    fn spawn(&mut self, work: Work) {
        let (saga, status, shutdown) = (self.saga.clone(), self.status.clone(), self.shutdown.clone());
        let max_backoff = self.config.max_backoff;
        self.running.spawn(async move {
            let _in_flight = status.in_flight();
            let handled = handle(&saga, &work.envelope, max_backoff, &shutdown).await;
            Done { ticket: work.ticket, order_id: work.order_id, handled }
        });
    }
}

/// Handles one event in its own span, retrying transient failures. Returns false if shutdown
/// interrupted it.
async fn handle(saga: &OrderSaga, envelope: &EventEnvelope, max_backoff: Duration, shutdown: &Shutdown) -> bool {
    let meta = &envelope.metadata.metadata;
    let span = tracing::info_span!("saga_event", event_type = %envelope.event_type, order_id = %envelope.stream_id,
        event_id = %meta.event_id, correlation_id = %meta.correlation_id,
        traceparent = meta.traceparent.as_deref().unwrap_or_default());
    ordo_service::telemetry::set_remote_parent(&span, meta.traceparent.as_deref(), meta.tracestate.as_deref());
    handle_with_retries(saga, envelope, max_backoff, shutdown).instrument(span).await
}

async fn handle_with_retries(
    saga: &OrderSaga,
    envelope: &EventEnvelope,
    max_backoff: Duration,
    shutdown: &Shutdown,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match saga.handle(envelope).await {
            Ok(outcome) => {
                tracing::debug!(outcome = outcome.as_str(), "saga event handled");
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => outcome.as_str()).increment(1);
                return true;
            }
            Err(e) if e.is_transient() => {
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "retry").increment(1);
                tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "saga step failed, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => return false,
                }
                delay = (delay * 2).min(max_backoff);
            }
            Err(e) => {
                metrics::counter!("ordo_saga_outcomes_total", "outcome" => "failed").increment(1);
                tracing::error!(error = %e, "saga cannot handle event, skipped");
                return true;
            }
        }
    }
}
