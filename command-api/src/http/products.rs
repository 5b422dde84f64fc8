//! Product commands: listing (merchant), price, stock and discontinuation (owning merchant).

use axum::extract::State;
use axum::response::Response;
use ordo_domain::limits::{MAX_DESCRIPTION, MAX_NAME};
use ordo_schemas::{AdjustStock, ChangePrice, ListProduct, Role, Sku, StockAdjustmentReason};
use ordo_service::{Principal, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use ordo_commands::ReceiptKind;

use super::extract::{respond, CommandMeta, IdPath, RawCommand, ReadAt};
use super::openapi::{Accepted, CommandErrors, CommandHeaders};
use super::parse::{Fields, MoneyDto};
use super::AppState;

/// Largest initial stock of a listing.
const MAX_INITIAL_STOCK: i64 = 1_000_000_000;

/// Lists a product.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ListProductRequest)]
pub(crate) struct ListProductBody {
    /// Client-chosen product id; a new one when omitted.
    id: Option<Uuid>,
    /// Only for admins: the merchant to list for. A merchant lists for itself.
    merchant_id: Option<Uuid>,
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`, unique per merchant.
    #[schema(
        required = true,
        nullable = false,
        example = "TSHIRT-RED-XL",
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9._-]{1,64}$"
    )]
    sku: Option<String>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    name: Option<String>,
    /// 1 to 2000 characters, not blank.
    #[schema(min_length = 1, max_length = 2000, pattern = r"^[^\x00]*\S[^\x00]*$")]
    description: Option<String>,
    #[schema(required = true, nullable = false)]
    price: Option<MoneyDto>,
    /// 0 to 1000000000.
    #[schema(required = true, nullable = false, example = 10, minimum = 0, maximum = 1_000_000_000)]
    initial_stock: Option<i64>,
}

/// Changes a price (same currency as listed).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ChangePriceRequest)]
pub(crate) struct ChangePriceBody {
    #[schema(required = true, nullable = false)]
    price: Option<MoneyDto>,
}

/// Adjusts on-hand stock.
#[derive(Debug, Deserialize)]
pub(crate) struct AdjustStockBody {
    /// Signed, not zero: positive for `restock`, negative for `write_off`, either for `correction`.
    delta: Option<i64>,
    /// `restock`, `write_off` or `correction`.
    reason: Option<String>,
}

impl utoipa::ToSchema for AdjustStockBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "AdjustStockRequest".into()
    }
}

/// One alternative per reason, since the reason decides the sign of `delta`.
impl utoipa::PartialSchema for AdjustStockBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
        let case = |reason: &str, delta: ObjectBuilder| {
            ObjectBuilder::new()
                .property(
                    "delta",
                    delta.schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
                )
                .property("reason", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([reason])))
                .required("delta")
                .required("reason")
        };
        let any = || ObjectBuilder::new();
        let correction = OneOfBuilder::new()
            .item(case("correction", any().minimum(Some(1))))
            .item(case("correction", any().maximum(Some(-1))));
        Schema::OneOf(
            OneOfBuilder::new()
                .description(Some(
                    "Adjusts on-hand stock. `delta` is signed and not zero: positive for `restock`, negative for \
                     `write_off`, either for `correction`.",
                ))
                .item(case("restock", any().minimum(Some(1))))
                .item(case("write_off", any().maximum(Some(-1))))
                .item(correction)
                .build(),
        )
        .into()
    }
}

fn parse_reason(s: &str) -> Result<StockAdjustmentReason, ordo_schemas::InvalidValue> {
    match s {
        "restock" => Ok(StockAdjustmentReason::Restock),
        "write_off" => Ok(StockAdjustmentReason::WriteOff),
        "correction" => Ok(StockAdjustmentReason::Correction),
        _ => Err(ordo_schemas::InvalidValue::new("reason", "must be one of restock, write_off, correction")),
    }
}

#[utoipa::path(
    post, path = "/v1/products", tag = "products",
    request_body = ListProductBody,
    params(CommandHeaders),
    responses((status = 201, description = "listed", body = Accepted,
               headers(("ETag" = String), ("Location" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn list_product(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let body: ListProductBody = raw.json().await?;
    let mut f = Fields::new();
    let merchant_id = match (principal.role, body.merchant_id) {
        (Role::Merchant, Some(id)) if id != principal.id => {
            return Err(Problem::forbidden("a merchant lists only its own products").into())
        }
        (Role::Merchant, _) => Some(principal.id),
        (_, id) => f.required("merchant_id", id),
    };
    let product_id = body.id.unwrap_or_else(Uuid::now_v7);
    let sku = f.value("sku", body.sku, Sku::parse);
    let name = f.text("name", body.name, MAX_NAME);
    let description = f.optional_text("description", body.description, MAX_DESCRIPTION);
    let price = f.money("price", body.price);
    let initial_stock = f.int_in::<u32>("initial_stock", body.initial_stock, 0..=MAX_INITIAL_STOCK);
    let command = f.finish((|| {
        Some(ListProduct {
            product_id,
            merchant_id: merchant_id?,
            sku: sku?,
            name: name?,
            description: description?,
            price: price?,
            initial_stock: initial_stock?,
        })
    })())?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Created);
    let outcome = app.commands.list_product(&ctx, command).await?;
    Ok(respond(outcome, ReceiptKind::Created, Some((&app.query_url, ReadAt::Product))))
}

#[utoipa::path(
    post, path = "/v1/products/{id}/price", tag = "products",
    request_body = ChangePriceBody,
    params(("id" = Uuid, Path, description = "product id"), CommandHeaders),
    responses((status = 200, description = "price changed", body = Accepted, headers(("ETag" = String))),
              CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn change_price(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let body: ChangePriceBody = raw.json().await?;
    let mut f = Fields::new();
    let price = f.money("price", body.price);
    let command = f.finish(price.map(|price| ChangePrice { price }))?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.change_price(&ctx, id, command).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}

#[utoipa::path(
    post, path = "/v1/products/{id}/stock", tag = "products",
    request_body = AdjustStockBody,
    params(("id" = Uuid, Path, description = "product id"), CommandHeaders),
    responses((status = 200, description = "stock adjusted", body = Accepted, headers(("ETag" = String))),
              CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn adjust_stock(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let body: AdjustStockBody = raw.json().await?;
    let mut f = Fields::new();
    let delta = match f.required("delta", body.delta) {
        Some(0) => {
            f.push("delta", "must not be zero");
            None
        }
        other => other,
    };
    let reason = f.value("reason", body.reason, parse_reason);
    let command = f.finish(delta.zip(reason).map(|(delta, reason)| AdjustStock { delta, reason }))?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.adjust_stock(&ctx, id, command).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}

#[utoipa::path(
    post, path = "/v1/products/{id}/discontinue", tag = "products",
    params(("id" = Uuid, Path, description = "product id"), CommandHeaders),
    responses((status = 200, description = "discontinued", body = Accepted, headers(("ETag" = String))),
              CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn discontinue_product(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.discontinue_product(&ctx, id).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}
