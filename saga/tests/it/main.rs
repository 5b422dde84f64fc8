//! The order saga end to end: a real Postgres, a real nisshi broker, the relay running as a
//! task, the saga consuming `ordo.orders`, commands issued through `CommandService`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker_loss;
mod concurrency;
mod hostile_input;
mod orders;
mod restart;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_commands::{CommandContext, CommandService, OrderLineRequest, PlaceOrderRequest};
use ordo_domain::{Order, OrderState, OrderStatus, Product, ProductState};
use ordo_event_store::relay::{Relay, RelayConfig};
use ordo_event_store::testing::{Broker, TestDb};
use ordo_event_store::{kafka, EventStore};
use ordo_saga::{SagaConfig, SagaStatus};
use ordo_schemas::{
    Actor, Address, CountryCode, Currency, Email, ListProduct, Money, RegisterCustomer, RegisterMerchant, Role, Sku,
    StreamCategory, StreamRef,
};
use ordo_service::shutdown::Shutdown;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A task with its stop flag.
pub struct Task {
    handle: JoinHandle<()>,
    stop: Shutdown,
}

impl Task {
    /// Graceful stop: the task finishes what it holds and exits.
    pub async fn stop(self) {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.handle).await.expect("task stops").expect("task");
    }

    /// Hard stop: the task is dropped wherever it is.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Postgres, a broker, the relay, a merchant and a customer; the saga is started per test.
pub struct World {
    pub db: TestDb,
    pub broker: Broker,
    pub service: CommandService,
    pub relay: Option<Task>,
    pub merchant: Uuid,
    pub customer: Uuid,
}

impl World {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        ordo_commands::migrate(&db.pool).await.unwrap();
        ordo_saga::migrate(&db.pool).await.unwrap();
        let broker = Broker::start().await;
        kafka::ensure_topics(&broker.bootstrap(), 3).await.unwrap();
        let service = CommandService::new(EventStore::new(db.pool.clone()));
        let relay_config = RelayConfig {
            brokers: broker.bootstrap(),
            poll_interval: Duration::from_millis(20),
            ..RelayConfig::default()
        };
        let relay = Relay::new(db.store(), relay_config);
        let stop = Shutdown::new();
        let s = stop.clone();
        let relay = Task { handle: tokio::spawn(async move { relay.run(s).await }), stop };

        let merchant = Uuid::new_v4();
        let customer = Uuid::new_v4();
        let as_merchant = CommandContext::new(Actor { id: merchant, role: Role::Merchant }, Uuid::new_v4());
        service
            .register_merchant(&as_merchant, RegisterMerchant { merchant_id: merchant, name: "Shop".into() })
            .await
            .unwrap();
        let as_customer = CommandContext::new(Actor { id: customer, role: Role::Customer }, Uuid::new_v4());
        let address =
            Address::new("Main Street 1", None, "Berlin", "10115", CountryCode::parse("DE").unwrap()).unwrap();
        let register = RegisterCustomer {
            customer_id: customer,
            name: "Ada".into(),
            email: Email::parse("ada@example.com").unwrap(),
            shipping_address: address,
        };
        service.register_customer(&as_customer, register).await.unwrap();
        Self { db, broker, service, relay: Some(relay), merchant, customer }
    }

    /// Starts a saga replica in consumer group `group`.
    pub fn saga(&self, group: &str) -> (Task, Arc<SagaStatus>) {
        self.saga_with(group, SagaConfig::default().concurrency)
    }

    /// Starts a saga replica in consumer group `group` handling up to `concurrency` events at once.
    pub fn saga_with(&self, group: &str, concurrency: usize) -> (Task, Arc<SagaStatus>) {
        self.saga_config(group, |c| c.concurrency = concurrency)
    }

    /// Starts a saga replica in consumer group `group` with the test settings as `adjust` leaves them.
    pub fn saga_config(&self, group: &str, adjust: impl FnOnce(&mut SagaConfig)) -> (Task, Arc<SagaStatus>) {
        let mut config = SagaConfig {
            brokers: self.broker.bootstrap(),
            group_id: group.into(),
            max_backoff: Duration::from_millis(500),
            ..SagaConfig::default()
        };
        adjust(&mut config);
        let status = Arc::new(SagaStatus::default());
        let stop = Shutdown::new();
        let (service, st, s) = (self.service.clone(), status.clone(), stop.clone());
        let handle = tokio::spawn(async move { ordo_saga::run(service, config, st, s).await.expect("saga runs") });
        (Task { handle, stop }, status)
    }

    pub fn as_customer(&self) -> CommandContext {
        CommandContext::new(Actor { id: self.customer, role: Role::Customer }, Uuid::new_v4())
    }

    /// Lists a product with `stock` units.
    pub async fn product(&self, stock: u32) -> Uuid {
        let id = Uuid::new_v4();
        let ctx = CommandContext::new(Actor { id: self.merchant, role: Role::Merchant }, Uuid::new_v4());
        let command = ListProduct {
            product_id: id,
            merchant_id: self.merchant,
            sku: Sku::parse(&format!("SKU-{}", id.simple())).unwrap(),
            name: "Widget".into(),
            description: None,
            price: Money::new(1_999, Currency::parse("EUR").unwrap()),
            initial_stock: stock,
        };
        self.service.list_product(&ctx, command).await.unwrap();
        id
    }

    /// Places an order (pending) for the customer.
    pub async fn place(&self, lines: &[(Uuid, u32)]) -> Uuid {
        let order_id = Uuid::new_v4();
        let request = PlaceOrderRequest {
            order_id,
            customer_id: self.customer,
            lines: lines.iter().map(|&(product_id, quantity)| OrderLineRequest { product_id, quantity }).collect(),
            shipping_address: None,
        };
        self.service.place_order(&self.as_customer(), request).await.unwrap();
        order_id
    }

    pub async fn order(&self, id: Uuid) -> OrderState {
        let loaded = self.service.load::<Order>(StreamRef::new(StreamCategory::Order, id)).await.unwrap();
        loaded.state.state().cloned().expect("order exists")
    }

    pub async fn stock(&self, id: Uuid) -> ProductState {
        let loaded = self.service.load::<Product>(StreamRef::new(StreamCategory::Product, id)).await.unwrap();
        loaded.state.state().cloned().expect("product exists")
    }

    /// Polls until the order leaves `pending` (or times out) and returns its state.
    pub async fn decided(&self, id: Uuid, timeout: Duration) -> OrderState {
        let deadline = Instant::now() + timeout;
        loop {
            let order = self.order(id).await;
            if order.status != OrderStatus::Pending {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} still pending after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `check` on the product until it holds.
    pub async fn wait_for_stock(&self, id: Uuid, what: &str, check: impl Fn(&ProductState) -> bool) -> ProductState {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = self.stock(id).await;
            if check(&p) {
                return p;
            }
            assert!(Instant::now() < deadline, "product {id}: timed out waiting until {what}: {p:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// How many events of `event_type` the product's stream holds for `order_id`.
    pub async fn product_events_for(&self, product: Uuid, event_type: &str, order_id: Uuid) -> usize {
        let events = self.db.store().read_stream(StreamRef::new(StreamCategory::Product, product), 1).await.unwrap();
        events
            .iter()
            .filter(|e| e.event_type == event_type && e.data["order_id"] == serde_json::json!(order_id))
            .count()
    }

    /// Every event in the log, as (position, event type), in log order.
    pub async fn log(&self) -> Vec<(i64, String)> {
        let (events, _) = self.db.store().read_all(ordo_event_store::LogCursor::START, 1_000_000).await.unwrap();
        events.into_iter().map(|e| (e.position, e.event_type)).collect()
    }

    pub async fn shutdown(mut self) {
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
    }
}

/// Polls until `check` holds.
pub async fn wait_until(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
