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

use http::HeaderMap;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use self::{
    breaker::Breaker, cache::Cache, coalesce::Coalescer, hedge::HedgePolicy, retry::RetryPolicy,
};
pub(crate) use self::{breaker::BreakerState, cache::SharedCache};
use crate::{
    config::{Method, Upstream},
    error::{BackendError, ErrorKind},
    metrics::CACHE_HITS,
    shape::Json,
};

/// What a backend call brings back: its JSON body, and those of its
/// response headers that its backend passes to the client
/// (`return_headers`; usually none). Cached and shared whole.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// The body, checked.
    pub(crate) json: Json,
    /// The kept response headers.
    pub(crate) headers: HeaderMap,
}

/// What an attempt brings back. One that outlives its attempt (a streamed
/// answer) keeps the attempt's place in the bulkhead until it is done with.
pub(crate) trait Attempted {
    /// Keeps `slot` for as long as the answer lasts (by default: not at all).
    fn hold(&mut self, slot: OwnedSemaphorePermit) {
        drop(slot);
    }

    /// Whether the answer, though it came, says the upstream is unwell (a
    /// 5xx passed through as it is): the breaker counts it as a failure.
    fn failure(&self) -> Option<BackendError> {
        None
    }
}

impl Attempted for Answer {}

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

    /// The policies configured for upstream `name`, or `None` where it
    /// configures none: its calls then go straight to their one attempt,
    /// without the policies' boxed future and shared answer around it.
    pub(crate) fn configured(
        name: &str,
        upstream: &Upstream,
        shared: Option<SharedCache>,
    ) -> Option<Policies> {
        let policies = Policies::new(name, upstream, shared);
        let inert = policies.bulkhead.is_none()
            && policies.breaker.is_none()
            && policies.retry.is_none()
            && policies.hedge.is_none()
            && policies.cache.is_none()
            && policies.coalescer.is_none();
        (!inert).then_some(policies)
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
    /// (URL and forwarded headers) for the cache and coalescing, `None` for a
    /// call whose answer must not be shared; `attempt` makes one try, with
    /// its own timeout.
    pub(crate) async fn call<F, Fut>(
        &self,
        method: Method,
        key: Option<&str>,
        deadline: Option<Instant>,
        report: &CallReport,
        attempt: F,
    ) -> Result<Arc<Answer>, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Answer, BackendError>>,
    {
        let shared = key.filter(|_| method == Method::Get);
        if let (Some(key), Some(cache)) = (shared, &self.cache) {
            if let Some(hit) = cache.get(key).await {
                metrics::counter!(CACHE_HITS, "upstream" => self.upstream.clone()).increment(1);
                report.cached.store(true, Ordering::Relaxed);
                return Ok(hit);
            }
        }
        let protected = || async {
            self.protected(method.is_idempotent(), deadline, report, &attempt)
                .await
                .map(Arc::new)
        };
        let result = match (&self.coalescer, shared) {
            (Some(coalescer), Some(key)) => coalescer.run(key, protected).await,
            _ => protected().await,
        };
        if let (Some(key), Some(cache), Ok(value)) = (shared, &self.cache, &result) {
            cache.put(key.to_owned(), value.clone());
        }
        result
    }

    /// Breaker, retries, hedging and bulkhead around `attempt`: retries and
    /// hedges only when the call may be `repeatable` (an idempotent method,
    /// and a body that can be sent again). A pass-through comes here
    /// directly: its answer is streamed, never cached nor shared.
    pub(crate) async fn protected<T, F, Fut>(
        &self,
        repeatable: bool,
        deadline: Option<Instant>,
        report: &CallReport,
        attempt: &F,
    ) -> Result<T, BackendError>
    where
        T: Attempted,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let one_try = || async {
            let pass = match &self.breaker {
                Some(breaker) => Some(breaker.admit(&self.upstream)?),
                None => None,
            };
            let result = match &self.hedge {
                Some(hedge) if repeatable => {
                    hedge
                        .run(&report.hedged, || self.bulkheaded(report, attempt))
                        .await
                }
                _ => self.bulkheaded(report, attempt).await,
            };
            if let Some(pass) = pass {
                match result.as_ref().ok().and_then(Attempted::failure) {
                    Some(failure) => pass.record(&Err::<(), _>(failure)),
                    None => pass.record(&result),
                }
            }
            result
        };
        match &self.retry {
            Some(retry) if repeatable => retry.run(deadline, one_try).await,
            _ => one_try().await,
        }
    }

    /// Sheds the attempt at once when the upstream already has its maximum
    /// in flight. The attempt's slot is held until it ends, or for as long
    /// as its answer lasts ([`Attempted::hold`]).
    async fn bulkheaded<T, F, Fut>(
        &self,
        report: &CallReport,
        attempt: &F,
    ) -> Result<T, BackendError>
    where
        T: Attempted,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let permit = match &self.bulkhead {
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
        let mut result = attempt().await;
        if let (Ok(answer), Some(permit)) = (&mut result, permit) {
            answer.hold(permit);
        }
        result
    }
}

/// A per-attempt timeout, as the kind `timeout`.
///
/// A plain function returning a future, not an `async fn`: an `async fn`
/// keeps its future argument beside the future it awaits, so every call
/// would be twice the size of the attempt it wraps (and copied as such).
pub(crate) fn with_timeout<T, F>(
    limit: Option<Duration>,
    call: F,
) -> impl Future<Output = Result<T, BackendError>>
where
    F: Future<Output = Result<T, BackendError>>,
{
    use futures::future::{Either, FutureExt};
    match limit {
        None => Either::Left(call),
        Some(limit) => Either::Right(tokio::time::timeout(limit, call).map(move |result| {
            result.unwrap_or_else(|_| {
                Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!("no answer within {limit:?}"),
                ))
            })
        })),
    }
}

#[cfg(test)]
mod tests;
