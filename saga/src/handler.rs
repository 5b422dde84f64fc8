//! What the saga does with one order event, through the command handlers of the write side.
//!
//! Every step is safe to repeat: the product aggregate makes reservation, release and commit
//! idempotent per order (and refuses to re-reserve for an order whose reservation it released or
//! committed, so a line released earlier is never counted as held), and the order aggregate
//! makes confirmation and rejection idempotent. An order is rejected before its reserved lines
//! are released, so an interrupted rejection can only end rejected. The saga also looks at the order's status before
//! reserving, so a redelivered `OrderPlaced` of a decided order does nothing.

use ordo_commands::{CommandContext, CommandError, CommandService};
use ordo_domain::{DomainError, Order, OrderStatus, Product};
use ordo_schemas::StreamRef;
use ordo_schemas::{DecodeError, DomainEvent, EventEnvelope, OrderEvent, OrderLine, RejectedLine, StreamCategory};
use uuid::Uuid;

/// What handling one event amounted to (the `outcome` label of `ordo_saga_outcomes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every line reserved, the order confirmed.
    Confirmed,
    /// Some line could not be reserved: the others were released and the order rejected.
    Rejected,
    /// The order was cancelled while the saga reserved it: its reservations were released.
    CancelledDuringReservation,
    /// A cancellation released the order's reservations.
    Released,
    /// A shipment committed the order's reservations.
    Committed,
    /// The event was handled before (a redelivery): nothing new was done.
    AlreadyHandled,
    /// Not an event the saga reacts to.
    Ignored,
}

impl Outcome {
    /// The metric label of this outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Rejected => "rejected",
            Outcome::CancelledDuringReservation => "cancelled_during_reservation",
            Outcome::Released => "released",
            Outcome::Committed => "committed",
            Outcome::AlreadyHandled => "already_handled",
            Outcome::Ignored => "ignored",
        }
    }
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The event payload does not decode: retrying will not help.
    #[error("event does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A command failed. Infrastructure failures are worth retrying ([`SagaError::is_transient`]).
    #[error("command failed: {0}")]
    Command(#[from] CommandError),
}

impl SagaError {
    /// True when the same event may succeed later (the database was away, a stream was busy).
    pub fn is_transient(&self) -> bool {
        match self {
            SagaError::Decode(_) => false,
            SagaError::Command(e) => !e.is_rejection(),
        }
    }
}

/// The order saga's decisions, driven through a [`CommandService`].
#[derive(Debug, Clone)]
pub struct OrderSaga {
    service: CommandService,
}

impl OrderSaga {
    /// The saga acting through `service` (as the system actor).
    pub fn new(service: CommandService) -> Self {
        Self { service }
    }

    /// Handles one published event. Commands carry the event's correlation id and its event id
    /// as causation id.
    ///
    /// # Errors
    /// [`SagaError`]; when [`SagaError::is_transient`], handle the same event again later.
    pub async fn handle(&self, envelope: &EventEnvelope) -> Result<Outcome, SagaError> {
        if envelope.category != StreamCategory::Order {
            return Ok(Outcome::Ignored);
        }
        let event = OrderEvent::decode(&envelope.event_type, envelope.schema_version, envelope.data.clone())?;
        let meta = &envelope.metadata.metadata;
        let (traceparent, tracestate) = ordo_service::TraceContext::current().map_or_else(
            || (meta.traceparent.clone(), meta.tracestate.clone()),
            |c| (Some(c.traceparent), c.tracestate),
        );
        let ctx = CommandContext::system(meta.correlation_id, meta.event_id)
            .with_traceparent(traceparent)
            .with_tracestate(tracestate);
        let order_id = envelope.stream_id;
        // The message only says which order to look at; what to do follows from the order as the
        // log has it, so a forged or stale message cannot move stock the order does not hold.
        let order = self.service.load::<Order>(StreamRef::new(StreamCategory::Order, order_id)).await?.state;
        let Some(state) = order.state() else {
            tracing::warn!(order_id = %order_id, event = %envelope.event_type, "event for an order not in the log, ignored");
            return Ok(Outcome::Ignored);
        };
        let products: Vec<Uuid> = state.lines.iter().map(|l| l.product_id).collect();
        match (event, state.status) {
            (OrderEvent::OrderPlaced { .. }, _) => self.on_placed(&ctx, order_id, state.status, &state.lines).await,
            (OrderEvent::OrderCancelled { .. }, OrderStatus::Cancelled) => {
                let released = self.release(&ctx, order_id, &products).await?;
                Ok(if released > 0 { Outcome::Released } else { Outcome::AlreadyHandled })
            }
            (OrderEvent::OrderShipped { .. }, OrderStatus::Shipped | OrderStatus::Delivered) => {
                let commits = products.iter().map(|p| self.service.commit_reservation(&ctx, *p, order_id));
                let mut committed = 0;
                for result in futures::future::join_all(commits).await {
                    committed += result?.events;
                }
                Ok(if committed > 0 { Outcome::Committed } else { Outcome::AlreadyHandled })
            }
            (OrderEvent::OrderCancelled { .. } | OrderEvent::OrderShipped { .. }, status) => {
                tracing::warn!(order_id = %order_id, event = %envelope.event_type, status = status.as_str(),
                    "event contradicts the order in the log, ignored");
                Ok(Outcome::Ignored)
            }
            _ => Ok(Outcome::Ignored),
        }
    }

    async fn on_placed(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        status: OrderStatus,
        lines: &[OrderLine],
    ) -> Result<Outcome, SagaError> {
        let products: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        match status {
            OrderStatus::Pending => {}
            OrderStatus::Rejected | OrderStatus::Cancelled => {
                // Decided before (or cancelled meanwhile): make sure nothing stays reserved.
                self.release(ctx, order_id, &products).await?;
                return Ok(Outcome::AlreadyHandled);
            }
            _ => return Ok(Outcome::AlreadyHandled),
        }

        // The lines are reserved at once: each product's lane decides its reservation on its own
        // stock, and the commands share the writer's batches.
        let reservations = lines.iter().map(|l| self.service.reserve_stock(ctx, l.product_id, order_id, l.quantity));
        let results = futures::future::join_all(reservations).await;
        let mut reserved = Vec::new();
        let mut failed = Vec::new();
        for (line, result) in lines.iter().zip(results) {
            match result {
                Ok(_) => reserved.push(line.product_id),
                Err(e) if e.is_rejection() => failed.push(self.rejected_line(line, &e).await?),
                Err(e) => return Err(e.into()),
            }
        }

        if failed.is_empty() {
            return match self.service.confirm_order(ctx, order_id).await {
                Ok(o) if o.events > 0 => Ok(Outcome::Confirmed),
                Ok(_) => Ok(Outcome::AlreadyHandled),
                Err(CommandError::Domain(DomainError::InvalidState(_))) => {
                    self.lost_race(ctx, order_id, &products).await
                }
                Err(e) => Err(e.into()),
            };
        }

        // Reject first, release after: once a line is released the order must never be confirmed,
        // so the decision is recorded before anything is undone. A retry then finds the order
        // rejected and only releases; a failed rejection has released nothing, and its retry
        // reserves again (a no-op for lines still held).
        tracing::info!(order_id = %order_id, failed = failed.len(), "order cannot be reserved, rejecting");
        let outcome = match self.service.reject_order(ctx, order_id, failed).await {
            Ok(o) if o.events > 0 => Outcome::Rejected,
            Ok(_) => Outcome::AlreadyHandled,
            Err(CommandError::Domain(DomainError::InvalidState(_))) => {
                return self.lost_race(ctx, order_id, &products).await
            }
            Err(e) => return Err(e.into()),
        };
        self.release(ctx, order_id, &reserved).await?;
        Ok(outcome)
    }

    /// The order left `pending` while the saga reserved it (a cancellation won the race):
    /// release whatever this order holds unless it went on to be confirmed.
    async fn lost_race(&self, ctx: &CommandContext, order_id: Uuid, products: &[Uuid]) -> Result<Outcome, SagaError> {
        match self.order_status(order_id).await? {
            Some(OrderStatus::Cancelled | OrderStatus::Rejected) => {
                self.release(ctx, order_id, products).await?;
                tracing::info!(order_id = %order_id, "order cancelled during reservation, released");
                Ok(Outcome::CancelledDuringReservation)
            }
            _ => Ok(Outcome::AlreadyHandled),
        }
    }

    /// Releases the order's reservation of each product (at once); returns how many events that
    /// took.
    async fn release(&self, ctx: &CommandContext, order_id: Uuid, products: &[Uuid]) -> Result<usize, SagaError> {
        let releases = products.iter().map(|p| self.service.release_reservation(ctx, *p, order_id));
        let mut events = 0;
        for result in futures::future::join_all(releases).await {
            match result {
                Ok(o) => events += o.events,
                // An unknown product holds nothing.
                Err(CommandError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(events)
    }

    /// A refused line as reported in `OrderRejected`.
    async fn rejected_line(&self, line: &OrderLine, error: &CommandError) -> Result<RejectedLine, SagaError> {
        let reason = match error {
            CommandError::Domain(d) => d.code().to_owned(),
            other => other.outcome().to_owned(),
        };
        let available = match error {
            CommandError::Domain(DomainError::OutOfStock { available, .. }) => *available,
            _ => {
                let product = self.service.load::<Product>(StreamRef::new(StreamCategory::Product, line.product_id));
                product.await?.state.state().map_or(0, |p| p.available())
            }
        };
        Ok(RejectedLine { product_id: line.product_id, requested: line.quantity, available, reason })
    }

    async fn order_status(&self, order_id: Uuid) -> Result<Option<OrderStatus>, SagaError> {
        let order = self.service.load::<Order>(StreamRef::new(StreamCategory::Order, order_id)).await?;
        Ok(order.state.status())
    }
}
