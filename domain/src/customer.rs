//! The customer aggregate: registered once with name, email and shipping address; its personal
//! data can be erased once.

use ordo_schemas::values::check_text;
use ordo_schemas::{Address, CustomerCommand, CustomerEvent, Email, Personal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::limits::{MAX_NAME, MAX_REASON};

/// A registered customer. The personal fields are [`Personal::Sealed`] when loaded by a process
/// that did not reveal them, and [`Personal::Erased`] once erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub customer_id: Uuid,
    pub name: Personal<String>,
    pub email: Personal<Email>,
    pub shipping_address: Personal<Address>,
    /// The customer's personal data was erased: no new order, no new personal data.
    #[serde(default)]
    pub erased: bool,
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

    /// Whether the customer's personal data was erased.
    pub fn is_erased(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.erased)
    }
}

impl Aggregate for Customer {
    type Event = CustomerEvent;
    type Command = CustomerCommand;

    /// `RegisterCustomer`: `already_exists` when registered, `validation_failed` for a blank or
    /// over-long name (email and address are valid by construction).
    /// `EraseCustomer`: `not_found` before registration, `invalid_state` when already erased,
    /// `validation_failed` for a blank or over-long reason.
    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, DomainError> {
        match command {
            CustomerCommand::RegisterCustomer(c) => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists("customer is already registered".into()));
                }
                DomainError::check(check_text("name", &c.name, MAX_NAME).into_iter().collect())?;
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id: c.customer_id,
                    name: c.name.clone().into(),
                    email: c.email.clone().into(),
                    shipping_address: c.shipping_address.clone().into(),
                }])
            }
            CustomerCommand::EraseCustomer(_) if !self.exists() => {
                Err(DomainError::NotFound("customer does not exist".into()))
            }
            CustomerCommand::EraseCustomer(_) if self.is_erased() => {
                Err(DomainError::InvalidState("the customer's personal data is already erased".into()))
            }
            CustomerCommand::EraseCustomer(c) => {
                DomainError::check(check_text("reason", &c.reason, MAX_REASON).into_iter().collect())?;
                Ok(vec![CustomerEvent::PersonalDataErased {
                    customer_id: c.customer_id,
                    reason: c.reason.clone(),
                    erased_by: c.by,
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
                    erased: false,
                });
            }
            CustomerEvent::PersonalDataErased { .. } => {
                if let Some(s) = &mut self.state {
                    s.name = Personal::Erased;
                    s.email = Personal::Erased;
                    s.shipping_address = Personal::Erased;
                    s.erased = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
