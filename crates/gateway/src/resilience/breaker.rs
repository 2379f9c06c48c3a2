//! Circuit breaker: consecutive failures open it; while open, calls fail at
//! once as `circuit_open`; after the cooldown one probe decides.
//!
//! Written here: tower has no maintained breaker, and the state is three
//! values under a mutex taken twice per call.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::error::{BackendError, ErrorKind};

/// The breaker's state, as metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// A call let through; report how it went with [`Pass::record`]. Dropped
/// without a record (the call was cancelled), it frees the probe slot.
#[derive(Debug)]
pub(crate) struct Pass<'b> {
    breaker: &'b Breaker,
    recorded: bool,
}

impl Breaker {
    pub(crate) fn new(failures: u32, cooldown: Duration) -> Breaker {
        Breaker {
            failures: failures.max(1),
            cooldown,
            state: Mutex::new(State::Closed { consecutive: 0 }),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through, or fails it as `circuit_open`.
    pub(crate) fn admit(&self, upstream: &str) -> Result<Pass<'_>, BackendError> {
        let mut state = self.lock();
        let open = |until: Instant| {
            let left = until.saturating_duration_since(Instant::now());
            BackendError::new(
                ErrorKind::CircuitOpen,
                format!(
                    "the circuit to `{upstream}` is open for another {left:?} after repeated failures"
                ),
            )
        };
        match *state {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() < until => return Err(open(until)),
            State::Open { .. } => *state = State::HalfOpen { probing: true },
            State::HalfOpen { probing: false } => *state = State::HalfOpen { probing: true },
            State::HalfOpen { probing: true } => {
                return Err(BackendError::new(
                    ErrorKind::CircuitOpen,
                    format!("the circuit to `{upstream}` is half-open and a probe is under way"),
                ));
            }
        }
        Ok(Pass {
            breaker: self,
            recorded: false,
        })
    }
}

impl Pass<'_> {
    /// Records the call's outcome: only failures that say the upstream is
    /// unwell count (a 4xx is the caller's problem).
    pub(crate) fn record<T>(mut self, result: &Result<T, BackendError>) {
        self.recorded = true;
        let failed = match result {
            Ok(_) => false,
            Err(e) => match e.kind {
                ErrorKind::Status => e.status.is_none_or(|s| s >= 500),
                ErrorKind::Cancelled
                | ErrorKind::Dependency
                | ErrorKind::Overloaded
                | ErrorKind::CircuitOpen => {
                    return self.release();
                }
                _ => true,
            },
        };
        let breaker = self.breaker;
        let mut state = breaker.lock();
        *state = match (&*state, failed) {
            (_, false) => State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, true) if consecutive + 1 < breaker.failures => {
                State::Closed {
                    consecutive: consecutive + 1,
                }
            }
            (_, true) => State::Open {
                until: Instant::now() + breaker.cooldown,
            },
        };
    }

    fn release(&self) {
        let mut state = self.breaker.lock();
        if let State::HalfOpen { probing: true } = *state {
            *state = State::HalfOpen { probing: false };
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.release();
        }
    }
}
