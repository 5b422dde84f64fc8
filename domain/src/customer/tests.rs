use ordo_schemas::{
    Actor, Address, CountryCode, CustomerEvent, Email, EraseCustomer, Personal, RegisterCustomer, Role,
};
use uuid::Uuid;

use crate::testing::given;
use crate::Customer;

fn register(name: &str) -> RegisterCustomer {
    RegisterCustomer {
        customer_id: Uuid::from_u128(1),
        name: name.into(),
        email: Email::parse("ada@example.com").expect("valid"),
        shipping_address: Address::new("Main St 1", None, "Berlin", "10115", CountryCode::parse("DE").expect("valid"))
            .expect("valid"),
    }
}

fn registered(c: &RegisterCustomer) -> CustomerEvent {
    CustomerEvent::CustomerRegistered {
        customer_id: c.customer_id,
        name: c.name.clone().into(),
        email: c.email.clone().into(),
        shipping_address: c.shipping_address.clone().into(),
    }
}

fn erase(reason: &str) -> EraseCustomer {
    EraseCustomer { customer_id: Uuid::from_u128(1), reason: reason.into(), by: admin() }
}

fn admin() -> Actor {
    Actor { id: Uuid::from_u128(9), role: Role::Admin }
}

fn erased(reason: &str) -> CustomerEvent {
    CustomerEvent::PersonalDataErased { customer_id: Uuid::from_u128(1), reason: reason.into(), erased_by: admin() }
}

#[test]
fn a_new_customer_registers() {
    let cmd = register("Ada");
    let state = given::<Customer>([]).when(cmd.clone()).then_events([registered(&cmd)]);
    assert_eq!(state.state().map(|s| s.name.known().map(String::as_str)), Some(Some("Ada")));
}

#[test]
fn registering_twice_is_already_exists() {
    let cmd = register("Ada");
    given::<Customer>([registered(&cmd)]).when(cmd).then_error("already_exists");
}

#[test]
fn a_blank_name_fails_validation() {
    let err = given::<Customer>([]).when(register("  ")).then_error("validation_failed");
    assert_eq!(err.field_errors()[0].field, "name");
    given::<Customer>([]).when(register(&"x".repeat(201))).then_error("validation_failed");
}

#[test]
fn state_serialises_as_null_before_registration() {
    assert_eq!(serde_json::to_value(Customer::default()).expect("ser"), serde_json::Value::Null);
    let cmd = register("Ada");
    let state = given::<Customer>([registered(&cmd)]).state().clone();
    let json = serde_json::to_value(&state).expect("ser");
    assert_eq!(json["email"], "ada@example.com");
    assert_eq!(serde_json::from_value::<Customer>(json).expect("de"), state);
}

#[test]
fn an_erasure_records_who_and_why_and_leaves_every_personal_field_erased() {
    let cmd = register("Ada");
    let state = given::<Customer>([registered(&cmd)]).when(erase("request 42")).then_events([erased("request 42")]);
    let s = state.state().expect("registered");
    assert!(state.is_erased());
    assert_eq!((&s.name, &s.email, &s.shipping_address), (&Personal::Erased, &Personal::Erased, &Personal::Erased));
}

#[test]
fn erasing_twice_is_invalid_state_and_an_unknown_customer_is_not_found() {
    let cmd = register("Ada");
    given::<Customer>([registered(&cmd), erased("x")]).when(erase("again")).then_error("invalid_state");
    given::<Customer>([]).when(erase("x")).then_error("not_found");
    given::<Customer>([registered(&cmd)]).when(erase(" ")).then_error("validation_failed");
}

#[test]
fn an_erased_customer_cannot_register_again() {
    let cmd = register("Ada");
    given::<Customer>([registered(&cmd), erased("x")]).when(cmd).then_error("already_exists");
}
