//! A TTL cache of successful GET answers, bounded in entries; with
//! `cache_shared`, also in the fleet's store.
//!
//! Written here rather than with a cache crate: expiry must follow tokio's
//! clock so that it can be tested with the paused clock, and a map plus an
//! insertion queue under one mutex is all a bounded TTL cache needs.
//!
//! Shared, the local cache is the first level: a look-up that misses it
//! asks the store, and an answer from a backend goes into both (into the
//! store in the background, with the same TTL). An answer from the store is
//! not copied into the local cache, so nothing is reused longer than `ttl`
//! after a backend gave it. When the store cannot answer within its budget,
//! the local cache is all there is (the store counts that fallback).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::Answer;
use crate::{
    shape::Json,
    store::{Store, digest},
};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Cache {
    ttl: Duration,
    max: usize,
    entries: Mutex<Entries>,
    shared: Option<SharedCache>,
}

/// Where an upstream's cache lives in the fleet's store.
#[derive(Debug, Clone)]
pub(crate) struct SharedCache {
    /// The store.
    pub(crate) store: Arc<Store>,
    /// What its keys start with: the store's prefix, the upstream's name
    /// and a digest of its configuration (a changed upstream does not read
    /// answers cached for the old one).
    pub(crate) namespace: String,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, (Instant, Arc<Answer>)>,
    /// Keys in insertion order, for eviction; may hold keys already replaced.
    order: VecDeque<(Instant, String)>,
}

impl Cache {
    pub(crate) fn new(ttl: Duration, max: usize, shared: Option<SharedCache>) -> Cache {
        Cache {
            ttl,
            max: max.max(1),
            entries: Mutex::new(Entries::default()),
            shared,
        }
    }

    /// The answer cached for `key`: the local one, else the store's.
    pub(crate) async fn get(&self, key: &str) -> Option<Arc<Answer>> {
        if let Some(hit) = self.get_local(key) {
            return Some(hit);
        }
        let shared = self.shared.as_ref()?;
        let bytes = shared.store.get(&shared.key(key)).await?;
        // What another gateway stored is checked as a backend's body is.
        let json = Json::parse(bytes).ok()?;
        Some(Arc::new(Answer {
            json,
            headers: http::HeaderMap::new(),
        }))
    }

    fn get_local(&self, key: &str) -> Option<Arc<Answer>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (stored, value) = entries.map.get(key)?;
        (stored.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Keeps `value` for `key`, locally and (in the background) in the
    /// store. An answer that carries response headers for the client
    /// (`return_headers`) stays local: the store keeps bodies only.
    pub(crate) fn put(&self, key: String, value: Arc<Answer>) {
        if let Some(shared) = self.shared.as_ref().filter(|_| value.headers.is_empty()) {
            let text = bytes::Bytes::copy_from_slice(value.json.text().as_bytes());
            shared.store.put(shared.key(&key), text, self.ttl);
        }
        self.put_local(key, value);
    }

    fn put_local(&self, key: String, value: Arc<Answer>) {
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
        self.len_local()
    }

    #[cfg(test)]
    fn len_local(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }
}

impl SharedCache {
    /// The store's key for a call: its identity digested (it holds the
    /// forwarded headers, credentials among them).
    fn key(&self, call: &str) -> String {
        format!("{}{}", self.namespace, digest(call.as_bytes()))
    }
}
