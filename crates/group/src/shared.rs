//! What a group shares with its tasks: the state both sides read and write.
//!
//! `group.rs` builds it and waits on it; `task.rs` settles each task's outcome
//! into it. Neither imports the other: both depend on this module only.

use std::{
    any::Any,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, Semaphore},
    task::AbortHandle,
    time::Instant,
};

use crate::{Cause, GroupError, Timeline, context::Scope};

/// The group's policy, as its tasks see it (the [`Policy`](crate::Policy) type
/// parameter, erased).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyKind {
    FailFast,
    CollectAll,
    FirstSuccess,
}

/// What the group's tasks share with it.
pub(crate) struct Shared<E> {
    /// Tells this group's handles from another's.
    pub(crate) id: u64,
    pub(crate) scope: Arc<Scope>,
    pub(crate) policy: PolicyKind,
    /// The limit and the semaphore that enforces it.
    pub(crate) limit: Option<(usize, Arc<Semaphore>)>,
    /// The timeout every task gets unless it is given its own.
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) resume_panics: bool,
    /// How many tasks have been spawned: the next task's index.
    pub(crate) next_index: AtomicUsize,
    /// How many tasks have ended and been dropped. The group's tasks are all
    /// gone when it equals `next_index`: counting the ends rather than the live
    /// tasks spares every spawn a second atomic write.
    pub(crate) ended: AtomicUsize,
    /// Notified when a task ends and finds `ended` equal to `next_index`.
    pub(crate) all_done: Notify,
    /// Whether any task ended without succeeding (a fail-fast group then fails
    /// even if that task's handle was not passed to `join`).
    pub(crate) any_unsuccessful: AtomicBool,
    /// The failure that cancelled a fail-fast group.
    pub(crate) failure: Mutex<Option<GroupError<E>>>,
    /// The first panic, kept only when panics are resumed at the wait.
    pub(crate) panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// The first success of a first-success group.
    pub(crate) winner: OnceLock<usize>,
    /// `None` when the group does not record its timeline.
    pub(crate) timeline: Option<Timeline>,
    /// The group's own deadline (instant, budget), when it is earlier than
    /// any parent's.
    pub(crate) deadline: Option<(Instant, Duration)>,
    /// Whether a wait on the group watches the deadline with its own timer.
    /// Until one does, the first task to start spawns the watchdog.
    pub(crate) watched: AtomicBool,
    /// The deadline's task, when a task started with nobody waiting.
    pub(crate) watchdog: OnceLock<AbortHandle>,
}

impl<E> Shared<E> {
    /// Whether every task spawned so far has ended and been dropped.
    pub(crate) fn all_ended(&self) -> bool {
        // `ended` first: a task counted there was counted in `next_index`
        // before it was spawned, so this never sees more ends than spawns.
        self.ended.load(Ordering::Acquire) == self.next_index.load(Ordering::Acquire)
    }

    /// Starts the deadline's watchdog task, unless a wait watches it or the
    /// watchdog runs already: a task is starting, and the deadline must stop
    /// it even if nobody waits on the group yet.
    pub(crate) fn watch_deadline(&self) {
        let Some((at, after)) = self.deadline else {
            return;
        };
        if self.watched.load(Ordering::Acquire) {
            return;
        }
        self.watchdog.get_or_init(|| {
            let scope = self.scope.clone();
            tokio::spawn(async move {
                let expiry = tokio::time::sleep_until(at);
                if scope.token().run_until_cancelled(expiry).await.is_some() {
                    // A no-op if something cancelled the group meanwhile.
                    scope.cancel(Cause::DeadlineExpired { after });
                }
            })
            .abort_handle()
        });
    }

    pub(crate) fn set_failure(&self, failure: GroupError<E>) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(failure);
    }

    pub(crate) fn take_failure(&self) -> Option<GroupError<E>> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn set_panic(&self, payload: Box<dyn Any + Send>) {
        let mut slot = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(payload);
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        self.panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
