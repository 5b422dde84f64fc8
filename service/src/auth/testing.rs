//! A stand-in identity provider for tests: it signs RS256 and ES256 tokens and serves its public
//! keys as a JWKS document over real HTTP on a free loopback port, counting the fetches.
//!
//! RSA keys are fixed test keys (RSA key generation is slow in debug builds); EC keys are
//! generated per issuer. None of them is secret.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::test_keys;

/// A signing key of the test issuer.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
    /// The public key's bytes as an HMAC secret would take them (for algorithm-confusion tests).
    pub public_bytes: Vec<u8>,
}

impl TestKey {
    /// Fixed RSA test key `A` or `B` under `kid`.
    pub fn rsa(which: char, kid: &str) -> Self {
        let (der_hex, n) = match which {
            'A' => (test_keys::RSA_A_PKCS1_HEX, test_keys::RSA_A_N),
            _ => (test_keys::RSA_B_PKCS1_HEX, test_keys::RSA_B_N),
        };
        let der = hex::decode(der_hex.concat()).expect("test key hex");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}),
            public_bytes: n.as_bytes().to_vec(),
        }
    }

    /// A fresh P-256 key under `kid`.
    pub fn ec(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("ec key");
        let public = pair.public_key().as_ref().to_vec(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64url(b);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256",
                        "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
            public_bytes: public,
        }
    }

    /// Signs `claims` with this key, naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// Base64url without padding.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An identity provider serving a JWKS document at `/jwks` until dropped.
pub struct TestIssuer {
    pub issuer: String,
    pub audience: String,
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl TestIssuer {
    /// Starts serving an empty key set on a free port.
    pub async fn start() -> Self {
        let published: Arc<Mutex<Vec<Value>>> = Arc::default();
        let fetches = Arc::new(AtomicUsize::new(0));
        let (keys, count) = (published.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || {
                let keys = keys.lock().expect("keys").clone();
                count.fetch_add(1, Ordering::SeqCst);
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            issuer: format!("http://{addr}/realms/test"),
            audience: "ordo".into(),
            url: format!("http://{addr}/jwks"),
            published,
            fetches,
            server,
        }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> &str {
        &self.url
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.published.lock().expect("keys") = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Settings verifying this issuer's tokens, with `role_claim`.
    pub fn settings(&self, role_claim: &str) -> super::AuthSettings {
        super::AuthSettings {
            jwks_url: Some(self.url.clone()),
            issuer: Some(self.issuer.clone()),
            audience: vec![self.audience.clone()],
            role_claim: role_claim.to_owned(),
            ..super::AuthSettings::default()
        }
    }

    /// Claims for `sub` valid for ten minutes from this issuer to this audience, with `extra`
    /// merged in (a `null` removes a claim).
    pub fn claims(&self, sub: uuid::Uuid, extra: Value) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({"iss": self.issuer, "aud": self.audience, "sub": sub, "exp": now + 600, "iat": now});
        if let Some(map) = extra.as_object() {
            for (k, v) in map {
                if v.is_null() {
                    c.as_object_mut().expect("object").remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
        }
        c
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
