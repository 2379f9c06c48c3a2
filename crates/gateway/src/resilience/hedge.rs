//! Hedged calls: when an attempt has not answered after a delay (fixed, or a
//! percentile of recent latencies), send one more; the first answer wins and
//! the other is dropped (its connection closes). Extra calls are capped at a
//! share of the traffic.
//!
//! Written here: tower's `hedge` needs a `Service` and a `Policy` that clone
//! requests; the calls here are closures, and the race is a few lines.

use std::{
    collections::VecDeque,
    future::Future,
    pin::pin,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::error::BackendError;

/// Latencies kept to learn a percentile from.
const WINDOW: usize = 512;
/// Fewer samples than this and a percentile means nothing yet: no hedging.
const MIN_SAMPLES: usize = 20;

#[derive(Debug)]
enum Delay {
    Fixed(Duration),
    Percentile {
        p: f64,
        samples: Mutex<VecDeque<Duration>>,
    },
}

#[derive(Debug)]
pub(crate) struct HedgePolicy {
    delay: Delay,
    max_extra: f64,
    calls: AtomicU64,
    extra: AtomicU64,
}

impl HedgePolicy {
    pub(crate) fn fixed(delay: Duration, max_extra: f64) -> HedgePolicy {
        HedgePolicy::with(Delay::Fixed(delay), max_extra)
    }

    pub(crate) fn percentile(p: f64, max_extra: f64) -> HedgePolicy {
        HedgePolicy::with(
            Delay::Percentile {
                p,
                samples: Mutex::new(VecDeque::with_capacity(WINDOW)),
            },
            max_extra,
        )
    }

    fn with(delay: Delay, max_extra: f64) -> HedgePolicy {
        HedgePolicy {
            delay,
            max_extra,
            calls: AtomicU64::new(0),
            extra: AtomicU64::new(0),
        }
    }

    /// How many extra attempts were sent, of how many calls.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.extra.load(Ordering::Relaxed),
            self.calls.load(Ordering::Relaxed),
        )
    }

    fn current_delay(&self) -> Option<Duration> {
        match &self.delay {
            Delay::Fixed(d) => Some(*d),
            Delay::Percentile { p, samples } => {
                let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                if samples.len() < MIN_SAMPLES {
                    return None;
                }
                let mut sorted: Vec<Duration> = samples.iter().copied().collect();
                sorted.sort_unstable();
                let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
                sorted.get(rank).copied()
            }
        }
    }

    fn learn(&self, latency: Duration) {
        if let Delay::Percentile { samples, .. } = &self.delay {
            let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
            if samples.len() == WINDOW {
                samples.pop_front();
            }
            samples.push_back(latency);
        }
    }

    pub(crate) async fn run<T, F, Fut>(
        &self,
        hedged: &AtomicBool,
        attempt: F,
    ) -> Result<T, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let start = Instant::now();
        let mut first = pin!(attempt());
        let delay = self.current_delay().filter(|_| {
            (self.extra.load(Ordering::Relaxed) as f64) < self.max_extra * calls as f64
        });
        let Some(delay) = delay else {
            let result = first.await;
            if result.is_ok() {
                self.learn(start.elapsed());
            }
            return result;
        };
        tokio::select! {
            result = &mut first => {
                if result.is_ok() {
                    self.learn(start.elapsed());
                }
                return result;
            }
            () = tokio::time::sleep(delay) => {}
        }
        self.extra.fetch_add(1, Ordering::Relaxed);
        hedged.store(true, Ordering::Relaxed);
        let mut second = pin!(attempt());
        // The first answer wins; a failure waits for the other attempt.
        let result = tokio::select! {
            result = &mut first => if result.is_ok() { result } else { second.await },
            result = &mut second => if result.is_ok() { result } else { first.await },
        };
        if result.is_ok() {
            self.learn(start.elapsed());
        }
        result
    }
}
