use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command_enum;
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

/// Commands of the customer aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerCommand {
    RegisterCustomer(RegisterCustomer),
}

command_enum!(CustomerCommand { RegisterCustomer });
