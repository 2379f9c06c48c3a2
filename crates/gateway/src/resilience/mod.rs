//! Per-upstream protection: cache, coalescing, circuit breaker, retries with a
//! budget, hedging, and a bulkhead that sheds load.
//!
//! A call passes through them from the outside in:
//!
//! ```text
//! cache (GET) → coalescing (GET) → breaker → retries → hedging → bulkhead → attempt
//! ```
//!
//! so a cached or coalesced answer costs no backend call, an open circuit
//! costs nothing, each retry and each hedge is an attempt that the bulkhead
//! counts, and the breaker hears how every try went. Each attempt has the
//! upstream's (or backend's) timeout; the endpoint's deadline bounds them all.

mod breaker;
mod cache;
mod coalesce;
mod hedge;
mod retry;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use crate::shape::Json;
use tokio::{sync::Semaphore, time::Instant};

use self::{
    breaker::Breaker, cache::Cache, coalesce::Coalescer, hedge::HedgePolicy, retry::RetryPolicy,
};
pub(crate) use self::{breaker::BreakerState, cache::SharedCache};
use crate::{
    config::{Method, Upstream},
    error::{BackendError, ErrorKind},
    metrics::CACHE_HITS,
};

/// What the policies did for one call, for the dashboard: how many attempts
/// went out, whether one was a hedge, whether the cache answered.
#[derive(Debug, Default)]
pub(crate) struct CallReport {
    attempts: AtomicU32,
    hedged: AtomicBool,
    cached: AtomicBool,
}

impl CallReport {
    /// Attempts sent (retries and hedges included; 0 if the cache answered).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Whether an extra, hedged attempt was sent.
    pub(crate) fn hedged(&self) -> bool {
        self.hedged.load(Ordering::Relaxed)
    }

    /// Whether the answer came from the cache.
    pub(crate) fn cached(&self) -> bool {
        self.cached.load(Ordering::Relaxed)
    }

    pub(crate) fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The policies of one upstream, shared by every call to it.
#[derive(Debug)]
pub(crate) struct Policies {
    upstream: String,
    bulkhead: Option<(u32, Arc<Semaphore>)>,
    breaker: Option<Breaker>,
    retry: Option<RetryPolicy>,
    hedge: Option<HedgePolicy>,
    cache: Option<Cache>,
    coalescer: Option<Coalescer>,
}

impl Policies {
    /// The policies configured for upstream `name`; its cache also in the
    /// fleet's store when `shared` says where.
    pub(crate) fn new(name: &str, upstream: &Upstream, shared: Option<SharedCache>) -> Policies {
        Policies {
            upstream: name.to_owned(),
            bulkhead: upstream
                .max_in_flight
                .map(|n| (n, Arc::new(Semaphore::new(n as usize)))),
            breaker: upstream
                .breaker
                .as_ref()
                .map(|b| Breaker::new(b.failures, b.cooldown.0)),
            retry: upstream
                .retry
                .as_ref()
                .map(|r| RetryPolicy::new(name, r.attempts, r.backoff.0, r.budget.fraction())),
            hedge: upstream.hedge.as_ref().and_then(|h| {
                let max_extra = h.max_extra.map_or(0.1, |p| p.fraction());
                match (&h.delay, h.percentile) {
                    (Some(delay), _) => Some(HedgePolicy::fixed(delay.0, max_extra)),
                    (None, Some(p)) => Some(HedgePolicy::percentile(p, max_extra)),
                    (None, None) => None,
                }
            }),
            cache: upstream
                .cache
                .as_ref()
                .map(|c| Cache::new(c.ttl.0, c.max_entries as usize, shared)),
            coalescer: upstream.coalesce.then(Coalescer::default),
        }
    }

    /// Whether calls need a key (for the cache or coalescing).
    pub(crate) fn keyed(&self) -> bool {
        self.cache.is_some() || self.coalescer.is_some()
    }

    /// The circuit breaker's state, if there is one.
    pub(crate) fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(Breaker::state)
    }

    /// Extra (hedged) attempts sent, and calls made, if hedging is on.
    pub(crate) fn hedge_counts(&self) -> Option<(u64, u64)> {
        self.hedge.as_ref().map(HedgePolicy::counts)
    }

    /// Makes one call through every policy. `key` identifies identical calls
    /// (URL and forwarded headers) for the cache and coalescing; `attempt` makes
    /// one try, with its own timeout.
    pub(crate) async fn call<F, Fut>(
        &self,
        method: Method,
        key: &str,
        deadline: Option<Instant>,
        report: &CallReport,
        attempt: F,
    ) -> Result<Arc<Json>, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Json, BackendError>>,
    {
        let get = method == Method::Get;
        if let (true, Some(cache)) = (get, &self.cache) {
            if let Some(hit) = cache.get(key).await {
                metrics::counter!(CACHE_HITS, "upstream" => self.upstream.clone()).increment(1);
                report.cached.store(true, Ordering::Relaxed);
                return Ok(hit);
            }
        }
        let protected = || self.protected(method, deadline, report, &attempt);
        let result = match &self.coalescer {
            Some(coalescer) if get => coalescer.run(key, protected).await,
            _ => protected().await,
        };
        if let (true, Some(cache), Ok(value)) = (get, &self.cache, &result) {
            cache.put(key.to_owned(), value.clone());
        }
        result
    }

    /// Breaker, retries, hedging and bulkhead around `attempt`.
    async fn protected<F, Fut>(
        &self,
        method: Method,
        deadline: Option<Instant>,
        report: &CallReport,
        attempt: &F,
    ) -> Result<Arc<Json>, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Json, BackendError>>,
    {
        let one_try = || async {
            let pass = match &self.breaker {
                Some(breaker) => Some(breaker.admit(&self.upstream)?),
                None => None,
            };
            let result = match &self.hedge {
                Some(hedge) if method.is_idempotent() => {
                    hedge
                        .run(&report.hedged, || self.bulkheaded(report, attempt))
                        .await
                }
                _ => self.bulkheaded(report, attempt).await,
            };
            if let Some(pass) = pass {
                pass.record(&result);
            }
            result
        };
        let result = match &self.retry {
            Some(retry) if method.is_idempotent() => retry.run(deadline, one_try).await,
            _ => one_try().await,
        };
        result.map(Arc::new)
    }

    /// Sheds the attempt at once when the upstream already has its maximum in flight.
    async fn bulkheaded<F, Fut>(
        &self,
        report: &CallReport,
        attempt: &F,
    ) -> Result<Json, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Json, BackendError>>,
    {
        let _permit = match &self.bulkhead {
            None => None,
            Some((max, semaphore)) => {
                Some(semaphore.clone().try_acquire_owned().map_err(|_| {
                    BackendError::new(
                        ErrorKind::Overloaded,
                        format!(
                            "upstream `{}` already has {max} calls in flight (max_in_flight)",
                            self.upstream
                        ),
                    )
                })?)
            }
        };
        report.attempt();
        attempt().await
    }
}

/// A per-attempt timeout, as the kind `timeout`.
pub(crate) async fn with_timeout<T>(
    limit: Option<Duration>,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match limit {
        None => call.await,
        Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(BackendError::new(
                ErrorKind::Timeout,
                format!("no answer within {limit:?}"),
            ))
        }),
    }
}

#[cfg(test)]
mod tests;
