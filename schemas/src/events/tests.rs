use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::envelope::{Actor, Role};
use crate::money::{Currency, Money};
use crate::personal::Personal;
use crate::values::{Address, CountryCode, Email, Sku};

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn money() -> impl Strategy<Value = Money> {
    (any::<i64>(), prop::sample::select(vec!["EUR", "USD", "JPY"]))
        .prop_map(|(a, c)| Money::new(a, Currency::parse(c).expect("valid currency")))
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,20}"
}

fn sku() -> impl Strategy<Value = Sku> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| Sku::parse(&s).expect("valid sku"))
}

fn email() -> impl Strategy<Value = Email> {
    "[a-z0-9]{1,5}(\\.[a-z0-9]{1,5})?@[a-z]{1,10}\\.[a-z]{2,4}".prop_map(|s| Email::parse(&s).expect("valid email"))
}

fn address() -> impl Strategy<Value = Address> {
    ("[A-Za-z0-9 ]{0,30}[a-z]", prop::option::of("[a-z]{1,10}"), "[A-Za-z]{1,20}", "[0-9]{4,6}", "[A-Z]{2}").prop_map(
        |(l1, l2, city, pc, cc)| {
            Address::new(l1, l2, city, pc, CountryCode::parse(&cc).expect("valid country")).expect("valid address")
        },
    )
}

fn actor() -> impl Strategy<Value = Actor> {
    (uuid(), prop::sample::select(vec![Role::Customer, Role::Merchant, Role::Admin, Role::System]))
        .prop_map(|(id, role)| Actor { id, role })
}

fn customer_event() -> impl Strategy<Value = CustomerEvent> {
    prop_oneof![
        (uuid(), text(), email(), address()).prop_map(|(customer_id, name, email, shipping_address)| {
            CustomerEvent::CustomerRegistered {
                customer_id,
                name: name.into(),
                email: email.into(),
                shipping_address: shipping_address.into(),
            }
        }),
        uuid().prop_map(|customer_id| CustomerEvent::CustomerRegistered {
            customer_id,
            name: Personal::Erased,
            email: Personal::Erased,
            shipping_address: Personal::Erased,
        }),
        (uuid(), text(), actor()).prop_map(|(customer_id, reason, erased_by)| CustomerEvent::PersonalDataErased {
            customer_id,
            reason,
            erased_by
        }),
    ]
}

fn merchant_event() -> impl Strategy<Value = MerchantEvent> {
    (uuid(), text()).prop_map(|(merchant_id, name)| MerchantEvent::MerchantRegistered { merchant_id, name })
}

fn product_event() -> impl Strategy<Value = ProductEvent> {
    let reason = prop::sample::select(vec![
        StockAdjustmentReason::Restock,
        StockAdjustmentReason::WriteOff,
        StockAdjustmentReason::Correction,
    ]);
    prop_oneof![
        (uuid(), uuid(), sku(), text(), prop::option::of(text()), money(), any::<u32>()).prop_map(
            |(product_id, merchant_id, sku, name, description, price, initial_stock)| {
                ProductEvent::ProductListed { product_id, merchant_id, sku, name, description, price, initial_stock }
            }
        ),
        (money(), money())
            .prop_map(|(old_price, new_price)| ProductEvent::ProductPriceChanged { old_price, new_price }),
        (any::<i64>(), reason, any::<i64>()).prop_map(|(delta, reason, on_hand_after)| {
            ProductEvent::StockAdjusted { delta, reason, on_hand_after }
        }),
        (uuid(), any::<u32>()).prop_map(|(order_id, quantity)| ProductEvent::StockReserved { order_id, quantity }),
        (uuid(), any::<u32>())
            .prop_map(|(order_id, quantity)| { ProductEvent::StockReservationReleased { order_id, quantity } }),
        (uuid(), any::<u32>())
            .prop_map(|(order_id, quantity)| { ProductEvent::ReservedStockCommitted { order_id, quantity } }),
        Just(ProductEvent::ProductDiscontinued {}),
    ]
}

fn order_line() -> impl Strategy<Value = OrderLine> {
    (uuid(), sku(), text(), 1..=1000u32, money(), money()).prop_map(
        |(product_id, sku, name, quantity, unit_price, line_total)| OrderLine {
            product_id,
            sku,
            name,
            quantity,
            unit_price,
            line_total,
        },
    )
}

fn order_event() -> impl Strategy<Value = OrderEvent> {
    let rejected =
        (uuid(), any::<u32>(), any::<i64>(), "[a-z_]{1,20}").prop_map(|(product_id, requested, available, reason)| {
            RejectedLine { product_id, requested, available, reason }
        });
    prop_oneof![
        (uuid(), uuid(), uuid(), prop::collection::vec(order_line(), 1..4), money(), address()).prop_map(
            |(order_id, customer_id, merchant_id, lines, total, shipping_address)| {
                OrderEvent::OrderPlaced {
                    order_id,
                    customer_id,
                    merchant_id,
                    lines,
                    total,
                    shipping_address: shipping_address.into(),
                }
            }
        ),
        Just(OrderEvent::OrderConfirmed {}),
        prop::collection::vec(rejected, 0..3).prop_map(|failed_lines| OrderEvent::OrderRejected { failed_lines }),
        (money(), text()).prop_map(|(amount, payment_reference)| OrderEvent::OrderPaid {
            amount,
            payment_reference: payment_reference.into()
        }),
        (text(), text()).prop_map(|(carrier, tracking_number)| OrderEvent::OrderShipped { carrier, tracking_number }),
        Just(OrderEvent::OrderDelivered {}),
        (text(), actor())
            .prop_map(|(reason, cancelled_by)| OrderEvent::OrderCancelled { reason: reason.into(), cancelled_by }),
    ]
}

/// Stores the event as the log does (type, version, data as JSON text) and reads it back.
fn round_trip<E: DomainEvent + PartialEq>(event: &E) -> Result<(), TestCaseError> {
    let stored = serde_json::to_string(&event.to_data()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let data: serde_json::Value = serde_json::from_str(&stored).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        E::decode(event.event_type(), event.schema_version(), data.clone()).is_ok_and(|d| &d == event),
        "round trip changed {event:?}"
    );
    let any = AnyEvent::decode(E::CATEGORY, event.event_type(), event.schema_version(), data)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(any.event_type(), event.event_type());
    prop_assert_eq!(any.category(), E::CATEGORY);
    prop_assert!(event_types_of(E::CATEGORY)
        .iter()
        .any(|t| t.event_type == event.event_type() && t.schema_version == event.schema_version()));
    Ok(())
}

proptest! {
    #[test]
    fn customer_events_survive_a_round_trip_through_the_log(e in customer_event()) {
        round_trip(&e)?;
    }

    #[test]
    fn merchant_events_survive_a_round_trip_through_the_log(e in merchant_event()) {
        round_trip(&e)?;
    }

    #[test]
    fn product_events_survive_a_round_trip_through_the_log(e in product_event()) {
        round_trip(&e)?;
    }

    #[test]
    fn order_events_survive_a_round_trip_through_the_log(e in order_event()) {
        round_trip(&e)?;
    }
}

fn eur(a: i64) -> Money {
    Money::new(a, Currency::parse("EUR").expect("valid"))
}

#[test]
fn events_without_fields_store_an_empty_object() {
    assert_eq!(OrderEvent::OrderConfirmed {}.to_data(), json!({}));
    assert_eq!(ProductEvent::ProductDiscontinued {}.to_data(), json!({}));
    assert_eq!(OrderEvent::decode("OrderDelivered", 1, json!({})).ok(), Some(OrderEvent::OrderDelivered {}));
    assert_eq!(OrderEvent::decode("OrderConfirmed", 1, json!(null)).ok(), Some(OrderEvent::OrderConfirmed {}));
}

#[test]
fn to_data_is_the_payload_without_the_type_name() {
    let e = ProductEvent::StockAdjusted { delta: -2, reason: StockAdjustmentReason::WriteOff, on_hand_after: 8 };
    assert_eq!(e.to_data(), json!({"delta": -2, "reason": "write_off", "on_hand_after": 8}));
    assert_eq!(e.event_type(), "StockAdjusted");
}

#[test]
fn a_stored_v1_product_listed_is_upcast_to_v2() {
    let product_id = Uuid::from_u128(1);
    let merchant_id = Uuid::from_u128(2);
    let stored_v1 = json!({
        "product_id": product_id,
        "merchant_id": merchant_id,
        "sku": "MUG-1",
        "name": "mug",
        "price_minor": 1299,
        "currency": "EUR",
        "initial_stock": 5
    });
    // the fixture really is a v1 payload
    assert!(serde_json::from_value::<ProductListedV1>(stored_v1.clone()).is_ok());
    let event = ProductEvent::decode("ProductListed", 1, stored_v1).expect("upcast");
    assert_eq!(
        event,
        ProductEvent::ProductListed {
            product_id,
            merchant_id,
            sku: Sku::parse("MUG-1").expect("valid"),
            name: "mug".into(),
            description: None,
            price: eur(1299),
            initial_stock: 5,
        }
    );
    assert_eq!(event.schema_version(), 2);
    assert_eq!(event.to_data()["price"], json!({"amount_minor": 1299, "currency": "EUR"}));
}

#[test]
fn a_v1_product_listed_with_a_bad_currency_is_an_upcast_error() {
    let stored_v1 = json!({
        "product_id": Uuid::from_u128(1), "merchant_id": Uuid::from_u128(2), "sku": "MUG-1",
        "name": "mug", "price_minor": 1299, "currency": "euro", "initial_stock": 5
    });
    let err = ProductEvent::decode("ProductListed", 1, stored_v1).expect_err("bad currency");
    assert!(matches!(err, DecodeError::Upcast { schema_version: 1, .. }), "{err}");
    let err = ProductEvent::decode("ProductListed", 1, json!({"name": "mug"})).expect_err("no price");
    assert!(matches!(err, DecodeError::Upcast { .. }), "{err}");
}

#[test]
fn unknown_event_types_are_reported_as_such() {
    let err = OrderEvent::decode("OrderTeleported", 1, json!({})).expect_err("unknown");
    assert!(
        matches!(err, DecodeError::UnknownType { category: StreamCategory::Order, ref event_type } if event_type == "OrderTeleported")
    );
    // a known type of another category is unknown here
    let err = AnyEvent::decode(StreamCategory::Customer, "OrderConfirmed", 1, json!({})).expect_err("unknown");
    assert!(matches!(err, DecodeError::UnknownType { .. }));
}

#[test]
fn versions_newer_than_the_code_are_reported_as_future() {
    let err = ProductEvent::decode("ProductListed", 3, json!({})).expect_err("future");
    assert!(matches!(err, DecodeError::FutureVersion { found: 3, newest: 2, .. }), "{err}");
    let err = OrderEvent::decode("OrderConfirmed", 2, json!({})).expect_err("future");
    assert!(matches!(err, DecodeError::FutureVersion { found: 2, newest: 1, .. }), "{err}");
}

#[test]
fn versions_below_one_cannot_be_upcast() {
    let err = OrderEvent::decode("OrderConfirmed", 0, json!({})).expect_err("v0");
    assert!(matches!(err, DecodeError::Upcast { .. }), "{err}");
}

#[test]
fn payloads_that_break_the_schema_are_payload_errors() {
    let err = OrderEvent::decode("OrderPaid", 1, json!({"amount": 5})).expect_err("bad payload");
    assert!(matches!(err, DecodeError::Payload { .. }), "{err}");
    let bad_email = json!({
        "customer_id": Uuid::from_u128(1), "name": "ada", "email": "not-an-email",
        "shipping_address": {"line1": "x", "city": "y", "postal_code": "1", "country": "DE"}
    });
    let err = CustomerEvent::decode("CustomerRegistered", 1, bad_email).expect_err("bad email");
    assert!(matches!(err, DecodeError::Payload { .. }), "{err}");
}

#[test]
fn the_type_list_names_every_category_once() {
    let all: Vec<EventTypeInfo> = event_types().collect();
    assert_eq!(all.len(), 2 + 1 + 7 + 7);
    let mut names: Vec<&str> = all.iter().map(|t| t.event_type).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len());
    assert_eq!(current_schema_version(StreamCategory::Product, "ProductListed"), Some(2));
    assert_eq!(current_schema_version(StreamCategory::Order, "ProductListed"), None);
}
