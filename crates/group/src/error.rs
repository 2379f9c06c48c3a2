//! What can go wrong with a task, and with a group.

use std::{any::Any, fmt, sync::Arc, time::Duration};

use crate::{Cause, TaskName};

/// How one task ended, when it did not succeed.
///
/// A task's end is described once, as a `Result<T, TaskError<E>>`: it is what
/// a collect-all `join` returns for the task and what [`AllFailed`] lists; the
/// [`Timeline`](crate::Timeline) records the same value with the error as
/// displayed ([`Outcome`](crate::Outcome)); and a fail-fast group's
/// [`GroupError`], like the [`Cause`] its other tasks see, is made from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError<E> {
    /// The task returned this error.
    #[error("failed: {0}")]
    Failed(E),
    /// The task panicked (or its closure did, while building the future).
    #[error("panicked: {message}")]
    Panicked {
        /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
        message: String,
    },
    /// The task's own timeout expired and it was stopped.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The timeout the task was given.
        after: Duration,
    },
    /// The task was running when its group was cancelled, and was stopped.
    #[error("cancelled: {0}")]
    Cancelled(Cause),
    /// The group was cancelled before the task started (it was queued behind the
    /// limit, or spawned after the cancellation); its closure never ran.
    #[error("never started: {0}")]
    NotStarted(Cause),
}

impl<E> TaskError<E> {
    /// The task's own error, if it returned one.
    pub fn into_failed(self) -> Option<E> {
        match self {
            TaskError::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the task was stopped or never started because its group was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled(_) | TaskError::NotStarted(_))
    }

    /// The same end with the task's error as displayed: what the timeline and
    /// a [`Cause`] keep.
    pub(crate) fn shown(&self) -> TaskError<Arc<str>>
    where
        E: fmt::Display,
    {
        match self {
            TaskError::Failed(error) => TaskError::Failed(error.to_string().into()),
            TaskError::Panicked { message } => TaskError::Panicked {
                message: message.clone(),
            },
            TaskError::TimedOut { after } => TaskError::TimedOut { after: *after },
            TaskError::Cancelled(cause) => TaskError::Cancelled(cause.clone()),
            TaskError::NotStarted(cause) => TaskError::NotStarted(cause.clone()),
        }
    }
}

impl TaskError<Arc<str>> {
    /// The cause that task `task` cancels its group with when this, its own
    /// failure, does; `None` when the task was itself stopped by the group.
    pub(crate) fn cause(&self, task: &TaskName) -> Option<Cause> {
        let task = task.clone();
        match self {
            TaskError::Failed(error) => Some(Cause::TaskFailed {
                task,
                error: error.clone(),
            }),
            TaskError::Panicked { message } => Some(Cause::TaskPanicked {
                task,
                message: message.as_str().into(),
            }),
            TaskError::TimedOut { after } => Some(Cause::TaskTimedOut {
                task,
                after: *after,
            }),
            TaskError::Cancelled(_) | TaskError::NotStarted(_) => None,
        }
    }
}

/// A panic's message: its payload if that is a string, else `"Box<dyn Any>"`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Why a fail-fast group failed: the first failure, or the cancellation that
/// stopped it from outside.
///
/// ```
/// use fanout_group::{Group, GroupError};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let group = Group::new();
/// group.spawn("config", |_| async { Err::<(), _>("file not found") });
/// match group.wait().await {
///     Err(GroupError::Failed { task, error }) => {
///         assert_eq!(task, "config");
///         assert_eq!(error, "file not found");
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError<E> {
    /// A task returned an error: the first one, which cancelled the others.
    #[error("task `{task}` failed: {error}")]
    Failed {
        /// The task that failed.
        task: TaskName,
        /// Its error.
        error: E,
    },
    /// A task panicked and the group was not asked to resume panics.
    #[error("task `{task}` panicked: {message}")]
    Panicked {
        /// The task that panicked.
        task: TaskName,
        /// The panic message.
        message: String,
    },
    /// A task's own timeout expired.
    #[error("task `{task}` timed out after {after:?}")]
    TimedOut {
        /// The task whose timeout expired.
        task: TaskName,
        /// The timeout it was given.
        after: Duration,
    },
    /// The group was cancelled from outside: its deadline, an explicit cancel, or
    /// its parent.
    #[error("group cancelled: {0}")]
    Cancelled(Cause),
}

impl<E> GroupError<E> {
    /// The failure of a fail-fast group, from the end of the task `task` that
    /// caused it.
    pub(crate) fn of_task(task: TaskName, error: TaskError<E>) -> Self {
        match error {
            TaskError::Failed(error) => GroupError::Failed { task, error },
            TaskError::Panicked { message } => GroupError::Panicked { task, message },
            TaskError::TimedOut { after } => GroupError::TimedOut { task, after },
            TaskError::Cancelled(cause) | TaskError::NotStarted(cause) => {
                GroupError::Cancelled(cause)
            }
        }
    }

    /// The task whose failure this is, if the failure was a task's.
    pub fn task(&self) -> Option<&str> {
        match self {
            GroupError::Failed { task, .. }
            | GroupError::Panicked { task, .. }
            | GroupError::TimedOut { task, .. } => Some(task),
            GroupError::Cancelled(_) => None,
        }
    }
}

/// Every task of a first-success group failed.
///
/// Holds each task's outcome in submission order.
#[derive(Debug)]
pub struct AllFailed<E> {
    /// Each task's name and why it did not succeed, in submission order.
    pub failures: Vec<(TaskName, TaskError<E>)>,
}

impl<E: fmt::Display> fmt::Display for AllFailed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failures.len() {
            0 => f.write_str("no task was spawned, so none succeeded"),
            n => {
                write!(f, "all {n} tasks failed")?;
                for (task, error) in &self.failures {
                    write!(f, "; `{task}` {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for AllFailed<E> {}

/// [`Group::try_spawn`](crate::Group::try_spawn) found the group at its limit.
///
/// Gives the closure back, unrun, through [`TrySpawnError::into_inner`].
pub struct TrySpawnError<F> {
    pub(crate) task: F,
    pub(crate) limit: usize,
}

impl<F> TrySpawnError<F> {
    /// The closure that was not spawned.
    pub fn into_inner(self) -> F {
        self.task
    }
}

impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySpawnError")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the group already runs or queues its limit of {} tasks",
            self.limit
        )
    }
}

impl<F> std::error::Error for TrySpawnError<F> {}
