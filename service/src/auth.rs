//! Bearer JWT authentication (HS256, secret from `ORDO_JWT_SECRET`).
//!
//! Only HS256 is accepted (`alg: none` and every other algorithm fail), `exp` is required,
//! `nbf` is honoured when present, and `role` must be one of the four public roles.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ordo_schemas::{Actor, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::Problem;

/// Signing and verification keys derived from the shared secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<redacted>)")
    }
}

impl JwtKeys {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// Signs a token for `sub` with `role`, valid for `ttl`.
    pub fn mint(&self, sub: Uuid, role: Role, ttl: chrono::Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now();
        let claims = Claims { sub, role, exp: (now + ttl).timestamp(), iat: Some(now.timestamp()), nbf: None };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a token and returns the principal it names.
    pub fn verify(&self, token: &str) -> Result<Principal, Problem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Problem::unauthorized(format!("invalid token: {}", describe(&e))))?;
        let claims = data.claims;
        if claims.role == Role::System {
            return Err(Problem::unauthorized("invalid token: unknown role"));
        }
        Ok(Principal { id: claims.sub, role: claims.role })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid",
        K::InvalidSignature => "bad signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "algorithm not allowed",
        K::MissingRequiredClaim(_) => "missing claim",
        K::Json(_) => "malformed claims",
        _ => "malformed",
    }
}

/// The claims Ordo reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub id: Uuid,
    pub role: Role,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor { id: self.id, role: self.role }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Fails with 403 unless the principal has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("role {} may not do this", self.role.as_str())))
        }
    }
}

fn bearer(parts: &Parts) -> Result<Option<&str>, Problem> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| Problem::unauthorized("malformed authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Problem::unauthorized("expected a bearer token")),
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = bearer(parts)?.ok_or_else(|| Problem::unauthorized("missing bearer token"))?;
        keys.verify(token)
    }
}

impl<S> OptionalFromRequestParts<S> for Principal
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    /// No header: anonymous. A header with a bad token is still a 401.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        match bearer(parts)? {
            None => Ok(None),
            Some(token) => keys.verify(token).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_a_tampered_or_foreign_one_does_not() {
        let keys = JwtKeys::from_secret(b"secret-one");
        let id = Uuid::new_v4();
        let token = keys.mint(id, Role::Merchant, chrono::Duration::minutes(5)).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), Principal { id, role: Role::Merchant });
        assert_eq!(JwtKeys::from_secret(b"other").verify(&token).unwrap_err().status, 401);
        let expired = keys.mint(id, Role::Admin, chrono::Duration::minutes(-5)).unwrap();
        assert!(keys.verify(&expired).unwrap_err().detail.contains("expired"));
        let system = keys.mint(id, Role::System, chrono::Duration::minutes(5)).unwrap();
        assert_eq!(keys.verify(&system).unwrap_err().status, 401);
    }
}
