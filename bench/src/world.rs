//! The marketplace the load generator drives: merchants with products, customers, and the
//! orders placed so far; seeded through the command API and used by every client task.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ordo_schemas::Role;
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Unit price of every seeded product is `1000 + 10 * (index % 50)` minor units of EUR.
const CURRENCY: &str = "EUR";

/// How large the seeded marketplace is.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Size {
    /// Merchants to register.
    #[arg(long, default_value_t = 8)]
    pub merchants: usize,
    /// Products each merchant lists (stock adjustments are spread over all of them).
    #[arg(long, default_value_t = 64)]
    pub products_per_merchant: usize,
    /// Customers to register.
    #[arg(long, default_value_t = 64)]
    pub customers: usize,
}

pub struct Merchant {
    pub id: Uuid,
    pub token: String,
    /// Indexes into [`World::products`].
    pub products: Vec<usize>,
}

pub struct Product {
    pub id: Uuid,
    pub merchant: usize,
    pub price: i64,
}

pub struct Customer {
    pub id: Uuid,
    pub token: String,
}

/// An order the load generator placed.
#[derive(Debug, Clone, Copy)]
pub struct PlacedOrder {
    pub id: Uuid,
    pub merchant: usize,
    pub customer: usize,
    pub total: i64,
    pub at: Instant,
}

/// The HTTP endpoints and credentials of the system under test.
#[derive(Clone)]
pub struct Endpoints {
    pub command: String,
    pub query: String,
    pub http: reqwest::Client,
}

/// Everything the clients share.
pub struct World {
    pub endpoints: Endpoints,
    pub merchants: Vec<Merchant>,
    pub products: Vec<Product>,
    pub customers: Vec<Customer>,
    pub admin_token: String,
    /// Placed orders waiting to be paid (oldest first).
    pub placed: Mutex<VecDeque<PlacedOrder>>,
    /// Paid orders waiting to be shipped.
    pub paid: Mutex<VecDeque<PlacedOrder>>,
    /// Paid orders and when they were paid, for order queries.
    pub known_orders: Mutex<Vec<(Uuid, Instant)>>,
    /// Ids of every order placed since the last [`World::take_placed_log`].
    pub placed_log: Mutex<Vec<Uuid>>,
}

impl World {
    /// Registers merchants, their products and customers through the command API.
    pub async fn seed(endpoints: Endpoints, keys: &JwtKeys, size: Size) -> anyhow::Result<Self> {
        let ttl = chrono::Duration::hours(4);
        let admin_token = keys.mint(Uuid::new_v4(), Role::Admin, ttl)?;
        let mut merchants = Vec::new();
        let mut products = Vec::new();
        let mut customers = Vec::new();
        let mut requests: Vec<(String, String, Value)> = Vec::new();
        for m in 0..size.merchants {
            let id = Uuid::new_v4();
            let token = keys.mint(id, Role::Merchant, ttl)?;
            requests.push((token.clone(), "/v1/merchants".into(), json!({"name": format!("bench merchant {m}")})));
            merchants.push(Merchant { id, token, products: Vec::new() });
        }
        run_all(&endpoints, std::mem::take(&mut requests)).await.context("register merchants")?;
        for (mi, merchant) in merchants.iter_mut().enumerate() {
            for p in 0..size.products_per_merchant {
                let id = Uuid::new_v4();
                let index = products.len();
                let price = 1000 + 10 * (index as i64 % 50);
                requests.push((
                    merchant.token.clone(),
                    "/v1/products".into(),
                    json!({"id": id, "sku": format!("BENCH-{mi}-{p}"), "name": format!("bench product {mi}-{p}"),
                           "description": "a product of the load generator",
                           "price": {"amount_minor": price, "currency": CURRENCY}, "initial_stock": 100_000_000}),
                ));
                merchant.products.push(index);
                products.push(Product { id, merchant: mi, price });
            }
        }
        for c in 0..size.customers {
            let id = Uuid::new_v4();
            let token = keys.mint(id, Role::Customer, ttl)?;
            requests.push((
                token.clone(),
                "/v1/customers".into(),
                json!({"name": format!("bench customer {c}"), "email": format!("bench{c}@example.com"),
                       "shipping_address": {"line1": "1 Load Street", "city": "Berlin", "postal_code": "10115",
                                            "country": "DE"}}),
            ));
            customers.push(Customer { id, token });
        }
        run_all(&endpoints, requests).await.context("list products and register customers")?;
        Ok(Self {
            endpoints,
            merchants,
            products,
            customers,
            admin_token,
            placed: Mutex::new(VecDeque::new()),
            paid: Mutex::new(VecDeque::new()),
            known_orders: Mutex::new(Vec::new()),
            placed_log: Mutex::new(Vec::new()),
        })
    }

    /// The orders placed since the previous call.
    pub fn take_placed_log(&self) -> Vec<Uuid> {
        self.placed_log.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }
}

/// Sends seeding requests 16 at a time; any non-2xx answer fails the seeding.
async fn run_all(endpoints: &Endpoints, requests: Vec<(String, String, Value)>) -> anyhow::Result<()> {
    let mut set = JoinSet::new();
    let mut pending = requests.into_iter();
    let mut spawn_next = |set: &mut JoinSet<anyhow::Result<()>>| {
        let Some((token, path, body)) = pending.next() else { return false };
        let e = endpoints.clone();
        set.spawn(async move {
            let r = post(&e, &token, &path, &body).await?;
            if !r.status.is_success() {
                bail!("POST {path} answered {}: {}", r.status, r.body);
            }
            Ok(())
        });
        true
    };
    for _ in 0..16 {
        if !spawn_next(&mut set) {
            break;
        }
    }
    while let Some(done) = set.join_next().await {
        done??;
        spawn_next(&mut set);
    }
    Ok(())
}

/// The answer to one request.
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub body: Value,
    pub elapsed: Duration,
}

impl Answer {
    /// `version` of a command answer or a read-model resource.
    pub fn version(&self) -> Option<i64> {
        self.body.get("version").and_then(Value::as_i64)
    }
}

/// POSTs a JSON command with a bearer token.
pub async fn post(e: &Endpoints, token: &str, path: &str, body: &Value) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let r = e.http.post(format!("{}{path}", e.command)).bearer_auth(token).json(body).send().await?;
    let status = r.status();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    Ok(Answer { status, body, elapsed: started.elapsed() })
}

/// GETs a query API resource, with a bearer token when given.
pub async fn get(e: &Endpoints, token: Option<&str>, path: &str) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let mut req = e.http.get(format!("{}{path}", e.query));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status();
    let body = if status.is_success() { r.json::<Value>().await.unwrap_or(Value::Null) } else { Value::Null };
    Ok(Answer { status, body, elapsed: started.elapsed() })
}
