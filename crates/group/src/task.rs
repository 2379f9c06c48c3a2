//! One task's life: wait for room, start unless cancelled, run until done,
//! cancelled or timed out, catch a panic, settle the outcome by the policy.

use std::{
    any::Any,
    fmt::Display,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context as TaskCx, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep, sleep_until},
};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    Cause, Context, GroupError, TaskError, TaskName,
    context::Scope,
    shared::{PolicyKind, Shared},
    timeline::Outcome,
};

/// A queued acquisition of a slot under the group's limit, given up when the
/// group is cancelled (`None`).
pub(crate) type Acquire = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// Waits for a slot of `semaphore` unless `scope` is cancelled first. (If both
/// happen in the same poll the slot is taken; the task still finds the group
/// cancelled before it starts.)
pub(crate) fn acquire(scope: &Scope, semaphore: Arc<Semaphore>) -> Acquire {
    let acquired = scope
        .token()
        .clone()
        .run_until_cancelled_owned(semaphore.acquire_owned());
    // The semaphore is never closed: `Err` cannot happen, and would mean no slot.
    Box::pin(async move { acquired.await.and_then(Result::ok) })
}

/// How a task gets its slot under the group's limit.
pub(crate) enum Admission {
    /// The group has no limit.
    Free,
    /// A slot was taken at spawn time.
    Held(OwnedSemaphorePermit),
    /// Waiting in the semaphore's FIFO queue; already enqueued at spawn time, so
    /// tasks start in submission order whatever order the runtime polls them in.
    Queued {
        acquire: Acquire,
        /// When it was spawned, if the group records its timeline.
        spawned: Option<Instant>,
    },
}

/// What a task's join handle yields.
pub(crate) enum Finished<T, E> {
    Ok(T),
    Err(TaskError<E>),
    /// This task's failure cancelled a fail-fast group; its error was moved into
    /// the group, which reports it from its wait.
    Reported,
}

/// Keeps the group's count of live tasks. The last field of [`Task`], so it is
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
    pub(crate) f: F,
}

pin_project! {
    /// One task of a group, as spawned on the runtime: waits for its slot under
    /// the limit, starts unless the group was cancelled, polls the task's future
    /// until it completes, its scope is cancelled or its timeout expires, turns a
    /// panic into a value, and settles the outcome by the policy.
    ///
    /// Written by hand rather than as an `async fn`: the compiler's state machine
    /// kept every local of every stage side by side (328 bytes around a trivial
    /// future); this one is 112, and what only some tasks need (a permit, a
    /// timeout, a queueing time) is boxed apart.
    pub(crate) struct Task<E, F, Fut> {
        // Declared first, so dropped first: the task's own future is gone before
        // `live` lets the group's wait return.
        #[pin]
        stage: Stage<F, Fut>,
        index: usize,
        name: TaskName,
        live: Live<E>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F, Fut> {
        Admitting {
            f: Option<F>,
            admission: Admission,
            timeout: Option<Duration>,
        },
        Running {
            #[pin]
            fut: Fut,
            started: Option<Instant>,
            // Only for tasks still pending after their first poll.
            cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
            extras: Option<Box<Extras>>,
        },
        Done,
    }
}

/// A task's own timeout: the scope it cancels and its timer (`None` if the
/// deadline is too far to represent).
struct OwnTimeout {
    after: Duration,
    scope: Arc<Scope>,
    timer: Option<Pin<Box<Timer>>>,
}

/// What only some running tasks need. Taken out of the stage when the task
/// stops; its permit is released once the outcome is settled.
struct Extras {
    permit: Option<OwnedSemaphorePermit>,
    timeout: Option<OwnTimeout>,
    /// When a queued task was spawned (only when the timeline is recorded).
    spawned: Option<Instant>,
}

impl<E, F, Fut> Task<E, F, Fut> {
    pub(crate) fn new(shared: Arc<Shared<E>>, spec: Spec<F>) -> Self {
        Task {
            stage: Stage::Admitting {
                f: Some(spec.f),
                admission: spec.admission,
                timeout: spec.timeout,
            },
            index: spec.index,
            name: spec.name,
            live: Live(shared),
        }
    }
}

impl<T, E, F, Fut> Future for Task<E, F, Fut>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    type Output = Finished<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &*this.live.0;
        let (started, extras, result) = loop {
            match this.stage.as_mut().project() {
                StageProj::Admitting {
                    f,
                    admission,
                    timeout,
                } => {
                    let (permit, spawned) = match std::mem::replace(admission, Admission::Free) {
                        Admission::Free => (None, None),
                        Admission::Held(permit) => (Some(permit), None),
                        Admission::Queued {
                            mut acquire,
                            spawned,
                        } => match acquire.as_mut().poll(cx) {
                            Poll::Ready(permit) => (permit, spawned),
                            Poll::Pending => {
                                *admission = Admission::Queued { acquire, spawned };
                                return Poll::Pending;
                            }
                        },
                    };
                    let Some(f) = f.take() else {
                        panic!("a group's task was polled after it had finished");
                    };
                    let timeout = *timeout;
                    // Checked after admission: a task never starts in a cancelled group.
                    if shared.scope.is_cancelled() {
                        let cause = shared.scope.cause_after_cancel();
                        this.stage.set(Stage::Done);
                        let outcome = Outcome::NotStarted(cause.clone());
                        record(shared, *this.index, this.name, spawned, None, outcome);
                        return Poll::Ready(Finished::Err(TaskError::NotStarted(cause)));
                    }
                    // The clock is read only when something needs the start: for a
                    // trivial task, a clock read costs as much as the rest.
                    let started =
                        (shared.timeline.is_some() || timeout.is_some()).then(Instant::now);
                    let timeout = timeout.zip(started).map(|(after, started)| {
                        let at = started.checked_add(after);
                        let scope = Scope::child(&shared.scope, at);
                        let cause = Cause::TaskTimedOut {
                            task: this.name.clone(),
                            after,
                        };
                        let timer = at.map(|at| {
                            Box::pin(Timer {
                                sleep: sleep_until(at),
                                cause: Some(cause),
                            })
                        });
                        OwnTimeout {
                            after,
                            scope,
                            timer,
                        }
                    });
                    let scope = match &timeout {
                        Some(own) => own.scope.clone(),
                        None => shared.scope.clone(),
                    };
                    let extras =
                        (permit.is_some() || timeout.is_some() || spawned.is_some()).then(|| {
                            Box::new(Extras {
                                permit,
                                timeout,
                                spawned,
                            })
                        });
                    let ctx = Context::new(scope, Some(this.name.clone()));
                    match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
                        Ok(fut) => this.stage.set(Stage::Running {
                            fut,
                            started,
                            cancelled: None,
                            extras,
                        }),
                        Err(payload) => break (started, extras, Err(Stopped::Panicked(payload))),
                    }
                }
                StageProj::Running {
                    fut,
                    started,
                    cancelled,
                    extras,
                } => {
                    let (scope, timer) = match extras.as_deref_mut() {
                        Some(Extras {
                            timeout: Some(own), ..
                        }) => (&*own.scope, own.timer.as_mut()),
                        _ => (&*shared.scope, None),
                    };
                    match poll_running(fut, scope, cancelled, timer, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => break (*started, extras.take(), result),
                    }
                }
                StageProj::Done => panic!("a group's task was polled after it had finished"),
            }
        };
        // The task's future is gone before the outcome is settled.
        this.stage.set(Stage::Done);
        let (timeout, spawned, permit) = match extras.map(|extras| *extras) {
            Some(Extras {
                permit,
                timeout,
                spawned,
            }) => (timeout.map(|own| own.after), spawned, permit),
            None => (None, None, None),
        };
        let name = this.name.clone();
        let finished = settle(shared, *this.index, name, timeout, spawned, started, result);
        // The slot is freed only now, after a failure has cancelled the group:
        // the queued task it wakes then cannot start, whichever worker polls it.
        drop(permit);
        Poll::Ready(finished)
    }
}

/// One poll of a running task. Cancellation is looked at before the task's
/// future on every poll, so a cancelled task is stopped at its next `.await`
/// even if it was woken for another reason.
fn poll_running<Fut: Future>(
    fut: Pin<&mut Fut>,
    scope: &Scope,
    cancelled: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    timer: Option<&mut Pin<Box<Timer>>>,
    cx: &mut TaskCx<'_>,
) -> Poll<Result<Fut::Output, Stopped>> {
    let stopped = match cancelled {
        Some(cancelled) => cancelled.as_mut().poll(cx).is_ready(),
        None => scope.is_cancelled(),
    };
    if stopped {
        return Poll::Ready(Err(Stopped::Cancelled));
    }
    match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(Poll::Ready(output)) => return Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => {}
        Err(payload) => return Poll::Ready(Err(Stopped::Panicked(payload))),
    }
    if let Some(timer) = timer {
        let timer = timer.as_mut().project();
        if timer.sleep.poll(cx).is_ready() {
            // Cancel the task's own scope before its future is dropped, so
            // that groups nested inside it see the timeout as their cause.
            if let Some(cause) = timer.cause.take() {
                scope.cancel(cause);
            }
            return Poll::Ready(Err(Stopped::TimedOut));
        }
    }
    if cancelled.is_none() {
        // Registered only now: a task that finishes on its first poll never
        // pays for the waiter (an allocation and a reference count).
        let mut waiter = Box::pin(scope.token().clone().cancelled_owned());
        if waiter.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Stopped::Cancelled));
        }
        *cancelled = Some(waiter);
    }
    Poll::Pending
}

/// Records a task's end: in the timeline, if the group keeps one, and in the
/// group's flag of unsuccessful tasks.
fn record<E>(
    shared: &Shared<E>,
    index: usize,
    name: &TaskName,
    spawned: Option<Instant>,
    started: Option<Instant>,
    outcome: Outcome,
) {
    if outcome != Outcome::Succeeded {
        shared.any_unsuccessful.store(true, Ordering::Release);
    }
    if let Some(timeline) = &shared.timeline {
        let finished = Instant::now();
        timeline.record(index, name.clone(), spawned, started, finished, outcome);
    }
}

/// Settles a finished task by the group's policy: records it, cancels the
/// siblings if its outcome calls for it, and says what its handle yields.
fn settle<T, E: Display>(
    shared: &Shared<E>,
    index: usize,
    name: TaskName,
    timeout: Option<Duration>,
    spawned: Option<Instant>,
    started: Option<Instant>,
    result: Result<Result<T, E>, Stopped>,
) -> Finished<T, E> {
    let record = |outcome| record(shared, index, &name, spawned, started, outcome);
    let fail_fast = shared.policy == PolicyKind::FailFast;

    match result {
        Ok(Ok(value)) => {
            record(Outcome::Succeeded);
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
            record(Outcome::Failed {
                error: shown.clone(),
            });
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
            record(Outcome::Panicked {
                message: message.as_str().into(),
            });
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
            record(Outcome::TimedOut { after });
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
            record(Outcome::Cancelled(cause.clone()));
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
    /// A task's own timeout, and the cause its scope is cancelled with when it fires.
    pub(crate) struct Timer {
        #[pin]
        sleep: Sleep,
        cause: Option<Cause>,
    }
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
