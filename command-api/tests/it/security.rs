//! Hostile input and access control, shown by requests that try: the whole authorisation matrix,
//! forged and malformed tokens, injection attempts, oversized, nested and stalled bodies, idle
//! connections, and arbitrary bodies (proptest). Every refusal is checked to have appended nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use ordo_command_api::{router, AppState, CommandService};
use ordo_event_store::testing::TestDb;
use ordo_schemas::{Role, StreamCategory};
use ordo_service::http::Limits;
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use proptest::prelude::*;

use crate::helpers::{customer_body, eur, id_of, product_body, spawn_app, Party, TestApp, SECRET};

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    RegisterCustomer,
    RegisterMerchant,
    ListProduct,
    ChangePrice,
    AdjustStock,
    Discontinue,
    PlaceOrder,
    Pay,
    Ship,
    Deliver,
    Cancel,
}

/// Who asks: a role and whether the token's subject owns the resource (`None`: no token).
type Who = Option<(Role, bool)>;

/// Expected status per endpoint, in the order of [`whos`]: customer (owner, stranger), merchant
/// (owner, stranger), admin (owner, stranger), auditor (owner, stranger), anonymous.
const MATRIX: [(Endpoint, [u16; 9]); 11] = [
    (Endpoint::RegisterCustomer, [201, 403, 403, 403, 201, 201, 403, 403, 401]),
    (Endpoint::RegisterMerchant, [403, 403, 201, 403, 201, 201, 403, 403, 401]),
    (Endpoint::ListProduct, [403, 403, 201, 403, 201, 201, 403, 403, 401]),
    (Endpoint::ChangePrice, [403, 403, 200, 403, 200, 200, 403, 403, 401]),
    (Endpoint::AdjustStock, [403, 403, 200, 403, 200, 200, 403, 403, 401]),
    (Endpoint::Discontinue, [403, 403, 200, 403, 200, 200, 403, 403, 401]),
    (Endpoint::PlaceOrder, [202, 403, 403, 403, 202, 202, 403, 403, 401]),
    (Endpoint::Pay, [200, 403, 403, 403, 200, 200, 403, 403, 401]),
    (Endpoint::Ship, [403, 403, 200, 403, 200, 200, 403, 403, 401]),
    (Endpoint::Deliver, [403, 403, 200, 403, 200, 200, 403, 403, 401]),
    (Endpoint::Cancel, [200, 403, 200, 403, 200, 200, 403, 403, 401]),
];

fn whos() -> [Who; 9] {
    let mut all = [None; 9];
    for (i, role) in [Role::Customer, Role::Merchant, Role::Admin, Role::Auditor].into_iter().enumerate() {
        all[2 * i] = Some((role, true));
        all[2 * i + 1] = Some((role, false));
    }
    all
}

/// A registered merchant and customer, a product (price 500, stock 10) and an order of 2 units
/// advanced as far as `endpoint` needs it.
struct Scene {
    merchant: Party,
    customer: Party,
    product: Uuid,
    order: Uuid,
}

async fn scene(app: &TestApp, endpoint: Endpoint) -> Scene {
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let product = app.product(&merchant, 500, 10).await;
    let mut order = Uuid::nil();
    if matches!(endpoint, Endpoint::Pay | Endpoint::Ship | Endpoint::Deliver | Endpoint::Cancel) {
        order = app.order(&customer, product, 2).await;
        app.confirm(order, product, 2).await;
    }
    if matches!(endpoint, Endpoint::Ship | Endpoint::Deliver) {
        let pay = json!({"amount": eur(1000), "payment_reference": "pay-1"});
        assert_eq!(app.post(&format!("/v1/orders/{order}/payment"), &customer.token, pay).await.status, 200);
    }
    if matches!(endpoint, Endpoint::Deliver) {
        let ship = json!({"carrier": "DHL", "tracking_number": "T-1"});
        assert_eq!(app.post(&format!("/v1/orders/{order}/shipment"), &merchant.token, ship).await.status, 200);
    }
    Scene { merchant, customer, product, order }
}

/// The path, the subject of the token and the body of one matrix row.
fn request(endpoint: Endpoint, s: &Scene, role: Option<Role>, owner: bool) -> (String, Uuid, Value) {
    let fresh = Uuid::new_v4();
    let owning = |id: Uuid| if owner { id } else { fresh };
    let (customer, merchant) = (owning(s.customer.id), owning(s.merchant.id));
    let subject = match role {
        Some(Role::Merchant) => merchant,
        _ => customer,
    };
    let (product, order) = (s.product, s.order);
    match endpoint {
        Endpoint::RegisterCustomer | Endpoint::RegisterMerchant => {
            let subject = Uuid::new_v4();
            let id = if owner { subject } else { Uuid::new_v4() };
            if matches!(endpoint, Endpoint::RegisterMerchant) {
                return ("/v1/merchants".to_owned(), subject, json!({"id": id, "name": "Acme"}));
            }
            let mut body = customer_body("Ada");
            body["id"] = json!(id);
            ("/v1/customers".to_owned(), subject, body)
        }
        Endpoint::ListProduct => {
            let mut body = product_body(&format!("SKU-{}", Uuid::new_v4().simple()), 100, 1);
            body["merchant_id"] = json!(s.merchant.id);
            ("/v1/products".to_owned(), subject, body)
        }
        Endpoint::ChangePrice => (format!("/v1/products/{product}/price"), subject, json!({"price": eur(900)})),
        Endpoint::AdjustStock => {
            (format!("/v1/products/{product}/stock"), subject, json!({"delta": 3, "reason": "restock"}))
        }
        Endpoint::Discontinue => (format!("/v1/products/{product}/discontinue"), subject, json!({})),
        Endpoint::PlaceOrder => {
            let body = json!({"customer_id": s.customer.id, "lines": [{"product_id": product, "quantity": 1}]});
            ("/v1/orders".to_owned(), subject, body)
        }
        Endpoint::Pay => {
            (format!("/v1/orders/{order}/payment"), subject, json!({"amount": eur(1000), "payment_reference": "pay-1"}))
        }
        Endpoint::Ship => {
            (format!("/v1/orders/{order}/shipment"), subject, json!({"carrier": "DHL", "tracking_number": "T-1"}))
        }
        Endpoint::Deliver => (format!("/v1/orders/{order}/delivery"), subject, json!({})),
        Endpoint::Cancel => (format!("/v1/orders/{order}/cancellation"), subject, json!({"reason": "changed mind"})),
    }
}

#[tokio::test]
async fn every_command_endpoint_answers_every_role_and_ownership_exactly_as_the_contract_says() {
    let app = spawn_app().await;
    let mut failures = Vec::new();
    for (endpoint, expected) in MATRIX {
        for (who, expected) in whos().into_iter().zip(expected) {
            let s = scene(&app, endpoint).await;
            let (role, owner) = (who.map(|w| w.0), who.is_some_and(|w| w.1));
            let (path, subject, body) = request(endpoint, &s, role, owner);
            let token = role.map(|r| app.token(subject, r)).unwrap_or_default();
            let before = app.event_count().await;
            let r = app.post(&path, &token, body).await;
            let appended = app.event_count().await - before;
            let refused = r.status >= 400;
            let problem = r.header("content-type") == Some("application/problem+json");
            if r.status != expected || refused == (appended > 0) || refused != problem {
                let ownership = if owner { "owner" } else { "not owner" };
                failures.push(format!(
                    "{endpoint:?} as {role:?} ({ownership}): status {} (expected {expected}), {appended} events \
                     appended, body {}",
                    r.status, r.body
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
}

/// Hand-built JWTs: any header, any payload, signed with HMAC over any SHA-2 (or not at all).
mod forge {
    use sha2::Digest;

    pub fn b64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn hmac<D: Digest>(block: usize, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut k = if key.len() > block { D::digest(key).to_vec() } else { key.to_vec() };
        k.resize(block, 0);
        let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = D::new().chain_update(pad(0x36)).chain_update(message).finalize();
        D::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
    }

    /// `header.payload.signature` with the signature `alg` names (`none`: empty).
    pub fn token(alg: &str, payload: &serde_json::Value, secret: &[u8]) -> String {
        let header = serde_json::json!({"alg": alg, "typ": "JWT"});
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
        let signature = match alg {
            "HS384" => hmac::<sha2::Sha384>(128, secret, signing_input.as_bytes()),
            "HS512" => hmac::<sha2::Sha512>(128, secret, signing_input.as_bytes()),
            "none" => Vec::new(),
            _ => hmac::<sha2::Sha256>(64, secret, signing_input.as_bytes()),
        };
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// Every forged, expired, malformed or misplaced credential, as `(what, authorization header)`.
fn hostile_credentials(keys: &JwtKeys, secret: &[u8]) -> Vec<(String, String)> {
    let now = chrono::Utc::now().timestamp();
    let sub = Uuid::new_v4();
    let claims = |extra: Value| {
        let mut c = serde_json::Map::new();
        c.extend([
            ("sub".to_owned(), json!(sub)),
            ("role".to_owned(), json!("admin")),
            ("exp".to_owned(), json!(now + 600)),
        ]);
        for (k, v) in extra.as_object().into_iter().flatten() {
            match v {
                Value::Null => c.remove(k),
                v => c.insert(k.clone(), v.clone()),
            };
        }
        Value::Object(c)
    };
    let hs256 = |extra: Value| forge::token("HS256", &claims(extra), secret);
    let customer = keys.mint(sub, Role::Customer, chrono::Duration::minutes(5)).unwrap_or_default();
    let escalated = {
        let parts: Vec<&str> = customer.split('.').collect();
        let payload = json!({"sub": sub, "role": "admin", "exp": now + 600});
        format!("{}.{}.{}", parts[0], forge::b64(payload.to_string().as_bytes()), parts[2])
    };
    let bearer = |t: String| format!("Bearer {t}");
    vec![
        ("expired".into(), bearer(hs256(json!({"exp": now - 3600})))),
        ("not yet valid".into(), bearer(hs256(json!({"nbf": now + 3600})))),
        ("alg none".into(), bearer(forge::token("none", &claims(json!({})), secret))),
        ("alg none without signature part".into(), {
            let t = forge::token("none", &claims(json!({})), secret);
            bearer(t.trim_end_matches('.').to_owned())
        }),
        ("HS384 with the same secret".into(), bearer(forge::token("HS384", &claims(json!({})), secret))),
        ("HS512 with the same secret".into(), bearer(forge::token("HS512", &claims(json!({})), secret))),
        ("RS256 header over an HMAC signature".into(), bearer(forge::token("RS256", &claims(json!({})), secret))),
        ("wrong key".into(), bearer(forge::token("HS256", &claims(json!({})), b"not the secret"))),
        ("missing sub".into(), bearer(hs256(json!({"sub": null})))),
        ("missing role".into(), bearer(hs256(json!({"role": null})))),
        ("missing exp".into(), bearer(hs256(json!({"exp": null})))),
        ("sub not a uuid".into(), bearer(hs256(json!({"sub": "' OR 1=1 --"})))),
        ("unknown role".into(), bearer(hs256(json!({"role": "superuser"})))),
        ("role system".into(), bearer(hs256(json!({"role": "system"})))),
        ("role in capitals".into(), bearer(hs256(json!({"role": "ADMIN"})))),
        ("exp not a number".into(), bearer(hs256(json!({"exp": "never"})))),
        ("payload not an object".into(), bearer(forge::token("HS256", &json!(["admin"]), secret))),
        ("role escalated in the payload, signature kept".into(), bearer(escalated)),
        (
            "signature stripped".into(),
            bearer(customer.rsplit_once('.').map(|(h, _)| format!("{h}.")).unwrap_or_default()),
        ),
        ("garbage".into(), bearer("garbage".into())),
        ("three garbage parts".into(), bearer("a.b.c".into())),
        ("empty bearer".into(), "Bearer ".into()),
        ("basic scheme".into(), "Basic YWRtaW46YWRtaW4=".into()),
        ("no scheme".into(), hs256(json!({}))),
        ("token scheme".into(), format!("Token {}", hs256(json!({})))),
    ]
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_401_problems_and_append_nothing() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    // the forger is sound: its honest HS256 token is accepted
    let honest = forge::token("HS256", &json!({"sub": Uuid::new_v4(), "role": "admin", "exp": now + 600}), SECRET);
    let r = app.post("/v1/merchants", &honest, json!({"name": "Honest"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let before = app.event_count().await;

    let mut failures = Vec::new();
    for (what, authorization) in hostile_credentials(&app.keys, SECRET) {
        for (path, body) in [
            ("/v1/merchants".to_owned(), json!({"id": Uuid::new_v4(), "name": "Mallory"})),
            ("/v1/customers".to_owned(), customer_body("Mallory")),
        ] {
            let req = Request::post(&path)
                .header("content-type", "application/json")
                .header("authorization", authorization.as_str())
                .body(Body::from(body.to_string()))
                .unwrap();
            let r = app.send(req).await;
            let problem = r.header("content-type") == Some("application/problem+json");
            if (r.status, r.code(), problem) != (401, "unauthorized", true) {
                failures.push(format!("{what} on {path}: {} {}", r.status, r.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.event_count().await, before, "no forged token wrote anything");
}

/// Strings an attacker tries in every text field, path segment and header.
const HOSTILE: [&str; 9] = [
    "' OR 1=1 --",
    "'; DROP TABLE events; --",
    "\" OR \"\"=\"",
    "1; SELECT pg_sleep(5)",
    "%00",
    "\u{0}",
    "ünïcødé 😀 \u{202e}txt.exe",
    "../../etc/passwd",
    "\\x00\\' OR 1=1",
];

/// At most 40 characters of `s`, for failure messages.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn injection_in_paths_headers_and_fields_is_refused_or_stored_verbatim_never_executed() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 100, 5).await;
    let long = "a".repeat(1_000);
    let mut failures = Vec::new();

    let mut segments: Vec<String> = HOSTILE.iter().map(|s| encode_path(s)).collect();
    segments.extend(["a".repeat(10_000), "%00".into(), format!("{product}%00"), format!("{product}'--")]);
    for segment in &segments {
        for action in ["price", "stock", "discontinue"] {
            let before = app.event_count().await;
            let r = app.post(&format!("/v1/products/{segment}/{action}"), &merchant.token, json!({})).await;
            if !(400..500).contains(&r.status) || app.event_count().await != before {
                failures.push(format!("path {}/{action}: {}", short(segment), r.status));
            }
        }
        let r = app.post(&format!("/v1/orders/{segment}/cancellation"), &merchant.token, json!({"reason": "x"})).await;
        if !(400..500).contains(&r.status) {
            failures.push(format!("order path {}: {}", short(segment), r.status));
        }
    }

    for (i, hostile) in HOSTILE.iter().chain([&long.as_str()]).enumerate() {
        // as header values (those HTTP can carry)
        let party = app.party(Role::Merchant);
        let headers = [("idempotency-key", *hostile), ("if-match", *hostile), ("x-correlation-id", *hostile)];
        for header in headers {
            if axum::http::HeaderValue::from_str(header.1).is_err() {
                continue;
            }
            let r = app.post_with("/v1/merchants", &party.token, &json!({"name": "Acme"}), &[header]).await;
            if r.status >= 500 {
                failures.push(format!("header {}: {:?}: {}", header.0, short(hostile), r.status));
            }
        }
        // as every text field: stored exactly as sent, or refused with 422
        let sku = format!("SKU-{i}");
        let mut body = product_body(&sku, 100, 1);
        body["name"] = json!(hostile);
        body["description"] = json!(hostile);
        let r = app.post("/v1/products", &merchant.token, body).await;
        match r.status {
            201 => {
                let events = app.events(StreamCategory::Product, id_of(&r)).await;
                if events[0].data["name"] != json!(hostile) {
                    failures.push(format!("name {:?} stored as {}", short(hostile), events[0].data["name"]));
                }
            }
            422 => {}
            other => failures.push(format!("product name {:?}: {other} {}", short(hostile), r.body)),
        }
        let r = app.post("/v1/products", &merchant.token, product_body(hostile, 100, 1)).await;
        if r.status != 422 {
            failures.push(format!("sku {:?}: {} (expected 422)", short(hostile), r.status));
        }
        let customer = app.party(Role::Customer);
        let mut body = customer_body(hostile);
        body["email"] = json!(format!("{hostile}@example.com"));
        body["shipping_address"]["line1"] = json!(hostile);
        body["shipping_address"]["country"] = json!(hostile);
        let r = app.post("/v1/customers", &customer.token, body).await;
        if r.status != 422 {
            failures.push(format!("customer fields {:?}: {} (expected 422: bad country)", short(hostile), r.status));
        }
        // each text field alone, the rest valid: stored verbatim or 422, never 5xx
        for field in ["name", "line1", "city", "postal_code"] {
            let mut body = customer_body("Ada");
            match field {
                "name" => body["name"] = json!(hostile),
                f => body["shipping_address"][f] = json!(hostile),
            }
            let r = app.post("/v1/customers", &app.party(Role::Customer).token, body).await;
            if ![201, 422].contains(&r.status) {
                failures.push(format!("customer {field} {:?}: {} {}", short(hostile), r.status, r.body));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'events'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(tables, 1);
}

/// An app over its own database with production limits (64 KiB bodies) and `timeout`.
async fn app_with(timeout: Duration) -> TestApp {
    let db = TestDb::new().await;
    ordo_command_api::migrate(&db.pool).await.unwrap();
    let keys = JwtKeys::from_secret(SECRET);
    let commands = CommandService::new(db.store());
    let state = AppState::new(commands.clone(), Arc::new(keys.clone()));
    let router = router(state, Limits { timeout, ..Limits::default() });
    TestApp { db, router, keys, commands }
}

#[tokio::test]
async fn oversized_and_ten_thousand_levels_deep_bodies_are_4xx_and_never_crash_the_server() {
    let app = app_with(Duration::from_secs(30)).await;
    let admin = app.party(Role::Admin);
    let post = |body: Vec<u8>| {
        Request::post("/v1/merchants")
            .header("authorization", format!("Bearer {}", admin.token))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"name\":".repeat(depth), "}".repeat(depth));
    let unclosed = "[".repeat(depth);
    let in_field = format!("{{\"name\": {arrays}}}");
    for (what, body) in [("arrays", arrays), ("objects", objects), ("unclosed", unclosed), ("in a field", in_field)] {
        let r = app.send(post(body.into_bytes())).await;
        assert!([400, 413, 422].contains(&r.status), "{what}: {} {}", r.status, r.body);
        assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    }
    let huge = serde_json::to_vec(&json!({"name": "x".repeat(70 * 1024)})).unwrap();
    let r = app.send(post(huge)).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = app.send(post(json!({"name": "Still serving"}).to_string().into_bytes())).await;
    assert_eq!(r.status, 201, "the app still serves after hostile bodies: {:?}", r.body);
    assert_eq!(app.event_count().await, 1);
}

/// Serves `app` on a port-0 listener; returns its address.
async fn serve(app: &TestApp) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move { ordo_service::http::serve(listener, router, std::future::pending()).await });
    addr
}

/// Sends one raw HTTP/1.1 request and reads the status code of the answer.
async fn raw_status(stream: &mut TcpStream, request: &[u8]) -> u16 {
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"))
}

fn merchant_request(token: &str, body: &str, declared_length: usize) -> Vec<u8> {
    format!(
        "POST /v1/merchants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {declared_length}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_half_body_times_out_while_200_idle_connections_do_not_stop_normal_requests() {
    let app = app_with(Duration::from_secs(2)).await;
    let addr = serve(&app).await;
    let admin = app.party(Role::Admin);

    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let half = merchant_request(&admin.token, "{\"name\": \"Sl", 40);
    let stalled_answer = tokio::spawn(async move { raw_status(&mut stalled, &half).await });

    let mut normal = TcpStream::connect(addr).await.unwrap();
    let body = json!({"id": Uuid::new_v4(), "name": "Acme"}).to_string();
    let status = raw_status(&mut normal, &merchant_request(&admin.token, &body, body.len())).await;
    assert_eq!(status, 201, "a normal request is served while 200 connections idle and one stalls");
    assert!(!stalled_answer.is_finished(), "the normal request did not wait for the stalled one");

    assert_eq!(stalled_answer.await.unwrap(), 503, "the stalled request gets the request timeout");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(app.event_count().await, 1, "only the normal request wrote");
    drop(idle);
}

const FIELDS: [&str; 26] = [
    "id",
    "name",
    "email",
    "shipping_address",
    "line1",
    "line2",
    "city",
    "postal_code",
    "country",
    "sku",
    "description",
    "price",
    "amount_minor",
    "currency",
    "initial_stock",
    "delta",
    "reason",
    "lines",
    "product_id",
    "quantity",
    "amount",
    "payment_reference",
    "carrier",
    "tracking_number",
    "customer_id",
    "merchant_id",
];

/// JSON values shaped like command bodies: the API's field names, edge numbers and strings,
/// real ids, nested up to four levels.
fn json_body(ids: Vec<Uuid>) -> impl Strategy<Value = Value> {
    let strings = prop::sample::select(vec![
        "",
        " ",
        "EUR",
        "eur",
        "DE",
        "restock",
        "write_off",
        "correction",
        "a@b.co",
        "\u{0}",
        "😀",
        "SKU-1",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![0i64, -1, 1, 1000, 1001, i64::MAX, i64::MIN]).prop_map(Value::from),
        prop::sample::select(vec![json!(u64::MAX), json!(1.5), json!(-0.0), json!(1e300), json!(2_000_000_000)]),
        strings.prop_map(Value::from),
        prop::sample::select(ids).prop_map(|id| json!(id)),
        "[ -~]{0,300}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Any body on any command endpoint, as any party, with any content type: never a 5xx, and
/// every refusal is problem+json.
#[test]
fn arbitrary_json_and_byte_bodies_on_every_command_endpoint_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (app, s) = rt.block_on(async {
        let app = spawn_app().await;
        let s = scene(&app, Endpoint::Cancel).await;
        (app, s)
    });
    let ids = vec![s.product, s.order, s.customer.id, s.merchant.id, Uuid::new_v4()];
    let paths = vec![
        "/v1/customers".to_owned(),
        "/v1/merchants".to_owned(),
        "/v1/products".to_owned(),
        format!("/v1/products/{}/price", s.product),
        format!("/v1/products/{}/stock", s.product),
        format!("/v1/products/{}/discontinue", s.product),
        "/v1/orders".to_owned(),
        format!("/v1/orders/{}/payment", s.order),
        format!("/v1/orders/{}/shipment", s.order),
        format!("/v1/orders/{}/delivery", s.order),
        format!("/v1/orders/{}/cancellation", s.order),
    ];
    let tokens = vec![app.party(Role::Admin).token, s.merchant.token.clone(), s.customer.token.clone()];
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (json_body(ids.clone()), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = v.to_string().into_bytes();
            let at = cut.index(bytes.len() + 1);
            bytes[..at].to_vec()
        }),
        json_body(ids).prop_map(|v| v.to_string().into_bytes()),
    ];
    let content_type = prop::sample::select(vec!["application/json", "text/plain", "application/x-www-form"]);
    let cases = (prop::sample::select(paths), prop::sample::select(tokens), body, content_type);
    let config = ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() };
    proptest::test_runner::TestRunner::new(config)
        .run(&cases, |(path, token, body, content_type)| {
            let req = Request::post(&path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", content_type)
                .body(Body::from(body.clone()))
                .unwrap();
            let r = rt.block_on(app.send(req));
            prop_assert!(r.status < 500, "POST {path} {:?} -> {} {}", String::from_utf8_lossy(&body), r.status, r.body);
            if r.status >= 400 {
                prop_assert_eq!(
                    r.header("content-type"),
                    Some("application/problem+json"),
                    "POST {} -> {}",
                    path,
                    r.status
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_forger_signs_like_a_real_hmac_implementation() {
    // RFC 4231 test case 2
    let mac = forge::hmac::<sha2::Sha256>(64, b"Jefe", b"what do ya want for nothing?");
    assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    let mac = forge::hmac::<sha2::Sha512>(128, b"Jefe", b"what do ya want for nothing?");
    assert!(hex::encode(mac).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"));
    assert_eq!(forge::b64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw");
}
