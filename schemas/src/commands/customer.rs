use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command_enum;
use crate::envelope::Actor;
use crate::values::{Address, Email};

/// Registers a customer. Fails with `already_exists` when the stream already holds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RegisterCustomer {
    pub customer_id: Uuid,
    /// 1 to 200 characters, not blank.
    pub name: String,
    pub email: Email,
    pub shipping_address: Address,
}

/// Erases the customer's personal data: destroys the customer's key and records why. Fails
/// with `not_found` for an unknown customer and `invalid_state` when already erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EraseCustomer {
    pub customer_id: Uuid,
    /// 1 to 500 characters, not blank; must not itself hold personal data.
    pub reason: String,
    /// Who erases: the customer itself or an admin.
    pub by: Actor,
}

/// Commands of the customer aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerCommand {
    RegisterCustomer(RegisterCustomer),
    EraseCustomer(EraseCustomer),
}

command_enum!(CustomerCommand { RegisterCustomer, EraseCustomer });
