//! One task's life: wait for room, start unless cancelled, run until done,
//! cancelled or timed out, catch a panic, settle the outcome by the policy.

use std::{
    any::Any,
    fmt::Display,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::{Pin, pin},
    sync::{Arc, atomic::Ordering},
    task::{Context as TaskCx, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    sync::{AcquireError, OwnedSemaphorePermit},
    time::{Instant, Sleep, sleep_until},
};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    Cause, Context, GroupError, TaskError, TaskName,
    context::Scope,
    group::{PolicyKind, Shared},
    timeline::{Entry, Outcome},
};

/// A queued acquisition of a slot under the group's limit.
pub(crate) type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// How a task gets its slot under the group's limit.
pub(crate) enum Admission {
    /// The group has no limit.
    Free,
    /// A slot was taken at spawn time.
    Held(OwnedSemaphorePermit),
    /// Waiting in the semaphore's FIFO queue; already enqueued at spawn time, so
    /// tasks start in submission order whatever order the runtime polls them in.
    Queued(Acquire),
}

/// What a task's join handle yields.
pub(crate) enum Finished<T, E> {
    Ok(T),
    Err(TaskError<E>),
    /// This task's failure cancelled a fail-fast group; its error was moved into
    /// the group, which reports it from its wait.
    Reported,
}

/// Keeps the group's count of live tasks. Created first in [`run`], so it is
/// dropped last: after the task's future, also when the runtime drops the task.
struct Live<E>(Arc<Shared<E>>);

impl<E> Drop for Live<E> {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_done.notify_one();
        }
    }
}

pub(crate) struct Spec<F> {
    pub(crate) index: usize,
    pub(crate) name: TaskName,
    pub(crate) timeout: Option<Duration>,
    pub(crate) admission: Admission,
    pub(crate) spawned: Instant,
    pub(crate) f: F,
}

pub(crate) async fn run<T, E, F, Fut>(shared: Arc<Shared<E>>, spec: Spec<F>) -> Finished<T, E>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let live = Live(shared);
    let shared = &live.0;
    let Spec {
        index,
        name,
        timeout,
        admission,
        spawned,
        f,
    } = spec;
    let record = |started, outcome| {
        if outcome != Outcome::Succeeded {
            shared.any_unsuccessful.store(true, Ordering::Release);
        }
        shared.timeline.record(Entry {
            index,
            name: name.clone(),
            spawned,
            started,
            finished: Instant::now(),
            outcome,
        })
    };

    let permit = match admission {
        Admission::Free => None,
        Admission::Held(permit) => Some(permit),
        Admission::Queued(acquire) => {
            match first_of(shared.scope.token().cancelled(), acquire).await {
                Either::Left(()) | Either::Right(Err(_)) => None,
                Either::Right(Ok(permit)) => Some(permit),
            }
        }
    };
    // Checked after admission: a task never starts in a cancelled group.
    if shared.scope.is_cancelled() {
        let cause = shared.scope.cause_after_cancel();
        record(None, Outcome::NotStarted(cause.clone()));
        return Finished::Err(TaskError::NotStarted(cause));
    }

    let started = Instant::now();
    let (scope, timer) = match timeout {
        None => (shared.scope.clone(), None),
        Some(after) => {
            let at = started.checked_add(after);
            let scope = Scope::child(&shared.scope, at);
            let cause = Cause::TaskTimedOut {
                task: name.clone(),
                after,
            };
            (scope, at.map(|at| (sleep_until(at), cause)))
        }
    };
    let ctx = Context::new(scope.clone(), Some(name.clone()));
    let result = match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(fut) => Guarded::new(fut, scope, timer).await,
        Err(payload) => Err(Stopped::Panicked(payload)),
    };
    // The slot is free as soon as the task's future is gone.
    drop(permit);
    let started = Some(started);
    let fail_fast = shared.policy == PolicyKind::FailFast;

    match result {
        Ok(Ok(value)) => {
            record(started, Outcome::Succeeded);
            if shared.policy == PolicyKind::FirstSuccess
                && shared
                    .scope
                    .cancel(Cause::SiblingSucceeded { task: name.clone() })
            {
                let _ = shared.winner.set(index);
            }
            Finished::Ok(value)
        }
        Ok(Err(error)) => {
            let shown: Arc<str> = error.to_string().into();
            record(
                started,
                Outcome::Failed {
                    error: shown.clone(),
                },
            );
            let cause = Cause::TaskFailed {
                task: name.clone(),
                error: shown,
            };
            if fail_fast && shared.scope.cancel(cause) {
                shared.set_failure(GroupError::Failed { task: name, error });
                return Finished::Reported;
            }
            Finished::Err(TaskError::Failed(error))
        }
        Err(Stopped::Panicked(payload)) => {
            let message = panic_message(payload.as_ref());
            record(
                started,
                Outcome::Panicked {
                    message: message.as_str().into(),
                },
            );
            if shared.resume_panics {
                shared.set_panic(payload);
            }
            let cause = Cause::TaskPanicked {
                task: name.clone(),
                message: message.as_str().into(),
            };
            if fail_fast && shared.scope.cancel(cause) {
                shared.set_failure(GroupError::Panicked {
                    task: name,
                    message,
                });
                return Finished::Reported;
            }
            Finished::Err(TaskError::Panicked { message })
        }
        Err(Stopped::TimedOut) => {
            let after = timeout.unwrap_or_default();
            record(started, Outcome::TimedOut { after });
            let cause = Cause::TaskTimedOut {
                task: name.clone(),
                after,
            };
            if fail_fast && shared.scope.cancel(cause) {
                shared.set_failure(GroupError::TimedOut { task: name, after });
                return Finished::Reported;
            }
            Finished::Err(TaskError::TimedOut { after })
        }
        Err(Stopped::Cancelled) => {
            // The group's cause, not the task scope's (which would wrap it in `Parent`).
            let cause = shared.scope.cause_after_cancel();
            record(started, Outcome::Cancelled(cause.clone()));
            Finished::Err(TaskError::Cancelled(cause))
        }
    }
}

/// Why a task's future stopped before producing its output.
enum Stopped {
    Cancelled,
    TimedOut,
    Panicked(Box<dyn Any + Send>),
}

pin_project! {
    /// Polls a task's future until it completes, its scope is cancelled or its
    /// timeout expires, and turns a panic into a value. Cancellation is looked at
    /// before the task's future on every poll, so a cancelled task is stopped at
    /// its next `.await` even if it was woken for another reason.
    struct Guarded<F> {
        #[pin]
        fut: F,
        scope: Arc<Scope>,
        // Registered lazily: a task that completes on its first poll (the common
        // case for trivial tasks) never touches the token's waiter list.
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
        #[pin]
        sleep: Option<Sleep>,
        on_timeout: Option<Cause>,
    }
}

impl<F> Guarded<F> {
    fn new(fut: F, scope: Arc<Scope>, timer: Option<(Sleep, Cause)>) -> Self {
        let (sleep, on_timeout) = match timer {
            Some((sleep, cause)) => (Some(sleep), Some(cause)),
            None => (None, None),
        };
        Guarded {
            fut,
            scope,
            cancelled: None,
            sleep,
            on_timeout,
        }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Stopped>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.cancelled.as_mut().as_pin_mut() {
            Some(cancelled) => {
                if cancelled.poll(cx).is_ready() {
                    return Poll::Ready(Err(Stopped::Cancelled));
                }
            }
            None => {
                if this.scope.is_cancelled() {
                    return Poll::Ready(Err(Stopped::Cancelled));
                }
            }
        }
        match catch_unwind(AssertUnwindSafe(|| this.fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => return Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Err(Stopped::Panicked(payload))),
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                // Cancel the task's own scope before its future is dropped, so
                // that groups nested inside it see the timeout as their cause.
                if let Some(cause) = this.on_timeout.take() {
                    this.scope.cancel(cause);
                }
                return Poll::Ready(Err(Stopped::TimedOut));
            }
        }
        if this.cancelled.is_none() {
            this.cancelled
                .set(Some(this.scope.token().clone().cancelled_owned()));
            if let Some(cancelled) = this.cancelled.as_pin_mut() {
                if cancelled.poll(cx).is_ready() {
                    return Poll::Ready(Err(Stopped::Cancelled));
                }
            }
        }
        Poll::Pending
    }
}

pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Waits for whichever of two futures finishes first, looking at `a` first.
pub(crate) async fn first_of<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}
