//! What a request's run comes to: each backend's result, and the verdict
//! that decides the response's status and completeness. Computed once, here,
//! and read as it is by the response, the metrics and the dashboard.

use std::time::Duration;

use fanout_group::{Cause, TaskError, Timeline};

use crate::{
    error::{BackendError, ErrorKind},
    plan::EndpointPlan,
    resilience::CallReport,
    shape::Body,
};

/// One backend's result: its shaped body, or why there is none.
pub(crate) type BackendResult = Result<Body, BackendError>;

/// What the backends' results mean for the response (product.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every backend succeeded.
    Complete,
    /// Every required backend succeeded; at least one optional one failed.
    Partial,
    /// Required backend `n` (an index) failed, and that decided the request.
    RequiredFailed(usize),
    /// Every backend failed, and none was required.
    AllFailed,
}

impl Verdict {
    /// Whether the response is `x-fanout-complete: true`.
    pub(crate) fn is_complete(self) -> bool {
        self == Verdict::Complete
    }
}

/// A request's run: results in declaration order and the verdict on them.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) results: Vec<BackendResult>,
    pub(crate) verdict: Verdict,
    /// When each backend task ran (recorded only for the dashboard).
    pub(crate) timeline: Option<Timeline>,
    /// What the policies did for each call.
    pub(crate) reports: Box<[CallReport]>,
    /// Each backend's response headers that reach the client, if it answered
    /// with some (`return_headers`); empty when no backend returns any.
    pub(crate) headers: Vec<Option<http::HeaderMap>>,
    /// How long the run took.
    pub(crate) took: Duration,
}

/// The verdict on `results`. `cause` is why the request's group was
/// cancelled, if it was: a required backend's failure names that backend.
pub(crate) fn verdict(
    endpoint: &EndpointPlan,
    results: &[BackendResult],
    cause: Option<&Cause>,
) -> Verdict {
    if results.iter().all(Result::is_ok) {
        return Verdict::Complete;
    }
    // The failure that decides: the required backend whose failure cancelled
    // the rest, or else (the deadline stopped them) the first required one
    // that failed.
    let named = cause.and_then(|cause| match cause.root() {
        Cause::TaskFailed { task, .. }
        | Cause::TaskPanicked { task, .. }
        | Cause::TaskTimedOut { task, .. } => endpoint
            .backends
            .iter()
            .position(|b| b.name == task.as_str()),
        _ => None,
    });
    let decisive = named.or_else(|| {
        endpoint.backends.iter().zip(results).position(|(b, r)| {
            b.required && r.as_ref().is_err_and(|e| e.kind != ErrorKind::Cancelled)
        })
    });
    if let Some(index) = decisive.filter(|&i| endpoint.backends[i].required) {
        return Verdict::RequiredFailed(index);
    }
    if results.iter().all(Result::is_err) {
        Verdict::AllFailed
    } else {
        Verdict::Partial
    }
}

impl Outcome {
    /// Backend `index` failed after the run, while its answer was merged
    /// (`append` met a value that is not an array): its result becomes the
    /// failure, and the verdict follows, as if it had failed during the run.
    pub(crate) fn failed_in_merge(
        &mut self,
        endpoint: &EndpointPlan,
        index: usize,
        error: BackendError,
    ) {
        self.results[index] = Err(error);
        if !matches!(self.verdict, Verdict::Complete | Verdict::Partial) {
            return;
        }
        self.verdict = if endpoint.backends[index].required {
            Verdict::RequiredFailed(index)
        } else if self.results.iter().all(Result::is_err) {
            Verdict::AllFailed
        } else {
            Verdict::Partial
        };
    }
}

/// What a task that did not return its own result means for its backend.
pub(crate) fn task_error(error: TaskError<BackendError>, deadline: Duration) -> BackendError {
    match error {
        TaskError::Failed(e) => e,
        TaskError::Cancelled(cause) | TaskError::NotStarted(cause) => match cause.root() {
            Cause::DeadlineExpired { .. } => BackendError::new(
                ErrorKind::Timeout,
                format!("the endpoint's deadline of {deadline:?} expired first"),
            ),
            Cause::TaskFailed { task, .. }
            | Cause::TaskPanicked { task, .. }
            | Cause::TaskTimedOut { task, .. } => BackendError::new(
                ErrorKind::Cancelled,
                format!("required backend `{task}` failed"),
            ),
            Cause::Requested { reason } => {
                BackendError::new(ErrorKind::Cancelled, reason.to_string())
            }
            other => BackendError::new(ErrorKind::Cancelled, other.to_string()),
        },
        TaskError::TimedOut { after } => {
            BackendError::new(ErrorKind::Timeout, format!("no answer within {after:?}"))
        }
        TaskError::Panicked { message } => BackendError::new(ErrorKind::Internal, message),
        other => BackendError::new(ErrorKind::Internal, other.to_string()),
    }
}
