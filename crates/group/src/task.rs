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
use tokio_util::sync::WaitForCancellationFuture;

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
        if !shared.record_timeline {
            return;
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
        // Boxed: only queued tasks pay for this wait's state in their future.
        Admission::Queued(acquire) => {
            match Box::pin(first_of(shared.scope.token().cancelled(), acquire)).await {
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
            let timer = at.map(|at| {
                Box::pin(Timer {
                    sleep: sleep_until(at),
                    cause: Some(cause),
                })
            });
            (scope, timer)
        }
    };
    let ctx = Context::new(scope.clone(), Some(name.clone()));
    let result = match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(fut) => Guarded::new(fut, &scope, timer).await,
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
    ///
    /// The cancellation waiter and the timer are boxed: this future lives inside
    /// every task, and its size is copied into tokio's task cell at each spawn
    /// (inline, they tripled it). Trivial tasks that finish on their first poll
    /// never allocate either; the timer exists only for tasks with a timeout.
    struct Guarded<'s, F> {
        #[pin]
        fut: F,
        // Borrowed from `run`, which owns the task's scope: no reference-count
        // traffic on the group's shared scope per task.
        scope: &'s Scope,
        cancelled: Option<Pin<Box<WaitForCancellationFuture<'s>>>>,
        timer: Option<Pin<Box<Timer>>>,
    }
}

pin_project! {
    /// A task's own timeout, and the cause its scope is cancelled with when it fires.
    pub(crate) struct Timer {
        #[pin]
        sleep: Sleep,
        cause: Option<Cause>,
    }
}

impl<'s, F> Guarded<'s, F> {
    fn new(fut: F, scope: &'s Scope, timer: Option<Pin<Box<Timer>>>) -> Self {
        Guarded {
            fut,
            scope,
            cancelled: None,
            timer,
        }
    }
}

impl<F: Future> Future for Guarded<'_, F> {
    type Output = Result<F::Output, Stopped>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let stopped = match this.cancelled {
            Some(cancelled) => cancelled.as_mut().poll(cx).is_ready(),
            None => this.scope.is_cancelled(),
        };
        if stopped {
            return Poll::Ready(Err(Stopped::Cancelled));
        }
        match catch_unwind(AssertUnwindSafe(|| this.fut.poll(cx))) {
            Ok(Poll::Ready(output)) => return Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => {}
            Err(payload) => return Poll::Ready(Err(Stopped::Panicked(payload))),
        }
        if let Some(timer) = this.timer {
            let timer = timer.as_mut().project();
            if timer.sleep.poll(cx).is_ready() {
                // Cancel the task's own scope before its future is dropped, so
                // that groups nested inside it see the timeout as their cause.
                if let Some(cause) = timer.cause.take() {
                    this.scope.cancel(cause);
                }
                return Poll::Ready(Err(Stopped::TimedOut));
            }
        }
        if this.cancelled.is_none() {
            let mut cancelled = Box::pin(this.scope.token().cancelled());
            let ready = cancelled.as_mut().poll(cx).is_ready();
            *this.cancelled = Some(cancelled);
            if ready {
                return Poll::Ready(Err(Stopped::Cancelled));
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
