//! The HTTP/1.1 connections one serving thread keeps for its calls, per
//! upstream settings and target: the idle ones, newest first out, at most
//! [`MAX_IDLE_PER_TARGET`] per target. Each is taken no later than the idle
//! timeout after its last call, or sooner when the backend said it closes
//! idle connections sooner (`Keep-Alive: timeout`), and closed by a sweeping
//! task: a backend that never closes its side does not keep them open, and
//! the same sweep closes those the backend closed, a quarter of the idle
//! timeout later at most.
//!
//! The bookkeeping is plain data ([`IdleList`]) behind short, uncontended
//! locks: each serving thread has its own [`Pools`], so a lock is only ever
//! contended when one client is shared by the threads of a work-stealing
//! runtime.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    task::Context,
    time::Duration,
};

use hyper::client::conn::http1;
use tokio::time::Instant;

use super::{Body, ClientSettings, Dial, connect::Stream};

/// Idle keep-alive connections kept per target (per serving thread), by
/// both clients; more are closed as their calls end.
pub(super) const MAX_IDLE_PER_TARGET: usize = 256;

/// How long a connection may stay unused before it is closed.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle items, each with the instant it went idle and how long it may stay
/// idle: the newest is taken first (its socket and buffers are the warmest),
/// the oldest expire first.
#[derive(Debug)]
pub(super) struct IdleList<C> {
    items: VecDeque<(C, Instant, Duration)>,
    max: usize,
}

impl<C> IdleList<C> {
    pub(super) fn new(max: usize) -> IdleList<C> {
        IdleList {
            items: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Keeps `item`, idle since `now` and for `limit` at most; the oldest
    /// goes if the list is full.
    pub(super) fn push(&mut self, item: C, now: Instant, limit: Duration) -> Option<C> {
        let evicted = if self.items.len() >= self.max {
            self.items.pop_front().map(|(c, ..)| c)
        } else {
            None
        };
        self.items.push_back((item, now, limit));
        evicted
    }

    /// The newest item still within its limit, and how long it was idle;
    /// the newer ones past theirs are dropped on the way.
    pub(super) fn pop(&mut self, now: Instant) -> Option<(C, Duration)> {
        while let Some((item, since, limit)) = self.items.pop_back() {
            let idle = now.saturating_duration_since(since);
            if idle < limit {
                return Some((item, idle));
            }
        }
        None
    }

    /// Drops the oldest items while they are past their limit (cheap, for
    /// every check-in; an item with a shorter limit behind a live one waits
    /// for [`retain`](Self::retain) or a [`pop`](Self::pop)).
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((_, since, limit)) = self.items.front() {
            if now.saturating_duration_since(*since) < *limit {
                break;
            }
            self.items.pop_front();
        }
    }

    /// Keeps the items within their limit for which `keep` says so.
    pub(super) fn retain(&mut self, now: Instant, mut keep: impl FnMut(&mut C) -> bool) {
        self.items.retain_mut(|(item, since, limit)| {
            now.saturating_duration_since(*since) < *limit && keep(item)
        });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An HTTP/1.1 connection: the handle requests go in by and the connection
/// itself, which whoever uses it drives (no task of its own). Kept boxed: it
/// is large (hyper's buffers and state), and it moves from the pool to a
/// call, its body and back for every call.
pub(super) type Conn = Box<H1>;

/// An HTTP/1.1 connection's two halves.
pub(super) struct H1 {
    pub(super) send: http1::SendRequest<Body>,
    pub(super) conn: http1::Connection<Stream, Body>,
}

impl std::fmt::Debug for H1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1").finish_non_exhaustive()
    }
}

/// `config` offering HTTP/1.1 alone in ALPN: these connections are driven
/// as HTTP/1.1, so a server must not pick h2 for them (`http2: auto` offers
/// both on the connections of hyper-util's pool).
fn http1_only(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    if !config.alpn_protocols.iter().any(|p| p == b"h2") {
        return config.clone();
    }
    let mut http1 = (**config).clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(http1)
}

/// One target's idle connections on one serving thread.
pub(super) struct Target {
    pub(super) settings: Weak<ClientSettings>,
    pub(super) dial: Weak<Dial>,
    /// For `https://` calls.
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
    idle: Mutex<IdleList<Conn>>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("dial", &self.dial.upgrade().map(|d| d.addr))
            .finish_non_exhaustive()
    }
}

impl Target {
    fn idle(&self) -> std::sync::MutexGuard<'_, IdleList<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection, if one has not been idle too long, and
    /// how long it was idle.
    pub(super) fn take(&self) -> Option<(Conn, Duration)> {
        self.idle().pop(Instant::now())
    }

    /// Keeps a connection whose last exchange ended cleanly, for the idle
    /// timeout or `keep_for`, whichever is shorter (what the backend said it
    /// keeps idle connections for: [`keep_alive_hint`](super::h1)).
    pub(super) fn check_in(&self, conn: Conn, keep_for: Option<Duration>) {
        let limit = keep_for.map_or(self.idle_timeout, |d| d.min(self.idle_timeout));
        if limit.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        idle.expire(now);
        let evicted = idle.push(conn, now, limit);
        drop(idle);
        // Closed outside the lock.
        drop(evicted);
    }

    /// Closes what has been idle for the idle timeout, and what the backend
    /// closed meanwhile; whether anything is left.
    fn sweep(&self, now: Instant) -> bool {
        let mut idle = self.idle();
        // An idle connection is driven by no one: one the backend closed
        // (its keep-alive timeout, a restart) would sit half-closed, its
        // socket in CLOSE_WAIT, until a call took it or it expired. Polled
        // once here, without a waker (an event on it later wakes no task),
        // a connection that has ended says so and is closed.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        idle.retain(now, |h1| Pin::new(&mut h1.conn).poll(&mut cx).is_pending());
        !idle.is_empty()
    }

    /// Whether its upstream and its target are still there.
    fn live(&self) -> bool {
        self.settings.strong_count() > 0 && self.dial.strong_count() > 0
    }
}

/// The targets of one serving thread, by settings id and target (its
/// `Dial`'s address in memory: the `Weak` each entry holds keeps that
/// address from being reused while the entry lives).
type Targets = HashMap<(u64, usize), Arc<Target>, foldhash::fast::RandomState>;

/// Every target's connections of one client.
#[derive(Debug)]
pub(crate) struct Pools {
    targets: Mutex<Targets>,
    idle_timeout: Duration,
    /// Whether the sweeping task runs.
    sweeping: AtomicBool,
}

impl Default for Pools {
    fn default() -> Pools {
        Pools::new(IDLE_TIMEOUT)
    }
}

impl Pools {
    pub(super) fn new(idle_timeout: Duration) -> Pools {
        Pools {
            targets: Mutex::default(),
            idle_timeout,
            sweeping: AtomicBool::new(false),
        }
    }

    fn targets(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connections of `dial`'s target under `settings`, made on its first
    /// call (which starts the sweeping on the current runtime).
    pub(super) fn target(
        self: &Arc<Self>,
        settings: &Arc<ClientSettings>,
        dial: &Arc<Dial>,
    ) -> Arc<Target> {
        let key = (settings.id, Arc::as_ptr(dial) as usize);
        let mut targets = self.targets();
        if let Some(target) = targets.get(&key)
            && std::ptr::eq(target.dial.as_ptr(), Arc::as_ptr(dial))
        {
            return target.clone();
        }
        // Upstreams a reload removed and targets DNS no longer gives: their
        // connections go with them.
        targets.retain(|_, target| target.live());
        let target = Arc::new(Target {
            settings: Arc::downgrade(settings),
            dial: Arc::downgrade(dial),
            tls: settings
                .tls
                .as_ref()
                .map(|t| tokio_rustls::TlsConnector::from(http1_only(&t.config))),
            idle: Mutex::new(IdleList::new(MAX_IDLE_PER_TARGET)),
            idle_timeout: self.idle_timeout,
        });
        targets.insert(key, target.clone());
        drop(targets);
        self.start_sweeping();
        target
    }

    fn start_sweeping(self: &Arc<Self>) {
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

    /// Closes what has been idle too long; forgets the targets with nothing
    /// left that no call holds, and those of removed upstreams and targets.
    fn sweep(&self, now: Instant) {
        let live: Vec<_> = {
            let mut targets = self.targets();
            targets.retain(|_, target| target.live());
            targets.values().cloned().collect()
        };
        let mut empty = Vec::new();
        for target in live {
            if !target.sweep(now) {
                empty.push(target);
            }
        }
        if !empty.is_empty() {
            let mut targets = self.targets();
            // Held here and in the map only: no call is using it.
            targets.retain(|_, t| {
                !(empty.iter().any(|e| Arc::ptr_eq(e, t)) && Arc::strong_count(t) == 2)
            });
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
        list.push('a', t0, 10 * s);
        list.push('b', t0 + s, 10 * s);
        list.push('c', t0 + 2 * s, 10 * s);
        assert_eq!(list.pop(t0 + 2 * s), Some(('c', Duration::ZERO)));
        list.expire(t0 + 10 * s);
        assert_eq!(list.len(), 1, "a, idle for 10 s, is gone");
        assert_eq!(list.pop(t0 + 10 * s), Some(('b', 9 * s)));
        assert_eq!(list.pop(t0 + 10 * s), None);
    }

    #[test]
    fn when_the_newest_has_expired_all_have() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut list = IdleList::new(10);
        list.push(1, t0, 10 * s);
        list.push(2, t0 + s, 10 * s);
        assert_eq!(list.pop(t0 + 11 * s), None);
        assert!(list.is_empty());
    }

    #[test]
    fn an_item_with_a_shorter_limit_expires_before_older_ones() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut list = IdleList::new(10);
        list.push('a', t0, 90 * s);
        list.push('b', t0 + s, 4 * s);
        list.push('c', t0 + 2 * s, 90 * s);
        list.push('d', t0 + 3 * s, 4 * s);
        list.expire(t0 + 8 * s);
        assert_eq!(list.len(), 4, "the oldest is live: expire stops there");
        list.retain(t0 + 8 * s, |_| true);
        assert_eq!(list.len(), 2, "b and d, past their 4 s, are gone");
        list.push('e', t0 + 8 * s, 4 * s);
        assert_eq!(
            list.pop(t0 + 13 * s),
            Some(('c', 11 * s)),
            "e is past its 4 s"
        );
        assert_eq!(list.pop(t0 + 13 * s), Some(('a', 13 * s)));
    }

    #[test]
    fn a_full_list_gives_up_its_oldest() {
        let t0 = Instant::now();
        let mut list = IdleList::new(2);
        let limit = Duration::from_secs(1);
        assert_eq!(list.push(1, t0, limit), None);
        assert_eq!(list.push(2, t0, limit), None);
        assert_eq!(list.push(3, t0, limit), Some(1));
        assert_eq!(list.len(), 2);
    }
}
