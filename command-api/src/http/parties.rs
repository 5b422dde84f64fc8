//! `POST /v1/customers` and `POST /v1/merchants`: a customer or merchant registers as itself
//! (id = token subject), an admin registers anyone (id from the body, or a new one).
//! `POST /v1/customers/{id}/erasure`: the customer itself or an admin erases its personal data.

use axum::extract::State;
use axum::response::Response;
use ordo_domain::limits::{MAX_NAME, MAX_REASON};
use ordo_schemas::{Email, RegisterCustomer, RegisterMerchant, Role};
use ordo_service::{Principal, Problem};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use ordo_commands::ReceiptKind;

use super::extract::{respond, CommandMeta, IdPath, RawCommand, ReadAt};
use super::openapi::{Accepted, CommandErrors};
use super::parse::{AddressDto, Fields};
use super::AppState;

/// Registers a customer.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RegisterCustomerRequest)]
pub(crate) struct RegisterCustomerBody {
    /// The customer id: the token subject for a customer (may be omitted), any id for an admin
    /// (omitted: a new one).
    id: Option<Uuid>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    name: Option<String>,
    /// One `@`; a local part of 1 to 64 characters without leading, trailing or doubled dots; a
    /// domain of at least two dot-separated labels of letters, digits and inner hyphens.
    #[schema(required = true, nullable = false, example = "ada@example.com", format = Email, min_length = 3,
             max_length = 254, pattern = r"^(?=[^@]{1,64}@)[^\s@.\x00-\x1F\x7F-\x9F]+(\.[^\s@.\x00-\x1F\x7F-\x9F]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$")]
    email: Option<String>,
    #[schema(required = true, nullable = false)]
    shipping_address: Option<AddressDto>,
}

/// Registers a merchant.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = RegisterMerchantRequest)]
pub(crate) struct RegisterMerchantBody {
    /// The merchant id: the token subject for a merchant (may be omitted), any id for an admin.
    id: Option<Uuid>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"^[^\x00]*\S[^\x00]*$")]
    name: Option<String>,
}

/// Erases a customer's personal data (GDPR Art. 17).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = EraseCustomerRequest)]
pub(crate) struct EraseBody {
    /// Why, 1 to 500 characters, not blank; recorded in the log in clear, so it must not hold
    /// personal data (a ticket reference, say).
    #[schema(required = true, nullable = false, min_length = 1, max_length = 500, pattern = r"^[^\x00]*\S[^\x00]*$")]
    reason: Option<String>,
}

/// The id a party registers under: itself, or for an admin the requested (or a new) id.
fn own_id(principal: &Principal, role: Role, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    if principal.role == role {
        return match requested {
            None => Ok(principal.id),
            Some(id) if id == principal.id => Ok(id),
            Some(_) => Err(Problem::forbidden(format!("a {} may only register itself", role.as_str())).into()),
        };
    }
    Ok(requested.unwrap_or_else(Uuid::now_v7))
}

#[utoipa::path(
    post, path = "/v1/customers", tag = "customers",
    request_body = RegisterCustomerBody,
    params(super::openapi::CommandHeaders),
    responses((status = 201, description = "registered", body = Accepted,
               headers(("ETag" = String), ("Location" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn register_customer(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Customer, Role::Admin])?;
    let body: RegisterCustomerBody = raw.json().await?;
    let customer_id = own_id(&principal, Role::Customer, body.id)?;
    let mut f = Fields::new();
    let name = f.text("name", body.name, MAX_NAME);
    let email = f.value("email", body.email, Email::parse);
    let shipping_address = f.address("shipping_address", body.shipping_address);
    let command = f.finish((|| {
        Some(RegisterCustomer { customer_id, name: name?, email: email?, shipping_address: shipping_address? })
    })())?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Created);
    let outcome = app.commands.register_customer(&ctx, command).await?;
    Ok(respond(outcome, ReceiptKind::Created, Some((&app.query_url, ReadAt::Customer))))
}

#[utoipa::path(
    post, path = "/v1/merchants", tag = "merchants",
    request_body = RegisterMerchantBody,
    params(super::openapi::CommandHeaders),
    responses((status = 201, description = "registered", body = Accepted,
               headers(("ETag" = String), ("Location" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn register_merchant(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Merchant, Role::Admin])?;
    let body: RegisterMerchantBody = raw.json().await?;
    let merchant_id = own_id(&principal, Role::Merchant, body.id)?;
    let mut f = Fields::new();
    let name = f.text("name", body.name, MAX_NAME);
    let command = f.finish(name.map(|name| RegisterMerchant { merchant_id, name }))?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Created);
    let outcome = app.commands.register_merchant(&ctx, command).await?;
    Ok(respond(outcome, ReceiptKind::Created, Some((&app.query_url, ReadAt::Merchant))))
}

#[utoipa::path(
    post, path = "/v1/customers/{id}/erasure", tag = "customers",
    request_body = EraseBody,
    params(("id" = Uuid, Path, description = "customer id"), super::openapi::CommandHeaders),
    responses((status = 200, description = "erased: the customer's key is destroyed and `PersonalDataErased` \
               recorded; every personal field of the customer and its orders reads as `null` from now on",
               body = Accepted, headers(("ETag" = String))), CommandErrors),
    security(("bearer" = []))
)]
pub(crate) async fn erase_customer(
    State(app): State<AppState>,
    principal: Principal,
    meta: CommandMeta,
    IdPath(id): IdPath,
    raw: RawCommand,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Customer, Role::Admin])?;
    let body: EraseBody = raw.json().await?;
    let mut f = Fields::new();
    let reason = f.text("reason", body.reason, MAX_REASON);
    let reason = f.finish(reason)?;
    let ctx = meta.context(&principal, &raw, ReceiptKind::Done);
    let outcome = app.commands.erase_customer(&ctx, id, reason).await?;
    Ok(respond(outcome, ReceiptKind::Done, None))
}
