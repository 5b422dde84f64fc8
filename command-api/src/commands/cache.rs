//! Folded aggregates kept in memory, so a command reads only the events appended since the
//! state it last saw instead of its whole stream.
//!
//! The cache never decides anything on its own: every load still asks the log for the events
//! after the cached version, so a state appended by another process (or replica) is caught up
//! before deciding, and the append's exact expected version guards the race in between.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ordo_schemas::StreamRef;

/// Entries kept before the cache starts over (a bounded memory, not an LRU: a miss only costs
/// one full read of the stream).
const MAX_ENTRIES: usize = 10_000;

type Entry = (i64, Arc<dyn Any + Send + Sync>);

/// Aggregate states by stream, each with the version it reflects.
#[derive(Debug, Clone, Default)]
pub(crate) struct StateCache {
    entries: Arc<Mutex<HashMap<StreamRef, Entry>>>,
}

impl StateCache {
    /// The cached state of `stream` as an `A`, with its version.
    pub(crate) fn get<A: Clone + Send + Sync + 'static>(&self, stream: StreamRef) -> Option<(A, i64)> {
        let entries = self.entries.lock().ok()?;
        let (version, state) = entries.get(&stream)?;
        state.downcast_ref::<A>().map(|a| (a.clone(), *version))
    }

    /// Remembers `state` at `version` unless a newer one is already known.
    pub(crate) fn put<A: Send + Sync + 'static>(&self, stream: StreamRef, state: A, version: i64) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.get(&stream).is_some_and(|(v, _)| *v >= version) {
            return;
        }
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&stream) {
            entries.clear();
        }
        entries.insert(stream, (version, Arc::new(state)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_schemas::StreamCategory;

    #[test]
    fn a_state_comes_back_at_its_version_and_an_older_one_does_not_replace_it() {
        let cache = StateCache::default();
        let s = StreamRef::new(StreamCategory::Product, uuid::Uuid::new_v4());
        assert_eq!(cache.get::<String>(s), None);
        cache.put(s, "v2".to_owned(), 2);
        cache.put(s, "v1".to_owned(), 1);
        assert_eq!(cache.get::<String>(s), Some(("v2".to_owned(), 2)));
        assert_eq!(cache.get::<u32>(s), None, "another type at the same stream is a miss");
        cache.put(s, "v3".to_owned(), 3);
        assert_eq!(cache.get::<String>(s), Some(("v3".to_owned(), 3)));
    }
}
