//! `GET /openapi.json`: the read-model routes and the audit routes (documented in their module).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin, console, log_stream, orders, products, projections, sales};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ordo query API", description = "Read models of Ordo. Lists use keyset pagination \
        (`limit` 1..500, default 50; opaque `cursor`). Single resources carry `ETag` and honour \
        `If-None-Match`. A `consistency_token` (query or header `Ordo-Consistency-Token`) makes a read \
        wait, bounded, for that write; the answer carries `Ordo-Consistency: honoured` or `timeout`. \
        Errors are application/problem+json."),
    paths(products::list, products::one, orders::one, orders::by_customer, orders::by_merchant, sales::daily,
        projections::list, admin::dead_letters, admin::parked, admin::retry, admin::log_status, log_stream::events,
        console::session),
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
    Json(ApiDoc::openapi().merge_from(crate::audit::AuditDoc::openapi()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_document_lists_the_read_model_and_the_audit_routes() {
        let Json(doc) = document().await;
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for p in [
            "/v1/products",
            "/v1/orders/{id}",
            "/v1/projections",
            "/v1/audit/events",
            "/v1/audit/verify",
            "/v1/audit/streams/{category}/{id}/digest/proof",
            "/v1/log/events",
            "/v1/log/status",
            "/v1/projections/parked/retry",
            "/v1/session",
        ] {
            assert!(paths.iter().any(|x| x.as_str() == p), "{p} missing from {paths:?}");
        }
    }
}
