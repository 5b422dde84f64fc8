//! Order placement: the handler prices the lines from the products' current state and takes the
//! shipping address from the customer when none is given; the order aggregate checks the rest.

use ordo_domain::{Customer, DomainError, Order, Product, ProductStatus};
use ordo_schemas::{Address, FieldError, PlaceOrder, PricedLine, Role, StreamCategory, StreamRef};
use uuid::Uuid;

use super::api::acting_as;
use super::{CommandContext, CommandError, CommandOutcome, CommandService, Spec};

/// A customer's order as requested: products and quantities, unpriced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrderRequest {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<OrderLineRequest>,
    /// `None`: ship to the customer's registered address.
    pub shipping_address: Option<Address>,
}

/// One requested line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLineRequest {
    pub product_id: Uuid,
    pub quantity: u32,
}

impl CommandService {
    /// Places an order (pending) for a registered customer; the saga confirms or rejects it.
    ///
    /// Refuses with `validation_failed` when the customer is not registered or products are
    /// unknown (every unknown `lines[i].product_id` is listed), `product_discontinued`,
    /// `mixed_merchants` when the products belong to several merchants, and the order
    /// aggregate's rules (quantities 1 to 1000, each product once). Only the customer itself (or
    /// an admin).
    ///
    /// # Errors
    /// As above, as [`CommandError::Domain`]; [`CommandError::Store`] when reading or appending
    /// fails.
    pub async fn place_order(
        &self,
        ctx: &CommandContext,
        request: PlaceOrderRequest,
    ) -> Result<CommandOutcome, CommandError> {
        // rights are checked in `prepare`, before any read
        let guard = Box::new(|_: &Order| -> Result<(), CommandError> { Ok(()) });
        let stream = StreamRef::new(StreamCategory::Order, request.order_id);
        let spec = Spec { name: "PlaceOrder", stream, ctx, guard, sku: None };
        let actor = ctx.actor;
        let prepare = async move {
            acting_as(&actor, Role::Customer, request.customer_id)?;
            Ok(ordo_schemas::OrderCommand::PlaceOrder(self.price(request).await?))
        };
        self.handle(spec, prepare).await
    }

    /// Reads the customer and every product and builds the priced command.
    async fn price(&self, request: PlaceOrderRequest) -> Result<PlaceOrder, CommandError> {
        let customer =
            self.load::<Customer>(StreamRef::new(StreamCategory::Customer, request.customer_id)).await?.state;
        let mut errors = Vec::new();
        if !customer.exists() {
            errors.push(FieldError::new("customer_id", "customer is not registered"));
        }
        if customer.is_erased() {
            return Err(
                DomainError::InvalidState("the customer's personal data was erased: no new orders".into()).into()
            );
        }
        let mut lines = Vec::with_capacity(request.lines.len());
        let mut discontinued = Vec::new();
        for (i, line) in request.lines.iter().enumerate() {
            let product = self.load::<Product>(StreamRef::new(StreamCategory::Product, line.product_id)).await?.state;
            match product.state() {
                None => errors.push(FieldError::new(
                    format!("lines[{i}].product_id"),
                    format!("unknown product {}", line.product_id),
                )),
                Some(p) if p.status == ProductStatus::Discontinued => discontinued.push(p.product_id),
                Some(p) => lines.push(PricedLine {
                    product_id: p.product_id,
                    merchant_id: p.merchant_id,
                    sku: p.sku.clone(),
                    name: p.name.clone(),
                    quantity: line.quantity,
                    unit_price: p.price,
                }),
            }
        }
        DomainError::check(errors)?;
        if let Some(product_id) = discontinued.first() {
            return Err(DomainError::ProductDiscontinued { product_id: *product_id }.into());
        }
        let shipping_address = match (request.shipping_address, customer.state()) {
            (Some(address), _) => address,
            (None, Some(c)) => match c.shipping_address.known() {
                Some(address) => address.clone(),
                None => {
                    return Err(DomainError::field("shipping_address", "the customer's address is not readable").into())
                }
            },
            (None, None) => return Err(DomainError::field("customer_id", "customer is not registered").into()),
        };
        Ok(PlaceOrder {
            order_id: request.order_id,
            customer_id: request.customer_id,
            merchant_id: None,
            lines,
            shipping_address,
        })
    }
}
