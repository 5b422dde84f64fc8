//! `GET /openapi.json`, generated from the handlers and DTOs with utoipa.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use ordo_service::problem::{Code, FieldProblem, Problem};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use uuid::Uuid;

use super::{orders, parties, products};

/// A successful command.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The id of the resource the command acted on.
    id: Uuid,
    /// The resource's stream version after the command (also the `ETag`).
    version: i64,
    /// Pass to the query API to read your own write: `<category>:<id>:<version>`.
    #[schema(example = "order:0194f1b2-8c4e-7d3a-9f1e-2b3c4d5e6f70:1")]
    consistency_token: String,
}

/// Errors every command may answer with.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(crate) enum CommandErrors {
    /// Malformed JSON, a malformed header (`If-Match`, `Idempotency-Key`, `X-Correlation-Id`), or a
    /// path id that is not a UUID (`invalid_path`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing or invalid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The role or the principal may not act on this resource.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The resource does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Not allowed in the current state (`invalid_state`), already exists, or too much contention.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// `If-Match` named another version (`version_conflict`).
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// The body is larger than allowed.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Well-formed but invalid: `validation_failed` (every field listed) or a domain code.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The command could not be recorded; nothing about the cause is disclosed.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// Busy (the event log's writer lock, every database connection): nothing was written; retry
    /// after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json", headers(("Retry-After" = u64)))]
    Unavailable(Problem),
}

/// Headers every command accepts.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct CommandHeaders {
    /// Makes the command safe to repeat: a repeat with the same body answers the first response
    /// with `Idempotent-Replayed: true` and appends nothing; another body with the same key is
    /// 422 `idempotency_key_reused`. Scoped to the caller. 1 to 255 visible ASCII characters
    /// (inner spaces allowed).
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7E]([\t\x20-\x7E]*[\x21-\x7E])?$"
    )]
    idempotency_key: Option<String>,
    /// `"<version>"`: the command applies only at this stream version (else 412). Without it,
    /// concurrent writers are retried internally. Also `W/"<version>"`, a bare `<version>` or
    /// `*` (any version).
    #[param(rename = "If-Match", nullable = false, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#)]
    if_match: Option<String>,
    /// Correlation id (UUID) stored in the events; a new one when absent. Echoed back. Anything
    /// but a UUID is 400.
    #[param(
        rename = "X-Correlation-Id",
        nullable = false,
        pattern = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    )]
    correlation_id: Option<Uuid>,
    /// W3C trace context, stored in the events' metadata.
    #[param(nullable = false)]
    traceparent: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ordo command API",
        version = "1",
        description = "The write side of Ordo. Bearer JWT (HS256) with `sub` and `role`. Every command \
                       answers `{id, version, consistency_token}` with `ETag`; creations 201 with \
                       `Location`, order placement 202. Errors are `application/problem+json`."
    ),
    paths(
        parties::register_customer,
        parties::erase_customer,
        parties::register_merchant,
        products::list_product,
        products::change_price,
        products::adjust_stock,
        products::discontinue_product,
        orders::place_order,
        orders::pay_order,
        orders::ship_order,
        orders::deliver_order,
        orders::cancel_order,
    ),
    components(schemas(Accepted, Problem, FieldProblem, Code)),
    modifiers(&BearerAuth),
    tags(
        (name = "customers"), (name = "merchants"), (name = "products"), (name = "orders")
    )
)]
struct ApiDoc;

/// The document, built once.
pub(crate) fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

pub(crate) async fn serve() -> Response {
    axum::Json(document()).into_response()
}
