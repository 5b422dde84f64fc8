//! Consistency tokens: what a command response hands back so a later read can wait for it.

use std::fmt;
use std::str::FromStr;

use crate::envelope::{StreamCategory, StreamRef};

/// "The read model must reflect `stream` at `version` or later."
///
/// Written as `<category>:<stream id>:<version>`, e.g.
/// `order:0b7c…:3`. Clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsistencyToken {
    pub stream: StreamRef,
    pub version: i64,
}

/// A token that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consistency token")]
pub struct MalformedToken;

impl ConsistencyToken {
    pub fn new(stream: StreamRef, version: i64) -> Self {
        Self { stream, version }
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.stream.category, self.stream.id, self.version)
    }
}

impl FromStr for ConsistencyToken {
    type Err = MalformedToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().splitn(3, ':');
        let category = parts.next().and_then(StreamCategory::parse).ok_or(MalformedToken)?;
        let id = parts.next().and_then(|p| uuid::Uuid::parse_str(p).ok()).ok_or(MalformedToken)?;
        let version = parts.next().and_then(|p| p.parse::<i64>().ok()).filter(|v| *v > 0).ok_or(MalformedToken)?;
        Ok(Self { stream: StreamRef::new(category, id), version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_garbage_is_refused() {
        let t = ConsistencyToken::new(StreamRef::new(StreamCategory::Order, uuid::Uuid::new_v4()), 3);
        assert_eq!(t.to_string().parse::<ConsistencyToken>(), Ok(t));
        for bad in [
            "",
            "order",
            "order:not-a-uuid:1",
            "cart:00000000-0000-0000-0000-000000000000:1",
            "order:00000000-0000-0000-0000-000000000000:0",
            "order:00000000-0000-0000-0000-000000000000:x",
        ] {
            assert_eq!(bad.parse::<ConsistencyToken>(), Err(MalformedToken), "{bad}");
        }
    }
}
