//! The console in a real headless browser against the whole stack: signing in (and refusing bad
//! and expired tokens readably), searching the log, following a live order from placement to
//! confirmation without reloading, the in-browser chain verification before and after a
//! tampered row, the retry of a parked stream by an admin, an auditor without the retry button
//! and refused by the endpoint, and customers and merchants seeing only what is theirs.
//!
//! The screenshot it takes lands in the stack's log folder; with `ORDO_UPDATE_SCREENSHOT=1` it
//! also replaces `docs/console.png`, which the README shows.

mod browser;

use std::path::Path;
use std::time::Instant;

use ordo_schemas::Role;
use ordo_tests::Stack;
use serde_json::json;
use uuid::Uuid;

use crate::client::{Client, Shop};
use browser::Browser;

/// What a stack trace in the page would look like; readable messages never contain it.
fn assert_readable(message: &str) {
    assert!(!message.trim().is_empty(), "a message is shown");
    for trace in ["    at ", ".js:", "TypeError", "ReferenceError", "undefined"] {
        assert!(!message.contains(trace), "the page shows a stack trace or raw error: {message:?}");
    }
}

async fn sign_in(browser: &Browser, stack: &Stack, token: &str, role: &str) {
    if browser.count("#sign-out:not([hidden])").await > 0 {
        browser.click("#sign-out").await;
    }
    browser.goto(&format!("{}#token={token}", stack.query("/console"))).await;
    browser.text_containing("#who", role).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(token), "the token leaves the address bar: {url}");
}

/// Shows `hash` (a view of the console) in the page already open.
async fn open(browser: &Browser, hash: &str) {
    browser.client.execute("location.hash = arguments[0];", vec![json!(hash)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_searches_follows_verifies_retries_and_respects_every_role() {
    let started = Instant::now();
    let stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[(1999, 50), (500, 50)]).await;
    let stack_ready = started.elapsed();
    let browser = Browser::start(stack.log_dir()).await;
    let admin_id = Uuid::new_v4();
    let admin = stack.token(admin_id, Role::Admin);

    refuses_bad_and_expired_tokens_readably(&browser, &stack).await;
    sign_in(&browser, &stack, &admin, "admin").await;
    let order = follows_an_order_live_and_searches_the_log(&browser, &api, &shop).await;
    verifies_the_chain_and_names_a_tampered_version(&browser, &stack, &api, order).await;
    let retried = retries_a_parked_stream_as_admin(&browser, &stack, &api, &shop, admin_id).await;
    screenshot(&browser, &stack, retried).await;

    let auditor = stack.token(Uuid::new_v4(), Role::Auditor);
    sign_in(&browser, &stack, &auditor, "auditor").await;
    auditor_has_no_retry_button_and_is_refused_anyway(&browser, &stack, &auditor, order).await;
    customers_and_merchants_see_only_theirs(&browser, &stack, &api, &shop, order).await;
    an_expired_session_asks_to_sign_in_again(&browser, &stack, &shop).await;

    browser.close().await;
    eprintln!(
        "console browser scenario took {:.1}s ({:.1}s of it starting the stack)",
        started.elapsed().as_secs_f64(),
        stack_ready.as_secs_f64()
    );
}

async fn refuses_bad_and_expired_tokens_readably(browser: &Browser, stack: &Stack) {
    browser.goto(&stack.query("/console")).await;
    browser.find("#sign-in:not([hidden])").await;
    browser.fill("#token", "not-a-token").await;
    browser.click("#sign-in-button").await;
    let message = browser.text_containing("#message", "invalid token").await;
    assert!(message.contains("Unauthorized (401)"), "{message}");
    assert_readable(&message);

    let expired = stack.token_for(Uuid::new_v4(), Role::Admin, chrono::Duration::hours(-1));
    browser.set_value("#token", &expired).await;
    browser.click("#sign-in-button").await;
    let message = browser.text_containing("#message", "expired").await;
    assert_readable(&message);
    assert_eq!(browser.count("#nav:not([hidden])").await, 0, "nothing opens without a valid token");
}

/// Follows the order category live while an order is placed and confirmed, then finds its
/// flow by correlation id and opens its first event. Returns the order id.
async fn follows_an_order_live_and_searches_the_log(browser: &Browser, api: &Client, shop: &Shop) -> Uuid {
    open(browser, "#/log").await;
    browser.find("#search-form").await;
    browser.set_value("#search-category", "order").await;
    browser.click("#live-toggle").await;
    browser.text_containing("#live-state", "live").await;
    browser.client.execute("window.sameDocument = 'yes';", vec![]).await.unwrap();

    let correlation = Uuid::new_v4();
    let lines = [(shop.products[0].id, 2), (shop.products[1].id, 1)];
    let order = shop.order_with(api, &lines, &[("x-correlation-id", correlation.to_string())]).await.id();
    for step in ["OrderPlaced", "OrderConfirmed"] {
        let row = format!("#live-table tr[data-stream='{order}'][data-type='{step}']");
        browser
            .until(&format!("{step} in the live table"), || async { (browser.count(&row).await == 1).then_some(()) })
            .await;
    }
    let same = browser.client.execute("return window.sameDocument;", vec![]).await.unwrap();
    assert_eq!(same, json!("yes"), "the page was never reloaded");
    browser.click("#live-toggle").await;

    browser.set_value("#search-category", "").await;
    browser.fill("#search-correlation", &correlation.to_string()).await;
    browser.click("#search-button").await;
    let results = browser.text_containing("#search-table", "OrderConfirmed").await;
    let types: Vec<&str> =
        ["OrderPlaced", "StockReserved", "OrderConfirmed"].into_iter().filter(|t| results.contains(t)).collect();
    assert_eq!(types.len(), 3, "the whole flow shares the correlation id: {results}");
    // Bad input is the API's problem answer, shown as a sentence.
    browser.fill("#search-actor", "nobody").await;
    browser.click("#search-button").await;
    let message = browser.text_containing("#message", "actor").await;
    assert!(message.starts_with("Bad Request (400)"), "{message}");
    assert_readable(&message);
    browser.fill("#search-actor", "").await;
    browser.click("#search-button").await;
    browser.text_containing("#search-table", "OrderConfirmed").await;

    browser.click("#search-table tbody tr").await;
    let detail = browser.text_containing("#event-detail", "OrderPlaced").await;
    assert!(detail.contains("(none: first event)"), "{detail}");
    let hash = browser.text("#detail-hash").await;
    assert_eq!(hash.len(), 64, "{detail}");
    order
}

async fn verifies_the_chain_and_names_a_tampered_version(browser: &Browser, stack: &Stack, api: &Client, order: Uuid) {
    // The order's timeline follows it live: a payment appears without reloading.
    open(browser, &format!("#/orders/{order}")).await;
    browser.text_containing("#order-live", "live").await;
    browser.find("#timeline li[data-step='confirmed'].done").await;
    let total: i64 = 2 * 1999 + 500;
    let body = json!({"amount": {"amount_minor": total, "currency": "EUR"}, "payment_reference": "console-1"});
    let token = stack.token(api_customer(api, order).await, Role::Customer);
    api.post(&format!("/v1/orders/{order}/payment"), &token, body).await.expect(200, "pay");
    let paid = browser.text_containing("#timeline li[data-step='paid']", "console-1").await;
    assert!(paid.contains("44.98 EUR"), "{paid}");
    let links = browser.count("#timeline li[data-step='reserved'] a.event-link").await;
    assert_eq!(links, 2, "each reservation links to its event");

    open(browser, &format!("#/stream/order/{order}")).await;
    browser.click("#verify-button").await;
    browser.text_containing("#verify-verdict", "Chain intact: 3 events").await;

    // Strings and key orders that canonical JSON must get exactly right, recomputed by the page.
    let awkward = awkward_stream(stack).await;
    open(browser, &format!("#/stream/customer/{awkward}")).await;
    browser.click("#verify-button").await;
    browser.text_containing("#verify-verdict", "Chain intact: 3 events").await;

    // Someone with table ownership rewrites the confirmation, bypassing the append-only trigger.
    let mut tx = stack.db.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE events SET data = '{\"forged\": true}' WHERE stream_id = $1 AND version = 2")
        .bind(order)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();

    open(browser, &format!("#/stream/order/{order}")).await;
    browser.text_containing("#stream-out", "OrderPaid").await;
    browser.click("#verify-button").await;
    let verdict = browser.text_containing("#verify-verdict", "broken").await;
    assert_eq!(verdict, "Chain broken at version 2 (hash mismatch)");
    assert_eq!(browser.count("#verify-broken li").await, 1, "only the altered event is named");
    assert_eq!(browser.count("#verify-broken li[data-version='2']").await, 1);
    let server = api.audit(&format!("/v1/audit/verify?category=order&id={order}")).await.expect(200, "verify");
    assert_eq!(server.body["broken"][0]["version"], 2, "the server's own verification agrees");
}

/// A customer stream of three events whose payloads hold quotes, backslashes, control
/// characters, non-ASCII text, an emoji, mixed-case keys and nested arrays (no member is a
/// personal field, so all of them are stored and hashed as written).
async fn awkward_stream(stack: &Stack) -> Uuid {
    use ordo_event_store::{ExpectedVersion, NewEvent, StreamRef};
    use ordo_schemas::{Actor, EventMetadata, StreamCategory};
    let stream = StreamRef::new(StreamCategory::Customer, Uuid::new_v4());
    let events = (1..=3)
        .map(|n| NewEvent {
            event_type: "CustomerRegistered".into(),
            schema_version: 1,
            data: json!({
                "label": format!("Zoë \"Z\" O'Brien \\ {n}"),
                "notes": "tab\there\nnewline, bell\u{7}, del\u{7f}, line sep\u{2028}, 😀, 漢字, </script>",
                "z": {"b": [3, -2, 0, null, true, false], "a": {"y": "", "X": 9_007_199_254_740_991_i64}},
                "Alpha": n,
            }),
            metadata: EventMetadata {
                event_id: Uuid::new_v4(),
                correlation_id: Uuid::new_v4(),
                causation_id: (n == 2).then(Uuid::new_v4),
                actor: Actor { id: Uuid::new_v4(), role: Role::Admin },
                traceparent: (n == 3).then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
                tracestate: None,
            },
        })
        .collect();
    stack.db.store().append(stream, ExpectedVersion::NoStream, events).await.unwrap();
    stream.id
}

/// The customer of an order, from the order read model.
async fn api_customer(api: &Client, order: Uuid) -> Uuid {
    let o = api.admin(&format!("/v1/orders/{order}")).await.expect(200, "read the order");
    o.body["customer_id"].as_str().unwrap().parse().unwrap()
}

/// Parks an order stream in the orders projection as a poison event would, pays the order
/// (the projection holds the payment back), and retries it from the console.
async fn retries_a_parked_stream_as_admin(
    browser: &Browser,
    stack: &Stack,
    api: &Client,
    shop: &Shop,
    admin_id: Uuid,
) -> Uuid {
    let order = shop.order(api, &[(shop.products[1].id, 1)]).await.id();
    api.order_in(order, &shop.customer, "confirmed").await;
    park(stack, order, "an earlier release could not apply OrderConfirmed").await;
    api.pay_when_confirmed(order, &shop.customer, 500).await;

    open(browser, "#/operations").await;
    let row = format!("#parked-table button.retry[data-stream='{order}']");
    browser.find(&row).await;
    browser.text_containing("#dead-letters-table", "an earlier release could not apply").await;
    browser.text_containing("#projections-table", "degraded").await;
    browser.text_containing("#relay-leader", "pid").await;
    browser.click(&row).await;
    let message = browser.text_containing("#message", "unparked").await;
    assert!(message.contains(&order.to_string()), "{message}");
    browser.until("the parked stream to disappear", || async { (browser.count(&row).await == 0).then_some(()) }).await;
    api.order_in(order, &shop.customer, "paid").await;

    // Audited: the query API logged the retry with the admin's id.
    browser
        .until("the retry in the query API's log", || async {
            let text = read_logs(stack.log_dir(), "query-api");
            text.lines().any(|l| l.contains("parked stream retried") && l.contains(&admin_id.to_string())).then_some(())
        })
        .await;
    order
}

async fn park(stack: &Stack, order: Uuid, reason: &str) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dead_letters (projection, kind, category, stream_id, version, error, payload) \
         VALUES ('orders', 'poison', 'order', $1, 2, $2, '\\x') RETURNING id",
    )
    .bind(order)
    .bind(reason)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO parked_streams (projection, category, stream_id, reason, dead_letter_id) VALUES ('orders', 'order', $1, $2, $3)",
    )
    .bind(order)
    .bind(reason)
    .bind(id)
    .execute(&stack.db.pool)
    .await
    .unwrap();
}

fn read_logs(dir: &Path, binary: &str) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(binary) {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

async fn screenshot(browser: &Browser, stack: &Stack, order: Uuid) {
    open(browser, &format!("#/stream/order/{order}/3")).await;
    browser.click("#verify-button").await;
    browser.text_containing("#verify-verdict", "Chain intact").await;
    browser.text_containing("#event-detail", "OrderPaid").await;
    // The state as the aggregate folds it at version 1, and what changed from 1 to 3.
    browser.fill("#asof-version", "1").await;
    browser.click("#asof-button").await;
    let state = browser.text_containing("#asof-state", "as of version 1").await;
    assert!(state.contains("\"status\": \"pending\""), "{state}");
    browser.fill("#diff-from", "1").await;
    browser.click("#diff-button").await;
    let diff = browser.text_containing("#diff-table", "payment").await;
    assert!(diff.contains("status") && diff.contains("\"paid\"") && !diff.contains("lines"), "{diff}");
    browser.client.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
    let shot = stack.log_dir().join("console.png");
    browser.screenshot(&shot).await;
    if std::env::var_os("ORDO_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console.png");
        std::fs::copy(&shot, &docs).unwrap();
    }
}

async fn auditor_has_no_retry_button_and_is_refused_anyway(
    browser: &Browser,
    stack: &Stack,
    auditor: &str,
    tampered: Uuid,
) {
    park(stack, tampered, "left parked for the auditor").await;
    open(browser, "#/operations").await;
    browser.text_containing("#parked-table", &tampered.to_string()).await;
    assert_eq!(browser.count("button.retry").await, 0, "no retry button for an auditor");
    browser.text_containing("#parked", "needs an admin").await;

    let (status, content_type, body) =
        browser.fetch("POST", "/v1/projections/parked/retry", auditor, Some(json!({}))).await;
    assert_eq!((status, content_type.as_str()), (403, "application/problem+json"), "{body}");
    assert_eq!(body["code"], "forbidden");
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_streams WHERE stream_id = $1")
        .bind(tampered)
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(still, 1, "the refused call changed nothing");
}

async fn customers_and_merchants_see_only_theirs(
    browser: &Browser,
    stack: &Stack,
    api: &Client,
    shop: &Shop,
    order: Uuid,
) {
    let other = Shop::open(stack, api, &[(300, 5)]).await;
    let foreign = other.order(api, &[(other.products[0].id, 1)]).await.id();
    api.order_in(foreign, &other.customer, "confirmed").await;

    sign_in(browser, stack, &shop.customer, "customer").await;
    assert_eq!(browser.count("#nav a[data-view='log']:not([hidden])").await, 0, "no log view for a customer");
    browser.text_containing("#order-list", &order.to_string()).await;
    assert!(!browser.text("#order-list").await.contains(&foreign.to_string()));
    open(browser, "#/log").await;
    browser.text_containing("#view h1", "Orders").await;
    let (status, _, body) = browser.fetch("GET", "/v1/audit/events", &shop.customer, None).await;
    assert_eq!(status, 403, "{body}");
    open(browser, &format!("#/orders/{foreign}")).await;
    let message = browser.text_containing("#message", "(40").await;
    assert!(message.starts_with("Forbidden (403)") || message.starts_with("Not Found (404)"), "{message}");
    assert_readable(&message);
    assert_eq!(browser.count("#order-status").await, 0, "nothing of another customer's order is shown");

    sign_in(browser, stack, &shop.merchant, "merchant").await;
    browser.find("#sales-chart rect").await;
    assert_eq!(browser.count("#sales-chart rect").await, 31, "one bar per day of the last 30 days and today");
    assert!(browser.count("#sales-chart text").await >= 4, "paid orders above their bars, axis and scale labels");
    browser.text_containing("#order-list", &order.to_string()).await;
    let (status, _, _) =
        browser.fetch("GET", &format!("/v1/merchants/{}/sales", other.merchant_id), &shop.merchant, None).await;
    assert_eq!(status, 403, "another merchant's sales stay closed");
}

async fn an_expired_session_asks_to_sign_in_again(browser: &Browser, stack: &Stack, shop: &Shop) {
    let expired = stack.token_for(shop.merchant_id, Role::Merchant, chrono::Duration::minutes(-10));
    browser.client.execute("sessionStorage.setItem('ordo.token', arguments[0]);", vec![json!(expired)]).await.unwrap();
    open(browser, "#/orders").await;
    let message = browser.text_containing("#message", "expired").await;
    assert!(message.contains("Sign in again"), "{message}");
    assert_readable(&message);
    browser.find("#sign-in:not([hidden])").await;
}
