//! Bearer JWT authentication.
//!
//! - RS256 and ES256 tokens are verified with the identity provider's keys from its JWKS URL
//!   (`ORDO_JWT_JWKS_URL`; cached, refreshed on an unknown `kid`, see [`jwks`]). With a JWKS URL,
//!   `iss` and `aud` must be configured and are required in every token.
//! - HS256 tokens are verified with the shared secret `ORDO_JWT_SECRET`, for development and
//!   tests (`ordo mint-token`). An HS256 token is never checked against a JWKS key, so a public
//!   key used as an HMAC secret (algorithm confusion) gets nowhere.
//! - Every other algorithm, `alg: none` included, is refused. `exp` and `sub` (a UUID) are
//!   required, `nbf` is honoured, with 5 s of leeway.
//! - The role is read from the claim named by `ORDO_JWT_ROLE_CLAIM` (default `role`), a dotted
//!   path into the claims (`realm_access.roles` for Keycloak). Its value is a role name or an
//!   array of them; the first of Ordo's public roles found is the principal's role.

mod jwks;
#[cfg(any(test, feature = "testing"))]
mod test_keys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ordo_schemas::{Actor, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::problem::Problem;

/// How bearer tokens are verified, from flags and their variables (`ORDO_JWT_*` for every
/// process, see `crate::config`). The HS256 secret is not here: it comes from the environment
/// only (`ORDO_JWT_SECRET`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Tokens")]
pub struct AuthSettings {
    /// JWKS URL of the identity provider, for RS256 and ES256 tokens.
    #[arg(long = "jwt-jwks-url")]
    pub jwks_url: Option<String>,
    /// Required `iss` of every token (required with a JWKS URL).
    #[arg(long = "jwt-issuer")]
    pub issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; a token must name one (required with a JWKS URL).
    #[arg(long = "jwt-audience", value_delimiter = ',')]
    pub audience: Vec<String>,
    /// Claim holding the role: a dotted path, e.g. `realm_access.roles`.
    #[arg(long = "jwt-role-claim", default_value = "role")]
    pub role_claim: String,
    /// Seconds a fetched key set is used before it is fetched again.
    #[arg(long = "jwt-jwks-cache-secs", default_value_t = 300)]
    pub jwks_cache_secs: u64,
    /// Shortest interval between two fetches of the key set (an unknown `kid` waits for it).
    #[arg(long = "jwt-jwks-min-refresh-secs", default_value_t = 10)]
    pub jwks_min_refresh_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwks_url: None,
            issuer: None,
            audience: Vec::new(),
            role_claim: "role".into(),
            jwks_cache_secs: 300,
            jwks_min_refresh_secs: 10,
        }
    }
}

/// Token settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("neither ORDO_JWT_SECRET nor ORDO_JWT_JWKS_URL is set; refusing to start without a way to verify tokens")]
    NoKeys,
    #[error("ORDO_JWT_JWKS_URL needs ORDO_JWT_ISSUER and ORDO_JWT_AUDIENCE, so tokens the provider issued for other applications are refused")]
    IssuerAndAudienceRequired,
    #[error("ORDO_JWT_JWKS_URL is not an http(s) URL")]
    BadJwksUrl,
    #[error("ORDO_JWT_ROLE_CLAIM is empty")]
    EmptyRoleClaim,
    #[error("http client for the key set: {0}")]
    Client(#[from] reqwest::Error),
}

/// Verifies bearer tokens (and signs HS256 ones when a secret is configured).
#[derive(Clone)]
pub struct JwtKeys {
    secret: Option<(EncodingKey, DecodingKey)>,
    remote: Option<Arc<jwks::RemoteKeys>>,
    issuer: Option<String>,
    audience: Vec<String>,
    role_claim: Vec<String>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<redacted>)")
    }
}

impl JwtKeys {
    /// HS256 with `secret` only, the role in claim `role`, no `iss` or `aud` checks.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            secret: Some((EncodingKey::from_secret(secret), DecodingKey::from_secret(secret))),
            remote: None,
            issuer: None,
            audience: Vec::new(),
            role_claim: vec!["role".into()],
        }
    }

    /// Verification as `settings` say, with HS256 tokens accepted when `secret` is given.
    ///
    /// # Errors
    /// [`AuthConfigError`] when no key source is configured, or a JWKS URL lacks an issuer or
    /// audience.
    pub fn new(settings: &AuthSettings, secret: Option<&str>) -> Result<Self, AuthConfigError> {
        let secret = secret.map(str::trim).filter(|s| !s.is_empty());
        let url = settings.jwks_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let issuer = settings.issuer.as_deref().map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned);
        let audience: Vec<String> =
            settings.audience.iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect();
        let role_claim: Vec<String> = settings.role_claim.trim().split('.').map(str::to_owned).collect();
        if role_claim.iter().any(String::is_empty) {
            return Err(AuthConfigError::EmptyRoleClaim);
        }
        let remote = match url {
            None if secret.is_none() => return Err(AuthConfigError::NoKeys),
            None => None,
            Some(url) => {
                if issuer.is_none() || audience.is_empty() {
                    return Err(AuthConfigError::IssuerAndAudienceRequired);
                }
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(AuthConfigError::BadJwksUrl);
                }
                Some(Arc::new(jwks::RemoteKeys::new(
                    url.to_owned(),
                    Duration::from_secs(settings.jwks_cache_secs),
                    Duration::from_secs(settings.jwks_min_refresh_secs),
                )?))
            }
        };
        Ok(Self {
            secret: secret.map(|s| (EncodingKey::from_secret(s.as_bytes()), DecodingKey::from_secret(s.as_bytes()))),
            remote,
            issuer,
            audience,
            role_claim,
        })
    }

    /// Signs an HS256 token for `sub` with `role`, valid for `ttl`, carrying the configured
    /// issuer and first audience.
    ///
    /// # Errors
    /// When no secret is configured, or signing fails.
    pub fn mint(&self, sub: Uuid, role: Role, ttl: chrono::Duration) -> Result<String, jsonwebtoken::errors::Error> {
        let Some((encoding, _)) = &self.secret else {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
        };
        let now = chrono::Utc::now();
        let mut claims = serde_json::to_value(Claims {
            sub,
            role,
            exp: (now + ttl).timestamp(),
            iat: Some(now.timestamp()),
            nbf: None,
        })?;
        if let Some(iss) = &self.issuer {
            claims["iss"] = Value::from(iss.as_str());
        }
        if let Some(aud) = self.audience.first() {
            claims["aud"] = Value::from(aud.as_str());
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
    }

    /// Verifies a token with the keys held now (no fetch), and returns the principal it names.
    pub fn verify(&self, token: &str) -> Result<Principal, Problem> {
        let header = header(token)?;
        match header.alg {
            Algorithm::HS256 => self.verify_hs256(token),
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let remote = self.remote.as_ref().ok_or_else(not_allowed)?;
                let key = remote.cached(header.kid.as_deref(), alg).ok_or_else(unknown_key)?;
                self.check(token, &key.key, alg)
            }
            _ => Err(not_allowed()),
        }
    }

    /// Verifies a token, fetching the identity provider's keys when the token names one not
    /// held yet (at most one fetch per `ORDO_JWT_JWKS_MIN_REFRESH_SECS`).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Problem> {
        let header = header(token)?;
        match header.alg {
            Algorithm::HS256 => self.verify_hs256(token),
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let remote = self.remote.as_ref().ok_or_else(not_allowed)?;
                let key = remote.get(header.kid.as_deref(), alg).await.map_err(|e| match e {
                    jwks::Lookup::Unknown => unknown_key(),
                    jwks::Lookup::Unavailable => Problem::new(
                        crate::code::Code::KeysUnavailable,
                        "the identity provider's keys cannot be fetched; try again later",
                    )
                    .retry_after(5),
                })?;
                self.check(token, &key.key, alg)
            }
            _ => Err(not_allowed()),
        }
    }

    fn verify_hs256(&self, token: &str) -> Result<Principal, Problem> {
        let (_, key) = self.secret.as_ref().ok_or_else(not_allowed)?;
        self.check(token, key, Algorithm::HS256)
    }

    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Principal, Problem> {
        let mut validation = Validation::new(alg);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| Problem::unauthorized(format!("invalid token: {}", describe(&e))))?;
        let claims = data.claims;
        let id = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| Problem::unauthorized("invalid token: sub is not a uuid"))?;
        let role =
            role_at(&claims, &self.role_claim).ok_or_else(|| Problem::unauthorized("invalid token: unknown role"))?;
        Ok(Principal { id, role })
    }
}

fn header(token: &str) -> Result<Header, Problem> {
    jsonwebtoken::decode_header(token).map_err(|e| Problem::unauthorized(format!("invalid token: {}", describe(&e))))
}

fn not_allowed() -> Problem {
    Problem::unauthorized("invalid token: algorithm not allowed")
}

fn unknown_key() -> Problem {
    Problem::unauthorized("invalid token: unknown signing key")
}

/// The first public Ordo role at `path` in `claims` (a role name, or an array of values).
fn role_at(claims: &Map<String, Value>, path: &[String]) -> Option<Role> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for segment in rest {
        value = value.get(segment)?;
    }
    let public = |v: &Value| {
        v.as_str().and_then(|s| serde_json::from_value::<Role>(Value::from(s)).ok()).filter(|r| *r != Role::System)
    };
    match value {
        Value::Array(items) => items.iter().find_map(public),
        other => public(other),
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid",
        K::InvalidSignature => "bad signature",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "algorithm not allowed",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
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
        keys.authenticate(token).await
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
            Some(token) => keys.authenticate(token).await.map(Some),
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
