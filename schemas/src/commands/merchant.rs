use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command_enum;

/// Registers a merchant. Fails with `already_exists` when the stream already holds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RegisterMerchant {
    pub merchant_id: Uuid,
    /// 1 to 200 characters, not blank.
    pub name: String,
}

/// Commands of the merchant aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum MerchantCommand {
    RegisterMerchant(RegisterMerchant),
}

command_enum!(MerchantCommand { RegisterMerchant });
