//! The store a fleet of gateways shares (product.md §2.9): Redis, for rate
//! limits enforced fleet-wide and for upstream caches shared by every
//! replica.
//!
//! The store is a help, never a dependency of serving: no request waits on
//! it longer than its budget (`store.timeout`, at most 50 ms). A call that
//! fails or takes longer marks the store down; from then on requests do not
//! try it at all (they fall back at once: each rate limit to this node's
//! share, the cache to the local one) until the supervisor's probe, which
//! runs beside the requests, finds it answering again — within half a
//! second of its return, without a restart. Each fallback is counted (the
//! admin API exports the counts as `fanout_store_fallbacks_total` and the
//! state as `fanout_store_up` when scraped: nothing per request), and the
//! log says when the store goes and comes back (at most one line per kind
//! every ten seconds, however many requests fall back).
//!
//! A plan holds a [`Store`]; what lives across reloads — the connection,
//! its state, the supervisor — is its [`Link`], which the plan of a reload
//! that did not change `store` takes over ([`Store::adopt`]).

mod redis;

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::time::Instant;

pub(crate) use self::redis::GcraReply;

/// What the store is used for, in counts and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Fleet-wide rate limits.
    RateLimit,
    /// Shared upstream caches.
    Cache,
}

/// `store` as compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreSettings {
    /// `redis://…` or `rediss://…`.
    pub(crate) url: String,
    /// The longest a request waits on the store.
    pub(crate) budget: Duration,
    /// The largest value put in the shared cache.
    pub(crate) max_value: usize,
    /// What every key starts with.
    pub(crate) prefix: String,
    /// Gateways in the fleet (for each one's share of a limit).
    pub(crate) fleet_size: Option<u32>,
}

/// The store as one plan sees it.
#[derive(Debug)]
pub(crate) struct Store {
    settings: StoreSettings,
    link: ArcSwap<Link>,
}

/// The store's state, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct StoreState {
    /// The URL, without credentials.
    pub(crate) url: String,
    /// Whether requests use it now.
    pub(crate) up: bool,
    /// Requests whose rate limit fell back to this node's share.
    pub(crate) rate_limit_fallbacks: u64,
    /// Cache look-ups and writes that fell back to the local cache.
    pub(crate) cache_fallbacks: u64,
}

impl Store {
    /// A store for `settings` (nothing is connected until [`Store::start`]).
    ///
    /// # Errors
    ///
    /// When the URL is not a Redis URL the client understands.
    pub(crate) fn new(settings: StoreSettings) -> Result<Store, String> {
        let link = Link::new(&settings)?;
        Ok(Store {
            settings,
            link: ArcSwap::from_pointee(link),
        })
    }

    /// Its settings.
    pub(crate) fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Takes over `previous`'s connection and state, when its settings are
    /// the same (a reload that did not change `store`).
    pub(crate) fn adopt(&self, previous: &Store) {
        if previous.settings == self.settings {
            self.link.store(previous.link.load_full());
        }
    }

    /// Connects, and keeps watching the store, on the current runtime.
    pub(crate) fn start(&self) {
        self.link.load_full().start();
    }

    /// Its state now.
    pub(crate) fn state(&self) -> StoreState {
        let link = self.link.load();
        StoreState {
            url: link.redacted.clone(),
            up: link.up.load(Ordering::Relaxed),
            rate_limit_fallbacks: link.fallbacks[0].load(Ordering::Relaxed),
            cache_fallbacks: link.fallbacks[1].load(Ordering::Relaxed),
        }
    }

    /// Counts one request against the fleet-wide limit at `key` (GCRA, in
    /// one round trip); `None` when the store cannot answer within the
    /// budget (counted and logged: the caller falls back).
    pub(crate) async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Option<GcraReply> {
        let link = self.link.load_full();
        let mut connection = link.usable(Use::RateLimit)?;
        let call = redis::gcra(&mut connection, key, interval, burst);
        link.bounded(Use::RateLimit, call).await
    }

    /// The shared cache's value at `key`; `None` for a miss (or a value over
    /// `max_value`), or when the store cannot answer within the budget
    /// (counted: the caller uses its local cache).
    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        let link = self.link.load_full();
        let mut connection = link.usable(Use::Cache)?;
        let call = redis::get(&mut connection, key, self.settings.max_value);
        link.bounded(Use::Cache, call).await.flatten()
    }

    /// Puts `value` at `key` for `ttl`, in the background (no request waits
    /// for it); values over `max_value` are not shared.
    pub(crate) fn put(&self, key: String, value: Bytes, ttl: Duration) {
        if value.len() > self.settings.max_value || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let link = self.link.load_full();
        let Some(mut connection) = link.usable(Use::Cache) else {
            return;
        };
        tokio::spawn(async move {
            let call = redis::put(&mut connection, &key, &value, ttl);
            link.bounded(Use::Cache, call).await;
        });
    }
}

/// What lives across reloads: the client, the connection, the state.
struct Link {
    client: ::redis::Client,
    /// Set by the supervisor once it has made the connection manager
    /// (which needs the runtime).
    connection: OnceLock<::redis::aio::ConnectionManager>,
    up: AtomicBool,
    /// Whether the supervisor has said anything about the store yet.
    known: AtomicBool,
    budget: Duration,
    /// Fallbacks by [`Use`], in that order.
    fallbacks: [AtomicU64; 2],
    redacted: String,
    started: AtomicBool,
    supervisor: Mutex<Option<tokio::task::AbortHandle>>,
    log: Mutex<LogState>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.redacted)
            .field("up", &self.up)
            .finish_non_exhaustive()
    }
}

/// When the store's coming and going was last logged, and what was not.
#[derive(Default)]
struct LogState {
    down_logged: Option<Instant>,
    up_logged: Option<Instant>,
    /// Fallbacks since the store went down.
    since_down: u64,
}

/// At most one line of each kind this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the supervisor probes a store that is down, and one that is up.
const PROBE_DOWN: Duration = Duration::from_millis(500);
const PROBE_UP: Duration = Duration::from_secs(1);
/// How long a probe may take (it waits beside the requests, not in them).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Link {
    fn new(settings: &StoreSettings) -> Result<Link, String> {
        let client = redis::client(&settings.url)?;
        Ok(Link {
            client,
            connection: OnceLock::new(),
            up: AtomicBool::new(false),
            known: AtomicBool::new(false),
            budget: settings.budget,
            fallbacks: Default::default(),
            redacted: redacted(&settings.url),
            started: AtomicBool::new(false),
            supervisor: Mutex::new(None),
            log: Mutex::new(LogState::default()),
        })
    }

    /// A connection to send on, if the store is up; otherwise the fallback
    /// is counted and `None` comes back at once.
    fn usable(&self, used: Use) -> Option<::redis::aio::ConnectionManager> {
        match self.connection.get() {
            Some(connection) if self.up.load(Ordering::Relaxed) => Some(connection.clone()),
            _ => {
                self.fell_back(used);
                None
            }
        }
    }

    /// `call` within the budget; a failure or a late answer marks the
    /// store down.
    async fn bounded<T>(
        &self,
        used: Use,
        call: impl Future<Output = Result<T, ::redis::RedisError>>,
    ) -> Option<T> {
        match within(self.budget, call).await {
            Ok(value) => Some(value),
            Err(why) => {
                self.fell_back(used);
                self.set_up(false, &why);
                None
            }
        }
    }

    fn fell_back(&self, used: Use) {
        let index = used as usize;
        self.fallbacks[index].fetch_add(1, Ordering::Relaxed);
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since_down += 1;
    }

    /// Records whether the store answers; says so in the log when that
    /// changes (rate-limited).
    fn set_up(&self, up: bool, why: &str) {
        let was = self.up.swap(up, Ordering::AcqRel);
        // The first word about the store is said whatever it is (a gateway
        // that starts with Redis away says so).
        let first = !self.known.swap(true, Ordering::AcqRel);
        if was == up && !first {
            return;
        }
        let now = Instant::now();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let last = if up {
            &mut log.up_logged
        } else {
            &mut log.down_logged
        };
        let due = last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if due {
            *last = Some(now);
        }
        // Counted from the moment it went down to the moment it came back.
        let fallbacks = std::mem::take(&mut log.since_down);
        drop(log);
        if !due {
            return;
        }
        if up {
            tracing::info!(
                store = self.redacted,
                fallbacks,
                "the store answers: rate limits and caches are shared"
            );
        } else {
            tracing::warn!(
                store = self.redacted,
                why,
                "the store does not answer: rate limits fall back to this node's share, caches to the local ones, until it does"
            );
        }
    }

    /// Starts the supervisor on the current runtime (once).
    fn start(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let task = tokio::spawn(supervise(Arc::downgrade(self)));
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let task = self
            .supervisor
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Connects, then probes the store beside the requests: every half second
/// while it is down (the probe's own reconnection brings it back), every
/// second while it is up (so a store that dies while idle is noticed).
async fn supervise(link: std::sync::Weak<Link>) {
    let Some(strong) = link.upgrade() else { return };
    match redis::manager(&strong.client) {
        Ok(manager) => {
            let _ = strong.connection.set(manager);
        }
        Err(e) => {
            tracing::error!(store = strong.redacted, error = %e, "cannot use the store");
            return;
        }
    }
    drop(strong);
    loop {
        let Some(strong) = link.upgrade() else { return };
        let Some(mut connection) = strong.connection.get().cloned() else {
            return;
        };
        let was_up = strong.up.load(Ordering::Relaxed);
        // Coming back, the script is loaded again (a restarted Redis has
        // forgotten it), so that requests need one round trip.
        let probe = redis::probe(&mut connection, !was_up);
        match within(PROBE_TIMEOUT, probe).await {
            Ok(()) => strong.set_up(true, ""),
            Err(why) => strong.set_up(false, &why),
        }
        let next = if strong.up.load(Ordering::Relaxed) {
            PROBE_UP
        } else {
            PROBE_DOWN
        };
        drop(strong);
        tokio::time::sleep(next).await;
    }
}

/// `call`'s value, or why there is none: its error, or that it took longer
/// than `budget` (then it is dropped: the request does not wait on).
async fn within<T>(
    budget: Duration,
    call: impl Future<Output = Result<T, ::redis::RedisError>>,
) -> Result<T, String> {
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {budget:?}")),
    }
}

/// A URL without its user name and password.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A stable digest of `bytes`, as 32 hex digits (128 bits of SHA-256): the
/// same on every gateway of the fleet, of a fixed length whatever the
/// input, and without the input (an API key, a token) in the store's keys.
pub(crate) fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_answer_is_given_up_at_the_budget() {
        let started = Instant::now();
        let never = std::future::pending::<Result<(), ::redis::RedisError>>();
        let result = within(Duration::from_millis(50), never).await;
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert_eq!(result.unwrap_err(), "no answer within 50ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_is_down_is_not_waited_for_at_all() {
        let store = Store::new(StoreSettings {
            url: "redis://127.0.0.1:1".into(),
            budget: Duration::from_millis(50),
            max_value: 1 << 20,
            prefix: "t".into(),
            fleet_size: None,
        })
        .unwrap();
        // Never started: not connected, so down.
        let started = Instant::now();
        assert_eq!(store.gcra("k", Duration::from_secs(1), 1).await, None);
        assert_eq!(store.get("k").await, None);
        assert_eq!(started.elapsed(), Duration::ZERO);
        let state = store.state();
        assert_eq!(
            (state.up, state.rate_limit_fallbacks, state.cache_fallbacks),
            (false, 1, 1)
        );
    }

    /// A real `redis-server`, stopped and started again on its port: the
    /// first probe after its return finds it. The manager kept the refused
    /// connection of its last attempt, which the probe replaces at once.
    #[tokio::test]
    async fn the_first_probe_after_redis_is_back_finds_it() {
        use fanout_mock::redis::RedisServer;
        async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
            tokio::task::spawn_blocking(f).await.unwrap()
        }
        let mut server = blocking(|| RedisServer::start().expect("redis-server")).await;
        let client = redis::client(&server.url()).unwrap();
        let mut connection = redis::manager(&client).unwrap();
        redis::probe(&mut connection, true).await.unwrap();

        server = blocking(move || {
            server.stop();
            server
        })
        .await;
        assert!(redis::probe(&mut connection, false).await.is_err());
        assert!(redis::probe(&mut connection, false).await.is_err());

        let _server = blocking(move || {
            server.restart().unwrap();
            server
        })
        .await;
        redis::probe(&mut connection, true).await.unwrap();
    }

    #[test]
    fn urls_lose_their_credentials_and_keys_their_values() {
        assert_eq!(
            redacted("redis://user:secret@10.0.0.1:6379/2"),
            "redis://10.0.0.1:6379/2"
        );
        assert_eq!(redacted("rediss://:p@w@host:6380"), "rediss://host:6380");
        assert_eq!(redacted("redis://host"), "redis://host");
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(digest(b"").len(), 32);
    }
}
