//! Order placement, the lifecycle commands and who may issue them.

use ordo_command_api::CommandContext;
use ordo_schemas::{OrderEvent, ProductEvent, Role, StreamCategory};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{address, eur, id_of, spawn_app};

#[tokio::test]
async fn placing_an_order_answers_202_and_prices_lines_from_the_products() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let (a, b) = (app.product(&merchant, 1999, 10).await, app.product(&merchant, 500, 10).await);
    let body = json!({"lines": [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 3}]});

    let r = app.post("/v1/orders", &customer.token, body).await;

    assert_eq!(r.status, 202, "{:?}", r.body);
    let order = id_of(&r);
    assert_eq!(r.header("location"), Some(format!("http://127.0.0.1:8081/v1/orders/{order}").as_str()));
    assert_eq!(r.header("etag"), Some("\"1\""));
    let stored = app.events(StreamCategory::Order, order).await;
    assert!(
        ordo_schemas::SealedField::is_current(&stored[0].data["shipping_address"]),
        "stored sealed: {}",
        stored[0].data
    );
    let events = app.revealed_events(StreamCategory::Order, order).await;
    let OrderEvent::OrderPlaced { customer_id, merchant_id, lines, total, shipping_address, .. } =
        events[0].decode().unwrap()
    else {
        panic!("not a placement")
    };
    assert_eq!((customer_id, merchant_id), (customer.id, merchant.id));
    assert_eq!(lines[0].unit_price.amount_minor, 1999);
    assert_eq!(lines[1].line_total.amount_minor, 1500);
    assert_eq!(total.amount_minor, 2 * 1999 + 1500);
    assert_eq!(shipping_address.known().unwrap().city, "Berlin", "defaults to the registered address");
}

#[tokio::test]
async fn an_order_with_unknown_products_lists_each_of_them_and_appends_nothing() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let known = app.product(&merchant, 100, 10).await;
    let before = app.event_count().await;
    let lines = json!([
        {"product_id": Uuid::new_v4(), "quantity": 1},
        {"product_id": known, "quantity": 1},
        {"product_id": Uuid::new_v4(), "quantity": 1}
    ]);

    let r = app.post("/v1/orders", &customer.token, json!({"lines": lines})).await;

    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(r.fields(), ["lines[0].product_id", "lines[2].product_id"]);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn invalid_lines_and_address_are_all_reported_before_anything_is_read() {
    let app = spawn_app().await;
    let customer = app.customer().await;
    let p = Uuid::new_v4();
    let body = json!({
        "lines": [{"product_id": p, "quantity": 0}, {"product_id": p, "quantity": 1001}, {"quantity": 1}],
        "shipping_address": {"line1": "x", "city": "", "postal_code": "1", "country": "de"}
    });

    let r = app.post("/v1/orders", &customer.token, body).await;

    assert_eq!((r.status, r.code()), (422, "validation_failed"));
    assert_eq!(
        r.fields(),
        [
            "lines[0].quantity",
            "lines[1].product_id",
            "lines[1].quantity",
            "lines[2].product_id",
            "shipping_address.city",
            "shipping_address.country"
        ]
    );
}

#[tokio::test]
async fn discontinued_products_mixed_merchants_and_unregistered_customers_are_422() {
    let app = spawn_app().await;
    let (m1, m2, customer) = (app.merchant().await, app.merchant().await, app.customer().await);
    let (a, b) = (app.product(&m1, 100, 10).await, app.product(&m2, 100, 10).await);

    let both = json!({"lines": [{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 1}]});
    let r = app.post("/v1/orders", &customer.token, both).await;
    assert_eq!((r.status, r.code()), (422, "mixed_merchants"));

    assert_eq!(app.post(&format!("/v1/products/{a}/discontinue"), &m1.token, json!({})).await.status, 200);
    let r = app.post("/v1/orders", &customer.token, json!({"lines": [{"product_id": a, "quantity": 1}]})).await;
    assert_eq!((r.status, r.code()), (422, "product_discontinued"));
    assert_eq!(r.body["extra"]["product_id"], json!(a));

    let stranger = app.party(Role::Customer);
    let r = app.post("/v1/orders", &stranger.token, json!({"lines": [{"product_id": b, "quantity": 1}]})).await;
    assert_eq!((r.status, r.fields()), (422, vec!["customer_id".to_owned()]));
}

#[tokio::test]
async fn an_order_goes_from_placement_through_payment_and_shipment_to_delivery() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let product = app.product(&merchant, 1000, 10).await;
    let body = json!({"lines": [{"product_id": product, "quantity": 2}], "shipping_address": address()});
    let order = id_of(&app.post("/v1/orders", &customer.token, body).await);

    let r = app
        .post(
            &format!("/v1/orders/{order}/payment"),
            &customer.token,
            json!({"amount": eur(2000), "payment_reference": "psp-1"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"), "pending orders cannot be paid");

    app.confirm(order, product, 2).await;
    let r = app
        .post(
            &format!("/v1/orders/{order}/payment"),
            &customer.token,
            json!({"amount": eur(1999), "payment_reference": "psp-1"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "amount_mismatch"));
    let r = app
        .post(
            &format!("/v1/orders/{order}/payment"),
            &customer.token,
            json!({"amount": eur(2000), "payment_reference": "psp-1"}),
        )
        .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(3)), "{:?}", r.body);

    let r = app
        .post(
            &format!("/v1/orders/{order}/shipment"),
            &merchant.token,
            json!({"carrier": "DHL", "tracking_number": "00340434"}),
        )
        .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(4)), "{:?}", r.body);
    let r = app.post(&format!("/v1/orders/{order}/cancellation"), &customer.token, json!({"reason": "too late"})).await;
    assert_eq!((r.status, r.code()), (409, "invalid_state"), "shipped orders cannot be cancelled");

    let r = app.post(&format!("/v1/orders/{order}/delivery"), &merchant.token, json!({})).await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"5\"")), "{:?}", r.body);
    let types: Vec<String> = app.events(StreamCategory::Order, order).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["OrderPlaced", "OrderConfirmed", "OrderPaid", "OrderShipped", "OrderDelivered"]);
}

#[tokio::test]
async fn the_saga_steps_are_idempotent_through_the_command_service() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let product = app.product(&merchant, 1000, 3).await;
    let order = app.order(&customer, product, 2).await;
    let ctx = CommandContext::system(Uuid::new_v4(), Uuid::new_v4());

    let first = app.commands.reserve_stock(&ctx, product, order, 2).await.unwrap();
    let again = app.commands.reserve_stock(&ctx, product, order, 2).await.unwrap();
    assert_eq!((first.events, again.events, again.version), (1, 0, first.version));
    let other_order = Uuid::new_v4();
    let refused = app.commands.reserve_stock(&ctx, product, other_order, 2).await.unwrap_err();
    assert!(refused.is_rejection() && refused.to_string().contains("out of stock"), "{refused}");

    assert_eq!(app.commands.confirm_order(&ctx, order).await.unwrap().events, 1);
    assert_eq!(app.commands.confirm_order(&ctx, order).await.unwrap().events, 0);
    assert_eq!(app.commands.release_reservation(&ctx, product, other_order).await.unwrap().events, 0);
    let meta = app.last_metadata(StreamCategory::Order, order).await;
    assert_eq!((meta.actor.role, meta.causation_id), (Role::System, ctx.causation_id));

    let customer_ctx =
        CommandContext::new(ordo_schemas::Actor { id: customer.id, role: Role::Customer }, Uuid::new_v4());
    let err = app.commands.confirm_order(&customer_ctx, order).await.unwrap_err();
    assert!(matches!(err, ordo_command_api::CommandError::Forbidden(_)), "{err}");
    let stock = app.events(StreamCategory::Product, product).await;
    assert!(matches!(stock.last().unwrap().decode().unwrap(), ProductEvent::StockReserved { quantity: 2, .. }));
}

#[tokio::test]
async fn only_the_parties_of_an_order_may_act_on_it() {
    let app = spawn_app().await;
    let (merchant, customer) = (app.merchant().await, app.customer().await);
    let (other_merchant, other_customer) = (app.merchant().await, app.customer().await);
    let product = app.product(&merchant, 1000, 10).await;
    let order = app.order(&customer, product, 1).await;
    app.confirm(order, product, 1).await;

    let pay = json!({"amount": eur(1000), "payment_reference": "psp"});
    let r = app.post(&format!("/v1/orders/{order}/payment"), &other_customer.token, pay.clone()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = app.post(&format!("/v1/orders/{order}/payment"), &merchant.token, pay.clone()).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "merchants do not pay");
    let r = app.post(&format!("/v1/orders/{order}/cancellation"), &other_merchant.token, json!({"reason": "x"})).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    assert_eq!(app.post(&format!("/v1/orders/{order}/payment"), &customer.token, pay).await.status, 200);
    let ship = json!({"carrier": "DHL", "tracking_number": "1"});
    let r = app.post(&format!("/v1/orders/{order}/shipment"), &other_merchant.token, ship).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    let r = app
        .post(&format!("/v1/orders/{order}/cancellation"), &merchant.token, json!({"reason": "no stock after all"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let OrderEvent::OrderCancelled { cancelled_by, .. } =
        app.events(StreamCategory::Order, order).await.last().unwrap().decode().unwrap()
    else {
        panic!("not cancelled")
    };
    assert_eq!((cancelled_by.id, cancelled_by.role), (merchant.id, Role::Merchant));

    let r = app.post(&format!("/v1/orders/{}/delivery", Uuid::new_v4()), &merchant.token, json!({})).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}
