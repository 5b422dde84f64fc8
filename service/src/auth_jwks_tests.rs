//! Tokens from an identity provider: RS256 and ES256 keys served as JWKS over real HTTP by a
//! stand-in provider, checked through `JwtKeys::authenticate`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ordo_schemas::Role;
use serde_json::json;
use uuid::Uuid;

use crate::auth::testing::{TestIssuer, TestKey};
use crate::auth::{AuthConfigError, AuthSettings, JwtKeys};

fn keys_for(issuer: &TestIssuer, role_claim: &str, min_refresh_secs: u64) -> JwtKeys {
    let settings = AuthSettings { jwks_min_refresh_secs: min_refresh_secs, ..issuer.settings(role_claim) };
    JwtKeys::new(&settings, None).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_key_set_are_accepted() {
    let issuer = TestIssuer::start().await;
    let (rsa, ec) = (TestKey::rsa('A', "rsa-1"), TestKey::ec("ec-1"));
    issuer.publish(&[&rsa, &ec]);
    let keys = keys_for(&issuer, "role", 0);
    let id = Uuid::new_v4();
    let rs = keys.authenticate(&rsa.sign(&issuer.claims(id, json!({"role": "merchant"})))).await.unwrap();
    assert_eq!((rs.id, rs.role), (id, Role::Merchant));
    let es = keys.authenticate(&ec.sign(&issuer.claims(id, json!({"role": "auditor"})))).await.unwrap();
    assert_eq!(es.role, Role::Auditor);
    assert_eq!(issuer.fetches(), 1, "the second token is verified from the cache");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_token_and_a_withdrawn_one_is_refused_once_the_cache_expires() {
    let issuer = TestIssuer::start().await;
    let (old, new) = (TestKey::rsa('A', "2024"), TestKey::rsa('B', "2025"));
    issuer.publish(&[&old]);
    let settings = AuthSettings { jwks_cache_secs: 3600, jwks_min_refresh_secs: 0, ..issuer.settings("role") };
    let keys = JwtKeys::new(&settings, None).unwrap();
    let claims = issuer.claims(Uuid::new_v4(), json!({"role": "customer"}));
    keys.authenticate(&old.sign(&claims)).await.unwrap();

    issuer.publish(&[&old, &new]);
    keys.authenticate(&new.sign(&claims)).await.expect("the new kid triggers a refresh");
    assert_eq!(issuer.fetches(), 2);
    keys.authenticate(&old.sign(&claims)).await.expect("both keys are published during the rotation");

    issuer.publish(&[&new]);
    let expiring = AuthSettings { jwks_cache_secs: 0, jwks_min_refresh_secs: 0, ..issuer.settings("role") };
    let keys = JwtKeys::new(&expiring, None).unwrap();
    keys.authenticate(&new.sign(&claims)).await.unwrap();
    let err = keys.authenticate(&old.sign(&claims)).await.unwrap_err();
    assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: unknown signing key"));
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_key_set_once_per_interval() {
    let issuer = TestIssuer::start().await;
    let key = TestKey::ec("real");
    issuer.publish(&[&key]);
    let keys = keys_for(&issuer, "role", 3600);
    let claims = issuer.claims(Uuid::new_v4(), json!({"role": "customer"}));
    keys.authenticate(&key.sign(&claims)).await.unwrap();
    let forged: Vec<String> = (0..50).map(|i| TestKey::ec(&format!("made-up-{i}")).sign(&claims)).collect();
    let results = futures::future::join_all(forged.iter().map(|t| keys.authenticate(t))).await;
    for r in results {
        let err = r.unwrap_err();
        assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: unknown signing key"));
    }
    assert_eq!(issuer.fetches(), 1, "no refresh within the minimum interval");
}

#[tokio::test]
async fn a_wrong_issuer_a_wrong_audience_or_a_missing_one_is_refused() {
    let issuer = TestIssuer::start().await;
    let key = TestKey::rsa('A', "k");
    issuer.publish(&[&key]);
    let keys = keys_for(&issuer, "role", 0);
    let id = Uuid::new_v4();
    let cases = [
        ("wrong issuer", json!({"iss": "https://evil.example/realms/test"}), "invalid token: wrong issuer"),
        ("no issuer", json!({"iss": null}), "invalid token: missing claim"),
        ("wrong audience", json!({"aud": "another-app"}), "invalid token: wrong audience"),
        ("no audience", json!({"aud": null}), "invalid token: missing claim"),
    ];
    for (what, change, detail) in cases {
        let mut claims = issuer.claims(id, json!({"role": "admin"}));
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let err = keys.authenticate(&key.sign(&claims)).await.expect_err(what);
        assert_eq!((err.status, err.detail.as_str()), (401, detail), "{what}");
    }
    let listed = issuer.claims(id, json!({"role": "admin", "aud": ["account", "ordo"]}));
    keys.authenticate(&key.sign(&listed)).await.expect("one of several audiences is enough");
}

#[tokio::test]
async fn a_public_key_used_as_an_hmac_secret_is_refused_with_or_without_a_dev_secret() {
    let issuer = TestIssuer::start().await;
    let rsa = TestKey::rsa('A', "rsa-1");
    issuer.publish(&[&rsa]);
    let claims = issuer.claims(Uuid::new_v4(), json!({"role": "admin"}));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(rsa.kid.clone());
    let confused = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&rsa.public_bytes)).unwrap();
    let jwks_only = keys_for(&issuer, "role", 0);
    let err = jwks_only.authenticate(&confused).await.unwrap_err();
    assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: algorithm not allowed"));
    let both = JwtKeys::new(&issuer.settings("role"), Some("dev-secret")).unwrap();
    let err = both.authenticate(&confused).await.unwrap_err();
    assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: bad signature"));
    // An ES256 token naming the RSA key's kid finds no key that verifies ES256.
    let impostor = TestKey::ec("rsa-1");
    let err = jwks_only.authenticate(&impostor.sign(&claims)).await.unwrap_err();
    assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: unknown signing key"));
}

#[tokio::test]
async fn the_role_is_read_from_a_configured_claim_path_taking_the_first_ordo_role() {
    let issuer = TestIssuer::start().await;
    let key = TestKey::ec("k");
    issuer.publish(&[&key]);
    let keys = keys_for(&issuer, "realm_access.roles", 0);
    let id = Uuid::new_v4();
    let keycloak = json!({"realm_access": {"roles": ["offline_access", "uma_authorization", "merchant", "admin"]}});
    let p = keys.authenticate(&key.sign(&issuer.claims(id, keycloak))).await.unwrap();
    assert_eq!(p.role, Role::Merchant);
    for (what, claims) in [
        ("no ordo role", json!({"realm_access": {"roles": ["offline_access"]}})),
        ("only system", json!({"realm_access": {"roles": ["system"]}})),
        ("top-level role ignored", json!({"role": "admin"})),
        ("not an array or string", json!({"realm_access": {"roles": {"admin": true}}})),
    ] {
        let err = keys.authenticate(&key.sign(&issuer.claims(id, claims))).await.expect_err(what);
        assert_eq!((err.status, err.detail.as_str()), (401, "invalid token: unknown role"), "{what}");
    }
}

#[tokio::test]
async fn an_unreachable_key_set_answers_503_and_hs256_tokens_still_verify() {
    let issuer = TestIssuer::start().await;
    let key = TestKey::ec("k");
    let settings = AuthSettings { jwks_url: Some("http://127.0.0.1:9/jwks".into()), ..issuer.settings("role") };
    let keys = JwtKeys::new(&settings, Some("dev-secret")).unwrap();
    let claims = issuer.claims(Uuid::new_v4(), json!({"role": "customer"}));
    let err = keys.authenticate(&key.sign(&claims)).await.unwrap_err();
    assert_eq!((err.status, err.retry_after), (503, Some(5)));
    let dev = keys.mint(Uuid::new_v4(), Role::Customer, chrono::Duration::minutes(5)).unwrap();
    assert_eq!(keys.authenticate(&dev).await.unwrap().role, Role::Customer, "minted with the configured iss and aud");
}

#[test]
fn settings_that_cannot_verify_safely_are_refused() {
    let none = AuthSettings::default();
    assert!(matches!(JwtKeys::new(&none, None), Err(AuthConfigError::NoKeys)));
    assert!(matches!(JwtKeys::new(&none, Some("   ")), Err(AuthConfigError::NoKeys)));
    let bare = AuthSettings { jwks_url: Some("https://idp.example/jwks".into()), ..AuthSettings::default() };
    assert!(matches!(JwtKeys::new(&bare, None), Err(AuthConfigError::IssuerAndAudienceRequired)));
    let no_aud = AuthSettings { issuer: Some("https://idp.example".into()), ..bare.clone() };
    assert!(matches!(JwtKeys::new(&no_aud, None), Err(AuthConfigError::IssuerAndAudienceRequired)));
    let ftp = AuthSettings { jwks_url: Some("ftp://idp/jwks".into()), audience: vec!["ordo".into()], ..no_aud };
    assert!(matches!(JwtKeys::new(&ftp, None), Err(AuthConfigError::BadJwksUrl)));
    let empty_claim = AuthSettings { role_claim: "realm_access.".into(), ..AuthSettings::default() };
    assert!(matches!(JwtKeys::new(&empty_claim, Some("s")), Err(AuthConfigError::EmptyRoleClaim)));
}
