//! The merchant aggregate: registered once with a name.

use ordo_schemas::values::check_text;
use ordo_schemas::{MerchantCommand, MerchantEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::limits::MAX_NAME;

/// A registered merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantState {
    pub merchant_id: Uuid,
    pub name: String,
}

/// The merchant aggregate; serialises as `null` before registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Merchant {
    state: Option<MerchantState>,
}

impl Merchant {
    /// The registered merchant, `None` before registration.
    pub fn state(&self) -> Option<&MerchantState> {
        self.state.as_ref()
    }

    pub fn exists(&self) -> bool {
        self.state.is_some()
    }
}

impl Aggregate for Merchant {
    type Event = MerchantEvent;
    type Command = MerchantCommand;

    /// `RegisterMerchant`: `already_exists` when registered, `validation_failed` for a blank or
    /// over-long name.
    fn decide(&self, command: &MerchantCommand) -> Result<Vec<MerchantEvent>, DomainError> {
        match command {
            MerchantCommand::RegisterMerchant(c) => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists("merchant is already registered".into()));
                }
                DomainError::check(check_text("name", &c.name, MAX_NAME).into_iter().collect())?;
                Ok(vec![MerchantEvent::MerchantRegistered { merchant_id: c.merchant_id, name: c.name.clone() }])
            }
        }
    }

    fn evolve(&mut self, event: &MerchantEvent) {
        match event {
            MerchantEvent::MerchantRegistered { merchant_id, name } => {
                self.state = Some(MerchantState { merchant_id: *merchant_id, name: name.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests;
