use ordo_schemas::{Address, CountryCode, CustomerEvent, Email, RegisterCustomer};
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
        name: c.name.clone(),
        email: c.email.clone(),
        shipping_address: c.shipping_address.clone(),
    }
}

#[test]
fn a_new_customer_registers() {
    let cmd = register("Ada");
    let state = given::<Customer>([]).when(cmd.clone()).then_events([registered(&cmd)]);
    assert_eq!(state.state().map(|s| s.name.as_str()), Some("Ada"));
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
