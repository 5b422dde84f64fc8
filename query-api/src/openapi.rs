//! `GET /openapi.json`: the read-model half of the query API (the audit routes document
//! themselves in their module).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{orders, products, projections, sales};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ordo query API", description = "Read models of Ordo. Lists use keyset pagination \
        (`limit` 1..500, default 50; opaque `cursor`). Single resources carry `ETag` and honour \
        `If-None-Match`. A `consistency_token` (query or header `Ordo-Consistency-Token`) makes a read \
        wait, bounded, for that write; the answer carries `Ordo-Consistency: honoured` or `timeout`. \
        Errors are application/problem+json."),
    paths(products::list, products::one, orders::one, orders::by_customer, orders::by_merchant, sales::daily,
        projections::list),
    components(schemas(products::MoneyView, products::ProductView, products::ProductPage, orders::OrderView,
        orders::OrderPage, sales::Sales, sales::SalesDay)),
    modifiers(&Bearer)
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
