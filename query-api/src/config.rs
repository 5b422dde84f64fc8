//! Configuration of the `query-api` process: flags, each also settable as
//! `ORDO_QUERY_<FLAG>` (see `ordo_service::config` for the conventions), and secrets from the
//! environment only: the database URL (`ORDO_QUERY_DATABASE_URL` or `ORDO_DATABASE_URL`) and
//! the HS256 secret (`ORDO_JWT_SECRET`). `DATABASE_URL` and `ORDO_QUERY_DB_CONNECTIONS` of
//! earlier releases still work, with a warning; the `--jwt-secret` flag is gone.

use std::net::SocketAddr;
use std::time::Duration;

use ordo_service::config::{DatabaseArgs, HttpArgs, Process, ProcessArgs, Secret};
use ordo_service::http::Limits;
use ordo_service::JwtKeys;

/// The query API among Ordo's processes: its variables are `ORDO_QUERY_<SETTING>`.
pub const PROCESS: Process = Process {
    binary: "query-api",
    prefix: "QUERY",
    deprecated: &[("DATABASE_URL", "DATABASE_URL"), ("ORDO_QUERY_DB_CONNECTIONS", "DB_MAX_CONNECTIONS")],
    secrets: &["DATABASE_URL", "JWT_SECRET", "PERSONAL_DATA_KEK", "PERSONAL_DATA_KEK_PREVIOUS"],
};

/// The query API's defaults where they differ from the shared groups' (argument id, value).
const DEFAULTS: &[(&str, &str)] = &[("addr", "127.0.0.1:8081"), ("max_connections", "16")];

/// `query-api` flags; each falls back to its environment variable, then to its default.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "The HTTP read side of Ordo", version)]
pub struct Args {
    /// Longest wait for a consistency token, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub consistency_wait_ms: u64,
    /// How often the shared log reader of `/v1/log/events` looks for new events, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_poll_ms: u64,
    /// Seconds between heartbeat comments on an idle `/v1/log/events` stream.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_heartbeat_secs: u64,
    /// Batches of events the shared reader keeps for subscribers that are a little behind.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_buffer: u64,
    /// Log subscribers one process serves at once (more get 503).
    #[arg(long, default_value_t = 256)]
    pub log_max_subscribers: usize,
    /// Memory of the read cache (rows and first pages) in MiB; 0 turns it off.
    #[arg(long, default_value_t = 32)]
    pub cache_mib: u64,
    /// The relay's name (its checkpoint and leader lock), for `/v1/log/status`; shared with the
    /// relay as `ORDO_RELAY_NAME`.
    #[arg(long, default_value = "relay")]
    pub relay_name: String,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub auth: ordo_service::AuthSettings,
}

impl ProcessArgs for Args {
    const PROCESS: Process = PROCESS;
    const DEFAULTS: &'static [(&'static str, &'static str)] = DEFAULTS;
}

/// Everything [`crate::run`] needs. Secrets are [`Secret`]s: never in `Debug` output.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub database_url: Secret,
    /// Apply pending migrations at start instead of requiring `ordo migrate` first.
    pub migrate: bool,
    /// The HS256 secret (required unless a JWKS URL is set).
    pub jwt_secret: Option<Secret>,
    pub auth: ordo_service::AuthSettings,
    pub consistency_wait_ms: u64,
    pub db_connections: u32,
    pub limits: Limits,
    pub log_poll_ms: u64,
    pub log_heartbeat_secs: u64,
    pub log_buffer: usize,
    pub log_max_subscribers: usize,
    pub cache_mib: u64,
    pub relay_name: String,
}

impl Config {
    /// The configuration of parsed flags and the secrets.
    pub fn from_args(args: Args, database_url: Secret, jwt_secret: Option<Secret>) -> Self {
        Self {
            addr: args.http.addr,
            database_url,
            migrate: args.database.migrate,
            jwt_secret,
            limits: args.http.limits(),
            auth: args.auth,
            consistency_wait_ms: args.consistency_wait_ms,
            db_connections: args.database.max_connections,
            log_poll_ms: args.log_poll_ms,
            log_heartbeat_secs: args.log_heartbeat_secs,
            log_buffer: usize::try_from(args.log_buffer).unwrap_or(usize::MAX),
            log_max_subscribers: args.log_max_subscribers,
            cache_mib: args.cache_mib,
            relay_name: args.relay_name,
        }
    }

    /// Flags, environment and secrets. `--help` and bad flags end the process as clap does.
    ///
    /// # Errors
    /// When tokens could not be verified (no secret and no JWKS URL, or a JWKS URL without an
    /// issuer and audience), or a KEK variable is malformed.
    pub fn load() -> anyhow::Result<Self> {
        let config = Self::from_args(Args::load_args(), PROCESS.database_url(), PROCESS.secret("JWT_SECRET"));
        JwtKeys::new(&config.auth, config.jwt_secret.as_ref().map(Secret::expose))?;
        ordo_event_store::personal::check_environment()?;
        Ok(config)
    }

    /// Defaults for everything but the secret and the database, an ephemeral port and
    /// migrations at start (for tests and embedding).
    pub fn new(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        let args = Args::parse_args(["query-api", "--addr=127.0.0.1:0", "--migrate"]).expect("defaults parse");
        Self::from_args(args, Secret::new(database_url), Some(Secret::new(jwt_secret)))
    }
}

impl Config {
    /// How the shared log reader of `/v1/log/events` runs.
    pub fn feed_options(&self) -> crate::log_feed::FeedOptions {
        crate::log_feed::FeedOptions {
            poll: Duration::from_millis(self.log_poll_ms.max(1)),
            buffer: self.log_buffer.max(1),
            max_subscribers: self.log_max_subscribers,
            ..crate::log_feed::FeedOptions::default()
        }
    }

    /// The read cache this configuration asks for (disabled at 0 MiB).
    pub fn cache(&self) -> crate::cache::QueryCache {
        crate::cache::QueryCache::new(self.cache_mib.saturating_mul(1 << 20))
    }

    pub fn consistency_wait(&self) -> Duration {
        Duration::from_millis(self.consistency_wait_ms)
    }
}
