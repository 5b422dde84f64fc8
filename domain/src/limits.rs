//! Bounds enforced by the aggregates.

/// Smallest quantity of an order line or reservation.
pub const MIN_QUANTITY: u32 = 1;
/// Largest quantity of an order line or reservation.
pub const MAX_QUANTITY: u32 = 1000;
/// Longest customer, merchant or product name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest product description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest payment reference, carrier or tracking number, in characters.
pub const MAX_REFERENCE: usize = 200;
/// Longest cancellation or rejection reason, in characters.
pub const MAX_REASON: usize = 500;
