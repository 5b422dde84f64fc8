//! `spawn_app()` and the requests and fixtures the tests share.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use ordo_command_api::{router, AppState, CommandContext, CommandService};
use ordo_event_store::testing::TestDb;
use ordo_event_store::RecordedEvent;
use ordo_schemas::{EventMetadata, Role, StreamCategory, StreamRef};
use ordo_service::http::Limits;
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-for-the-command-api";
/// The body limit of test apps, small so the 413 test stays cheap.
pub const BODY_LIMIT: usize = 16 * 1024;

/// An app over its own database, driven in-process.
pub struct TestApp {
    pub db: TestDb,
    pub router: Router,
    pub keys: JwtKeys,
    /// The same service the routes use, for steps the saga would take (confirm, reserve).
    pub commands: CommandService,
}

/// A registered party and its bearer token.
#[derive(Debug, Clone)]
pub struct Party {
    pub id: Uuid,
    pub token: String,
}

/// A response, its body parsed as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The `field` of every entry of a problem's `errors`.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }
}

pub async fn spawn_app() -> TestApp {
    let db = TestDb::new().await;
    ordo_command_api::migrate(&db.pool).await.expect("command api migrations");
    let keys = JwtKeys::from_secret(SECRET);
    let commands = CommandService::new(db.store());
    let state = AppState::new(commands.clone(), Arc::new(keys.clone()));
    let router = router(state, Limits { body_bytes: BODY_LIMIT, timeout: Duration::from_secs(30) });
    TestApp { db, router, keys, commands }
}

impl TestApp {
    pub fn token(&self, id: Uuid, role: Role) -> String {
        self.keys.mint(id, role, chrono::Duration::minutes(10)).unwrap()
    }

    /// A party with a token but nothing registered.
    pub fn party(&self, role: Role) -> Party {
        let id = Uuid::new_v4();
        Party { id, token: self.token(id, role) }
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, headers, body }
    }

    /// `POST path` with a JSON body and extra headers.
    pub async fn post_with(&self, path: &str, token: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::post(path).header("content-type", "application/json");
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.post_with(path, token, &body, &[]).await
    }

    /// A merchant registered through the API.
    pub async fn merchant(&self) -> Party {
        let m = self.party(Role::Merchant);
        let r = self.post("/v1/merchants", &m.token, json!({"name": "Acme"})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        m
    }

    /// A customer registered through the API, living in Berlin.
    pub async fn customer(&self) -> Party {
        let c = self.party(Role::Customer);
        let r = self.post("/v1/customers", &c.token, customer_body("Ada")).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        c
    }

    /// A product of `merchant` priced `price` EUR cents with `stock` on hand.
    pub async fn product(&self, merchant: &Party, price: i64, stock: i64) -> Uuid {
        let sku = format!("SKU-{}", Uuid::new_v4().simple());
        let r = self.post("/v1/products", &merchant.token, product_body(&sku, price, stock)).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        id_of(&r)
    }

    /// An order of `quantity` of `product`, placed by `customer` through the API (pending).
    pub async fn order(&self, customer: &Party, product: Uuid, quantity: u32) -> Uuid {
        let body = json!({"lines": [{"product_id": product, "quantity": quantity}]});
        let r = self.post("/v1/orders", &customer.token, body).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        id_of(&r)
    }

    /// Does what the saga would: reserves every line and confirms the order.
    pub async fn confirm(&self, order: Uuid, product: Uuid, quantity: u32) {
        let ctx = CommandContext::system(Uuid::new_v4(), Uuid::new_v4());
        self.commands.reserve_stock(&ctx, product, order, quantity).await.unwrap();
        self.commands.confirm_order(&ctx, order).await.unwrap();
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&self.db.pool).await.unwrap()
    }

    pub async fn events(&self, category: StreamCategory, id: Uuid) -> Vec<RecordedEvent> {
        self.db.store().read_stream(StreamRef::new(category, id), 1).await.unwrap()
    }

    /// The stream's events with their personal fields revealed.
    pub async fn revealed_events(&self, category: StreamCategory, id: Uuid) -> Vec<RecordedEvent> {
        let mut events = self.events(category, id).await;
        self.db.store().personal().reveal_recorded(&mut events).await.unwrap();
        events
    }

    pub async fn last_metadata(&self, category: StreamCategory, id: Uuid) -> EventMetadata {
        self.events(category, id).await.last().unwrap().typed_metadata().unwrap()
    }
}

pub fn id_of(r: &Resp) -> Uuid {
    r.body["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or_else(|| panic!("no id in {:?}", r.body))
}

pub fn address() -> Value {
    json!({"line1": "Invalidenstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"})
}

pub fn customer_body(name: &str) -> Value {
    json!({"name": name, "email": "ada@example.com", "shipping_address": address()})
}

pub fn product_body(sku: &str, price: i64, stock: i64) -> Value {
    json!({
        "sku": sku,
        "name": "T-shirt",
        "description": "red, XL",
        "price": {"amount_minor": price, "currency": "EUR"},
        "initial_stock": stock
    })
}

pub fn eur(amount: i64) -> Value {
    json!({"amount_minor": amount, "currency": "EUR"})
}
