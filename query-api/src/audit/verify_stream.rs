//! The streamed answer of a category or whole-log verification: the check runs in a task of its
//! own while the body carries progress (or JSON white space) once a second, then the report. The
//! request timeout covers the answer's start, not its body, so a log of any size verifies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use ordo_event_store::progress::Progress;
use ordo_event_store::verify::verify_with;
use ordo_schemas::StreamCategory;
use serde_json::json;

/// How often the body carries something while the check runs.
const BEAT: Duration = Duration::from_secs(1);

/// Where the stream is.
enum Phase {
    Running(tokio::task::JoinHandle<Option<Vec<u8>>>, tokio::time::Interval),
    Done,
}

/// Starts the check and answers with its streamed body.
pub(super) fn respond(pool: sqlx::PgPool, category: Option<StreamCategory>, ndjson: bool) -> Response {
    let progress = Arc::new(Progress::new());
    let task = {
        let progress = progress.clone();
        tokio::spawn(async move {
            match verify_with(&pool, category, None, progress).await {
                Ok(report) => {
                    let body = if ndjson { json!({ "report": report }) } else { json!(report) };
                    serde_json::to_vec(&body).ok()
                }
                Err(e) => {
                    tracing::error!(error = %e, "streamed verification failed");
                    None
                }
            }
        })
    };
    let mut beat = tokio::time::interval(BEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.reset();
    let stream = futures::stream::unfold(Phase::Running(task, beat), move |phase| {
        let progress = progress.clone();
        async move {
            let Phase::Running(mut task, mut beat) = phase else { return None };
            tokio::select! {
                done = &mut task => {
                    let mut out = done.ok().flatten().unwrap_or_else(|| br#"{"error":"verification failed"}"#.to_vec());
                    out.push(b'\n');
                    Some((Ok::<_, std::io::Error>(out), Phase::Done))
                }
                _ = beat.tick() => {
                    let line = if ndjson {
                        let p = json!({ "progress": { "checked": progress.done(), "total": progress.total() } });
                        let mut line = serde_json::to_vec(&p).unwrap_or_default();
                        line.push(b'\n');
                        line
                    } else {
                        b"\n".to_vec()
                    };
                    Some((Ok(line), Phase::Running(task, beat)))
                }
            }
        }
    });
    let content_type = if ndjson { "application/x-ndjson" } else { "application/json" };
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
