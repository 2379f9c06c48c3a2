//! The group: spawning under a policy, a limit and a deadline, and waiting.

use std::{
    fmt::{self, Display},
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context as TaskCx, Poll, Waker},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    sync::{Notify, Semaphore},
    time::{Instant, Sleep},
};
use tracing::Instrument;

use crate::{
    AllFailed, Canceller, Cause, Context, GroupError, Handle, Handles, TaskError, TaskName,
    Timeline,
    context::Scope,
    error::TrySpawnError,
    shared::{PolicyKind, Shared},
    task::{self, Admission, Spec},
};

mod sealed {
    pub trait Sealed {}
}

/// A group's policy: what a failure or a success does to the other tasks, and
/// what the group's `join` returns. Chosen on the [`Builder`].
pub trait Policy: sealed::Sealed + Send + Sync + 'static {}

/// The first failure cancels the others; `join` returns every value or that
/// failure. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailFast;

/// Nothing is cancelled by a failure, except a [required](TaskBuilder::required)
/// task's; `join` returns each task's own outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct CollectAll;

/// The first success cancels the others and is returned; if every task fails,
/// `join` returns every error.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstSuccess;

impl sealed::Sealed for FailFast {}
impl sealed::Sealed for CollectAll {}
impl sealed::Sealed for FirstSuccess {}
impl Policy for FailFast {}
impl Policy for CollectAll {}
impl Policy for FirstSuccess {}

static NEXT_GROUP_ID: AtomicU64 = AtomicU64::new(0);

/// Configures a [`Group`]: policy, limit, deadlines, parent, panics.
///
/// ```
/// use std::time::Duration;
/// use fanout_group::Group;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let group = Group::<std::io::Error>::builder()
///     .limit(16)
///     .deadline(Duration::from_secs(2))
///     .task_timeout(Duration::from_millis(300))
///     .build();
/// # drop(group); }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<E, P = FailFast> {
    limit: Option<usize>,
    deadline: Option<Duration>,
    task_timeout: Option<Duration>,
    resume_panics: bool,
    record_timeline: bool,
    parent: Option<Arc<Scope>>,
    policy: PolicyKind,
    _marker: PhantomData<fn() -> (E, P)>,
}

impl<E, P: Policy> Builder<E, P> {
    fn with_policy<Q: Policy>(self, policy: PolicyKind) -> Builder<E, Q> {
        Builder {
            limit: self.limit,
            deadline: self.deadline,
            task_timeout: self.task_timeout,
            resume_panics: self.resume_panics,
            record_timeline: self.record_timeline,
            parent: self.parent,
            policy,
            _marker: PhantomData,
        }
    }

    /// Fail-fast (the default): the first failure cancels the other tasks.
    pub fn fail_fast(self) -> Builder<E, FailFast> {
        self.with_policy(PolicyKind::FailFast)
    }

    /// Collect-all: failures cancel nothing (except those of
    /// [required](TaskBuilder::required) tasks); every task's outcome is returned.
    pub fn collect_all(self) -> Builder<E, CollectAll> {
        self.with_policy(PolicyKind::CollectAll)
    }

    /// First-success: the first success cancels the other tasks and is returned.
    pub fn first_success(self) -> Builder<E, FirstSuccess> {
        self.with_policy(PolicyKind::FirstSuccess)
    }

    /// Runs at most `n` tasks at once. Further spawns queue in submission order
    /// ([`Group::spawn`]), are refused ([`Group::try_spawn`]) or wait for room
    /// ([`Group::spawn_when_free`]).
    ///
    /// # Panics
    ///
    /// If `n` is zero: such a group could never run a task.
    pub fn limit(mut self, n: usize) -> Self {
        assert!(n > 0, "a group's limit must be at least 1");
        self.limit = Some(n.min(Semaphore::MAX_PERMITS));
        self
    }

    /// Cancels the whole group with [`Cause::DeadlineExpired`] once `after` has
    /// passed since [`Builder::build`]. A nested group keeps the earlier of its
    /// own deadline and its parent's.
    pub fn deadline(mut self, after: Duration) -> Self {
        self.deadline = Some(after);
        self
    }

    /// Gives every task this timeout, counted from when it starts (not from when
    /// it was queued). [`TaskBuilder::timeout`] overrides it for one task.
    pub fn task_timeout(mut self, after: Duration) -> Self {
        self.task_timeout = Some(after);
        self
    }

    /// When a task panics, resume the panic in the caller of the wait (after every
    /// task has been stopped and reaped) instead of returning it as an error.
    pub fn resume_panics(mut self, resume: bool) -> Self {
        self.resume_panics = resume;
        self
    }

    /// Whether tasks record themselves in the group's [`Timeline`] (on by
    /// default). Recording reads the clock twice per task (start and end), a
    /// noticeable part of what a trivial task costs; turn it off for hot loops
    /// of tiny tasks whose timing nobody reads. Tracing spans are kept either
    /// way.
    pub fn record_timeline(mut self, record: bool) -> Self {
        self.record_timeline = record;
        self
    }

    /// Makes the group a child of `parent`: it is cancelled when `parent` is
    /// (with [`Cause::Parent`]), and its deadline is at most `parent`'s.
    pub fn parent(mut self, parent: &Context) -> Self {
        self.parent = Some(parent.scope.clone());
        self
    }

    /// Creates the group.
    pub fn build(self) -> Group<E, P> {
        // No clock read (nor timeline allocation) for a group that needs neither.
        let origin = (self.record_timeline || self.deadline.is_some()).then(Instant::now);
        let own_deadline = self
            .deadline
            .zip(origin)
            .and_then(|(after, origin)| origin.checked_add(after).map(|at| (at, after)));
        let scope = match &self.parent {
            Some(parent) => Scope::child(parent, own_deadline.map(|(at, _)| at)),
            None => Scope::root(own_deadline.map(|(at, _)| at)),
        };
        // A parent's earlier deadline reaches this group through the parent's
        // cancellation; only an own, earlier deadline needs a timer here.
        let deadline = own_deadline.filter(|(at, _)| scope.deadline() == Some(*at));
        Group {
            shared: Arc::new(Shared {
                id: NEXT_GROUP_ID.fetch_add(1, Ordering::Relaxed),
                scope,
                policy: self.policy,
                limit: self.limit.map(|n| (n, Arc::new(Semaphore::new(n)))),
                task_timeout: self.task_timeout,
                resume_panics: self.resume_panics,
                next_index: AtomicUsize::new(0),
                ended: AtomicUsize::new(0),
                all_done: Notify::new(),
                any_unsuccessful: AtomicBool::new(false),
                failure: Mutex::new(None),
                panic: Mutex::new(None),
                winner: OnceLock::new(),
                timeline: origin.filter(|_| self.record_timeline).map(Timeline::new),
                deadline,
                watched: AtomicBool::new(false),
                watchdog: OnceLock::new(),
            }),
            _policy: PhantomData,
        }
    }
}

impl<E, P> fmt::Debug for Builder<E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("policy", &self.policy)
            .field("limit", &self.limit)
            .field("deadline", &self.deadline)
            .field("task_timeout", &self.task_timeout)
            .field("resume_panics", &self.resume_panics)
            .field("record_timeline", &self.record_timeline)
            .field("nested", &self.parent.is_some())
            .finish()
    }
}

/// A structured group of tokio tasks: every task is spawned into the group,
/// and none outlives it.
///
/// `E` is the error type the tasks return; `P` is the [`Policy`]. See the
/// [crate documentation](crate) for the semantics and an example of each policy.
///
/// Dropping the group, or a future that is waiting on it, cancels every task
/// with [`Cause::GroupDropped`]: each is stopped at its next `.await` (code that
/// never awaits cannot be stopped by anyone). Waiting returns only after every
/// task has finished or been stopped and dropped.
#[must_use = "a group's tasks are cancelled when it is dropped: wait on it"]
pub struct Group<E, P = FailFast> {
    shared: Arc<Shared<E>>,
    _policy: PhantomData<fn() -> P>,
}

impl<E> Group<E, FailFast> {
    /// A fail-fast group with no limit and no deadline.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a group (fail-fast unless told otherwise).
    pub fn builder() -> Builder<E, FailFast> {
        Builder {
            limit: None,
            deadline: None,
            task_timeout: None,
            resume_panics: false,
            record_timeline: true,
            parent: None,
            policy: PolicyKind::FailFast,
            _marker: PhantomData,
        }
    }
}

impl<E> Default for Group<E, FailFast> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, P: Policy> Group<E, P>
where
    E: Display + Send + 'static,
{
    /// Spawns a task. With a limit and no room, the task is queued and starts,
    /// in submission order, when a running task ends; this call never blocks.
    ///
    /// The closure receives the task's [`Context`] and is called when the task
    /// starts; if the group is cancelled before that, it is never called and the
    /// task's outcome is [`TaskError::NotStarted`].
    pub fn spawn<T, F, Fut>(&self, name: impl Into<TaskName>, f: F) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.task(name).spawn(f)
    }

    /// Spawns a task only if the group's limit leaves room for it now; otherwise
    /// gives the closure back in the error. Without a limit it always succeeds.
    pub fn try_spawn<T, F, Fut>(
        &self,
        name: impl Into<TaskName>,
        f: F,
    ) -> Result<Handle<T, E>, TrySpawnError<F>>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.task(name).try_spawn(f)
    }

    /// Waits until the group's limit leaves room, then spawns the task: the
    /// back-pressured way to feed a group from a long or endless source.
    pub async fn spawn_when_free<T, F, Fut>(&self, name: impl Into<TaskName>, f: F) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.task(name).spawn_when_free(f).await
    }

    /// Starts describing one task, to give it options such as its own timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout_group::{Group, GroupError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let group = Group::<std::io::Error>::new();
    /// group.task("slow").timeout(Duration::from_millis(100)).spawn(|_| async {
    ///     tokio::time::sleep(Duration::from_secs(5)).await;
    ///     Ok(())
    /// });
    /// let err = group.wait().await.unwrap_err();
    /// assert!(matches!(err, GroupError::TimedOut { .. }));
    /// assert_eq!(err.to_string(), "task `slow` timed out after 100ms");
    /// # }
    /// ```
    pub fn task(&self, name: impl Into<TaskName>) -> TaskBuilder<'_, E, P> {
        TaskBuilder {
            group: self,
            name: name.into(),
            timeout: self.shared.task_timeout,
            required: false,
        }
    }

    fn launch<T, F, Fut>(
        &self,
        task: TaskBuilder<'_, E, P>,
        admission: Admission,
        f: F,
    ) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let shared = &self.shared;
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        let TaskBuilder {
            name,
            timeout,
            required,
            ..
        } = task;
        let span = tracing::info_span!("task", otel.name = %name, task.index = index);
        let spec = Spec {
            index,
            name: name.clone(),
            timeout,
            required,
            admission,
            f,
        };
        // Boxed, though unboxed it runs fewer instructions: without a small
        // allocation of its own per task, the task cells a group frees lie side
        // by side, glibc merges them and hands them back to the kernel, and the
        // next group faults them in again. Freed boxes sit in glibc's fast bins,
        // which are not merged, as `JoinSet`'s per-task entries are for it.
        let task = Box::pin(task::Task::new(shared.clone(), spec));
        // Wrapped in its span unless the span is `Span::none()` (no subscriber
        // wants it, and tracing's `log` feature is off), which entering would
        // not touch: a task nobody traces neither carries nor enters one.
        // (Kept inside the task instead, the span made the box too large for
        // those fast bins.)
        let join = if span.is_none() {
            tokio::spawn(task)
        } else {
            tokio::spawn(task.instrument(span))
        };
        Handle {
            group: shared.id,
            index,
            name,
            join,
        }
    }
}

impl<E, P: Policy> Group<E, P> {
    /// The group's own context: pass it to [`Builder::parent`] to nest a group
    /// outside of any task, or watch it from elsewhere.
    pub fn context(&self) -> Context {
        Context::new(self.shared.scope.clone(), None)
    }

    /// A handle that cancels the group from anywhere.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            scope: self.shared.scope.clone(),
        }
    }

    /// Cancels every task with [`Cause::Requested`]. Returns `false` if the group
    /// was already cancelled (the first cause stands).
    pub fn cancel(&self, reason: impl Into<Arc<str>>) -> bool {
        self.canceller().cancel(reason)
    }

    /// Whether the group has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.scope.is_cancelled()
    }

    /// Why the group was cancelled, or `None` while it is not.
    pub fn cause(&self) -> Option<Cause> {
        self.shared.scope.cause()
    }

    /// How many tasks have been spawned into the group so far, whether they are
    /// queued, running or already ended: the next task's
    /// [`Handle::index`]. (Unlike tokio's `JoinSet::len`, which counts the tasks
    /// not yet joined, this never goes down.)
    ///
    /// ```
    /// use fanout_group::Group;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let group = Group::<std::convert::Infallible>::new();
    /// assert!(group.is_empty());
    /// group.spawn("a", |_| async { Ok(()) });
    /// group.spawn("b", |_| async { Ok(()) });
    /// assert_eq!(group.spawned(), 2);
    /// group.wait().await.unwrap();
    /// # }
    /// ```
    pub fn spawned(&self) -> usize {
        self.shared.next_index.load(Ordering::Relaxed)
    }

    /// Whether no task has been spawned yet (`spawned() == 0`); a group whose
    /// tasks have all ended is not empty.
    pub fn is_empty(&self) -> bool {
        self.spawned() == 0
    }

    /// The group's per-task records, complete once the wait has returned (empty
    /// if [`Builder::record_timeline`] turned recording off).
    pub fn timeline(&self) -> Timeline {
        match &self.shared.timeline {
            Some(timeline) => timeline.clone(),
            None => Timeline::new(Instant::now()),
        }
    }

    /// Runs `wait`, one of the group's waits, with the group's deadline
    /// watched by this wait's own timer: while someone waits, the deadline
    /// needs no task of its own (tasks that start before any wait does spawn
    /// one, [`Shared::watch_deadline`]).
    fn watching<F: Future>(&self, wait: F) -> Watching<'_, E, F> {
        let timer = self.shared.deadline.map(|(at, after)| {
            self.shared.watched.store(true, Ordering::Release);
            (Box::pin(tokio::time::sleep_until(at)), after)
        });
        Watching {
            wait,
            timer,
            shared: &self.shared,
        }
    }

    /// Waits until every task of the group has ended and been dropped.
    async fn reap(&self) {
        loop {
            // Created before the check: the last task's `notify_one` leaves a
            // permit, so a wake-up between the check and the await is not lost.
            let notified = self.shared.all_done.notified();
            if self.shared.all_ended() {
                return;
            }
            notified.await;
        }
    }

    fn resume_panic(&self) {
        if let Some(payload) = self.shared.take_panic() {
            std::panic::resume_unwind(payload);
        }
    }
}

impl<E: Send + 'static> Group<E, FailFast> {
    /// Waits for the tasks of `handles` and every other task of the group, then
    /// returns the values in the shape and order of `handles`, or the first
    /// failure, or the cancellation that stopped the group.
    ///
    /// A failure (error, panic, own timeout) of *any* task of the group fails it,
    /// including tasks whose handles were not passed.
    ///
    /// # Panics
    ///
    /// If a handle was spawned by another group; or, with
    /// [`Builder::resume_panics`], resumes the first task panic.
    pub async fn join<H: Handles<E>>(self, handles: H) -> Result<H::Output, GroupError<E>> {
        handles.check_group(self.shared.id);
        let values = self
            .watching(async {
                let values = handles.all_ok().await;
                self.reap().await;
                values
            })
            .await;
        self.resume_panic();
        if let Some(failure) = self.shared.take_failure() {
            return Err(failure);
        }
        match values {
            Some(values) if !self.shared.any_unsuccessful.load(Ordering::Acquire) => Ok(values),
            _ => Err(GroupError::Cancelled(
                self.shared.scope.cause_after_cancel(),
            )),
        }
    }

    /// Waits for every task; `Ok` if all succeeded, else the first failure.
    pub async fn wait(self) -> Result<(), GroupError<E>> {
        self.join(()).await
    }
}

impl<E> Group<E, CollectAll>
where
    E: Display + Send + 'static,
{
    /// Spawns a [required](TaskBuilder::required) task: its own failure cancels
    /// the group. Short for `group.task(name).required().spawn(f)`.
    pub fn spawn_required<T, F, Fut>(&self, name: impl Into<TaskName>, f: F) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        self.task(name).required().spawn(f)
    }
}

impl<E: Send + 'static> Group<E, CollectAll> {
    /// Waits for every task of the group and returns each task's outcome of
    /// `handles`, in their shape and order.
    ///
    /// # Panics
    ///
    /// If a handle was spawned by another group; or, with
    /// [`Builder::resume_panics`], resumes the first task panic.
    pub async fn join<H: Handles<E>>(self, handles: H) -> H::Outcomes {
        handles.check_group(self.shared.id);
        let outcomes = self
            .watching(async {
                let outcomes = handles.outcomes().await;
                self.reap().await;
                outcomes
            })
            .await;
        self.resume_panic();
        outcomes
    }

    /// Waits for every task of the group.
    pub async fn wait(self) {
        self.join(()).await
    }
}

impl<E: Send + 'static> Group<E, FirstSuccess> {
    /// Waits for the first success among the tasks of `handles`, which cancels
    /// the others, and for every task to end; returns that success, or every
    /// task's error in submission order.
    ///
    /// # Panics
    ///
    /// If a handle was spawned by another group; or, with
    /// [`Builder::resume_panics`], resumes the first task panic.
    pub async fn join<T: Send + 'static>(
        self,
        handles: impl IntoIterator<Item = Handle<T, E>>,
    ) -> Result<T, AllFailed<E>> {
        let handles: Vec<_> = handles.into_iter().collect();
        handles.check_group(self.shared.id);
        let (winner, other_success, failures) = self
            .watching(async {
                let outcomes = self.first_success(handles).await;
                self.reap().await;
                outcomes
            })
            .await;
        self.resume_panic();
        winner.or(other_success).ok_or(AllFailed { failures })
    }

    /// Each handle's end: the winner's value, another success, the failures.
    #[allow(clippy::type_complexity)]
    async fn first_success<T: Send + 'static>(
        &self,
        handles: Vec<Handle<T, E>>,
    ) -> (Option<T>, Option<T>, Vec<(TaskName, TaskError<E>)>) {
        let mut winner = None;
        let mut other_success = None;
        let mut failures = Vec::new();
        for handle in handles {
            let (name, index) = (handle.name.clone(), handle.index);
            match handle.finish().await {
                Some(Ok(value)) if self.shared.winner.get() == Some(&index) => winner = Some(value),
                // Lost the race by a hair; used only if the winner's handle is absent.
                Some(Ok(value)) => {
                    other_success.get_or_insert(value);
                }
                Some(Err(err)) => failures.push((name, err)),
                // Only fail-fast groups take a task's error.
                None => failures.push((name, TaskError::Cancelled(Cause::GroupFinished))),
            }
        }
        (winner, other_success, failures)
    }
}

impl<E, P> Drop for Group<E, P> {
    fn drop(&mut self) {
        let finished = self.shared.all_ended();
        // With every task gone and no context, canceller, child group or
        // watchdog holding the scope, nobody can observe the cancellation: skip
        // it (it takes the token tree's lock, a large part of a small group's
        // fixed cost). Nothing can clone the scope meanwhile: only this group
        // or an existing holder could.
        if finished && Arc::strong_count(&self.shared.scope) == 1 {
            return;
        }
        let cause = match finished {
            true => Cause::GroupFinished,
            false => Cause::GroupDropped,
        };
        self.shared.scope.cancel(cause);
        if let Some(watchdog) = self.shared.watchdog.get() {
            watchdog.abort();
        }
    }
}

impl<E, P> fmt::Debug for Group<E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("policy", &self.shared.policy)
            .field("spawned", &self.shared.next_index.load(Ordering::Relaxed))
            .field(
                "live",
                &(self.shared.next_index.load(Ordering::Relaxed))
                    .saturating_sub(self.shared.ended.load(Ordering::Relaxed)),
            )
            .field("limit", &self.shared.limit.as_ref().map(|(n, _)| n))
            .field("cause", &self.shared.scope.cause())
            .finish()
    }
}

pin_project! {
    /// A wait on the group that cancels it when its deadline passes, from
    /// [`Group::watching`].
    ///
    /// Written by hand rather than as an `async fn`: the compiler's state
    /// machine kept `wait` twice (as the argument and as the pinned local) and
    /// the timer inline, nearly doubling every join's future for groups that
    /// have no deadline at all. The timer is boxed, so only groups with a
    /// deadline pay for it.
    struct Watching<'g, E, F> {
        #[pin]
        wait: F,
        // The deadline's timer and budget; `None` once fired, or without a deadline.
        timer: Option<(Pin<Box<Sleep>>, Duration)>,
        shared: &'g Shared<E>,
    }
}

impl<E, F: Future> Future for Watching<'_, E, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some((sleep, after)) = this.timer {
            if sleep.as_mut().poll(cx).is_ready() {
                let after = *after;
                *this.timer = None;
                // A no-op if something cancelled the group meanwhile.
                this.shared.scope.cancel(Cause::DeadlineExpired { after });
            }
        }
        this.wait.poll(cx)
    }
}

/// One task being described before it is spawned; from [`Group::task`].
#[must_use = "a task builder does nothing until one of its spawn methods is called"]
pub struct TaskBuilder<'g, E, P> {
    group: &'g Group<E, P>,
    name: TaskName,
    timeout: Option<Duration>,
    required: bool,
}

impl<E, P: Policy> TaskBuilder<'_, E, P>
where
    E: Display + Send + 'static,
{
    /// Stops the task with [`TaskError::TimedOut`] if it runs longer than
    /// `after` (counted from its start). Under fail-fast, or for a
    /// [required](TaskBuilder::required) task, this also cancels the group with
    /// [`Cause::TaskTimedOut`].
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Like [`Group::spawn`].
    pub fn spawn<T, F, Fut>(self, f: F) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = match &self.group.shared.limit {
            None => Admission::Free,
            Some((_, sem)) => match sem.clone().try_acquire_owned() {
                Ok(permit) => Admission::Held(permit),
                Err(_) => {
                    // Read only for a task that waits, in a group that records
                    // its timeline (see `Entry::spawned`).
                    let spawned = self.group.shared.timeline.is_some().then(Instant::now);
                    let scope = &self.group.shared.scope;
                    let mut acquire = task::acquire(scope, sem.clone(), spawned);
                    // Poll once to take a place in the semaphore's FIFO queue now,
                    // in submission order; the task's own polls then replace the
                    // no-op waker with its real one.
                    let mut cx = TaskCx::from_waker(Waker::noop());
                    match acquire.as_mut().poll(&mut cx) {
                        Poll::Ready((Some(permit), _)) => Admission::Held(permit),
                        // Cancelled: the task will find out before starting.
                        Poll::Ready((None, _)) => Admission::Free,
                        Poll::Pending => Admission::Queued(acquire),
                    }
                }
            },
        };
        self.group.launch(self, admission, f)
    }

    /// Like [`Group::try_spawn`].
    pub fn try_spawn<T, F, Fut>(self, f: F) -> Result<Handle<T, E>, TrySpawnError<F>>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = match &self.group.shared.limit {
            None => Admission::Free,
            Some((limit, sem)) => match sem.clone().try_acquire_owned() {
                Ok(permit) => Admission::Held(permit),
                Err(_) => {
                    return Err(TrySpawnError {
                        task: f,
                        limit: *limit,
                    });
                }
            },
        };
        Ok(self.group.launch(self, admission, f))
    }

    /// Like [`Group::spawn_when_free`]. If the group is cancelled while waiting,
    /// returns at once with a task that reports [`TaskError::NotStarted`].
    pub async fn spawn_when_free<T, F, Fut>(self, f: F) -> Handle<T, E>
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        let admission = match &self.group.shared.limit {
            None => Admission::Free,
            Some((_, sem)) => {
                let token = self.group.shared.scope.token();
                match token.run_until_cancelled(sem.clone().acquire_owned()).await {
                    Some(Ok(permit)) => Admission::Held(permit),
                    // Cancelled: the task will find out before starting.
                    Some(Err(_)) | None => Admission::Free,
                }
            }
        };
        self.group.launch(self, admission, f)
    }
}

impl<E> TaskBuilder<'_, E, CollectAll>
where
    E: Display + Send + 'static,
{
    /// Makes the task required: its own failure (an error, a panic, its own
    /// timeout) cancels the whole collect-all group, as any failure does under
    /// fail-fast, with [`Cause::TaskFailed`], [`Cause::TaskPanicked`] or
    /// [`Cause::TaskTimedOut`]. The first cause stands.
    ///
    /// `join` still returns every task's own outcome at its place: the required
    /// task's failure ([`TaskError::Failed`] and the like), and
    /// [`TaskError::Cancelled`] or [`TaskError::NotStarted`] with that cause for
    /// the tasks it stopped. A required task that is itself stopped (by the
    /// deadline, by another required task's failure) has not failed and cancels
    /// nothing. The tasks that are not required cancel nothing either.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout_group::{Cause, Group, TaskError};
    /// use tokio::time::sleep;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let group = Group::<String>::builder().collect_all().build();
    /// let ctx = group.context();
    /// let avatar = group.spawn("avatar", |_| async { Err::<(), _>("404".to_string()) });
    /// let profile = group.task("profile").required().spawn(|_| async {
    ///     sleep(Duration::from_millis(50)).await;
    ///     Err::<(), _>("503".to_string())
    /// });
    /// let orders = group.spawn("orders", |_| async {
    ///     sleep(Duration::from_secs(2)).await;
    ///     Ok(3)
    /// });
    ///
    /// let (avatar, profile, orders) = group.join((avatar, profile, orders)).await;
    /// assert!(matches!(avatar, Err(TaskError::Failed(e)) if e == "404")); // cancelled nothing
    /// assert!(matches!(profile, Err(TaskError::Failed(e)) if e == "503"));
    /// let cause = Cause::TaskFailed { task: "profile".into(), error: "503".into() };
    /// assert!(matches!(orders, Err(TaskError::Cancelled(c)) if c == cause));
    /// assert_eq!(ctx.cause(), Some(cause)); // still readable after the join
    /// # }
    /// ```
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

impl<E, P> fmt::Debug for TaskBuilder<'_, E, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("required", &self.required)
            .finish()
    }
}
