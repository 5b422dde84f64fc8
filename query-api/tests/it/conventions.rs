//! HTTP conventions: problem+json for unknown routes and methods, one rule for malformed path
//! ids, 503 when the connection pool is exhausted, the access log and metrics that pass
//! `promtool check metrics`.

use std::sync::Arc;
use std::time::Duration;

use ordo_event_store::testing::TestDb;
use ordo_event_store::EventStore;
use ordo_query_api::log_feed::{FeedOptions, LogFeed};
use ordo_query_api::{app, AppState};
use ordo_schemas::Role;
use ordo_service::http::Limits;
use ordo_service::shutdown::Shutdown;
use ordo_service::test_process::{promtool_check_metrics, RunningProcess};
use ordo_service::JwtKeys;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::{admin, App, SECRET};

const PROBLEM: &str = "application/problem+json";

async fn problem(resp: reqwest::Response) -> (u16, Option<String>, Option<String>, Value) {
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, allow) = (header("content-type"), header("allow"));
    (status, content_type, allow, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem_and_a_wrong_method_a_405_problem_with_allow() {
    let app = App::spawn().await;
    let (status, content_type, _, body) = problem(app.get("/v1/nowhere", admin()).send().await.unwrap()).await;
    assert_eq!((status, content_type.as_deref(), &body["code"]), (404, Some(PROBLEM), &json!("not_found")));

    let order = format!("/v1/orders/{}", Uuid::new_v4());
    for (method, path) in [("POST", "/v1/products"), ("DELETE", order.as_str()), ("PUT", "/v1/audit/verify")] {
        let req = app.http.request(method.parse().unwrap(), format!("{}{path}", app.base));
        let (status, content_type, allow, body) = problem(req.send().await.unwrap()).await;
        assert_eq!((status, content_type.as_deref()), (405, Some(PROBLEM)), "{method} {path}");
        assert_eq!((body["code"].as_str(), body["status"].as_u64()), (Some("method_not_allowed"), Some(405)));
        assert_eq!(allow.as_deref(), Some("GET,HEAD"), "{method} {path}");
    }
    let (status, content_type, allow, _) =
        problem(app.http.post(format!("{}/metrics", app.base)).send().await.unwrap()).await;
    assert_eq!((status, content_type.as_deref(), allow.as_deref()), (405, Some(PROBLEM), Some("GET,HEAD")));
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_id_is_400_invalid_path_on_every_route_with_an_id() {
    let app = App::spawn().await;
    let routes = [
        "/v1/products/{}",
        "/v1/orders/{}",
        "/v1/customers/{}/orders",
        "/v1/merchants/{}/orders",
        "/v1/merchants/{}/sales",
        "/v1/audit/streams/order/{}/events",
        "/v1/audit/streams/order/{}/state",
        "/v1/audit/streams/order/{}/digest",
        "/v1/audit/streams/order/{}/digest/proof",
    ];
    for route in routes {
        for bad in ["not-a-uuid", "1234", "0194f1b2-8c4e-7d3a-9f1e-2b3c4d5e6f7"] {
            let path = route.replace("{}", bad);
            let (status, content_type, _, body) = problem(app.get(&path, admin()).send().await.unwrap()).await;
            assert_eq!((status, content_type.as_deref()), (400, Some(PROBLEM)), "{path}: {body}");
            assert_eq!((&body["code"], &body["errors"][0]["field"]), (&json!("invalid_path"), &json!("id")), "{path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn an_exhausted_connection_pool_is_503_with_retry_after_not_500() {
    let db = TestDb::new().await;
    ordo_projectors::migrate(&db.pool).await.unwrap();
    let pool = db.pool_of_one().await;
    let stop = Shutdown::new();
    let quiet = FeedOptions { poll: Duration::from_secs(3600), ..FeedOptions::default() };
    let feed = LogFeed::start(EventStore::new(pool.clone()), quiet, stop.clone()).await.unwrap();
    let state = AppState {
        pool: pool.clone(),
        keys: Arc::new(JwtKeys::from_secret(SECRET.as_bytes())),
        consistency_wait: Duration::from_secs(1),
        feed,
        heartbeat: Duration::from_secs(15),
        relay_name: "relay".into(),
        // off: every request here must reach the (exhausted) pool
        cache: ordo_query_api::cache::QueryCache::disabled(),
        personal: Arc::new(ordo_event_store::personal::PersonalData::new(pool.clone())),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let s = stop.clone();
    let server = tokio::spawn(ordo_service::http::serve(listener, app(state, Limits::default()), async move {
        s.wait().await;
    }));
    let held = pool.acquire().await.unwrap();

    let http = reqwest::Client::new();
    let token = JwtKeys::from_secret(SECRET.as_bytes()).mint(Uuid::new_v4(), Role::Admin, chrono::Duration::minutes(5));
    for path in [format!("/v1/products/{}", Uuid::new_v4()), "/v1/products".to_owned(), "/v1/audit/verify".to_owned()] {
        let resp = http.get(format!("{base}{path}")).bearer_auth(token.as_ref().unwrap()).send().await.unwrap();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, _, _, body) = problem(resp).await;
        assert_eq!((status, retry_after.as_deref(), &body["code"]), (503, Some("1"), &json!("unavailable")), "{path}");
    }
    drop(held);
    stop.trigger();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_running_binary_logs_one_access_line_per_request_at_info_and_its_metrics_pass_promtool() {
    let db = TestDb::new().await;
    let process = RunningProcess::start(
        env!("CARGO_BIN_EXE_query-api"),
        &[
            ("ORDO_DATABASE_URL", &db.url),
            ("ORDO_MIGRATE", "true"),
            ("ORDO_JWT_SECRET", SECRET),
            ("ORDO_QUERY_ADDR", "127.0.0.1:0"),
        ],
    );
    let http = reqwest::Client::new();
    let token = JwtKeys::from_secret(SECRET.as_bytes()).mint(Uuid::new_v4(), Role::Admin, chrono::Duration::minutes(5));
    let token = token.unwrap();
    let product = Uuid::new_v4();
    let missing = http
        .get(format!("{}/v1/products/{product}?access_token=hunter2", process.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let request_id = missing.headers()["x-request-id"].to_str().unwrap().to_owned();

    let served = |v: &Value| v["message"] == "request served";
    let line = process
        .wait_for(|v| served(v) && v["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no access line for {request_id}:\n{}", process.log().join("\n")));
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        (&line["method"], &line["route"], &line["status"]),
        (&json!("GET"), &json!("/v1/products/{id}"), &json!(404))
    );
    assert!(line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    let log = process.log().join("\n");
    assert!(!log.contains("hunter2") && !log.contains(&token), "a secret reached the log:\n{log}");

    let metrics = http.get(format!("{}/metrics", process.base())).send().await.unwrap().text().await.unwrap();
    for name in ["ordo_http_requests_total", "ordo_http_request_duration_seconds_bucket", "ordo_build_info"] {
        assert!(metrics.contains(&format!("\n{name}")), "{name} missing:\n{metrics}");
    }
    assert!(metrics.contains("process_resident_memory_bytes "), "{metrics}");
    if let Err(findings) = promtool_check_metrics(&metrics) {
        panic!("promtool check metrics:\n{findings}\n{metrics}");
    }
}
