//! The connections kept for one serving thread's calls: per upstream settings
//! and target, the idle HTTP/1.1 connections (newest first out, each closed
//! after the idle timeout) and the one multiplexed HTTP/2 connection.
//!
//! The bookkeeping is plain data ([`IdleList`], [`Target`]'s state) behind
//! short, uncontended locks: each serving thread has its own [`Pools`], so a
//! lock is only ever contended when one client is shared by the threads of a
//! work-stealing runtime.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use http::uri::Authority;
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use super::{ClientSettings, connect::Stream};

/// How long a connection may stay unused before it is closed.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle HTTP/1.1 connections kept per target at most; past it the oldest is
/// closed.
pub(super) const MAX_IDLE_PER_TARGET: usize = 1024;

/// Idle items, each with the instant it went idle: the newest is taken first
/// (its socket and buffers are the warmest), the oldest expire first.
#[derive(Debug)]
pub(super) struct IdleList<C> {
    items: VecDeque<(C, Instant)>,
    max: usize,
}

impl<C> IdleList<C> {
    pub(super) fn new(max: usize) -> IdleList<C> {
        IdleList {
            items: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Keeps `item`, idle since `now`; the oldest goes if the list is full.
    pub(super) fn push(&mut self, item: C, now: Instant) -> Option<C> {
        let evicted = if self.items.len() >= self.max {
            self.items.pop_front().map(|(c, _)| c)
        } else {
            None
        };
        self.items.push_back((item, now));
        evicted
    }

    /// The newest item not idle for `timeout` yet. If even the newest has
    /// been idle that long, every one has: all are dropped.
    pub(super) fn pop(&mut self, now: Instant, timeout: Duration) -> Option<C> {
        let (item, since) = self.items.pop_back()?;
        if now.saturating_duration_since(since) >= timeout {
            self.items.clear();
            return None;
        }
        Some(item)
    }

    /// Drops the items idle for `timeout` or more.
    pub(super) fn expire(&mut self, now: Instant, timeout: Duration) {
        while let Some((_, since)) = self.items.front() {
            if now.saturating_duration_since(*since) < timeout {
                break;
            }
            self.items.pop_front();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What is known of a target's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Nothing yet (TLS with `http2: auto`: ALPN will tell).
    Unknown,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2, one multiplexed connection.
    Http2,
}

/// An HTTP/1.1 connection: the handle requests go in by and the connection
/// itself, which whoever uses it drives (no task of its own). Kept boxed: it
/// is large (hyper's buffers and state), and it moves from the pool to a
/// call, its body and back for every call.
pub(super) type Conn<B> = Box<H1<B>>;

/// An HTTP/1.1 connection's two halves.
pub(super) struct H1<B: hyper::body::Body + 'static> {
    pub(super) send: http1::SendRequest<B>,
    pub(super) conn: http1::Connection<Stream, B>,
}

/// One target's connections.
pub(super) struct Target<B: hyper::body::Body + 'static> {
    pub(super) authority: Authority,
    pub(super) state: Mutex<TargetState<B>>,
    /// Held while a connection that may turn out HTTP/2 is being opened, so
    /// that the calls arriving meanwhile share it instead of each opening
    /// their own.
    pub(super) opening: tokio::sync::Mutex<()>,
    pub(super) idle_timeout: Duration,
}

/// What a target has, behind its lock.
pub(super) struct TargetState<B: hyper::body::Body + 'static> {
    pub(super) protocol: Protocol,
    pub(super) idle: IdleList<Conn<B>>,
    /// The multiplexed connection's handle, and when a call last used it.
    pub(super) h2: Option<(http2::SendRequest<B>, Instant)>,
}

impl<B: hyper::body::Body + 'static> std::fmt::Debug for H1<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1").finish_non_exhaustive()
    }
}

impl<B: hyper::body::Body + 'static> std::fmt::Debug for Target<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl<B: hyper::body::Body + 'static> Target<B> {
    fn new(authority: Authority, protocol: Protocol, idle_timeout: Duration) -> Target<B> {
        Target {
            authority,
            state: Mutex::new(TargetState {
                protocol,
                idle: IdleList::new(MAX_IDLE_PER_TARGET),
                h2: None,
            }),
            opening: tokio::sync::Mutex::new(()),
            idle_timeout,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, TargetState<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps an HTTP/1.1 connection whose last exchange ended cleanly.
    pub(super) fn check_in(&self, conn: Conn<B>) {
        let now = Instant::now();
        let mut state = self.lock();
        state.idle.expire(now, self.idle_timeout);
        let evicted = state.idle.push(conn, now);
        drop(state);
        drop(evicted);
    }

    /// Closes what has been idle for the idle timeout; whether anything is
    /// left.
    fn sweep(&self, now: Instant) -> bool {
        let mut state = self.lock();
        state.idle.expire(now, self.idle_timeout);
        let h2_idle = state.h2.as_ref().is_some_and(|(send, used)| {
            send.is_closed() || now.saturating_duration_since(*used) >= self.idle_timeout
        });
        if h2_idle {
            state.h2 = None;
        }
        !state.idle.is_empty() || state.h2.is_some()
    }
}

/// The connections of one upstream's settings.
pub(super) struct Pool<B: hyper::body::Body + 'static> {
    pub(super) settings: Weak<ClientSettings>,
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    /// By authority (`host:port`).
    targets: Mutex<HashMap<Box<str>, Arc<Target<B>>, foldhash::fast::RandomState>>,
    idle_timeout: Duration,
}

impl<B: hyper::body::Body + 'static> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("tls", &self.tls.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<B: hyper::body::Body + 'static> Pool<B> {
    /// The target at `authority`, made on its first call.
    pub(super) fn target(&self, authority: &Authority) -> Arc<Target<B>> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(authority.as_str()) {
            return target.clone();
        }
        let protocol = match self.settings.upgrade() {
            Some(s) if s.http2 == crate::config::Http2::Always => Protocol::Http2,
            Some(s) if s.http2 == crate::config::Http2::Auto && s.tls.is_some() => {
                Protocol::Unknown
            }
            _ => Protocol::Http1,
        };
        let target = Arc::new(Target::new(authority.clone(), protocol, self.idle_timeout));
        targets.insert(authority.as_str().into(), target.clone());
        target
    }

    /// Closes what has been idle too long; forgets targets with nothing left
    /// that no call holds.
    fn sweep(&self, now: Instant) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.retain(|_, target| target.sweep(now) || Arc::strong_count(target) > 1);
    }
}

/// Every pool of one client, by settings id.
pub(super) struct Pools<B: hyper::body::Body + 'static> {
    pools: Mutex<HashMap<u64, Arc<Pool<B>>, foldhash::fast::RandomState>>,
    idle_timeout: Duration,
    /// Whether the sweeping task runs.
    sweeping: std::sync::atomic::AtomicBool,
}

impl<B: hyper::body::Body + 'static> std::fmt::Debug for Pools<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<B: hyper::body::Body + Send + 'static> Pools<B>
where
    B::Data: Send,
{
    pub(super) fn new(idle_timeout: Duration) -> Pools<B> {
        Pools {
            pools: Mutex::default(),
            idle_timeout,
            sweeping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The pool for `settings`, made on its first call (which starts the
    /// sweeping on the current runtime).
    pub(super) fn pool(self: &Arc<Self>, settings: &Arc<ClientSettings>) -> Arc<Pool<B>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&settings.id) {
            return pool.clone();
        }
        // Settings of upstreams a reload removed: their pools go with them.
        pools.retain(|_, pool| pool.settings.strong_count() > 0);
        let pool = Arc::new(Pool {
            settings: Arc::downgrade(settings),
            tls: settings
                .tls
                .as_ref()
                .map(|t| tokio_rustls::TlsConnector::from(t.config.clone())),
            targets: Mutex::default(),
            idle_timeout: self.idle_timeout,
        });
        pools.insert(settings.id, pool.clone());
        drop(pools);
        self.start_sweeping();
        pool
    }

    fn start_sweeping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.load(Ordering::Relaxed) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pools = Arc::downgrade(self);
        // Often enough that a connection is never idle for much more than
        // the timeout.
        let every = (self.idle_timeout / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pools) = pools.upgrade() else { return };
                pools.sweep(Instant::now());
            }
        });
    }

    fn sweep(&self, now: Instant) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, pool| pool.settings.strong_count() > 0);
        let live: Vec<_> = pools.values().cloned().collect();
        drop(pools);
        for pool in live {
            pool.sweep(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_idle_item_goes_first_and_the_oldest_expire_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut list = IdleList::new(10);
        list.push('a', t0);
        list.push('b', t0 + s);
        list.push('c', t0 + 2 * s);
        assert_eq!(list.pop(t0 + 2 * s, 10 * s), Some('c'));
        list.expire(t0 + 10 * s, 10 * s);
        assert_eq!(list.len(), 1, "a, idle for 10 s, is gone");
        assert_eq!(list.pop(t0 + 10 * s, 10 * s), Some('b'));
        assert_eq!(list.pop(t0 + 10 * s, 10 * s), None);
    }

    #[test]
    fn when_the_newest_has_expired_all_have() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut list = IdleList::new(10);
        list.push(1, t0);
        list.push(2, t0 + s);
        assert_eq!(list.pop(t0 + 11 * s, 10 * s), None);
        assert!(list.is_empty());
    }

    #[test]
    fn a_full_list_gives_up_its_oldest() {
        let t0 = Instant::now();
        let mut list = IdleList::new(2);
        assert_eq!(list.push(1, t0), None);
        assert_eq!(list.push(2, t0), None);
        assert_eq!(list.push(3, t0), Some(1));
        assert_eq!(list.len(), 2);
    }
}
