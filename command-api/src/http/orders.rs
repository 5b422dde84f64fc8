//! Order commands: placement (customer, 202), payment (owning customer), shipment and delivery
//! (the order's merchant), cancellation (either party). Admins may do all of them.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::Response;
use ordo_domain::limits::{MAX_QUANTITY, MAX_REASON, MAX_REFERENCE, MIN_QUANTITY};
use ordo_schemas::{PayOrder, Role, ShipOrder};
use ordo_service::{Principal, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{respond, CommandMeta, IdPath, RawCommand, ReadAt};
use super::openapi::{Accepted, CommandErrors, CommandHeaders};
use super::parse::{AddressDto, Fields, MoneyDto};
use super::AppState;
use ordo_commands::{OrderLineRequest, PlaceOrderRequest, ReceiptKind};

/// Most lines one order may have.
const MAX_LINES: usize = 100;

/// One requested line.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = OrderLineRequest)]
pub(crate) struct LineDto {
    #[schema(required = true, nullable = false)]
    product_id: Option<Uuid>,
    /// 1 to 1000.
    #[schema(required = true, nullable = false, example = 2, minimum = 1, maximum = 1000)]
    quantity: Option<i64>,
}

/// Places an order with one merchant; lines are priced from the products' current state.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PlaceOrderRequest)]
pub(crate) struct PlaceOrderBody {
    /// Client-chosen order id; a new one when omitted.
    id: Option<Uuid>,
    /// Only for admins: the customer to order for. A customer orders for itself.
    customer_id: Option<Uuid>,
    /// 1 to 100 lines, each product once, all of one merchant.
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    lines: Option<Vec<LineDto>>,
    /// Defaults to the customer's registered address.
    shipping_address: Option<AddressDto>,
}

/// Pays a confirmed order.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PayOrderRequest)]
pub(crate) struct PayBody {
    /// Must equal the order total exactly.
    #[schema(required = true, nullable = false)]
    amount: Option<MoneyDto>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    payment_reference: Option<String>,
}

/// Ships a paid order.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ShipOrderRequest)]
pub(crate) struct ShipBody {
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    carrier: Option<String>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    tracking_number: Option<String>,
}

/// Cancels an order before shipment.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CancelOrderRequest)]
pub(crate) struct CancelBody {
    /// 1 to 500 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 500, pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: Option<String>,
}

fn parse_lines(f: &mut Fields, lines: Option<Vec<LineDto>>) -> Option<Vec<OrderLineRequest>> {
    let lines = f.required("lines", lines)?;
    if lines.is_empty() || lines.len() > MAX_LINES {
        f.push("lines", format!("must contain 1 to {MAX_LINES} lines"));
        return None;
    }
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::with_capacity(lines.len());
    let range = i64::from(MIN_QUANTITY)..=i64::from(MAX_QUANTITY);
    for (i, line) in lines.into_iter().enumerate() {
        let product_id = f.required(&format!("lines[{i}].product_id"), line.product_id);
        if let Some(id) = product_id.filter(|id| !seen.insert(*id)) {
            f.push(format!("lines[{i}].product_id"), format!("product {id} appears in more than one line"));
        }
        let quantity = f.int_in::<u32>(&format!("lines[{i}].quantity"), line.quantity, range.clone());
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            parsed.push(OrderLineRequest { product_id, quantity });
        }
    }
    Some(parsed)
}

#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(CommandHeaders),
    responses((status = 202, description = "placed (pending); confirmed or rejected asynchronously",
               body = Accepted, headers(("ETag" = String), ("Location" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn place_order(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Customer, Role::Admin])?;
    let body: PlaceOrderBody = raw.json().await?;
    let mut f = Fields::new();
    let customer_id = match (principal.role, body.customer_id) {
        (Role::Customer, Some(id)) if id != principal.id => {
            return Err(Problem::forbidden("a customer orders only for itself").into())
        }
        (Role::Customer, _) => Some(principal.id),
        (_, id) => f.required("customer_id", id),
    };
    let lines = parse_lines(&mut f, body.lines);
    let shipping_address = match body.shipping_address {
        None => Some(None),
        Some(a) => f.some_address("shipping_address", a).map(Some),
    };
    let order_id = body.id.unwrap_or_else(Uuid::now_v7);
    let request = f.finish((|| {
        Some(PlaceOrderRequest {
            order_id,
            customer_id: customer_id?,
            lines: lines?,
            shipping_address: shipping_address?,
        })
    })())?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Accepted);
    let outcome = app.commands.place_order(&ctx, request).await?;
    Ok(respond(outcome, ReceiptKind::Accepted, Some((&app.query_url, ReadAt::Order))))
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/payment", tag = "orders",
    request_body = PayBody,
    params(("id" = Uuid, Path, description = "order id"), CommandHeaders),
    responses((status = 200, description = "paid", body = Accepted, headers(("ETag" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn pay_order(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Customer, Role::Admin])?;
    let body: PayBody = raw.json().await?;
    let mut f = Fields::new();
    let amount = f.money("amount", body.amount);
    let reference = f.text("payment_reference", body.payment_reference, MAX_REFERENCE);
    let command =
        f.finish(amount.zip(reference).map(|(amount, payment_reference)| PayOrder { amount, payment_reference }))?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.pay_order(&ctx, id, command).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/shipment", tag = "orders",
    request_body = ShipBody,
    params(("id" = Uuid, Path, description = "order id"), CommandHeaders),
    responses((status = 200, description = "shipped", body = Accepted, headers(("ETag" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn ship_order(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let body: ShipBody = raw.json().await?;
    let mut f = Fields::new();
    let carrier = f.text("carrier", body.carrier, MAX_REFERENCE);
    let tracking = f.text("tracking_number", body.tracking_number, MAX_REFERENCE);
    let command =
        f.finish(carrier.zip(tracking).map(|(carrier, tracking_number)| ShipOrder { carrier, tracking_number }))?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.ship_order(&ctx, id, command).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/delivery", tag = "orders",
    params(("id" = Uuid, Path, description = "order id"), CommandHeaders),
    responses((status = 200, description = "delivered", body = Accepted, headers(("ETag" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn deliver_order(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.deliver_order(&ctx, id).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/cancellation", tag = "orders",
    request_body = CancelBody,
    params(("id" = Uuid, Path, description = "order id"), CommandHeaders),
    responses((status = 200, description = "cancelled; the saga releases the stock", body = Accepted,
               headers(("ETag" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_order(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Customer, Role::Merchant, Role::Admin])?;
    let body: CancelBody = raw.json().await?;
    let mut f = Fields::new();
    let reason = f.text("reason", body.reason, MAX_REASON);
    let reason = f.finish(reason)?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.cancel_order(&ctx, id, reason).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}
