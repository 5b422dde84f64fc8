use ordo_schemas::{
    AdjustStock, ChangePrice, CommitReservation, Currency, DiscontinueProduct, ListProduct, Money, ProductCommand,
    ProductEvent, ReleaseReservation, ReserveStock, Sku, StockAdjustmentReason,
};
use proptest::prelude::*;
use uuid::Uuid;

use crate::testing::given;
use crate::{Aggregate, Product};

const PRODUCT: Uuid = Uuid::from_u128(100);
const MERCHANT: Uuid = Uuid::from_u128(200);

fn order(n: u128) -> Uuid {
    Uuid::from_u128(1000 + n)
}

fn eur(a: i64) -> Money {
    Money::new(a, Currency::parse("EUR").expect("valid"))
}

fn list_cmd(stock: u32) -> ListProduct {
    ListProduct {
        product_id: PRODUCT,
        merchant_id: MERCHANT,
        sku: Sku::parse("MUG-1").expect("valid"),
        name: "mug".into(),
        description: Some("a mug".into()),
        price: eur(1000),
        initial_stock: stock,
    }
}

fn listed(stock: u32) -> ProductEvent {
    let c = list_cmd(stock);
    ProductEvent::ProductListed {
        product_id: c.product_id,
        merchant_id: c.merchant_id,
        sku: c.sku,
        name: c.name,
        description: c.description,
        price: c.price,
        initial_stock: c.initial_stock,
    }
}

fn reserved(n: u128, quantity: u32) -> ProductEvent {
    ProductEvent::StockReserved { order_id: order(n), quantity }
}

fn reserve(n: u128, quantity: u32) -> ReserveStock {
    ReserveStock { order_id: order(n), quantity }
}

fn adjust(delta: i64, reason: StockAdjustmentReason) -> AdjustStock {
    AdjustStock { delta, reason }
}

// ListProduct

#[test]
fn listing_a_product_records_it_with_its_initial_stock() {
    let state = given::<Product>([]).when(list_cmd(10)).then_events([listed(10)]);
    let s = state.state().expect("listed");
    assert_eq!((s.on_hand, s.reserved, s.available()), (10, 0, 10));
}

#[test]
fn listing_twice_is_already_exists() {
    given::<Product>([listed(10)]).when(list_cmd(10)).then_error("already_exists");
}

#[test]
fn listing_with_a_non_positive_price_or_blank_name_lists_every_field() {
    let mut cmd = list_cmd(1);
    cmd.price = eur(0);
    cmd.name = " ".into();
    cmd.description = Some("x".repeat(2001));
    let err = given::<Product>([]).when(cmd).then_error("validation_failed");
    let fields: Vec<&str> = err.field_errors().iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["name", "description", "price.amount_minor"]);
}

#[test]
fn commands_on_an_unlisted_product_are_not_found() {
    given::<Product>([]).when(reserve(1, 1)).then_error("not_found");
    given::<Product>([]).when(ChangePrice { price: eur(5) }).then_error("not_found");
    given::<Product>([]).when(DiscontinueProduct {}).then_error("not_found");
    given::<Product>([]).when(ReleaseReservation { order_id: order(1) }).then_error("not_found");
}

// ChangePrice

#[test]
fn changing_the_price_records_old_and_new() {
    let state = given::<Product>([listed(1)])
        .when(ChangePrice { price: eur(1200) })
        .then_events([ProductEvent::ProductPriceChanged { old_price: eur(1000), new_price: eur(1200) }]);
    assert_eq!(state.state().map(|s| s.price), Some(eur(1200)));
}

#[test]
fn changing_to_the_same_price_is_a_no_op() {
    given::<Product>([listed(1)]).when(ChangePrice { price: eur(1000) }).then_no_events();
}

#[test]
fn changing_the_currency_is_currency_mismatch() {
    let usd = Money::new(1000, Currency::parse("USD").expect("valid"));
    given::<Product>([listed(1)]).when(ChangePrice { price: usd }).then_error("currency_mismatch");
}

#[test]
fn a_non_positive_price_fails_validation() {
    given::<Product>([listed(1)]).when(ChangePrice { price: eur(0) }).then_error("validation_failed");
    given::<Product>([listed(1)]).when(ChangePrice { price: eur(-5) }).then_error("validation_failed");
}

#[test]
fn a_discontinued_product_keeps_its_price() {
    given::<Product>([listed(1), ProductEvent::ProductDiscontinued {}])
        .when(ChangePrice { price: eur(5) })
        .then_error("invalid_state");
}

// AdjustStock

#[test]
fn restock_and_write_off_move_on_hand() {
    let state = given::<Product>([listed(10)]).when(adjust(5, StockAdjustmentReason::Restock)).then_events([
        ProductEvent::StockAdjusted { delta: 5, reason: StockAdjustmentReason::Restock, on_hand_after: 15 },
    ]);
    assert_eq!(state.state().map(|s| s.on_hand), Some(15));
    given::<Product>([listed(10)]).when(adjust(-10, StockAdjustmentReason::WriteOff)).then_events([
        ProductEvent::StockAdjusted { delta: -10, reason: StockAdjustmentReason::WriteOff, on_hand_after: 0 },
    ]);
    given::<Product>([listed(10)]).when(adjust(-3, StockAdjustmentReason::Correction)).then_events([
        ProductEvent::StockAdjusted { delta: -3, reason: StockAdjustmentReason::Correction, on_hand_after: 7 },
    ]);
}

#[test]
fn adjusting_below_zero_is_insufficient_stock() {
    given::<Product>([listed(3)]).when(adjust(-4, StockAdjustmentReason::WriteOff)).then_error("insufficient_stock");
}

#[test]
fn adjusting_below_reserved_is_insufficient_stock() {
    given::<Product>([listed(10), reserved(1, 8)])
        .when(adjust(-3, StockAdjustmentReason::WriteOff))
        .then_error("insufficient_stock");
}

#[test]
fn a_delta_contradicting_its_reason_or_zero_fails_validation() {
    given::<Product>([listed(3)]).when(adjust(-1, StockAdjustmentReason::Restock)).then_error("validation_failed");
    given::<Product>([listed(3)]).when(adjust(1, StockAdjustmentReason::WriteOff)).then_error("validation_failed");
    given::<Product>([listed(3)]).when(adjust(0, StockAdjustmentReason::Correction)).then_error("validation_failed");
}

#[test]
fn a_restock_that_does_not_fit_is_overflow() {
    given::<Product>([listed(3)]).when(adjust(i64::MAX, StockAdjustmentReason::Restock)).then_error("overflow");
}

#[test]
fn a_discontinued_product_can_still_be_written_off() {
    given::<Product>([listed(3), ProductEvent::ProductDiscontinued {}])
        .when(adjust(-3, StockAdjustmentReason::WriteOff))
        .then_events([ProductEvent::StockAdjusted {
            delta: -3,
            reason: StockAdjustmentReason::WriteOff,
            on_hand_after: 0,
        }]);
}

// ReserveStock

#[test]
fn reserving_holds_stock_for_the_order() {
    let state = given::<Product>([listed(10)]).when(reserve(1, 4)).then_events([reserved(1, 4)]);
    let s = state.state().expect("listed");
    assert_eq!((s.on_hand, s.reserved, s.available(), s.reservation(order(1))), (10, 4, 6, Some(4)));
}

#[test]
fn reserving_more_than_available_is_out_of_stock() {
    let err = given::<Product>([listed(10), reserved(1, 8)]).when(reserve(2, 3)).then_error("out_of_stock");
    assert_eq!(err, crate::DomainError::OutOfStock { requested: 3, available: 2 });
}

#[test]
fn reserving_exactly_what_is_available_succeeds() {
    given::<Product>([listed(10), reserved(1, 8)]).when(reserve(2, 2)).then_events([reserved(2, 2)]);
}

#[test]
fn reserving_again_for_the_same_order_is_a_no_op() {
    given::<Product>([listed(10), reserved(1, 4)]).when(reserve(1, 4)).then_no_events();
}

#[test]
fn reserving_again_after_release_or_commit_is_refused_so_nobody_counts_it_as_held() {
    let released = ProductEvent::StockReservationReleased { order_id: order(1), quantity: 4 };
    given::<Product>([listed(10), reserved(1, 4), released]).when(reserve(1, 4)).then_error("invalid_state");
    let committed = ProductEvent::ReservedStockCommitted { order_id: order(1), quantity: 4 };
    given::<Product>([listed(10), reserved(1, 4), committed]).when(reserve(1, 4)).then_error("invalid_state");
}

#[test]
fn a_quantity_outside_1_to_1000_fails_validation() {
    given::<Product>([listed(5000)]).when(reserve(1, 0)).then_error("validation_failed");
    given::<Product>([listed(5000)]).when(reserve(1, 1001)).then_error("validation_failed");
    given::<Product>([listed(5000)]).when(reserve(1, 1000)).then_events([reserved(1, 1000)]);
}

#[test]
fn a_discontinued_product_refuses_new_reservations() {
    given::<Product>([listed(10), ProductEvent::ProductDiscontinued {}])
        .when(reserve(1, 1))
        .then_error("product_discontinued");
}

#[test]
fn a_discontinued_product_still_acknowledges_an_existing_reservation() {
    given::<Product>([listed(10), reserved(1, 2), ProductEvent::ProductDiscontinued {}])
        .when(reserve(1, 2))
        .then_no_events();
}

// ReleaseReservation

#[test]
fn releasing_returns_the_stock() {
    let state = given::<Product>([listed(10), reserved(1, 4)])
        .when(ReleaseReservation { order_id: order(1) })
        .then_events([ProductEvent::StockReservationReleased { order_id: order(1), quantity: 4 }]);
    let s = state.state().expect("listed");
    assert_eq!((s.on_hand, s.reserved, s.reservation(order(1))), (10, 0, None));
}

#[test]
fn releasing_without_a_reservation_is_a_no_op() {
    given::<Product>([listed(10)]).when(ReleaseReservation { order_id: order(1) }).then_no_events();
    let released = ProductEvent::StockReservationReleased { order_id: order(1), quantity: 4 };
    given::<Product>([listed(10), reserved(1, 4), released])
        .when(ReleaseReservation { order_id: order(1) })
        .then_no_events();
}

#[test]
fn a_discontinued_product_still_releases() {
    given::<Product>([listed(10), reserved(1, 4), ProductEvent::ProductDiscontinued {}])
        .when(ReleaseReservation { order_id: order(1) })
        .then_events([ProductEvent::StockReservationReleased { order_id: order(1), quantity: 4 }]);
}

// CommitReservation

#[test]
fn committing_drops_on_hand_and_reserved() {
    let state = given::<Product>([listed(10), reserved(1, 4), reserved(2, 1)])
        .when(CommitReservation { order_id: order(1) })
        .then_events([ProductEvent::ReservedStockCommitted { order_id: order(1), quantity: 4 }]);
    let s = state.state().expect("listed");
    assert_eq!((s.on_hand, s.reserved, s.available()), (6, 1, 5));
}

#[test]
fn committing_without_a_reservation_is_a_no_op() {
    given::<Product>([listed(10)]).when(CommitReservation { order_id: order(1) }).then_no_events();
}

#[test]
fn a_discontinued_product_still_commits() {
    given::<Product>([listed(10), reserved(1, 4), ProductEvent::ProductDiscontinued {}])
        .when(CommitReservation { order_id: order(1) })
        .then_events([ProductEvent::ReservedStockCommitted { order_id: order(1), quantity: 4 }]);
}

// DiscontinueProduct

#[test]
fn discontinuing_stops_reservations() {
    let state =
        given::<Product>([listed(1)]).when(DiscontinueProduct {}).then_events([ProductEvent::ProductDiscontinued {}]);
    assert_eq!(state.state().map(|s| s.status), Some(ordo_schemas::ProductStatus::Discontinued));
}

#[test]
fn discontinuing_twice_is_invalid_state() {
    given::<Product>([listed(1), ProductEvent::ProductDiscontinued {}])
        .when(DiscontinueProduct {})
        .then_error("invalid_state");
}

#[test]
fn state_round_trips_through_json_for_auditors() {
    let state = Product::from_events(&[listed(10), reserved(1, 4)]);
    let json = serde_json::to_value(&state).expect("ser");
    assert_eq!(json["on_hand"], 10);
    assert_eq!(json["status"], "active");
    assert_eq!(serde_json::from_value::<Product>(json).expect("de"), state);
}

fn product_command() -> impl Strategy<Value = ProductCommand> {
    let reason = prop::sample::select(vec![
        StockAdjustmentReason::Restock,
        StockAdjustmentReason::WriteOff,
        StockAdjustmentReason::Correction,
    ]);
    prop_oneof![
        4 => (-30i64..30, reason).prop_map(|(delta, reason)| AdjustStock { delta, reason }.into()),
        4 => (0u128..6, 0u32..20).prop_map(|(n, q)| reserve(n, q).into()),
        2 => (0u128..6).prop_map(|n| ReleaseReservation { order_id: order(n) }.into()),
        2 => (0u128..6).prop_map(|n| CommitReservation { order_id: order(n) }.into()),
        1 => (-5i64..2000).prop_map(|a| ChangePrice { price: eur(a) }.into()),
        1 => Just(DiscontinueProduct {}.into()),
        1 => (0u32..20).prop_map(|s| list_cmd(s).into()),
    ]
}

proptest! {
    #[test]
    fn random_commands_never_break_the_stock_invariants(
        initial in 0u32..40,
        commands in prop::collection::vec(product_command(), 0..60),
    ) {
        let mut product = Product::default();
        let mut history = product.execute(&list_cmd(initial).into()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for command in &commands {
            if let Ok(events) = product.execute(command) {
                history.extend(events);
            }
            let s = product.state().ok_or_else(|| TestCaseError::fail("product vanished"))?;
            prop_assert!(s.on_hand >= 0, "on_hand {} < 0", s.on_hand);
            prop_assert!(s.reserved >= 0 && s.on_hand >= s.reserved, "on_hand {} < reserved {}", s.on_hand, s.reserved);
            prop_assert_eq!(s.reserved, s.reservations.values().map(|q| i64::from(*q)).sum::<i64>());
            prop_assert!(s.price.is_positive());
        }
        // replaying the recorded history rebuilds the same state
        prop_assert_eq!(Product::from_events(&history), product);
    }
}
