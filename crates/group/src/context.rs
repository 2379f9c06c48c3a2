//! Cancellation scopes: what a task can ask about its group.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering, fence},
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Cause, TaskName};

/// One node of the cancellation tree: a group, or a task with its own timeout.
///
/// tokio-util's [`CancellationToken`] does the tree (parents cancel children,
/// children unregister on drop) and the wake-ups. What it lacks is a *cause*, so
/// the scope keeps one beside it, set once by whoever cancels first; and its
/// `is_cancelled` takes the tree's mutex, which every task would contend on at
/// every start, so the scope also keeps a lock-free flag, set before the token
/// is cancelled.
///
/// The token itself is made only when something has to *wait* for the
/// cancellation (a task still pending after its first poll, a queued task, a
/// nested scope's token, [`Context::cancelled`]): a group whose tasks all finish
/// on their first poll never allocates one, nor takes its lock on drop. Until
/// then the flags alone say whether the scope is cancelled.
pub(crate) struct Scope {
    token: OnceLock<CancellationToken>,
    cancelled: AtomicBool,
    cause: OnceLock<Cause>,
    parent: Option<Arc<Scope>>,
    deadline: Option<Instant>,
}

impl Scope {
    pub(crate) fn root(deadline: Option<Instant>) -> Arc<Scope> {
        Arc::new(Scope {
            token: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            cause: OnceLock::new(),
            parent: None,
            deadline,
        })
    }

    /// A scope cancelled with `parent`, whose deadline is the earlier of the two.
    pub(crate) fn child(parent: &Arc<Scope>, deadline: Option<Instant>) -> Arc<Scope> {
        let deadline = match (parent.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Arc::new(Scope {
            token: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            cause: OnceLock::new(),
            parent: Some(parent.clone()),
            deadline,
        })
    }

    /// Cancels with `cause` unless already cancelled. Returns whether this call
    /// was the one that cancelled.
    pub(crate) fn cancel(&self, cause: Cause) -> bool {
        if self.is_cancelled() || self.cause.set(cause).is_err() {
            return false;
        }
        self.cancelled.store(true, Ordering::Release);
        // Pairs with the fence in `token`: either that token is seen here, or
        // its maker sees the flag and cancels it (or both: cancelling twice is
        // harmless).
        fence(Ordering::SeqCst);
        if let Some(token) = self.token.get() {
            token.cancel();
        }
        true
    }

    /// Every cancellation in the tree goes through [`Scope::cancel`], which sets
    /// the flag first, so this scope is cancelled iff it or an ancestor has the
    /// flag set. Nesting is shallow, so the walk is short.
    pub(crate) fn is_cancelled(&self) -> bool {
        let mut scope = self;
        loop {
            if scope.cancelled.load(Ordering::Acquire) {
                return true;
            }
            match &scope.parent {
                Some(parent) => scope = parent,
                None => return false,
            }
        }
    }

    pub(crate) fn cause(&self) -> Option<Cause> {
        if !self.is_cancelled() {
            return None;
        }
        match self.cause.get() {
            Some(cause) => Some(cause.clone()),
            // Cancelled through an ancestor: the parent's cause, wrapped.
            None => self
                .parent
                .as_ref()
                .and_then(|p| p.cause())
                .map(|c| Cause::Parent(Arc::new(c))),
        }
    }

    /// The cause once cancelled. The token is only cancelled after a cause is set
    /// (here or in an ancestor), so the fallback is unreachable in practice.
    pub(crate) fn cause_after_cancel(&self) -> Cause {
        self.cause().unwrap_or(Cause::GroupDropped)
    }

    /// The scope's token, made on first use: a child of the parent's token
    /// (made too if need be), already cancelled if the scope was.
    pub(crate) fn token(&self) -> &CancellationToken {
        if let Some(token) = self.token.get() {
            return token;
        }
        let token = self.token.get_or_init(|| match &self.parent {
            // A child of a cancelled token starts cancelled.
            Some(parent) => parent.token().child_token(),
            None => CancellationToken::new(),
        });
        // A `cancel` that ran before the token existed had none to cancel; the
        // flag it set first is seen here (see the fence in `cancel`).
        fence(Ordering::SeqCst);
        if self.cancelled.load(Ordering::Acquire) {
            token.cancel();
        }
        token
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// What a task knows about the group it runs in: whether it was cancelled, why,
/// and by when it has to be done.
///
/// Every task receives one. Cancelled tasks are stopped at their next `.await`
/// whether or not they look at it; the context is for the tasks that want to know
/// *why*, that run long synchronous loops and poll [`Context::is_cancelled`], or
/// that start a nested group ([`Builder::parent`](crate::Builder::parent)).
///
/// ```
/// use fanout_group::{Cause, Group};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let group = Group::<&str>::new();
/// let watcher = group.spawn("watcher", |ctx| async move {
///     let cause = ctx.cancelled().await; // never returns: the task is stopped first
///     Ok::<_, &str>(cause)
/// });
/// group.spawn("failing", |_| async { Err::<(), _>("boom") });
/// let err = group.join(watcher).await.unwrap_err();
/// assert_eq!(err.to_string(), "task `failing` failed: boom");
/// # }
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) scope: Arc<Scope>,
    pub(crate) task: Option<TaskName>,
}

impl Context {
    pub(crate) fn new(scope: Arc<Scope>, task: Option<TaskName>) -> Context {
        Context { scope, task }
    }

    /// Waits until the context is cancelled and returns why.
    pub async fn cancelled(&self) -> Cause {
        self.scope.token().cancelled().await;
        self.scope.cause_after_cancel()
    }

    /// Whether the context has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.scope.is_cancelled()
    }

    /// Why the context was cancelled, or `None` while it is not.
    pub fn cause(&self) -> Option<Cause> {
        self.scope.cause()
    }

    /// The instant by which the work must be done: the earliest of the group's
    /// deadline, every enclosing group's, and this task's own timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.scope.deadline()
    }

    /// Time left until [`Context::deadline`] (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The name of the task this context was given to; `None` for a group's own
    /// context ([`Group::context`](crate::Group::context)).
    pub fn task(&self) -> Option<&str> {
        self.task.as_deref()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("task", &self.task)
            .field("deadline", &self.deadline())
            .field("cause", &self.cause())
            .finish()
    }
}

/// Cancels a group from anywhere: another task, a signal handler, a timer.
///
/// Obtained from [`Group::canceller`](crate::Group::canceller); cheap to clone.
#[derive(Clone)]
pub struct Canceller {
    pub(crate) scope: Arc<Scope>,
}

impl Canceller {
    /// Cancels the group with [`Cause::Requested`]. Returns `false` if it was
    /// already cancelled, in which case the first cause stands.
    pub fn cancel(&self, reason: impl Into<Arc<str>>) -> bool {
        self.scope.cancel(Cause::Requested {
            reason: reason.into(),
        })
    }

    /// Whether the group has been cancelled (by anyone).
    pub fn is_cancelled(&self) -> bool {
        self.scope.is_cancelled()
    }
}

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canceller")
            .field("cause", &self.scope.cause())
            .finish()
    }
}
