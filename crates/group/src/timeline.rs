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
    records: Mutex<Chunks>,
}

/// The records, in chunks that are never moved once written: a group of
/// 100 000 tasks grows no single large buffer (whose reallocations would copy
/// every record and touch fresh pages each time).
///
/// A new chunk is sized for the tasks spawned and not yet recorded, between
/// [`MIN_CHUNK`] and [`MAX_CHUNK`] records: a group that spawns its tasks
/// before they end (the common case) records them all in one allocation, or
/// one per [`MAX_CHUNK`] tasks. Allocations count more than their size here:
/// glibc serves a block over 1 KiB by its slow path, which first merges every
/// small block the group's tasks have freed.
struct Chunks {
    /// The chunk being filled; no allocation until the first record.
    current: Vec<Record>,
    /// The full chunks, newest first.
    full: Option<Box<Full>>,
    /// How many records the full chunks hold.
    in_full: usize,
}

struct Full {
    records: Vec<Record>,
    older: Option<Box<Full>>,
}

/// The smallest chunk, in records: the most that fit in 1 000 bytes, which
/// glibc serves from its per-thread cache.
const MIN_CHUNK: usize = 1_000 / std::mem::size_of::<Record>();

/// The largest chunk, in records: under glibc's mmap threshold (128 KiB), so
/// that its memory is reused by the next group instead of being handed back
/// to the kernel and faulted in again.
const MAX_CHUNK: usize = 1_024;

impl Chunks {
    /// Adds `record`; `spawned` says how many tasks have been spawned so far
    /// (read only for a new chunk: other threads keep writing that count).
    fn push(&mut self, record: Record, spawned: impl FnOnce() -> usize) {
        if self.current.len() == self.current.capacity() {
            let recorded = self.in_full + self.current.len();
            let size = spawned()
                .saturating_sub(recorded)
                .clamp(MIN_CHUNK, MAX_CHUNK);
            let records = std::mem::replace(&mut self.current, Vec::with_capacity(size));
            if !records.is_empty() {
                self.in_full += records.len();
                let older = self.full.take();
                self.full = Some(Box::new(Full { records, older }));
            }
        }
        self.current.push(record);
    }

    fn iter(&self) -> impl Iterator<Item = &Record> {
        let full = std::iter::successors(self.full.as_deref(), |chunk| chunk.older.as_deref());
        self.current
            .iter()
            .chain(full.flat_map(|chunk| chunk.records.iter()))
    }
}

impl Drop for Chunks {
    /// One chunk at a time: the default drop would recurse once per chunk.
    fn drop(&mut self) {
        let mut next = self.full.take();
        while let Some(mut chunk) = next {
            next = chunk.older.take();
        }
    }
}

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

/// When a task was spawned, started and finished, as [`Timeline::record`]
/// takes them.
pub(crate) struct Times {
    /// `None` when the task did not wait for room under the limit (see
    /// [`Entry::spawned`]).
    pub(crate) spawned: Option<Instant>,
    pub(crate) started: Option<Instant>,
    pub(crate) finished: Instant,
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
                records: Mutex::new(Chunks {
                    current: Vec::new(),
                    full: None,
                    in_full: 0,
                }),
            }),
        }
    }

    /// Records one task; `tasks` says how many tasks the group has spawned so
    /// far.
    pub(crate) fn record(
        &self,
        tasks: impl FnOnce() -> usize,
        index: usize,
        name: TaskName,
        Times {
            spawned,
            started,
            finished,
        }: Times,
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
        self.inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record, tasks);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, at: Instant) -> Record {
        Record {
            index,
            name: TaskName::from("t"),
            started: Some(at),
            finished: at,
            rare: None,
        }
    }

    fn chunks() -> Chunks {
        Chunks {
            current: Vec::new(),
            full: None,
            in_full: 0,
        }
    }

    #[test]
    fn tasks_spawned_up_front_are_recorded_in_chunks_of_at_most_max_chunk() {
        let at = Instant::now();
        let mut chunks = chunks();
        let n = 2 * MAX_CHUNK + 100;
        for i in 0..n {
            chunks.push(record(i, at), || n);
        }
        let mut sizes = vec![chunks.current.capacity()];
        let mut full = chunks.full.as_deref();
        while let Some(chunk) = full {
            sizes.push(chunk.records.capacity());
            full = chunk.older.as_deref();
        }
        assert_eq!(sizes, [100, MAX_CHUNK, MAX_CHUNK]);
        let mut seen: Vec<_> = chunks.iter().map(|r| r.index).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn tasks_spawned_one_by_one_fill_chunks_of_min_chunk() {
        let at = Instant::now();
        let mut chunks = chunks();
        // Each task is recorded before the next is spawned.
        for i in 0..10 * MIN_CHUNK + 1 {
            chunks.push(record(i, at), || i + 1);
        }
        assert_eq!(chunks.in_full, 10 * MIN_CHUNK);
        assert_eq!(chunks.current.len(), 1);
        assert_eq!(chunks.current.capacity(), MIN_CHUNK);
        assert_eq!(chunks.iter().count(), 10 * MIN_CHUNK + 1);
    }

    #[test]
    fn a_long_chain_of_chunks_drops_without_recursing() {
        let at = Instant::now();
        let mut chunks = chunks();
        // 200 000 chunks: dropping them recursively would overflow the stack.
        for i in 0..200_000 * MIN_CHUNK {
            chunks.push(record(i, at), || 0);
        }
        drop(chunks);
    }
}
