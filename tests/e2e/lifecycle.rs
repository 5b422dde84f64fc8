//! The whole life of orders through both HTTP APIs, with the five real processes between them.

use std::time::Instant;

use ordo_tests::Stack;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{Client, Shop};

fn stock(p: &Value) -> (i64, i64, i64) {
    (p["on_hand"].as_i64().unwrap(), p["reserved"].as_i64().unwrap(), p["available"].as_i64().unwrap())
}

fn types(events: &Value) -> Vec<&str> {
    events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_go_from_placement_to_delivery_rejection_and_cancellation_through_both_apis() {
    let started = Instant::now();
    let stack = Stack::start().await;
    let api = Client::new(&stack);
    let shop = Shop::open(&stack, &api, &[]).await;

    // Listings are readable at once with the token of their command.
    let (a, listed_a) = shop.list(&api, "MUG-BLUE", 1999, 10).await;
    let (b, listed_b) = shop.list(&api, "TEA-500G", 500, 5).await;
    for (p, answer) in [(a, &listed_a), (b, &listed_b)] {
        let got = api.get(&format!("/v1/products/{}?consistency_token={}", p.id, answer.token()), "").await;
        let got = got.expect(200, "read a product");
        assert_eq!(got.consistency(), Some("honoured"));
        assert_eq!(got.body["merchant_id"], json!(shop.merchant_id));
        assert_eq!(got.body["price"], json!({"amount_minor": p.price_minor, "currency": "EUR"}));
        assert_eq!(stock(&got.body), (p.stock, 0, p.stock));
    }
    let path = format!("/v1/products?merchant_id={}&consistency_token={}", shop.merchant_id, listed_b.token());
    let catalog = api.get(&path, "").await.expect(200, "list the catalog");
    assert_eq!(catalog.consistency(), Some("honoured"));
    let mut skus: Vec<&str> =
        catalog.body["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap()).collect();
    skus.sort_unstable();
    assert_eq!(skus, ["MUG-BLUE", "TEA-500G"]);

    // Order 1: placed (202), confirmed by the saga, paid, shipped, delivered.
    let correlation = Uuid::new_v4();
    let placed = shop.order_with(&api, &[(a.id, 2), (b.id, 1)], &[("x-correlation-id", correlation.to_string())]).await;
    let o1 = placed.id();
    let total = 2 * 1999 + 500;
    let pending = api.order_after(o1, &shop.customer, &placed.token()).await;
    assert!(pending["status"] == "pending" || pending["status"] == "confirmed", "{pending}");
    assert_eq!(pending["total"], json!({"amount_minor": total, "currency": "EUR"}));
    assert_eq!(pending["lines"][0]["line_total"], json!({"amount_minor": 3998, "currency": "EUR"}));
    api.order_in(o1, &shop.customer, "confirmed").await;
    assert_eq!(stock(&api.settled_product(a.id).await), (10, 2, 8));
    assert_eq!(stock(&api.settled_product(b.id).await), (5, 1, 4));

    let short = json!({"amount": {"amount_minor": total - 1, "currency": "EUR"}, "payment_reference": "psp-1"});
    let refused = api.post(&format!("/v1/orders/{o1}/payment"), &shop.customer, short).await;
    assert_eq!(refused.expect(422, "pay too little").body["code"], "amount_mismatch");
    let paid = api.pay_when_confirmed(o1, &shop.customer, total).await;
    let order = api.order_after(o1, &shop.customer, &paid.token()).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["payment"]["amount"], json!({"amount_minor": total, "currency": "EUR"}));

    let ship = json!({"carrier": "DHL", "tracking_number": "JD0001"});
    let shipped = api.post(&format!("/v1/orders/{o1}/shipment"), &shop.merchant, ship).await.expect(200, "ship");
    let order = api.order_after(o1, &shop.merchant, &shipped.token()).await;
    assert_eq!(
        (order["status"].as_str(), order["shipment"]["tracking_number"].as_str()),
        (Some("shipped"), Some("JD0001"))
    );
    // The saga commits the reserved stock after the shipment.
    api.product_stock(a.id, 8, 0).await;
    api.product_stock(b.id, 4, 0).await;

    let delivered = api.post(&format!("/v1/orders/{o1}/delivery"), &shop.merchant, json!({})).await;
    let order = api.order_after(o1, &shop.customer, &delivered.expect(200, "deliver").token()).await;
    assert_eq!(order["status"], "delivered");

    // Order 2 asks for more than is available: rejected with the failing line, nothing held.
    let o2 = shop.order(&api, &[(b.id, 1), (a.id, 9)]).await.id();
    let rejected = api.order_in(o2, &shop.customer, "rejected").await;
    let failed = rejected["rejection"]["failed_lines"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{rejected}");
    assert_eq!(failed[0]["product_id"], json!(a.id));
    assert_eq!((failed[0]["requested"].as_i64(), failed[0]["available"].as_i64()), (Some(9), Some(8)));
    assert_eq!(failed[0]["reason"], "out_of_stock");
    assert_eq!(stock(&api.settled_product(a.id).await), (8, 0, 8));
    assert_eq!(stock(&api.settled_product(b.id).await), (4, 0, 4));

    // Order 3 is confirmed, then cancelled: its stock comes back.
    let o3 = shop.order(&api, &[(a.id, 3)]).await.id();
    api.order_in(o3, &shop.customer, "confirmed").await;
    assert_eq!(stock(&api.settled_product(a.id).await), (8, 3, 5));
    let cancel = json!({"reason": "changed my mind"});
    let cancelled = api.post(&format!("/v1/orders/{o3}/cancellation"), &shop.customer, cancel).await;
    let cancelled = cancelled.expect(200, "cancel");
    assert_eq!(api.order_after(o3, &shop.customer, &cancelled.token()).await["status"], "cancelled");
    api.product_stock(a.id, 8, 0).await;

    // The customer's orders, newest first.
    let path = format!("/v1/customers/{}/orders?consistency_token={}", shop.customer_id, cancelled.token());
    let list = api.get(&path, &shop.customer).await.expect(200, "list the customer's orders");
    assert_eq!(list.consistency(), Some("honoured"));
    let items = list.body["items"].as_array().unwrap();
    let seen: Vec<(Value, &str)> = items.iter().map(|o| (o["id"].clone(), o["status"].as_str().unwrap())).collect();
    assert_eq!(seen, [(json!(o3), "cancelled"), (json!(o2), "rejected"), (json!(o1), "delivered")]);

    // Daily sales count the paid order once, with its revenue.
    let path = format!("/v1/merchants/{}/sales?consistency_token={}", shop.merchant_id, paid.token());
    let sales = api.get(&path, &shop.merchant).await.expect(200, "daily sales");
    assert_eq!(sales.consistency(), Some("honoured"));
    let days = sales.body["days"].as_array().unwrap();
    assert_eq!(days.len(), 1, "{}", sales.body);
    assert_eq!(days[0]["orders"], 1);
    assert_eq!(days[0]["revenue"], json!([{"amount_minor": total, "currency": "EUR"}]));

    // The auditor sees order 1's history, hash-chained.
    let history = api.audit(&format!("/v1/audit/streams/order/{o1}/events")).await.expect(200, "history");
    let events = &history.body["events"];
    assert_eq!(types(events), ["OrderPlaced", "OrderConfirmed", "OrderPaid", "OrderShipped", "OrderDelivered"]);
    let events = events.as_array().unwrap();
    assert!(events[0].get("prev_hash").is_none());
    for (i, pair) in events.windows(2).enumerate() {
        assert_eq!(pair[1]["version"], json!(i + 2));
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "the chain breaks at version {}", i + 2);
    }
    assert_eq!(events[0]["metadata"]["correlation_id"], json!(correlation));

    // Everything the placement caused shares its correlation id.
    let caused = api.audit(&format!("/v1/audit/events?correlation_id={correlation}")).await.expect(200, "search");
    let items = &caused.body["items"];
    assert_eq!(types(items), ["OrderPlaced", "StockReserved", "StockReserved", "OrderConfirmed"]);
    let items = items.as_array().unwrap();
    // the saga reserves an order's lines at once, so their order in the log is not fixed
    let mut reserved: Vec<String> = items[1..3].iter().map(|e| e["stream_id"].as_str().unwrap().to_owned()).collect();
    reserved.sort();
    let mut lines = vec![a.id.to_string(), b.id.to_string()];
    lines.sort();
    assert_eq!(reserved, lines);
    for e in &items[1..3] {
        assert_eq!(e["metadata"]["causation_id"], items[0]["metadata"]["event_id"]);
    }

    let verify = api.audit("/v1/audit/verify").await.expect(200, "verify");
    assert_eq!(verify.body["ok"], true, "{}", verify.body);
    assert!(verify.body["checked"].as_i64().unwrap() >= stack.event_count().await, "{}", verify.body);
    assert_eq!(verify.body["broken"], json!([]));
    eprintln!("lifecycle scenario took {:.1}s", started.elapsed().as_secs_f64());
}
