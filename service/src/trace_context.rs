//! W3C trace context for event metadata: the request span's when spans are exported, else the
//! `traceparent` (and `tracestate`) a request carried, or a new trace.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

/// A validated `traceparent` (`00-<trace id>-<parent id>-<flags>`) and its `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// Longest `tracestate` carried (the W3C limit is 32 members; longer values are dropped).
const MAX_TRACESTATE: usize = 512;

impl TraceContext {
    /// Accepts a well-formed version-00 header; anything else is ignored.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let ok = parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
            && parts[1].bytes().any(|b| b != b'0')
            && parts[2].bytes().any(|b| b != b'0');
        ok.then(|| Self { traceparent: header.trim().to_owned(), tracestate: None })
    }

    /// With `tracestate` when it is printable ASCII of a sane length; dropped otherwise.
    pub fn with_tracestate(mut self, tracestate: Option<&str>) -> Self {
        self.tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(str::to_owned);
        self
    }

    /// The context of the current span, when spans are exported.
    pub fn current() -> Option<Self> {
        crate::telemetry::current_context()
            .and_then(|(tp, ts)| Self::parse(&tp).map(|c| c.with_tracestate(ts.as_deref())))
    }

    /// Starts a new trace.
    pub fn new_root() -> Self {
        let trace = Uuid::new_v4().simple().to_string();
        let span = &Uuid::new_v4().simple().to_string()[..16];
        Self { traceparent: format!("00-{trace}-{span}-01"), tracestate: None }
    }

    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TraceContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(current) = TraceContext::current() {
            return Ok(current);
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        Ok(match header("traceparent").and_then(TraceContext::parse) {
            Some(context) => context.with_tracestate(header("tracestate")),
            None => TraceContext::new_root(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_accepted() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::parse(good).unwrap().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        assert!(TraceContext::parse(&TraceContext::new_root().traceparent).is_some());
        let good = TraceContext::parse(good).unwrap();
        assert_eq!(
            good.clone().with_tracestate(Some("vendor=abc,other=1")).tracestate.as_deref(),
            Some("vendor=abc,other=1")
        );
        assert_eq!(good.clone().with_tracestate(Some("bad\u{7f}value")).tracestate, None);
        assert_eq!(good.with_tracestate(Some(&"x".repeat(600))).tracestate, None);
    }
}
