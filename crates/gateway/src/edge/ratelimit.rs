//! Rate limits per endpoint (product.md §2.8): GCRA, keyed by client, with
//! the `RateLimit-*` fields of draft-ietf-httpapi-ratelimit-headers-06
//! (`ratelimit-limit`, `-remaining`, `-reset`, `-policy`; the last draft
//! with one field per value, the form clients and libraries read today) and
//! `retry-after` on a `429`.
//!
//! The local limiter is the `governor` crate's keyed GCRA on tokio's clock
//! (so that tests drive it with the paused clock). Its store is ours
//! ([`BoundedStore`]): governor's `DashMap` store grows with every distinct
//! key, and a flood of distinct keys (spoofed headers, an IPv6 client
//! stepping through addresses) must not grow memory without bound. Keys are
//! 64-bit hashes (random per process) of the client's value, so an entry has
//! a fixed size whatever the value's length; at most [`MAX_KEYS`] live at
//! once per limit, and a new key beyond that shares one overflow bucket
//! until a sweep (every [`SWEEP_EVERY`], governor's `retain_recent`) drops
//! the keys whose bucket is full again. Memory per limit is therefore at
//! most about `MAX_KEYS` × 32 bytes (a few MiB), whatever the traffic.

use std::{
    borrow::Cow,
    hash::BuildHasher,
    net::IpAddr,
    num::NonZeroU32,
    ops::Add,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use governor::{
    Quota,
    clock::{Clock, Reference},
    middleware::StateInformationMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore, keyed::ShrinkableKeyedStateStore},
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    config::RateLimit,
    shape::FieldPath,
    store::{Store, digest},
};

/// Live keys one limit keeps at most; beyond, new keys share one bucket.
pub(crate) const MAX_KEYS: usize = 100_000;

/// How often keys whose bucket is full again are dropped.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Who a limit is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRule {
    /// The client's address (after `trusted_proxies`); IPv6 by /64.
    Ip,
    /// A request header's value.
    Header(HeaderName),
    /// A verified JWT claim (a dot path), as text.
    Claim(FieldPath),
    /// One limit for every client of the endpoint.
    Endpoint,
}

impl KeyRule {
    /// `ip`, `header:NAME`, `claim:NAME` or `endpoint`.
    pub(crate) fn parse(text: &str) -> Result<KeyRule, String> {
        match text.split_once(':') {
            None if text == "ip" => Ok(KeyRule::Ip),
            None if text == "endpoint" => Ok(KeyRule::Endpoint),
            Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeyRule::Header)
                .map_err(|_| format!("`{name}` is not a valid header name")),
            Some(("claim", name)) if !name.trim().is_empty() => FieldPath::parse(name.trim())
                .map(KeyRule::Claim)
                .map_err(|e| format!("key `{text}`: {e}")),
            _ => Err(format!(
                "key `{text}`: use ip, header:NAME, claim:NAME or endpoint"
            )),
        }
    }

    /// The value this rule takes from a request. `client_ip` is asked only
    /// for `ip`; `claims` are the request's verified claims, if any.
    pub(crate) fn key(
        &self,
        client_ip: impl FnOnce() -> IpAddr,
        headers: &HeaderMap,
        claims: Option<&dyn Claims>,
    ) -> Key {
        match self {
            KeyRule::Ip => Key::Value(super::client_ip::ip_key(client_ip())),
            KeyRule::Endpoint => Key::Value(Vec::new()),
            KeyRule::Header(name) => {
                // Repeated headers are one value, as a list (RFC 9110 §5.3).
                let mut values = headers.get_all(name).iter();
                match values.next() {
                    None => Key::Missing,
                    Some(first) => {
                        let mut value = first.as_bytes().to_vec();
                        for more in values {
                            value.extend_from_slice(b", ");
                            value.extend_from_slice(more.as_bytes());
                        }
                        Key::Value(value)
                    }
                }
            }
            KeyRule::Claim(path) => match claims.and_then(|c| c.claim(path)) {
                Some(value) => Key::Value(value.as_bytes().to_vec()),
                None => Key::Missing,
            },
        }
    }
}

/// A request's verified claims, as the authentication step provides them
/// (none until it does: then a `claim:` limit's requests share the bucket
/// of requests without a value).
pub(crate) trait Claims {
    /// The claim at `path` as text (a string as it is, a number or a
    /// boolean as written), if the token has one.
    fn claim(&self, path: &FieldPath) -> Option<Cow<'_, str>>;
}

/// What a limit counts a request against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// The request has no value for the key: every such request shares one
    /// bucket.
    Missing,
    /// The client's value.
    Value(Vec<u8>),
}

/// A limit's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether the request may go on.
    pub(crate) allowed: bool,
    /// Requests still allowed right away after this one.
    pub(crate) remaining: u32,
    /// Until the bucket is full again.
    pub(crate) reset: Duration,
    /// Until a request would be allowed (zero when this one was).
    pub(crate) retry_after: Duration,
}

/// The GCRA parameters of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Time one request takes out of the bucket (the emission interval).
    pub(crate) interval: Duration,
    /// Requests allowed at once.
    pub(crate) burst: u32,
}

impl Gcra {
    /// The parameters of `rate` with `burst`: `None` if the interval is zero.
    pub(crate) fn new(rate: crate::config::Rate, burst: u32) -> Option<Gcra> {
        let interval = rate.per / rate.count.max(1);
        (!interval.is_zero() && burst > 0).then_some(Gcra { interval, burst })
    }

    /// This node's share of a limit enforced by `n` nodes: `1/n` of the
    /// rate, and of the burst (rounded up: at least one).
    pub(crate) fn share(self, n: u32) -> Gcra {
        let n = n.max(1);
        Gcra {
            interval: self.interval * n,
            burst: self.burst.div_ceil(n),
        }
    }

    /// The time the whole burst takes to come back.
    pub(crate) fn window(self) -> Duration {
        self.interval * self.burst
    }
}

/// One endpoint's limit: the key rule, the limiter, and the header values
/// every answer carries.
#[derive(Debug)]
pub(crate) struct Limit {
    /// Who it is for.
    pub(crate) rule: KeyRule,
    /// The limit as configured (fleet-wide when shared).
    pub(crate) gcra: Gcra,
    /// This node's limiter: the whole limit, or its share when the limit is
    /// enforced through the shared store and that is unreachable.
    pub(crate) local: Arc<LocalLimiter>,
    /// The configuration it was built from: a reload keeps the buckets of
    /// a limit whose configuration is the same.
    pub(crate) config: RateLimit,
    /// Enforced fleet-wide: what its buckets' names in the store start with.
    shared: Option<String>,
    limit_value: HeaderValue,
    policy_value: HeaderValue,
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl Limit {
    /// A limit of `gcra` per `rule`; `local` is what this node enforces by
    /// itself (all of `gcra`, or its share); `shared`: the names of its
    /// buckets in the fleet's store, when it is enforced there.
    pub(crate) fn new(
        rule: KeyRule,
        gcra: Gcra,
        local: Gcra,
        shared: Option<String>,
        config: RateLimit,
    ) -> Limit {
        Limit {
            rule,
            shared,
            limit_value: HeaderValue::from(gcra.burst),
            policy_value: HeaderValue::from_str(&format!(
                "{};w={}",
                gcra.burst,
                seconds(gcra.window())
            ))
            .unwrap_or(HeaderValue::from_static("0")),
            gcra,
            local: Arc::new(LocalLimiter::new(local, MAX_KEYS)),
            config,
        }
    }

    /// Counts one request against `key`'s bucket: in the fleet's store when
    /// the limit is shared and the store answers within its budget (one
    /// round trip), else in this node's limiter.
    pub(crate) async fn check(&self, key: &Key, store: Option<&Store>) -> Decision {
        if let (Some(prefix), Some(store)) = (&self.shared, store) {
            let bucket = match key {
                Key::Missing => format!("{prefix}-"),
                Key::Value(value) => format!("{prefix}{}", digest(value)),
            };
            let Gcra { interval, burst } = self.gcra;
            if let Some(reply) = store.gcra(&bucket, interval, burst).await {
                return Decision {
                    allowed: reply.allowed,
                    remaining: reply.remaining,
                    reset: reply.reset,
                    retry_after: reply.retry_after,
                };
            }
        }
        self.local.check(key)
    }

    /// The `ratelimit-*` fields (and `retry-after` when refused) for `decision`.
    pub(crate) fn headers(&self, decision: &Decision, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, self.limit_value.clone());
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(seconds(decision.reset)));
        headers.insert(RATELIMIT_POLICY, self.policy_value.clone());
        if !decision.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(seconds(decision.retry_after).max(1)),
            );
        }
    }
}

/// Whole seconds, rounded up (a client told to wait 0 s would come back at once).
fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// An instant of tokio's clock, for governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, n: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(n))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0
            .checked_sub(duration.into())
            .map_or(*self, TokioInstant)
    }
}

/// tokio's clock (paused in tests), for governor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

type Governor = governor::RateLimiter<u64, BoundedStore, TokioClock, StateInformationMiddleware>;

/// A keyed GCRA limiter in this process, with bounded memory.
#[derive(Debug)]
pub(crate) struct LocalLimiter {
    governor: Governor,
    gcra: Gcra,
    /// Seeded at random per process: a client cannot aim two keys at one slot.
    hasher: std::hash::RandomState,
    started: AtomicBool,
    sweeper: Mutex<Option<tokio::task::AbortHandle>>,
}

/// The store slot of requests without a value.
const MISSING: u64 = 2;
/// The store slot new keys share while the store is full.
const OVERFLOW: u64 = 0;

impl LocalLimiter {
    pub(crate) fn new(gcra: Gcra, max_keys: usize) -> LocalLimiter {
        let burst = NonZeroU32::new(gcra.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(gcra.interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        LocalLimiter {
            governor: Governor::new(quota, BoundedStore::new(max_keys), TokioClock),
            gcra,
            hasher: std::hash::RandomState::new(),
            started: AtomicBool::new(false),
            sweeper: Mutex::new(None),
        }
    }

    /// The limit it enforces.
    pub(crate) fn gcra(&self) -> Gcra {
        self.gcra
    }

    /// Counts one request against `key`'s bucket.
    pub(crate) fn check(&self, key: &Key) -> Decision {
        let slot = match key {
            Key::Missing => MISSING,
            // Odd: never one of the reserved even slots.
            Key::Value(value) => self.hasher.hash_one(value) | 1,
        };
        let Gcra { interval, burst } = self.gcra;
        match self.governor.check_key(&slot) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    remaining,
                    reset: interval * burst.saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(TokioClock.now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset: retry_after + interval * burst.saturating_sub(1),
                    retry_after,
                }
            }
        }
    }

    /// Drops the keys whose bucket is full again (they are the same as no
    /// entry), and gives the memory back.
    pub(crate) fn sweep(&self) {
        self.governor.retain_recent();
        self.governor.shrink_to_fit();
    }

    /// Keys tracked now (approximately, while requests come in).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.governor.len()
    }

    /// Sweeps every [`SWEEP_EVERY`] on the current runtime, until dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.sweep();
            }
        });
        *self.sweeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }
}

impl Drop for LocalLimiter {
    fn drop(&mut self) {
        if let Some(task) = self
            .sweeper
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// governor's keyed state with a bound on its entries: a key that is not
/// in the store while it holds `max` of them is counted in the
/// [`OVERFLOW`] slot instead.
#[derive(Debug)]
pub(crate) struct BoundedStore {
    map: DashMap<u64, InMemoryState, foldhash::fast::RandomState>,
    max: usize,
    /// Entries, counted on insertion and recounted at each sweep: checking
    /// the map's own length would lock every shard on each new key.
    len: AtomicUsize,
}

impl BoundedStore {
    fn new(max: usize) -> BoundedStore {
        BoundedStore {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            max,
            len: AtomicUsize::new(0),
        }
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let key = if self.len.load(Ordering::Relaxed) < self.max {
            *key
        } else {
            OVERFLOW
        };
        let state = self.map.entry(key).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            InMemoryState::default()
        });
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        // A state's theoretical arrival time, read without changing it.
        let tat = |state: &InMemoryState| {
            state
                .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>)
                .err()
                .flatten()
        };
        self.map
            .retain(|_, state| tat(state).is_some_and(|tat| tat > drop_below));
        self.len.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcra(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(
            crate::config::Rate {
                count: per_second,
                per: Duration::from_secs(1),
            },
            burst,
        )
        .unwrap()
    }

    fn key(s: &str) -> Key {
        Key::Value(s.as_bytes().to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_one_request_per_interval() {
        let limiter = LocalLimiter::new(gcra(10, 3), MAX_KEYS);
        let remaining: Vec<_> = (0..3).map(|_| limiter.check(&key("a"))).collect();
        assert!(remaining.iter().all(|d| d.allowed));
        assert_eq!(
            remaining.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        assert_eq!(remaining[2].reset, Duration::from_millis(300));
        let refused = limiter.check(&key("a"));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(300));
        // Another key has its own bucket.
        assert!(limiter.check(&key("b")).allowed);

        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!limiter.check(&key("a")).allowed);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check(&key("a")).allowed);
        assert!(!limiter.check(&key("a")).allowed);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(limiter.check(&key("a")).remaining, 2, "full again");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_a_value_share_one_bucket() {
        let limiter = LocalLimiter::new(gcra(1, 2), MAX_KEYS);
        assert!(limiter.check(&Key::Missing).allowed);
        assert!(limiter.check(&Key::Missing).allowed);
        assert!(!limiter.check(&Key::Missing).allowed);
        assert!(limiter.check(&key("")).allowed, "an empty value is a value");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_keys_stays_within_the_bound() {
        let limiter = LocalLimiter::new(gcra(1, 2), 100);
        for i in 0..1000 {
            limiter.check(&key(&i.to_string()));
        }
        // 100 keys, plus the overflow slot they spill into.
        assert!(limiter.len() <= 101, "{}", limiter.len());
        // The overflow slot is one bucket for every new key: limited too.
        assert!(!limiter.check(&key("new")).allowed);
        // Keys already tracked keep their own bucket.
        assert!(limiter.check(&key("0")).allowed);
        assert!(!limiter.check(&key("0")).allowed);
        // Once their buckets are full again, a sweep drops them all.
        tokio::time::advance(Duration::from_secs(3)).await;
        limiter.sweep();
        assert_eq!(limiter.len(), 0);
        assert!(limiter.check(&key("new")).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_keeps_the_keys_still_limited() {
        let limiter = LocalLimiter::new(gcra(1, 1), MAX_KEYS);
        assert!(limiter.check(&key("busy")).allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.sweep();
        assert!(
            !limiter.check(&key("busy")).allowed,
            "still limited after the sweep"
        );
    }

    #[test]
    fn key_rules_and_values() {
        assert_eq!(KeyRule::parse("ip"), Ok(KeyRule::Ip));
        assert_eq!(KeyRule::parse("endpoint"), Ok(KeyRule::Endpoint));
        assert_eq!(
            KeyRule::parse("header:X-Api-Key"),
            Ok(KeyRule::Header(HeaderName::from_static("x-api-key")))
        );
        assert_eq!(
            KeyRule::parse("claim:org.id"),
            Ok(KeyRule::Claim(FieldPath::parse("org.id").unwrap()))
        );
        for bad in [
            "",
            "client",
            "header:",
            "header:bad header",
            "claim:",
            "claim:a..b",
            "ip:x",
        ] {
            assert!(KeyRule::parse(bad).is_err(), "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.append("x-k", HeaderValue::from_static("a"));
        headers.append("x-k", HeaderValue::from_static("b"));
        let ip = || "10.0.0.1".parse().unwrap();
        let rule = KeyRule::parse("header:x-k").unwrap();
        assert_eq!(rule.key(ip, &headers, None), key("a, b"));
        let rule = KeyRule::parse("header:x-other").unwrap();
        assert_eq!(rule.key(ip, &headers, None), Key::Missing);

        struct Sub;
        impl Claims for Sub {
            fn claim(&self, path: &FieldPath) -> Option<Cow<'_, str>> {
                (path.to_string() == "sub").then_some(Cow::Borrowed("user-1"))
            }
        }
        let rule = KeyRule::parse("claim:sub").unwrap();
        assert_eq!(rule.key(ip, &headers, Some(&Sub)), key("user-1"));
        assert_eq!(rule.key(ip, &headers, None), Key::Missing);
        let rule = KeyRule::parse("claim:tenant").unwrap();
        assert_eq!(rule.key(ip, &headers, Some(&Sub)), Key::Missing);
    }

    #[test]
    fn a_fleet_share_divides_the_rate_and_the_burst() {
        let whole = gcra(10, 20);
        assert_eq!(whole.window(), Duration::from_secs(2));
        let share = whole.share(3);
        assert_eq!(share.interval, Duration::from_millis(300));
        assert_eq!(share.burst, 7);
        assert_eq!(whole.share(100).burst, 1);
    }

    #[test]
    fn the_headers_follow_draft_06() {
        let config = RateLimit {
            rate: "10/s".parse().unwrap(),
            burst: Some(20),
            key: "ip".into(),
        };
        let limit = Limit::new(KeyRule::Ip, gcra(10, 20), gcra(10, 20), None, config);
        let mut headers = HeaderMap::new();
        let refused = Decision {
            allowed: false,
            remaining: 0,
            reset: Duration::from_millis(2050),
            retry_after: Duration::from_millis(50),
        };
        limit.headers(&refused, &mut headers);
        assert_eq!(headers["ratelimit-limit"], "20");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "3");
        assert_eq!(headers["ratelimit-policy"], "20;w=2");
        assert_eq!(headers["retry-after"], "1");
    }
}
