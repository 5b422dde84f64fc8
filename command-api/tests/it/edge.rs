//! The HTTP edge: authentication, malformed requests, If-Match, metadata, ops and OpenAPI.

use axum::body::Body;
use axum::http::Request;
use ordo_schemas::{Role, StreamCategory};
use ordo_service::JwtKeys;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{customer_body, eur, spawn_app, BODY_LIMIT};

#[tokio::test]
async fn a_missing_or_invalid_token_is_401() {
    let app = spawn_app().await;

    let r = app.post("/v1/merchants", "", json!({"name": "Acme"})).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));

    let foreign =
        JwtKeys::from_secret(b"another secret").mint(Uuid::new_v4(), Role::Merchant, chrono::Duration::minutes(5));
    let r = app.post("/v1/merchants", &foreign.unwrap(), json!({"name": "Acme"})).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));

    let expired = app.keys.mint(Uuid::new_v4(), Role::Merchant, chrono::Duration::minutes(-5)).unwrap();
    let r = app.post("/v1/merchants", &expired, json!({"name": "Acme"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn an_auditor_writes_nothing() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 100, 1).await;
    let auditor = app.party(Role::Auditor);
    let before = app.event_count().await;

    for (path, body) in [
        ("/v1/customers".to_owned(), customer_body("Eve")),
        ("/v1/merchants".to_owned(), json!({"name": "Eve"})),
        ("/v1/products".to_owned(), json!({})),
        (format!("/v1/products/{product}/stock"), json!({"delta": 1, "reason": "restock"})),
        (format!("/v1/products/{product}/discontinue"), json!({})),
        ("/v1/orders".to_owned(), json!({"lines": [{"product_id": product, "quantity": 1}]})),
        (format!("/v1/orders/{}/cancellation", Uuid::new_v4()), json!({"reason": "x"})),
    ] {
        let r = app.post(&path, &auditor.token, body).await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{path}");
    }
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn malformed_json_is_400_a_wrong_content_type_415_and_an_oversized_body_413() {
    let app = spawn_app().await;
    let merchant = app.party(Role::Merchant);
    let post = |content_type: &str, body: Vec<u8>| {
        Request::post("/v1/merchants")
            .header("authorization", format!("Bearer {}", merchant.token))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };

    let r = app.send(post("application/json", b"{\"name\": ".to_vec())).await;
    assert_eq!((r.status, r.code()), (400, "malformed_json"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    let r = app.send(post("text/plain", b"{\"name\": \"Acme\"}".to_vec())).await;
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));

    let huge = serde_json::to_vec(&json!({"name": "x".repeat(BODY_LIMIT + 1)})).unwrap();
    let r = app.send(post("application/json", huge)).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));

    let r = app.send(post("application/json", b"{\"name\": 42}".to_vec())).await;
    assert_eq!((r.status, r.code()), (422, "validation_failed"), "wrong types are 4xx, never 5xx");

    let r = app.post("/v1/products/not-a-uuid/stock", &merchant.token, json!({})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_path"));
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn if_match_with_another_version_is_412_and_with_the_current_one_applies() {
    let app = spawn_app().await;
    let merchant = app.merchant().await;
    let product = app.product(&merchant, 1000, 5).await;
    let path = format!("/v1/products/{product}/price");
    let body = json!({"price": eur(1500)});

    let r = app.post_with(&path, &merchant.token, &body, &[("if-match", "\"7\"")]).await;
    assert_eq!((r.status, r.code()), (412, "version_conflict"));
    assert_eq!(
        (r.body["extra"]["expected_version"].as_i64(), r.body["extra"]["actual_version"].as_i64()),
        (Some(7), Some(1))
    );

    let r = app.post_with(&path, &merchant.token, &body, &[("if-match", "\"1\"")]).await;
    assert_eq!((r.status, r.header("etag")), (200, Some("\"2\"")), "{:?}", r.body);

    let r = app.post_with(&path, &merchant.token, &body, &[("if-match", "soon")]).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn traceparent_correlation_id_and_actor_land_in_the_event_metadata() {
    let app = spawn_app().await;
    let merchant = app.party(Role::Merchant);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let correlation = Uuid::new_v4().to_string();
    let headers = [("traceparent", traceparent), ("x-correlation-id", correlation.as_str())];

    let r = app.post_with("/v1/merchants", &merchant.token, &json!({"name": "Acme"}), &headers).await;

    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("x-correlation-id"), Some(correlation.as_str()));
    let meta = app.last_metadata(StreamCategory::Merchant, merchant.id).await;
    assert_eq!(meta.traceparent.as_deref(), Some(traceparent));
    assert_eq!(meta.correlation_id.to_string(), correlation);
    assert_eq!((meta.actor.id, meta.actor.role), (merchant.id, Role::Merchant));

    let other = app.party(Role::Merchant);
    let r = app.post_with("/v1/merchants", &other.token, &json!({"name": "B"}), &[("traceparent", "garbage")]).await;
    assert_eq!(r.status, 201);
    let meta = app.last_metadata(StreamCategory::Merchant, other.id).await;
    let fresh = meta.traceparent.unwrap();
    assert!(fresh.starts_with("00-") && fresh != "garbage", "a malformed traceparent starts a new trace: {fresh}");
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_are_served() {
    let app = spawn_app().await;
    app.merchant().await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();

    assert_eq!(app.send(get("/healthz")).await.status, 200);
    let ready = app.send(get("/readyz")).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));

    let resp = tower::ServiceExt::oneshot(app.router.clone(), get("/metrics")).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("ordo_commands_total{command=\"RegisterMerchant\",outcome=\"accepted\"}"), "{text}");
    assert!(text.contains("ordo_command_duration_seconds"), "{text}");

    let doc = app.send(get("/openapi.json")).await;
    assert_eq!(doc.status, 200);
    for path in ["/v1/customers", "/v1/products/{id}/stock", "/v1/orders", "/v1/orders/{id}/cancellation"] {
        assert!(doc.body["paths"][path]["post"].is_object(), "{path} missing");
    }
    assert_eq!(doc.body["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc.body["components"]["schemas"]["Problem"].is_object());
    let stock = &doc.body["paths"]["/v1/products/{id}/stock"]["post"];
    assert!(stock["responses"]["422"]["content"]["application/problem+json"].is_object(), "{stock}");
}
