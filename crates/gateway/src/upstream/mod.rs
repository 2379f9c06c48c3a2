//! An upstream's targets at run time: the addresses its URLs name (a
//! hostname gives one target per address, kept in step with DNS), which of
//! them may take calls (passive ejection, active health checks), and which
//! one takes the next attempt (power of two choices on peak-EWMA latency, or
//! round robin).
//!
//! Written here rather than with tower's `balance::p2c::Balance` over
//! `load::PeakEwma`, which was the reference design:
//! - `Balance` picks in `poll_ready(&mut self)` and sends in `call`, so one
//!   balancer shared by every serving thread and every call in flight would
//!   sit behind `tower::buffer` (a channel and a worker task per upstream: a
//!   hop on every call, and every pick serialised through one task);
//! - it picks each request on its own, while here the attempts of one call
//!   (its retries and hedges) must go to *different* targets;
//! - it knows a target only through its `Service`: ejection and health
//!   would have to be `poll_ready` errors, which drop the service from the
//!   balancer until discovery inserts it again, with its latency estimate
//!   lost; here a target's state (ejection, health, estimate) outlives DNS
//!   refreshes and reloads;
//! - each attempt runs through the upstream's policies as a closure, not a
//!   `Service` call.
//!
//! The cost function is tower's `PeakEwma`: latency estimate × (in-flight +
//! 1), a slower sample counting in full at once and faster ones averaged in
//! over a 10 s decay; one difference: an idle estimate decays toward the
//! latency assumed of a new target rather than toward zero (see
//! `target.rs`).
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
    /// Held by the call that resolves the names first; the calls arriving
    /// meanwhile wait for its result instead of each looking them up.
    first_lookup: tokio::sync::Mutex<()>,
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
            .filter_map(|s| Some(Arc::new(Target::new(SocketAddr::new(s.ip?, s.port), s))))
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
            first_lookup: tokio::sync::Mutex::new(()),
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
            let _first = self.first_lookup.lock().await;
            if self.set.load().is_empty() {
                discover::resolve(self).await;
            }
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{config::Http2, error::ErrorKind};

    fn targets(n: usize, balance: Balance, eject: Option<EjectRule>) -> Targets {
        let sources = (0..n)
            .map(|i| Source {
                host: format!("10.0.0.{}", i + 1),
                port: 80,
                host_header: HeaderValue::from_static("h"),
                ip: Some(format!("10.0.0.{}", i + 1).parse().unwrap()),
            })
            .collect();
        Targets::new(
            "u",
            TargetSettings {
                scheme: Scheme::Http,
                sources,
                client: Arc::new(ClientSettings::new(None, Http2::Auto)),
                balance,
                eject,
                health: None,
                dns_refresh: Duration::from_secs(30),
            },
        )
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 80))
    }

    const RULE: EjectRule = EjectRule {
        failures: 2,
        base: Duration::from_secs(10),
        max_share: 0.5,
    };

    #[tokio::test(start_paused = true)]
    async fn round_robin_takes_each_target_in_turn() {
        let t = targets(3, Balance::RoundRobin, None);
        let picked: Vec<SocketAddr> = (0..6).map(|_| t.pick(&[]).unwrap().target.addr).collect();
        assert_eq!(
            picked,
            [addr(1), addr(2), addr(3), addr(1), addr(2), addr(3)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_attempt_of_a_call_goes_to_another_target() {
        for balance in [Balance::P2c, Balance::RoundRobin] {
            let t = targets(3, balance, None);
            for _ in 0..20 {
                let first = t.pick(&[]).unwrap().target.addr;
                let second = t.pick(&[first]).unwrap().target.addr;
                let third = t.pick(&[first, second]).unwrap().target.addr;
                assert!(first != second && second != third && first != third);
                // With every target used, one is used again rather than none.
                assert!(t.pick(&[first, second, third]).is_ok());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_target_with_fewer_calls_in_flight() {
        let t = targets(2, Balance::P2c, None);
        let busy: Vec<Lease> = (0..5).map(|_| t.all()[0].lease()).collect();
        for _ in 0..20 {
            assert_eq!(t.pick(&[]).unwrap().target.addr, addr(2));
        }
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_faster_target() {
        let t = targets(2, Balance::P2c, None);
        let slow = t.all()[0].lease();
        tokio::time::advance(Duration::from_millis(200)).await;
        t.finish(slow, AttemptVerdict::Answered);
        let fast = t.all()[1].lease();
        tokio::time::advance(Duration::from_millis(1)).await;
        t.finish(fast, AttemptVerdict::Answered);
        for _ in 0..20 {
            assert_eq!(t.pick(&[]).unwrap().target.addr, addr(2));
        }
        // One call in flight to the fast target does not make the slow one
        // better now...
        let busy = t.all()[1].lease();
        assert_eq!(t.pick(&[]).unwrap().target.addr, addr(2));
        // ...but the slow sample decays: long after, the two are alike again
        // and the call in flight tips the choice.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(t.pick(&[]).unwrap().target.addr, addr(1));
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_a_target_for_longer_each_time() {
        let t = targets(4, Balance::RoundRobin, Some(RULE));
        let first = t.all()[0].clone();
        let fail = |t: &Targets| {
            let lease = t.all()[0].lease();
            t.finish(lease, AttemptVerdict::Failed);
        };
        fail(&t);
        assert_eq!(
            first.state(tokio::time::Instant::now()),
            TargetState::Up,
            "one failure is not enough"
        );
        fail(&t);
        assert_eq!(
            first.state(tokio::time::Instant::now()),
            TargetState::Ejected
        );
        for _ in 0..9 {
            assert_ne!(
                t.pick(&[]).unwrap().target.addr,
                addr(1),
                "an ejected target takes no call"
            );
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            first.state(tokio::time::Instant::now()),
            TargetState::Up,
            "back after base"
        );
        fail(&t);
        fail(&t);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            first.state(tokio::time::Instant::now()),
            TargetState::Ejected,
            "the second ejection lasts 2 × base"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(first.state(tokio::time::Instant::now()), TargetState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_max_percent_bounds_ejections() {
        let t = targets(4, Balance::RoundRobin, Some(RULE));
        let all = t.all();
        let step = |i: usize, verdict| t.finish(all[i].lease(), verdict);
        step(0, AttemptVerdict::Failed);
        step(0, AttemptVerdict::Answered);
        step(0, AttemptVerdict::Failed);
        let now = tokio::time::Instant::now;
        assert_eq!(all[0].state(now()), TargetState::Up, "not two in a row");
        for i in 0..4 {
            step(i, AttemptVerdict::Failed);
            step(i, AttemptVerdict::Failed);
        }
        let out = all
            .iter()
            .filter(|t| t.state(now()) == TargetState::Ejected)
            .count();
        assert_eq!(out, 2, "50 % of 4");
        // Two targets: one may always be out; one target: never.
        let two = targets(
            2,
            Balance::RoundRobin,
            Some(EjectRule {
                max_share: 0.1,
                ..RULE
            }),
        );
        for i in 0..2 {
            for _ in 0..2 {
                two.finish(two.all()[i].lease(), AttemptVerdict::Failed);
            }
        }
        assert_eq!(
            two.all()
                .iter()
                .filter(|t| t.state(now()) == TargetState::Ejected)
                .count(),
            1
        );
        let one = targets(1, Balance::P2c, Some(RULE));
        for _ in 0..5 {
            one.finish(one.all()[0].lease(), AttemptVerdict::Failed);
        }
        assert_eq!(one.all()[0].state(now()), TargetState::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_target_is_out_calls_fail_as_circuit_open() {
        let t = targets(2, Balance::P2c, None);
        for target in t.all().iter() {
            target.set_healthy(false);
        }
        let err = t.pick(&[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::CircuitOpen);
        assert!(
            err.message.contains("every target of upstream `u` is out"),
            "{}",
            err.message
        );
        t.all()[1].set_healthy(true);
        assert_eq!(t.pick(&[]).unwrap().target.addr, addr(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_attempt_leaves_without_a_verdict() {
        let t = targets(1, Balance::P2c, Some(RULE));
        for _ in 0..5 {
            drop(t.pick(&[]).unwrap());
        }
        assert_eq!(t.all()[0].counts(), (0, 5, 0));
        assert_eq!(
            t.all()[0].state(tokio::time::Instant::now()),
            TargetState::Up
        );
    }

    fn named(host: &str) -> Source {
        Source {
            host: host.into(),
            port: 80,
            host_header: HeaderValue::from_static("users.internal"),
            ip: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_address_of_a_name_is_a_target_and_a_failed_refresh_keeps_them() {
        let t = targets(0, Balance::RoundRobin, Some(RULE));
        let users = named("users.internal");
        let orders = named("orders.internal");
        discover::install(
            &t,
            vec![(addr(2), &users), (addr(1), &users), (addr(2), &users)],
            vec![],
        );
        let set: Vec<_> = t.all().iter().map(|t| t.addr).collect();
        assert_eq!(set, [addr(1), addr(2)], "sorted, without repeats");

        // A target that stays keeps its state across refreshes.
        let kept = t.all()[0].clone();
        for _ in 0..2 {
            let lease = kept.lease();
            t.finish(lease, AttemptVerdict::Failed);
        }
        discover::install(&t, vec![(addr(1), &users), (addr(3), &users)], vec![]);
        let now = tokio::time::Instant::now();
        assert!(Arc::ptr_eq(&t.all()[0], &kept));
        assert_eq!(t.all()[0].state(now), TargetState::Ejected);
        assert_eq!(t.all()[1].addr, addr(3));

        // A refresh that fails keeps the last good set.
        discover::install(&t, vec![], vec![(&users, "cannot resolve".into())]);
        assert_eq!(t.all().len(), 2);
        // With two names, one that fails keeps its addresses while the
        // other's change.
        discover::install(&t, vec![(addr(1), &users), (addr(4), &orders)], vec![]);
        discover::install(
            &t,
            vec![(addr(5), &orders), (addr(6), &orders)],
            vec![(&users, "cannot resolve `users.internal`".into())],
        );
        let set: Vec<_> = t.all().iter().map(|t| t.addr).collect();
        assert_eq!(set, [addr(1), addr(5), addr(6)]);
        assert!(
            Arc::ptr_eq(&t.all()[0], &kept),
            "the kept target keeps its state"
        );
        // A lookup that worked and found fewer addresses shrinks the set.
        discover::install(&t, vec![(addr(3), &users), (addr(5), &orders)], vec![]);
        let set: Vec<_> = t.all().iter().map(|t| t.addr).collect();
        assert_eq!(set, [addr(3), addr(5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_never_resolved_says_why_its_calls_fail() {
        let t = targets(0, Balance::P2c, Some(RULE));
        let users = named("users.internal");
        discover::install(
            &t,
            vec![],
            vec![(&users, "cannot resolve `users.internal`: no address".into())],
        );
        let err = t.pick(&[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connect);
        assert!(
            err.message.contains("cannot resolve `users.internal`"),
            "{}",
            err.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_with_each_one_up_to_ten_times_base() {
        let t = targets(4, Balance::RoundRobin, Some(RULE));
        let first = t.all()[0].clone();
        let now = tokio::time::Instant::now;
        for times in 1..=12u32 {
            for _ in 0..RULE.failures {
                t.finish(first.lease(), AttemptVerdict::Failed);
            }
            assert_eq!(first.state(now()), TargetState::Ejected, "ejection {times}");
            let lasts = RULE.base * times.min(10);
            tokio::time::advance(lasts - Duration::from_millis(1)).await;
            assert_eq!(first.state(now()), TargetState::Ejected, "ejection {times}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(
                first.state(now()),
                TargetState::Up,
                "ejection {times} lasts {lasts:?}"
            );
        }
    }
}
