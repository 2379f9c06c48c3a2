//! An upstream's targets at run time: the addresses its URLs name (a
//! hostname gives one target per address, kept in step with DNS), which of
//! them may take calls (passive ejection, active health checks), and which
//! one takes the next attempt (power of two choices on peak-EWMA latency, or
//! round robin).
//!
//! Written here rather than with tower's `balance`: its p2c balances over
//! `Service`s it owns and picks each request independently, while here the
//! attempts of one call (its retries and hedges) must go to *different*
//! targets, each attempt goes through the upstream's policies as a closure,
//! and a target's state (ejection, health) must outlive reloads. The cost
//! function follows tower's `PeakEwma`: latency estimate × (in-flight + 1).
//!
//! The files: [`target`] (one target's state, ejection, latency), [`pick`]
//! (balancing), [`discover`] (DNS and health checks in the background).

mod discover;
mod pick;
mod target;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use http::HeaderValue;

pub(crate) use self::{
    pick::AttemptVerdict,
    target::{Lease, Target, TargetState},
};
use crate::{
    client::ClientSettings,
    config::{Balance, Health},
};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Passive ejection, as configured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct EjectRule {
    /// Consecutive failures that eject a target.
    pub(crate) failures: u32,
    /// How long the first ejection lasts.
    pub(crate) base: Duration,
    /// Share of the targets that may be out at once.
    pub(crate) max_share: f64,
}

/// Where one of the upstream's URLs points.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    /// The host as written.
    pub(crate) host: String,
    /// Its port.
    pub(crate) port: u16,
    /// The `Host` header for calls to it.
    pub(crate) host_header: HeaderValue,
    /// The host, if it is an address (no resolution needed).
    pub(crate) ip: Option<std::net::IpAddr>,
}

/// How an upstream's targets are found, chosen and spoken to.
#[derive(Debug)]
pub(crate) struct TargetSettings {
    pub(crate) scheme: Scheme,
    pub(crate) sources: Vec<Source>,
    pub(crate) client: Arc<ClientSettings>,
    pub(crate) balance: Balance,
    pub(crate) eject: Option<EjectRule>,
    pub(crate) health: Option<Health>,
    pub(crate) dns_refresh: Duration,
}

/// The targets of one upstream and how to choose among them.
#[derive(Debug)]
pub(crate) struct Targets {
    /// The upstream's name, for errors and metrics.
    pub(crate) upstream: String,
    /// How calls to the targets are made.
    pub(crate) client: Arc<ClientSettings>,
    pub(crate) scheme: Scheme,
    sources: Vec<Source>,
    set: ArcSwap<Vec<Arc<Target>>>,
    /// The last DNS failure while no address is known.
    unresolved: Mutex<Option<String>>,
    balance: Balance,
    pub(crate) eject: Option<EjectRule>,
    health: Option<Health>,
    dns_refresh: Duration,
    /// Round robin's position.
    next: AtomicUsize,
    started: AtomicBool,
    /// The DNS and health tasks, stopped with the targets.
    background: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Targets {
    /// The targets of `sources`: addresses are targets at once, names once
    /// resolved ([`Targets::start`], or the first call).
    pub(crate) fn new(upstream: &str, settings: TargetSettings) -> Targets {
        let TargetSettings {
            scheme,
            sources,
            client,
            balance,
            eject,
            health,
            dns_refresh,
        } = settings;
        let fixed: Vec<Arc<Target>> = sources
            .iter()
            .filter_map(|s| {
                Some(Arc::new(Target::new(
                    SocketAddr::new(s.ip?, s.port),
                    s.host_header.clone(),
                )))
            })
            .collect();
        Targets {
            upstream: upstream.to_owned(),
            client,
            scheme,
            sources,
            set: ArcSwap::from_pointee(fixed),
            unresolved: Mutex::new(None),
            balance,
            eject,
            health,
            dns_refresh,
            next: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
        }
    }

    /// The targets now.
    pub(crate) fn all(&self) -> Arc<Vec<Arc<Target>>> {
        self.set.load_full()
    }

    /// Whether any source is a name to resolve.
    fn has_names(&self) -> bool {
        self.sources.iter().any(|s| s.ip.is_none())
    }

    /// Starts resolving names again every `dns_refresh`, and the health
    /// checks, on the current runtime (once; a no-op outside a runtime or
    /// when there is nothing to do).
    pub(crate) fn start(self: &Arc<Self>) {
        if !(self.has_names() || self.health.is_some())
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut tasks = self.background.lock().unwrap_or_else(|e| e.into_inner());
        if self.has_names() {
            tasks.push(tokio::spawn(discover::refresh(Arc::downgrade(self))).abort_handle());
        }
        if let Some(health) = self.health.clone() {
            tasks.push(tokio::spawn(discover::check(Arc::downgrade(self), health)).abort_handle());
        }
    }

    /// Waits until the names have been resolved once (the first call of a
    /// gateway whose background resolution has not finished yet).
    pub(crate) async fn ready(&self) {
        if self.has_names() && self.set.load().is_empty() {
            discover::resolve(self).await;
        }
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for task in self
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}
