//! A small HTTP client over both APIs of a running [`Stack`], and the shop most scenarios need
//! (one merchant, one customer, some products). Cheap to clone, so workload tasks can own one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ordo_schemas::Role;
use ordo_tests::{eventually, Stack};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// One HTTP answer, body parsed as JSON (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `consistency_token` of a command answer.
    pub fn token(&self) -> String {
        self.body["consistency_token"].as_str().unwrap_or_else(|| panic!("no consistency token in {self:?}")).to_owned()
    }

    /// The `id` of a command answer.
    pub fn id(&self) -> Uuid {
        self.body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {self:?}"))
    }

    /// The `Ordo-Consistency` header of a query answer.
    pub fn consistency(&self) -> Option<&str> {
        self.headers.get("ordo-consistency").and_then(|v| v.to_str().ok())
    }

    /// Panics unless the status is `expected`.
    pub fn expect(self, expected: u16, what: &str) -> Self {
        assert_eq!(self.status.as_u16(), expected, "{what}: {:?}", self.body);
        self
    }
}

/// Both APIs of one stack plus the tokens to call them with.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    command: String,
    query: String,
    admin: String,
    auditor: String,
}

impl Client {
    pub fn new(stack: &Stack) -> Self {
        Self {
            http: stack.http.clone(),
            command: stack.command(""),
            query: stack.query(""),
            admin: stack.token(Uuid::new_v4(), Role::Admin),
            auditor: stack.token(Uuid::new_v4(), Role::Auditor),
        }
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Answer { status, headers, body }
    }

    /// `POST <command api><path>` with a bearer token, a JSON body and extra headers.
    pub async fn post_with(&self, path: &str, token: &str, body: Value, headers: &[(&str, String)]) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.command)).bearer_auth(token).json(&body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        Self::answer(req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"))).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.post_with(path, token, body, &[]).await
    }

    /// `GET <query api><path>` with a bearer token (none when `token` is empty).
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        let mut req = self.http.get(format!("{}{path}", self.query));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        Self::answer(req.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await
    }

    /// `GET` as an auditor.
    pub async fn audit(&self, path: &str) -> Answer {
        self.get(path, &self.auditor.clone()).await
    }

    /// `GET` as an admin.
    pub async fn admin(&self, path: &str) -> Answer {
        self.get(path, &self.admin.clone()).await
    }

    /// `GET /v1/orders/{id}` with a consistency token, asserting it was honoured.
    pub async fn order_after(&self, id: Uuid, token: &str, consistency_token: &str) -> Value {
        let a = self.get(&format!("/v1/orders/{id}?consistency_token={consistency_token}"), token).await;
        let a = a.expect(200, "read the order");
        assert_eq!(a.consistency(), Some("honoured"), "order {id} after {consistency_token}");
        a.body
    }

    /// Polls `GET /v1/orders/{id}` until the order has `status`.
    pub async fn order_in(&self, id: Uuid, token: &str, status: &str) -> Value {
        eventually(&format!("order {id} to be {status}"), Duration::from_secs(30), || async move {
            let a = self.get(&format!("/v1/orders/{id}"), token).await;
            (a.status == StatusCode::OK && a.body["status"] == status).then_some(a.body)
        })
        .await
    }

    /// `GET /v1/products/{id}` once the catalog reflects every event the product stream holds
    /// now (its head version, from the audit digest, used as the consistency token).
    pub async fn settled_product(&self, id: Uuid) -> Value {
        let digest = self.audit(&format!("/v1/audit/streams/product/{id}/digest")).await.expect(200, "digest");
        let version = digest.body["version"].as_i64().unwrap();
        let a = self.get(&format!("/v1/products/{id}?consistency_token=product:{id}:{version}"), "").await;
        let a = a.expect(200, "read the product");
        assert_eq!(a.consistency(), Some("honoured"), "product {id} at v{version}");
        assert_eq!(a.body["version"], version);
        a.body
    }

    /// Polls `GET /v1/products/{id}` until (on_hand, reserved, available) are the expected ones.
    pub async fn product_stock(&self, id: Uuid, on_hand: i64, reserved: i64) -> Value {
        let what = format!("product {id} at on_hand {on_hand}, reserved {reserved}");
        eventually(&what, Duration::from_secs(30), || async move {
            let a = self.get(&format!("/v1/products/{id}"), "").await;
            let b = &a.body;
            (b["on_hand"] == on_hand && b["reserved"] == reserved && b["available"] == on_hand - reserved)
                .then(|| b.clone())
        })
        .await
    }

    /// Every order of the shop's customer in the query API (all pages): id -> status.
    pub async fn customer_orders(&self, shop: &Shop) -> HashMap<Uuid, String> {
        let mut orders = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/customers/{}/orders?limit=100", shop.customer_id);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path, &shop.customer).await.expect(200, "list the customer's orders");
            for o in page.body["items"].as_array().unwrap() {
                orders.insert(o["id"].as_str().unwrap().parse().unwrap(), o["status"].as_str().unwrap().to_owned());
            }
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return orders,
            }
        }
    }

    /// Pays an order, retrying while the saga has not confirmed it yet (409 `invalid_state`).
    pub async fn pay_when_confirmed(&self, id: Uuid, token: &str, amount_minor: i64) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = json!({"amount": {"amount_minor": amount_minor, "currency": "EUR"}, "payment_reference": "pay-1"});
        loop {
            let a = self.post(&format!("/v1/orders/{id}/payment"), token, body.clone()).await;
            if a.status == StatusCode::CONFLICT && a.body["code"] == "invalid_state" && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            return a.expect(200, "pay the order");
        }
    }
}

/// A product as listed.
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    pub id: Uuid,
    pub price_minor: i64,
    pub stock: i64,
}

/// One merchant, one customer, each registered as itself, and the merchant's products.
#[derive(Clone)]
pub struct Shop {
    pub merchant_id: Uuid,
    pub merchant: String,
    pub customer_id: Uuid,
    pub customer: String,
    pub products: Vec<Listed>,
}

impl Shop {
    /// Registers the merchant and the customer; `products` are (price, initial stock).
    pub async fn open(stack: &Stack, client: &Client, products: &[(i64, i64)]) -> Self {
        let merchant_id = Uuid::new_v4();
        let customer_id = Uuid::new_v4();
        let merchant = stack.token(merchant_id, Role::Merchant);
        let customer = stack.token(customer_id, Role::Customer);
        let m = client.post("/v1/merchants", &merchant, json!({"name": "Harbour Goods"})).await;
        assert_eq!(m.expect(201, "register the merchant").id(), merchant_id);
        let address = json!({"line1": "1 Quay St", "city": "Lisbon", "postal_code": "1100-001", "country": "PT"});
        let body = json!({"name": "Ada", "email": "ada@example.com", "shipping_address": address});
        let c = client.post("/v1/customers", &customer, body).await;
        assert_eq!(c.expect(201, "register the customer").id(), customer_id);
        let mut shop = Self { merchant_id, merchant, customer_id, customer, products: Vec::new() };
        for (i, &(price_minor, stock)) in products.iter().enumerate() {
            let (listed, _) = shop.list(client, &format!("SKU-{i}"), price_minor, stock).await;
            shop.products.push(listed);
        }
        shop
    }

    /// Lists one product; returns it and the command answer.
    pub async fn list(&self, client: &Client, sku: &str, price_minor: i64, stock: i64) -> (Listed, Answer) {
        let body = json!({
            "sku": sku, "name": format!("Product {sku}"), "description": "sturdy",
            "price": {"amount_minor": price_minor, "currency": "EUR"}, "initial_stock": stock,
        });
        let a = client.post("/v1/products", &self.merchant, body).await.expect(201, "list a product");
        (Listed { id: a.id(), price_minor, stock }, a)
    }

    /// Places an order of `(product, quantity)` lines as the customer; asserts 202.
    pub async fn order(&self, client: &Client, lines: &[(Uuid, u32)]) -> Answer {
        self.order_with(client, lines, &[]).await
    }

    pub async fn order_with(&self, client: &Client, lines: &[(Uuid, u32)], headers: &[(&str, String)]) -> Answer {
        let lines: Vec<Value> = lines.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect();
        let a = client.post_with("/v1/orders", &self.customer, json!({ "lines": lines }), headers).await;
        a.expect(202, "place an order")
    }
}
