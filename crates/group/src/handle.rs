//! Typed handles to spawned tasks, and collections of them.

use std::{fmt, future::Future};

use tokio::task::JoinHandle;

use crate::{Cause, TaskError, TaskName, error::panic_message, task::Finished};

/// A typed handle to one task of a group, returned by every spawn.
///
/// It is not awaited on its own: hand it (alone, in a tuple, a `Vec` or an
/// array) to the group's `join`, which returns the values in the shape and
/// order of the handles you gave it. Dropping a handle does not detach the task:
/// the group still waits for it and still cancels it.
pub struct Handle<T, E> {
    pub(crate) group: u64,
    pub(crate) index: usize,
    pub(crate) name: TaskName,
    pub(crate) join: JoinHandle<Finished<T, E>>,
}

impl<T, E> Handle<T, E> {
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's position in submission order, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The task's end. The future holds only the join handle: the rest of the
    /// handle is dropped at once, so that joining many handles moves little.
    pub(crate) fn finish(self) -> impl Future<Output = Finished<T, E>> + Send
    where
        T: Send,
        E: Send,
    {
        let join = self.join;
        async move {
            match join.await {
                Ok(finished) => finished,
                // Panics are caught inside the task; a join error means the runtime
                // dropped the task (it is shutting down).
                Err(err) if err.is_panic() => Some(Err(TaskError::Panicked {
                    message: panic_message(err.into_panic().as_ref()),
                })),
                Err(_) => Some(Err(TaskError::Cancelled(Cause::GroupDropped))),
            }
        }
    }
}

impl<T, E> fmt::Debug for Handle<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Something a group's `join` can wait on: a [`Handle`], `()`, a `Vec` or an
/// array of handles, or a tuple (up to 12) of any of these, nested as you like.
///
/// The results come back in the same shape, in the order of the handles, never
/// in the order the tasks finished.
///
/// This trait is sealed; its methods are the group's business.
pub trait Handles<E>: sealed::Sealed + Send + Sized {
    /// The values when every task succeeded, e.g. `(String, u64)` for
    /// `(Handle<String, E>, Handle<u64, E>)`.
    type Output: Send;
    /// Each task's own outcome, e.g. `(Result<String, TaskError<E>>, Result<u64, TaskError<E>>)`.
    type Outcomes: Send;

    #[doc(hidden)]
    fn check_group(&self, group: u64);
    #[doc(hidden)]
    fn all_ok(self) -> impl Future<Output = Option<Self::Output>> + Send;
    #[doc(hidden)]
    fn outcomes(self) -> impl Future<Output = Self::Outcomes> + Send;
}

impl<T, E> sealed::Sealed for Handle<T, E> {}

impl<T: Send + 'static, E: Send + 'static> Handles<E> for Handle<T, E> {
    type Output = T;
    type Outcomes = Result<T, TaskError<E>>;

    fn check_group(&self, group: u64) {
        assert_eq!(
            self.group, group,
            "handle of task `{}` was passed to the join of a group that did not spawn it",
            self.name
        );
    }

    fn all_ok(self) -> impl Future<Output = Option<T>> + Send {
        let finish = self.finish();
        async move { finish.await.and_then(Result::ok) }
    }

    fn outcomes(self) -> impl Future<Output = Result<T, TaskError<E>>> + Send {
        let finish = self.finish();
        async move {
            // Only fail-fast groups take a task's error, and they never ask for outcomes.
            let taken = || Err(TaskError::Cancelled(Cause::GroupFinished));
            finish.await.unwrap_or_else(taken)
        }
    }
}

impl sealed::Sealed for () {}

impl<E> Handles<E> for () {
    type Output = ();
    type Outcomes = ();

    fn check_group(&self, _group: u64) {}

    async fn all_ok(self) -> Option<()> {
        Some(())
    }

    async fn outcomes(self) {}
}

impl<H> sealed::Sealed for Vec<H> {}

impl<E, H: Handles<E>> Handles<E> for Vec<H> {
    type Output = Vec<H::Output>;
    type Outcomes = Vec<H::Outcomes>;

    fn check_group(&self, group: u64) {
        self.iter().for_each(|h| h.check_group(group));
    }

    async fn all_ok(self) -> Option<Self::Output> {
        let mut out = Vec::with_capacity(self.len());
        for handle in self {
            out.push(handle.all_ok().await?);
        }
        Some(out)
    }

    async fn outcomes(self) -> Self::Outcomes {
        let mut out = Vec::with_capacity(self.len());
        for handle in self {
            out.push(handle.outcomes().await);
        }
        out
    }
}

impl<H, const N: usize> sealed::Sealed for [H; N] {}

impl<E, H: Handles<E>, const N: usize> Handles<E> for [H; N] {
    type Output = [H::Output; N];
    type Outcomes = [H::Outcomes; N];

    fn check_group(&self, group: u64) {
        self.iter().for_each(|h| h.check_group(group));
    }

    async fn all_ok(self) -> Option<Self::Output> {
        let values = Vec::from(self).all_ok().await?;
        values.try_into().ok()
    }

    async fn outcomes(self) -> Self::Outcomes {
        let outcomes = Vec::from(self).outcomes().await;
        match outcomes.try_into() {
            Ok(array) => array,
            Err(_) => unreachable!("a Vec made from an array of N has N elements"),
        }
    }
}

macro_rules! tuple_handles {
    ($($h:ident),+) => {
        impl<$($h),+> sealed::Sealed for ($($h,)+) {}

        #[allow(non_snake_case)]
        impl<E, $($h: Handles<E>),+> Handles<E> for ($($h,)+) {
            type Output = ($($h::Output,)+);
            type Outcomes = ($($h::Outcomes,)+);

            fn check_group(&self, group: u64) {
                let ($($h,)+) = self;
                $($h.check_group(group);)+
            }

            async fn all_ok(self) -> Option<Self::Output> {
                let ($($h,)+) = self;
                Some(($($h.all_ok().await?,)+))
            }

            async fn outcomes(self) -> Self::Outcomes {
                let ($($h,)+) = self;
                ($($h.outcomes().await,)+)
            }
        }
    };
}

tuple_handles!(A);
tuple_handles!(A, B);
tuple_handles!(A, B, C);
tuple_handles!(A, B, C, D);
tuple_handles!(A, B, C, D, F);
tuple_handles!(A, B, C, D, F, G);
tuple_handles!(A, B, C, D, F, G, H);
tuple_handles!(A, B, C, D, F, G, H, I);
tuple_handles!(A, B, C, D, F, G, H, I, J);
tuple_handles!(A, B, C, D, F, G, H, I, J, K);
tuple_handles!(A, B, C, D, F, G, H, I, J, K, L);
tuple_handles!(A, B, C, D, F, G, H, I, J, K, L, M);
