//! The edge every Ordo process shares: telemetry, Prometheus metrics (described in `metrics`),
//! the one list of error codes (`Code`), the ops endpoints
//! (`/healthz`, `/readyz`, `/metrics`), JWT authentication, problem+json errors, a JSON
//! extractor that answers in that format, W3C trace context, the middleware stack and graceful
//! shutdown.

pub mod auth;
#[cfg(test)]
mod auth_jwks_tests;
#[cfg(test)]
mod auth_tests;
pub mod code;
pub mod config;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod problem;
pub mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod test_process;
pub mod trace_context;

pub use auth::{AuthSettings, Claims, JwtKeys, Principal};
pub use code::Code;
pub use problem::Problem;
pub use trace_context::TraceContext;
