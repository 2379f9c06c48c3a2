//! A TTL cache of successful GET answers, bounded in entries.
//!
//! Written here rather than with a cache crate: expiry must follow tokio's
//! clock so that it can be tested with the paused clock, and a map plus an
//! insertion queue under one mutex is all a bounded TTL cache needs.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::Answer;
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Cache {
    ttl: Duration,
    max: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, (Instant, Arc<Answer>)>,
    /// Keys in insertion order, for eviction; may hold keys already replaced.
    order: VecDeque<(Instant, String)>,
}

impl Cache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Cache {
        Cache {
            ttl,
            max: max.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Answer>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (stored, value) = entries.map.get(key)?;
        (stored.elapsed() < self.ttl).then(|| value.clone())
    }

    pub(crate) fn put(&self, key: String, value: Arc<Answer>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.insert(key.clone(), (now, value));
        entries.order.push_back((now, key));
        // Drop expired entries and, past the bound, the oldest ones.
        while let Some((stored, key)) = entries.order.front().cloned() {
            let stale = entries.map.get(&key).is_none_or(|(s, _)| *s != stored);
            let expired = stored.elapsed() >= self.ttl;
            if stale || expired || entries.map.len() > self.max {
                entries.order.pop_front();
                if !stale {
                    entries.map.remove(&key);
                }
            } else {
                break;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}
