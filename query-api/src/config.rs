//! Configuration of the `query-api` process, from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

/// `query-api` settings. The JWT secret and the database URL are never logged.
#[derive(Clone, clap::Parser)]
#[command(name = "query-api", about = "The HTTP read side of Ordo")]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "ORDO_QUERY_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,
    /// Postgres holding the read models and the event log.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ordo",
        hide_env_values = true
    )]
    pub database_url: String,
    /// HS256 secret of the bearer tokens (required unless a JWKS URL is set).
    #[arg(long, env = "ORDO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[command(flatten)]
    pub auth: ordo_service::AuthSettings,
    /// Longest wait for a consistency token, in milliseconds.
    #[arg(long, env = "ORDO_QUERY_CONSISTENCY_WAIT_MS", default_value_t = 2000)]
    pub consistency_wait_ms: u64,
    /// Postgres connections.
    #[arg(long, env = "ORDO_QUERY_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Per-request timeout in milliseconds (must exceed the consistency wait).
    #[arg(long, env = "ORDO_QUERY_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How often the shared log reader of `/v1/log/events` looks for new events, in milliseconds.
    #[arg(long, env = "ORDO_QUERY_LOG_POLL_MS", default_value_t = 100)]
    pub log_poll_ms: u64,
    /// Seconds between heartbeat comments on an idle `/v1/log/events` stream.
    #[arg(long, env = "ORDO_QUERY_LOG_HEARTBEAT_SECS", default_value_t = 15)]
    pub log_heartbeat_secs: u64,
    /// Batches of events the shared reader keeps for subscribers that are a little behind.
    #[arg(long, env = "ORDO_QUERY_LOG_BUFFER", default_value_t = 64)]
    pub log_buffer: usize,
    /// Log subscribers one process serves at once (more get 503).
    #[arg(long, env = "ORDO_QUERY_LOG_MAX_SUBSCRIBERS", default_value_t = 256)]
    pub log_max_subscribers: usize,
    /// Memory of the read cache (rows and first pages) in MiB; 0 turns it off.
    #[arg(long, env = "ORDO_QUERY_CACHE_MIB", default_value_t = 32)]
    pub cache_mib: u64,
    /// The relay's name (its checkpoint and leader lock), for `/v1/log/status`.
    #[arg(long, env = "ORDO_RELAY_NAME", default_value = "relay")]
    pub relay_name: String,
}

impl Config {
    /// Defaults for everything but the secret and the database (for tests and embedding).
    pub fn new(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: database_url.into(),
            jwt_secret: Some(jwt_secret.into()),
            auth: ordo_service::AuthSettings::default(),
            consistency_wait_ms: 2000,
            db_connections: 16,
            request_timeout_ms: 10_000,
            log_poll_ms: 100,
            log_heartbeat_secs: 15,
            log_buffer: 64,
            log_max_subscribers: 256,
            cache_mib: 32,
            relay_name: "relay".to_owned(),
        }
    }

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

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database_url", &"<redacted>")
            .field("jwt_secret", &"<redacted>")
            .field("auth", &self.auth)
            .field("consistency_wait_ms", &self.consistency_wait_ms)
            .field("db_connections", &self.db_connections)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("log_poll_ms", &self.log_poll_ms)
            .field("log_heartbeat_secs", &self.log_heartbeat_secs)
            .field("log_buffer", &self.log_buffer)
            .field("log_max_subscribers", &self.log_max_subscribers)
            .field("cache_mib", &self.cache_mib)
            .field("relay_name", &self.relay_name)
            .finish()
    }
}
