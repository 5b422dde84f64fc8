//! Pure aggregates of Ordo: `decide(state, command) -> events` and `evolve(state, event)`, no
//! I/O and no async.
//!
//! Each aggregate ([`Customer`], [`Merchant`], [`Product`], [`Order`]) implements [`Aggregate`]
//! over the event and command enums of `ordo-schemas`. Rejections are [`DomainError`]s with a
//! stable machine [`DomainError::code`] and an [`ErrorKind`] that tells a conflict with the
//! current state (409) from an unprocessable command (422) and a missing aggregate (404);
//! infrastructure failures never appear here.
//!
//! The order saga relies on the idempotency decided here: reserving twice for one order,
//! releasing or committing a reservation that does not exist, confirming a confirmed order and
//! rejecting a rejected one all succeed with no events.

pub mod aggregate;
pub mod customer;
pub mod error;
pub mod limits;
pub mod merchant;
pub mod order;
pub mod product;
pub mod testing;

pub use aggregate::Aggregate;
pub use customer::{Customer, CustomerState};
pub use error::{DomainError, ErrorKind, FieldError};
pub use merchant::{Merchant, MerchantState};
pub use order::{Cancellation, Order, OrderState, Payment, Shipment};
pub use ordo_schemas::{OrderStatus, ProductStatus};
pub use product::{Product, ProductState};
