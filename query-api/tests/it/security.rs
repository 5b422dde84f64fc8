//! Hostile input and access control against the query API: the whole authorisation matrix,
//! forged and malformed tokens, injection attempts in every query parameter and path segment,
//! and 200 idle connections. Nothing a request sends ever changes the database.

use std::time::Duration;

use ordo_projectors::testing::{wait_caught_up, Workload};
use ordo_schemas::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{App, SECRET};

/// The data a matrix row reads: one order of a customer with a merchant, one of its products.
struct Scene {
    order: Uuid,
    customer: Uuid,
    merchant: Uuid,
    product: Uuid,
    head_hash: String,
}

async fn scene(app: &App) -> Scene {
    let store = app.db.store();
    let mut w = Workload::setup(&store, 2, 2).await;
    for n in 0..4 {
        w.order(&store, n).await;
    }
    wait_caught_up(&app.db.pool, Duration::from_secs(30)).await;
    let order = w.orders[1];
    let (customer, merchant): (Uuid, Uuid) =
        sqlx::query_as("SELECT customer_id, merchant_id FROM rm_orders WHERE order_id = $1")
            .bind(order)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let head_hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM events WHERE stream_id = $1 AND version = 1")
        .bind(order)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    Scene { order, customer, merchant, product: w.products[&merchant][0], head_hash: hex::encode(head_hash) }
}

/// Expected status per path, in the order customer (owner, stranger), merchant (owner,
/// stranger), admin (owner, stranger), auditor (owner, stranger), anonymous. A customer owns
/// its order and its order list; a merchant the order placed with it, its lists and sales.
fn matrix(s: &Scene) -> Vec<(String, [u16; 9])> {
    let (order, customer, merchant, product) = (s.order, s.customer, s.merchant, s.product);
    let stream = format!("/v1/audit/streams/order/{order}");
    let public = [200; 9];
    let owners_and_admin = [200, 403, 403, 403, 200, 200, 403, 403, 401];
    let merchant_and_admin = [403, 403, 200, 403, 200, 200, 403, 403, 401];
    let audit = [403, 403, 403, 403, 200, 200, 200, 200, 401];
    vec![
        ("/v1/products".into(), public),
        (format!("/v1/products/{product}"), public),
        (format!("/v1/orders/{order}"), [200, 403, 200, 403, 200, 200, 200, 200, 401]),
        (format!("/v1/customers/{customer}/orders"), owners_and_admin),
        (format!("/v1/merchants/{merchant}/orders"), merchant_and_admin),
        (format!("/v1/merchants/{merchant}/sales"), merchant_and_admin),
        ("/v1/projections".into(), audit),
        ("/v1/projections/dead-letters".into(), audit),
        ("/v1/projections/parked".into(), audit),
        ("/v1/log/status".into(), audit),
        ("/v1/log/events?from=start".into(), audit),
        (format!("{stream}/events"), audit),
        (format!("{stream}/state?version=1"), audit),
        (format!("{stream}/digest"), audit),
        (format!("{stream}/digest/proof?version=1&hash={}", s.head_hash), audit),
        ("/v1/audit/events?limit=5".into(), audit),
        (format!("/v1/audit/verify?category=order&id={order}"), audit),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_endpoint_answers_every_role_and_ownership_exactly_as_the_contract_says() {
    let app = App::spawn().await;
    let s = scene(&app).await;
    let roles = [Role::Customer, Role::Merchant, Role::Admin, Role::Auditor];
    let mut failures = Vec::new();
    for (path, expected) in matrix(&s) {
        for (i, expected) in expected.into_iter().enumerate() {
            let who = roles.get(i / 2).map(|role| {
                let owner = i % 2 == 0;
                let subject = match (role, owner) {
                    (_, false) => Uuid::new_v4(),
                    (Role::Merchant, true) => s.merchant,
                    (_, true) => s.customer,
                };
                (*role, subject, owner)
            });
            let resp = app.get(&path, who.map(|(role, subject, _)| (role, subject))).send().await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let problem = content_type.as_deref() == Some("application/problem+json");
            if status != expected || (status >= 400) != problem {
                let ownership = match who {
                    Some((_, _, true)) => "owner",
                    Some(_) => "not owner",
                    None => "no token",
                };
                let role = who.map(|w| w.0);
                failures.push(format!("GET {path} as {role:?} ({ownership}): {status} (expected {expected})"));
            }
        }
    }
    assert!(failures.is_empty(), "{} rows failed:\n{}", failures.len(), failures.join("\n"));
    app.stop().await;
}

/// JWTs built by hand. HMAC runs on Postgres' built-in `sha256`/`sha384`/`sha512` (this crate
/// has no hashing dependency); the answer is checked against RFC 4231 below.
struct Forge<'a> {
    pool: &'a PgPool,
}

impl Forge<'_> {
    fn b64(bytes: &[u8]) -> String {
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

    async fn hmac(&self, alg: &str, key: &[u8], message: &[u8]) -> Vec<u8> {
        let (function, block) = match alg {
            "HS384" => ("sha384", 128),
            "HS512" => ("sha512", 128),
            _ => ("sha256", 64),
        };
        let mut k = key.to_vec();
        k.resize(block, 0);
        let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let sql = format!("SELECT {function}($1 || {function}($2 || $3))");
        sqlx::query_scalar(&sql).bind(pad(0x5c)).bind(pad(0x36)).bind(message).fetch_one(self.pool).await.unwrap()
    }

    async fn token(&self, alg: &str, payload: &Value, secret: &[u8]) -> String {
        let header = json!({"alg": alg, "typ": "JWT"});
        let input =
            format!("{}.{}", Self::b64(header.to_string().as_bytes()), Self::b64(payload.to_string().as_bytes()));
        let signature = if alg == "none" { Vec::new() } else { self.hmac(alg, secret, input.as_bytes()).await };
        format!("{input}.{}", Self::b64(&signature))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_malformed_tokens_are_401_problems_on_every_protected_endpoint() {
    let app = App::spawn().await;
    let forge = Forge { pool: &app.db.pool };
    let mac = forge.hmac("HS256", b"Jefe", b"what do ya want for nothing?").await;
    assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    let secret = SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let sub = Uuid::new_v4();
    let claims = |changes: Value| {
        let mut c = serde_json::Map::new();
        c.extend([
            ("sub".to_owned(), json!(sub)),
            ("role".to_owned(), json!("admin")),
            ("exp".to_owned(), json!(now + 600)),
        ]);
        for (k, v) in changes.as_object().into_iter().flatten() {
            match v {
                Value::Null => c.remove(k),
                v => c.insert(k.clone(), v.clone()),
            };
        }
        Value::Object(c)
    };
    let honest = forge.token("HS256", &claims(json!({})), secret).await;
    let resp = app.http.get(format!("{}/v1/projections", app.base)).bearer_auth(&honest).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the forger is sound: its honest token is accepted");

    let customer = app.token(Role::Customer, sub);
    let parts: Vec<&str> = customer.split('.').collect();
    let escalated = format!("{}.{}.{}", parts[0], Forge::b64(claims(json!({})).to_string().as_bytes()), parts[2]);
    let mut attacks: Vec<(&str, String)> = vec![
        ("role escalated in the payload, signature kept", escalated),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        ("garbage", "garbage".into()),
        ("three garbage parts", "a.b.c".into()),
    ];
    for (what, alg, changes, key) in [
        ("expired", "HS256", json!({"exp": now - 3600}), secret),
        ("not yet valid", "HS256", json!({"nbf": now + 3600}), secret),
        ("alg none", "none", json!({}), secret),
        ("HS384 with the same secret", "HS384", json!({}), secret),
        ("HS512 with the same secret", "HS512", json!({}), secret),
        ("RS256 header over an HMAC signature", "RS256", json!({}), secret),
        ("wrong key", "HS256", json!({}), b"not the secret".as_slice()),
        ("missing sub", "HS256", json!({"sub": null}), secret),
        ("missing role", "HS256", json!({"role": null}), secret),
        ("missing exp", "HS256", json!({"exp": null}), secret),
        ("sub not a uuid", "HS256", json!({"sub": "' OR 1=1 --"}), secret),
        ("unknown role", "HS256", json!({"role": "superuser"}), secret),
        ("role system", "HS256", json!({"role": "system"}), secret),
        ("role in capitals", "HS256", json!({"role": "ADMIN"}), secret),
        ("exp not a number", "HS256", json!({"exp": "never"}), secret),
    ] {
        attacks.push((what, forge.token(alg, &claims(changes), key).await));
    }
    let mut headers: Vec<(&str, String)> = attacks.into_iter().map(|(w, t)| (w, format!("Bearer {t}"))).collect();
    headers.extend([
        (
            "alg none without signature part",
            format!("Bearer {}", {
                let t = forge.token("none", &claims(json!({})), secret).await;
                t.trim_end_matches('.').to_owned()
            }),
        ),
        ("empty bearer", "Bearer ".to_owned()),
        ("basic scheme", "Basic YWRtaW46YWRtaW4=".to_owned()),
        ("no scheme", honest.clone()),
    ]);

    let order = Uuid::new_v4();
    let paths = [
        "/v1/projections".to_owned(),
        format!("/v1/orders/{order}"),
        format!("/v1/customers/{sub}/orders"),
        format!("/v1/merchants/{sub}/sales"),
        "/v1/audit/events".to_owned(),
        "/v1/audit/verify".to_owned(),
        "/v1/products".to_owned(),
    ];
    let before = counts(&app.db.pool).await;
    let mut failures = Vec::new();
    for (what, authorization) in &headers {
        for path in &paths {
            let resp = app
                .http
                .get(format!("{}{path}", app.base))
                .header("authorization", authorization)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if (status, ct.as_str(), body["code"].as_str()) != (401, "application/problem+json", Some("unauthorized")) {
                failures.push(format!("{what} on {path}: {status} {body}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(counts(&app.db.pool).await, before);
    app.stop().await;
}

/// Rows of the event log, the read models and the dead letters.
async fn counts(pool: &PgPool) -> Vec<i64> {
    let mut out = Vec::new();
    for table in ["events", "rm_products", "rm_orders", "rm_merchant_daily_sales", "dead_letters", "parked_streams"] {
        out.push(sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap());
    }
    out
}

/// Values an attacker tries, already percent-encoded for a URL. A 4xx, an empty result or the
/// answer of the same request without the value passes.
const HOSTILE: [&str; 12] = [
    "%27%20OR%201%3D1%20--",
    "%27%3B%20DROP%20TABLE%20events%3B%20--",
    "1%3B%20SELECT%20pg_sleep(5)",
    "%00",
    "abc%00def",
    "%25",
    "_",
    "%5C",
    "%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%F0%9F%98%80%E2%80%AE",
    "..%2F..%2Fetc%2Fpasswd",
    "99999999999999999999999",
    "-7",
];

/// True when an answer lists nothing (items, events or days).
fn lists_nothing(body: &Value) -> bool {
    ["items", "events", "days"].iter().any(|k| body[k].as_array().is_some_and(Vec::is_empty))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_in_every_query_parameter_and_path_segment_is_refused_or_finds_nothing() {
    let app = App::spawn().await;
    let s = scene(&app).await;
    let (customer, merchant, order) = (s.customer, s.merchant, s.order);
    let mut long = "x".repeat(5_000);
    long.push_str("%27");
    let values: Vec<String> = HOSTILE.iter().map(|v| (*v).to_owned()).chain([long]).collect();
    let with_param = |path: &str, params: &[&str]| -> Vec<String> {
        params.iter().map(|p| format!("{path}{}{p}=", if path.contains('?') { '&' } else { '?' })).collect()
    };
    let mut templates = Vec::new();
    templates
        .extend(with_param("/v1/products", &["merchant_id", "q", "in_stock", "limit", "cursor", "consistency_token"]));
    templates.extend(with_param(
        &format!("/v1/customers/{customer}/orders"),
        &["status", "limit", "cursor", "consistency_token"],
    ));
    templates.extend(with_param(&format!("/v1/merchants/{merchant}/orders"), &["status", "limit", "cursor"]));
    templates.extend(with_param(&format!("/v1/merchants/{merchant}/sales"), &["from", "to", "consistency_token"]));
    templates.extend(with_param(&format!("/v1/orders/{order}"), &["consistency_token"]));
    let stream = format!("/v1/audit/streams/order/{order}");
    templates.extend(with_param(&format!("{stream}/events"), &["from_version", "to_version"]));
    templates.extend(with_param(&format!("{stream}/state"), &["at", "version"]));
    templates.extend(with_param(&format!("{stream}/digest/proof?version=1"), &["hash"]));
    templates.extend(with_param(&format!("{stream}/digest/proof?hash={}", s.head_hash), &["version"]));
    templates.extend(with_param(
        "/v1/audit/events",
        &["from", "to", "type", "actor", "correlation_id", "category", "limit", "cursor"],
    ));
    templates.extend(with_param("/v1/audit/verify", &["category", "id"]));
    let segments = [
        "/v1/products/{}",
        "/v1/orders/{}",
        "/v1/customers/{}/orders",
        "/v1/merchants/{}/orders",
        "/v1/merchants/{}/sales",
        "/v1/audit/streams/{}/x/events",
        "/v1/audit/streams/order/{}/events",
        "/v1/audit/streams/order/{}/state",
        "/v1/audit/streams/order/{}/digest",
    ];
    // (hostile url, the same url without the hostile parameter)
    let mut urls: Vec<(String, Option<String>)> = Vec::new();
    for v in &values {
        urls.extend(
            templates.iter().map(|t| (format!("{t}{v}"), t.rsplit_once(['?', '&']).map(|(b, _)| b.to_owned()))),
        );
        urls.extend(segments.iter().map(|t| (t.replace("{}", v), None)));
    }

    let before = counts(&app.db.pool).await;
    let mut failures = Vec::new();
    let admin = Some((Role::Admin, Uuid::new_v4()));
    for (url, without) in &urls {
        let resp = app.get(url, admin).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let mut fine = (400..500).contains(&status) || (status == 200 && lists_nothing(&body));
        if let (false, 200, Some(without)) = (fine, status, without) {
            // a value clamped or ignored reveals nothing beyond the request without it
            let plain: Value = app.get(without, admin).send().await.unwrap().json().await.unwrap_or(Value::Null);
            fine = plain == body;
        }
        if !fine {
            let shown: String = url.chars().take(120).collect();
            failures.push(format!("GET {shown}: {status} {}", body.to_string().chars().take(200).collect::<String>()));
        }
    }
    assert!(failures.is_empty(), "{} of {} requests failed:\n{}", failures.len(), urls.len(), failures.join("\n"));
    assert_eq!(counts(&app.db.pool).await, before, "the database is unchanged");
    let all: Value = app.get("/v1/products", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 8, "the catalog is intact and `%` above matched nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_connections_do_not_stop_a_normal_request() {
    let app = App::spawn().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // and one that sent half its request line and stalls
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /v1/prod").await.unwrap();
    let started = std::time::Instant::now();
    let resp = app.get("/v1/products", None).timeout(Duration::from_secs(10)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5), "served in {:?}", started.elapsed());
    drop(idle);
    drop(half);
    app.stop().await;
}
