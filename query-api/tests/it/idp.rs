//! The query API configured for an identity provider: tokens verified with keys from a JWKS
//! served over HTTP, roles from a claim path, no HS256 secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ordo_event_store::testing::TestDb;
use ordo_query_api::{serve, Config};
use ordo_service::auth::testing::{TestIssuer, TestKey};
use ordo_service::shutdown::Shutdown;
use serde_json::json;
use tokio::net::TcpListener;
use uuid::Uuid;

#[tokio::test]
async fn tokens_from_the_providers_key_set_are_accepted_and_forged_ones_get_401() {
    let db = TestDb::new().await;
    ordo_projectors::migrate(&db.pool).await.unwrap();
    let issuer = TestIssuer::start().await;
    let (rsa, ec) = (TestKey::rsa('A', "rsa"), TestKey::ec("ec"));
    issuer.publish(&[&rsa, &ec]);
    let config = Config { jwt_secret: None, auth: issuer.settings("groups"), ..Config::new(db.url.clone(), "unused") };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    let s = stop.clone();
    let server = tokio::spawn(async move { serve(listener, config, async move { s.wait().await }).await });
    let http = reqwest::Client::new();
    let missing_order = format!("{base}/v1/orders/{}", Uuid::new_v4());
    let get = |token: String| http.get(&missing_order).bearer_auth(token).send();

    let admin = json!({"groups": ["staff", "admin"]});
    for key in [&rsa, &ec] {
        let r = get(key.sign(&issuer.claims(Uuid::new_v4(), admin.clone()))).await.unwrap();
        assert_eq!(r.status(), 404, "{:?}: authenticated, and the order does not exist", key.alg);
    }
    let claims = issuer.claims(Uuid::new_v4(), admin.clone());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let confused = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&rsa.public_bytes)).unwrap();
    let wrong_issuer =
        ec.sign(&issuer.claims(Uuid::new_v4(), json!({"iss": "https://evil.example", "groups": ["admin"]})));
    let wrong_audience = ec.sign(&issuer.claims(Uuid::new_v4(), json!({"aud": "billing", "groups": ["admin"]})));
    let unknown_kid = TestKey::ec("rotated-away").sign(&claims);
    let no_role = ec.sign(&issuer.claims(Uuid::new_v4(), json!({"groups": ["staff"]})));
    for (what, token) in [
        ("alg confusion", confused),
        ("wrong issuer", wrong_issuer),
        ("wrong audience", wrong_audience),
        ("unknown kid", unknown_kid),
        ("no ordo role", no_role),
    ] {
        let r = get(token).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
    }
    stop.trigger();
    server.await.unwrap().unwrap();
}
