//! A tiny given/when/then harness for aggregate tests, usable by other crates' tests too:
//!
//! ```
//! use ordo_domain::{testing::given, Merchant};
//! use ordo_schemas::{MerchantEvent, RegisterMerchant};
//! use uuid::Uuid;
//!
//! let id = Uuid::from_u128(1);
//! given::<Merchant>([])
//!     .when(RegisterMerchant { merchant_id: id, name: "acme".into() })
//!     .then_events([MerchantEvent::MerchantRegistered { merchant_id: id, name: "acme".into() }]);
//! ```
//!
//! The assertions panic with the actual outcome, as test assertions do.

use crate::aggregate::Aggregate;
use crate::error::DomainError;

/// The aggregate state after the given history.
pub struct Given<A: Aggregate> {
    state: A,
}

/// Starts a scenario from the events already in the stream.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = events.into_iter().collect();
    Given { state: A::from_events(&events) }
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the given state.
    pub fn when(self, command: impl Into<A::Command>) -> Then<A> {
        let result = self.state.decide(&command.into());
        Then { state: self.state, result }
    }

    /// The state built from the given events.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// The outcome of a decision, to be asserted on.
pub struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Then<A>
where
    A::Event: PartialEq,
{
    /// Asserts the command produced exactly these events; returns the state after them.
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                let mut state = self.state;
                state.apply_all(&events);
                state
            }
            Err(e) => panic!("expected events {expected:?}, got error {} ({e})", e.code()),
        }
    }

    /// Asserts the command succeeded without events (an idempotent repeat).
    pub fn then_no_events(self) -> A {
        self.then_events([])
    }

    /// Asserts the command was rejected with `code`; returns the error for further checks.
    pub fn then_error(self, code: &str) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected error {code}, got events {events:?}"),
            Err(e) => {
                assert_eq!(e.code(), code, "unexpected error: {e}");
                e
            }
        }
    }
}
