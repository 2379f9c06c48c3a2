//! Why a context was cancelled.

use std::{fmt, sync::Arc, time::Duration};

use crate::TaskName;

/// Why a group, and with it every task's [`Context`](crate::Context), was cancelled.
///
/// Every task can ask its context for the cause at any time, and a cancelled
/// task's [`TaskError::Cancelled`](crate::TaskError::Cancelled) carries it. The
/// cause is set once, by whoever cancelled first; later attempts do not change it,
/// so an error that a task returns *because* it was cancelled is never reported as
/// the reason for the cancellation.
///
/// ```
/// use fanout_group::Cause;
/// let cause = Cause::Requested { reason: "shutting down".into() };
/// assert_eq!(cause.to_string(), "cancelled: shutting down");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// A task returned an error, under fail-fast or as a
    /// [required](crate::TaskBuilder::required) task under collect-all.
    TaskFailed {
        /// The task that failed.
        task: TaskName,
        /// Its error, as displayed.
        error: Arc<str>,
    },
    /// A task panicked, under fail-fast or as a
    /// [required](crate::TaskBuilder::required) task under collect-all.
    TaskPanicked {
        /// The task that panicked.
        task: TaskName,
        /// The panic message.
        message: Arc<str>,
    },
    /// A task's own timeout expired. Seen by that task's context under every
    /// policy, and by its siblings under fail-fast or when the task is
    /// [required](crate::TaskBuilder::required) under collect-all.
    TaskTimedOut {
        /// The task whose timeout expired.
        task: TaskName,
        /// The timeout it was given.
        after: Duration,
    },
    /// The group's deadline expired.
    DeadlineExpired {
        /// The deadline the group was given, measured from its creation.
        after: Duration,
    },
    /// A sibling succeeded first (first-success policy).
    SiblingSucceeded {
        /// The task that won.
        task: TaskName,
    },
    /// Someone called [`Group::cancel`](crate::Group::cancel) or
    /// [`Canceller::cancel`](crate::Canceller::cancel).
    Requested {
        /// The reason they gave.
        reason: Arc<str>,
    },
    /// The parent context the group was made from was cancelled, for this reason.
    Parent(Arc<Cause>),
    /// The group was dropped (or the future waiting on it was) before its tasks
    /// had finished.
    GroupDropped,
    /// The group's wait returned; every task had already finished.
    GroupFinished,
}

impl Cause {
    /// The innermost cause: follows [`Cause::Parent`] links to the cancellation
    /// that started the chain.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use fanout_group::Cause;
    /// let nested = Cause::Parent(Arc::new(Cause::Parent(Arc::new(Cause::GroupDropped))));
    /// assert_eq!(nested.root(), &Cause::GroupDropped);
    /// ```
    pub fn root(&self) -> &Cause {
        let mut cause = self;
        while let Cause::Parent(inner) = cause {
            cause = inner;
        }
        cause
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::TaskFailed { task, error } => write!(f, "task `{task}` failed: {error}"),
            Cause::TaskPanicked { task, message } => {
                write!(f, "task `{task}` panicked: {message}")
            }
            Cause::TaskTimedOut { task, after } => {
                write!(f, "task `{task}` timed out after {after:?}")
            }
            Cause::DeadlineExpired { after } => write!(f, "group deadline of {after:?} expired"),
            Cause::SiblingSucceeded { task } => write!(f, "task `{task}` succeeded first"),
            Cause::Requested { reason } => write!(f, "cancelled: {reason}"),
            Cause::Parent(inner) => write!(f, "parent cancelled: {inner}"),
            Cause::GroupDropped => f.write_str("group dropped before its tasks finished"),
            Cause::GroupFinished => f.write_str("group finished"),
        }
    }
}
