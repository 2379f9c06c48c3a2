//! Retries of idempotent calls: capped attempts, exponential backoff with
//! jitter, a budget, and never past the endpoint's deadline.
//!
//! The budget is tower's [`TpsBudget`]: each call deposits, each retry
//! withdraws, so retries can never add more than a share of the live traffic
//! (a blip stays a blip instead of becoming a retry storm).

use std::{future::Future, time::Duration};

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::{BackendError, ErrorKind};

#[derive(Debug)]
pub(crate) struct RetryPolicy {
    upstream: String,
    attempts: u32,
    backoff: Duration,
    budget: TpsBudget,
}

impl RetryPolicy {
    pub(crate) fn new(
        upstream: &str,
        attempts: u32,
        backoff: Duration,
        budget: f64,
    ) -> RetryPolicy {
        RetryPolicy {
            upstream: upstream.to_owned(),
            attempts: attempts.max(1),
            backoff,
            // A 10 s window; at least one retry a second so a quiet upstream can
            // still be retried.
            budget: TpsBudget::new(Duration::from_secs(10), 1, budget as f32),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of attempts
    /// or budget, or the next try could not finish before `deadline`.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<T, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        self.budget.deposit();
        let mut tried = 1;
        loop {
            let result = attempt().await;
            let Err(error) = &result else { return result };
            if tried >= self.attempts || !retryable(error) {
                return result;
            }
            let delay = self
                .backoff
                .mul_f64(2f64.powi(tried as i32 - 1) * (0.5 + rand::random::<f64>()));
            if deadline.is_some_and(|d| Instant::now() + delay >= d) || !self.budget.withdraw() {
                return result;
            }
            metrics::counter!(crate::metrics::RETRIES, "upstream" => self.upstream.clone())
                .increment(1);
            tokio::time::sleep(delay).await;
            tried += 1;
        }
    }
}

/// Failures that another try may not repeat: the connection, the time, a 5xx.
fn retryable(error: &BackendError) -> bool {
    match error.kind {
        ErrorKind::Connect | ErrorKind::Timeout => true,
        ErrorKind::Status => error.status.is_some_and(|s| s >= 500),
        _ => false,
    }
}
