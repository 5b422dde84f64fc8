//! Lifecycle statuses shared by the write side (aggregates) and the read side (read models).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where an order is in its lifecycle.
///
/// Allowed moves: `pending -> confirmed | rejected | cancelled`, `confirmed -> paid | cancelled`,
/// `paid -> shipped | cancelled`, `shipped -> delivered`. `rejected`, `cancelled` and `delivered`
/// are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// The wire name (`pending`, `confirmed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True when the lifecycle may move from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Confirmed | Rejected | Cancelled)
                | (Confirmed, Paid | Cancelled)
                | (Paid, Shipped | Cancelled)
                | (Shipped, Delivered)
        )
    }

    /// True while the order may still be cancelled (before shipment).
    pub fn is_cancellable(self) -> bool {
        self.can_become(OrderStatus::Cancelled)
    }

    /// True for `rejected`, `cancelled` and `delivered`.
    pub fn is_final(self) -> bool {
        !Self::ALL.into_iter().any(|n| self.can_become(n))
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a product takes new reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    Active,
    /// No new reservations; existing ones can still be released or committed.
    Discontinued,
}

impl ProductStatus {
    /// The wire name (`active`, `discontinued`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Active => "active",
            ProductStatus::Discontinued => "discontinued",
        }
    }
}

impl std::fmt::Display for ProductStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
