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
        orders::OrderPage, sales::Sales, sales::SalesDay, ordo_service::Problem, ordo_service::problem::FieldProblem,
        ordo_service::Code)),
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
    let mut doc = ApiDoc::openapi().merge_from(crate::audit::AuditDoc::openapi());
    problem_bodies(&mut doc);
    Json(doc)
}

/// Every error answer (4xx, 5xx) is `application/problem+json` with the `Problem` schema, whose
/// `code` lists [`ordo_service::Code`]. Every route may answer 503 (an exhausted pool), one with an
/// `{id}` 400 `invalid_path`, one with parameters or a body 400 and 422, a secured one 401 and 403.
fn problem_bodies(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let takes_input = operation.request_body.is_some()
                || operation.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let mut answers = Vec::new();
            if path.contains("{id}") {
                answers.push(("400", "`invalid_path`: the id in the path is not a UUID"));
            }
            if takes_input {
                answers.push(("400", "a malformed query string or body (`invalid_query`, `malformed_json`)"));
                answers.push(("422", "`validation_failed`: every invalid parameter listed"));
            }
            if secured {
                answers.push(("401", "missing, invalid or expired bearer token"));
                answers.push(("403", "the role may not read this"));
            }
            answers.push(("503", "busy (every database connection in use): retry after `Retry-After` seconds"));
            for (status, description) in answers {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
            }
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else { continue };
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let content = response
                    .content
                    .entry(ordo_service::problem::CONTENT_TYPE.to_owned())
                    .or_insert_with(|| Content::new(None::<RefOr<utoipa::openapi::schema::Schema>>));
                content.schema.get_or_insert_with(|| RefOr::Ref(Ref::from_schema_name("Problem")));
            }
        }
    }
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

    #[tokio::test]
    async fn error_answers_use_the_problem_schema_whose_code_lists_every_code() {
        let Json(doc) = document().await;
        let doc = serde_json::to_value(doc).unwrap_or_default();
        let codes = &doc["components"]["schemas"]["Code"]["enum"];
        assert_eq!(codes.as_array().map(Vec::len), Some(ordo_service::Code::ALL.len()), "{codes}");
        assert_eq!(doc["components"]["schemas"]["Problem"]["properties"]["code"]["$ref"], "#/components/schemas/Code");
        let not_found = &doc["paths"]["/v1/products/{id}"]["get"]["responses"]["404"]["content"];
        assert_eq!(not_found["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem");
        for path in ["/v1/products/{id}", "/v1/merchants/{id}/sales", "/v1/audit/streams/{category}/{id}/digest"] {
            let invalid = &doc["paths"][path]["get"]["responses"]["400"]["content"]["application/problem+json"];
            assert_eq!(invalid["schema"]["$ref"], "#/components/schemas/Problem", "{path}");
        }
    }
}
