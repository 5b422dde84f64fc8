//! Parked streams, dead letters, their retry over HTTP (admins only) and the log's status.

use std::time::Duration;

use ordo_event_store::{ExpectedVersion, NewEvent};
use ordo_schemas::{Actor, EventMetadata, Role, StreamCategory};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::log_stream::stream;
use crate::{admin, App};

/// A `StockAdjusted` the catalog cannot decode: it parks its product stream.
fn poison() -> NewEvent {
    NewEvent {
        event_type: "StockAdjusted".into(),
        schema_version: 1,
        data: json!({ "nonsense": true }),
        metadata: EventMetadata {
            event_id: Uuid::new_v4(),
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::system(),
            traceparent: None,
            tracestate: None,
        },
    }
}

async fn parked(app: &App) -> Vec<Value> {
    let body: Value = app.get("/v1/projections/parked", admin()).send().await.unwrap().json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn post(app: &App, who: Option<(Role, Uuid)>, body: &str) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/v1/projections/parked/retry", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((role, id)) = who {
        req = req.bearer_auth(app.token(role, id));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if status >= 400 {
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_parked_streams_over_http_and_nobody_else_may() {
    let app = App::spawn().await;
    let store = app.db.store();
    let poisoned = stream(StreamCategory::Product);
    store.append(poisoned, ExpectedVersion::NoStream, vec![poison()]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while parked(&app).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the poison event parks its stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A stream parked earlier whose cause has been fixed: nothing stops it applying again.
    let healthy = Uuid::new_v4();
    sqlx::query("INSERT INTO parked_streams (projection, category, stream_id, reason) VALUES ('orders', 'order', $1, 'was broken')")
        .bind(healthy)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let listed = parked(&app).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["stream_id"], json!(poisoned.id));
    assert_eq!(listed[0]["projection"], "catalog");
    let dead: Value = app
        .get("/v1/projections/dead-letters?projection=catalog", Some((Role::Auditor, Uuid::new_v4())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = dead["items"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stream_id"], json!(poisoned.id));
    assert!(!dead[0]["error"].as_str().unwrap().is_empty());

    for who in [Some((Role::Auditor, Uuid::new_v4())), Some((Role::Customer, Uuid::new_v4())), None] {
        let (status, body) = post(&app, who, "{}").await;
        assert_eq!(status, if who.is_some() { 403 } else { 401 }, "{who:?}: {body}");
    }
    assert_eq!(parked(&app).await.len(), 2, "a refused retry changes nothing");
    for body in [r#"{"projection": "invoices"}"#, r#"{"category": "order"}"#, r#"{"stream_id": 1}"#, r#"{"extra": 1}"#]
    {
        let (status, problem) = post(&app, admin(), body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["code"], "validation_failed");
    }
    assert_eq!(post(&app, admin(), "{").await.0, 400);

    let (status, body) =
        post(&app, admin(), &json!({"projection": "orders", "category": "order", "stream_id": healthy}).to_string())
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["retried"].as_i64(), body["still_parked"].as_i64()), (Some(1), Some(0)));
    assert_eq!(body["outcomes"][0]["unparked"], true);
    let (status, body) = post(&app, admin(), "{}").await;
    assert_eq!(status, 200);
    assert_eq!(body["still_parked"], 1, "the poison event still fails: {body}");
    assert_eq!(body["outcomes"][0]["stream_id"], json!(poisoned.id));
    assert!(!body["outcomes"][0]["error"].as_str().unwrap().is_empty());
    let left = parked(&app).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["stream_id"], json!(poisoned.id));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_status_reports_the_head_the_writer_lock_and_the_relay_backlog() {
    let app = App::spawn().await;
    let store = app.db.store();
    store.append(stream(StreamCategory::Customer), ExpectedVersion::NoStream, vec![poison(), poison()]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status: Value = app
            .get("/v1/log/status", Some((Role::Auditor, Uuid::new_v4())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["head"]["position"] == 2 || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["head"]["position"], 2, "{status}");
    assert_eq!(status["relay"]["name"], "relay");
    assert_eq!(status["relay"]["leader"], Value::Null, "no relay runs here");
    assert_eq!(status["relay"]["lag_events"], 2, "nothing was published");
    assert_eq!(status["writer_lock"], Value::Null, "nobody holds the writer lock");

    // A session holding the relay's leader lock is reported as the leader.
    let key = ordo_event_store::relay::Relay::lock_key("relay");
    let mut conn = app.db.pool.acquire().await.unwrap();
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await.unwrap();
    assert!(got);
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.unwrap();
    let status: Value = app.get("/v1/log/status", admin()).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["relay"]["leader"]["pid"], pid, "{status}");
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *conn).await.unwrap();
    drop(conn);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_and_the_session_names_the_token_s_principal() {
    let app = App::spawn().await;
    for (path, kind) in
        [("/console", "text/html"), ("/console/app.js", "text/javascript"), ("/console/console.css", "text/css")]
    {
        let resp = app.get(path, None).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    }
    let missing = app.get("/console/../../etc/passwd", None).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let missing = app.get("/console/nothing.js", None).send().await.unwrap();
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    let me = Uuid::new_v4();
    let session: Value = app.get("/v1/session", Some((Role::Merchant, me))).send().await.unwrap().json().await.unwrap();
    assert_eq!(session, json!({"sub": me, "role": "merchant"}));
    let expired = app.keys_for_test().mint(me, Role::Admin, chrono::Duration::minutes(-10)).unwrap();
    let resp = app.http.get(format!("{}/v1/session", app.base)).bearer_auth(expired).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    app.stop().await;
}
