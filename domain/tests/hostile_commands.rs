//! Property tests with hostile magnitudes, extending the in-crate ones (which use small,
//! friendly numbers): money never overflows silently, stock never goes negative or below what
//! is reserved even near `i64::MAX`, and several orders competing for one product never reserve
//! more than is on hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ordo_domain::{Aggregate, Order, Product};
use ordo_schemas::{
    AdjustStock, CommitReservation, CountryCode, Currency, ListProduct, Money, OrderCommand, OrderEvent, PlaceOrder,
    PricedLine, ProductCommand, ReleaseReservation, ReserveStock, Sku, StockAdjustmentReason,
};
use proptest::prelude::*;
use uuid::Uuid;

const MERCHANT: Uuid = Uuid::from_u128(3);

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

fn address() -> ordo_schemas::Address {
    ordo_schemas::Address::new("Main St 1", None, "Berlin", "10115", CountryCode::parse("DE").unwrap()).unwrap()
}

fn line(n: u128, quantity: u32, unit_price: i64) -> PricedLine {
    PricedLine {
        product_id: Uuid::from_u128(100 + n),
        merchant_id: MERCHANT,
        sku: Sku::parse(&format!("SKU-{n}")).unwrap(),
        name: format!("product {n}"),
        quantity,
        unit_price: eur(unit_price),
    }
}

/// Prices from friendly to one step below overflow.
fn price() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..10_000, (i64::MAX / 1000)..=i64::MAX, Just(i64::MAX), Just(i64::MAX / 999), 1i64..=i64::MAX]
}

proptest! {
    #[test]
    fn an_order_total_is_the_exact_sum_of_its_lines_or_the_placement_is_refused_as_overflow(
        lines in prop::collection::vec((1u32..=1000, price()), 1..8),
    ) {
        let command = PlaceOrder {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            merchant_id: Some(MERCHANT),
            lines: lines.iter().enumerate().map(|(i, (q, p))| line(i as u128, *q, *p)).collect(),
            shipping_address: address(),
        };
        let exact: i128 = lines.iter().map(|(q, p)| i128::from(*q) * i128::from(*p)).sum();
        match Order::default().decide(&OrderCommand::PlaceOrder(command)) {
            Ok(events) => {
                let Some(OrderEvent::OrderPlaced { total, lines: placed, .. }) = events.first() else {
                    return Err(TestCaseError::fail("no OrderPlaced"));
                };
                prop_assert_eq!(i128::from(total.amount_minor), exact, "the total is exact");
                for (l, (q, p)) in placed.iter().zip(&lines) {
                    prop_assert_eq!(i128::from(l.line_total.amount_minor), i128::from(*q) * i128::from(*p));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.code(), "overflow", "only an overflow refuses these lines: {}", e);
                prop_assert!(exact > i128::from(i64::MAX), "refused although {} fits", exact);
            }
        }
    }
}

fn list(initial_stock: u32) -> ProductCommand {
    ProductCommand::ListProduct(ListProduct {
        product_id: Uuid::from_u128(7),
        merchant_id: MERCHANT,
        sku: Sku::parse("SKU-7").unwrap(),
        name: "widget".into(),
        description: None,
        price: eur(100),
        initial_stock,
    })
}

/// Stock commands with deltas up to the limits of `i64` and many competing orders.
fn stock_command() -> impl Strategy<Value = ProductCommand> {
    let order = (0u128..12).prop_map(|n| Uuid::from_u128(1000 + n));
    let reason = prop::sample::select(vec![
        StockAdjustmentReason::Restock,
        StockAdjustmentReason::WriteOff,
        StockAdjustmentReason::Correction,
    ]);
    let delta = prop_oneof![-50i64..50, Just(i64::MAX), Just(i64::MIN), Just(i64::MAX - 1), any::<i64>()];
    prop_oneof![
        3 => (delta, reason).prop_map(|(delta, reason)| ProductCommand::AdjustStock(AdjustStock { delta, reason })),
        5 => (order.clone(), prop_oneof![0u32..30, Just(u32::MAX), Just(1000), Just(1001)])
            .prop_map(|(order_id, quantity)| ProductCommand::ReserveStock(ReserveStock { order_id, quantity })),
        2 => order.clone().prop_map(|order_id| ProductCommand::ReleaseReservation(ReleaseReservation { order_id })),
        2 => order.prop_map(|order_id| ProductCommand::CommitReservation(CommitReservation { order_id })),
    ]
}

proptest! {
    #[test]
    fn hostile_stock_sequences_never_make_stock_negative_oversold_or_wrapped(
        initial in prop_oneof![0u32..50, Just(u32::MAX)],
        commands in prop::collection::vec(stock_command(), 0..80),
    ) {
        let mut product = Product::default();
        let mut history = product.execute(&list(initial)).unwrap();
        let mut committed: i64 = 0;
        for command in &commands {
            let before = product.clone();
            match product.execute(command) {
                Ok(events) => history.extend(events),
                Err(_) => prop_assert_eq!(&product, &before, "a refused command changed the state"),
            }
            let s = product.state().unwrap();
            prop_assert!(s.on_hand >= 0, "on_hand {} < 0", s.on_hand);
            prop_assert!(s.reserved >= 0 && s.reserved <= s.on_hand, "reserved {} > on_hand {}", s.reserved, s.on_hand);
            prop_assert_eq!(s.reserved, s.reservations.values().map(|q| i64::from(*q)).sum::<i64>());
            prop_assert!(s.reservations.values().all(|q| (1..=1000).contains(q)), "{:?}", s.reservations);
            if let ProductCommand::CommitReservation(c) = command {
                committed += before.state().unwrap().reservation(c.order_id).map_or(0, i64::from);
            }
        }
        // on hand is the initial stock plus every adjustment minus what shipments took
        let adjusted: i128 = history
            .iter()
            .filter_map(|e| match e {
                ordo_schemas::ProductEvent::StockAdjusted { delta, .. } => Some(i128::from(*delta)),
                _ => None,
            })
            .sum();
        let s = product.state().unwrap();
        prop_assert_eq!(i128::from(s.on_hand), i128::from(initial) + adjusted - i128::from(committed));
        prop_assert_eq!(Product::from_events(&history), product);
    }
}
