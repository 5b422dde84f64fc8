//! Read-your-writes: a consistency token makes a read wait, bounded, until the projection the
//! endpoint reads has applied that stream at that version or later. The answer always says
//! whether it was honoured (`Ordo-Consistency: honoured` or `timeout`).

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use ordo_projectors::Projection;
use ordo_schemas::ConsistencyToken;
use ordo_service::problem::{FieldProblem, Problem};
use sqlx::PgPool;

use crate::params::Params;

pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("ordo-consistency-token");
pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("ordo-consistency");

/// How often the wait re-checks the projection's progress.
const POLL: Duration = Duration::from_millis(10);

/// What became of a consistency token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Honoured,
    Timeout,
}

/// The token of the request (query parameter first, then header), if any.
pub fn token(params: &Params, headers: &HeaderMap) -> Result<Option<ConsistencyToken>, Problem> {
    let raw = params
        .raw("consistency_token")
        .map(str::to_owned)
        .or_else(|| headers.get(&TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned));
    let Some(raw) = raw else { return Ok(None) };
    raw.parse::<ConsistencyToken>().map(Some).map_err(|_| {
        Problem::validation(vec![FieldProblem {
            field: "consistency_token".into(),
            message: "must be <category>:<stream id>:<version> as a command answered".into(),
        }])
    })
}

/// Waits up to `bound` until `projection` has applied the token's stream at its version.
///
/// A token of a category the projection does not read is honoured at once: nothing in this read
/// model depends on that write.
pub async fn wait(
    pool: &PgPool,
    projection: Projection,
    token: &ConsistencyToken,
    bound: Duration,
) -> Result<Outcome, Problem> {
    if !projection.reads(token.stream.category) {
        return Ok(Outcome::Honoured);
    }
    let deadline = Instant::now() + bound;
    loop {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM projection_progress WHERE projection = $1 AND category = $2 AND stream_id = $3",
        )
        .bind(projection.name())
        .bind(token.stream.category.as_str())
        .bind(token.stream.id)
        .fetch_optional(pool)
        .await
        .map_err(crate::internal)?;
        if version.is_some_and(|v| v >= token.version) {
            metrics::counter!("ordo_query_consistency_total", "outcome" => "honoured").increment(1);
            return Ok(Outcome::Honoured);
        }
        if Instant::now() >= deadline {
            metrics::counter!("ordo_query_consistency_total", "outcome" => "timeout").increment(1);
            return Ok(Outcome::Timeout);
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The outcome of a token a cached entry satisfies by itself (counted like a waited one).
pub fn honoured_from_cache() -> Outcome {
    metrics::counter!("ordo_query_consistency_total", "outcome" => "honoured").increment(1);
    Outcome::Honoured
}

/// Marks a response with the outcome, when a token was given.
pub fn mark(mut resp: Response, outcome: Option<Outcome>) -> Response {
    if let Some(o) = outcome {
        let v = match o {
            Outcome::Honoured => "honoured",
            Outcome::Timeout => "timeout",
        };
        resp.headers_mut().insert(OUTCOME_HEADER, HeaderValue::from_static(v));
    }
    resp
}
