//! Choosing the target of one attempt.

use std::{net::SocketAddr, sync::atomic::Ordering};

use tokio::time::Instant;

use super::{Lease, TargetState, Targets, target::Verdict};
use crate::{
    config::Balance,
    error::{BackendError, ErrorKind},
};

impl Targets {
    /// A target for the next attempt, other than those in `avoid` (the
    /// targets earlier attempts of the same call went to) whenever another
    /// one can take it. Ejected and unhealthy targets are left out; when
    /// every target is out, the call fails as `circuit_open`.
    pub(crate) fn pick(&self, avoid: &[SocketAddr]) -> Result<Lease, BackendError> {
        let now = Instant::now();
        let all = self.all();
        if all.is_empty() {
            let why = self
                .unresolved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return Err(BackendError::new(
                ErrorKind::Connect,
                why.unwrap_or_else(|| format!("upstream `{}` has no address yet", self.upstream)),
            ));
        }
        let out = || {
            BackendError::new(
                ErrorKind::CircuitOpen,
                format!(
                    "every target of upstream `{}` is out (ejected or failing its health check)",
                    self.upstream
                ),
            )
        };
        // One target, the usual case: no lists to make for each attempt.
        if let [only] = all.as_slice() {
            return match only.state(now) {
                TargetState::Up => Ok(only.lease()),
                _ => Err(out()),
            };
        }
        let up: Vec<_> = all
            .iter()
            .filter(|t| t.state(now) == TargetState::Up)
            .collect();
        let fresh: Vec<_> = up
            .iter()
            .copied()
            .filter(|t| !avoid.contains(&t.addr))
            .collect();
        let candidates = if fresh.is_empty() { up } else { fresh };
        if candidates.is_empty() {
            return Err(out());
        }
        let chosen = match (self.balance, candidates.len()) {
            (_, 1) => candidates[0],
            (Balance::RoundRobin, n) => candidates[self.next.fetch_add(1, Ordering::Relaxed) % n],
            (Balance::P2c, n) => {
                let a = rand::random_range(0..n);
                let b = (a + rand::random_range(1..n)) % n;
                let (a, b) = (candidates[a], candidates[b]);
                if b.cost(now) < a.cost(now) { b } else { a }
            }
        };
        Ok(chosen.lease())
    }

    /// Records how an attempt went on its target (ejecting it when it has
    /// failed too often, within the share that may be out).
    pub(crate) fn finish(&self, lease: Lease, verdict: Verdict) {
        let rule = self.eject;
        lease.finish(verdict, rule, || {
            let Some(rule) = rule else { return false };
            let all = self.all();
            let now = Instant::now();
            let out = all
                .iter()
                .filter(|t| t.state(now) == TargetState::Ejected)
                .count();
            let n = all.len();
            // Rounded down, but one may always be out when there are two or more.
            let allowed = ((n as f64 * rule.max_share).floor() as usize).max(usize::from(n >= 2));
            out < allowed
        });
    }
}

pub(crate) use super::target::Verdict as AttemptVerdict;
