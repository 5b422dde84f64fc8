//! Attacks on token verification, one per way a token can lie, checked at `JwtKeys::verify` and
//! at the `Principal` extractor (the bearer header parsing).

use axum::extract::FromRequestParts;
use axum::http::Request;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ordo_schemas::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{JwtKeys, Principal};

const SECRET: &[u8] = b"unit-test-secret";

fn sign(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn claims(changes: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"sub": Uuid::new_v4(), "role": "merchant", "exp": now + 600});
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// Base64url without padding, to hand-build tokens the JWT library refuses to build.
fn b64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn an_honest_token_verifies_and_every_lying_one_is_refused_with_401() {
    let keys = JwtKeys::from_secret(SECRET);
    let now = chrono::Utc::now().timestamp();
    let honest = claims(json!({"role": "admin"}));
    let p = keys.verify(&sign(Algorithm::HS256, &honest, SECRET)).unwrap();
    assert_eq!(p.role, Role::Admin);

    let signed = sign(Algorithm::HS256, &claims(json!({"role": "customer"})), SECRET);
    let parts: Vec<&str> = signed.split('.').collect();
    let cases: Vec<(&str, String)> = vec![
        ("expired", sign(Algorithm::HS256, &claims(json!({"exp": now - 3600})), SECRET)),
        ("expired a minute ago, beyond the leeway", sign(Algorithm::HS256, &claims(json!({"exp": now - 60})), SECRET)),
        ("not yet valid", sign(Algorithm::HS256, &claims(json!({"nbf": now + 3600})), SECRET)),
        ("HS384", sign(Algorithm::HS384, &honest, SECRET)),
        ("HS512", sign(Algorithm::HS512, &honest, SECRET)),
        ("wrong key", sign(Algorithm::HS256, &honest, b"another secret")),
        ("alg none", format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&honest.to_string()))),
        ("missing sub", sign(Algorithm::HS256, &claims(json!({"sub": null})), SECRET)),
        ("missing role", sign(Algorithm::HS256, &claims(json!({"role": null})), SECRET)),
        ("missing exp", sign(Algorithm::HS256, &claims(json!({"exp": null})), SECRET)),
        ("sub not a uuid", sign(Algorithm::HS256, &claims(json!({"sub": "admin"})), SECRET)),
        ("unknown role", sign(Algorithm::HS256, &claims(json!({"role": "root"})), SECRET)),
        ("role system", sign(Algorithm::HS256, &claims(json!({"role": "system"})), SECRET)),
        ("exp a string", sign(Algorithm::HS256, &claims(json!({"exp": "tomorrow"})), SECRET)),
        ("escalated payload", format!("{}.{}.{}", parts[0], b64(&honest.to_string()), parts[2])),
        ("no signature", format!("{}.{}.", parts[0], parts[1])),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("empty", String::new()),
        ("garbage", "not-a-jwt".into()),
    ];
    for (what, token) in cases {
        let err = keys.verify(&token).expect_err(what);
        assert_eq!((err.status, err.code.as_str()), (401, "unauthorized"), "{what}");
        assert!(!err.detail.contains(std::str::from_utf8(SECRET).unwrap()), "{what}: the secret leaks");
    }
}

#[tokio::test]
async fn the_extractor_accepts_only_a_bearer_scheme_and_an_optional_principal_only_without_a_header() {
    let keys = std::sync::Arc::new(JwtKeys::from_secret(SECRET));
    let token = keys.mint(Uuid::new_v4(), Role::Customer, chrono::Duration::minutes(5)).unwrap();
    let parts = |value: Option<String>| {
        let mut req = Request::get("/");
        if let Some(v) = value {
            req = req.header("authorization", v);
        }
        req.body(()).unwrap().into_parts().0
    };
    for ok in [format!("Bearer {token}"), format!("bearer {token}"), format!("BEARER   {token}  ")] {
        let p = <Principal as FromRequestParts<_>>::from_request_parts(&mut parts(Some(ok.clone())), &keys).await;
        assert_eq!(p.map(|p| p.role).ok(), Some(Role::Customer), "{ok}");
    }
    for bad in [
        None,
        Some(format!("Basic {token}")),
        Some(format!("Token {token}")),
        Some(token.clone()),
        Some("Bearer".into()),
        Some("Bearer    ".into()),
        Some(format!("Bearer {token}x")),
    ] {
        let p = <Principal as FromRequestParts<_>>::from_request_parts(&mut parts(bad.clone()), &keys).await;
        assert_eq!(p.map_err(|e| e.status).err(), Some(401), "{bad:?}");
    }
    let anonymous =
        <Principal as axum::extract::OptionalFromRequestParts<_>>::from_request_parts(&mut parts(None), &keys).await;
    assert_eq!(anonymous.ok(), Some(None), "no header: anonymous");
    let bad = <Principal as axum::extract::OptionalFromRequestParts<_>>::from_request_parts(
        &mut parts(Some("Bearer garbage".into())),
        &keys,
    )
    .await;
    assert_eq!(bad.map_err(|e| e.status).err(), Some(401), "a bad header is never anonymous");
}
