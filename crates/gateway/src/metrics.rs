//! Every metric the gateway exports, by name, and the per-endpoint handles
//! that a request increments.
//!
//! The names are the contract of `/metrics` (docs/gateway.md lists them);
//! keeping them in one place keeps the list and the code in step.

use std::sync::OnceLock;

use crate::error::ErrorKind;

/// Requests being answered now (gauge).
pub(crate) const IN_FLIGHT_REQUESTS: &str = "fanout_in_flight_requests";
/// Requests answered, by `endpoint` and `status`.
pub(crate) const REQUESTS: &str = "fanout_requests_total";
/// Time to answer a request, by `endpoint` (histogram).
pub(crate) const REQUEST_DURATION: &str = "fanout_request_duration_seconds";
/// Backend calls, by `endpoint`, `backend` and `outcome` (`ok` or an error kind).
pub(crate) const BACKEND_CALLS: &str = "fanout_backend_calls_total";
/// Answers served from an upstream's cache, by `upstream`.
pub(crate) const CACHE_HITS: &str = "fanout_cache_hits_total";
/// Retries sent, by `upstream`.
pub(crate) const RETRIES: &str = "fanout_retries_total";
/// Extra (hedged) attempts sent, by `upstream`.
pub(crate) const HEDGES: &str = "fanout_hedges_total";
/// A breaker's state, by `upstream`: 0 closed, 1 half-open, 2 open.
pub(crate) const BREAKER_STATE: &str = "fanout_breaker_state";
/// A target's state, by `upstream` and `target`: 0 up, 1 ejected, 2 unhealthy.
pub(crate) const TARGET_STATE: &str = "fanout_target_state";
/// Attempts sent to a target, by `upstream` and `target`.
pub(crate) const TARGET_CALLS: &str = "fanout_target_calls_total";
/// Attempts to a target that failed (connection, timeout, 5xx).
pub(crate) const TARGET_FAILURES: &str = "fanout_target_failures_total";
/// Attempts in flight to a target.
pub(crate) const TARGET_IN_FLIGHT: &str = "fanout_target_in_flight";
/// A target's latency estimate (peak EWMA), in seconds.
pub(crate) const TARGET_LATENCY: &str = "fanout_target_latency_seconds";
/// Requests refused by authentication (401, 403, 503), by `endpoint` and
/// `reason` (`missing`, `expired`, `signature`, `scope`…).
pub(crate) const AUTH_REFUSED: &str = "fanout_auth_refused_total";
/// Fetches of a scheme's JWKS, by `scheme` and `outcome` (`ok`, `error`).
pub(crate) const JWKS_FETCHES: &str = "fanout_jwks_fetches_total";

/// Whether the fleet's store answers (1) or requests fall back (0).
pub(crate) const STORE_UP: &str = "fanout_store_up";
/// Requests that fell back from the store, by `use` (`rate_limit`, `cache`).
pub(crate) const STORE_FALLBACKS: &str = "fanout_store_fallbacks_total";

/// Counts a request in flight until it is dropped, however it ends (the
/// client may leave).
#[derive(Debug)]
pub(crate) struct InFlight(());

impl InFlight {
    pub(crate) fn start() -> InFlight {
        metrics::gauge!(IN_FLIGHT_REQUESTS).increment(1.0);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT_REQUESTS).decrement(1.0);
    }
}

/// An endpoint's metric handles. Each is registered on first use, since the
/// recorder is installed after plans are compiled; from then on a request
/// increments them without building label sets or looking series up.
pub(crate) struct EndpointMeters {
    route: String,
    backends: Vec<String>,
    duration: OnceLock<metrics::Histogram>,
    answered_200: OnceLock<metrics::Counter>,
    /// Per backend, per outcome: `ok`, then each [`ErrorKind`].
    calls: Box<[[OnceLock<metrics::Counter>; ErrorKind::COUNT + 1]]>,
}

impl EndpointMeters {
    /// Handles for the endpoint at `route`, whose backends have these names.
    pub(crate) fn new(route: &str, backends: Vec<String>) -> EndpointMeters {
        EndpointMeters {
            route: route.to_owned(),
            calls: backends
                .iter()
                .map(|_| std::array::from_fn(|_| OnceLock::new()))
                .collect(),
            backends,
            duration: OnceLock::new(),
            answered_200: OnceLock::new(),
        }
    }

    /// One answered request: its status, how long it took, and each backend's
    /// outcome in declaration order (`None`: it succeeded).
    pub(crate) fn record(
        &self,
        status: u16,
        took: std::time::Duration,
        outcomes: impl Iterator<Item = Option<ErrorKind>>,
    ) {
        let route = || self.route.clone();
        let requests = |status: u16| metrics::counter!(REQUESTS, "endpoint" => route(), "status" => status.to_string());
        if status == 200 {
            self.answered_200.get_or_init(|| requests(200)).increment(1);
        } else {
            requests(status).increment(1);
        }
        self.duration
            .get_or_init(|| metrics::histogram!(REQUEST_DURATION, "endpoint" => route()))
            .record(took.as_secs_f64());
        for ((name, outcome), counters) in self.backends.iter().zip(outcomes).zip(&self.calls) {
            let slot = outcome.map_or(0, |kind| kind as usize + 1);
            counters[slot]
                .get_or_init(|| {
                    metrics::counter!(
                        BACKEND_CALLS,
                        "endpoint" => route(),
                        "backend" => name.clone(),
                        "outcome" => outcome.map_or("ok", ErrorKind::as_str)
                    )
                })
                .increment(1);
        }
    }
}

impl std::fmt::Debug for EndpointMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMeters")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}
