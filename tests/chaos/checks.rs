//! What must hold after every fault, checked against the event log (the source of truth), the
//! read models and the operator CLI.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ordo_schemas::{AnyEvent, OrderEvent, ProductEvent, StreamCategory};
use ordo_tests::Stack;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::World;
use crate::workload::Sent;

/// Acknowledged commands whose event is not in the log at the version the answer gave (with
/// the command's type and correlation id).
pub async fn lost(pool: &PgPool, sent: &[Sent]) -> Vec<String> {
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.ack.is_some()).collect();
    let cats: Vec<&str> = acked.iter().map(|s| s.category).collect();
    let ids: Vec<Uuid> = acked.iter().map(|s| s.ack.as_ref().unwrap().stream_id).collect();
    let versions: Vec<i64> = acked.iter().map(|s| s.ack.as_ref().unwrap().version).collect();
    let rows: Vec<(String, Uuid, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT e.category, e.stream_id, e.version, e.event_type, e.metadata ->> 'correlation_id' \
         FROM unnest($1::text[], $2::uuid[], $3::bigint[]) AS a(c, s, v) \
         JOIN events e ON e.category = a.c AND e.stream_id = a.s AND e.version = a.v",
    )
    .bind(&cats)
    .bind(&ids)
    .bind(&versions)
    .fetch_all(pool)
    .await
    .unwrap();
    let found: HashMap<(String, Uuid, i64), (String, Option<String>)> =
        rows.into_iter().map(|(c, s, v, t, k)| ((c, s, v), (t, k))).collect();
    let mut lost = Vec::new();
    for s in acked {
        let a = s.ack.as_ref().unwrap();
        let at = (s.category.to_owned(), a.stream_id, a.version);
        let expected = (s.event_type.to_owned(), Some(s.correlation.to_string()));
        match found.get(&at) {
            Some(got) if *got == expected => {}
            got => lost.push(format!(
                "{} {}:{} v{} acknowledged, log has {got:?}",
                s.event_type, s.category, a.stream_id, a.version
            )),
        }
    }
    lost
}

/// What the log says about the keyed commands and repeats.
pub struct Applied {
    /// Commands (by correlation id and type) applied more than once.
    pub duplicated: Vec<String>,
    /// Keyed commands the log holds (acknowledged or not).
    pub keyed_applied: usize,
    /// Idempotency keys stored for the workload's keyed commands.
    pub keys_stored: usize,
}

/// Counts, per command sent, the events of its type carrying its correlation id: more than one
/// is a command applied twice. Each applied keyed command must have stored its key once.
pub async fn applied(pool: &PgPool, sent: &[Sent]) -> Applied {
    let correlations: Vec<Uuid> = sent.iter().map(|s| s.correlation).collect();
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT (metadata ->> 'correlation_id')::uuid, event_type, count(*) FROM events \
         WHERE (metadata ->> 'correlation_id')::uuid = ANY($1) GROUP BY 1, 2",
    )
    .bind(&correlations)
    .fetch_all(pool)
    .await
    .unwrap();
    let counts: HashMap<(Uuid, String), i64> = rows.into_iter().map(|(c, t, n)| ((c, t), n)).collect();
    let mut duplicated = Vec::new();
    let mut keyed_applied = 0;
    for s in sent {
        let n = counts.get(&(s.correlation, s.event_type.to_owned())).copied().unwrap_or(0);
        if n > 1 {
            duplicated
                .push(format!("{} (correlation {}, key {:?}) applied {n} times", s.event_type, s.correlation, s.key));
        }
        if n > 0 && s.key.is_some() {
            keyed_applied += 1;
        }
    }
    let scopes: Vec<String> = sent.iter().filter(|s| s.key.is_some()).map(|s| s.scope.to_string()).collect();
    let keys: Vec<String> = sent.iter().filter_map(|s| s.key.clone()).collect();
    let keys_stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys k JOIN unnest($1::text[], $2::text[]) AS w(scope, key) \
         ON k.scope = w.scope AND k.key = w.key",
    )
    .bind(&scopes)
    .bind(&keys)
    .fetch_one(pool)
    .await
    .unwrap();
    Applied { duplicated, keyed_applied, keys_stored: keys_stored as usize }
}

#[derive(Default)]
struct Stock {
    on_hand: i64,
    reserved: i64,
    /// Per order: quantity reserved and not yet released or committed; reservations made.
    outstanding: HashMap<Uuid, i64>,
    reservations: HashMap<Uuid, u32>,
    committed: HashMap<Uuid, i64>,
}

struct Order {
    status: &'static str,
    lines: Vec<(Uuid, i64)>,
}

/// The product and order streams folded from the log, with every stock rule checked at every
/// version.
pub struct Folded {
    pub events: usize,
    products: HashMap<Uuid, Stock>,
    orders: HashMap<Uuid, Order>,
    /// Broken stock rules: reserved above on hand, negative stock, a second reservation for
    /// one order, a release without a reservation.
    pub oversold: Vec<String>,
}

impl Folded {
    pub async fn load(pool: &PgPool) -> Self {
        let rows: Vec<(String, Uuid, i64, String, i32, serde_json::Value)> = sqlx::query_as(
            "SELECT category, stream_id, version, event_type, schema_version, data FROM events \
             WHERE category IN ('product', 'order') ORDER BY category, stream_id, version",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut f = Self { events: rows.len(), products: HashMap::new(), orders: HashMap::new(), oversold: Vec::new() };
        for (category, id, version, event_type, schema, data) in rows {
            let category = StreamCategory::parse(&category).unwrap();
            match AnyEvent::decode(category, &event_type, schema, data).unwrap() {
                AnyEvent::Product(e) => f.product(id, version, e),
                AnyEvent::Order(e) => f.order(id, e),
                _ => unreachable!("only product and order events were read"),
            }
        }
        f
    }

    fn product(&mut self, id: Uuid, version: i64, e: ProductEvent) {
        let s = self.products.entry(id).or_default();
        match e {
            ProductEvent::ProductListed { initial_stock, .. } => s.on_hand = i64::from(initial_stock),
            ProductEvent::StockAdjusted { delta, on_hand_after, .. } => {
                s.on_hand += delta;
                if s.on_hand != on_hand_after {
                    self.oversold
                        .push(format!("product {id} v{version}: on hand {} but event says {on_hand_after}", s.on_hand));
                }
            }
            ProductEvent::StockReserved { order_id, quantity } => {
                s.reserved += i64::from(quantity);
                *s.outstanding.entry(order_id).or_default() += i64::from(quantity);
                let n = s.reservations.entry(order_id).or_default();
                *n += 1;
                if *n > 1 {
                    self.oversold.push(format!("product {id} v{version}: order {order_id} reserved {n} times"));
                }
            }
            ProductEvent::StockReservationReleased { order_id, quantity } => {
                s.reserved -= i64::from(quantity);
                let left = s.outstanding.entry(order_id).or_default();
                *left -= i64::from(quantity);
                if *left < 0 {
                    self.oversold
                        .push(format!("product {id} v{version}: order {order_id} released more than reserved"));
                }
            }
            ProductEvent::ReservedStockCommitted { order_id, quantity } => {
                s.reserved -= i64::from(quantity);
                s.on_hand -= i64::from(quantity);
                *s.outstanding.entry(order_id).or_default() -= i64::from(quantity);
                *s.committed.entry(order_id).or_default() += i64::from(quantity);
            }
            ProductEvent::ProductPriceChanged { .. } | ProductEvent::ProductDiscontinued {} => {}
        }
        if s.reserved < 0 || s.reserved > s.on_hand {
            self.oversold.push(format!("product {id} v{version}: reserved {} of {} on hand", s.reserved, s.on_hand));
        }
    }

    fn order(&mut self, id: Uuid, e: OrderEvent) {
        let status = match e {
            OrderEvent::OrderPlaced { lines, .. } => {
                let lines = lines.iter().map(|l| (l.product_id, i64::from(l.quantity))).collect();
                self.orders.insert(id, Order { status: "pending", lines });
                return;
            }
            OrderEvent::OrderConfirmed {} => "confirmed",
            OrderEvent::OrderRejected { .. } => "rejected",
            OrderEvent::OrderPaid { .. } => "paid",
            OrderEvent::OrderShipped { .. } => "shipped",
            OrderEvent::OrderDelivered {} => "delivered",
            OrderEvent::OrderCancelled { .. } => "cancelled",
        };
        if let Some(o) = self.orders.get_mut(&id) {
            o.status = status;
        }
    }

    /// Orders per status.
    pub fn statuses(&self) -> BTreeMap<&'static str, usize> {
        let mut n = BTreeMap::new();
        for o in self.orders.values() {
            *n.entry(o.status).or_default() += 1;
        }
        n
    }

    /// Orders the saga has work left for (see [`Folded::saga_backlog`]).
    pub fn backlog_orders(&self) -> HashSet<Uuid> {
        self.saga_backlog().into_iter().map(|(id, _)| id).collect()
    }

    /// What the saga has left to do: pending orders, and reservations that disagree with their
    /// order's status (confirmed and paid orders hold every line, shipped ones committed every
    /// line, cancelled and rejected ones hold nothing). Empty when the saga is idle.
    pub fn saga_backlog(&self) -> Vec<(Uuid, String)> {
        let mut left = Vec::new();
        for (id, o) in &self.orders {
            if o.status == "pending" {
                left.push((*id, format!("order {id} pending")));
                continue;
            }
            for &(product, quantity) in &o.lines {
                let s = self.products.get(&product);
                let out = s.and_then(|s| s.outstanding.get(id)).copied().unwrap_or(0);
                let committed = s.and_then(|s| s.committed.get(id)).copied().unwrap_or(0);
                let want = match o.status {
                    "confirmed" | "paid" => (quantity, 0),
                    "shipped" | "delivered" => (0, quantity),
                    _ => (0, 0),
                };
                if (out, committed) != want {
                    let what = format!(
                        "order {id} {}: product {product} holds {out} and committed {committed}, expected {want:?}",
                        o.status
                    );
                    left.push((*id, what));
                }
            }
        }
        left
    }
}

/// The query API against the log, once settled: every acknowledged order visible with the
/// status the log gives it (none pending), and every product with the stock the log folds to,
/// its reservation equal to what its confirmed and paid orders hold. Returns the number of
/// orders compared, or what differs.
pub async fn visible(stack: &Stack, world: &World, sent: &[Sent], folded: &Folded) -> Result<usize, String> {
    let mut shown: HashMap<Uuid, String> = HashMap::new();
    for customer in &world.customers {
        let mut cursor: Option<String> = None;
        loop {
            let mut url = stack.query(&format!("/v1/customers/{}/orders?limit=500", customer.id));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = get(stack, &url, &customer.token).await?;
            for o in page["items"].as_array().into_iter().flatten() {
                let id = o["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default();
                shown.insert(id, o["status"].as_str().unwrap_or_default().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    let mut wrong = Vec::new();
    let placed: Vec<Uuid> = sent
        .iter()
        .filter(|s| s.event_type == "OrderPlaced")
        .filter_map(|s| s.ack.as_ref().map(|a| a.stream_id))
        .collect();
    for id in &placed {
        let logged = folded.orders.get(id).map(|o| o.status);
        let seen = shown.get(id).map(String::as_str);
        if logged.is_none() || logged == Some("pending") || seen != logged {
            wrong.push(format!("order {id}: log says {logged:?}, query api {seen:?}"));
        }
    }
    let mut held: HashMap<Uuid, i64> = HashMap::new();
    for o in folded.orders.values().filter(|o| matches!(o.status, "confirmed" | "paid")) {
        for &(product, quantity) in &o.lines {
            *held.entry(product).or_default() += quantity;
        }
    }
    for p in world.merchants.iter().flat_map(|m| &m.products) {
        let view = get(stack, &stack.query(&format!("/v1/products/{}", p.id)), "").await?;
        let stock = folded.products.get(&p.id);
        let logged = (stock.map_or(0, |s| s.on_hand), stock.map_or(0, |s| s.reserved));
        let seen = (view["on_hand"].as_i64().unwrap_or(-1), view["reserved"].as_i64().unwrap_or(-1));
        let orders_hold = held.get(&p.id).copied().unwrap_or(0);
        if seen != logged || seen.1 != orders_hold {
            wrong.push(format!(
                "product {}: query api (on hand, reserved) {seen:?}, log {logged:?}, confirmed and paid orders hold \
                 {orders_hold}",
                p.id
            ));
        }
    }
    if wrong.is_empty() {
        Ok(placed.len())
    } else {
        Err(format!("{} differences, e.g. {:?}", wrong.len(), &wrong[..wrong.len().min(5)]))
    }
}

async fn get(stack: &Stack, url: &str, token: &str) -> Result<serde_json::Value, String> {
    let mut req = stack.http.get(url);
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: {e}: {body}"))
}

/// The (category, stream, version) of every order and product stream now: a point the read
/// models and the saga must get past.
pub struct Mark {
    categories: Vec<String>,
    ids: Vec<Uuid>,
    versions: Vec<i64>,
    pending: Vec<Uuid>,
}

impl Mark {
    pub async fn now(pool: &PgPool) -> Self {
        let rows: Vec<(String, Uuid, i64)> =
            sqlx::query_as("SELECT category, stream_id, version FROM streams WHERE category IN ('order', 'product')")
                .fetch_all(pool)
                .await
                .unwrap();
        let pending = rows.iter().filter(|(c, _, v)| c == "order" && *v == 1).map(|(_, id, _)| *id).collect();
        let (mut categories, mut ids, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for (c, id, v) in rows {
            categories.push(c);
            ids.push(id);
            versions.push(v);
        }
        Self { categories, ids, versions, pending }
    }

    /// Events before the mark not yet applied by a projection, plus orders pending at the mark
    /// and still pending (an order stream at version 1 holds only `OrderPlaced`).
    pub async fn behind(&self, pool: &PgPool) -> i64 {
        let unprojected: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(greatest(a.v - coalesce(p.version, 0), 0)), 0)::bigint \
             FROM unnest($1::text[], $2::uuid[], $3::bigint[]) AS a(c, s, v) \
             JOIN (VALUES ('orders', 'order'), ('sales', 'order'), ('catalog', 'product')) AS m(projection, category) \
               ON m.category = a.c \
             LEFT JOIN projection_progress p ON p.projection = m.projection AND p.category = a.c AND p.stream_id = a.s",
        )
        .bind(&self.categories)
        .bind(&self.ids)
        .bind(&self.versions)
        .fetch_one(pool)
        .await
        .unwrap();
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM streams WHERE category = 'order' AND version = 1 AND stream_id = ANY($1)",
        )
        .bind(&self.pending)
        .fetch_one(pool)
        .await
        .unwrap();
        unprojected + pending
    }
}

/// Waits until everything appended before `mark` is projected and every order pending at the
/// mark was decided, while the load goes on; returns how long that took.
pub async fn drained(stack: &Stack, mark: &Mark, timeout: Duration) -> Duration {
    drain(stack, mark, timeout)
        .await
        .unwrap_or_else(|behind| panic!("backlog not drained after {timeout:?}: {behind} behind"))
}

/// [`drained`], without the panic: `Err` with how much is still behind after `timeout`.
pub async fn drain(stack: &Stack, mark: &Mark, timeout: Duration) -> Result<Duration, i64> {
    let started = Instant::now();
    loop {
        let behind = mark.behind(&stack.db.pool).await;
        if behind == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(behind);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (the load stopped) until every event is projected and the saga is idle, apart from
/// the orders in `excused`; returns the time it took and the fold of the settled log.
pub async fn settled(stack: &Stack, timeout: Duration, excused: &HashSet<Uuid>) -> (Duration, Folded) {
    let started = Instant::now();
    loop {
        let unprojected = stack.unprojected_events().await;
        let folded = Folded::load(&stack.db.pool).await;
        let backlog: Vec<String> =
            folded.saga_backlog().into_iter().filter(|(id, _)| !excused.contains(id)).map(|(_, w)| w).collect();
        if unprojected == 0 && backlog.is_empty() {
            return (started.elapsed(), folded);
        }
        assert!(
            started.elapsed() < timeout,
            "not settled after {timeout:?}: {unprojected} events unprojected, saga backlog {} ({:?}); logs in {:?}",
            backlog.len(),
            &backlog[..backlog.len().min(5)],
            stack.log_dir()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `ordo replay --json`: every read model equals a fresh fold of the log, to the column (exit
/// 0, nothing missing, extra or different). Returns the events replayed per projection.
pub async fn replay(stack: &Stack) -> String {
    let out = stack.ordo(&["replay", "--json"], Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed = || format!("ordo replay exit {}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", failed());
    let reports: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{}", failed()));
    for r in reports.as_array().unwrap() {
        assert_eq!(r["complete"], true, "{}", failed());
        for t in r["tables"].as_array().unwrap() {
            let c = &t["counts"];
            let counts = (c["missing"].as_u64(), c["extra"].as_u64(), c["different"].as_u64());
            assert_eq!(counts, (Some(0), Some(0), Some(0)), "{}", failed());
        }
    }
    let summary: Vec<String> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["projection"].as_str().unwrap_or("?"), r["events"]))
        .collect();
    summary.join(", ")
}

/// `ordo verify`: every hash chain intact. Returns how many events it checked.
pub async fn verify(stack: &Stack) -> i64 {
    let out = stack.ordo(&["verify"], Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ordo verify exit {}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    report["checked"].as_i64().unwrap_or_default()
}
