//! The command API served as configured for an identity provider: RS256 and ES256 tokens from a
//! JWKS served over HTTP, no HS256 secret.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ordo_command_api::config::{Config, Secret};
use ordo_command_api::RetryPolicy;
use ordo_event_store::testing::TestDb;
use ordo_service::auth::testing::{TestIssuer, TestKey};
use ordo_service::http::Limits;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

struct Served {
    base: String,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ordo_command_api::RunError>>,
}

async fn serve(db: &TestDb, auth: ordo_service::AuthSettings, secret: Option<&str>) -> Served {
    ordo_command_api::migrate(&db.pool).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        database_url: Secret::new(db.url.clone()),
        migrate: true,
        addr,
        jwt_secret: secret.map(Secret::new),
        auth,
        max_connections: 4,
        limits: Limits::default(),
        retry: RetryPolicy::default(),
        writer: ordo_event_store::WriterOptions::default(),
        query_public_url: ordo_command_api::http::DEFAULT_QUERY_URL.to_owned(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(ordo_command_api::serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Served { base: format!("http://{addr}"), stop, server }
}

#[tokio::test]
async fn keycloak_style_tokens_from_a_jwks_are_accepted_and_forged_ones_write_nothing() {
    let db = TestDb::new().await;
    let issuer = Arc::new(TestIssuer::start().await);
    let (rsa, ec) = (TestKey::rsa('A', "rsa"), TestKey::ec("ec"));
    issuer.publish(&[&rsa, &ec]);
    let served = serve(&db, issuer.settings("realm_access.roles"), None).await;
    let http = reqwest::Client::new();
    let post = |token: String| {
        http.post(format!("{}/v1/merchants", served.base)).bearer_auth(token).json(&json!({"name": "Acme"})).send()
    };
    let roles = json!({"realm_access": {"roles": ["offline_access", "merchant"]}});

    let rs = post(rsa.sign(&issuer.claims(Uuid::new_v4(), roles.clone()))).await.unwrap();
    assert_eq!(rs.status(), 201, "{}", rs.text().await.unwrap());
    let es = post(ec.sign(&issuer.claims(Uuid::new_v4(), roles.clone()))).await.unwrap();
    assert_eq!(es.status(), 201);

    let claims = issuer.claims(Uuid::new_v4(), roles.clone());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let confused = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&rsa.public_bytes)).unwrap();
    let wrong_issuer = rsa.sign(
        &issuer.claims(Uuid::new_v4(), json!({"iss": "https://evil.example", "realm_access": roles["realm_access"]})),
    );
    let wrong_audience =
        rsa.sign(&issuer.claims(Uuid::new_v4(), json!({"aud": "billing", "realm_access": roles["realm_access"]})));
    let unknown_kid = TestKey::rsa('B', "not-published").sign(&claims);
    let dev = ordo_service::JwtKeys::from_secret(b"dev")
        .mint(Uuid::new_v4(), ordo_schemas::Role::Merchant, chrono::Duration::minutes(5))
        .unwrap();
    for (what, token) in [
        ("alg confusion", confused),
        ("wrong issuer", wrong_issuer),
        ("wrong audience", wrong_audience),
        ("unknown kid", unknown_kid),
        ("hs256 without a secret", dev),
    ] {
        let r = post(token).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{what}");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(events, 2, "only the two honest requests wrote");
    let _ = served.stop.send(());
    served.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_command_api_refuses_to_start_with_a_jwks_url_but_no_audience() {
    let db = TestDb::new().await;
    let issuer = TestIssuer::start().await;
    let auth = ordo_service::AuthSettings { audience: Vec::new(), ..issuer.settings("role") };
    let served = serve(&db, auth, None).await;
    let err = served.server.await.unwrap().expect_err("no audience");
    assert!(err.to_string().contains("ORDO_JWT_AUDIENCE"), "{err}");
}
