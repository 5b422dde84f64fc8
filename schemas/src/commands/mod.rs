//! Commands, one enum per aggregate. Each variant wraps a struct of the same name so handlers can
//! take the struct alone. Commands carry validated values ([`crate::Email`], [`crate::Sku`],
//! [`crate::Money`]); the aggregate checks the rules that need state or several fields.

mod customer;
mod merchant;
mod order;
mod product;

pub use customer::{CustomerCommand, EraseCustomer, RegisterCustomer};
pub use merchant::{MerchantCommand, RegisterMerchant};
pub use order::{
    CancelOrder, ConfirmOrder, DeliverOrder, OrderCommand, PayOrder, PlaceOrder, PricedLine, RejectOrder, ShipOrder,
};
pub use product::{
    AdjustStock, ChangePrice, CommitReservation, DiscontinueProduct, ListProduct, ProductCommand, ReleaseReservation,
    ReserveStock,
};

/// Generates `From<Struct> for Enum` and the `name()` of each command enum.
macro_rules! command_enum {
    ($enum:ident { $($variant:ident),+ $(,)? }) => {
        impl $enum {
            /// Names of every command of this aggregate.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The command's name, e.g. `PlaceOrder` (used in logs and metrics).
            pub fn name(&self) -> &'static str {
                match self {
                    $($enum::$variant(_) => stringify!($variant)),+
                }
            }
        }

        $(
            impl From<$variant> for $enum {
                fn from(c: $variant) -> Self {
                    $enum::$variant(c)
                }
            }
        )+
    };
}
pub(crate) use command_enum;
