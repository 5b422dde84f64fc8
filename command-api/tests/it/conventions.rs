//! HTTP conventions: problem+json for unknown routes and methods, one rule for malformed path
//! ids, 503 when the connection pool is exhausted, `Location` on the query API, the access log
//! and metrics that pass `promtool check metrics`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use ordo_command_api::{router, AppState, CommandService};
use ordo_event_store::testing::TestDb;
use ordo_event_store::EventStore;
use ordo_schemas::Role;
use ordo_service::http::Limits;
use ordo_service::test_process::{promtool_check_metrics, RunningProcess};
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{customer_body, id_of, product_body, spawn_app, SECRET};

const PROBLEM: &str = "application/problem+json";

#[tokio::test]
async fn an_unknown_route_is_a_404_problem_and_a_wrong_method_a_405_problem_with_allow() {
    let app = spawn_app().await;

    let r = app.send(Request::get("/v1/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!((r.status, r.code(), r.header("content-type")), (404, "not_found", Some(PROBLEM)));

    for (method, path, allow) in [("GET", "/v1/orders", "POST"), ("DELETE", "/v1/products/x/price", "POST")] {
        let r = app.send(Request::builder().method(method).uri(path).body(Body::empty()).unwrap()).await;
        assert_eq!(
            (r.status, r.code(), r.header("content-type")),
            (405, "method_not_allowed", Some(PROBLEM)),
            "{path}"
        );
        assert_eq!(r.header("allow"), Some(allow), "{path}");
    }
    let r = app.send(Request::post("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!((r.status, r.code(), r.header("allow")), (405, "method_not_allowed", Some("GET,HEAD")));
}

#[tokio::test]
async fn a_malformed_id_is_400_invalid_path_on_every_route_with_an_id() {
    let app = spawn_app().await;
    let merchant = app.party(Role::Merchant);
    let customer = app.party(Role::Customer);
    let routes = [
        ("/v1/products/{}/price", &merchant),
        ("/v1/products/{}/stock", &merchant),
        ("/v1/products/{}/discontinue", &merchant),
        ("/v1/orders/{}/payment", &customer),
        ("/v1/orders/{}/shipment", &merchant),
        ("/v1/orders/{}/delivery", &merchant),
        ("/v1/orders/{}/cancellation", &customer),
    ];
    for (route, who) in routes {
        for bad in ["not-a-uuid", "1234", "0194f1b2-8c4e-7d3a-9f1e-2b3c4d5e6f7"] {
            let path = route.replace("{}", bad);
            let r = app.post(&path, &who.token, json!({})).await;
            assert_eq!((r.status, r.code()), (400, "invalid_path"), "{path}: {:?}", r.body);
            assert_eq!(r.fields(), ["id"], "{path}");
        }
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn an_exhausted_connection_pool_is_503_with_retry_after_not_500() {
    let db = TestDb::new().await;
    ordo_command_api::migrate(&db.pool).await.unwrap();
    let pool = db.pool_of_one().await;
    let keys = JwtKeys::from_secret(SECRET);
    let state = AppState::new(CommandService::new(EventStore::new(pool.clone())), Arc::new(keys.clone()));
    let app = router(state, Limits::default());
    let held = pool.acquire().await.unwrap();

    let merchant = Uuid::new_v4();
    let token = keys.mint(merchant, Role::Merchant, chrono::Duration::minutes(5)).unwrap();
    let req = Request::post("/v1/merchants")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(json!({"name": "Acme"}).to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: serde_json::Value =
        serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    drop(held);
}

#[tokio::test]
async fn creations_answer_a_location_on_the_query_api_at_its_configured_url() {
    let mut app = spawn_app().await;
    let state =
        AppState::new(app.commands.clone(), Arc::new(app.keys.clone())).with_query_url("https://read.example.com/api/");
    app.router = router(state, Limits::default());
    let base = "https://read.example.com/api";

    let merchant = app.party(Role::Merchant);
    let r = app.post("/v1/merchants", &merchant.token, json!({"name": "Acme"})).await;
    assert_eq!(r.header("location"), Some(format!("{base}/v1/merchants/{}/orders", merchant.id).as_str()));
    let customer = app.party(Role::Customer);
    let r = app.post("/v1/customers", &customer.token, customer_body("Ada")).await;
    assert_eq!(r.header("location"), Some(format!("{base}/v1/customers/{}/orders", customer.id).as_str()));
    let r = app.post("/v1/products", &merchant.token, product_body("SKU-1", 500, 3)).await;
    let product = id_of(&r);
    assert_eq!(r.header("location"), Some(format!("{base}/v1/products/{product}").as_str()));
    let r = app.post("/v1/orders", &customer.token, json!({"lines": [{"product_id": product, "quantity": 1}]})).await;
    assert_eq!((r.status, r.header("location")), (202, Some(format!("{base}/v1/orders/{}", id_of(&r)).as_str())));
}

#[tokio::test]
async fn the_running_binary_logs_one_access_line_per_request_at_info_and_its_metrics_pass_promtool() {
    let db = TestDb::new().await;
    let secret = std::str::from_utf8(SECRET).unwrap();
    let process = RunningProcess::start(
        env!("CARGO_BIN_EXE_command-api"),
        &[
            ("ORDO_DATABASE_URL", &db.url),
            ("ORDO_MIGRATE", "true"),
            ("ORDO_JWT_SECRET", secret),
            ("ORDO_COMMAND_ADDR", "127.0.0.1:0"),
        ],
    );
    let http = reqwest::Client::new();
    let merchant = Uuid::new_v4();
    let token = JwtKeys::from_secret(SECRET).mint(merchant, Role::Merchant, chrono::Duration::minutes(5)).unwrap();
    let created = http
        .post(format!("{}/v1/merchants?api_key=hunter2", process.base()))
        .bearer_auth(&token)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let request_id = created.headers()["x-request-id"].to_str().unwrap().to_owned();
    let missing = http.get(format!("{}/v1/nowhere", process.base())).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    let served = |v: &Value| v["message"] == "request served";
    let line = process
        .wait_for(|v| served(v) && v["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {request_id}:\n{}", process.log().join("\n")));
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        (&line["method"], &line["route"], &line["status"]),
        (&json!("POST"), &json!("/v1/merchants"), &json!(201))
    );
    assert!(line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    let unmatched = process.wait_for(|v| served(v) && v["route"] == "unmatched" && v["status"] == 404);
    assert!(unmatched.is_some(), "no access line for the unknown route");
    let log = process.log().join("\n");
    assert!(!log.contains("hunter2") && !log.contains(&token), "a secret reached the log:\n{log}");

    let metrics = http.get(format!("{}/metrics", process.base())).send().await.unwrap().text().await.unwrap();
    for name in ["ordo_http_requests_total", "ordo_commands_total", "ordo_build_info", "process_open_fds"] {
        assert!(metrics.contains(&format!("\n{name}")), "{name} missing:\n{metrics}");
    }
    if let Err(findings) = promtool_check_metrics(&metrics) {
        panic!("promtool check metrics:\n{findings}\n{metrics}");
    }
}
