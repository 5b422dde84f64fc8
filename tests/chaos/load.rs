//! The marketplace the workload trades in and the clients that trade: each places orders (one
//! or two lines with one merchant) and takes them down a path (left confirmed, cancelled, paid,
//! shipped, delivered), and now and then restocks or writes off a product.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_schemas::Role;
use ordo_tests::Stack;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::workload::{Api, Cmd, Outcome, Rng};

/// A product as listed; prices never change in this workload, so order totals are known.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    pub id: Uuid,
    pub price: i64,
}

pub struct Party {
    pub id: Uuid,
    pub token: String,
}

pub struct Merchant {
    pub party: Party,
    pub products: Vec<Product>,
}

/// The marketplace the workload trades in.
pub struct World {
    pub merchants: Vec<Merchant>,
    pub customers: Vec<Party>,
}

/// (price, initial stock) of each merchant's products: two plentiful, two scarce (restocked by
/// the workload, so reservations keep competing for the last units).
const CATALOG: [(i64, i64); 4] = [(1250, 100_000), (399, 100_000), (2999, 40), (5000, 15)];

impl World {
    /// Registers the parties and lists the products (keyed commands, so a fault cannot make
    /// the setup fail).
    pub async fn open(stack: &Stack, api: &Api, merchants: usize, customers: usize) -> Self {
        let address = json!({"line1": "1 Quay St", "city": "Lisbon", "postal_code": "1100-001", "country": "PT"});
        let mut world = Self { merchants: Vec::new(), customers: Vec::new() };
        for i in 0..customers {
            let id = Uuid::new_v4();
            let token = stack.token(id, Role::Customer);
            let body = json!({"name": format!("Customer {i}"), "email": format!("c{i}@example.com"),
                "shipping_address": address});
            let cmd = Cmd {
                path: "/v1/customers".into(),
                token: &token,
                scope: id,
                body,
                event_type: "CustomerRegistered",
                category: "customer",
                keyed: true,
                repeat: false,
                impatient: None,
            };
            expect_ack(api.command(cmd).await, "register a customer");
            world.customers.push(Party { id, token });
        }
        for i in 0..merchants {
            let id = Uuid::new_v4();
            let token = stack.token(id, Role::Merchant);
            let cmd = Cmd {
                path: "/v1/merchants".into(),
                token: &token,
                scope: id,
                body: json!({"name": format!("Merchant {i}")}),
                event_type: "MerchantRegistered",
                category: "merchant",
                keyed: true,
                repeat: false,
                impatient: None,
            };
            expect_ack(api.command(cmd).await, "register a merchant");
            let mut products = Vec::new();
            for (j, (price, stock)) in CATALOG.into_iter().enumerate() {
                let pid = Uuid::new_v4();
                let body = json!({"id": pid, "sku": format!("SKU-{i}-{j}"), "name": format!("Product {i}-{j}"),
                    "price": {"amount_minor": price, "currency": "EUR"}, "initial_stock": stock});
                let cmd = Cmd {
                    path: "/v1/products".into(),
                    token: &token,
                    scope: id,
                    body,
                    event_type: "ProductListed",
                    category: "product",
                    keyed: true,
                    repeat: false,
                    impatient: None,
                };
                expect_ack(api.command(cmd).await, "list a product");
                products.push(Product { id: pid, price });
            }
            world.merchants.push(Merchant { party: Party { id, token }, products });
        }
        world
    }
}

fn expect_ack(o: Outcome, what: &str) {
    assert!(matches!(o, Outcome::Acked), "{what}: {o:?}");
}

/// Runs `clients` workload clients until `stop` is set; joins them.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(api: &Api, world: &Arc<World>, clients: usize, pay_wait: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let client = Client {
                    api: api.clone(),
                    world: world.clone(),
                    me: c % world.customers.len(),
                    stop: stop.clone(),
                    pay_wait,
                    rng: Rng::new(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients and waits for each to finish its current step.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a workload client panicked");
        }
    }
}

struct Client {
    api: Api,
    world: Arc<World>,
    me: usize,
    stop: Arc<AtomicBool>,
    pay_wait: Duration,
    rng: Rng,
}

impl Client {
    async fn run(mut self) {
        let mut round = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            round += 1;
            let m = self.rng.below(self.world.merchants.len() as u64) as usize;
            self.order(m).await;
            if round % 3 == 0 {
                self.adjust_stock(m).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn cmd<'a>(&mut self, path: String, who: &'a Party, body: Value, event_type: &'static str) -> Cmd<'a> {
        let keyed = self.rng.chance(50);
        let repeat = keyed && self.rng.chance(15);
        let impatient = self.rng.chance(10).then(|| Duration::from_millis(1 + self.rng.below(30)));
        Cmd { path, token: &who.token, scope: who.id, body, event_type, category: "order", keyed, repeat, impatient }
    }

    /// Places one order and takes it down a path: left confirmed, cancelled, paid, shipped or
    /// delivered.
    async fn order(&mut self, m: usize) {
        let world = self.world.clone();
        let merchant = &world.merchants[m];
        let customer = &world.customers[self.me];
        let first = self.rng.below(merchant.products.len() as u64) as usize;
        let mut picked = vec![first];
        if self.rng.chance(40) {
            picked.push((first + 1 + self.rng.below(3) as usize) % merchant.products.len());
        }
        let lines: Vec<(Product, i64)> =
            picked.iter().map(|&i| (merchant.products[i], 1 + self.rng.below(3) as i64)).collect();
        let total: i64 = lines.iter().map(|(p, q)| p.price * q).sum();
        let id = Uuid::new_v4();
        let body = json!({"id": id, "lines": lines.iter().map(|(p, q)| json!({"product_id": p.id, "quantity": q}))
            .collect::<Vec<_>>()});
        let cmd = self.cmd("/v1/orders".into(), customer, body, "OrderPlaced");
        if !matches!(self.api.command(cmd).await, Outcome::Acked) {
            return;
        }
        let roll = self.rng.below(100);
        if roll < 25 {
            return;
        }
        if roll < 40 {
            let who = if self.rng.chance(50) { customer } else { &merchant.party };
            let cmd = self.cmd(
                format!("/v1/orders/{id}/cancellation"),
                who,
                json!({"reason": "changed my mind"}),
                "OrderCancelled",
            );
            self.api.command(cmd).await;
            return;
        }
        if !self.pay(id, customer, total).await || roll < 70 {
            return;
        }
        let body = json!({"carrier": "UPS", "tracking_number": format!("1Z{}", id.simple())});
        let cmd = self.cmd(format!("/v1/orders/{id}/shipment"), &merchant.party, body, "OrderShipped");
        if matches!(self.api.command(cmd).await, Outcome::Acked) && self.rng.chance(50) {
            let cmd = self.cmd(format!("/v1/orders/{id}/delivery"), &merchant.party, json!({}), "OrderDelivered");
            self.api.command(cmd).await;
        }
    }

    /// Pays once the saga confirmed the order; gives up when it was rejected, when the wait is
    /// over or when the load stops.
    async fn pay(&mut self, id: Uuid, customer: &Party, total: i64) -> bool {
        let deadline = Instant::now() + self.pay_wait;
        let body =
            json!({"amount": {"amount_minor": total, "currency": "EUR"}, "payment_reference": format!("psp-{id}")});
        loop {
            let cmd = self.cmd(format!("/v1/orders/{id}/payment"), customer, body.clone(), "OrderPaid");
            match self.api.command(cmd).await {
                Outcome::Acked => return true,
                Outcome::Refused { status: 409, detail, .. } if detail.contains("pending") => {}
                _ => return false,
            }
            if Instant::now() > deadline || self.stop.load(Ordering::SeqCst) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A restock (mostly) or a small write-off of one of the merchant's products.
    async fn adjust_stock(&mut self, m: usize) {
        let world = self.world.clone();
        let merchant = &world.merchants[m];
        let p = merchant.products[self.rng.below(merchant.products.len() as u64) as usize];
        let body = if self.rng.chance(70) {
            json!({"delta": 3 + self.rng.below(8) as i64, "reason": "restock"})
        } else {
            json!({"delta": -(1 + self.rng.below(2) as i64), "reason": "write_off"})
        };
        let mut cmd = self.cmd(format!("/v1/products/{}/stock", p.id), &merchant.party, body, "StockAdjusted");
        cmd.category = "product";
        cmd.keyed = self.rng.chance(70);
        self.api.command(cmd).await;
    }
}
