//! Configuration from flags and environment variables, with documented defaults.
//!
//! | variable | flag | default |
//! |---|---|---|
//! | `DATABASE_URL` | `--database-url` | `postgres://postgres@127.0.0.1:5432/ordo` |
//! | `ORDO_COMMAND_ADDR` | `--addr` | `127.0.0.1:8080` |
//! | `ORDO_JWT_SECRET` | (environment only) | required unless `ORDO_JWT_JWKS_URL` is set |
//! | `ORDO_JWT_JWKS_URL`, `ORDO_JWT_ISSUER`, `ORDO_JWT_AUDIENCE`, `ORDO_JWT_ROLE_CLAIM`, ... | `--jwt-*` | see [`AuthSettings`] |
//! | `ORDO_DB_MAX_CONNECTIONS` | `--db-max-connections` | `20` |
//! | `ORDO_BODY_LIMIT_BYTES` | `--body-limit-bytes` | `65536` |
//! | `ORDO_REQUEST_TIMEOUT_MS` | `--request-timeout-ms` | `10000` |
//! | `ORDO_COMMAND_MAX_RETRIES` | `--command-max-retries` | `10` |
//! | `ORDO_APPEND_LOCK_TIMEOUT_MS` | `--append-lock-timeout-ms` | `3000` |
//! | `ORDO_QUERY_PUBLIC_URL` | `--query-public-url` | `http://127.0.0.1:8081` |

use std::net::SocketAddr;
use std::time::Duration;

use ordo_service::auth::AuthConfigError;
use ordo_service::http::Limits;
use ordo_service::{AuthSettings, JwtKeys};

use ordo_commands::RetryPolicy;
use ordo_event_store::WriterOptions;

/// Command-line flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "command-api", about = "The HTTP write side of Ordo")]
pub struct Args {
    /// Postgres holding the event log.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ordo")]
    pub database_url: String,
    /// Address the API listens on.
    #[arg(long, env = "ORDO_COMMAND_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Size of the Postgres connection pool.
    #[arg(long, env = "ORDO_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "ORDO_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// Requests running longer are answered with 503.
    #[arg(long, env = "ORDO_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Retries of a command that lost a race with a concurrent writer (no `If-Match`).
    #[arg(long, env = "ORDO_COMMAND_MAX_RETRIES", default_value_t = 10)]
    pub command_max_retries: u32,
    /// Longest wait for the event log's writer lock; an append that waits longer is answered
    /// 503 with `Retry-After`.
    #[arg(long, env = "ORDO_APPEND_LOCK_TIMEOUT_MS", default_value_t = 3_000)]
    pub append_lock_timeout_ms: u64,
    /// The query API's base URL as clients reach it; `Location` headers of creations point
    /// there (e.g. `http://127.0.0.1:8081/v1/orders/<id>`).
    #[arg(long, env = "ORDO_QUERY_PUBLIC_URL", default_value = crate::http::DEFAULT_QUERY_URL)]
    pub query_public_url: String,
    #[command(flatten)]
    pub auth: AuthSettings,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub addr: SocketAddr,
    /// The HS256 secret, when tokens may be signed with one.
    pub jwt_secret: Option<Secret>,
    /// The identity provider's keys, issuer, audience and role claim.
    pub auth: AuthSettings,
    pub max_connections: u32,
    pub limits: Limits,
    pub retry: RetryPolicy,
    /// How the event log's group-commit writer batches and waits.
    pub writer: WriterOptions,
    /// The query API's public base URL (`Location` headers).
    pub query_public_url: String,
}

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Auth(#[from] AuthConfigError),
}

impl Config {
    /// Builds the configuration from parsed flags and the JWT secret (from `ORDO_JWT_SECRET`,
    /// never a flag, so it stays out of process listings).
    ///
    /// # Errors
    /// [`ConfigError::Auth`] when tokens could not be verified: no secret and no JWKS URL, or a
    /// JWKS URL without an issuer and audience.
    pub fn from_args(args: Args, jwt_secret: Option<String>) -> Result<Self, ConfigError> {
        let secret = jwt_secret.filter(|s| !s.trim().is_empty());
        JwtKeys::new(&args.auth, secret.as_deref())?;
        Ok(Self {
            database_url: args.database_url,
            addr: args.addr,
            jwt_secret: secret.map(Secret::new),
            query_public_url: args.query_public_url.trim_end_matches('/').to_owned(),
            auth: args.auth,
            max_connections: args.db_max_connections.max(1),
            limits: Limits {
                body_bytes: args.body_limit_bytes,
                timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            },
            retry: RetryPolicy { max_retries: args.command_max_retries, ..RetryPolicy::default() },
            writer: WriterOptions {
                lock_timeout: Duration::from_millis(args.append_lock_timeout_ms.max(1)),
                ..WriterOptions::default()
            },
        })
    }

    /// Flags, environment and `ORDO_JWT_SECRET`.
    ///
    /// # Errors
    /// As [`Config::from_args`].
    pub fn load() -> Result<Self, ConfigError> {
        use clap::Parser;
        Self::from_args(Args::parse(), std::env::var("ORDO_JWT_SECRET").ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_apply_and_the_secret_is_required_and_never_printed() {
        let args = Args::try_parse_from(["command-api"]).unwrap();
        assert!(Config::from_args(args.clone(), None).is_err());
        assert!(Config::from_args(args.clone(), Some("  ".into())).is_err());
        let config = Config::from_args(args.clone(), Some("s3cr3t-value".into())).unwrap();
        assert_eq!(config.limits.body_bytes, 65536);
        assert_eq!(config.query_public_url, "http://127.0.0.1:8081");
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let idp = Args::try_parse_from([
            "command-api",
            "--jwt-jwks-url=https://idp.example/certs",
            "--jwt-issuer=https://idp.example",
            "--jwt-audience=ordo,ordo-admin",
            "--jwt-role-claim=realm_access.roles",
        ])
        .unwrap();
        let config = Config::from_args(idp.clone(), None).expect("a JWKS URL needs no secret");
        assert_eq!(config.auth.audience, ["ordo", "ordo-admin"]);
        let no_audience = Args { auth: AuthSettings { audience: Vec::new(), ..idp.auth }, ..idp };
        assert!(Config::from_args(no_audience, None).is_err());
    }
}
