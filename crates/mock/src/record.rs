//! What the mock saw: each request as received ([`Seen`]), the counters
//! ([`Stats`]), and waits on them that end on their own.
//!
//! The counters live in one `watch` channel rather than in atomics: a wait
//! subscribes and is woken by each change, so no wait polls, and a reader
//! always sees the counters of one moment together. Each change takes the
//! channel's lock once; that is noise next to serving an HTTP call.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};
use serde::Serialize;
use tokio::sync::watch;

/// What the mock has counted so far (also `GET /__mock/stats`, as JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Calls received (head and body in), routed or not; the stats
    /// themselves are not counted.
    pub requests: u64,
    /// Calls in flight: from the head's arrival until the response body is
    /// dropped (sent, or given up by the caller), or the call is abandoned.
    pub in_flight: u64,
    /// The most calls in flight at once.
    pub max_in_flight: u64,
    /// Calls whose caller went away before the answer's head was sent.
    pub abandoned: u64,
    /// Connections accepted.
    pub connections: u64,
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Seen {
    /// Its method.
    pub method: Method,
    /// Its target as sent: path and query over HTTP/1.1; with scheme and
    /// authority too over HTTP/2.
    pub uri: Uri,
    /// The HTTP version it came in.
    pub version: Version,
    /// Its headers, every value of each.
    pub headers: HeaderMap,
    /// The start of its body: all of it up to the mock's body limit
    /// ([`MockBuilder::body_limit`](crate::MockBuilder::body_limit)).
    pub body: Bytes,
    /// How many body bytes arrived in all, kept or not.
    pub body_len: u64,
    /// The connection it came on: 1 for the first the mock accepted.
    pub connection: u64,
}

impl Seen {
    /// The path, still percent-encoded as sent.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Path and query as sent, e.g. `/s?term=a%26b`.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The kept body as text, if it is UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether more body arrived than was kept.
    pub fn body_truncated(&self) -> bool {
        self.body_len > self.body.len() as u64
    }

    /// The request as JSON, as [`Reply::echo`](crate::Reply::echo) answers it:
    ///
    /// ```json
    /// {"method": "POST", "path": "/orders", "query": "a=1", "version": "HTTP/1.1",
    ///  "headers": {"host": "127.0.0.1:4000", "content-type": "application/json"},
    ///  "body": "{\"n\":1}", "body_len": 7, "body_truncated": false}
    /// ```
    ///
    /// `query` is `null` without one. A header sent several times has its
    /// values joined with `, ` (the exact values are in
    /// [`headers`](Seen::headers)); values that are not UTF-8 are shown
    /// lossily. `body` is the kept body as text, or `null` if it is not UTF-8
    /// (`body_len` still counts it).
    pub fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for name in self.headers.keys() {
            let values: Vec<_> = self
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            headers.insert(name.as_str().to_owned(), values.join(", ").into());
        }
        serde_json::json!({
            "method": self.method.as_str(),
            "path": self.path(),
            "query": self.query(),
            "version": format!("{:?}", self.version),
            "headers": headers,
            "body": self.body_text(),
            "body_len": self.body_len,
            "body_truncated": self.body_truncated(),
        })
    }
}

/// The counters, the record and the waits of one mock.
#[derive(Debug)]
pub(crate) struct State {
    counts: watch::Sender<Stats>,
    seen: Mutex<Vec<Seen>>,
    /// Whether requests are kept (counters are always kept).
    pub(crate) record: bool,
    /// Body bytes kept per request.
    pub(crate) body_limit: usize,
    /// How long a wait waits at most.
    wait: Duration,
}

impl State {
    pub(crate) fn new(record: bool, body_limit: usize, wait: Duration) -> State {
        State {
            counts: watch::channel(Stats::default()).0,
            seen: Mutex::new(Vec::new()),
            record,
            body_limit,
            wait,
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        *self.counts.borrow()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        // A panic while pushing leaves a usable vector.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection was accepted; returns its number.
    pub(crate) fn connection(&self) -> u64 {
        let mut number = 0;
        self.counts.send_modify(|s| {
            s.connections += 1;
            number = s.connections;
        });
        number
    }

    /// A call's head arrived.
    pub(crate) fn arrived(&self) {
        self.counts.send_modify(|s| {
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        });
    }

    /// A call was received whole. The request is kept and counted under one
    /// lock, so whoever sees `requests == n` finds `n` requests kept.
    pub(crate) fn received(&self, seen: Seen) {
        let count = |s: &mut Stats| s.requests += 1;
        if self.record {
            let mut kept = self.lock();
            kept.push(seen);
            self.counts.send_modify(count);
        } else {
            self.counts.send_modify(count);
        }
    }

    /// A call ended: its response body was dropped, or it was dropped
    /// before answering (`abandoned`).
    pub(crate) fn ended(&self, abandoned: bool) {
        self.counts.send_modify(|s| {
            s.in_flight -= 1;
            s.abandoned += u64::from(abandoned);
        });
    }

    /// Waits until `done` holds of the counters, or the wait timeout passes;
    /// returns the counters then.
    pub(crate) async fn wait_until(&self, done: impl FnMut(&Stats) -> bool) -> Stats {
        let mut changes = self.counts.subscribe();
        // The sender lives in `self`: `wait_for` ends only by `done`.
        let _ = tokio::time::timeout(self.wait, changes.wait_for(done)).await;
        self.stats()
    }
}

/// A call in flight, from the head's arrival until this is dropped: with
/// the handler if it is dropped before answering (abandoned), else with the
/// response body.
#[derive(Debug)]
pub(crate) struct InFlight {
    state: Arc<State>,
    answered: bool,
}

impl InFlight {
    pub(crate) fn new(state: Arc<State>) -> InFlight {
        state.arrived();
        InFlight {
            state,
            answered: false,
        }
    }

    /// The answer's head is on its way: dropping this no longer abandons.
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.ended(!self.answered);
    }
}
