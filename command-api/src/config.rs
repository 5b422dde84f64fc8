//! Configuration of the `command-api` process: flags, each also settable as
//! `ORDO_COMMAND_<FLAG>` (see `ordo_service::config` for the conventions), and secrets from the
//! environment only.
//!
//! | variable | flag | default |
//! |---|---|---|
//! | `ORDO_COMMAND_DATABASE_URL` or `ORDO_DATABASE_URL` | (environment only) | `postgres://postgres@127.0.0.1:5432/ordo` |
//! | `ORDO_JWT_SECRET` | (environment only) | required unless `ORDO_JWT_JWKS_URL` is set |
//! | `ORDO_COMMAND_ADDR` | `--addr` | `127.0.0.1:8080` |
//! | `ORDO_COMMAND_DB_MAX_CONNECTIONS` | `--db-max-connections` | `20` |
//! | `ORDO_COMMAND_MIGRATE` or `ORDO_MIGRATE` | `--migrate` | off: `ordo migrate` first |
//! | `ORDO_COMMAND_BODY_LIMIT_BYTES` | `--body-limit-bytes` | `65536` |
//! | `ORDO_COMMAND_REQUEST_TIMEOUT_MS` | `--request-timeout-ms` | `10000` |
//! | `ORDO_COMMAND_COMMAND_MAX_RETRIES` | `--command-max-retries` | `10` |
//! | `ORDO_COMMAND_APPEND_LOCK_TIMEOUT_MS` | `--append-lock-timeout-ms` | `3000` |
//! | `ORDO_COMMAND_QUERY_PUBLIC_URL` | `--query-public-url` | `http://127.0.0.1:8081` |
//! | `ORDO_JWT_JWKS_URL`, `ORDO_JWT_ISSUER`, `ORDO_JWT_AUDIENCE`, `ORDO_JWT_ROLE_CLAIM`, ... | `--jwt-*` | see [`AuthSettings`] |
//!
//! The names of earlier releases (`DATABASE_URL`, `ORDO_DB_MAX_CONNECTIONS`,
//! `ORDO_BODY_LIMIT_BYTES`, `ORDO_REQUEST_TIMEOUT_MS`, `ORDO_COMMAND_MAX_RETRIES`,
//! `ORDO_APPEND_LOCK_TIMEOUT_MS`, `ORDO_QUERY_PUBLIC_URL`) still work, with a warning.

use std::net::SocketAddr;
use std::time::Duration;

use ordo_service::auth::AuthConfigError;
pub use ordo_service::config::Secret;
use ordo_service::config::{DatabaseArgs, HttpArgs, Process, ProcessArgs};
use ordo_service::http::Limits;
use ordo_service::{AuthSettings, JwtKeys};

use ordo_commands::RetryPolicy;
use ordo_event_store::WriterOptions;

/// The command API among Ordo's processes: its variables are `ORDO_COMMAND_<SETTING>`.
pub const PROCESS: Process = Process {
    binary: "command-api",
    prefix: "COMMAND",
    deprecated: &[
        ("DATABASE_URL", "DATABASE_URL"),
        ("ORDO_DB_MAX_CONNECTIONS", "DB_MAX_CONNECTIONS"),
        ("ORDO_BODY_LIMIT_BYTES", "BODY_LIMIT_BYTES"),
        ("ORDO_REQUEST_TIMEOUT_MS", "REQUEST_TIMEOUT_MS"),
        ("ORDO_COMMAND_MAX_RETRIES", "COMMAND_MAX_RETRIES"),
        ("ORDO_APPEND_LOCK_TIMEOUT_MS", "APPEND_LOCK_TIMEOUT_MS"),
        ("ORDO_QUERY_PUBLIC_URL", "QUERY_PUBLIC_URL"),
    ],
    secrets: &["DATABASE_URL", "JWT_SECRET", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"],
};

/// The command API's defaults where they differ from the shared groups' (argument id, value).
const DEFAULTS: &[(&str, &str)] = &[("addr", "127.0.0.1:8080"), ("max_connections", "20")];

/// Command-line flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "The HTTP write side of Ordo", version)]
pub struct Args {
    /// Retries of a command that lost a race with a concurrent writer (no `If-Match`).
    #[arg(long, default_value_t = 10)]
    pub command_max_retries: u32,
    /// Longest wait for the event log's writer lock; an append that waits longer is answered
    /// 503 with `Retry-After`.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub append_lock_timeout_ms: u64,
    /// The query API's base URL as clients reach it; `Location` headers of creations point
    /// there (e.g. `http://127.0.0.1:8081/v1/orders/<id>`).
    #[arg(long, default_value = crate::http::DEFAULT_QUERY_URL)]
    pub query_public_url: String,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub auth: AuthSettings,
}

impl ProcessArgs for Args {
    const PROCESS: Process = PROCESS;
    const DEFAULTS: &'static [(&'static str, &'static str)] = DEFAULTS;
}

/// Everything [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Never logged.
    pub database_url: Secret,
    /// Apply pending migrations at start instead of requiring `ordo migrate` first.
    pub migrate: bool,
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
    #[error("{0}")]
    PersonalData(#[from] ordo_event_store::StoreError),
}

impl Config {
    /// A configuration with every default, for tests and embedding: `database_url`, the HS256
    /// secret, an ephemeral port, and migrations applied at start.
    pub fn new(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        let args = Args::parse_args(["command-api", "--addr=127.0.0.1:0", "--migrate"]).expect("defaults parse");
        Self::from_args(args, Secret::new(database_url), Some(jwt_secret.into())).expect("a secret is enough")
    }
}

impl Config {
    /// Builds the configuration from parsed flags and the JWT secret (from `ORDO_JWT_SECRET`,
    /// never a flag, so it stays out of process listings).
    ///
    /// # Errors
    /// [`ConfigError::Auth`] when tokens could not be verified: no secret and no JWKS URL, or a
    /// JWKS URL without an issuer and audience.
    pub fn from_args(args: Args, database_url: Secret, jwt_secret: Option<String>) -> Result<Self, ConfigError> {
        let secret = jwt_secret.filter(|s| !s.trim().is_empty());
        JwtKeys::new(&args.auth, secret.as_deref())?;
        Ok(Self {
            database_url,
            migrate: args.database.migrate,
            addr: args.http.addr,
            jwt_secret: secret.map(Secret::new),
            query_public_url: args.query_public_url.trim_end_matches('/').to_owned(),
            auth: args.auth,
            max_connections: args.database.max_connections,
            limits: args.http.limits(),
            retry: RetryPolicy { max_retries: args.command_max_retries, ..RetryPolicy::default() },
            writer: WriterOptions {
                lock_timeout: Duration::from_millis(args.append_lock_timeout_ms),
                ..WriterOptions::default()
            },
        })
    }

    /// Flags, environment and the secrets (`ORDO_COMMAND_DATABASE_URL` or
    /// `ORDO_DATABASE_URL`, `ORDO_JWT_SECRET`). `--help` and bad flags end the process as
    /// clap does.
    ///
    /// # Errors
    /// As [`Config::from_args`].
    pub fn load() -> Result<Self, ConfigError> {
        let args = Args::load_args();
        ordo_event_store::personal::check_environment()?;
        Self::from_args(args, PROCESS.database_url(), PROCESS.secret("JWT_SECRET").map(|s| s.expose().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_the_secret_is_required_and_never_printed() {
        let url = || Secret::new("postgres://ordo:db-pa55@db/ordo");
        let args = Args::parse_args(["command-api"]).unwrap();
        assert!(Config::from_args(args.clone(), url(), None).is_err());
        assert!(Config::from_args(args.clone(), url(), Some("  ".into())).is_err());
        let config = Config::from_args(args.clone(), url(), Some("s3cr3t-value".into())).unwrap();
        assert_eq!(config.limits.body_bytes, 65536);
        assert_eq!(config.max_connections, 20);
        assert_eq!(config.addr.port(), 8080);
        assert!(!config.migrate, "migrations are an explicit step unless asked for");
        assert!(!format!("{config:?}").contains("db-pa55"));
        assert_eq!(config.query_public_url, "http://127.0.0.1:8081");
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        let idp = Args::parse_args([
            "command-api",
            "--jwt-jwks-url=https://idp.example/certs",
            "--jwt-issuer=https://idp.example",
            "--jwt-audience=ordo,ordo-admin",
            "--jwt-role-claim=realm_access.roles",
        ])
        .unwrap();
        let config = Config::from_args(idp.clone(), url(), None).expect("a JWKS URL needs no secret");
        assert_eq!(config.auth.audience, ["ordo", "ordo-admin"]);
        let no_audience = Args { auth: AuthSettings { audience: Vec::new(), ..idp.auth }, ..idp };
        assert!(Config::from_args(no_audience, url(), None).is_err());
    }
}
