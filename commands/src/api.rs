//! One public method per command, with the ownership rule each one enforces.
//!
//! Rights: admin and system (the saga) may issue any command; an auditor none. A customer acts
//! as itself and on its own orders; a merchant as itself, on its own products and on the orders
//! placed with it. Commands only the saga issues (reservations, confirmation, rejection) are
//! refused to customers and merchants.

use std::future::ready;

use ordo_domain::{Customer, DomainError, Merchant, Order, Product};
use ordo_schemas::{
    Actor, AdjustStock, CancelOrder, ChangePrice, CommitReservation, ConfirmOrder, CustomerCommand, DeliverOrder,
    DiscontinueProduct, EraseCustomer, ListProduct, MerchantCommand, OrderCommand, PayOrder, ProductCommand,
    RegisterCustomer, RegisterMerchant, RejectOrder, RejectedLine, ReleaseReservation, ReserveStock, Role, ShipOrder,
    StreamCategory, StreamRef,
};
use uuid::Uuid;

use super::{CommandContext, CommandError, CommandOutcome, CommandService, SkuClaim, Snapshot, Spec};

/// Admin and system may do anything.
fn privileged(actor: &Actor) -> bool {
    matches!(actor.role, Role::Admin | Role::System)
}

/// The actor is `id` in `role`, or privileged.
pub(super) fn acting_as(actor: &Actor, role: Role, id: Uuid) -> Result<(), CommandError> {
    if privileged(actor) || (actor.role == role && actor.id == id) {
        Ok(())
    } else if actor.role == Role::Auditor {
        Err(CommandError::Forbidden("auditors may not issue commands".into()))
    } else {
        Err(CommandError::Forbidden(format!("a {} may only act as itself or on what it owns", actor.role.as_str())))
    }
}

/// Only the saga (or an admin) issues this command.
fn system_only(actor: &Actor) -> Result<(), CommandError> {
    if privileged(actor) {
        Ok(())
    } else {
        Err(CommandError::Forbidden(format!("a {} may not issue this command", actor.role.as_str())))
    }
}

/// The product's merchant (or a privileged actor); a missing product passes so `decide` says 404.
fn product_owner(actor: Actor) -> impl Fn(&Product) -> Result<(), CommandError> + Send + Sync {
    move |p: &Product| p.state().map_or(Ok(()), |s| acting_as(&actor, Role::Merchant, s.merchant_id))
}

/// Which party of an order may issue a command.
#[derive(Clone, Copy)]
enum Party {
    Customer,
    Merchant,
    Either,
}

fn order_party(actor: Actor, party: Party) -> impl Fn(&Order) -> Result<(), CommandError> + Send + Sync {
    move |o: &Order| {
        let Some(s) = o.state() else { return Ok(()) };
        let as_customer = || acting_as(&actor, Role::Customer, s.customer_id);
        let as_merchant = || acting_as(&actor, Role::Merchant, s.merchant_id);
        match party {
            Party::Customer => as_customer(),
            Party::Merchant => as_merchant(),
            Party::Either => as_customer().or_else(|_| as_merchant()),
        }
    }
}

fn product(id: Uuid) -> StreamRef {
    StreamRef::new(StreamCategory::Product, id)
}

fn order(id: Uuid) -> StreamRef {
    StreamRef::new(StreamCategory::Order, id)
}

impl CommandService {
    /// Issues a command that needs no preparation.
    async fn issue<A>(
        &self,
        name: &'static str,
        stream: StreamRef,
        ctx: &CommandContext,
        guard: impl Fn(&A) -> Result<(), CommandError> + Send + Sync + 'static,
        command: A::Command,
    ) -> Result<CommandOutcome, CommandError>
    where
        A: Snapshot + Send + Sync + 'static,
        A::Command: Send + Sync + 'static,
        A::Event: Send + Sync,
    {
        self.handle(Spec { name, stream, ctx, guard: Box::new(guard), sku: None }, ready(Ok(command))).await
    }

    /// Registers a customer (stream id = `customer_id`); `already_exists` when registered.
    /// Only the customer itself or an admin.
    pub async fn register_customer(
        &self,
        ctx: &CommandContext,
        command: RegisterCustomer,
    ) -> Result<CommandOutcome, CommandError> {
        let id = command.customer_id;
        let actor = ctx.actor;
        let guard = move |_: &Customer| acting_as(&actor, Role::Customer, id);
        let stream = StreamRef::new(StreamCategory::Customer, id);
        self.issue("RegisterCustomer", stream, ctx, guard, CustomerCommand::RegisterCustomer(command)).await
    }

    /// Erases a customer's personal data: records `PersonalDataErased` (who and why), then
    /// destroys the customer's key, so every personal field sealed with it reads as erased.
    /// `not_found` for an unknown customer, `invalid_state` when already erased. Only the
    /// customer itself or an admin.
    ///
    /// The key is destroyed after the event is recorded; should that fail, the erasure is
    /// completed by `ordo migrate` (which destroys the key of every erased customer) and the
    /// command answers with the storage error.
    pub async fn erase_customer(
        &self,
        ctx: &CommandContext,
        customer_id: Uuid,
        reason: String,
    ) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Customer| acting_as(&actor, Role::Customer, customer_id);
        let stream = StreamRef::new(StreamCategory::Customer, customer_id);
        let command = CustomerCommand::EraseCustomer(EraseCustomer { customer_id, reason, by: actor });
        let outcome = self.issue("EraseCustomer", stream, ctx, guard, command).await?;
        self.store().personal().erase(customer_id).await?;
        Ok(outcome)
    }

    /// Registers a merchant (stream id = `merchant_id`); `already_exists` when registered.
    /// Only the merchant itself or an admin.
    pub async fn register_merchant(
        &self,
        ctx: &CommandContext,
        command: RegisterMerchant,
    ) -> Result<CommandOutcome, CommandError> {
        let id = command.merchant_id;
        let actor = ctx.actor;
        let guard = move |_: &Merchant| acting_as(&actor, Role::Merchant, id);
        let stream = StreamRef::new(StreamCategory::Merchant, id);
        self.issue("RegisterMerchant", stream, ctx, guard, MerchantCommand::RegisterMerchant(command)).await
    }

    /// Lists a product of a registered merchant, claiming its SKU (unique per merchant) in the
    /// same transaction; a taken SKU or product id is `already_exists`, an unregistered merchant
    /// `validation_failed` on `merchant_id`.
    pub async fn list_product(
        &self,
        ctx: &CommandContext,
        command: ListProduct,
    ) -> Result<CommandOutcome, CommandError> {
        let merchant_id = command.merchant_id;
        let actor = ctx.actor;
        let guard = move |_: &Product| acting_as(&actor, Role::Merchant, merchant_id);
        let sku = SkuClaim { merchant_id, sku: command.sku.as_str().to_owned() };
        let spec = Spec {
            name: "ListProduct",
            stream: product(command.product_id),
            ctx,
            guard: Box::new(guard),
            sku: Some(sku),
        };
        let prepare = async move {
            acting_as(&actor, Role::Merchant, merchant_id)?;
            let merchant = self.load::<Merchant>(StreamRef::new(StreamCategory::Merchant, merchant_id)).await?;
            if !merchant.state.exists() {
                return Err(DomainError::field("merchant_id", "merchant is not registered").into());
            }
            Ok(ProductCommand::ListProduct(command))
        };
        self.handle(spec, prepare).await
    }

    /// Changes a product's price (same currency, positive). Owning merchant only.
    pub async fn change_price(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
        command: ChangePrice,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = product_owner(ctx.actor);
        self.issue("ChangePrice", product(product_id), ctx, guard, ProductCommand::ChangePrice(command)).await
    }

    /// Adjusts on-hand stock; `insufficient_stock` below zero or below reserved. Owning merchant
    /// only.
    pub async fn adjust_stock(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
        command: AdjustStock,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = product_owner(ctx.actor);
        self.issue("AdjustStock", product(product_id), ctx, guard, ProductCommand::AdjustStock(command)).await
    }

    /// Stops new reservations of a product. Owning merchant only.
    pub async fn discontinue_product(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = product_owner(ctx.actor);
        let command = ProductCommand::DiscontinueProduct(DiscontinueProduct {});
        self.issue("DiscontinueProduct", product(product_id), ctx, guard, command).await
    }

    /// Saga: reserves `quantity` of a product for an order. A second reservation for the same
    /// order is a no-op (0 events); `out_of_stock`, `product_discontinued` or `not_found` refuse.
    pub async fn reserve_stock(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
        order_id: Uuid,
        quantity: u32,
    ) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Product| system_only(&actor);
        let command = ProductCommand::ReserveStock(ReserveStock { order_id, quantity });
        self.issue("ReserveStock", product(product_id), ctx, guard, command).await
    }

    /// Saga: releases an order's reservation of a product (rejection, cancellation); a no-op
    /// without one.
    pub async fn release_reservation(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
        order_id: Uuid,
    ) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Product| system_only(&actor);
        let command = ProductCommand::ReleaseReservation(ReleaseReservation { order_id });
        self.issue("ReleaseReservation", product(product_id), ctx, guard, command).await
    }

    /// Saga: commits an order's reservation of a product at shipment; a no-op without one.
    pub async fn commit_reservation(
        &self,
        ctx: &CommandContext,
        product_id: Uuid,
        order_id: Uuid,
    ) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Product| system_only(&actor);
        let command = ProductCommand::CommitReservation(CommitReservation { order_id });
        self.issue("CommitReservation", product(product_id), ctx, guard, command).await
    }

    /// Saga: confirms a pending order; a no-op when already confirmed, `invalid_state` otherwise.
    pub async fn confirm_order(&self, ctx: &CommandContext, order_id: Uuid) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Order| system_only(&actor);
        let command = OrderCommand::ConfirmOrder(ConfirmOrder {});
        self.issue("ConfirmOrder", order(order_id), ctx, guard, command).await
    }

    /// Saga: rejects a pending order with the lines that could not be reserved; a no-op when
    /// already rejected.
    pub async fn reject_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        failed_lines: Vec<RejectedLine>,
    ) -> Result<CommandOutcome, CommandError> {
        let actor = ctx.actor;
        let guard = move |_: &Order| system_only(&actor);
        let command = OrderCommand::RejectOrder(RejectOrder { failed_lines });
        self.issue("RejectOrder", order(order_id), ctx, guard, command).await
    }

    /// Pays a confirmed order; `amount_mismatch` unless the amount equals the total. Owning
    /// customer only.
    pub async fn pay_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        command: PayOrder,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = order_party(ctx.actor, Party::Customer);
        self.issue("PayOrder", order(order_id), ctx, guard, OrderCommand::PayOrder(command)).await
    }

    /// Ships a paid order. The order's merchant only.
    pub async fn ship_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        command: ShipOrder,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = order_party(ctx.actor, Party::Merchant);
        self.issue("ShipOrder", order(order_id), ctx, guard, OrderCommand::ShipOrder(command)).await
    }

    /// Marks a shipped order delivered. The order's merchant only.
    pub async fn deliver_order(&self, ctx: &CommandContext, order_id: Uuid) -> Result<CommandOutcome, CommandError> {
        let guard = order_party(ctx.actor, Party::Merchant);
        let command = OrderCommand::DeliverOrder(DeliverOrder {});
        self.issue("DeliverOrder", order(order_id), ctx, guard, command).await
    }

    /// Cancels an order before shipment, recording the context's actor as the canceller. The
    /// order's customer or merchant. The saga releases the stock.
    pub async fn cancel_order(
        &self,
        ctx: &CommandContext,
        order_id: Uuid,
        reason: String,
    ) -> Result<CommandOutcome, CommandError> {
        let guard = order_party(ctx.actor, Party::Either);
        let command = OrderCommand::CancelOrder(CancelOrder { reason, by: ctx.actor });
        self.issue("CancelOrder", order(order_id), ctx, guard, command).await
    }
}
