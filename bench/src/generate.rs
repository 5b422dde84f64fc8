//! A realistic event log, fast: merchants, products and customers, then orders through their
//! whole lifecycle (placed, reserved, confirmed or rejected, paid, shipped with committed stock,
//! delivered, some cancelled with released stock) and now and then price changes and restocks.
//!
//! Every event comes from the pure aggregates (`decide` then `evolve`) in memory, so the log is
//! one the projections accept; it is appended through [`EventStore::append_many`], many streams
//! per transaction. Each appender owns its own merchants, products and customers, so appenders
//! never contend for a stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use ordo_domain::{Aggregate, Customer, Merchant, Order, Product};
use ordo_event_store::{EventStore, ExpectedVersion, NewEvent, StreamAppend};
use ordo_schemas::*;
use uuid::Uuid;

/// The shape of one appender's share of the marketplace.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub merchants: usize,
    pub products_per_merchant: usize,
    pub customers: usize,
    /// Orders (with their product events) per transaction.
    pub orders_per_batch: usize,
}

/// Events of one transaction, grouped by stream.
#[derive(Default)]
struct Batch {
    streams: BTreeMap<StreamRef, (ExpectedVersion, Vec<NewEvent>)>,
    events: u64,
}

impl Batch {
    fn push<E: DomainEvent>(&mut self, stream: StreamRef, expected: ExpectedVersion, events: &[E], meta: &Meta) {
        let entry = self.streams.entry(stream).or_insert_with(|| (expected, Vec::new()));
        for e in events {
            entry.1.push(NewEvent::from_domain(e, meta.next()));
        }
        self.events += events.len() as u64;
    }

    fn into_appends(self) -> Vec<StreamAppend> {
        self.streams.into_iter().map(|(stream, (expected, events))| StreamAppend { stream, expected, events }).collect()
    }
}

/// Metadata of the events one command causes.
struct Meta {
    correlation: Uuid,
    actor: Actor,
}

impl Meta {
    fn next(&self) -> EventMetadata {
        EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: self.correlation,
            causation_id: None,
            actor: self.actor,
            traceparent: None,
            tracestate: None,
        }
    }
}

struct Stock {
    id: Uuid,
    state: Product,
    version: i64,
}

/// One appender's marketplace and its position in the order lifecycle script.
pub struct Generator {
    products: Vec<Stock>,
    /// Indexes into `products` per merchant.
    by_merchant: Vec<(Uuid, Vec<usize>)>,
    customers: Vec<Uuid>,
    n: u64,
    shape: Shape,
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap_or_else(|_| unreachable!("EUR is a currency")))
}

fn address() -> anyhow::Result<Address> {
    Address::new("1 Main Street", None, "Berlin", "10115", CountryCode::parse("DE")?)
        .map_err(|e| anyhow::anyhow!("invalid address: {e:?}"))
}

impl Generator {
    /// Registers the appender's merchants, products and customers (one batch).
    fn setup(shape: Shape, part: usize) -> anyhow::Result<(Self, Batch)> {
        let mut batch = Batch::default();
        let system = Meta { correlation: Uuid::new_v4(), actor: Actor::system() };
        let mut gen = Self { products: Vec::new(), by_merchant: Vec::new(), customers: Vec::new(), n: 0, shape };
        for m in 0..shape.merchants {
            let id = Uuid::new_v4();
            let cmd = RegisterMerchant { merchant_id: id, name: format!("merchant {part}-{m}") };
            let events = Merchant::default().decide(&cmd.into()).context("register merchant")?;
            batch.push(StreamRef::new(StreamCategory::Merchant, id), ExpectedVersion::NoStream, &events, &system);
            let mut mine = Vec::new();
            for p in 0..shape.products_per_merchant {
                let pid = Uuid::new_v4();
                let cmd = ListProduct {
                    product_id: pid,
                    merchant_id: id,
                    sku: Sku::parse(&format!("SKU-{part}-{m}-{p}"))?,
                    name: format!("product {p} of merchant {part}-{m}"),
                    description: (p % 2 == 0).then(|| format!("a fine product number {p}")),
                    price: eur(500 + (p as i64 % 40) * 125),
                    initial_stock: 10_000_000,
                };
                let mut state = Product::default();
                let events = state.execute(&cmd.into()).context("list product")?;
                let stream = StreamRef::new(StreamCategory::Product, pid);
                batch.push(stream, ExpectedVersion::NoStream, &events, &system);
                mine.push(gen.products.len());
                gen.products.push(Stock { id: pid, state, version: events.len() as i64 });
            }
            gen.by_merchant.push((id, mine));
        }
        for c in 0..shape.customers {
            let id = Uuid::new_v4();
            let cmd = RegisterCustomer {
                customer_id: id,
                name: format!("customer {part}-{c}"),
                email: Email::parse(&format!("c{part}x{c}@example.com"))?,
                shipping_address: address()?,
            };
            let events = Customer::default().decide(&cmd.into()).context("register customer")?;
            batch.push(StreamRef::new(StreamCategory::Customer, id), ExpectedVersion::NoStream, &events, &system);
            gen.customers.push(id);
        }
        Ok((gen, batch))
    }

    /// Runs `command` on product `index` and adds its events to the batch.
    fn product(&mut self, batch: &mut Batch, index: usize, command: ProductCommand, meta: &Meta) -> anyhow::Result<()> {
        let stock = &mut self.products[index];
        let expected = ExpectedVersion::Exact(stock.version);
        let events = stock.state.execute(&command).context("product command")?;
        stock.version += events.len() as i64;
        // the expectation of a stream already in the batch stays the one it had at batch start
        batch.push(StreamRef::new(StreamCategory::Product, stock.id), expected, &events, meta);
        Ok(())
    }

    /// One order through the lifecycle its number selects.
    fn order(&mut self, batch: &mut Batch) -> anyhow::Result<()> {
        self.n += 1;
        let n = self.n;
        let customer = self.customers[(n as usize * 7) % self.customers.len()];
        let (merchant, mine) = self.by_merchant[(n as usize * 13) % self.by_merchant.len()].clone();
        let line_count = 1 + (n % 3) as usize;
        let mut picks_unique: Vec<(usize, u32)> = (0..line_count)
            .map(|i| (mine[(n as usize * 31 + i * 17) % mine.len()], 1 + ((n + i as u64) % 3) as u32))
            .collect();
        picks_unique.sort_by_key(|p| p.0);
        picks_unique.dedup_by_key(|p| p.0);
        let customer_meta = Meta { correlation: Uuid::new_v4(), actor: Actor { id: customer, role: Role::Customer } };
        let saga = Meta { correlation: customer_meta.correlation, actor: Actor::system() };
        let lines = picks_unique
            .iter()
            .filter_map(|&(i, quantity)| {
                let s = self.products[i].state.state()?;
                Some(PricedLine {
                    product_id: s.product_id,
                    merchant_id: merchant,
                    sku: s.sku.clone(),
                    name: s.name.clone(),
                    quantity,
                    unit_price: s.price,
                })
            })
            .collect();
        let order_id = Uuid::new_v4();
        let stream = StreamRef::new(StreamCategory::Order, order_id);
        let mut order = Order::default();
        let mut order_events = Vec::new();
        let mut run = |order: &mut Order, command: OrderCommand| -> anyhow::Result<()> {
            order_events.extend(order.execute(&command).context("order command")?);
            Ok(())
        };
        let place = PlaceOrder {
            order_id,
            customer_id: customer,
            merchant_id: Some(merchant),
            lines,
            shipping_address: address()?,
        };
        run(&mut order, place.into())?;
        let stage = n % 20;
        if stage == 1 {
            let (i, requested) = picks_unique[0];
            let failed = vec![RejectedLine {
                product_id: self.products[i].id,
                requested,
                available: 0,
                reason: "out_of_stock".into(),
            }];
            run(&mut order, RejectOrder { failed_lines: failed }.into())?;
        } else if stage != 0 {
            for &(i, quantity) in &picks_unique {
                self.product(batch, i, ReserveStock { order_id, quantity }.into(), &saga)?;
            }
            run(&mut order, ConfirmOrder {}.into())?;
            if stage == 2 || stage == 3 {
                let by = Actor { id: customer, role: Role::Customer };
                run(&mut order, CancelOrder { reason: "changed my mind".into(), by }.into())?;
                for &(i, _) in &picks_unique {
                    self.product(batch, i, ReleaseReservation { order_id }.into(), &saga)?;
                }
            } else if stage >= 5 {
                let total = order.state().map(|s| s.total).context("placed order has a state")?;
                run(&mut order, PayOrder { amount: total, payment_reference: format!("pay-{n}") }.into())?;
                if stage >= 6 {
                    let ship = ShipOrder { carrier: "DHL".into(), tracking_number: format!("T{n}") };
                    run(&mut order, ship.into())?;
                    for &(i, _) in &picks_unique {
                        self.product(batch, i, CommitReservation { order_id }.into(), &saga)?;
                    }
                    if stage >= 7 {
                        run(&mut order, DeliverOrder {}.into())?;
                    }
                }
            }
        }
        batch.push(stream, ExpectedVersion::NoStream, &order_events, &customer_meta);
        if n % 10 == 0 {
            let merchant_meta =
                Meta { correlation: Uuid::new_v4(), actor: Actor { id: merchant, role: Role::Merchant } };
            let i = picks_unique[0].0;
            let command: ProductCommand = if n % 20 == 0 {
                ChangePrice { price: eur(500 + (n as i64 % 37) * 25) }.into()
            } else {
                AdjustStock { delta: 25, reason: StockAdjustmentReason::Restock }.into()
            };
            // a price change to the current price is refused: that is fine, skip it
            let _ = self.product(batch, i, command, &merchant_meta);
        }
        Ok(())
    }

    fn next_batch(&mut self) -> anyhow::Result<Batch> {
        let mut batch = Batch::default();
        for _ in 0..self.shape.orders_per_batch {
            self.order(&mut batch)?;
        }
        Ok(batch)
    }
}

/// Appends at least `target` events with `appenders` concurrent writers; returns how many.
pub async fn generate(store: &EventStore, target: u64, appenders: usize, shape: Shape) -> anyhow::Result<u64> {
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for part in 0..appenders.max(1) {
        let (store, total) = (store.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let (mut gen, setup) = Generator::setup(shape, part)?;
            total.fetch_add(setup.events, Ordering::SeqCst);
            store.append_many(setup.into_appends(), None).await.context("append the setup")?;
            while total.load(Ordering::SeqCst) < target {
                let batch = gen.next_batch()?;
                let events = batch.events;
                store.append_many(batch.into_appends(), None).await.context("append a batch")?;
                let done = total.fetch_add(events, Ordering::SeqCst) + events;
                if part == 0 && done / 100_000 != (done - events) / 100_000 {
                    println!("  {done} events appended");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total.load(Ordering::SeqCst))
}
