//! One target: its address, the calls in flight to it, its latency
//! estimate (peak EWMA), its failures in a row and its ejection.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::HeaderValue;
use tokio::time::Instant;

use super::{EjectRule, Source};
use crate::client::Dial;

/// How long a latency sample keeps its weight (tower's PeakEwma default
/// decay, as a time constant).
const DECAY: Duration = Duration::from_secs(10);
/// An ejection lasts `base × times ejected`, but never more than this many
/// times `base` (Envoy caps it too): a target that failed often long ago
/// must not stay out for hours once it is well.
const MAX_EJECTION_TIMES: u32 = 10;
/// The latency assumed of a target with no answer yet.
const FIRST_RTT: Duration = Duration::from_millis(10);

/// Whether a target takes calls, as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TargetState {
    /// It takes calls.
    Up,
    /// Passive ejection keeps it out until its time is up.
    Ejected,
    /// Its last health check failed.
    Unhealthy,
}

impl TargetState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TargetState::Up => "up",
            TargetState::Ejected => "ejected",
            TargetState::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug)]
struct Record {
    /// Latency estimate, in nanoseconds, and when it was last updated.
    rtt_ns: f64,
    updated: Instant,
    failures: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// One address of an upstream.
#[derive(Debug)]
pub(crate) struct Target {
    /// Where calls go.
    pub(crate) addr: SocketAddr,
    /// `addr` as a URI authority (`[::1]:9101`).
    pub(crate) authority: String,
    /// The `Host` header calls carry (the name the URL gave).
    pub(crate) host_header: HeaderValue,
    /// `host_header` as a URI authority, parsed once for every call's URI.
    pub(crate) host_authority: Option<http::uri::Authority>,
    /// The host and port of the URL it came from (a name's lookup that
    /// fails keeps that name's targets).
    source: (String, u16),
    /// Where its connections go, and the name TLS verifies.
    pub(crate) dial: Arc<Dial>,
    in_flight: AtomicU32,
    healthy: AtomicBool,
    /// Attempts sent to it, and of them those that failed.
    calls: AtomicU64,
    failed: AtomicU64,
    record: Mutex<Record>,
}

impl Target {
    pub(crate) fn new(addr: SocketAddr, source: &Source) -> Target {
        Target {
            authority: addr.to_string(),
            addr,
            host_header: source.host_header.clone(),
            host_authority: http::uri::Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(
                source.host_header.as_bytes(),
            ))
            .ok(),
            source: (source.host.clone(), source.port),
            dial: Arc::new(Dial::new(addr, &source.host)),
            in_flight: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            record: Mutex::new(Record {
                rtt_ns: FIRST_RTT.as_nanos() as f64,
                updated: Instant::now(),
                failures: 0,
                ejected_until: None,
                times_ejected: 0,
            }),
        }
    }

    /// Whether it came from `source`.
    pub(crate) fn is_from(&self, source: &Source) -> bool {
        self.source.0 == source.host && self.source.1 == source.port
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it is ejected or failing its health checks now.
    pub(crate) fn state(&self, now: Instant) -> TargetState {
        if !self.healthy.load(Ordering::Relaxed) {
            return TargetState::Unhealthy;
        }
        match self.record().ejected_until {
            Some(until) if now < until => TargetState::Ejected,
            _ => TargetState::Up,
        }
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Calls in flight, calls made, calls failed.
    pub(crate) fn counts(&self) -> (u32, u64, u64) {
        (
            self.in_flight.load(Ordering::Relaxed),
            self.calls.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// The latency estimate now.
    pub(crate) fn rtt(&self, now: Instant) -> Duration {
        let record = self.record();
        Duration::from_nanos(decayed(&record, now) as u64)
    }

    /// What choosing it costs (tower's PeakEwma): the latency estimate
    /// weighted by the calls already in flight.
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as f64;
        decayed(&self.record(), now) * (in_flight + 1.0)
    }

    /// Starts an attempt to this target.
    pub(crate) fn lease(self: &Arc<Self>) -> Lease {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        Lease {
            target: self.clone(),
            started: Instant::now(),
            done: false,
        }
    }
}

/// The estimate decayed, since its last update, toward the latency assumed
/// of a new target: a target that was slow long ago is not shunned forever
/// (it would never be measured again), nor one fast long ago preferred.
fn decayed(record: &Record, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(record.updated).as_secs_f64();
    let first = FIRST_RTT.as_nanos() as f64;
    first + (record.rtt_ns - first) * (-elapsed / DECAY.as_secs_f64()).exp()
}

/// An attempt in flight to a target. [`Lease::finish`] says how it went;
/// dropped unfinished (the attempt was cancelled), it only leaves.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) target: Arc<Target>,
    started: Instant,
    done: bool,
}

/// How an attempt went, for the target's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It answered, not with a 5xx.
    Answered,
    /// A connection failure, a timeout or a 5xx: the target is unwell.
    Failed,
    /// Something that says nothing about the target (a decode problem).
    Neutral,
}

impl Lease {
    /// Records the attempt's outcome: its latency, and whether it counts
    /// toward ejecting the target under `rule`; `may_eject` says whether the
    /// upstream has room for one more ejected target.
    pub(crate) fn finish(
        mut self,
        verdict: Verdict,
        rule: Option<EjectRule>,
        may_eject: impl FnOnce() -> bool,
    ) {
        self.done = true;
        let target = &*self.target;
        target.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.started).as_nanos() as f64;
        let mut record = target.record();
        // Peak EWMA: a slower answer than expected counts in full at once, a
        // faster one is averaged in.
        let current = decayed(&record, now);
        record.rtt_ns = if rtt > current {
            rtt
        } else {
            let weight = (-now.saturating_duration_since(record.updated).as_secs_f64()
                / DECAY.as_secs_f64())
            .exp();
            current * weight + rtt * (1.0 - weight)
        };
        record.updated = now;
        match verdict {
            Verdict::Answered => record.failures = 0,
            Verdict::Neutral => {}
            Verdict::Failed => {
                target.failed.fetch_add(1, Ordering::Relaxed);
                record.failures += 1;
                let Some(rule) = rule else { return };
                let out = record.ejected_until.is_some_and(|until| now < until);
                if record.failures >= rule.failures && !out {
                    drop(record);
                    if may_eject() {
                        let mut record = target.record();
                        record.times_ejected += 1;
                        record.failures = 0;
                        let times = record.times_ejected.min(MAX_EJECTION_TIMES);
                        record.ejected_until = Some(now + rule.base * times);
                        tracing::warn!(target = %target.authority, times = record.times_ejected, "target ejected");
                    }
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.done {
            self.target.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
