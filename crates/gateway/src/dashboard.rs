//! What the dashboard shows: the recent requests, each backend call placed on
//! the request's time axis (from the request group's timeline), and rates and
//! latencies derived from them.
//!
//! The recorder keeps the last [`KEPT`] requests in a ring (it survives
//! reloads); statistics are computed from the last minute of them when asked,
//! so recording a request costs one short lock and nothing else.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{plan::EndpointPlan, run::Outcome};

/// Requests kept for the dashboard.
pub(crate) const KEPT: usize = 200;

/// One request as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RequestRecord {
    /// Increasing id.
    pub(crate) id: u64,
    /// When it arrived, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Its endpoint's route.
    pub(crate) endpoint: String,
    /// The status it was answered with.
    pub(crate) status: u16,
    /// Whether every backend succeeded.
    pub(crate) complete: bool,
    /// How long it took.
    pub(crate) duration_ms: f64,
    /// Its backend calls, in declaration order.
    pub(crate) backends: Vec<BackendRecord>,
}

/// One backend call, on its request's time axis.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct BackendRecord {
    /// The backend's name.
    pub(crate) name: String,
    /// Whether it was required.
    pub(crate) required: bool,
    /// When its task started, from the request's start (it may then wait for
    /// its dependencies).
    pub(crate) start_ms: f64,
    /// When it ended.
    pub(crate) end_ms: f64,
    /// `ok`, or the error kind (`timeout`, `cancelled`, `status`…).
    pub(crate) outcome: &'static str,
    /// What went wrong, when something did.
    pub(crate) message: Option<String>,
    /// Attempts sent: more than 1 when retried or hedged, 0 when cached.
    pub(crate) attempts: u32,
    /// Whether a hedged (extra) attempt was sent.
    pub(crate) hedged: bool,
    /// Whether the cache answered.
    pub(crate) cached: bool,
}

/// The recent requests. Off until someone can read them
/// ([`serve_admin`](crate::serve_admin) turns it on), so a gateway without a
/// dashboard does not build records on its request path.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    enabled: AtomicBool,
    next: AtomicU64,
    recent: Mutex<VecDeque<RequestRecord>>,
    /// Requests the gateway refused itself (401, 403, 429…) before any
    /// backend was called, by endpoint and status, since the dashboard
    /// started: kept apart from `recent`, so that a flood of refusals never
    /// pushes the requests that ran out of the waterfall.
    refused: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
}

impl Recorder {
    /// Starts keeping records.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether records are kept.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records a run of `endpoint` answered with `status`, if records are
    /// kept (they copy names and messages).
    pub(crate) fn record_run(&self, endpoint: &EndpointPlan, outcome: &Outcome, status: u16) {
        if !self.is_enabled() {
            return;
        }
        let timeline = outcome.timeline.as_ref();
        let origin = timeline.map(fanout_group::Timeline::origin);
        let entries = timeline
            .map(fanout_group::Timeline::entries)
            .unwrap_or_default();
        let backends = endpoint
            .backends
            .iter()
            .zip(&outcome.results)
            .enumerate()
            .map(|(i, (backend, result))| {
                let entry = entries.iter().find(|e| e.index == i);
                let ms = |t: tokio::time::Instant| {
                    origin.map_or(0.0, |o| t.saturating_duration_since(o).as_secs_f64() * 1e3)
                };
                let report = outcome.reports.get(i);
                BackendRecord {
                    name: backend.name.clone(),
                    required: backend.required,
                    start_ms: entry.map_or(0.0, |e| ms(e.started.unwrap_or(e.spawned))),
                    end_ms: entry.map_or(0.0, |e| ms(e.finished)),
                    outcome: result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok"),
                    message: result.as_ref().err().map(|e| e.message.clone()),
                    attempts: report.map_or(0, |r| r.attempts()),
                    hedged: report.is_some_and(|r| r.hedged()),
                    cached: report.is_some_and(|r| r.cached()),
                }
            })
            .collect();
        self.record(RequestRecord {
            id: 0,
            at_ms: 0,
            endpoint: endpoint.route.clone(),
            status,
            complete: outcome.verdict.is_complete(),
            duration_ms: outcome.took.as_secs_f64() * 1e3,
            backends,
        });
    }

    /// Counts a request to `endpoint` that the gateway refused with
    /// `status`, if records are kept.
    pub(crate) fn record_refusal(&self, endpoint: &str, status: u16) {
        if !self.is_enabled() {
            return;
        }
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = match refused.get_mut(endpoint) {
            Some(counts) => counts,
            None => refused.entry(endpoint.to_owned()).or_default(),
        };
        *counts.entry(status).or_default() += 1;
    }

    /// The refusals counted, by endpoint and status.
    fn refusals(&self) -> Value {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        refused
            .iter()
            .flat_map(|(endpoint, counts)| {
                counts.iter().map(move |(status, count)| {
                    json!({ "endpoint": endpoint, "status": status, "count": count })
                })
            })
            .collect()
    }

    /// Records a request (its `id` and `at_ms` are filled in here).
    fn record(&self, mut record: RequestRecord) {
        record.id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        record.at_ms = now_ms();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The requests after `since` (an id), newest first, at most `limit`.
    pub(crate) fn requests(&self, since: u64, limit: usize) -> Vec<RequestRecord> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .rev()
            .filter(|r| r.id > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Per endpoint and per backend, over the last minute: rate, error rate,
    /// latency percentiles.
    pub(crate) fn stats(&self) -> Value {
        let window = Duration::from_secs(60);
        let since = now_ms().saturating_sub(window.as_millis() as u64);
        let recent: Vec<RequestRecord> = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent
                .iter()
                .filter(|r| r.at_ms >= since)
                .cloned()
                .collect()
        };
        // The rate is over the time the kept requests actually cover.
        let span_s = recent.first().map_or(1.0, |first| {
            ((now_ms() - first.at_ms) as f64 / 1e3).clamp(1.0, 60.0)
        });
        let mut endpoints: Vec<String> = recent.iter().map(|r| r.endpoint.clone()).collect();
        endpoints.sort();
        endpoints.dedup();
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|endpoint| {
                let of: Vec<&RequestRecord> =
                    recent.iter().filter(|r| &r.endpoint == endpoint).collect();
                let durations: Vec<f64> = of.iter().map(|r| r.duration_ms).collect();
                let errors = of.iter().filter(|r| r.status >= 500).count();
                let partial = of.iter().filter(|r| !r.complete).count();
                let mut names: Vec<&str> = of
                    .iter()
                    .flat_map(|r| r.backends.iter().map(|b| b.name.as_str()))
                    .collect();
                names.dedup();
                let mut seen = Vec::new();
                let backends: Vec<Value> = names
                    .into_iter()
                    .filter(|n| {
                        let new = !seen.contains(n);
                        seen.push(*n);
                        new
                    })
                    .map(|name| {
                        let calls: Vec<&BackendRecord> = of
                            .iter()
                            .flat_map(|r| r.backends.iter().filter(|b| b.name == name))
                            .collect();
                        let took: Vec<f64> = calls.iter().map(|b| b.end_ms - b.start_ms).collect();
                        let failed = calls.iter().filter(|b| b.outcome != "ok").count();
                        json!({
                            "name": name,
                            "calls": calls.len(),
                            "rate": calls.len() as f64 / span_s,
                            "error_rate": failed as f64 / calls.len().max(1) as f64,
                            "p50_ms": percentile(&took, 50.0),
                            "p99_ms": percentile(&took, 99.0),
                        })
                    })
                    .collect();
                json!({
                    "endpoint": endpoint,
                    "requests": of.len(),
                    "rate": of.len() as f64 / span_s,
                    "error_rate": errors as f64 / of.len().max(1) as f64,
                    "partial_rate": partial as f64 / of.len().max(1) as f64,
                    "p50_ms": percentile(&durations, 50.0),
                    "p90_ms": percentile(&durations, 90.0),
                    "p99_ms": percentile(&durations, 99.0),
                    "backends": backends,
                })
            })
            .collect();
        json!({ "window_s": span_s, "endpoints": endpoints, "refused": self.refusals() })
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
