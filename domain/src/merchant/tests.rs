use ordo_schemas::{MerchantEvent, RegisterMerchant};
use uuid::Uuid;

use crate::testing::given;
use crate::Merchant;

fn register(name: &str) -> RegisterMerchant {
    RegisterMerchant { merchant_id: Uuid::from_u128(7), name: name.into() }
}

fn registered(name: &str) -> MerchantEvent {
    MerchantEvent::MerchantRegistered { merchant_id: Uuid::from_u128(7), name: name.into() }
}

#[test]
fn a_new_merchant_registers() {
    let state = given::<Merchant>([]).when(register("Acme")).then_events([registered("Acme")]);
    assert_eq!(state.state().map(|s| s.merchant_id), Some(Uuid::from_u128(7)));
}

#[test]
fn registering_twice_is_already_exists() {
    given::<Merchant>([registered("Acme")]).when(register("Acme")).then_error("already_exists");
}

#[test]
fn a_blank_name_fails_validation() {
    given::<Merchant>([]).when(register("")).then_error("validation_failed");
}
