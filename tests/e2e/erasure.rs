//! Erasure over HTTP with the five real processes: afterwards no read model, query API answer,
//! audit answer, Kafka message or `ordo replay` output holds the customer's personal data in
//! clear.

use std::time::{Duration, Instant};

use ordo_event_store::kafka::{topics, ConsumerSettings, EventConsumer};
use ordo_schemas::Role;
use ordo_tests::Stack;
use rdkafka::Message;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{Client, Shop};

/// Tables of the database whose rows' text form holds `needle`, with how many rows.
async fn tables_containing(stack: &Stack, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for table in tables {
        // the table name comes from the catalog, quoted by the database; the needle is bound
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"))
            .bind(needle)
            .fetch_one(&stack.db.pool)
            .await
            .unwrap();
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

/// Every message of the four topics, read from the start until one is the erasure of
/// `customer` (the relay publishes in log order per stream, and the erasure is the last event
/// written here).
async fn messages_until_erasure_of(stack: &Stack, customer: Uuid) -> Vec<String> {
    let settings =
        ConsumerSettings::new(stack.broker.bootstrap(), format!("e2e-erasure-{}", Uuid::new_v4()), &topics());
    let mut consumer = EventConsumer::start(settings).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(left, consumer.recv()).await else {
            panic!("no erasure of {customer} on Kafka within 60 s ({} messages read)", out.len());
        };
        let text = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        let done = text.contains("PersonalDataErased") && text.contains(&customer.to_string());
        out.push(text);
        if done {
            break;
        }
    }
    consumer.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_erasure_over_http_nothing_ordo_serves_stores_or_publishes_holds_the_personal_data() {
    let stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(1999, 10)]).await;
    let product = shop.products[0].id;

    let customer_id = Uuid::new_v4();
    let customer = stack.token(customer_id, Role::Customer);
    let tag = Uuid::new_v4().simple().to_string();
    let email = format!("grace-{tag}@example.com");
    let line1 = format!("12 Hidden Lane {tag}");
    let reference = format!("card-ending-{tag}");
    let secrets = [email.clone(), line1.clone(), reference.clone(), "Grace Hopper".to_owned()];
    let address = json!({"line1": line1, "city": "Arlington", "postal_code": "22201", "country": "US"});
    let body = json!({"name": "Grace Hopper", "email": email, "shipping_address": address});
    api.post("/v1/customers", &customer, body).await.expect(201, "register the customer");
    let lines = json!({"lines": [{"product_id": product, "quantity": 1}]});
    let order = api.post("/v1/orders", &customer, lines).await.expect(202, "place an order").id();
    api.order_in(order, &customer, "confirmed").await;
    let pay = json!({"amount": {"amount_minor": 1999, "currency": "EUR"}, "payment_reference": reference});
    api.post(&format!("/v1/orders/{order}/payment"), &customer, pay).await.expect(200, "pay the order");
    let paid = api.order_in(order, &customer, "paid").await;
    assert_eq!(paid["shipping_address"]["line1"], json!(line1), "readable before the erasure");
    assert_eq!(paid["payment"]["payment_reference"], json!(reference));
    let history = api.audit(&format!("/v1/audit/streams/customer/{customer_id}/events")).await.expect(200, "events");
    assert_eq!(history.body["events"][0]["data"]["email"], json!(email), "auditors read it before the erasure");

    let erase = json!({"reason": "ticket 42"});
    api.post(&format!("/v1/customers/{customer_id}/erasure"), &customer, erase).await.expect(200, "erase");

    let shown = api.get(&format!("/v1/orders/{order}"), &customer).await.expect(200, "read the order");
    assert_eq!(shown.body["shipping_address"], Value::Null, "{}", shown.body);
    assert_eq!(shown.body["payment"]["payment_reference"], Value::Null, "{}", shown.body);
    let page = api.get(&format!("/v1/customers/{customer_id}/orders"), &customer).await.expect(200, "list");
    let audit = [
        api.audit(&format!("/v1/audit/streams/customer/{customer_id}/events")).await.expect(200, "events").body,
        api.audit(&format!("/v1/audit/streams/customer/{customer_id}/state")).await.expect(200, "state").body,
        api.audit(&format!("/v1/audit/streams/order/{order}/events")).await.expect(200, "events").body,
        api.audit(&format!("/v1/audit/streams/order/{order}/state")).await.expect(200, "state").body,
    ];
    let messages = messages_until_erasure_of(&stack, customer_id).await;
    let replay = stack.ordo(&["replay"], Duration::from_secs(120)).await;
    assert!(replay.status.success(), "ordo replay: {}", String::from_utf8_lossy(&replay.stderr));
    let replay = format!("{}{}", String::from_utf8_lossy(&replay.stdout), String::from_utf8_lossy(&replay.stderr));
    let mut exports = Vec::new();
    for args in [&["export"][..], &["export", "--decrypt"]] {
        let out = stack.ordo(args, Duration::from_secs(120)).await;
        assert!(out.status.success(), "ordo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        exports.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }

    for secret in &secrets {
        assert!(tables_containing(&stack, secret).await.is_empty(), "{secret} in the database");
        for answer in [&shown.body, &page.body].into_iter().chain(&audit) {
            assert!(!answer.to_string().contains(secret.as_str()), "{secret} in an answer: {answer}");
        }
        assert!(!messages.iter().any(|m| m.contains(secret.as_str())), "{secret} in a Kafka message");
        assert!(!replay.contains(secret.as_str()), "{secret} in ordo replay: {replay}");
        assert!(!exports.iter().any(|e| e.contains(secret.as_str())), "{secret} in ordo export");
    }
    assert!(messages.iter().any(|m| m.contains("{\"sealed\":\"v2.")), "the messages carry the sealed values");
}
