//! Loaded aggregates kept in memory, so a long stream is not replayed from
//! its first event on every load: a [`crate::Repository`] given a cache
//! ([`crate::Repository::with_cache`]) starts from the cached state and
//! version and reads only the events after it. A stream's history never
//! changes, so a cached (state, version) is always a correct starting
//! point, however stale — a newer event is simply read and applied; the
//! cache is a shortcut, never a source of truth (each process has its own,
//! empty at start).

use std::collections::HashMap;
use std::sync::Mutex;

/// States by aggregate id: at most `capacity`, an arbitrary one evicted
/// when full.
pub(crate) trait StateCache<A>: Send + Sync {
    fn get(&self, id: &str) -> Option<(A, i64)>;
    fn put(&self, id: &str, state: &A, version: i64);
}

/// The cache for aggregates that can be cloned.
pub(crate) struct Cloned<A> {
    capacity: usize,
    states: Mutex<HashMap<String, (A, i64)>>,
}

impl<A> Cloned<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            states: Mutex::new(HashMap::new()),
        }
    }
}

impl<A: Clone + Send + Sync> StateCache<A> for Cloned<A> {
    fn get(&self, id: &str) -> Option<(A, i64)> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.get(id).cloned()
    }

    fn put(&self, id: &str, state: &A, version: i64) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        // Never go back: a slower load may finish after a newer one.
        if states.get(id).is_some_and(|(_, cached)| *cached >= version) {
            return;
        }
        if states.len() >= self.capacity
            && !states.contains_key(id)
            && let Some(evicted) = states.keys().next().cloned()
        {
            states.remove(&evicted);
        }
        states.insert(id.to_owned(), (state.clone(), version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_replace_older_ones_and_the_capacity_holds() {
        let cache = Cloned::<String>::new(2);
        cache.put("a", &"a@2".to_owned(), 2);
        cache.put("a", &"a@1".to_owned(), 1);
        assert_eq!(cache.get("a"), Some(("a@2".to_owned(), 2)), "never back");
        cache.put("a", &"a@3".to_owned(), 3);
        assert_eq!(cache.get("a"), Some(("a@3".to_owned(), 3)));
        cache.put("b", &"b".to_owned(), 1);
        cache.put("c", &"c".to_owned(), 1);
        let held = ["a", "b", "c"]
            .iter()
            .filter(|id| cache.get(id).is_some())
            .count();
        assert_eq!(held, 2, "at most the capacity");
        assert!(cache.get("c").is_some(), "the newest is kept");
    }
}
