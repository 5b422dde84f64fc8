use ordo_schemas::{
    Actor, Address, CancelOrder, ConfirmOrder, CountryCode, Currency, DeliverOrder, Money, OrderCommand, OrderEvent,
    OrderLine, OrderStatus, PayOrder, PlaceOrder, PricedLine, RejectOrder, RejectedLine, Role, ShipOrder, Sku,
};
use proptest::prelude::*;
use uuid::Uuid;

use crate::testing::given;
use crate::{Aggregate, DomainError, Order};

const ORDER: Uuid = Uuid::from_u128(1);
const CUSTOMER: Uuid = Uuid::from_u128(2);
const MERCHANT: Uuid = Uuid::from_u128(3);
const P1: Uuid = Uuid::from_u128(10);
const P2: Uuid = Uuid::from_u128(11);

fn eur(a: i64) -> Money {
    Money::new(a, Currency::parse("EUR").expect("valid"))
}

fn address() -> Address {
    Address::new("Main St 1", None, "Berlin", "10115", CountryCode::parse("DE").expect("valid")).expect("valid")
}

fn line(product_id: Uuid, quantity: u32, unit_price: Money) -> PricedLine {
    PricedLine {
        product_id,
        merchant_id: MERCHANT,
        sku: Sku::parse(&format!("SKU-{}", product_id.as_u128())).expect("valid"),
        name: format!("product {}", product_id.as_u128()),
        quantity,
        unit_price,
    }
}

fn place_cmd() -> PlaceOrder {
    PlaceOrder {
        order_id: ORDER,
        customer_id: CUSTOMER,
        merchant_id: Some(MERCHANT),
        lines: vec![line(P1, 2, eur(1000)), line(P2, 1, eur(500))],
        shipping_address: address(),
    }
}

fn order_line(l: &PricedLine, line_total: Money) -> OrderLine {
    OrderLine {
        product_id: l.product_id,
        sku: l.sku.clone(),
        name: l.name.clone(),
        quantity: l.quantity,
        unit_price: l.unit_price,
        line_total,
    }
}

fn placed() -> OrderEvent {
    let c = place_cmd();
    OrderEvent::OrderPlaced {
        order_id: ORDER,
        customer_id: CUSTOMER,
        merchant_id: MERCHANT,
        lines: vec![order_line(&c.lines[0], eur(2000)), order_line(&c.lines[1], eur(500))],
        total: eur(2500),
        shipping_address: address().into(),
    }
}

fn failed_lines() -> Vec<RejectedLine> {
    vec![RejectedLine { product_id: P2, requested: 1, available: 0, reason: "out_of_stock".into() }]
}

fn customer() -> Actor {
    Actor { id: CUSTOMER, role: Role::Customer }
}

fn confirmed() -> OrderEvent {
    OrderEvent::OrderConfirmed {}
}
fn rejected() -> OrderEvent {
    OrderEvent::OrderRejected { failed_lines: failed_lines() }
}
fn paid() -> OrderEvent {
    OrderEvent::OrderPaid { amount: eur(2500), payment_reference: "pay-1".to_owned().into() }
}
fn shipped() -> OrderEvent {
    OrderEvent::OrderShipped { carrier: "dhl".into(), tracking_number: "T1".into() }
}
fn delivered() -> OrderEvent {
    OrderEvent::OrderDelivered {}
}
fn cancelled() -> OrderEvent {
    OrderEvent::OrderCancelled { reason: "changed my mind".to_owned().into(), cancelled_by: customer() }
}

fn pay(amount: Money) -> PayOrder {
    PayOrder { amount, payment_reference: "pay-1".into() }
}
fn ship() -> ShipOrder {
    ShipOrder { carrier: "dhl".into(), tracking_number: "T1".into() }
}
fn cancel() -> CancelOrder {
    CancelOrder { reason: "changed my mind".into(), by: customer() }
}

// PlaceOrder

#[test]
fn placing_an_order_prices_lines_and_total() {
    let state = given::<Order>([]).when(place_cmd()).then_events([placed()]);
    assert_eq!(state.status(), Some(OrderStatus::Pending));
    assert_eq!(state.quantities().get(&P1), Some(&2));
}

#[test]
fn the_merchant_is_taken_from_the_lines_when_not_given() {
    let mut cmd = place_cmd();
    cmd.merchant_id = None;
    given::<Order>([]).when(cmd).then_events([placed()]);
}

#[test]
fn placing_twice_is_already_exists() {
    given::<Order>([placed()]).when(place_cmd()).then_error("already_exists");
}

#[test]
fn an_order_without_lines_fails_validation() {
    let mut cmd = place_cmd();
    cmd.lines.clear();
    let err = given::<Order>([]).when(cmd).then_error("validation_failed");
    assert_eq!(err.field_errors()[0].field, "lines");
}

#[test]
fn quantities_outside_1_to_1000_fail_validation_naming_every_line() {
    let mut cmd = place_cmd();
    cmd.lines[0].quantity = 0;
    cmd.lines[1].quantity = 1001;
    let err = given::<Order>([]).when(cmd).then_error("validation_failed");
    let fields: Vec<&str> = err.field_errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["lines[0].quantity", "lines[1].quantity"]);
}

#[test]
fn a_product_in_two_lines_or_a_free_line_fails_validation() {
    let mut cmd = place_cmd();
    cmd.lines[1].product_id = P1;
    given::<Order>([]).when(cmd).then_error("validation_failed");
    let mut cmd = place_cmd();
    cmd.lines[0].unit_price = eur(0);
    given::<Order>([]).when(cmd).then_error("validation_failed");
}

#[test]
fn lines_of_two_merchants_are_mixed_merchants() {
    let mut cmd = place_cmd();
    cmd.lines[1].merchant_id = Uuid::from_u128(99);
    let err = given::<Order>([]).when(cmd).then_error("mixed_merchants");
    assert_eq!(err, DomainError::MixedMerchants { merchants: vec![MERCHANT, Uuid::from_u128(99)] });
}

#[test]
fn lines_of_another_merchant_than_the_order_are_mixed_merchants() {
    let mut cmd = place_cmd();
    cmd.merchant_id = Some(Uuid::from_u128(99));
    given::<Order>([]).when(cmd).then_error("mixed_merchants");
}

#[test]
fn lines_in_two_currencies_are_currency_mismatch() {
    let mut cmd = place_cmd();
    cmd.lines[1].unit_price = Money::new(500, Currency::parse("USD").expect("valid"));
    given::<Order>([]).when(cmd).then_error("currency_mismatch");
}

#[test]
fn totals_that_do_not_fit_are_overflow() {
    let mut cmd = place_cmd();
    cmd.lines[0].unit_price = eur(i64::MAX / 2);
    given::<Order>([]).when(cmd).then_error("overflow");
    let mut cmd = place_cmd();
    cmd.lines[0].quantity = 1;
    cmd.lines[0].unit_price = eur(i64::MAX);
    given::<Order>([]).when(cmd).then_error("overflow");
}

#[test]
fn commands_on_an_unplaced_order_are_not_found() {
    given::<Order>([]).when(ConfirmOrder {}).then_error("not_found");
    given::<Order>([]).when(cancel()).then_error("not_found");
}

// ConfirmOrder

#[test]
fn a_pending_order_is_confirmed() {
    let state = given::<Order>([placed()]).when(ConfirmOrder {}).then_events([confirmed()]);
    assert_eq!(state.status(), Some(OrderStatus::Confirmed));
}

#[test]
fn confirming_a_confirmed_order_is_a_no_op() {
    given::<Order>([placed(), confirmed()]).when(ConfirmOrder {}).then_no_events();
}

#[test]
fn confirming_a_cancelled_or_rejected_order_is_invalid_state() {
    given::<Order>([placed(), cancelled()]).when(ConfirmOrder {}).then_error("invalid_state");
    given::<Order>([placed(), rejected()]).when(ConfirmOrder {}).then_error("invalid_state");
}

// RejectOrder

#[test]
fn a_pending_order_is_rejected_with_its_failed_lines() {
    let state = given::<Order>([placed()]).when(RejectOrder { failed_lines: failed_lines() }).then_events([rejected()]);
    assert_eq!(state.state().map(|s| s.failed_lines.clone()), Some(failed_lines()));
}

#[test]
fn rejecting_a_rejected_order_is_a_no_op() {
    given::<Order>([placed(), rejected()]).when(RejectOrder { failed_lines: failed_lines() }).then_no_events();
}

#[test]
fn rejecting_without_failed_lines_fails_validation() {
    given::<Order>([placed()]).when(RejectOrder { failed_lines: vec![] }).then_error("validation_failed");
}

#[test]
fn rejecting_a_confirmed_or_cancelled_order_is_invalid_state() {
    given::<Order>([placed(), confirmed()])
        .when(RejectOrder { failed_lines: failed_lines() })
        .then_error("invalid_state");
    given::<Order>([placed(), cancelled()])
        .when(RejectOrder { failed_lines: failed_lines() })
        .then_error("invalid_state");
}

// PayOrder

#[test]
fn a_confirmed_order_is_paid_with_its_exact_total() {
    let state = given::<Order>([placed(), confirmed()]).when(pay(eur(2500))).then_events([paid()]);
    assert_eq!(state.state().and_then(|s| s.payment.as_ref()).map(|p| p.amount), Some(eur(2500)));
}

#[test]
fn paying_another_amount_or_currency_is_amount_mismatch() {
    given::<Order>([placed(), confirmed()]).when(pay(eur(2499))).then_error("amount_mismatch");
    let usd = Money::new(2500, Currency::parse("USD").expect("valid"));
    given::<Order>([placed(), confirmed()]).when(pay(usd)).then_error("amount_mismatch");
}

#[test]
fn paying_an_order_that_is_not_confirmed_is_invalid_state() {
    given::<Order>([placed()]).when(pay(eur(2500))).then_error("invalid_state");
    given::<Order>([placed(), confirmed(), paid()]).when(pay(eur(2500))).then_error("invalid_state");
}

#[test]
fn a_blank_payment_reference_fails_validation() {
    given::<Order>([placed(), confirmed()])
        .when(PayOrder { amount: eur(2500), payment_reference: " ".into() })
        .then_error("validation_failed");
}

// ShipOrder

#[test]
fn a_paid_order_ships() {
    let state = given::<Order>([placed(), confirmed(), paid()]).when(ship()).then_events([shipped()]);
    assert_eq!(state.status(), Some(OrderStatus::Shipped));
}

#[test]
fn shipping_an_unpaid_order_is_invalid_state() {
    given::<Order>([placed(), confirmed()]).when(ship()).then_error("invalid_state");
}

#[test]
fn shipping_without_carrier_or_tracking_number_fails_validation() {
    let err = given::<Order>([placed(), confirmed(), paid()])
        .when(ShipOrder { carrier: "".into(), tracking_number: "".into() })
        .then_error("validation_failed");
    assert_eq!(err.field_errors().len(), 2);
}

// DeliverOrder

#[test]
fn a_shipped_order_is_delivered() {
    given::<Order>([placed(), confirmed(), paid(), shipped()]).when(DeliverOrder {}).then_events([delivered()]);
}

#[test]
fn delivering_an_order_that_is_not_shipped_is_invalid_state() {
    given::<Order>([placed(), confirmed(), paid()]).when(DeliverOrder {}).then_error("invalid_state");
    given::<Order>([placed(), confirmed(), paid(), shipped(), delivered()])
        .when(DeliverOrder {})
        .then_error("invalid_state");
}

// CancelOrder

#[test]
fn pending_confirmed_and_paid_orders_can_be_cancelled() {
    for history in [vec![placed()], vec![placed(), confirmed()], vec![placed(), confirmed(), paid()]] {
        let state = given::<Order>(history).when(cancel()).then_events([cancelled()]);
        assert_eq!(state.status(), Some(OrderStatus::Cancelled));
    }
}

#[test]
fn shipped_delivered_rejected_and_cancelled_orders_cannot_be_cancelled() {
    for history in [
        vec![placed(), confirmed(), paid(), shipped()],
        vec![placed(), confirmed(), paid(), shipped(), delivered()],
        vec![placed(), rejected()],
        vec![placed(), cancelled()],
    ] {
        given::<Order>(history).when(cancel()).then_error("invalid_state");
    }
}

#[test]
fn cancelling_without_a_reason_fails_validation() {
    given::<Order>([placed()]).when(CancelOrder { reason: "".into(), by: customer() }).then_error("validation_failed");
}

#[test]
fn state_round_trips_through_json_for_auditors() {
    let state = Order::from_events(&[placed(), confirmed(), paid()]);
    let json = serde_json::to_value(&state).expect("ser");
    assert_eq!(json["status"], "paid");
    assert_eq!(json["payment"]["payment_reference"], "pay-1");
    assert_eq!(serde_json::from_value::<Order>(json).expect("de"), state);
}

fn order_command() -> impl Strategy<Value = OrderCommand> {
    prop_oneof![
        Just(place_cmd().into()),
        Just(ConfirmOrder {}.into()),
        Just(RejectOrder { failed_lines: failed_lines() }.into()),
        prop::sample::select(vec![2500i64, 2499, 1]).prop_map(|a| pay(eur(a)).into()),
        Just(ship().into()),
        Just(DeliverOrder {}.into()),
        Just(cancel().into()),
    ]
}

proptest! {
    #[test]
    fn random_commands_only_move_along_allowed_transitions(
        commands in prop::collection::vec(order_command(), 0..30),
    ) {
        let mut order = Order::default();
        let mut history = Vec::new();
        for command in &commands {
            let before = order.status();
            let Ok(events) = order.execute(command) else {
                prop_assert_eq!(order.status(), before, "a rejected command changed the state");
                continue;
            };
            let after = order.status();
            match (before, after) {
                (None, Some(OrderStatus::Pending)) | (None, None) => {}
                (Some(b), Some(a)) if events.is_empty() => prop_assert_eq!(a, b),
                (Some(b), Some(a)) => prop_assert!(b.can_become(a), "{b} -> {a} is not allowed"),
                (b, a) => prop_assert!(false, "{b:?} -> {a:?}"),
            }
            prop_assert!(events.len() <= 1);
            history.extend(events);
        }
        prop_assert_eq!(Order::from_events(&history), order);
    }
}
