//! The customer aggregate: registered once with name, email and shipping address.

use ordo_schemas::values::check_text;
use ordo_schemas::{Address, CustomerCommand, CustomerEvent, Email};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::limits::MAX_NAME;

/// A registered customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub customer_id: Uuid,
    pub name: String,
    pub email: Email,
    pub shipping_address: Address,
}

/// The customer aggregate; serialises as `null` before registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Customer {
    state: Option<CustomerState>,
}

impl Customer {
    /// The registered customer, `None` before registration.
    pub fn state(&self) -> Option<&CustomerState> {
        self.state.as_ref()
    }

    pub fn exists(&self) -> bool {
        self.state.is_some()
    }
}

impl Aggregate for Customer {
    type Event = CustomerEvent;
    type Command = CustomerCommand;

    /// `RegisterCustomer`: `already_exists` when registered, `validation_failed` for a blank or
    /// over-long name (email and address are valid by construction).
    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, DomainError> {
        match command {
            CustomerCommand::RegisterCustomer(c) => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists("customer is already registered".into()));
                }
                DomainError::check(check_text("name", &c.name, MAX_NAME).into_iter().collect())?;
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id: c.customer_id,
                    name: c.name.clone(),
                    email: c.email.clone(),
                    shipping_address: c.shipping_address.clone(),
                }])
            }
        }
    }

    fn evolve(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered { customer_id, name, email, shipping_address } => {
                self.state = Some(CustomerState {
                    customer_id: *customer_id,
                    name: name.clone(),
                    email: email.clone(),
                    shipping_address: shipping_address.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
