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
    Cause, Context, GroupError, Outcome, TaskError, TaskName,
    context::Scope,
    error::panic_message,
    shared::{PolicyKind, Shared},
    timeline::Times,
};

/// A queued task's wait for its slot under the group's limit: yields the slot
/// (`None` if the group was cancelled first) and when the task was queued.
pub(crate) type Acquire =
    Pin<Box<dyn Future<Output = (Option<OwnedSemaphorePermit>, Option<Instant>)> + Send>>;

/// Waits for a slot of `semaphore` unless `scope` is cancelled first. (If both
/// happen in the same poll the slot is taken; the task still finds the group
/// cancelled before it starts.) `spawned` is carried along in the box, which
/// only queued tasks pay for.
pub(crate) fn acquire(
    scope: &Scope,
    semaphore: Arc<Semaphore>,
    spawned: Option<Instant>,
) -> Acquire {
    let acquired = scope
        .token()
        .clone()
        .run_until_cancelled_owned(semaphore.acquire_owned());
    // The semaphore is never closed: `Err` cannot happen, and would mean no slot.
    Box::pin(async move { (acquired.await.and_then(Result::ok), spawned) })
}

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

/// What a task's join handle yields: the task's outcome, or `None` when its
/// failure cancelled a fail-fast group, which took the error (errors need not
/// be `Clone`) to report it from its wait, whether or not this handle is joined.
pub(crate) type Finished<T, E> = Option<Result<T, TaskError<E>>>;

/// Counts the task's end in its group. The last field of [`Task`], so it is
/// dropped last: after the task's future, also when the runtime drops the task.
struct Live<E>(Arc<Shared<E>>);

impl<E> Drop for Live<E> {
    fn drop(&mut self) {
        let ended = self.0.ended.fetch_add(1, Ordering::AcqRel) + 1;
        // The last task to end sees every spawn: each task's spawn counted it
        // in `next_index` before it ran, and this increment reads every
        // earlier end's. A task that ends before a later spawn may notify too
        // early; the wait checks again.
        if ended == self.0.next_index.load(Ordering::Acquire) {
            self.0.all_done.notify_one();
        }
    }
}

pub(crate) struct Spec<F> {
    pub(crate) index: usize,
    pub(crate) name: TaskName,
    pub(crate) timeout: Option<Duration>,
    /// Whether its own failure cancels a collect-all group.
    pub(crate) required: bool,
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
    /// kept every local of every stage side by side; this one holds only the
    /// current stage's, and what only some tasks need (a permit, a timeout, a
    /// queueing time) is boxed apart. Its size matters: it is allocated for
    /// every task, and the allocator reuses small blocks at once instead of
    /// handing the memory back to the kernel and faulting it in again.
    pub(crate) struct Task<E, F, Fut> {
        // Declared first, so dropped first: the task's own future is gone before
        // `live` lets the group's wait return.
        #[pin]
        stage: Stage<F, Fut>,
        index: usize,
        name: TaskName,
        // Whether its own failure cancels a collect-all group.
        required: bool,
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
            required: spec.required,
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
        let mut ended = loop {
            match this.stage.as_mut().project() {
                StageProj::Admitting {
                    f,
                    admission,
                    timeout,
                } => {
                    let (permit, spawned) = match std::mem::replace(admission, Admission::Free) {
                        Admission::Free => (None, None),
                        Admission::Held(permit) => (Some(permit), None),
                        Admission::Queued(mut acquire) => match acquire.as_mut().poll(cx) {
                            Poll::Ready(queued) => queued,
                            Poll::Pending => {
                                *admission = Admission::Queued(acquire);
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
                        break Ended {
                            result: Err(TaskError::NotStarted(cause)),
                            spawned,
                            started: None,
                            permit,
                        };
                    }
                    shared.watch_deadline();
                    // The clock is read only when something needs the start: for a
                    // trivial task, a clock read is a large part of its whole cost.
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
                        Err(payload) => {
                            break Ended::new(Err(panicked(shared, payload)), started, extras);
                        }
                    }
                }
                StageProj::Running {
                    fut,
                    started,
                    cancelled,
                    extras,
                } => {
                    let own = extras.as_deref_mut().and_then(|e| e.timeout.as_mut());
                    match poll_running(fut, shared, own, cancelled, cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(result) => break Ended::new(result, *started, extras.take()),
                    }
                }
                StageProj::Done => panic!("a group's task was polled after it had finished"),
            }
        };
        // The task's future is gone before the outcome is settled.
        this.stage.set(Stage::Done);
        let permit = ended.permit.take();
        let finished = settle(shared, *this.index, this.name, *this.required, ended);
        // The slot is freed only now, after a failure has cancelled the group:
        // the queued task it wakes then cannot start, whichever worker polls it.
        drop(permit);
        Poll::Ready(finished)
    }
}

/// A task's end, with what settling it needs.
struct Ended<T, E> {
    result: Result<T, TaskError<E>>,
    spawned: Option<Instant>,
    started: Option<Instant>,
    /// Held until the outcome is settled.
    permit: Option<OwnedSemaphorePermit>,
}

impl<T, E> Ended<T, E> {
    /// The end of a task that started; its extras are taken apart (its own
    /// timeout's scope and timer are dropped here).
    fn new(
        result: Result<T, TaskError<E>>,
        started: Option<Instant>,
        extras: Option<Box<Extras>>,
    ) -> Self {
        let (permit, spawned) = match extras.map(|extras| *extras) {
            Some(Extras {
                permit, spawned, ..
            }) => (permit, spawned),
            None => (None, None),
        };
        Ended {
            result,
            spawned,
            started,
            permit,
        }
    }
}

/// One poll of a running task. Cancellation is looked at before the task's
/// future on every poll, so a cancelled task is stopped at its next `.await`
/// even if it was woken for another reason.
fn poll_running<T, E, Fut: Future<Output = Result<T, E>>>(
    fut: Pin<&mut Fut>,
    shared: &Shared<E>,
    own: Option<&mut OwnTimeout>,
    cancelled: &mut Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    cx: &mut TaskCx<'_>,
) -> Poll<Result<T, TaskError<E>>> {
    let (scope, timer) = match own {
        Some(OwnTimeout {
            after,
            scope,
            timer,
        }) => (&**scope, timer.as_mut().map(|timer| (*after, timer))),
        None => (&*shared.scope, None),
    };
    let stopped = match cancelled {
        Some(cancelled) => cancelled.as_mut().poll(cx).is_ready(),
        None => scope.is_cancelled(),
    };
    if stopped {
        return Poll::Ready(Err(stopped_by(shared)));
    }
    match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(Poll::Ready(output)) => return Poll::Ready(output.map_err(TaskError::Failed)),
        Ok(Poll::Pending) => {}
        Err(payload) => return Poll::Ready(Err(panicked(shared, payload))),
    }
    if let Some((after, timer)) = timer {
        let timer = timer.as_mut().project();
        if timer.sleep.poll(cx).is_ready() {
            // Cancel the task's own scope before its future is dropped, so
            // that groups nested inside it see the timeout as their cause.
            if let Some(cause) = timer.cause.take() {
                scope.cancel(cause);
            }
            return Poll::Ready(Err(TaskError::TimedOut { after }));
        }
    }
    if cancelled.is_none() {
        // Registered only now: a task that finishes on its first poll never
        // pays for the waiter (an allocation and a reference count).
        let mut waiter = Box::pin(scope.token().clone().cancelled_owned());
        if waiter.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(stopped_by(shared)));
        }
        *cancelled = Some(waiter);
    }
    Poll::Pending
}

/// The end of a task stopped by its group's cancellation: with the group's
/// cause, not the task scope's (which would wrap it in `Parent`).
fn stopped_by<E>(shared: &Shared<E>) -> TaskError<E> {
    TaskError::Cancelled(shared.scope.cause_after_cancel())
}

/// The end of a task that panicked. The payload is kept for the wait if the
/// group resumes panics.
fn panicked<E>(shared: &Shared<E>, payload: Box<dyn Any + Send>) -> TaskError<E> {
    let message = panic_message(payload.as_ref());
    if shared.resume_panics {
        shared.set_panic(payload);
    }
    TaskError::Panicked { message }
}

/// Settles a task's end by the group's policy: records it, cancels the group
/// if this end is a failure that the policy lets cancel it, and says what the
/// task's handle yields.
fn settle<T, E: Display>(
    shared: &Shared<E>,
    index: usize,
    name: &TaskName,
    required: bool,
    ended: Ended<T, E>,
) -> Finished<T, E> {
    let Ended {
        result,
        spawned,
        started,
        permit: _, // taken by the caller, which frees it after this
    } = ended;
    let record = |outcome: Outcome| {
        if let Some(timeline) = &shared.timeline {
            let tasks = || shared.next_index.load(Ordering::Relaxed);
            let times = Times {
                spawned,
                started,
                finished: Instant::now(),
            };
            timeline.record(tasks, index, name.clone(), times, outcome);
        }
    };
    let error = match result {
        Ok(value) => {
            record(Ok(()));
            if shared.policy == PolicyKind::FirstSuccess
                && shared
                    .scope
                    .cancel(Cause::SiblingSucceeded { task: name.clone() })
            {
                let _ = shared.winner.set(index);
            }
            return Some(Ok(value));
        }
        Err(error) => error,
    };
    shared.any_unsuccessful.store(true, Ordering::Release);
    // Only the task's own failure, never its being stopped by the group,
    // cancels: under fail-fast, and under collect-all for a required task.
    let cancels = !error.is_cancelled()
        && match shared.policy {
            PolicyKind::FailFast => true,
            PolicyKind::CollectAll => required,
            PolicyKind::FirstSuccess => false,
        };
    // Displayed once, and only when the timeline or a cause will read it.
    let shown = (cancels || shared.timeline.is_some()).then(|| error.shown());
    let cause = shown
        .as_ref()
        .filter(|_| cancels)
        .and_then(|s| s.cause(name));
    if let Some(shown) = shown {
        record(Err(shown));
    }
    // The first cause stands: a later failure cancels nothing.
    let cancelled = cause.is_some_and(|cause| shared.scope.cancel(cause));
    if cancelled && shared.policy == PolicyKind::FailFast {
        // Fail-fast's wait returns this failure, so the group takes the error;
        // collect-all leaves it to the task's handle, at its place in `join`.
        shared.set_failure(GroupError::of_task(name.clone(), error));
        return None;
    }
    Some(Err(error))
}

pin_project! {
    /// A task's own timeout, and the cause its scope is cancelled with when it fires.
    pub(crate) struct Timer {
        #[pin]
        sleep: Sleep,
        cause: Option<Cause>,
    }
}
