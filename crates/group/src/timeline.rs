//! What every task did, and when.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use crate::{TaskError, TaskName};

/// How a task ended, as the [`Timeline`] records it: `Ok(())`, or the same
/// [`TaskError`] the task's handle yields, with the task's error as displayed.
///
/// ```
/// use fanout_group::{Outcome, TaskError};
/// let declined: Outcome = Err(TaskError::Failed("card declined".into()));
/// assert_eq!(declined.unwrap_err().to_string(), "failed: card declined");
/// ```
pub type Outcome = Result<(), TaskError<Arc<str>>>;

/// One task's record: when it was spawned, started and finished, and how it ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Entry {
    /// Position in submission order, from 0.
    pub index: usize,
    /// The name it was spawned with.
    pub name: TaskName,
    /// When it was spawned, if it had to wait for room under the group's limit;
    /// otherwise the same instant as `started` (or `finished`, if it never
    /// started). The time a task waits for the runtime's first poll is not
    /// recorded: that clock read would be a large part of the record's cost.
    pub spawned: Instant,
    /// When its closure was called; `None` if it never started. Later than
    /// `spawned` when it waited behind the group's limit.
    pub started: Option<Instant>,
    /// When it finished, or was found cancelled before starting.
    pub finished: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

impl Entry {
    /// How long it waited for room under the group's limit.
    pub fn queued(&self) -> Duration {
        self.started.unwrap_or(self.finished) - self.spawned
    }

    /// How long it ran (zero if it never started).
    pub fn ran(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| self.finished - s)
    }
}

/// The per-task records of one group, shared with the group.
///
/// Obtain it with [`Group::timeline`](crate::Group::timeline) before waiting; it is
/// complete once the wait has returned. Each task records itself as it ends, so
/// a timeline read earlier shows the tasks finished so far.
///
/// ```
/// use std::time::Duration;
/// use fanout_group::Group;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let group = Group::<std::convert::Infallible>::new();
/// let timeline = group.timeline();
/// group.spawn("slow", |_| async { tokio::time::sleep(Duration::from_millis(30)).await; Ok(()) });
/// group.spawn("fast", |_| async { Ok(()) });
/// group.wait().await.unwrap();
///
/// let entries = timeline.entries();
/// assert_eq!(entries[0].name, "slow");
/// assert_eq!(entries[0].ran(), Duration::from_millis(30));
/// assert_eq!(entries[1].outcome, Ok(()));
/// # }
/// ```
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    records: Mutex<Vec<Vec<Record>>>,
}

/// Records are kept in chunks, never moved once written: a group of 100 000
/// tasks grows no single large buffer (whose reallocations would copy every
/// record and touch fresh pages each time). The first chunk stays under 1 000
/// bytes, which glibc serves from its per-thread cache or small bins, so that
/// a small group pays little for its timeline. Each later chunk is twice the
/// size of the one before, up to [`MAX_CHUNK`] records: a chunk too large for
/// those bins is served by glibc's slow path (which first merges the small
/// blocks the group's tasks freed), so a large group makes few such
/// allocations (a handful at 1 000 tasks, one per [`MAX_CHUNK`] tasks beyond).
const FIRST_CHUNK: usize = 1_000 / std::mem::size_of::<Record>();

/// The largest chunk, in records: under glibc's mmap threshold (128 KiB), so
/// that its memory is reused by the next group instead of being handed back
/// to the kernel and faulted in again.
const MAX_CHUNK: usize = 1_024;

/// An [`Entry`] as stored: the (common) success with nothing of its own on the
/// heap, and no arithmetic on instants until the entries are read.
struct Record {
    index: usize,
    name: TaskName,
    started: Option<Instant>,
    finished: Instant,
    /// `None`: succeeded, and did not wait for room under the limit.
    rare: Option<Box<Rare>>,
}

/// What only some records carry: boxed, so that the common record stays small.
struct Rare {
    spawned: Option<Instant>,
    /// `None`: succeeded.
    failure: Option<TaskError<Arc<str>>>,
}

impl Timeline {
    pub(crate) fn new(origin: Instant) -> Timeline {
        Timeline {
            inner: Arc::new(Inner {
                origin,
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Records one task. `spawned` is `None` when the task did not wait for room
    /// under the limit (see [`Entry::spawned`]).
    pub(crate) fn record(
        &self,
        index: usize,
        name: TaskName,
        spawned: Option<Instant>,
        started: Option<Instant>,
        finished: Instant,
        outcome: Outcome,
    ) {
        let failure = outcome.err();
        let record = Record {
            index,
            name,
            started,
            finished,
            rare: (spawned.is_some() || failure.is_some())
                .then(|| Box::new(Rare { spawned, failure })),
        };
        let mut chunks = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(record),
            last => {
                let size = last.map_or(FIRST_CHUNK, |chunk| (chunk.capacity() * 2).min(MAX_CHUNK));
                let mut chunk = Vec::with_capacity(size);
                chunk.push(record);
                chunks.push(chunk);
            }
        }
    }

    /// When the group was created: the zero of a waterfall drawing.
    pub fn origin(&self) -> Instant {
        self.inner.origin
    }

    /// The entries recorded so far, in submission order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .map(|r| {
                let rare = r.rare.as_deref();
                Entry {
                    index: r.index,
                    name: r.name.clone(),
                    spawned: rare
                        .and_then(|rare| rare.spawned)
                        .or(r.started)
                        .unwrap_or(r.finished),
                    started: r.started,
                    finished: r.finished,
                    outcome: rare
                        .and_then(|rare| rare.failure.clone())
                        .map_or(Ok(()), Err),
                }
            })
            .collect();
        entries.sort_unstable_by_key(|e| e.index);
        entries
    }
}

impl fmt::Debug for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeline")
            .field("origin", &self.inner.origin)
            .field("entries", &self.entries())
            .finish()
    }
}
